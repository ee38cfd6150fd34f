/* tz.c — a reader of TZif files (RFC 8536, versions 1 to 3) and the POSIX TZ
 * rule in their footer, for the times past the last transition.
 *
 * A zone is its transition table (UTC instant → local time type) plus, from
 * the footer, the rule that continues it. Nothing here reads the environment
 * or calls the C library's time zone functions.
 */
#include "tz.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TZ_MAX_FILE   (1 << 20)       /* real files are < 4 KiB; anything near 1 MiB is not one */
#define TZ_MAX_OFFSET (26 * 3600)     /* RFC 8536 bounds UT offsets by about ±25 h */
#define TZ_WINDOW     (27 * 3600)     /* a wall time's instants lie within ± the largest offset */

typedef struct {
    int32_t utoff;
    uint8_t is_dst;
} tz_type_t;

/* A POSIX TZ rule: "CET-1CEST,M3.5.0,M10.5.0/3". Offsets east-positive. */
typedef enum { RULE_JULIAN1, RULE_JULIAN0, RULE_MONTH } rule_kind_t;
typedef struct {
    rule_kind_t kind;
    int day, week, month;             /* Jn / n: day; Mm.w.d: month, week, day */
    int32_t time;                     /* seconds after local midnight (-167 h … 167 h) */
} rule_date_t;
typedef struct {
    int present;
    int32_t std_off, dst_off;
    int has_dst;
    rule_date_t start, end;
} posix_t;

struct tz {
    char *name;
    size_t ntrans;
    int64_t *times;                   /* ascending */
    uint8_t *idx;                     /* type of [times[i], times[i+1]) */
    size_t ntypes;
    tz_type_t *types;
    posix_t rule;                     /* after the last transition, if present */
};

/* --- civil calendar ------------------------------------------------------- */

static int64_t floordiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

/* Days since 1970-01-01 of y-m-d: years counted from March so the leap day is last. */
int64_t tz_days_from_civil(int64_t y, int m, int d)
{
    if (m <= 2) y -= 1;
    int64_t era = floordiv(y, 400);
    int64_t yoe = y - era * 400;                          /* 0 … 399 */
    int64_t mp = (m + 9) % 12;                            /* March = 0 */
    int64_t doy = (153 * mp + 2) / 5 + d - 1;             /* 0 … 365 */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;  /* 0 … 146096 */
    return era * 146097 + doe - 719468;                   /* 719468: 0000-03-01 → 1970-01-01 */
}

void tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d)
{
    int64_t z = days + 719468;
    int64_t era = floordiv(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

int tz_weekday(int64_t days) { return (int)(((days + 4) % 7 + 7) % 7); }   /* 1970-01-01: Thursday */

static int is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int tz_days_in_month(int64_t y, int m)
{
    static const int n[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    return m == 2 && is_leap(y) ? 29 : n[m - 1];
}

int64_t tz_seconds(int64_t y, int mo, int d, int h, int mi, int s)
{
    return tz_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
}

void tz_split(int64_t secs, int64_t *y, int *mo, int *d, int *h, int *mi, int *s)
{
    int64_t days = floordiv(secs, 86400), rem = secs - days * 86400;
    tz_civil_from_days(days, y, mo, d);
    *h = (int)(rem / 3600);
    *mi = (int)(rem / 60 % 60);
    *s = (int)(rem % 60);
}

/* --- the POSIX TZ rule of the footer --------------------------------------- */

static int parse_num(const char **p, int min, int max, int *out)
{
    const char *s = *p;
    int v = 0, n = 0;
    while (*s >= '0' && *s <= '9' && n < 4) v = v * 10 + (*s++ - '0'), n++;
    if (n == 0 || v < min || v > max) return -1;
    *p = s;
    *out = v;
    return 0;
}

/* [+-]hh[:mm[:ss]] → seconds; hours up to max_h. */
static int parse_hms(const char **p, int max_h, int32_t *out)
{
    int sign = 1, h, m = 0, s = 0;
    if (**p == '+' || **p == '-') sign = *(*p)++ == '-' ? -1 : 1;
    if (parse_num(p, 0, max_h, &h) < 0) return -1;
    if (**p == ':') {
        (*p)++;
        if (parse_num(p, 0, 59, &m) < 0) return -1;
        if (**p == ':') {
            (*p)++;
            if (parse_num(p, 0, 59, &s) < 0) return -1;
        }
    }
    *out = sign * (h * 3600 + m * 60 + s);
    return 0;
}

static int parse_abbr(const char **p)
{
    const char *s = *p;
    size_t n = 0;
    if (*s == '<') {
        s++;
        while (*s && *s != '>') {
            if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
                  *s == '+' || *s == '-')) return -1;
            s++, n++;
        }
        if (*s != '>' || n < 3) return -1;
        *p = s + 1;
        return 0;
    }
    while ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')) s++, n++;
    if (n < 3) return -1;
    *p = s;
    return 0;
}

static int parse_rule_date(const char **p, rule_date_t *r)
{
    if (**p == 'J') {
        (*p)++;
        r->kind = RULE_JULIAN1;
        if (parse_num(p, 1, 365, &r->day) < 0) return -1;
    } else if (**p == 'M') {
        (*p)++;
        r->kind = RULE_MONTH;
        if (parse_num(p, 1, 12, &r->month) < 0 || *(*p)++ != '.' || parse_num(p, 1, 5, &r->week) < 0 ||
            *(*p)++ != '.' || parse_num(p, 0, 6, &r->day) < 0) return -1;
    } else {
        r->kind = RULE_JULIAN0;
        if (parse_num(p, 0, 365, &r->day) < 0) return -1;
    }
    r->time = 7200;
    if (**p == '/') {
        (*p)++;
        if (parse_hms(p, 167, &r->time) < 0) return -1;
    }
    return 0;
}

/* "STDoff[DST[off][,start[/time],end[/time]]]" (POSIX offsets are west-positive). */
static int parse_posix(const char *s, posix_t *r)
{
    memset(r, 0, sizeof *r);
    int32_t off;
    if (parse_abbr(&s) < 0 || parse_hms(&s, 24, &off) < 0) return -1;
    r->std_off = -off;
    r->present = 1;
    if (!*s) return 0;
    if (parse_abbr(&s) < 0) return -1;
    r->has_dst = 1;
    r->dst_off = r->std_off + 3600;
    if (*s && *s != ',') {
        if (parse_hms(&s, 24, &off) < 0) return -1;
        r->dst_off = -off;
    }
    if (!*s) {                                   /* POSIX leaves the default rule to the system: US rules */
        r->start = (rule_date_t){ RULE_MONTH, 0, 2, 3, 7200 };
        r->end = (rule_date_t){ RULE_MONTH, 0, 1, 11, 7200 };
        return 0;
    }
    if (*s++ != ',' || parse_rule_date(&s, &r->start) < 0 || *s++ != ',' || parse_rule_date(&s, &r->end) < 0)
        return -1;
    return *s ? -1 : 0;
}

/* Local seconds (midnight + time) of a rule date in year y. */
static int64_t rule_local(const rule_date_t *r, int64_t y)
{
    int64_t days;
    switch (r->kind) {
    case RULE_JULIAN1:                            /* 1 … 365, February 29 never counted */
        days = tz_days_from_civil(y, 1, 1) + r->day - 1 + (is_leap(y) && r->day >= 60);
        break;
    case RULE_JULIAN0:
        days = tz_days_from_civil(y, 1, 1) + r->day;
        break;
    default: {                                    /* the week-th `day` of month; week 5 = the last */
        int64_t first = tz_days_from_civil(y, r->month, 1);
        int64_t d = first + (r->day - tz_weekday(first) + 7) % 7 + (r->week - 1) * 7;
        while (d >= first + tz_days_in_month(y, r->month)) d -= 7;
        days = d;
    }
    }
    return days * 86400 + r->time;
}

/* DST start and end of year y as UTC instants. */
static void rule_year(const posix_t *r, int64_t y, int64_t *start, int64_t *end)
{
    *start = rule_local(&r->start, y) - r->std_off;
    *end = rule_local(&r->end, y) - r->dst_off;
}

static int64_t utc_year(int64_t t)
{
    int64_t y;
    int m, d;
    tz_civil_from_days(floordiv(t, 86400), &y, &m, &d);
    return y;
}

static int rule_is_dst(const posix_t *r, int64_t t)
{
    if (!r->has_dst) return 0;
    int64_t s, e;
    rule_year(r, utc_year(t + r->std_off), &s, &e);
    return s < e ? (t >= s && t < e) : !(t >= e && t < s);
}

static int64_t rule_next(const posix_t *r, int64_t t)
{
    if (!r->has_dst) return INT64_MAX;
    int64_t y0 = utc_year(t + r->std_off), best = INT64_MAX;
    for (int64_t y = y0 - 1; y <= y0 + 1; y++) {
        int64_t s, e;
        rule_year(r, y, &s, &e);
        if (s > t && s < best) best = s;
        if (e > t && e < best) best = e;
    }
    return best;
}

/* --- the TZif file --------------------------------------------------------- */

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static int64_t be64(const uint8_t *p) { return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4)); }

typedef struct {
    uint32_t isut, isstd, leap, time, type, chars;
} counts_t;

static int header(const uint8_t *p, size_t len, counts_t *c, int *version)
{
    if (len < 44 || memcmp(p, "TZif", 4) != 0) return -1;
    *version = p[4] ? p[4] - '0' : 1;
    c->isut = be32(p + 20), c->isstd = be32(p + 24), c->leap = be32(p + 28);
    c->time = be32(p + 32), c->type = be32(p + 36), c->chars = be32(p + 40);
    return 0;
}

static size_t block_len(const counts_t *c, int tsize)
{
    return (size_t)c->time * (tsize + 1) + (size_t)c->type * 6 + c->chars + (size_t)c->leap * (tsize + 4) +
           c->isstd + c->isut;
}

static tz_t *fail(tz_t *z, char *err, size_t errlen, const char *name, const char *why)
{
    snprintf(err, errlen, "time zone \"%s\": %s", name, why);
    tz_destroy(&z);
    return NULL;
}

tz_t *tz_load_bytes(const void *data, size_t len, const char *name, char *err, size_t errlen)
{
    const uint8_t *p = data;
    counts_t c;
    int version;
    tz_t *z = calloc(1, sizeof *z);
    if (!z || !(z->name = strdup(name))) return fail(z, err, errlen, name, "out of memory");
    if (header(p, len, &c, &version) < 0) return fail(z, err, errlen, name, "not a TZif file");
    if (version < 1 || version > 4) return fail(z, err, errlen, name, "unsupported TZif version");
    /* 4-byte counts could overflow the sums below on 32-bit size_t; real files are tiny */
    if (c.time > 65536 || c.type > 256 || c.chars > 65536 || c.leap > 65536 || c.isstd > 256 || c.isut > 256)
        return fail(z, err, errlen, name, "malformed TZif file (counts)");
    int tsize = 4;
    size_t off = 44;
    if (version >= 2) {                          /* skip the 32-bit block; use the 64-bit one */
        size_t n = block_len(&c, 4);
        if (len - off < n + 44) return fail(z, err, errlen, name, "malformed TZif file (truncated)");
        off += n;
        if (header(p + off, len - off, &c, &version) < 0) return fail(z, err, errlen, name, "malformed TZif file (second header)");
        if (c.time > 65536 || c.type > 256 || c.chars > 65536 || c.leap > 65536 || c.isstd > 256 || c.isut > 256)
            return fail(z, err, errlen, name, "malformed TZif file (counts)");
        off += 44;
        tsize = 8;
    }
    if (c.type == 0 || c.chars == 0 || (c.isstd && c.isstd != c.type) || (c.isut && c.isut != c.type))
        return fail(z, err, errlen, name, "malformed TZif file (counts)");
    if (len - off < block_len(&c, tsize)) return fail(z, err, errlen, name, "malformed TZif file (truncated)");
    z->ntrans = c.time, z->ntypes = c.type;
    z->times = calloc(c.time + 1, sizeof *z->times);
    z->idx = calloc(c.time + 1, 1);
    z->types = calloc(c.type, sizeof *z->types);
    if (!z->times || !z->idx || !z->types) return fail(z, err, errlen, name, "out of memory");
    const uint8_t *q = p + off;
    for (size_t i = 0; i < c.time; i++, q += tsize) {
        z->times[i] = tsize == 8 ? be64(q) : (int32_t)be32(q);
        if (i && z->times[i] <= z->times[i - 1]) return fail(z, err, errlen, name, "malformed TZif file (transitions out of order)");
    }
    for (size_t i = 0; i < c.time; i++, q++) {
        if (*q >= c.type) return fail(z, err, errlen, name, "malformed TZif file (type index)");
        z->idx[i] = *q;
    }
    for (size_t i = 0; i < c.type; i++, q += 6) {
        int32_t u = (int32_t)be32(q);
        if (u < -TZ_MAX_OFFSET || u > TZ_MAX_OFFSET || q[4] > 1 || q[5] >= c.chars)
            return fail(z, err, errlen, name, "malformed TZif file (time type)");
        z->types[i] = (tz_type_t){ u, q[4] };
    }
    q += c.chars + (size_t)c.leap * (tsize + 4) + c.isstd + c.isut;   /* leap seconds: ignored (POSIX time) */
    if (tsize == 8) {                             /* footer: "\nTZ string\n", possibly empty */
        const uint8_t *end = p + len;
        if (q >= end || *q != '\n') return fail(z, err, errlen, name, "malformed TZif file (no footer)");
        const uint8_t *nl = memchr(q + 1, '\n', (size_t)(end - q - 1));
        if (!nl) return fail(z, err, errlen, name, "malformed TZif file (footer)");
        size_t n = (size_t)(nl - q - 1);
        if (n) {
            char buf[256];
            if (n >= sizeof buf || memchr(q + 1, 0, n)) return fail(z, err, errlen, name, "malformed TZif file (footer)");
            memcpy(buf, q + 1, n);
            buf[n] = 0;
            if (parse_posix(buf, &z->rule) < 0) return fail(z, err, errlen, name, "malformed TZif file (footer TZ rule)");
            if (z->rule.dst_off < -TZ_MAX_OFFSET || z->rule.dst_off > TZ_MAX_OFFSET)
                return fail(z, err, errlen, name, "malformed TZif file (footer TZ rule)");
        }
    }
    return z;
}

tz_t *tz_load_file(const char *path, const char *name, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT || errno == ENOTDIR) snprintf(err, errlen, "unknown time zone \"%s\"", name);
        else snprintf(err, errlen, "time zone \"%s\": %s: %s", name, path, strerror(errno));
        return NULL;
    }
    uint8_t *buf = malloc(TZ_MAX_FILE);
    size_t n = buf ? fread(buf, 1, TZ_MAX_FILE, f) : 0;
    int bad = !buf || ferror(f) || n == TZ_MAX_FILE, dir = ferror(f) && errno == EISDIR;
    fclose(f);
    tz_t *z = NULL;
    if (dir) snprintf(err, errlen, "unknown time zone \"%s\" (a directory of zones)", name);
    else if (bad) snprintf(err, errlen, "time zone \"%s\": %s: unreadable or too large", name, path);
    else z = tz_load_bytes(buf, n, name, err, errlen);
    free(buf);
    return z;
}

tz_t *tz_load(const char *name, char *err, size_t errlen)
{
    if (!name || !*name || name[0] == '/' || strstr(name, "..") || strlen(name) > 200) {
        snprintf(err, errlen, "unknown time zone \"%s\"", name ? name : "");
        return NULL;
    }
    if (strcmp(name, "UTC") == 0) {
        tz_t *z = calloc(1, sizeof *z);
        if (!z || !(z->name = strdup(name)) || !(z->types = calloc(1, sizeof *z->types))) {
            tz_destroy(&z);
            snprintf(err, errlen, "time zone \"UTC\": out of memory");
            return NULL;
        }
        z->ntypes = 1;
        return z;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/%s", TZ_DIR, name);
    return tz_load_file(path, name, err, errlen);
}

void tz_destroy(tz_t **zp)
{
    if (!zp || !*zp) return;
    tz_t *z = *zp;
    free(z->name);
    free(z->times);
    free(z->idx);
    free(z->types);
    free(z);
    *zp = NULL;
}

const char *tz_name(const tz_t *z) { return z ? z->name : "UTC"; }

/* --- conversions ----------------------------------------------------------- */

/* Index of the last transition <= t, or -1 if t is before the first. */
static ptrdiff_t find(const tz_t *z, int64_t t)
{
    size_t lo = 0, hi = z->ntrans;               /* answer in [lo - 1, hi - 1] */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->times[mid] <= t) lo = mid + 1;
        else hi = mid;
    }
    return (ptrdiff_t)lo - 1;
}

int32_t tz_offset(const tz_t *z, int64_t utc, int *is_dst)
{
    int dst = 0;
    int32_t off = 0;
    if (z) {
        ptrdiff_t i = find(z, utc);
        if (z->rule.present && (z->ntrans == 0 || i == (ptrdiff_t)z->ntrans - 1)) {
            dst = rule_is_dst(&z->rule, utc);
            off = dst ? z->rule.dst_off : z->rule.std_off;
        } else {
            const tz_type_t *t = &z->types[i < 0 ? 0 : z->idx[i]];
            off = t->utoff, dst = t->is_dst;
        }
    }
    if (is_dst) *is_dst = dst;
    return off;
}

int64_t tz_next_transition(const tz_t *z, int64_t utc)
{
    if (!z) return INT64_MAX;
    ptrdiff_t i = find(z, utc);
    if (i + 1 < (ptrdiff_t)z->ntrans) return z->times[i + 1];
    return z->rule.present ? rule_next(&z->rule, utc) : INT64_MAX;
}

/* Walks the offset intervals around `local`: an instant u maps to it iff
 * u + offset(u) == local, and u lies within TZ_WINDOW of it. */
int tz_local_to_utc(const tz_t *z, int64_t local, int64_t out[2])
{
    int n = 0;
    int64_t a = local - TZ_WINDOW, stop = local + TZ_WINDOW;
    while (a <= stop && n < 2) {
        int64_t b = tz_next_transition(z, a);
        int64_t u = local - tz_offset(z, a, NULL);
        if (u >= a && u < b) out[n++] = u;
        if (b == INT64_MAX) break;
        a = b;
    }
    return n;
}
