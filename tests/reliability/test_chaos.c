/* test_chaos.c — worker chaos (docs/RELIABILITY.md, test 2).
 *
 * Four workers run rel_record (native, 2 ms a run, so deliveries are always in
 * flight) while a publisher streams N events. At random moments a random
 * worker is either killed with SIGKILL (a fresh worker takes its place) or
 * frozen — SIGSTOP to it and every process under it, as a paused VM — for
 * longer than the broker's dead-worker deadline (3 heartbeats, then a grace
 * of 5), then thawed with SIGCONT.
 *
 * Must hold: every confirmed id is handled (lost = 0); nothing dead-lettered;
 * the broker counted `lost` attempts (a dead worker's deliveries were taken
 * back) and each of them ran again elsewhere. Reported: duplicate runs, and
 * those a thawed worker made of deliveries that had already been redone.
 * Short: 4,000 events, 4 faults; full: 40,000 events, 20 faults.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <limits.h>
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

TestSuite(chaos, .init = setup, .fini = teardown, .timeout = 1200);

Test(chaos, workers_killed_and_frozen_mid_stream_lose_nothing)
{
    const int n = REL_PICK(4000, 40000);
    const int faults = REL_PICK(4, 20);
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"build/tests/handlers/librel_record.so\";"
             " symbol = \"record\"; }; max_attempts = 100; timeout = 2.0;\n"
             "   backoff = { initial = 0.1; max = 0.5; }; env = { RECORD_FILE = \"%s\"; SLEEP_US = \"2000\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n",
             h_path(&env, "record.txt"));
    h_config(&env, "os", body);   /* heartbeat 0.5 s (harness): dead after 1.5 s, leases lost after 2.5 s */
    h_broker(&env);
    pid_t w[4];
    for (int i = 0; i < 4; i++) w[i] = h_worker(&env, NULL, 8);
    cr_assert(rel_wait_workers(&env, 4, 20000), "4 workers never connected");

    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    const char *s = getenv("HERALD_RELIABILITY_SEED");
    if (s) seed = (unsigned)strtoul(s, NULL, 10);
    srand(seed);
    /* paced so that the stream outlasts the faults (~2.6 s each on average) */
    rel_feed f = { .prefix = "L", .pace_us = (int)((long)faults * 3500 * 1000 * 20 / n) };
    rel_feed_start(&env, &f, "t", n, n, "publisher");
    pid_t frozen[64] = { 0 };
    int nfrozen = 0, nkilled = 0, left = 0;
    long t0 = rel_now_ms();
    for (int k = 0; k < faults; k++) {
        usleep((useconds_t)(200000 + rand() % 600000));
        int i = rand() % 4;
        if (k % 2 == 0) {
            /* the worker and its launcher and hosts: SIGKILL to the worker only —
             * what it leaves behind must go by itself */
            pid_t old = w[i], tree[256];
            int nt = rel_tree(old, tree, 256);
            h_kill(&env, old, SIGKILL);
            nkilled++;
            w[i] = h_worker(&env, NULL, 8);
            for (int j = 0; j < nt; j++) {
                long end = rel_now_ms() + 10000;
                while (rel_pid_alive(tree[j]) && rel_now_ms() < end) usleep(20000);
                if (rel_pid_alive(tree[j])) left++;
            }
        } else {
            rel_signal_tree(w[i], SIGSTOP);
            cr_assert(nfrozen < 63);
            frozen[nfrozen++] = w[i];
            usleep(4000000);   /* > 3 heartbeats + grace of 5 (2.5 s) */
            rel_signal_tree(w[i], SIGCONT);
        }
    }
    long chaos_ms = rel_now_ms() - t0;
    bool streaming = rel_feed_running(&f);
    int st = rel_feed_wait(&env, &f, 300000);
    char *perr = h_read(f.err, NULL);
    cr_assert_eq(st, 0, "the publisher exited %d: %.2000s", st, perr ? perr : "");
    free(perr);
    cr_assert_eq(h_count_lines(f.out), (size_t)n);

    const char *rec = h_path(&env, "record.txt");
    rel_tally t;
    size_t by_frozen = 0;
    long end = rel_now_ms() + REL_PICK(90000, 300000);
    for (;;) {
        rel_tally_stream("L", f.out, NULL, rec, (size_t)n, &t, frozen, &by_frozen);
        if (t.lost == 0 || rel_now_ms() > end) break;
        sleep(1);
    }
    cr_assert(rel_wait_drained(&env, "t", "rec", REL_PICK(30000, 120000)), "the queue never drained");
    rel_tally_stream("L", f.out, NULL, rec, (size_t)n, &t, frozen, &by_frozen);
    long lost_attempts = h_fn_stat(&env, "rec", "lost");
    long dead = h_sub_stat(&env, "t", "rec", "dead");
    char extra[400];
    snprintf(extra, sizeof extra,
             "%d SIGKILL (%d of their processes left behind), %d SIGSTOP 4 s/SIGCONT; %ld attempts counted lost; %zu duplicate runs by thawed workers; "
             "%zu runs; chaos %.1f s%s; seed %u",
             nkilled, left, nfrozen, lost_attempts, by_frozen, t.runs, chaos_ms / 1e3,
             streaming ? "" : " (the stream ended first)", seed);
    rel_report("worker-chaos", "worker SIGKILL / SIGSTOP+SIGCONT", faults, (long)t.confirmed, (long)t.lost,
               (long)t.dup_runs, extra);
    cr_assert_eq(left, 0, "%d processes of SIGKILLed workers (launcher, hosts) still ran 10 s later", left);
    cr_assert(streaming, "the stream ended before the faults did: nothing was tested mid-stream");
    cr_assert_eq(t.lost, 0, "%zu confirmed ids never handled, e.g. %s", t.lost, t.first_lost);
    cr_assert_eq(t.twice, 0, "%zu lines stored twice", t.twice);
    cr_assert_eq(dead, 0, "%ld dead letters", dead);
    cr_assert(lost_attempts > 0 && lost_attempts != LONG_MIN,
              "no attempt was counted lost although %d workers were killed or frozen", faults);
    /* every lost attempt ran again: more runs than events by at least the lost
     * attempts whose first run had reached the handler — at least, all ran */
    cr_assert_geq(t.runs, (size_t)n);
}
