/* test_spine.c — the spine of DESIGN §5 through the real programs: publish →
 * durable store → fan-out → workers → ack, and the crash-restart path. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static h_env env;

static void setup(void) { h_setup(&env); }
static void teardown(void) { h_teardown(&env); }

TestSuite(spine, .init = setup, .fini = teardown, .timeout = 180);


/* The first word of each line of a file, sorted and unique. */
static size_t first_words(const char *path, char ***out, size_t *total)
{
    size_t n = h_lines_sorted(path, out, total);
    for (size_t i = 0; i < n; i++) {
        char *sp = strchr((*out)[i], ' ');
        if (sp) *sp = 0;
    }
    return n;
}


static void assert_same_ids(const char *published, const char *seen, size_t n)
{
    char **a, **b;
    size_t ta, tb;
    size_t na = h_lines_sorted(published, &a, &ta);
    size_t nb = first_words(seen, &b, &tb);
    cr_assert_eq(na, n, "%zu distinct ids published, expected %zu", na, n);
    /* first_words may have made duplicates after truncation: re-unique */
    size_t u = 0;
    for (size_t i = 0; i < nb; i++) if (!u || strcmp(b[u - 1], b[i]) != 0) b[u++] = b[i]; else free(b[i]);
    cr_assert_eq(u, n, "%s: handler saw %zu distinct ids, expected %zu", seen, u, n);
    for (size_t i = 0; i < n; i++) cr_assert_str_eq(a[i], b[i], "id %zu differs", i);
    h_free_lines(a, na);
    h_free_lines(b, u);
}

/* 20,000 handler runs: minutes on a loaded machine; the waits fail on a stall only */
Test(spine, fanout_exec_and_native_each_see_every_message, .timeout = 900)
{
    char body[2048];
    snprintf(body, sizeof body,
             "functions = (\n"
             " { name = \"rec_exec\"; exec = [\"tests/handlers/spine_record.sh\"]; env = { RECORD_FILE = \"%s\"; }; },\n"
             " { name = \"rec_native\"; native = { library = \"examples/handlers/libcount.so\"; symbol = \"count\"; };\n"
             "   env = { COUNT_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec_exec\"; }, { function = \"rec_native\"; } ); } );\n",
             h_path(&env, "exec.txt"), h_path(&env, "native.txt"));
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, 8);
    h_worker(&env, NULL, 8);
    /* sanitized builds run ~5x slower: the same check on fewer events */
    const int n = getenv("HERALD_TEST_SANITIZE") ? 2000 : 10000;
    h_write_lines(h_path(&env, "in.txt"), n, "event-%d");
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, h_path(&env, "in.txt"), &out, &err, "bin/herald-publish", "--broker", env.pub,
                   "--lines", "t", NULL);
    cr_assert_eq(rc, 0, "herald-publish failed: %s", err);
    h_write(h_path(&env, "ids.txt"), out);
    free(out);
    free(err);
    cr_assert_eq(h_count_lines(h_path(&env, "ids.txt")), (size_t)n);
    h_wait_lines(h_path(&env, "native.txt"), (size_t)n, 60000);
    h_wait_lines(h_path(&env, "exec.txt"), (size_t)n, 120000);
    assert_same_ids(h_path(&env, "ids.txt"), h_path(&env, "native.txt"), n);
    assert_same_ids(h_path(&env, "ids.txt"), h_path(&env, "exec.txt"), n);
    char *st = h_stats(&env);
    cr_assert_not_null(st);
    char want[64];
    snprintf(want, sizeof want, "{\"name\":\"t\",\"published\":%d}", n);
    cr_assert(strstr(st, want), "stats: %s", st);
    free(st);
}

Test(spine, broker_kill9_after_confirmed_publishes_loses_none)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"examples/handlers/libcount.so\"; symbol = \"count\"; };\n"
             "   env = { COUNT_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n",
             h_path(&env, "seen.txt"));
    h_config(&env, "fsync", body);
    pid_t broker = h_broker(&env);
    const int n = 2000;
    h_write_lines(h_path(&env, "in.txt"), n, "payload %d");
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, h_path(&env, "in.txt"), &out, &err, "bin/herald-publish", "--broker", env.pub,
                   "--lines", "t", NULL);
    cr_assert_eq(rc, 0, "publish: %s", err);
    h_write(h_path(&env, "ids.txt"), out);
    free(out);
    free(err);
    /* every one of them was confirmed durable: now the broker dies hard */
    h_kill(&env, broker, SIGKILL);
    h_broker(&env);
    h_worker(&env, NULL, 16);
    h_wait_lines(h_path(&env, "seen.txt"), (size_t)n, 60000);
    assert_same_ids(h_path(&env, "ids.txt"), h_path(&env, "seen.txt"), n);
}

Test(spine, filtered_subscription_gets_exactly_the_matching_events)
{
    char body[2048];
    snprintf(body, sizeof body,
             "functions = (\n"
             " { name = \"only_a\"; exec = [\"tests/handlers/spine_record.sh\"]; env = { RECORD_FILE = \"%s\"; }; },\n"
             " { name = \"all\"; exec = [\"tests/handlers/spine_record.sh\"]; env = { RECORD_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = (\n"
             "   { function = \"only_a\"; filter = { kind = [\"a\", \"aa\"]; }; },\n"
             "   { function = \"all\"; } ); } );\n",
             h_path(&env, "a.txt"), h_path(&env, "all.txt"));
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, 4);
    const char *kinds[] = { "a", "b", "aa", "A", NULL };   /* NULL: no attribute */
    int matching = 0, total = 0;
    for (int i = 0; i < 20; i++) {
        const char *k = kinds[i % 5];
        char payload[32], attr[32];
        snprintf(payload, sizeof payload, "p%d", i);
        snprintf(attr, sizeof attr, "kind=%s", k ? k : "");
        int rc = k ? h_run(&env, NULL, NULL, NULL, "bin/herald-publish", "--broker", env.pub, "t", payload,
                           "-a", attr, NULL)
                   : h_run(&env, NULL, NULL, NULL, "bin/herald-publish", "--broker", env.pub, "t", payload, NULL);
        cr_assert_eq(rc, 0);
        total++;
        if (k && (strcmp(k, "a") == 0 || strcmp(k, "aa") == 0)) matching++;
    }
    h_wait_lines(h_path(&env, "all.txt"), (size_t)total, 30000);
    h_wait_lines(h_path(&env, "a.txt"), (size_t)matching, 30000);
    /* everything the unfiltered one saw is in; the filtered one saw only a/aa */
    char *a = h_read(h_path(&env, "a.txt"), NULL);
    cr_assert_eq(h_count_lines(h_path(&env, "a.txt")), (size_t)matching, "filtered got: %s", a);
    for (char *line = strtok(a, "\n"); line; line = strtok(NULL, "\n")) {
        char id[80], topic[64], kind[64];
        cr_assert_eq(sscanf(line, "%79s %63s %63s", id, topic, kind), 3);
        cr_assert(strcmp(kind, "a") == 0 || strcmp(kind, "aa") == 0, "unexpected kind in %s", line);
    }
    free(a);
    cr_assert_eq(h_count_lines(h_path(&env, "all.txt")), (size_t)total);
}

static bool two_workers(void *arg)
{
    char *st = h_stats(arg);
    bool ok = st && strstr(st, "\"workers\":[{") && strstr(strstr(st, "\"workers\":[{") + 12, "},{\"id\"");
    free(st);
    return ok;
}

/* What `make run` runs after building: a broker and two workers that
 * heraldctl stats sees, stopped together by one signal. */
Test(spine, make_run_starts_a_broker_and_two_workers_that_stats_sees)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"noop\"; native = { library = \"examples/handlers/libnoop.so\"; symbol = \"noop\"; }; } );\n"
             "topics = ( { name = \"bench\"; subscriptions = ( { function = \"noop\"; } ); } );\n"
             "worker = { broker = \"%s\"; };\n", env.wrk);
    h_config(&env, "fsync", body);
    pid_t run = h_start(&env, "run", "examples/run.sh", env.cfg, NULL);
    cr_assert(h_wait(two_workers, &env, 20000), "stats never showed two workers: %s", h_stats(&env));
    char *out = NULL;
    int rc = h_run(&env, NULL, &out, NULL, "bin/herald-publish", "--broker", env.pub, "bench", "x", NULL);
    cr_assert_eq(rc, 0);
    free(out);
    kill(run, SIGTERM);
    cr_assert_eq(h_wait_exit(run, 20000), 0, "run.sh did not stop cleanly on SIGTERM");
}
