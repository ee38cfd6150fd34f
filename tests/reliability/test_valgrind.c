/* test_valgrind.c — broker and worker under valgrind memcheck through a short
 * workload (docs/RELIABILITY.md, test 8; make test-valgrind, and part of
 * make test-reliability; skipped in make test's short mode, under
 * sanitizers, and when valgrind is not installed).
 *
 * The broker and one worker run under memcheck (--error-exitcode=99
 * --leak-check=full --errors-for-leak-kinds=definite, tests/valgrind.supp:
 * libzmq/libsodium internals only); 200 events go through a native and an
 * exec handler, one native event crashes its host, one exec handler times
 * out; then both get SIGTERM. Must hold: both exit 0 (99 = errors), their
 * logs say "ERROR SUMMARY: 0 errors" and "definitely lost: 0 bytes" (or no
 * leaks at all). Forked children (the launcher, hosts) are silenced:
 * --child-silent-after-fork=yes, since they exec or _exit.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rel.h"

static h_env env;
static void setup(void) { h_setup(&env); }
static void teardown(void) { h_teardown(&env); }

TestSuite(valgrind, .init = setup, .fini = teardown, .timeout = 600);

static const char *leak_line(const char *log)
{
    static char line[200];
    const char *p = strstr(log, "definitely lost:");
    if (!p) return "no leaks";
    snprintf(line, sizeof line, "%.*s", (int)strcspn(p, "\n"), p);
    return line;
}

Test(valgrind, broker_and_worker_memcheck_clean_through_a_short_workload)
{
    if (!rel_full()) cr_skip_test("valgrind: full mode only (make test-valgrind / make test-reliability)");
    if (rel_sanitized()) cr_skip_test("valgrind: not under AddressSanitizer");
    if (access("/usr/bin/valgrind", X_OK) != 0) cr_skip_test("valgrind is not installed (apt-get install valgrind)");
    char body[1500];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"build/tests/handlers/librel_record.so\";"
             " symbol = \"record\"; }; max_attempts = 2; backoff = { initial = 0.1; max = 0.2; };\n"
             "   env = { RECORD_FILE = \"%s\"; }; },\n"
             " { name = \"sh\"; exec = [\"tests/handlers/spine_record.sh\"]; env = { RECORD_FILE = \"%s\"; }; },\n"
             " { name = \"hang\"; exec = [\"tests/handlers/sleep.sh\"]; timeout = 1.0; max_attempts = 1;\n"
             "   env = { PIDFILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; }, { function = \"sh\"; } ); },\n"
             "           { name = \"h\"; subscriptions = ( { function = \"hang\"; } ); } );\n",
             h_path(&env, "record.txt"), h_path(&env, "sh.txt"), h_path(&env, "hang.pid"));
    h_config(&env, "os", body);
    /* memcheck is ~20x slower: a 2 s heartbeat, so nobody is declared dead for it */
    char *cfg = h_read(env.cfg, NULL);
    char *hb = strstr(cfg, "heartbeat = 0.5;");
    cr_assert_not_null(hb);
    memcpy(hb, "heartbeat = 2.0;", 16);
    h_write(env.cfg, cfg);
    free(cfg);
    char supp[700], vlog_b[700], vlog_w[700];
    snprintf(supp, sizeof supp, "--suppressions=%s/tests/valgrind.supp", env.root);
    snprintf(vlog_b, sizeof vlog_b, "--log-file=%s", h_path(&env, "vg-broker.log"));
    snprintf(vlog_w, sizeof vlog_w, "--log-file=%s", h_path(&env, "vg-worker.log"));
    char bin_b[600], bin_w[600];
    snprintf(bin_b, sizeof bin_b, "%s/bin/herald-broker", env.root);
    snprintf(bin_w, sizeof bin_w, "%s/bin/herald-worker", env.root);
#define VG "/usr/bin/valgrind", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite", \
           "--show-leak-kinds=definite", "--child-silent-after-fork=yes", "--num-callers=30", supp
    pid_t b = h_start(&env, "broker", VG, vlog_b, bin_b, "-c", env.cfg, NULL);
    long end = rel_now_ms() + 60000;
    while (rel_workers_connected(&env) < 0 && rel_now_ms() < end && h_wait_exit(b, 0) < 0) usleep(200000);
    cr_assert_geq(rel_workers_connected(&env), 0, "the broker under valgrind never answered (see %s)",
                  h_path(&env, "broker.err"));
    pid_t w = h_start(&env, "worker", VG, vlog_w, bin_w, "--broker", env.wrk, "--root", env.root, "--run-dir",
                      h_path(&env, "runs"), "--concurrency", "4", NULL);
    cr_assert(rel_wait_workers(&env, 1, 60000), "the worker under valgrind never connected");
    FILE *f = fopen(h_path(&env, "in.txt"), "w");
    for (int i = 0; i < 200; i++) fprintf(f, "%s\n", i == 100 ? "boom" : "ok");
    fclose(f);
    char *err = NULL;
    int rc = h_run(&env, h_path(&env, "in.txt"), NULL, &err, "bin/herald-publish", "--broker", env.pub, "--timeout",
                   "30", "--lines", "t", NULL);
    cr_assert_eq(rc, 0, "publish: %s", err);
    free(err);
    cr_assert_eq(h_run(&env, NULL, NULL, NULL, "bin/herald-publish", "--broker", env.pub, "h", "x", NULL), 0);
    end = rel_now_ms() + 240000;
    while (rel_now_ms() < end && !(rel_sub_drained(&env, "t", "rec") && rel_sub_drained(&env, "t", "sh") &&
                                   rel_sub_drained(&env, "h", "hang")))
        usleep(500000);
    cr_assert(rel_sub_drained(&env, "t", "rec") && rel_sub_drained(&env, "t", "sh"), "the workload never drained");
    cr_assert_eq(h_count_lines(h_path(&env, "sh.txt")), 200);
    int ws = h_signal_exit(&env, w, SIGTERM, 120000);
    int bs = h_signal_exit(&env, b, SIGTERM, 120000);
    char *lb = h_read(h_path(&env, "vg-broker.log"), NULL), *lw = h_read(h_path(&env, "vg-worker.log"), NULL);
    cr_assert(lb && lw, "no valgrind logs");
    char extra[600];
    snprintf(extra, sizeof extra, "broker exit %d, %s; worker exit %d, %s; %s", bs,
             strstr(lb, "ERROR SUMMARY: 0 errors") ? "0 errors" : "ERRORS", ws,
             strstr(lw, "ERROR SUMMARY: 0 errors") ? "0 errors" : "ERRORS", leak_line(lb));
    snprintf(extra + strlen(extra), sizeof extra - strlen(extra), " (broker); %s (worker)", leak_line(lw));
    rel_report("valgrind", "memcheck: broker + worker, 201 events, a crash and a timeout", 2, 201, 0, 0, extra);
    cr_assert_eq(bs, 0, "the broker under memcheck exited %d (99: errors) — see %s", bs, h_path(&env, "vg-broker.log"));
    cr_assert_eq(ws, 0, "the worker under memcheck exited %d (99: errors) — see %s", ws, h_path(&env, "vg-worker.log"));
    cr_assert_not_null(strstr(lb, "ERROR SUMMARY: 0 errors"), "broker: %s", lb);
    cr_assert_not_null(strstr(lw, "ERROR SUMMARY: 0 errors"), "worker: %s", lw);
    free(lb);
    free(lw);
}
