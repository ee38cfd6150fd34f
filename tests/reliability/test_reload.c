/* test_reload.c — SIGHUP under load (docs/RELIABILITY.md, test 9).
 *
 * Two workers run rel_record (native, 1 ms a run) while a publisher streams N
 * events to topic t. Meanwhile the config is rewritten and the broker gets
 * SIGHUP again and again: every other reload adds a topic `extra` with its
 * own function (and a subscription of it to t, so fan-out changes under the
 * stream), the next one removes them again — refused while that subscription
 * still holds deliveries, which is then also checked.
 *
 * Must hold: the broker never stops; every confirmed id of t's `rec`
 * subscription is handled (lost = 0) and stored once; `published` counts
 * exactly the confirmed events; the broker's log shows both applied and
 * refused reloads, and a refusal names the subscription.
 * Short: 3,000 events, ~12 reloads; full: 30,000 events, ~100 reloads.
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

TestSuite(reload, .init = setup, .fini = teardown, .timeout = 600);

static void write_config(bool extra)
{
    char body[2048];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"build/tests/handlers/librel_record.so\";"
             " symbol = \"record\"; }; env = { RECORD_FILE = \"%s\"; SLEEP_US = \"1000\"; }; }%s );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; }%s ); }%s );\n",
             h_path(&env, "record.txt"),
             extra ? ", { name = \"side\"; native = { library = \"build/tests/handlers/librel_record.so\";"
                     " symbol = \"record\"; }; env = { RECORD_FILE = \"/dev/null\"; }; }"
                   : "",
             extra ? ", { function = \"side\"; }" : "",
             extra ? ", { name = \"extra\"; subscriptions = ( { function = \"side\"; } ); }" : "");
    h_config(&env, "os", body);
}

Test(reload, sighup_again_and_again_under_a_stream_loses_nothing)
{
    const int n = REL_PICK(3000, 30000);
    write_config(false);
    pid_t broker = h_broker(&env);
    h_worker(&env, NULL, 8);
    h_worker(&env, NULL, 8);
    cr_assert(rel_wait_workers(&env, 2, 20000), "2 workers never connected");

    rel_feed f = { .prefix = "L", .pace_us = REL_PICK(13000, 10000) };   /* ~2 s / ~15 s of stream */
    rel_feed_start(&env, &f, "t", n, n, "publisher");
    int reloads = 0;
    bool extra = false;
    while (rel_feed_running(&f)) {
        usleep(150000);
        extra = !extra;
        write_config(extra);
        cr_assert_eq(kill(broker, SIGHUP), 0);
        reloads++;
        cr_assert_eq(h_wait_exit(broker, 0), -1, "the broker died on reload %d", reloads);
    }
    int st = rel_feed_wait(&env, &f, 120000);
    char *perr = h_read(f.err, NULL);
    cr_assert_eq(st, 0, "the publisher exited %d: %.2000s", st, perr ? perr : "");
    free(perr);
    cr_assert_eq(h_count_lines(f.out), (size_t)n);
    cr_assert(rel_wait_drained(&env, "t", "rec", 60000), "the queue never drained: %s", h_stats(&env));

    rel_tally t;
    rel_tally_stream("L", f.out, NULL, h_path(&env, "record.txt"), (size_t)n, &t, NULL, NULL);
    long published = rel_topic_published(&env, "t");
    char *log = h_read(h_path(&env, "broker.err"), NULL);
    int applied = 0, refused = 0;
    for (const char *p = log; p && (p = strstr(p, "SIGHUP: reloaded")) != NULL; p++) applied++;
    for (const char *p = log; p && (p = strstr(p, "refused, the running config stays")) != NULL; p++) refused++;
    char extra_s[300];
    snprintf(extra_s, sizeof extra_s, "%d SIGHUPs (%d applied, %d refused) during a %d-event stream; %zu runs",
             reloads, applied, refused, n, t.runs);
    rel_report("reload-storm", "SIGHUP every 150 ms", reloads, (long)t.confirmed, (long)t.lost, (long)t.dup_runs,
               extra_s);
    cr_assert_gt(reloads, 3, "the stream ended before the reloads began");
    cr_assert_eq(t.lost, 0, "%zu confirmed ids never handled, e.g. %s", t.lost, t.first_lost);
    cr_assert_eq(t.twice, 0, "%zu lines stored twice", t.twice);
    cr_assert_eq(published, n, "published %ld for %d confirmed", published, n);
    cr_assert_gt(applied, 0, "no reload was applied: %.3000s", log ? log : "");
    if (refused)
        cr_assert(strstr(log, "subscription t → side, which still has"), "a refusal does not name the subscription: %.3000s",
                  log);
    free(log);
}
