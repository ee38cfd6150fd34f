/* test_schedules.c — schedules in the broker (DESIGN §12) through the real
 * programs: a broker firing slots into its SQLite file, kill -9 in between,
 * restarts with its schedule clock moved (HERALD_TEST_CLOCK_OFFSET, the
 * test-only offset), SIGHUP, heraldctl schedules, a worker running what fired.
 * Expressions and zones themselves are checked against croniter and the
 * zoneinfo files in tests/unit/test_sched.c. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static h_env env;
static void setup(void) { h_setup(&env); }
static void teardown(void)
{
    unsetenv("HERALD_TEST_CLOCK_OFFSET");
    h_teardown(&env);
}
TestSuite(schedules, .init = setup, .fini = teardown, .timeout = 120);

/* The schedule slots stored in the broker's database for producer "sched_ID"
 * of schedule NAME, ascending (the broker must be stopped: read-only open of
 * its file). Returns how many; *dups counts message ids stored twice. */
static size_t stored_slots(const char *name, long long *slots, size_t cap, size_t *dups)
{
    char path[600];
    snprintf(path, sizeof path, "%s/data/herald.db", env.dir);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK, "%s", path);
    sqlite3_stmt *st;
    const char *q =
        "SELECT CAST(substr(m.mid, instr(m.mid, '-') + 1) AS INTEGER) AS slot, count(*) FROM messages m, schedules s"
        " WHERE m.mid LIKE 'sched_' || s.id || '-%' AND s.name = ? GROUP BY m.mid ORDER BY slot";
    cr_assert_eq(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    size_t n = 0;
    *dups = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n < cap) slots[n] = sqlite3_column_int64(st, 0);
        n++;
        if (sqlite3_column_int(st, 1) > 1) (*dups)++;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* heraldctl schedules --json, and one schedule's "fired" from it. */
static long fired(const char *name)
{
    char *out = h_ctl(&env, "schedules", "--json", NULL);
    if (!out) return LONG_MIN;
    char anchor[200];
    snprintf(anchor, sizeof anchor, "{\"name\":\"%s\"", name);
    long v = h_json_num(out, anchor, "fired");
    free(out);
    return v;
}

typedef struct { const char *name; long at_least; } fired_arg;
static bool fired_reaches(void *arg)
{
    fired_arg *a = arg;
    long v = fired(a->name);
    return v != LONG_MIN && v >= a->at_least;
}
static void wait_fired(const char *name, long at_least, int timeout_ms)
{
    fired_arg a = { name, at_least };
    cr_assert(h_wait(fired_reaches, &a, timeout_ms), "schedule %s fired %ld, not %ld, within %d ms", name,
              fired(name), at_least, timeout_ms);
}

static pid_t broker_with_offset(long offset_s)
{
    char v[32];
    snprintf(v, sizeof v, "%ld", offset_s);
    setenv("HERALD_TEST_CLOCK_OFFSET", v, 1);
    pid_t pid = h_broker(&env);
    unsetenv("HERALD_TEST_CLOCK_OFFSET");
    return pid;
}

Test(schedules, a_rate_schedule_publishes_one_scheduled_event_per_slot)
{
    char body[2048];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; exec = [\"tests/handlers/spine_record.sh\"];"
             " env = { RECORD_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"ticks\"; subscriptions = ( { function = \"rec\"; } ); } );\n"
             "schedules = ( { name = \"tick\"; rate = \"1 second\"; topic = \"ticks\"; attributes = { kind = \"beat\"; }; } );\n",
             h_path(&env, "rec.txt"));
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, 2);
    h_wait_lines(h_path(&env, "rec.txt"), 3, 20000);

    char **lines;
    size_t total, n = h_lines_sorted(h_path(&env, "rec.txt"), &lines, &total);
    cr_assert_eq(n, total, "an event ran twice");
    long long prev = 0;
    for (size_t i = 0; i < n; i++) {
        long long id, slot;
        char topic[64], kind[64], payload[1024];
        cr_assert_eq(sscanf(lines[i], "sched_%lld-%lld %63s %63s %1023[^\n]", &id, &slot, topic, kind, payload), 5,
                     "%s", lines[i]);
        cr_assert_str_eq(topic, "ticks");
        cr_assert_str_eq(kind, "beat", "the schedule's attributes go with its events");
        if (prev) cr_assert_eq(slot, prev + 1, "slots are one second apart: %lld after %lld", slot, prev);
        prev = slot;
        /* EventBridge's Scheduled Event, time = the slot in RFC 3339 UTC */
        time_t t = (time_t)slot;
        struct tm tm;
        gmtime_r(&t, &tm);
        char when[64], expect[512];
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(expect, sizeof expect,
                 "{\"version\":\"0\",\"id\":\"sched_%lld-%lld\",\"detail-type\":\"Scheduled Event\","
                 "\"source\":\"herald.scheduler\",\"account\":\"000000000000\",\"time\":\"%s\",\"region\":\"us-east-1\","
                 "\"resources\":[\"tick\"],\"detail\":{}}",
                 id, slot, when);
        cr_assert_str_eq(payload, expect);
    }
    h_free_lines(lines, n);
}

Test(schedules, through_kill_9_of_the_broker_no_slot_is_stored_twice_and_none_is_skipped)
{
    h_config(&env, "os",
             "functions = ( { name = \"f\"; exec = [\"true\"]; } );\n"
             "topics = ( { name = \"ticks\"; subscriptions = ( { function = \"f\"; } ); } );\n"
             "schedules = ( { name = \"tick\"; rate = \"1 second\"; topic = \"ticks\"; catch_up = \"all\"; } );\n");
    /* no worker: every fired event stays in the database to be counted */
    srand((unsigned)getpid());
    long seen = 0;
    for (int round = 0; round < 4; round++) {
        pid_t b = h_broker(&env);
        wait_fired("tick", seen + 1, 20000);   /* it fired in this run … */
        usleep((useconds_t)(rand() % 1000) * 1000);   /* … and dies at some moment of a second */
        seen = fired("tick");
        h_kill(&env, b, SIGKILL);
    }
    h_broker(&env);
    wait_fired("tick", seen + 1, 20000);   /* the restart caught up, then fired on */
    h_kill(&env, env.pids[env.npids - 1], SIGTERM);

    long long slots[512];
    size_t dups, n = stored_slots("tick", slots, 512, &dups);
    char *log = h_read(h_path(&env, "broker.err"), NULL);
    cr_assert(n >= 5 && n <= 512, "%zu slots stored; broker log:\n%s", n, log);
    cr_assert_eq(dups, 0, "%zu slots were stored twice; broker log:\n%s", dups, log);
    for (size_t i = 1; i < n; i++)
        cr_assert_eq(slots[i], slots[i - 1] + 1, "slot %lld skipped (after %lld, of %lld to %lld); broker log:\n%s",
                     slots[i - 1] + 1, slots[i - 1], slots[0], slots[n - 1], log);
    free(log);
}

/* Schedules fire "10 minutes later" (the test clock offset) on a restart:
 * each catch_up keeps what it should of the 10 minutely slots missed. */
Test(schedules, missed_slots_follow_catch_up_all_latest_none_and_starting_deadline)
{
    time_t soon = time(NULL) + 300;   /* an `at` 5 minutes ahead: missed by 5 minutes after the jump */
    struct tm tm;
    gmtime_r(&soon, &tm);
    char at[32], body[2048];
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(body, sizeof body,
             "functions = ( { name = \"f\"; exec = [\"true\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"f\"; } ); } );\n"
             "schedules = (\n"
             "  { name = \"all\"; rate = \"1 minute\"; topic = \"t\"; catch_up = \"all\"; },\n"
             "  { name = \"latest\"; rate = \"1 minute\"; topic = \"t\"; },\n"
             "  { name = \"none\"; rate = \"1 minute\"; topic = \"t\"; catch_up = \"none\"; },\n"
             "  { name = \"late\"; at = \"%s\"; topic = \"t\"; starting_deadline = 60.0; },\n"
             "  { name = \"intime\"; at = \"%s\"; topic = \"t\"; starting_deadline = 3600.0; } );\n",
             at, at);
    h_config(&env, "os", body);
    pid_t b = h_broker(&env);
    cr_assert_eq(fired("all"), 0);
    h_kill(&env, b, SIGTERM);
    broker_with_offset(600);
    long all = fired("all");
    cr_assert(all == 10 || all == 11, "catch_up all: %ld of the 10-11 missed minutes", all);
    cr_assert_eq(fired("latest"), 1, "catch_up latest fires the newest missed slot only");
    cr_assert_eq(fired("none"), 0, "catch_up none fires none");
    cr_assert_eq(fired("late"), 0, "a slot missed by 5 minutes is past a 60 s starting_deadline");
    cr_assert_eq(fired("intime"), 1, "a slot missed by 5 minutes is within a 3600 s starting_deadline");
}

Test(schedules, an_at_schedule_fires_once_at_its_time_then_never_again)
{
    time_t soon = time(NULL) + 3;
    struct tm tm;
    gmtime_r(&soon, &tm);
    char at[32], body[1024];
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(body, sizeof body,
             "functions = ( { name = \"f\"; exec = [\"true\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"f\"; } ); } );\n"
             "schedules = ( { name = \"once\"; at = \"%s\"; topic = \"t\"; },\n"
             "  { name = \"beat\"; rate = \"1 second\"; topic = \"t\"; } );\n", at);
    h_config(&env, "os", body);
    h_broker(&env);
    wait_fired("once", 1, 20000);
    long beat = fired("beat");
    wait_fired("beat", beat + 2, 20000);   /* time went on … */
    cr_assert_eq(fired("once"), 1, "… and the at schedule fired once");
    char *out = h_ctl(&env, "schedules", "--json", NULL);
    char expect[128];
    snprintf(expect, sizeof expect, "\"next\":null,\"last\":\"%sZ\",\"fired\":1", at);
    cr_assert(out && strstr(out, expect), "want %s in %s", expect, out);
    free(out);
}

/* One schedule's JSON from heraldctl schedules --json (caller frees the text). */
static char *schedule_json(const char *name)
{
    char *out = h_ctl(&env, "schedules", "--json", NULL), anchor[128];
    snprintf(anchor, sizeof anchor, "{\"name\":\"%s\"", name);
    char *at = out ? strstr(out, anchor) : NULL;
    cr_assert(at, "no schedule %s in %s", name, out);
    char *end = strchr(at, '}');
    char *one = strndup(at, (size_t)(end - at + 1));
    free(out);
    return one;
}

/* 02:30 every day in Paris, with the broker's schedule clock moved to the
 * nights of 2027's changes: on 28 March 02:30 does not exist (02:00 CET →
 * 03:00 CEST), so the next slot is the 29th; on 31 October it happens twice
 * (03:00 CEST → 02:00 CET), and fires once, at the first. */
Test(schedules, daylight_saving_skips_a_time_that_does_not_exist_and_fires_a_repeated_one_once)
{
    h_config(&env, "os",
             "functions = ( { name = \"f\"; exec = [\"true\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"f\"; } ); } );\n"
             "schedules = ( { name = \"night\"; cron = \"30 2 * * ? *\"; timezone = \"Europe/Paris\"; topic = \"t\"; } );\n");
    pid_t b = broker_with_offset(1806195540L - (long)time(NULL));   /* 2027-03-28T00:59:00Z, 01:59 CET */
    char *j = schedule_json("night");
    cr_assert(strstr(j, "\"next\":\"2027-03-29T00:30:00Z\""), "02:30 on 28 March does not exist: %s", j);
    free(j);
    h_kill(&env, b, SIGTERM);
    char cmd[600];   /* a fresh data dir: the schedule starts at the new clock */
    snprintf(cmd, sizeof cmd, "rm -rf '%s/data'", env.dir);
    cr_assert_eq(system(cmd), 0);
    broker_with_offset(1824942598L - (long)time(NULL));   /* 2027-10-31T00:29:58Z, 02:29:58 CEST */
    wait_fired("night", 1, 20000);
    j = schedule_json("night");
    cr_assert(strstr(j, "\"last\":\"2027-10-31T00:30:00Z\",\"fired\":1") &&
                  strstr(j, "\"next\":\"2027-11-01T01:30:00Z\""),
              "02:30 CEST fired; 02:30 CET, an hour later, must not: %s", j);
    free(j);
}

Test(schedules, a_clock_stepped_back_does_not_fire_past_slots_again)
{
    h_config(&env, "os",
             "functions = ( { name = \"f\"; exec = [\"true\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"f\"; } ); } );\n"
             "schedules = ( { name = \"tick\"; rate = \"1 second\"; topic = \"t\"; catch_up = \"all\"; } );\n");
    pid_t b = h_broker(&env);
    wait_fired("tick", 3, 20000);
    h_kill(&env, b, SIGTERM);
    long before = 0;
    long long slots[512];
    size_t dups, n0 = stored_slots("tick", slots, 512, &dups);
    cr_assert(n0 >= 3 && n0 <= 512, "%zu slots stored", n0);
    long long newest = slots[n0 - 1];
    b = broker_with_offset(-3600);   /* an hour back: every slot from there to now was fired already */
    char *out = h_ctl(&env, "schedules", "--json", NULL);
    cr_assert(out && strstr(out, "\"fired\":"), "%s", out);
    before = fired("tick");
    free(out);
    /* it still serves (a publish is stored), and fired nothing meanwhile */
    cr_assert_eq(h_run(&env, NULL, NULL, NULL, "bin/herald-publish", "--broker", env.pub, "t", "probe", NULL), 0);
    cr_assert_eq(fired("tick"), before, "slots fired again after the clock stepped back");
    h_kill(&env, b, SIGTERM);
    size_t n1 = stored_slots("tick", slots, 512, &dups);
    cr_assert_eq(n1, n0, "%zu slots stored after the step back, %zu before", n1, n0);
    cr_assert_eq(dups, 0);
    cr_assert_eq(slots[n1 - 1], newest);
}

Test(schedules, a_function_target_is_an_event_invoke_run_by_a_worker)
{
    char body[2048];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; exec = [\"tests/handlers/spine_record.sh\"];"
             " env = { RECORD_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; } );\n"
             "schedules = ( { name = \"poll\"; rate = \"1 second\"; function = \"rec\"; payload = \"{\\\"kind\\\":\\\"poll\\\"}\"; } );\n",
             h_path(&env, "rec.txt"));
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, 1);
    h_wait_lines(h_path(&env, "rec.txt"), 2, 20000);
    char *rec = h_read(h_path(&env, "rec.txt"), NULL);
    /* "MESSAGE_ID TOPIC ATTR PAYLOAD": no topic (an invoke of the function itself), the configured payload */
    cr_assert(strstr(rec, " - {\"kind\":\"poll\"}\n") && strncmp(rec, "sched_", 6) == 0, "%s", rec);
    free(rec);
}

Test(schedules, sighup_adds_removes_and_changes_schedules)
{
    const char *fns = "functions = ( { name = \"f\"; exec = [\"true\"]; } );\n"
                      "topics = ( { name = \"t\"; subscriptions = ( { function = \"f\"; } ); } );\n";
    char body[2048];
    snprintf(body, sizeof body,
             "%sschedules = ( { name = \"keep\"; rate = \"1 second\"; topic = \"t\"; },\n"
             "  { name = \"change\"; rate = \"1 second\"; topic = \"t\"; },\n"
             "  { name = \"drop\"; rate = \"1 second\"; topic = \"t\"; } );\n", fns);
    h_config(&env, "os", body);
    pid_t b = h_broker(&env);
    wait_fired("change", 2, 20000);
    long kept = fired("keep");
    snprintf(body, sizeof body,
             "%sschedules = ( { name = \"keep\"; rate = \"1 second\"; topic = \"t\"; },\n"
             "  { name = \"change\"; cron = \"0 2 * * ? *\"; timezone = \"Europe/Paris\"; topic = \"t\"; },\n"
             "  { name = \"added\"; rate = \"1 minute\"; topic = \"t\"; } );\n", fns);
    h_config(&env, "os", body);
    kill(b, SIGHUP);
    bool reloaded = false;
    for (int i = 0; i < 500 && !reloaded; i++) {
        char *out = h_ctl(&env, "schedules", "--json", NULL);
        reloaded = out && strstr(out, "\"name\":\"added\"");
        if (!reloaded) usleep(20000);
        else {
            cr_assert(!strstr(out, "\"drop\""), "a removed schedule is gone: %s", out);
            cr_assert(strstr(out, "{\"name\":\"change\",\"topic\":\"t\",\"function\":null,\"spec\":\"cron(0 2 * * ? *)\","
                                  "\"timezone\":\"Europe/Paris\",\"catch_up\":\"latest\""),
                      "%s", out);
            cr_assert(strstr(out, "\"fired\":0}") != NULL, "a changed schedule counts from now: %s", out);
            /* the changed one's next slot is the next 02:00 in Paris: 00:00 or 01:00 UTC */
            char *nx = strstr(strstr(out, "\"name\":\"change\""), "\"next\":\"");
            cr_assert(nx && (strncmp(nx + 18, "T01:00:00Z", 10) == 0 || strncmp(nx + 18, "T00:00:00Z", 10) == 0),
                      "%s", out);
        }
        free(out);
    }
    cr_assert(reloaded, "SIGHUP did not add the schedule");
    cr_assert_geq(fired("keep"), kept, "an unchanged schedule keeps its count");
    wait_fired("keep", kept + 2, 20000);   /* and goes on firing */
    char *table = h_ctl(&env, "schedules", NULL);
    cr_assert(table && strstr(table, "name") && strstr(table, "added") && strstr(table, "rate(1 minute)"), "%s", table);
    free(table);
}

Test(schedules, a_slot_refused_while_throttled_fires_once_the_broker_accepts_again)
{
    h_config_broker(&env, "os", "max_backlog = 2;",
                    "functions = ( { name = \"f\"; exec = [\"true\"]; } );\n"
                    "topics = ( { name = \"t\"; subscriptions = ( { function = \"f\"; } ); } );\n"
                    "schedules = ( { name = \"tick\"; rate = \"1 second\"; topic = \"t\"; } );\n");
    pid_t b = h_broker(&env);
    wait_fired("tick", 2, 20000);   /* the backlog is full: the next slots are refused */
    char *log = NULL;
    for (int i = 0; i < 500; i++) {
        free(log);
        log = h_read(h_path(&env, "broker.err"), NULL);
        if (log && strstr(log, "was refused, trying again")) break;
        usleep(20000);
    }
    cr_assert(log && strstr(log, "throttled"), "%s", log);
    free(log);
    h_worker(&env, NULL, 2);   /* drains the backlog: the refused slot goes in, late, and the rest after it */
    wait_fired("tick", 5, 30000);
    h_kill(&env, b, SIGTERM);
    long long slots[512];
    size_t dups, n = stored_slots("tick", slots, 512, &dups);
    cr_assert_eq(dups, 0);
    for (size_t i = 1; i < n; i++)
        cr_assert_eq(slots[i], slots[i - 1] + 1, "slot %lld skipped while throttled", slots[i - 1] + 1);
}

Test(schedules, a_bad_schedule_is_a_config_error_with_its_line)
{
    h_config(&env, "os",
             "functions = ( { name = \"f\"; exec = [\"true\"]; } );\n"
             "topics = ( { name = \"t\"; } );\n"
             "schedules = (\n"
             "  { name = \"a\"; cron = \"0 2 * * * *\"; topic = \"t\"; },\n"
             "  { name = \"b\"; rate = \"0 minutes\"; function = \"f\"; },\n"
             "  { name = \"c\"; at = \"2026-02-30T00:00:00\"; topic = \"t\"; },\n"
             "  { name = \"d\"; rate = \"1 hour\"; timezone = \"Mars/Olympus\"; topic = \"nope\"; } );\n");
    char *err = NULL;
    cr_assert_eq(h_run(&env, NULL, NULL, &err, "bin/herald-broker", "-c", env.cfg, NULL), 2);
    cr_assert(strstr(err, "herald.cfg:6: schedules[0] (a): cron \"0 2 * * * *\": day-of-month and day-of-week "
                          "cannot both be set; use ?"), "%s", err);
    cr_assert(strstr(err, "herald.cfg:7: schedules[1] (b): rate \"0 minutes\":"), "%s", err);
    cr_assert(strstr(err, "herald.cfg:8: schedules[2] (c): at \"2026-02-30T00:00:00\":"), "%s", err);
    cr_assert(strstr(err, "herald.cfg:9: schedules[3] (d): timezone: unknown time zone \"Mars/Olympus\""), "%s", err);
    cr_assert(strstr(err, "herald.cfg:9: schedules[3] (d): topic 'nope' is not defined in topics"), "%s", err);
    free(err);
}
