/* test_crash.c — the broker crash loop (docs/RELIABILITY.md, test 1).
 *
 * Four workers run rel_record (native); one herald-publish --lines --timeout 60
 * streams N confirmed events through a FIFO while the broker is killed with
 * SIGKILL at K random moments and restarted each time; the publisher
 * reconnects and re-sends what it had no confirm for. The input is released
 * to the writer in K+1 slices, slice k+1 only after kill k, and each kill
 * lands at a random line inside its slice (plus 0–30 ms): the kills are
 * spread over the whole stream, at random points of it.
 *
 * Must hold: the publisher exits 0 having printed N ids; every confirmed id
 * is handled at least once (lost = 0); each input line is handled under
 * exactly its confirmed id (no line stored twice under a second id).
 * Duplicate handler runs (at-least-once after a kill) are counted, reported.
 * Short: 10,000 events, 4 kills; full: 100,000 events, 20 kills.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rel.h"

static h_env env;
static void setup(void) { h_setup(&env); }
static void teardown(void) { h_teardown(&env); }

TestSuite(crash, .init = setup, .fini = teardown, .timeout = 1200);

static void crash_loop(const char *durability)
{
    const int n = rel_sanitized() ? 3000 : REL_PICK(10000, 100000);
    const int kills = REL_PICK(4, 20);
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"build/tests/handlers/librel_record.so\";"
             " symbol = \"record\"; }; max_attempts = 100;\n"
             "   backoff = { initial = 0.1; max = 1.0; }; env = { RECORD_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n",
             h_path(&env, "record.txt"));
    h_config(&env, durability, body);
    pid_t broker = h_broker(&env);
    for (int i = 0; i < 4; i++) h_worker(&env, NULL, 8);
    cr_assert(rel_wait_workers(&env, 4, 20000), "4 workers never connected");

    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    const char *s = getenv("HERALD_RELIABILITY_SEED");
    if (s) seed = (unsigned)strtoul(s, NULL, 10);
    srand(seed);
    const int slice = n / (kills + 1);
    /* 20 lines a ms: a slice lasts 100–250 ms, so each kill lands mid-stream */
    rel_feed f = { .prefix = "L", .pace_us = 1000 };
    rel_feed_start(&env, &f, "t", n, slice, "publisher");
    long t0 = rel_now_ms(), down_ms = 0;
    int at[64], midstream = 0;
    for (int k = 0; k < kills; k++) {
        int target = k * slice + rand() % slice;
        long end = rel_now_ms() + 120000;
        while (__atomic_load_n(&f.shm->written, __ATOMIC_ACQUIRE) < target && rel_now_ms() < end) usleep(500);
        cr_assert_geq(f.shm->written, target, "kill %d: the publisher stalled at line %d (target %d)", k + 1,
                      f.shm->written, target);
        cr_assert(rel_feed_running(&f), "the publisher exited (%d) before kill %d", f.status, k + 1);
        usleep((useconds_t)(rand() % 30000));
        at[k] = f.shm->written;
        midstream += at[k] < (k + 1) * slice;   /* the writer was not waiting at its gate */
        long d0 = rel_now_ms();
        h_kill(&env, broker, SIGKILL);
        broker = h_broker(&env);
        down_ms += rel_now_ms() - d0;
        __atomic_store_n(&f.shm->gate, (k + 2) * slice, __ATOMIC_RELEASE);
    }
    int st = rel_feed_wait(&env, &f, 300000);
    long stream_ms = rel_now_ms() - t0;
    char *perr = h_read(f.err, NULL);
    cr_assert_eq(st, 0, "the publisher exited %d through %d broker kills: %.2000s", st, kills, perr ? perr : "");
    free(perr);
    cr_assert_eq(h_count_lines(f.out), (size_t)n, "the publisher printed %zu ids for %d lines",
                 h_count_lines(f.out), n);

    /* handled: every confirmed id, then the queue drained */
    const char *rec = h_path(&env, "record.txt");
    rel_tally t;
    long end = rel_now_ms() + REL_PICK(90000, 300000);
    for (;;) {
        rel_tally_stream("L", f.out, NULL, rec, (size_t)n, &t, NULL, NULL);
        if (t.lost == 0 || rel_now_ms() > end) break;
        sleep(1);
    }
    cr_assert(rel_wait_drained(&env, "t", "rec", REL_PICK(30000, 120000)), "the queue never drained");
    rel_tally_stream("L", f.out, NULL, rec, (size_t)n, &t, NULL, NULL);
    char extra[400];
    snprintf(extra, sizeof extra,
             "durability=%s; %zu runs for %d events; kills at lines", durability, t.runs, n);
    for (int k = 0; k < kills; k++)
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra), "%s%d", k ? "," : " ", at[k]);
    snprintf(extra + strlen(extra), sizeof extra - strlen(extra), " (%d mid-stream); stream %.1f s, broker down %.1f s; seed %u",
             midstream, stream_ms / 1e3, down_ms / 1e3, seed);
    rel_report(strcmp(durability, "fsync") == 0 ? "crash-loop-fsync" : "crash-loop-os", "broker SIGKILL + restart",
               kills, (long)t.confirmed, (long)t.lost, (long)t.dup_runs, extra);
    cr_assert_eq(t.confirmed, (size_t)n);
    cr_assert_eq(t.lost, 0, "%zu confirmed ids never handled, e.g. %s", t.lost, t.first_lost);
    cr_assert_eq(t.twice, 0, "%zu runs of input lines under an id other than the one confirmed: stored twice",
                 t.twice);
    cr_assert_eq(t.unconfirmed, 0);
    cr_assert_eq(h_sub_stat(&env, "t", "rec", "dead"), 0, "dead letters in a crash loop");
}

Test(crash, broker_kill9_loop_fsync_loses_nothing_and_stores_each_line_once)
{
    crash_loop("fsync");
}

Test(crash, broker_kill9_loop_os_loses_nothing_and_stores_each_line_once)
{
    crash_loop("os");
}
