/* cron.h — schedule expressions as EventBridge Scheduler writes them, compiled,
 * and their next fire time in a time zone.
 *
 *   cron  "min hour day-of-month month day-of-week year": `* , - /` everywhere,
 *         `?` in exactly one of day-of-month / day-of-week, `L` and `W` in
 *         day-of-month (L, LW, nW), `L` and `#` in day-of-week (L = SAT, nL,
 *         n#k); months 1-12 or JAN-DEC, days 1-7 = SUN-SAT, years 1970-2199.
 *   rate  "N minute(s)|hour(s)|day(s)|second(s)", N >= 1, singular only for 1;
 *         slots are anchor + k·N·unit (anchor 0 = the epoch unless set).
 *   at    "YYYY-MM-DDTHH:MM:SS", a wall time in the schedule's zone.
 * Wall times that a spring-forward skips do not fire; a wall time repeated by a
 * fall-back fires once, at its first instant.
 */
#ifndef HERALD_SCHED_CRON_H
#define HERALD_SCHED_CRON_H

#include <stddef.h>
#include <stdint.h>

#include "tz.h"

#define CRON_YEAR_MIN 1970
#define CRON_YEAR_MAX 2199            /* EventBridge's year range */

typedef enum { CRON_CRON, CRON_RATE, CRON_AT } cron_kind_t;

/* How the day is chosen (day-of-month or day-of-week, the other is `?`). */
typedef enum {
    CRON_DAY_DOM,          /* dom bits */
    CRON_DAY_LAST,         /* L: the last day of the month */
    CRON_DAY_LAST_WEEKDAY, /* LW: the last Monday-Friday of the month */
    CRON_DAY_NEAR_WEEKDAY, /* nW: the Monday-Friday nearest day n, within the month */
    CRON_DAY_DOW,          /* dow bits */
    CRON_DAY_LAST_DOW,     /* nL: the last weekday n of the month */
    CRON_DAY_NTH_DOW,      /* n#k: the k-th weekday n of the month */
} cron_day_t;

typedef struct {
    cron_kind_t kind;
    /* CRON_CRON */
    uint64_t minutes;      /* bit m: minute m */
    uint32_t hours;        /* bit h */
    uint32_t dom;          /* bit d: day d (1-31) */
    uint16_t months;       /* bit m: month m (1-12) */
    uint8_t dow;           /* bit w: weekday w (0 = Sunday) */
    cron_day_t day;
    int day_n, day_k;      /* nW: n; nL: weekday; n#k: weekday, k */
    uint8_t years[(CRON_YEAR_MAX - CRON_YEAR_MIN) / 8 + 1];   /* bit y - CRON_YEAR_MIN */
    /* CRON_RATE */
    int64_t period;        /* seconds */
    int64_t anchor;        /* a slot (UTC seconds); 0 unless the caller sets it */
    /* CRON_AT */
    int64_t at_local;      /* local seconds (tz.h) */
} cron_t;

/* Each returns 0, or -1 with a one-line reason in err
 * ("day-of-month and day-of-week cannot both be set; use ?"). */
int cron_parse_cron(const char *expr, cron_t *c, char *err, size_t errlen);
int cron_parse_rate(const char *expr, cron_t *c, char *err, size_t errlen);
int cron_parse_at(const char *expr, cron_t *c, char *err, size_t errlen);
/* EventBridge's wrapped form: "cron(...)", "rate(...)" or "at(...)". */
int cron_parse(const char *spec, cron_t *c, char *err, size_t errlen);

/* The first slot strictly after `after` (UTC seconds) in zone z (NULL: UTC):
 * 0 and *next, or -1 if there is none (an `at` past, a cron whose years ended). */
int cron_next(const cron_t *c, const tz_t *z, int64_t after, int64_t *next);

#endif
