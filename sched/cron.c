/* cron.c — EventBridge's cron, rate and at expressions: a parser that says
 * exactly what is wrong, and the next fire time in a zone (see cron.h).
 *
 * A cron is searched in wall time (the zone's local seconds): the next wall
 * minute that matches, then its instants. A wall time in a spring-forward gap
 * has none and is skipped; one in a fall-back repeat has two and fires at the
 * first. Mapping a wall time to its first instant keeps the order of wall
 * times, so the search can start at the wall time of `after` and stop at the
 * first candidate whose instant is past it.
 */
#include "cron.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPR_MAX   256                /* longer than any sensible expression; bounds the copies */
#define RATE_MAX   1000000            /* N: a million days is plenty and keeps N·unit far from overflow */

static int failf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen) vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* --- fields ---------------------------------------------------------------- */

enum { F_MIN, F_HOUR, F_DOM, F_MONTH, F_DOW, F_YEAR, NFIELDS };

typedef struct {
    const char *name;
    int min, max;
    const char *const *names;         /* names[i] is value min + i */
} field_t;

static const char *const month_names[] = { "JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                           "JUL", "AUG", "SEP", "OCT", "NOV", "DEC", NULL };
static const char *const day_names[] = { "SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", NULL };

static const field_t fields[NFIELDS] = {
    [F_MIN] = { "minutes", 0, 59, NULL },
    [F_HOUR] = { "hours", 0, 23, NULL },
    [F_DOM] = { "day-of-month", 1, 31, NULL },
    [F_MONTH] = { "month", 1, 12, month_names },
    [F_DOW] = { "day-of-week", 1, 7, day_names },
    [F_YEAR] = { "year", CRON_YEAR_MIN, CRON_YEAR_MAX, NULL },
};

/* A number or a name of field f from s[0..n) into *v. */
static int value(const field_t *f, const char *s, size_t n, int *v, char *err, size_t errlen)
{
    if (n == 0) return failf(err, errlen, "%s: a value is missing", f->name);
    if (isdigit((unsigned char)s[0])) {
        long x = 0;
        for (size_t i = 0; i < n; i++) {
            if (!isdigit((unsigned char)s[i])) return failf(err, errlen, "%s: \"%.*s\" is not a number", f->name, (int)n, s);
            if (x < 100000) x = x * 10 + (s[i] - '0');
        }
        if (x < f->min || x > f->max)
            return failf(err, errlen, "%s: %.*s is out of range %d-%d", f->name, (int)n, s, f->min, f->max);
        *v = (int)x;
        return 0;
    }
    if (f->names && n == 3)
        for (int i = 0; f->names[i]; i++)
            if (strncasecmp(s, f->names[i], 3) == 0) {
                *v = f->min + i;
                return 0;
            }
    if (f->names)
        return failf(err, errlen, "%s: \"%.*s\" is not a number or a name (%s-%s)", f->name, (int)n, s, f->names[0],
                     f == &fields[F_MONTH] ? "DEC" : "SAT");
    return failf(err, errlen, "%s: \"%.*s\" is not a number", f->name, (int)n, s);
}

/* One comma-separated item: `*`, `a`, `a-b`, each optionally `/step`. Sets bits v - off. */
static int item(const field_t *f, const char *s, size_t n, uint8_t *bits, int off, char *err, size_t errlen)
{
    const char *slash = memchr(s, '/', n);
    size_t base = slash ? (size_t)(slash - s) : n;
    int lo, hi, step = 1;
    if (slash) {
        size_t sn = n - base - 1;
        if (sn == 0) return failf(err, errlen, "%s: a step is missing after /", f->name);
        long x = 0;
        for (size_t i = 0; i < sn; i++) {
            if (!isdigit((unsigned char)slash[1 + i])) return failf(err, errlen, "%s: step \"%.*s\" is not a number", f->name, (int)sn, slash + 1);
            if (x < 100000) x = x * 10 + (slash[1 + i] - '0');
        }
        if (x < 1) return failf(err, errlen, "%s: step %.*s must be at least 1", f->name, (int)sn, slash + 1);
        if (x > f->max - f->min + 1 && x > 1)
            return failf(err, errlen, "%s: step %.*s is larger than the range %d-%d", f->name, (int)sn, slash + 1, f->min, f->max);
        step = (int)x;
    }
    if (base == 1 && s[0] == '*') {
        lo = f->min, hi = f->max;
    } else {
        const char *dash = memchr(s, '-', base);
        if (dash) {
            if (value(f, s, (size_t)(dash - s), &lo, err, errlen) < 0 ||
                value(f, dash + 1, base - (size_t)(dash - s) - 1, &hi, err, errlen) < 0) return -1;
            if (hi < lo) return failf(err, errlen, "%s: range %.*s is reversed", f->name, (int)base, s);
        } else {
            if (value(f, s, base, &lo, err, errlen) < 0) return -1;
            hi = slash ? f->max : lo;             /* "a/step": from a to the end */
        }
    }
    for (int v = lo; v <= hi; v += step) bits[(v - off) / 8] |= (uint8_t)(1u << ((v - off) % 8));
    return 0;
}

/* A whole list field into a bit array (bit v - off). */
static int list(const field_t *f, const char *s, uint8_t *bits, int off, char *err, size_t errlen)
{
    if (strchr(s, '?')) return failf(err, errlen, "%s: ? is only allowed alone in day-of-month or day-of-week", f->name);
    for (;;) {
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        if (n == 0) return failf(err, errlen, "%s: an empty item in the list", f->name);
        if (item(f, s, n, bits, off, err, errlen) < 0) return -1;
        if (!comma) return 0;
        s = comma + 1;
    }
}

static uint64_t bits64(const uint8_t b[8])
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

static int parse_dom(const char *s, cron_t *c, char *err, size_t errlen)
{
    const field_t *f = &fields[F_DOM];
    if (strcmp(s, "?") == 0) return 1;
    int special = strchr(s, 'L') || strchr(s, 'W') || strchr(s, 'l') || strchr(s, 'w');
    if (special && (strchr(s, ',') || strchr(s, '-') || strchr(s, '/') || strchr(s, '*')))
        return failf(err, errlen, "day-of-month: L and W cannot be combined with other values");
    if (strcasecmp(s, "L") == 0) {
        c->day = CRON_DAY_LAST;
    } else if (strcasecmp(s, "LW") == 0) {
        c->day = CRON_DAY_LAST_WEEKDAY;
    } else if (special) {
        size_t n = strlen(s);
        if (n < 2 || toupper((unsigned char)s[n - 1]) != 'W')
            return failf(err, errlen, "day-of-month: \"%s\" is not a number, L, LW or nW", s);
        if (value(f, s, n - 1, &c->day_n, err, errlen) < 0) return -1;
        c->day = CRON_DAY_NEAR_WEEKDAY;
    } else {
        uint8_t b[8] = { 0 };
        if (list(f, s, b, 0, err, errlen) < 0) return -1;
        c->dom = (uint32_t)bits64(b);
        c->day = CRON_DAY_DOM;
    }
    return 0;
}

static int parse_dow(const char *s, cron_t *c, char *err, size_t errlen)
{
    const field_t *f = &fields[F_DOW];
    if (strcmp(s, "?") == 0) return 1;
    size_t n = strlen(s);
    const char *hash = strchr(s, '#');
    int last = n > 0 && toupper((unsigned char)s[n - 1]) == 'L';
    if ((hash || last) && (strchr(s, ',') || strchr(s, '-') || strchr(s, '/') || strchr(s, '*')))
        return failf(err, errlen, "day-of-week: L and # cannot be combined with other values");
    if (hash) {
        int k;
        if (value(f, s, (size_t)(hash - s), &c->day_n, err, errlen) < 0) return -1;
        const char *q = hash + 1;
        if (strlen(q) != 1 || q[0] < '1' || q[0] > '5')
            return failf(err, errlen, "day-of-week: \"#%s\" must be #1 to #5 (the week of the month)", q);
        k = q[0] - '0';
        c->day_n -= 1, c->day_k = k;
        c->day = CRON_DAY_NTH_DOW;
    } else if (n == 1 && last) {                  /* L alone: the last day of the week, Saturday */
        c->dow = 1u << 6;
        c->day = CRON_DAY_DOW;
    } else if (last) {
        if (value(f, s, n - 1, &c->day_n, err, errlen) < 0) return -1;
        c->day_n -= 1;
        c->day = CRON_DAY_LAST_DOW;
    } else {
        uint8_t b[8] = { 0 };
        if (list(f, s, b, 1, err, errlen) < 0) return -1;   /* 1 = SUN → bit 0 */
        c->dow = b[0] & 0x7f;
        c->day = CRON_DAY_DOW;
    }
    return 0;
}

int cron_parse_cron(const char *expr, cron_t *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->kind = CRON_CRON;
    if (strlen(expr) >= EXPR_MAX) return failf(err, errlen, "cron: the expression is too long");
    char buf[EXPR_MAX], *tok[NFIELDS + 1];
    strcpy(buf, expr);
    int n = 0;
    for (char *save = NULL, *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (n == NFIELDS) {
            n++;
            break;
        }
        tok[n++] = t;
    }
    if (n != NFIELDS)
        return failf(err, errlen, "cron needs 6 fields (minutes hours day-of-month month day-of-week year), got %s%d",
                     n > NFIELDS ? "more than " : "", n > NFIELDS ? NFIELDS : n);
    uint8_t b[8] = { 0 };
    if (list(&fields[F_MIN], tok[F_MIN], b, 0, err, errlen) < 0) return -1;
    c->minutes = bits64(b);
    memset(b, 0, sizeof b);
    if (list(&fields[F_HOUR], tok[F_HOUR], b, 0, err, errlen) < 0) return -1;
    c->hours = (uint32_t)bits64(b);
    memset(b, 0, sizeof b);
    if (list(&fields[F_MONTH], tok[F_MONTH], b, 0, err, errlen) < 0) return -1;
    c->months = (uint16_t)bits64(b);
    int dom_any = parse_dom(tok[F_DOM], c, err, errlen);
    if (dom_any < 0) return -1;
    cron_t d = *c;
    int dow_any = parse_dow(tok[F_DOW], &d, err, errlen);
    if (dow_any < 0) return -1;
    if (!dom_any && !dow_any) return failf(err, errlen, "day-of-month and day-of-week cannot both be set; use ?");
    if (dom_any && dow_any) return failf(err, errlen, "day-of-month and day-of-week cannot both be ?; set one of them");
    if (dom_any) *c = d;
    if (list(&fields[F_YEAR], tok[F_YEAR], c->years, CRON_YEAR_MIN, err, errlen) < 0) return -1;
    return 0;
}

static int unit_is(const char *u, size_t n, const char *name)
{
    return strlen(name) == n && strncmp(u, name, n) == 0;
}

int cron_parse_rate(const char *expr, cron_t *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->kind = CRON_RATE;
    const char *s = expr;
    while (*s == ' ') s++;
    long n = 0;
    const char *num = s;
    while (isdigit((unsigned char)*s)) {
        if (n <= RATE_MAX) n = n * 10 + (*s - '0');
        s++;
    }
    if (s == num) return failf(err, errlen, "rate: expected \"N unit\" (\"5 minutes\"), got \"%.40s\"", expr);
    if (*s != ' ') return failf(err, errlen, "rate: expected a space and a unit after %.*s", (int)(s - num), num);
    if (n < 1) return failf(err, errlen, "rate: %.*s must be at least 1", (int)(s - num), num);
    if (n > RATE_MAX) return failf(err, errlen, "rate: %.*s is larger than %d", (int)(s - num), num, RATE_MAX);
    while (*s == ' ') s++;
    const char *u = s;
    while (*s && *s != ' ') s++;
    size_t un = (size_t)(s - u);
    while (*s == ' ') s++;
    if (*s) return failf(err, errlen, "rate: unexpected \"%.40s\" after the unit", s);
    static const struct { const char *one, *many; int64_t secs; } units[] = {
        { "second", "seconds", 1 }, { "minute", "minutes", 60 }, { "hour", "hours", 3600 }, { "day", "days", 86400 },
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        int one = unit_is(u, un, units[i].one), many = unit_is(u, un, units[i].many);
        if (!one && !many) continue;
        if (n == 1 && many) return failf(err, errlen, "rate: use \"1 %s\", the unit is singular for 1", units[i].one);
        if (n > 1 && one) return failf(err, errlen, "rate: use \"%ld %s\", the unit is plural above 1", n, units[i].many);
        c->period = n * units[i].secs;
        return 0;
    }
    if (un == 0) return failf(err, errlen, "rate: a unit is missing (minutes, hours, days or seconds)");
    return failf(err, errlen, "rate: unknown unit \"%.*s\" (minutes, hours, days or seconds)", (int)(un > 20 ? 20 : un), u);
}

int cron_parse_at(const char *expr, cron_t *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->kind = CRON_AT;
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    size_t n = strlen(expr);
    int ok = n == sizeof shape - 1;
    for (size_t i = 0; ok && i < n; i++)
        ok = shape[i] == 'd' ? isdigit((unsigned char)expr[i]) != 0 : expr[i] == shape[i];
    if (!ok) return failf(err, errlen, "at: expected YYYY-MM-DDTHH:MM:SS, got \"%.40s\"", expr);
    int v[6];
    static const int pos[6] = { 0, 5, 8, 11, 14, 17 }, len[6] = { 4, 2, 2, 2, 2, 2 };
    for (int i = 0; i < 6; i++) {
        v[i] = 0;
        for (int j = 0; j < len[i]; j++) v[i] = v[i] * 10 + (expr[pos[i] + j] - '0');
    }
    if (v[0] < CRON_YEAR_MIN || v[0] > CRON_YEAR_MAX)
        return failf(err, errlen, "at: year %d is out of range %d-%d", v[0], CRON_YEAR_MIN, CRON_YEAR_MAX);
    if (v[1] < 1 || v[1] > 12) return failf(err, errlen, "at: month %02d is out of range 01-12", v[1]);
    if (v[2] < 1 || v[2] > tz_days_in_month(v[0], v[1])) return failf(err, errlen, "at: %.10s is not a date", expr);
    if (v[3] > 23) return failf(err, errlen, "at: hour %02d is out of range 00-23", v[3]);
    if (v[4] > 59) return failf(err, errlen, "at: minute %02d is out of range 00-59", v[4]);
    if (v[5] > 59) return failf(err, errlen, "at: second %02d is out of range 00-59", v[5]);
    c->at_local = tz_seconds(v[0], v[1], v[2], v[3], v[4], v[5]);
    return 0;
}

int cron_parse(const char *spec, cron_t *c, char *err, size_t errlen)
{
    static const struct { const char *prefix; int (*parse)(const char *, cron_t *, char *, size_t); } kinds[] = {
        { "cron(", cron_parse_cron }, { "rate(", cron_parse_rate }, { "at(", cron_parse_at },
    };
    size_t n = strlen(spec);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        size_t pn = strlen(kinds[i].prefix);
        if (strncmp(spec, kinds[i].prefix, pn) != 0) continue;
        if (n >= EXPR_MAX) return failf(err, errlen, "%.*s: the expression is too long", (int)pn - 1, spec);
        if (spec[n - 1] != ')') return failf(err, errlen, "%.*s: a closing ) is missing", (int)pn - 1, spec);
        char buf[EXPR_MAX];
        memcpy(buf, spec + pn, n - pn - 1);
        buf[n - pn - 1] = 0;
        return kinds[i].parse(buf, c, err, errlen);
    }
    memset(c, 0, sizeof *c);
    return failf(err, errlen, "expected cron(...), rate(...) or at(...), got \"%.40s\"", spec);
}

/* --- next fire ------------------------------------------------------------- */

static int64_t floordiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

static int year_set(const cron_t *c, int64_t y)
{
    int64_t i = y - CRON_YEAR_MIN;
    return c->years[i / 8] >> (i % 8) & 1;
}

static int weekday_of(int64_t y, int m, int d) { return tz_weekday(tz_days_from_civil(y, m, d)); }

/* The days of month (y, m) on which the cron fires: bit d for day d. */
static uint32_t day_mask(const cron_t *c, int64_t y, int m)
{
    int nd = tz_days_in_month(y, m), wd1 = weekday_of(y, m, 1);
    uint32_t all = (uint32_t)((2ull << nd) - 2), mask = 0;
    switch (c->day) {
    case CRON_DAY_DOM:
        return c->dom & all;
    case CRON_DAY_LAST:
        return 1u << nd;
    case CRON_DAY_LAST_WEEKDAY: {
        int d = nd, w = weekday_of(y, m, nd);
        d -= w == 0 ? 2 : w == 6 ? 1 : 0;
        return 1u << d;
    }
    case CRON_DAY_NEAR_WEEKDAY: {                 /* never crosses into another month */
        int d = c->day_n;
        if (d > nd) return 0;
        int w = weekday_of(y, m, d);
        if (w == 6) d = d > 1 ? d - 1 : d + 2;
        else if (w == 0) d = d < nd ? d + 1 : d - 2;
        return 1u << d;
    }
    case CRON_DAY_DOW:
        for (int d = 1; d <= nd; d++)
            if (c->dow >> ((wd1 + d - 1) % 7) & 1) mask |= 1u << d;
        return mask;
    case CRON_DAY_LAST_DOW: {
        int d = nd - ((weekday_of(y, m, nd) - c->day_n + 7) % 7);
        return 1u << d;
    }
    case CRON_DAY_NTH_DOW: {
        int d = 1 + (c->day_n - wd1 + 7) % 7 + 7 * (c->day_k - 1);
        return d <= nd ? 1u << d : 0;
    }
    }
    return 0;
}

/* Lowest set bit >= from, or -1. */
static int next_bit(uint64_t bits, int from, int max)
{
    for (int i = from; i <= max; i++)
        if (bits >> i & 1) return i;
    return -1;
}

/* The first wall minute >= local (local seconds) that the cron matches, or -1. */
static int wall_next(const cron_t *c, int64_t local, int64_t *out)
{
    int64_t y;
    int mo, d, h, mi, s;
    tz_split(local, &y, &mo, &d, &h, &mi, &s);
    if (s) mi++;                                  /* whole minutes only; tz_seconds below normalizes nothing, so carry */
    if (mi == 60) mi = 0, h++;
    if (h == 24) h = 0, d++;
    if (y < CRON_YEAR_MIN) y = CRON_YEAR_MIN, mo = 1, d = 1, h = 0, mi = 0;
    while (y <= CRON_YEAR_MAX) {
        if (!year_set(c, y)) {
            y++, mo = 1, d = 1, h = 0, mi = 0;
            continue;
        }
        if (mo > 12 || !(c->months >> mo & 1)) {
            if (++mo > 12) y++, mo = 1;
            d = 1, h = 0, mi = 0;
            continue;
        }
        int day = next_bit(day_mask(c, y, mo), d, 31);
        if (day < 0) {
            if (++mo > 12) y++, mo = 1;
            d = 1, h = 0, mi = 0;
            continue;
        }
        if (day > d) d = day, h = 0, mi = 0;
        int hour = next_bit(c->hours, h, 23);
        if (hour < 0) {
            d++, h = 0, mi = 0;
            continue;
        }
        if (hour > h) h = hour, mi = 0;
        int minute = next_bit(c->minutes, mi, 59);
        if (minute < 0) {
            if (++h == 24) d++, h = 0;
            mi = 0;
            continue;
        }
        *out = tz_seconds(y, mo, d, h, minute, 0);
        return 0;
    }
    return -1;
}

int cron_next(const cron_t *c, const tz_t *z, int64_t after, int64_t *next)
{
    /* beyond ±10,000 years nothing fires and the arithmetic below stays far from overflow */
    const int64_t far = 10000LL * 366 * 86400;
    if (after < -far || after > far) return -1;
    switch (c->kind) {
    case CRON_RATE: {
        if (c->period < 1 || c->anchor < -far || c->anchor > far) return -1;
        *next = c->anchor + (floordiv(after - c->anchor, c->period) + 1) * c->period;
        return 0;
    }
    case CRON_AT: {
        int64_t u[2];
        if (tz_local_to_utc(z, c->at_local, u) == 0 || u[0] <= after) return -1;   /* a gap: never */
        *next = u[0];
        return 0;
    }
    case CRON_CRON: {
        int64_t wall = after + tz_offset(z, after, NULL);
        for (;;) {
            int64_t w, u[2];
            if (wall_next(c, wall, &w) < 0) return -1;
            if (tz_local_to_utc(z, w, u) > 0 && u[0] > after) {
                *next = u[0];
                return 0;
            }
            wall = w + 60;
        }
    }
    }
    return -1;
}
