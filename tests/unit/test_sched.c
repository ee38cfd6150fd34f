/* test_sched.c — schedules: the TZif reader, the cron / rate / at parser and
 * next fire times, DST transitions included; croniter and Python's zoneinfo
 * (Debian's python3-croniter, python3) as independent oracles. */
#define _GNU_SOURCE                        /* memmem */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../sched/cron.h"
#include "../../sched/tz.h"

#define ORACLE_PYTHON "/usr/bin/python3"   /* Debian's, where python3-croniter is installed */

/* "2026-03-08T07:00:00Z" → UTC seconds (tz_seconds is checked against known values below) */
static int64_t utc(const char *s)
{
    int y, mo, d, h, mi, se;
    cr_assert_eq(sscanf(s, "%d-%d-%dT%d:%d:%dZ", &y, &mo, &d, &h, &mi, &se), 6, "bad time in the test: %s", s);
    return tz_seconds(y, mo, d, h, mi, se);
}

static void fmt(int64_t t, char *buf, size_t n)
{
    int64_t y;
    int mo, d, h, mi, s;
    tz_split(t, &y, &mo, &d, &h, &mi, &s);
    snprintf(buf, n, "%04lld-%02d-%02dT%02d:%02d:%02dZ", (long long)y, mo, d, h, mi, s);
}

static tz_t *zone(const char *name)
{
    char err[256];
    tz_t *z = tz_load(name, err, sizeof err);
    cr_assert_not_null(z, "%s", err);
    return z;
}

/* --- the calendar and the TZif reader -------------------------------------------- */

Test(sched, civil_calendar_matches_known_epochs)
{
    cr_assert_eq(tz_seconds(1970, 1, 1, 0, 0, 0), 0);
    cr_assert_eq(tz_seconds(2026, 1, 1, 0, 0, 0), 1767225600);
    cr_assert_eq(tz_seconds(2000, 2, 29, 12, 0, 0), 951825600);
    cr_assert_eq(tz_seconds(1969, 12, 31, 23, 59, 59), -1);
    cr_assert_eq(tz_weekday(tz_days_from_civil(2026, 3, 8)), 0, "2026-03-08 is a Sunday");
    for (int64_t d = -800000; d < 800000; d += 37) {
        int64_t y;
        int m, dd;
        tz_civil_from_days(d, &y, &m, &dd);
        cr_assert_eq(tz_days_from_civil(y, m, dd), d);
    }
}

Test(sched, zones_give_offsets_and_dst)
{
    tz_t *ny = zone("America/New_York"), *pa = zone("Europe/Paris"), *u = zone("UTC");
    int dst;
    cr_assert_eq(tz_offset(ny, utc("2026-03-08T06:59:59Z"), &dst), -5 * 3600);
    cr_assert_eq(dst, 0);
    cr_assert_eq(tz_offset(ny, utc("2026-03-08T07:00:00Z"), &dst), -4 * 3600);
    cr_assert_eq(dst, 1);
    cr_assert_eq(tz_offset(ny, utc("2026-11-01T06:00:00Z"), &dst), -5 * 3600);
    cr_assert_eq(dst, 0);
    cr_assert_eq(tz_offset(pa, utc("2026-03-29T01:00:00Z"), NULL), 2 * 3600);
    cr_assert_eq(tz_offset(pa, utc("2026-10-25T00:59:59Z"), NULL), 2 * 3600);
    cr_assert_eq(tz_offset(pa, utc("2026-10-25T01:00:00Z"), NULL), 3600);
    /* past the table: the footer's rule (fat files stop in 2037) */
    cr_assert_eq(tz_offset(ny, utc("2150-07-01T00:00:00Z"), &dst), -4 * 3600);
    cr_assert_eq(dst, 1);
    cr_assert_eq(tz_offset(pa, utc("2150-12-01T00:00:00Z"), &dst), 3600);
    cr_assert_eq(dst, 0);
    cr_assert_eq(tz_offset(u, utc("2026-07-01T00:00:00Z"), NULL), 0);
    cr_assert_eq(tz_offset(NULL, 123, NULL), 0);
    cr_assert_str_eq(tz_name(pa), "Europe/Paris");
    tz_destroy(&ny);
    tz_destroy(&pa);
    tz_destroy(&u);
    cr_assert_null(u);
    tz_destroy(&u);
}

Test(sched, local_times_map_to_0_1_or_2_instants)
{
    tz_t *ny = zone("America/New_York"), *pa = zone("Europe/Paris");
    int64_t u[2];
    cr_assert_eq(tz_local_to_utc(ny, utc("2026-03-08T02:30:00Z"), u), 0, "the gap");
    cr_assert_eq(tz_local_to_utc(ny, utc("2026-03-08T03:00:00Z"), u), 1);
    cr_assert_eq(u[0], utc("2026-03-08T07:00:00Z"));
    cr_assert_eq(tz_local_to_utc(ny, utc("2026-11-01T01:30:00Z"), u), 2, "the repeat");
    cr_assert_eq(u[0], utc("2026-11-01T05:30:00Z"));
    cr_assert_eq(u[1], utc("2026-11-01T06:30:00Z"));
    cr_assert_eq(tz_local_to_utc(pa, utc("2026-03-29T02:00:00Z"), u), 0);
    cr_assert_eq(tz_local_to_utc(pa, utc("2026-10-25T02:59:59Z"), u), 2);
    cr_assert_eq(tz_local_to_utc(pa, utc("2040-03-25T02:30:00Z"), u), 0, "a gap from the footer rule");
    cr_assert_eq(tz_local_to_utc(pa, utc("2040-10-28T02:30:00Z"), u), 2, "a repeat from the footer rule");
    cr_assert_eq(tz_local_to_utc(NULL, 77, u), 1);
    cr_assert_eq(u[0], 77);
    tz_destroy(&ny);
    tz_destroy(&pa);
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

Test(sched, unknown_zones_and_malformed_files_are_refused_with_a_reason)
{
    char err[256];
    const char *bad[] = { "Mars/Olympus", "", "../etc/passwd", "/etc/localtime", "Europe" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        cr_assert_null(tz_load(bad[i], err, sizeof err), "%s loaded", bad[i]);
        cr_assert(strstr(err, "time zone") != NULL, "%s: %s", bad[i], err);
    }
    tz_load("Mars/Olympus", err, sizeof err);
    cr_assert_str_eq(err, "unknown time zone \"Mars/Olympus\"");

    /* a real file cut short, its magic broken, and a footer rule broken */
    FILE *f = fopen(TZ_DIR "/Europe/Paris", "rb");
    cr_assert_not_null(f);
    static unsigned char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    char dir[] = "/tmp/herald-tz-XXXXXX", path[64];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/zone", dir);
    for (size_t cut = 0; cut < n; cut += 97) {
        write_file(path, buf, cut);
        tz_t *z = tz_load_file(path, "Cut", err, sizeof err);
        cr_assert_null(z, "a file cut at %zu bytes loaded", cut);
        cr_assert(strstr(err, "time zone \"Cut\"") != NULL, "%s", err);
    }
    buf[0] = 'X';
    write_file(path, buf, n);
    cr_assert_null(tz_load_file(path, "Magic", err, sizeof err));
    cr_assert_str_eq(err, "time zone \"Magic\": not a TZif file");
    buf[0] = 'T';
    unsigned char *m = memmem(buf, n, "M10.5.0/3", 9);
    cr_assert_not_null(m);
    m[1] = '9';                                                /* month 90 */
    write_file(path, buf, n);
    cr_assert_null(tz_load_file(path, "Footer", err, sizeof err));
    cr_assert_str_eq(err, "time zone \"Footer\": malformed TZif file (footer TZ rule)");
    unlink(path);
    rmdir(dir);
}

/* Every zone on the system against Python's zoneinfo (its own TZif reader):
 * the offset at each of our transitions from 1990 to 2060 and one second
 * before it, and at instants spread from 1900 to 2200 (the footer's rule
 * included); each instant's local time must map back to it. */
Test(sched, every_zone_agrees_with_python_zoneinfo, .timeout = 120)
{
    char dir[] = "/tmp/herald-tzo-XXXXXX", q[64], a[64], pyfile[64], cmd[512], err[256];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(q, sizeof q, "%s/q", dir);
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(pyfile, sizeof pyfile, "%s/py", dir);
    static const char py[] =
        "import sys, zoneinfo, datetime as d\n"
        "if sys.argv[1] == 'names':\n"
        "  for n in sorted(zoneinfo.available_timezones()):\n"
        "    if not n.startswith(('right/', 'posix/', 'Factory')): print(n)\n"
        "  sys.exit(0)\n"
        "E = d.datetime(1970, 1, 1, tzinfo=d.timezone.utc)\n"
        "zs = {}\n"
        "for line in open(sys.argv[1]):\n"
        "  n, t = line.split()\n"
        "  z = zs.get(n) or zs.setdefault(n, zoneinfo.ZoneInfo(n))\n"
        "  print(int((E + d.timedelta(seconds=int(t))).astimezone(z).utcoffset().total_seconds()))\n";
    write_file(pyfile, py, sizeof py - 1);
    snprintf(cmd, sizeof cmd, "%s %s names > %s", ORACLE_PYTHON, pyfile, a);
    cr_assert_eq(system(cmd), 0, "%s failed", cmd);
    static char names[1024][64];
    int nz = 0;
    FILE *f = fopen(a, "r");
    cr_assert_not_null(f);
    while (nz < 1024 && fscanf(f, "%63s", names[nz]) == 1) nz++;
    fclose(f);
    cr_assert_gt(nz, 300, "zoneinfo lists %d zones", nz);
    FILE *out = fopen(q, "w");
    cr_assert_not_null(out);
    for (int i = 0; i < nz; i++) {
        tz_t *z = tz_load(names[i], err, sizeof err);
        cr_assert_not_null(z, "%s", err);
        for (int64_t t = utc("1990-01-01T00:00:00Z"); (t = tz_next_transition(z, t)) < utc("2060-01-01T00:00:00Z");)
            fprintf(out, "%s %lld\n%s %lld\n", names[i], (long long)t - 1, names[i], (long long)t);
        for (int64_t t = -2208988800LL; t < 7258118400LL; t += 86400LL * 1009 + 3541)
            fprintf(out, "%s %lld\n", names[i], (long long)t);
        tz_destroy(&z);
    }
    fclose(out);
    snprintf(cmd, sizeof cmd, "%s %s %s > %s", ORACLE_PYTHON, pyfile, q, a);
    cr_assert_eq(system(cmd), 0, "%s failed", cmd);
    FILE *fq = fopen(q, "r"), *fa = fopen(a, "r");
    cr_assert(fq && fa);
    char name[64], last[64] = "";
    long long t;
    int off, lines = 0;
    tz_t *z = NULL;
    while (fscanf(fq, "%63s %lld", name, &t) == 2) {
        cr_assert_eq(fscanf(fa, "%d", &off), 1, "zoneinfo answered %d queries only", lines);
        if (strcmp(name, last) != 0) {
            tz_destroy(&z);
            z = tz_load(name, err, sizeof err);
            strcpy(last, name);
        }
        cr_assert_eq(tz_offset(z, t, NULL), off, "%s at %lld: %d, zoneinfo says %d", name, t, tz_offset(z, t, NULL), off);
        int64_t u[2];
        int k = tz_local_to_utc(z, t + off, u);
        cr_assert(k >= 1 && (u[0] == t || (k == 2 && u[1] == t)), "%s: local %lld does not map back to %lld", name, t + off, t);
        lines++;
    }
    tz_destroy(&z);
    fclose(fq);
    fclose(fa);
    unlink(q), unlink(a), unlink(pyfile);
    rmdir(dir);
    cr_log_info("%d zones, %d instants agree with zoneinfo", nz, lines);
}

/* --- the parser ------------------------------------------------------------------ */

typedef struct {
    const char *spec, *error;
} bad_t;

static const bad_t bad_specs[] = {
    { "cron(0 12 * * * *)", "day-of-month and day-of-week cannot both be set; use ?" },
    { "cron(0 12 1 * MON *)", "day-of-month and day-of-week cannot both be set; use ?" },
    { "cron(0 12 ? * ? *)", "day-of-month and day-of-week cannot both be ?; set one of them" },
    { "cron(61 * * * ? *)", "minutes: 61 is out of range 0-59" },
    { "cron(0 24 * * ? *)", "hours: 24 is out of range 0-23" },
    { "cron(0 0 0 * ? *)", "day-of-month: 0 is out of range 1-31" },
    { "cron(0 0 32 * ? *)", "day-of-month: 32 is out of range 1-31" },
    { "cron(0 0 * 13 ? *)", "month: 13 is out of range 1-12" },
    { "cron(0 0 ? * 8 *)", "day-of-week: 8 is out of range 1-7" },
    { "cron(0 0 ? * 0 *)", "day-of-week: 0 is out of range 1-7" },
    { "cron(0 0 * * ? 1969)", "year: 1969 is out of range 1970-2199" },
    { "cron(0 0 * * ? 2200)", "year: 2200 is out of range 1970-2199" },
    { "cron(0 0 * FOO ? *)", "month: \"FOO\" is not a number or a name (JAN-DEC)" },
    { "cron(0 0 ? * FUN *)", "day-of-week: \"FUN\" is not a number or a name (SUN-SAT)" },
    { "cron(x 0 * * ? *)", "minutes: \"x\" is not a number" },
    { "cron(1x 0 * * ? *)", "minutes: \"1x\" is not a number" },
    { "cron(0 0 * * ?)", "cron needs 6 fields (minutes hours day-of-month month day-of-week year), got 5" },
    { "cron(0 0 * * ? * *)", "cron needs 6 fields (minutes hours day-of-month month day-of-week year), got more than 6" },
    { "cron()", "cron needs 6 fields (minutes hours day-of-month month day-of-week year), got 0" },
    { "cron(*/0 * * * ? *)", "minutes: step 0 must be at least 1" },
    { "cron(*/ * * * ? *)", "minutes: a step is missing after /" },
    { "cron(0/61 * * * ? *)", "minutes: step 61 is larger than the range 0-59" },
    { "cron(30-10 * * * ? *)", "minutes: range 30-10 is reversed" },
    { "cron(1,,2 * * * ? *)", "minutes: an empty item in the list" },
    { "cron(- * * * ? *)", "minutes: a value is missing" },
    { "cron(? * * * ? *)", "minutes: ? is only allowed alone in day-of-month or day-of-week" },
    { "cron(0 0 1,? * ? *)", "day-of-month: ? is only allowed alone in day-of-month or day-of-week" },
    { "cron(0 0 L,3 * ? *)", "day-of-month: L and W cannot be combined with other values" },
    { "cron(0 0 3X * ? *)", "day-of-month: \"3X\" is not a number" },
    { "cron(0 0 32W * ? *)", "day-of-month: 32 is out of range 1-31" },
    { "cron(0 0 WW * ? *)", "day-of-month: \"W\" is not a number" },
    { "cron(0 0 ? * 2#6 *)", "day-of-week: \"#6\" must be #1 to #5 (the week of the month)" },
    { "cron(0 0 ? * 2#1,3 *)", "day-of-week: L and # cannot be combined with other values" },
    { "cron(0 0 ? * 9L *)", "day-of-week: 9 is out of range 1-7" },
    { "rate(0 minutes)", "rate: 0 must be at least 1" },
    { "rate(1 minutes)", "rate: use \"1 minute\", the unit is singular for 1" },
    { "rate(5 minute)", "rate: use \"5 minutes\", the unit is plural above 1" },
    { "rate(2 weeks)", "rate: unknown unit \"weeks\" (minutes, hours, days or seconds)" },
    { "rate(5)", "rate: expected a space and a unit after 5" },
    { "rate(5 )", "rate: a unit is missing (minutes, hours, days or seconds)" },
    { "rate(minutes)", "rate: expected \"N unit\" (\"5 minutes\"), got \"minutes\"" },
    { "rate(-5 minutes)", "rate: expected \"N unit\" (\"5 minutes\"), got \"-5 minutes\"" },
    { "rate(5 minutes now)", "rate: unexpected \"now\" after the unit" },
    { "rate(99999999 days)", "rate: 99999999 is larger than 1000000" },
    { "at(2026-12-24 18:00:00)", "at: expected YYYY-MM-DDTHH:MM:SS, got \"2026-12-24 18:00:00\"" },
    { "at(2026-12-24T18:00)", "at: expected YYYY-MM-DDTHH:MM:SS, got \"2026-12-24T18:00\"" },
    { "at(2026-02-29T00:00:00)", "at: 2026-02-29 is not a date" },
    { "at(2026-13-01T00:00:00)", "at: month 13 is out of range 01-12" },
    { "at(2026-12-24T24:00:00)", "at: hour 24 is out of range 00-23" },
    { "at(2026-12-24T23:60:00)", "at: minute 60 is out of range 00-59" },
    { "at(2026-12-24T23:00:60)", "at: second 60 is out of range 00-59" },
    { "at(1969-12-31T23:00:00)", "at: year 1969 is out of range 1970-2199" },
    { "cron(0 0 * * ? *", "cron: a closing ) is missing" },
    { "every(5 minutes)", "expected cron(...), rate(...) or at(...), got \"every(5 minutes)\"" },
};

Test(sched, each_bad_expression_says_what_is_wrong)
{
    for (size_t i = 0; i < sizeof bad_specs / sizeof bad_specs[0]; i++) {
        cron_t c;
        char err[256] = "";
        cr_expect_eq(cron_parse(bad_specs[i].spec, &c, err, sizeof err), -1, "%s was accepted", bad_specs[i].spec);
        cr_expect_str_eq(err, bad_specs[i].error, "%s", bad_specs[i].spec);
    }
}

Test(sched, good_expressions_parse)
{
    static const char *good[] = {
        "cron(0 12 * * ? *)", "cron(0 2 * * ? *)", "cron(15 10 ? * 6L 2026-2030)", "cron(0 18 ? * MON-FRI *)",
        "cron(0 8 1 * ? *)", "cron(0/15 * * * ? *)", "cron(0/5 8-17 ? * MON-FRI *)", "cron(0 9 ? * 2#1 *)",
        "cron(0 0 L * ? *)", "cron(0 0 LW * ? *)", "cron(0 0 1W * ? *)", "cron(0 0 ? * L *)",
        "cron(5,35 14 * JAN-MAR,jul ? *)", "cron(0 10 ? * sun,sat *)", "cron(*/10 */2 1-15/2 */3 ? 2030/5)",
        "rate(1 minute)", "rate(5 minutes)", "rate(1 hour)", "rate(12 hours)", "rate(1 day)", "rate(7 days)",
        "rate(1 second)", "rate(30 seconds)", "at(2026-12-24T18:00:00)", "at(2199-12-31T23:59:59)",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        cron_t c;
        char err[256] = "";
        cr_expect_eq(cron_parse(good[i], &c, err, sizeof err), 0, "%s: %s", good[i], err);
    }
    cron_t c;
    char err[64];
    cr_assert_eq(cron_parse_cron("0 12 * * ? *", &c, err, sizeof err), 0);
    cr_assert_eq(cron_parse_rate("5 minutes", &c, err, sizeof err), 0);
    cr_assert_eq(c.period, 300);
    cr_assert_eq(cron_parse_at("2026-12-24T18:00:00", &c, err, sizeof err), 0);
}

/* --- next fire times --------------------------------------------------------------- */

typedef struct {
    const char *zone, *spec, *after;
    const char *next[6];               /* the following fire times, chained; "" = none */
} fire_t;

static const fire_t fires[] = {
    /* New York, spring forward 2026-03-08 02:00 EST → 03:00 EDT: 02:30 does not exist that day */
    { "America/New_York", "cron(30 2 * * ? *)", "2026-03-07T00:00:00Z",
      { "2026-03-07T07:30:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z" } },
    { "America/New_York", "cron(0 * 8 3 ? 2026)", "2026-03-08T05:30:00Z",
      { "2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z" } },   /* 01:00 EST, 03:00 EDT, 04:00 */
    { "America/New_York", "cron(*/30 2-3 8 3 ? *)", "2026-03-08T00:00:00Z",
      { "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z", "2027-03-08T07:00:00Z" } },   /* 2027-03-08 02:00 EST: no gap then */
    /* New York, fall back 2026-11-01 02:00 EDT → 01:00 EST: 01:xx repeats, fires once (EDT) */
    { "America/New_York", "cron(30 1 * * ? *)", "2026-10-31T12:00:00Z",
      { "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z" } },
    { "America/New_York", "cron(*/20 1 1 11 ? *)", "2026-11-01T04:00:00Z",
      { "2026-11-01T05:00:00Z", "2026-11-01T05:20:00Z", "2026-11-01T05:40:00Z", "2027-11-01T05:00:00Z" } },
    { "America/New_York", "cron(0 * 1 11 ? 2026)", "2026-11-01T04:30:00Z",
      { "2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z", "2026-11-01T08:00:00Z" } },   /* 01:00 EDT, 02:00 EST, 03:00 */
    /* after the first 01:30 has passed, inside the repeated hour: the next is 02:00 EST */
    { "America/New_York", "cron(0,30 1-2 1 11 ? 2026)", "2026-11-01T06:10:00Z",
      { "2026-11-01T07:00:00Z", "2026-11-01T07:30:00Z", "" } },
    /* Paris, 2026-03-29 02:00 CET → 03:00 CEST; 2026-10-25 03:00 CEST → 02:00 CET */
    { "Europe/Paris", "cron(0 2 ? * SUN *)", "2026-03-20T00:00:00Z",
      { "2026-03-22T01:00:00Z", "2026-04-05T00:00:00Z" } },
    { "Europe/Paris", "cron(30 2 ? * 1 *)", "2026-10-18T12:00:00Z",
      { "2026-10-25T00:30:00Z", "2026-11-01T01:30:00Z" } },
    { "Europe/Paris", "cron(0 0 * * ? *)", "2026-03-28T12:00:00Z",
      { "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z" } },
    { "Europe/Paris", "cron(0 2 * * ? *)", "2040-03-24T12:00:00Z",              /* the footer's rule: 2040-03-25 */
      { "2040-03-26T00:00:00Z", "2040-03-27T00:00:00Z" } },
    { "Europe/Paris", "cron(30 2 28 10 ? 2040)", "2040-01-01T00:00:00Z",
      { "2040-10-28T00:30:00Z", "" } },
    /* L, W, # */
    { "UTC", "cron(0 12 L * ? *)", "2026-01-15T00:00:00Z",
      { "2026-01-31T12:00:00Z", "2026-02-28T12:00:00Z", "2026-03-31T12:00:00Z", "2026-04-30T12:00:00Z" } },
    { "UTC", "cron(0 12 L 2 ? *)", "2027-06-01T00:00:00Z", { "2028-02-29T12:00:00Z", "2029-02-28T12:00:00Z" } },
    { "UTC", "cron(0 9 LW * ? *)", "2026-01-01T00:00:00Z",                         /* 2026-01-31 is a Saturday */
      { "2026-01-30T09:00:00Z", "2026-02-27T09:00:00Z", "2026-03-31T09:00:00Z", "2026-04-30T09:00:00Z",
        "2026-05-29T09:00:00Z" } },
    { "UTC", "cron(0 10 15W * ? *)", "2026-01-01T00:00:00Z",                       /* 2026-02-15 Sunday, 2026-08-15 Saturday */
      { "2026-01-15T10:00:00Z", "2026-02-16T10:00:00Z", "2026-03-16T10:00:00Z", "2026-04-15T10:00:00Z" } },
    { "UTC", "cron(0 10 1W * ? 2026)", "2026-07-20T00:00:00Z",                     /* 2026-08-01 Saturday → Monday the 3rd */
      { "2026-08-03T10:00:00Z", "2026-09-01T10:00:00Z", "2026-10-01T10:00:00Z", "2026-11-02T10:00:00Z" } },
    { "UTC", "cron(0 10 31W * ? 2026)", "2026-04-01T00:00:00Z",                    /* 2026-05-31 Sunday → Friday the 29th */
      { "2026-05-29T10:00:00Z", "2026-07-31T10:00:00Z", "2026-08-31T10:00:00Z", "2026-10-30T10:00:00Z" } },
    { "UTC", "cron(0 10 ? * 6#3 *)", "2026-03-01T00:00:00Z",
      { "2026-03-20T10:00:00Z", "2026-04-17T10:00:00Z", "2026-05-15T10:00:00Z" } },
    { "UTC", "cron(0 10 ? * MON#5 2026)", "2026-01-01T00:00:00Z",                  /* months with five Mondays */
      { "2026-03-30T10:00:00Z", "2026-06-29T10:00:00Z", "2026-08-31T10:00:00Z", "2026-11-30T10:00:00Z", "" } },
    { "UTC", "cron(15 10 ? * 6L 2026)", "2026-10-01T00:00:00Z",                    /* the last Friday */
      { "2026-10-30T10:15:00Z", "2026-11-27T10:15:00Z", "2026-12-25T10:15:00Z", "" } },
    { "UTC", "cron(0 0 ? * L *)", "2026-03-01T00:00:00Z", { "2026-03-07T00:00:00Z", "2026-03-14T00:00:00Z" } },
    /* years, names, lists, steps */
    { "UTC", "cron(0 0 1 1 ? 2030/5)", "2026-01-01T00:00:00Z",
      { "2030-01-01T00:00:00Z", "2035-01-01T00:00:00Z", "2040-01-01T00:00:00Z" } },
    { "UTC", "cron(0 0 29 FEB ? 2199)", "2026-01-01T00:00:00Z", { "" } },          /* 2199 is no leap year */
    { "UTC", "cron(0 0 31 * ? *)", "2026-04-01T00:00:00Z", { "2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z" } },
    { "UTC", "cron(0 0 30 2 ? *)", "2026-01-01T00:00:00Z", { "" } },
    { "UTC", "cron(0/15 8-9 ? * MON-FRI *)", "2026-03-06T09:40:00Z",             /* a Friday */
      { "2026-03-06T09:45:00Z", "2026-03-09T08:00:00Z", "2026-03-09T08:15:00Z" } },
    { "UTC", "cron(5,35 14 * JAN-MAR,jul ? *)", "2026-03-31T14:35:00Z",           /* strictly after */
      { "2026-07-01T14:05:00Z", "2026-07-01T14:35:00Z" } },
    { "UTC", "cron(59 23 31 12 ? 2199)", "2199-12-31T23:58:59Z", { "2199-12-31T23:59:00Z", "" } },
    /* rate: anchored at the epoch unless set */
    { "UTC", "rate(5 minutes)", "2026-03-07T00:00:01Z", { "2026-03-07T00:05:00Z", "2026-03-07T00:10:00Z" } },
    { "America/New_York", "rate(1 hour)", "2026-03-08T06:00:00Z",
      { "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z" } },                        /* absolute: DST changes nothing */
    { "UTC", "rate(1 second)", "2026-03-07T00:00:00Z", { "2026-03-07T00:00:01Z", "2026-03-07T00:00:02Z" } },
    { "UTC", "rate(1 day)", "2026-03-07T00:00:00Z", { "2026-03-08T00:00:00Z" } },
    /* at: in the zone; a gap never fires; a repeat fires at its first instant */
    { "Europe/Paris", "at(2026-12-24T18:00:00)", "2026-01-01T00:00:00Z", { "2026-12-24T17:00:00Z", "" } },
    { "Europe/Paris", "at(2026-12-24T18:00:00)", "2026-12-24T17:00:00Z", { "" } },
    { "America/New_York", "at(2026-03-08T02:30:00)", "2026-01-01T00:00:00Z", { "" } },
    { "America/New_York", "at(2026-11-01T01:30:00)", "2026-01-01T00:00:00Z", { "2026-11-01T05:30:00Z", "" } },
};

Test(sched, next_fire_times)
{
    for (size_t i = 0; i < sizeof fires / sizeof fires[0]; i++) {
        const fire_t *f = &fires[i];
        tz_t *z = zone(f->zone);
        cron_t c;
        char err[256];
        cr_assert_eq(cron_parse(f->spec, &c, err, sizeof err), 0, "%s: %s", f->spec, err);
        int64_t t = utc(f->after);
        for (int k = 0; k < 6 && f->next[k]; k++) {
            int64_t n;
            char got[32] = "";
            if (cron_next(&c, z, t, &n) == 0) fmt(n, got, sizeof got);
            cr_expect_str_eq(got, f->next[k], "%s in %s after %s, fire %d", f->spec, f->zone, f->after, k + 1);
            if (!*got) break;
            t = n;
        }
        tz_destroy(&z);
    }
}

/* --- croniter as an oracle ------------------------------------------------------------ */

/* The subset croniter shares with EventBridge: `* , - /` in five fields, the day
 * chosen by one of day-of-month / day-of-week (the other `?` here, `*` there),
 * croniter's day-of-week 0-6 = ours 1-7 minus one, year `*`. No `a/n` in
 * day-of-week: croniter runs such a step up to 7 (Sunday again), EventBridge to 7 = SAT. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static unsigned rnd(unsigned n)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (unsigned)(rng % n);
}

static const char *const mon_names[] = { "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC" };
static const char *const dow_names[] = { "SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT" };

/* One field in both dialects; shift = what croniter's values are below ours. */
static void gen_field(int lo, int hi, int shift, const char *const *names, int allow_from_step, char *eb, char *cr, size_t n)
{
    int span = hi - lo + 1, a = lo + (int)rnd(span), b = a + (int)rnd(hi - a + 1), s = 1 + (int)rnd(span / 2 + 1);
    char ea[8], eb2[8];
    if (names && rnd(3) == 0) snprintf(ea, sizeof ea, "%s", names[a - lo]), snprintf(eb2, sizeof eb2, "%s", names[b - lo]);
    else snprintf(ea, sizeof ea, "%d", a), snprintf(eb2, sizeof eb2, "%d", b);
    switch (rnd(allow_from_step ? 7 : 6)) {
    case 0: snprintf(eb, n, "*"), snprintf(cr, n, "*"); break;
    case 1: snprintf(eb, n, "%s", ea), snprintf(cr, n, "%d", a - shift); break;
    case 2: snprintf(eb, n, "%s-%s", ea, eb2), snprintf(cr, n, "%d-%d", a - shift, b - shift); break;
    case 3: {
        int c = lo + (int)rnd(span);
        snprintf(eb, n, "%d,%s,%d", c, ea, b), snprintf(cr, n, "%d,%d,%d", c - shift, a - shift, b - shift);
        break;
    }
    case 4: snprintf(eb, n, "*/%d", s), snprintf(cr, n, "*/%d", s); break;
    case 5: snprintf(eb, n, "%d-%d/%d", a, b, s), snprintf(cr, n, "%d-%d/%d", a - shift, b - shift, s); break;
    default: snprintf(eb, n, "%d/%d", a, s), snprintf(cr, n, "%d/%d", a - shift, s); break;
    }
}

#define ORACLE_CASES 600
#define ORACLE_FIRES 3

Test(sched, next_fire_times_agree_with_croniter, .timeout = 120)
{
    char dir[] = "/tmp/herald-cron-XXXXXX", in[64], out[64], pyfile[64], cmd[512];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(pyfile, sizeof pyfile, "%s/py", dir);
    static const char py[] =
        "import sys, datetime as d\n"
        "from croniter import croniter\n"
        "for line in open(sys.argv[1]):\n"
        "  e, t = line.rstrip('\\n').split('|')\n"
        "  it = croniter(e, d.datetime.fromtimestamp(int(t), d.timezone.utc))\n"
        "  try: print(' '.join(str(int(it.get_next(float))) for _ in range(" "3" ")))\n"
        "  except Exception: print('none')\n";
    write_file(pyfile, py, sizeof py - 1);
    static char eb[ORACLE_CASES][128];
    static int64_t start[ORACLE_CASES];
    FILE *f = fopen(in, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < ORACLE_CASES; i++) {
        char f_eb[5][40], f_cr[5][40];
        gen_field(0, 59, 0, NULL, 1, f_eb[0], f_cr[0], 40);
        gen_field(0, 23, 0, NULL, 1, f_eb[1], f_cr[1], 40);
        gen_field(1, 12, 0, mon_names, 1, f_eb[3], f_cr[3], 40);
        if (rnd(2)) {
            gen_field(1, 31, 0, NULL, 1, f_eb[2], f_cr[2], 40);
            strcpy(f_eb[4], "?"), strcpy(f_cr[4], "*");
        } else {
            gen_field(1, 7, 1, dow_names, 0, f_eb[4], f_cr[4], 40);
            strcpy(f_eb[2], "?"), strcpy(f_cr[2], "*");
        }
        snprintf(eb[i], sizeof eb[i], "%s %s %s %s %s *", f_eb[0], f_eb[1], f_eb[2], f_eb[3], f_eb[4]);
        start[i] = tz_seconds(2020, 1, 1, 0, 0, 0) + rnd(11 * 365) * 86400LL + rnd(86400);
        if (rnd(4) == 0) start[i] -= start[i] % 60;                 /* on a minute: "strictly after" matters */
        fprintf(f, "%s %s %s %s %s|%lld\n", f_cr[0], f_cr[1], f_cr[2], f_cr[3], f_cr[4], (long long)start[i]);
    }
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s %s %s > %s", ORACLE_PYTHON, pyfile, in, out);
    cr_assert_eq(system(cmd), 0, "%s failed (is python3-croniter installed?)", cmd);
    f = fopen(out, "r");
    cr_assert_not_null(f);
    char line[256];
    int compared = 0, none = 0;
    for (int i = 0; i < ORACLE_CASES; i++) {
        cr_assert_not_null(fgets(line, sizeof line, f), "croniter answered %d of %d", i, ORACLE_CASES);
        cron_t c;
        char err[256];
        cr_assert_eq(cron_parse_cron(eb[i], &c, err, sizeof err), 0, "%s: %s", eb[i], err);
        int64_t t = start[i], n;
        if (strncmp(line, "none", 4) == 0) {
            none++;
            continue;                                              /* croniter gave up (a day that never comes) */
        }
        char *p = line;
        for (int k = 0; k < ORACLE_FIRES; k++) {
            long long want = strtoll(p, &p, 10);
            cr_assert_eq(cron_next(&c, NULL, t, &n), 0, "%s after %lld: none, croniter says %lld", eb[i], (long long)t, want);
            char got_s[32], want_s[32];
            fmt(n, got_s, sizeof got_s), fmt(want, want_s, sizeof want_s);
            cr_assert_eq(n, want, "%s after %lld: %s, croniter says %s", eb[i], (long long)t, got_s, want_s);
            t = n;
        }
        compared++;
    }
    fclose(f);
    unlink(in), unlink(out), unlink(pyfile);
    rmdir(dir);
    cr_assert_gt(compared, ORACLE_CASES * 9 / 10, "only %d of %d compared (%d none)", compared, ORACLE_CASES, none);
    cr_log_info("%d expressions × %d fires agree with croniter (%d it gave up on)", compared, ORACLE_FIRES, none);
}
