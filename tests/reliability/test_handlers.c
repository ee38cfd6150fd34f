/* test_handlers.c — poison and hostile handlers (docs/RELIABILITY.md, tests 3
 * and 4; test_failure.c covers each case alone, this runs them at volume).
 *
 * 3. A native handler (rel_record) segfaults on one event among N: its host
 *    dies and is replaced; the poison event ends in the dead letters after
 *    max_attempts = 3, outcome `crashed`; the N-1 others succeed; the worker
 *    keeps its pid throughout.
 * 4. Exec handlers: one never exits (killed at its 1 s timeout, no process
 *    left), one writes FLOOD MiB to stdout and stderr (capped; the worker's
 *    VmHWM stays bounded), one leaves a grandchild in its group (killed when
 *    the attempt ends), one allocates past memory_mb (fails, reported).
 * Short: N = 1,000, flood 256 MiB; full: N = 10,000, flood 1 GiB.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rel.h"

static h_env env;
static void setup(void) { h_setup(&env); }
static void teardown(void) { h_teardown(&env); }

TestSuite(handlers, .init = setup, .fini = teardown, .timeout = 600);

Test(handlers, poison_native_event_among_many_is_dead_lettered_and_the_worker_survives)
{
    const int n = REL_PICK(1000, 10000);
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"build/tests/handlers/librel_record.so\";"
             " symbol = \"record\"; }; max_attempts = 3; backoff = { initial = 0.1; max = 0.2; };\n"
             "   env = { RECORD_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n",
             h_path(&env, "record.txt"));
    h_config(&env, "os", body);
    h_broker(&env);
    pid_t w = h_worker(&env, NULL, 8);
    cr_assert(rel_wait_workers(&env, 1, 20000));
    FILE *f = fopen(h_path(&env, "in.txt"), "w");
    for (int i = 0; i < n; i++) fprintf(f, "%s\n", i == n / 2 ? "boom" : "ok");
    fclose(f);
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, h_path(&env, "in.txt"), &out, &err, "bin/herald-publish", "--broker", env.pub, "--lines",
                   "t", NULL);
    cr_assert_eq(rc, 0, "publish: %s", err);
    free(out);
    free(err);
    long end = rel_now_ms() + 120000;
    while (rel_now_ms() < end && !(h_sub_stat(&env, "t", "rec", "dead") == 1 && rel_sub_drained(&env, "t", "rec")))
        usleep(200000);
    long dead = h_sub_stat(&env, "t", "rec", "dead"), ok = h_sub_stat(&env, "t", "rec", "succeeded");
    long crashed = h_fn_stat(&env, "rec", "crashed");
    char *list = h_ctl(&env, "dlq", "list", "--json", NULL);
    bool alive = h_wait_exit(w, 0) < 0;
    char *workers = h_ctl(&env, "workers", "--json", NULL);
    char pidkey[64];
    snprintf(pidkey, sizeof pidkey, "\"pid\":%d", (int)w);
    bool same_pid = workers && strstr(workers, pidkey);
    char extra[300];
    snprintf(extra, sizeof extra, "1 poison among %d; %ld crashed attempts; dead %ld; succeeded %ld; worker pid %d kept: %s",
             n, crashed, dead, ok, (int)w, same_pid ? "yes" : "no");
    rel_report("poison-native", "SIGSEGV in a native handler", crashed, n, n - 1 - ok, 0, extra);
    cr_assert(alive, "the worker died of a handler crash");
    cr_assert(same_pid, "the worker is not the one started (pid %d): %s", (int)w, workers);
    cr_assert_eq(dead, 1, "dead letters: %ld", dead);
    cr_assert_eq(ok, n - 1, "succeeded %ld of %d", ok, n - 1);
    cr_assert_eq(crashed, 3, "crashed attempts: %ld", crashed);
    cr_assert(list && strstr(list, "\"outcome\":\"crashed\"") && strstr(list, "\"attempts\":3"), "dlq: %s", list);
    free(list);
    free(workers);
}

static bool pidfile_pid(const char *path, pid_t *pid)
{
    char *s = h_read(path, NULL);
    if (!s) return false;
    *pid = (pid_t)atoi(s);
    free(s);
    return *pid > 0;
}

Test(handlers, hanging_flooding_orphaning_and_greedy_exec_handlers_are_contained)
{
    const int flood_mib = REL_PICK(256, 1024);
    char body[3000];
    snprintf(body, sizeof body,
             "functions = (\n"
             " { name = \"hang\"; exec = [\"tests/handlers/sleep.sh\"]; timeout = 1.0; max_attempts = 1;\n"
             "   env = { PIDFILE = \"%s\"; }; },\n"
             " { name = \"flood\"; exec = [\"tests/handlers/rel_flood.sh\"]; timeout = 120.0; max_attempts = 1;\n"
             "   env = { FLOOD_MIB = \"%d\"; }; },\n"
             " { name = \"orphan\"; exec = [\"tests/handlers/rel_orphan.sh\"]; max_attempts = 1;\n"
             "   env = { PIDFILE = \"%s\"; }; },\n"
             " { name = \"greedy\"; exec = [\"python3\", \"tests/handlers/mem.py\"]; memory_mb = 64; max_attempts = 1; } );\n"
             "topics = ( { name = \"hang\"; subscriptions = ( { function = \"hang\"; } ); },\n"
             "           { name = \"flood\"; subscriptions = ( { function = \"flood\"; } ); },\n"
             "           { name = \"orphan\"; subscriptions = ( { function = \"orphan\"; } ); },\n"
             "           { name = \"greedy\"; subscriptions = ( { function = \"greedy\"; } ); } );\n",
             h_path(&env, "hang.pid"), flood_mib, h_path(&env, "orphan.pid"));
    h_config(&env, "os", body);
    h_broker(&env);
    pid_t w = h_worker(&env, NULL, 8);
    cr_assert(rel_wait_workers(&env, 1, 20000));
    const char *topics[4] = { "hang", "flood", "orphan", "greedy" };
    for (int i = 0; i < 4; i++)
        cr_assert_eq(h_run(&env, NULL, NULL, NULL, "bin/herald-publish", "--broker", env.pub, topics[i], "x", NULL), 0);
    long hwm_max = 0, end = rel_now_ms() + 180000;
    bool done = false;
    while (!done && rel_now_ms() < end) {
        long kb = rel_status_kb(w, "VmHWM");
        if (kb > hwm_max) hwm_max = kb;
        done = true;
        for (int i = 0; i < 4; i++) done = done && rel_sub_drained(&env, topics[i], topics[i]);
        usleep(100000);
    }
    cr_assert(done, "the hostile handlers' queues never drained");
    long rss = rel_status_kb(w, "VmRSS");
    /* hang: timeout, its process gone */
    pid_t hp = 0, op = 0;
    cr_assert(pidfile_pid(h_path(&env, "hang.pid"), &hp), "the hanging handler never wrote its pid");
    cr_assert(pidfile_pid(h_path(&env, "orphan.pid"), &op), "the orphaning handler never wrote its pid");
    long timeouts = h_fn_stat(&env, "hang", "timeouts");
    bool hang_gone = !rel_pid_alive(hp), orphan_gone = !rel_pid_alive(op);
    long flood_ok = h_sub_stat(&env, "flood", "flood", "succeeded");
    long orphan_ok = h_sub_stat(&env, "orphan", "orphan", "succeeded");
    char *dl = h_ctl(&env, "dlq", "list", "--function", "greedy", "--json", NULL);
    char *show = NULL;
    if (dl && strstr(dl, "\"id\":")) {
        char id[32];
        snprintf(id, sizeof id, "%ld", strtol(strstr(dl, "\"id\":") + 5, NULL, 10));
        show = h_ctl(&env, "dlq", "show", id, "--json", NULL);
    }
    bool greedy_reported = show && strstr(show, "MemoryError");
    int left = rel_count_descendants(w);
    char extra[500];
    snprintf(extra, sizeof extra,
             "hang: %ld timeout, process gone %s; flood %d MiB x2: succeeded %ld, worker VmHWM %ld kB (VmRSS %ld kB); "
             "orphan grandchild gone %s; memory_mb 64: MemoryError in the dead letter %s; worker descendants left %d",
             timeouts, hang_gone ? "yes" : "NO", flood_mib, flood_ok, hwm_max, rss, orphan_gone ? "yes" : "NO",
             greedy_reported ? "yes" : "NO", left);
    rel_report("hostile-exec", "hang / 2x flood / orphan / over memory_mb", 4, 4, 0, 0, extra);
    cr_assert_eq(timeouts, 1, "the hanging handler's timeouts: %ld", timeouts);
    cr_assert(hang_gone, "the hanging handler (pid %d) still runs after its timeout", (int)hp);
    cr_assert_eq(flood_ok, 1, "the flooding handler did not succeed (capped output must not fail it)");
    if (!rel_sanitized()) cr_assert_lt(hwm_max, 64 * 1024, "the worker's VmHWM reached %ld kB on a flood", hwm_max);
    cr_assert_eq(orphan_ok, 1);
    cr_assert(orphan_gone, "the grandchild (pid %d) outlived its handler's attempt", (int)op);
    cr_assert(greedy_reported, "the over-memory_mb handler's dead letter does not report MemoryError: %s",
              show ? show : dl);
    free(dl);
    free(show);
}
