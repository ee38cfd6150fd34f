/* tz.h — time zones read from the system's TZif files, without touching the
 * process's TZ (no localtime, no tzset: the broker has threads).
 *
 * Times are int64_t seconds. "UTC seconds" count from the Unix epoch; "local
 * seconds" are a wall-clock reading expressed the same way (the local date and
 * time as if it were UTC), so civil arithmetic on them is plain arithmetic.
 * Leap-second records in a file are ignored (POSIX time, as the "posix/" zones).
 */
#ifndef HERALD_SCHED_TZ_H
#define HERALD_SCHED_TZ_H

#include <stddef.h>
#include <stdint.h>

typedef struct tz tz_t;

/* Where tz_load looks for NAME (NAME may not be absolute or contain "..").
 * "UTC" never needs a file. */
#define TZ_DIR "/usr/share/zoneinfo"

/* A zone by name ("Europe/Paris", "UTC"), or NULL with a one-line reason in
 * err ("unknown time zone \"Mars/Olympus\"", "... is not a TZif file", ...). */
tz_t *tz_load(const char *name, char *err, size_t errlen);
/* The same from a file (tests) or from bytes in memory (fuzzing); name is kept. */
tz_t *tz_load_file(const char *path, const char *name, char *err, size_t errlen);
tz_t *tz_load_bytes(const void *data, size_t len, const char *name, char *err, size_t errlen);
void tz_destroy(tz_t **zp);
const char *tz_name(const tz_t *z);

/* The offset east of UTC in effect at utc (seconds), and whether it is DST.
 * z NULL means UTC. */
int32_t tz_offset(const tz_t *z, int64_t utc, int *is_dst);
/* The UTC instants whose local reading is the wall time `local`, ascending:
 * returns 0 (a spring-forward gap), 2 (a fall-back repeat) or 1. */
int tz_local_to_utc(const tz_t *z, int64_t local, int64_t out[2]);
/* The first instant after utc at which the zone's offset or DST flag may
 * change (INT64_MAX if never). */
int64_t tz_next_transition(const tz_t *z, int64_t utc);

/* Civil calendar (proleptic Gregorian) on day numbers since 1970-01-01. */
int64_t tz_days_from_civil(int64_t y, int m, int d);
void tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d);
int tz_weekday(int64_t days);                 /* 0 = Sunday … 6 = Saturday */
int tz_days_in_month(int64_t y, int m);
/* Local (or UTC) seconds of a civil time, and back. */
int64_t tz_seconds(int64_t y, int mo, int d, int h, int mi, int s);
void tz_split(int64_t secs, int64_t *y, int *mo, int *d, int *h, int *mi, int *s);

#endif
