/* test_backpressure.c — back-pressure (docs/RELIABILITY.md, test 6).
 *
 * max_backlog = B. One worker runs rel_record at 1 ms a run with 2 hosts
 * (~2,000 events/s at most). Four publishers then burst 10×B events at full
 * speed (herald-publish --lines from files), three times, each burst once the
 * one before has drained. Broker VmRSS is sampled every 50 ms.
 *
 * Must hold: publishes past the backlog are refused "throttled" (the
 * publishers exit 1 and name each refused line); everything confirmed is
 * handled, once; broker RSS stays bounded: VmHWM < 128 MiB (the broker's
 * SQLite page cache is 64 MiB, cache_size=-65536, and every refused publish
 * is a row of `refusals`, so the heap grows ~180 B per refusal until that
 * cache is full — about 360,000 refusals). In full mode the bursts (200,000
 * each) fill it, and the last burst's peak RssAnon (the heap; VmRSS also
 * counts the mapped WAL index) must not be above the one before by > 4 MiB.
 * Short: B = 2,000 (20,000 per burst); full: B = 20,000 (200,000 per burst).
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

TestSuite(backpressure, .init = setup, .fini = teardown, .timeout = 900);

#define NPUB 4

/* One burst: NPUB publishers of per lines each ("<P><i>", P = prefix
 * letters), their runs sampled for the broker's peak RSS. */
static void burst(pid_t broker, const char *prefixes, int per, long *peak_kb, long *peak_anon, size_t *confirmed,
                  size_t *throttled)
{
    pid_t p[NPUB];
    rel_compact_pids(&env);
    for (int k = 0; k < NPUB; k++) {
        char name[64], in[64];
        snprintf(in, sizeof in, "in-%c.txt", prefixes[k]);
        FILE *f = fopen(h_path(&env, in), "w");
        cr_assert_not_null(f);
        for (int i = 0; i < per; i++) fprintf(f, "%c%d\n", prefixes[k], i);
        fclose(f);
        snprintf(name, sizeof name, "pub-%c", prefixes[k]);
        char script[1200];
        snprintf(script, sizeof script, "exec '%s/bin/herald-publish' --broker '%s' --timeout 60 --lines t < '%s'",
                 env.root, env.pub, h_path(&env, in));
        p[k] = h_start(&env, name, "/bin/sh", "-c", script, NULL);
    }
    int st[NPUB];
    for (int k = 0; k < NPUB; k++) st[k] = -1;
    long end = rel_now_ms() + 300000;
    for (int done = 0; done < NPUB && rel_now_ms() < end;) {
        long kb = rel_status_kb(broker, "VmRSS");
        if (kb > *peak_kb) *peak_kb = kb;
        kb = rel_status_kb(broker, "RssAnon");   /* the heap: VmRSS also counts the mapped WAL index */
        if (kb > *peak_anon) *peak_anon = kb;
        for (int k = 0; k < NPUB; k++)
            if (st[k] < 0 && (st[k] = h_wait_exit(p[k], 0)) >= 0) done++;
        usleep(50000);
    }
    for (int k = 0; k < NPUB; k++) {
        char name[64];
        snprintf(name, sizeof name, "pub-%c.err", prefixes[k]);
        char *err = h_read(h_path(&env, name), NULL);
        cr_assert(st[k] == 0 || st[k] == 1, "publisher %c exited %d: %.500s", prefixes[k], st[k], err ? err : "");
        size_t refusals = 0, thr = 0;
        for (char *q = err; q && (q = strstr(q, "LINE ")) != NULL; q += 5) {
            refusals++;
            char *eol = strchr(q, '\n');
            char *t = strstr(q, "throttled");
            if (t && (!eol || t < eol)) thr++;
        }
        cr_assert_eq(refusals, thr, "publisher %c: %zu refusals, %zu of them throttled: %.500s", prefixes[k],
                     refusals, thr, err);
        *throttled += thr;
        snprintf(name, sizeof name, "pub-%c.out", prefixes[k]);
        char *out = h_read(h_path(&env, name), NULL);   /* one line per input line: an id, or "ERROR why" */
        for (char *line = out; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
            if (strncmp(line, "ERROR ", 6) != 0) (*confirmed)++;
        free(out);
        free(err);
        for (int i = 0; i < env.npids; i++)
            if (env.pids[i] == p[k]) env.pids[i] = 0;
    }
}

Test(backpressure, ten_times_burst_is_throttled_with_bounded_rss_and_all_accepted_handled)
{
    const int backlog = rel_sanitized() ? 1000 : REL_PICK(2000, 20000);
    const int per = backlog * 10 / NPUB;
    char body[1024], extra_b[64];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"build/tests/handlers/librel_record.so\";"
             " symbol = \"record\"; }; env = { RECORD_FILE = \"%s\"; SLEEP_US = \"1000\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n",
             h_path(&env, "record.txt"));
    snprintf(extra_b, sizeof extra_b, "max_backlog = %d;", backlog);
    h_config_broker(&env, "os", extra_b, body);
    pid_t broker = h_broker(&env);
    h_worker(&env, NULL, 2);
    cr_assert(rel_wait_workers(&env, 1, 20000));
    long rss0 = rel_status_kb(broker, "VmRSS");

    enum { NB = 8 };
    const int nb = getenv("HERALD_BP_BURSTS") ? atoi(getenv("HERALD_BP_BURSTS")) : REL_PICK(3, 4);
    cr_assert(nb >= 3 && nb <= NB);
    long peak[NB] = { 0 }, anon[NB] = { 0 }, burst1_ms = 0;
    size_t conf[NB] = { 0 }, thr[NB] = { 0 };
    const char *groups[NB] = { "ABCD", "EFGH", "IJKL", "MNOP", "QRST", "UVWX", "YZab", "cdef" };
    for (int b = 0; b < nb; b++) {
        long t0 = rel_now_ms();
        burst(broker, groups[b], per, &peak[b], &anon[b], &conf[b], &thr[b]);
        if (b == 0) burst1_ms = rel_now_ms() - t0;
        cr_assert(rel_wait_drained(&env, "t", "rec", 600000), "burst %d never drained", b + 1);
    }
    long hwm = rel_status_kb(broker, "VmHWM");

    /* everything confirmed was handled, once, under its id */
    size_t lost = 0, dups = 0, twice = 0, confirmed = 0;
    const char *letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef";
    for (int k = 0; k < nb * NPUB; k++) {
        char pfx[2] = { letters[k], 0 }, out[64], err[64];
        snprintf(out, sizeof out, "pub-%c.out", letters[k]);
        snprintf(err, sizeof err, "pub-%c.err", letters[k]);
        rel_tally t;
        rel_tally_stream(pfx, h_path(&env, out), h_path(&env, err), h_path(&env, "record.txt"), (size_t)per, &t,
                         NULL, NULL);
        lost += t.lost;
        dups += t.dup_runs;
        twice += t.twice + t.unconfirmed;
        confirmed += t.confirmed;
    }
    char extra[600];
    snprintf(extra, sizeof extra,
             "max_backlog %d; %d bursts of %d from %d publishers; throttled %zu / %zu / %zu...; first burst %.1f s; "
             "broker VmRSS idle %ld kB, peak RssAnon by burst %ld / %ld / %ld / %ld kB, VmHWM %ld kB",
             backlog, nb, per * NPUB, NPUB, thr[0], thr[1], thr[2], burst1_ms / 1e3, rss0, anon[0], anon[1], anon[2],
             anon[nb - 1], hwm);
    rel_report("backpressure", "10x burst over max_backlog", nb, (long)confirmed, (long)lost, (long)dups, extra);
    for (int b = 0; b < nb; b++) {
        fprintf(stderr, "backpressure: burst %d: VmRSS peak %ld kB, RssAnon peak %ld kB\n", b + 1, peak[b], anon[b]);
        cr_assert_gt(thr[b], 0, "burst %d (10x max_backlog) was never throttled", b + 1);
        cr_assert_geq(conf[b], (size_t)backlog, "burst %d: only %zu accepted: the backlog never filled", b + 1,
                      conf[b]);
    }
    cr_assert_eq(lost, 0, "%zu accepted events never handled", lost);
    cr_assert_eq(twice, 0, "%zu runs of events stored twice or never confirmed", twice);
    if (!rel_sanitized()) {
        cr_assert_lt(hwm, 128 * 1024, "broker RSS peaked at %ld kB", hwm);
        if (rel_full())
            cr_assert_leq(anon[nb - 1], anon[nb - 2] + 4096,
                          "broker RssAnon peak grew from %ld kB (burst %d) to %ld kB (burst %d)", anon[nb - 2], nb - 1,
                          anon[nb - 1], nb);
    }
}
