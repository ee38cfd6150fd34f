/* test_logs.c — handler logs (README "Handler logs"), through a real broker
 * and worker: what exec and runtime handlers write to stderr, and what native
 * handlers herald_log(), reaches the worker's log one line per line, with
 * time, function, message id and attempt; a flood is cut, counted and does
 * not hold its handler up; --log FILE is reopened on SIGHUP (logrotate);
 * log_output logs a successful attempt's output; --verbose a line per
 * delivery. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <regex.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static h_env env;

static void setup(void) { h_setup(&env); }
static void teardown(void) { h_teardown(&env); }

TestSuite(logs, .init = setup, .fini = teardown, .timeout = 180);

static pid_t worker(const char *extra1, const char *extra2)
{
    return h_start(&env, "w", "bin/herald-worker", "--broker", env.wrk, "--root", env.root, "--run-dir",
                   h_path(&env, "runs"), "--concurrency", "4", extra1, extra2, NULL);
}

/* Publishes payload to topic; the message id (static buffer). */
static const char *publish(const char *topic, const char *payload)
{
    static char id[128];
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "bin/herald-publish", "--broker", env.pub, topic, payload, NULL);
    cr_assert_eq(rc, 0, "publish: %s", err);
    snprintf(id, sizeof id, "%s", out);
    id[strcspn(id, "\n")] = 0;
    free(out);
    free(err);
    return id;
}

typedef struct { const char *path; char re[1024]; } file_re;

/* Does a line of the file match the extended regex? */
static bool file_matches(void *arg)
{
    const file_re *f = arg;
    char *text = h_read(f->path, NULL);
    if (!text) return false;
    regex_t re;
    cr_assert_eq(regcomp(&re, f->re, REG_EXTENDED | REG_NEWLINE | REG_NOSUB), 0, "bad regex %s", f->re);
    bool yes = regexec(&re, text, 0, NULL, 0) == 0;
    regfree(&re);
    free(text);
    return yes;
}

#define TS "^20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "

/* Waits until path has a line matching the regex built from fmt. */
static void wait_line(const char *path, int timeout_ms, const char *fmt, ...)
{
    file_re f = { .path = path };
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f.re, sizeof f.re, fmt, ap);
    va_end(ap);
    if (!h_wait(file_matches, &f, timeout_ms)) {
        char *text = h_read(path, NULL);
        cr_assert_fail("no line /%s/ in %s:\n%.4000s", f.re, path, text ? text : "(missing)");
    }
}

static bool has_line(const char *path, const char *fmt, ...)
{
    file_re f = { .path = path };
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f.re, sizeof f.re, fmt, ap);
    va_end(ap);
    return file_matches(&f);
}

Test(logs, exec_stderr_lines_in_worker_log_with_time_function_message_and_attempt)
{
    h_config(&env, "os",
             "functions = ( { name = \"ex\"; exec = [\"tests/handlers/logs.sh\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"ex\"; } ); } );\n");
    h_broker(&env);
    worker(NULL, NULL);
    const char *id = publish("t", "abc");
    const char *log = h_path(&env, "w.err");   /* no --log: the worker's stderr, as before */
    wait_line(log, 30000, TS "ex %s 1: hello from %s attempt 1$", id, id);
    wait_line(log, 30000, TS "ex %s 1: second line$", id);
    cr_assert(!has_line(log, " ex %s 1 output: ", id), "no log_output: no output line");
}

Test(logs, runtime_stderr_lines_in_worker_log_between_events_without_message_id)
{
    h_config(&env, "os",
             "functions = ( { name = \"rt\"; runtime = { command = [\"python3\", \"tests/handlers/rt_logs.py\"]; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rt\"; } ); } );\n");
    h_broker(&env);
    worker(NULL, NULL);
    const char *id = publish("t", "abc");
    const char *log = h_path(&env, "w.err");
    wait_line(log, 60000, TS "rt %s 1: rt got abc$", id);
    wait_line(log, 30000, TS "rt - -: runtime starting$");
}

Test(logs, native_herald_log_lines_in_worker_log)
{
    h_config(&env, "os",
             "functions = ( { name = \"nat\"; native = { library = \"build/tests/handlers/libnative_log.so\"; "
             "symbol = \"handle\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"nat\"; } ); } );\n");
    h_broker(&env);
    worker(NULL, NULL);
    const char *id = publish("t", "abc");
    const char *log = h_path(&env, "w.err");
    wait_line(log, 30000, TS "nat %s 1: native says abc \\(%s\\)$", id, id);
    wait_line(log, 30000, TS "nat %s 1: two$", id);
    wait_line(log, 30000, TS "nat %s 1: lines$", id);
}

/* Lines of function fn logged with a message id, and the sum of its "N lines dropped". */
static void count_flood(const char *path, const char *fn, long *logged, long *dropped)
{
    char *text = h_read(path, NULL);
    char lined[64], drop[64];
    snprintf(lined, sizeof lined, "Z %s ", fn);
    snprintf(drop, sizeof drop, "Z %s - -: ", fn);
    *logged = *dropped = 0;
    for (char *p = text; p && *p;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        char *d = strstr(p, drop), *l = strstr(p, lined);
        if (d)
            *dropped += strtol(d + strlen(drop), NULL, 10);
        else if (l && !strstr(p, " delivery: "))
            (*logged)++;
        p = nl ? nl + 1 : NULL;
    }
    free(text);
}

typedef struct { const char *path, *fn; long want; } flood_total;

static bool flood_all_told(void *arg)
{
    const flood_total *f = arg;
    long logged, dropped;
    count_flood(f->path, f->fn, &logged, &dropped);
    return logged + dropped == f->want;
}

/* flood.sh writes 100 MiB of stderr (no newline: lines are cut every 2048
 * bytes, 51,200 a run) and as much stdout: each event still succeeds well
 * within its timeout (a handler held up by its log would time out), and
 * every line is either logged or counted as dropped. */
Test(logs, flooding_handler_does_not_block_and_dropped_lines_are_counted)
{
    h_config(&env, "os",
             "functions = ( { name = \"fl\"; exec = [\"tests/handlers/flood.sh\"]; timeout = 60; max_attempts = 1; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"fl\"; } ); } );\n");
    h_broker(&env);
    worker(NULL, NULL);
    const int n = 3;
    for (int i = 0; i < n; i++)
        publish("t", "x");
    h_wait_sub(&env, "t", "fl", "succeeded", n, 120000);
    h_assert_sub(&env, "t", "fl", "failed", 0);
    flood_total f = { h_path(&env, "w.err"), "fl", 51200L * n };
    bool told = h_wait(flood_all_told, &f, 30000);
    long logged, dropped;
    count_flood(f.path, "fl", &logged, &dropped);
    cr_assert(told, "logged %ld + dropped %ld != %ld lines", logged, dropped, f.want);
    cr_assert_gt(dropped, 0);
    cr_assert_gt(logged, 0);
}

Test(logs, native_herald_log_flood_is_cut_and_counted)
{
    h_config(&env, "os",
             "functions = ( { name = \"nat\"; native = { library = \"build/tests/handlers/libnative_log.so\"; "
             "symbol = \"handle\"; }; max_attempts = 1; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"nat\"; } ); } );\n");
    h_broker(&env);
    worker(NULL, NULL);
    publish("t", "flood");
    h_wait_sub(&env, "t", "nat", "succeeded", 1, 60000);
    flood_total f = { h_path(&env, "w.err"), "nat", 100000 };
    bool told = h_wait(flood_all_told, &f, 30000);
    long logged, dropped;
    count_flood(f.path, "nat", &logged, &dropped);
    cr_assert(told, "logged %ld + dropped %ld != %ld lines", logged, dropped, f.want);
    cr_assert_gt(dropped, 0);
}

Test(logs, log_file_is_reopened_on_sighup_after_a_rename)
{
    h_config(&env, "os",
             "functions = ( { name = \"ex\"; exec = [\"tests/handlers/logs.sh\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"ex\"; } ); } );\n");
    h_broker(&env);
    char log[300], rotated[310];
    snprintf(log, sizeof log, "%s", h_path(&env, "worker.log"));
    snprintf(rotated, sizeof rotated, "%s.1", log);
    pid_t w = worker("--log", log);
    char id1[128];
    snprintf(id1, sizeof id1, "%s", publish("t", "one"));
    wait_line(log, 30000, TS "ex %s 1: second line$", id1);
    cr_assert_eq(rename(log, rotated), 0);
    kill(w, SIGHUP);
    wait_line(log, 30000, "SIGHUP: log reopened$");
    const char *id2 = publish("t", "two");
    wait_line(log, 30000, TS "ex %s 1: second line$", id2);
    cr_assert(!has_line(rotated, " ex %s 1: ", id2), "a line after the reopen went to the rotated file");
    cr_assert(has_line(rotated, " ex %s 1: ", id1));
    cr_assert(!has_line(log, " ex %s 1: ", id1));
    char *err = h_read(h_path(&env, "w.err"), NULL);
    cr_assert(!err || !strstr(err, " ex "), "handler lines went to stderr despite --log: %s", err);
    free(err);
}

Test(logs, log_output_logs_a_successful_attempts_output)
{
    h_config(&env, "os",
             "functions = ( { name = \"ex\"; exec = [\"tests/handlers/logs.sh\"]; log_output = true; },\n"
             "              { name = \"quiet\"; exec = [\"tests/handlers/logs.sh\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"ex\"; }, { function = \"quiet\"; } ); } );\n");
    h_broker(&env);
    worker(NULL, NULL);
    const char *id = publish("t", "abc");
    const char *log = h_path(&env, "w.err");
    wait_line(log, 30000, TS "ex %s 1 output: result:abc$", id);
    h_wait_sub(&env, "t", "quiet", "succeeded", 1, 30000);
    wait_line(log, 30000, TS "quiet %s 1: second line$", id);
    cr_assert(!has_line(log, " quiet %s 1 output: ", id), "quiet has no log_output");
}

Test(logs, verbose_logs_a_line_per_delivery)
{
    h_config(&env, "os",
             "functions = ( { name = \"ex\"; exec = [\"tests/handlers/logs.sh\"]; },\n"
             "              { name = \"bad\"; exec = [\"tests/handlers/fail.sh\"]; max_attempts = 2;\n"
             "                backoff = { initial = 0.1; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"ex\"; }, { function = \"bad\"; } ); } );\n");
    h_broker(&env);
    worker("--verbose", NULL);
    const char *id = publish("t", "abc");
    const char *log = h_path(&env, "w.err");
    wait_line(log, 30000, TS "ex %s 1 delivery: ok [0-9]+\\.[0-9]{3} ms$", id);
    wait_line(log, 30000, TS "bad %s 1 delivery: error [0-9]+\\.[0-9]{3} ms$", id);
    wait_line(log, 30000, TS "bad %s 2 delivery: error [0-9]+\\.[0-9]{3} ms$", id);
}

Test(logs, no_delivery_lines_without_verbose)
{
    h_config(&env, "os",
             "functions = ( { name = \"ex\"; exec = [\"tests/handlers/logs.sh\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"ex\"; } ); } );\n");
    h_broker(&env);
    worker(NULL, NULL);
    const char *id = publish("t", "abc");
    h_wait_sub(&env, "t", "ex", "succeeded", 1, 30000);
    const char *log = h_path(&env, "w.err");
    wait_line(log, 30000, TS "ex %s 1: second line$", id);
    cr_assert(!has_line(log, " delivery: "));
}

Test(logs, log_file_that_cannot_be_opened_is_one_line_and_exit_2)
{
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "bin/herald-worker", "--broker", env.wrk, "--log",
                   h_path(&env, "no/such/dir/worker.log"), NULL);
    cr_assert_eq(rc, 2);
    cr_assert(err && strstr(err, "herald-worker: --log ") && strstr(err, "No such file or directory"), "%s", err);
    cr_assert_eq(strchr(err, '\n'), err + strlen(err) - 1, "one line: %s", err);
    free(out);
    free(err);
}
