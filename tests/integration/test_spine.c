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

/* ---- attributes in the handler's environment (DESIGN §4) ---------------------- */

static bool file_exists(void *path)
{
    return access(path, F_OK) == 0;
}

/* A NUL-separated environment dump: the value of NAME, or NULL (static copy). */
static const char *dumped(const char *env_text, size_t len, const char *name)
{
    static char val[4096];
    size_t nl = strlen(name);
    for (const char *p = env_text; p < env_text + len; p += strlen(p) + 1)
        if (strncmp(p, name, nl) == 0 && p[nl] == '=') {
            snprintf(val, sizeof val, "%s", p + nl + 1);
            return val;
        }
    return NULL;
}

/* Keys that fold to one HERALD_ATTR_ name (region/REGION, x-y/x_y) are left
 * out of those variables, all of them; HERALD_ATTRS holds every attribute
 * exactly, as JSON; the filter saw the exact key "region". */
Test(spine, colliding_attribute_keys_are_in_herald_attrs_only)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"dump\"; exec = [\"tests/handlers/env_dump.sh\"]; env = { DUMP_DIR = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"dump\"; filter = { region = [\"eu\"]; }; } ); } );\n",
             env.dir);
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, 2);
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "bin/herald-publish", "--broker", env.pub, "t", "p", "-a", "region=eu", "-a",
                   "REGION=us", "-a", "x-y=1", "-a", "x_y=2", "-a", "a.b=dot",
                   "-a", "q=say \"hi\" \\ tab\there\nnew line \x01 \xc3\xa9", NULL);
    cr_assert_eq(rc, 0, "herald-publish: %s", err);
    out[strcspn(out, "\n")] = 0;
    char path[400];
    snprintf(path, sizeof path, "%s/%s.env", env.dir, out);
    cr_assert(h_wait(file_exists, path, 20000), "the handler never ran for %s (the filter on region=eu?)", out);
    size_t len = 0;
    FILE *f = fopen(path, "rb");
    char *text = calloc(1, 1 << 16);
    len = fread(text, 1, (1 << 16) - 1, f);
    fclose(f);
    const char *attrs = dumped(text, len, "HERALD_ATTRS");
    cr_assert_not_null(attrs, "no HERALD_ATTRS");
    cr_assert_str_eq(attrs, "{\"region\":\"eu\",\"REGION\":\"us\",\"x-y\":\"1\",\"x_y\":\"2\",\"a.b\":\"dot\","
                            "\"q\":\"say \\\"hi\\\" \\\\ tab\\there\\nnew line \\u0001 \xc3\xa9\"}");
    cr_assert_null(dumped(text, len, "HERALD_ATTR_REGION"), "HERALD_ATTR_REGION=%s", dumped(text, len, "HERALD_ATTR_REGION"));
    cr_assert_null(dumped(text, len, "HERALD_ATTR_X_Y"), "HERALD_ATTR_X_Y=%s", dumped(text, len, "HERALD_ATTR_X_Y"));
    cr_assert_str_eq(dumped(text, len, "HERALD_ATTR_A_B"), "dot");
    cr_assert_str_eq(dumped(text, len, "HERALD_ATTR_Q"), "say \"hi\" \\ tab\there\nnew line \x01 \xc3\xa9");
    free(text);
    free(out);
    free(err);
}

/* Keys outside [A-Za-z0-9_.-]{1,128} are refused before anything is sent: a
 * one-line error and exit 2, nothing published. */
Test(spine, herald_publish_refuses_an_attribute_key_outside_the_name_rule)
{
    h_config(&env, "os", "topics = ( { name = \"t\"; } );\n");
    h_broker(&env);
    char long_key[140];
    memset(long_key, 'k', 129);
    strcpy(long_key + 129, "=v");
    const char *bad[] = { "has space=v", "\xc3\xa9=v", "a/b=v", "tab\there=v", long_key };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *out = NULL, *err = NULL;
        int rc = h_run(&env, NULL, &out, &err, "bin/herald-publish", "--broker", env.pub, "t", "p", "-a", bad[i], NULL);
        cr_assert_eq(rc, 2, "-a '%s': exit %d", bad[i], rc);
        cr_assert_str_eq(out, "");
        cr_assert(strncmp(err, "herald-publish: invalid attribute key", 37) == 0 && strstr(err, "A-Z a-z 0-9 _ . -"),
                  "-a '%s': %s", bad[i], err);
        free(out);
        free(err);
    }
    char *st = h_stats(&env);
    cr_assert(strstr(st, "{\"name\":\"t\",\"published\":0}"), "%s", st);
    free(st);
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
