/* test_failure.c — the failure path of DESIGN §4–§5 through the real
 * programs: retries with backoff, dead letters and their history, permanent
 * failures, timeouts that reach escaped descendants, native crashes, lost
 * workers, a draining worker, and memory limits. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "harness.h"

static h_env env;

static void setup(void) { h_setup(&env); }
static void teardown(void) { h_teardown(&env); }

TestSuite(failure, .init = setup, .fini = teardown, .timeout = 120);

/* --- helpers ---------------------------------------------------------------- */

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Publishes one event; returns its message id (malloc'ed). */
static char *publish(const char *topic, const char *payload)
{
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "bin/herald-publish", "--broker", env.pub, topic, payload, NULL);
    cr_assert_eq(rc, 0, "herald-publish %s: exit %d: %s", topic, rc, err ? err : "");
    free(err);
    out[strcspn(out, "\n")] = 0;
    cr_assert(out[0], "herald-publish printed no message id");
    return out;
}

/* Publishes one event per line of in_path; the ids go to ids_path. */
static void publish_lines(const char *topic, const char *in_path, const char *ids_path, size_t n)
{
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, in_path, &out, &err, "bin/herald-publish", "--broker", env.pub, "--lines", topic, NULL);
    cr_assert_eq(rc, 0, "herald-publish --lines: exit %d: %s", rc, err ? err : "");
    h_write(ids_path, out);
    free(out);
    free(err);
    cr_assert_eq(h_count_lines(ids_path), n, "published %zu of %zu", h_count_lines(ids_path), n);
}







/* Number of JSON objects in a dlq list answer. */
static int count_objects(const char *json)
{
    int n = 0;
    for (const char *p = json; (p = strstr(p, "{\"id\":")) != NULL; p++) n++;
    return n;
}

/* The string value of the first "key":"…" at or after p, unescaped enough for
 * substring checks (\n → newline, \" → ", \\ → \), into buf. NULL if missing. */
static char *json_str(const char *p, const char *key, char *buf, size_t size)
{
    char k[64];
    snprintf(k, sizeof k, "\"%s\":\"", key);
    const char *s = p ? strstr(p, k) : NULL;
    if (!s) return NULL;
    s += strlen(k);
    size_t n = 0;
    for (; *s && *s != '"' && n + 1 < size; s++) {
        if (*s == '\\' && s[1]) {
            s++;
            buf[n++] = *s == 'n' ? '\n' : *s == 't' ? '\t' : *s;
        } else {
            buf[n++] = *s;
        }
    }
    buf[n] = 0;
    return buf;
}

/* The dead letters of a function (dlq list --json), as text; asserts there
 * are exactly want of them. */
static char *dlq_list(const char *function, int want)
{
    char *out = h_ctl(&env, "dlq", "list", "--json", "--function", function, NULL);
    cr_assert_not_null(out, "heraldctl dlq list failed");
    cr_assert_eq(count_objects(out), want, "dlq list --function %s: %d dead letters, expected %d: %s", function,
                 count_objects(out), want, out);
    return out;
}

typedef struct { const char *function; int want; } dlq_is;

static bool dlq_count_is(void *arg)
{
    dlq_is *d = arg;
    char *out = h_ctl(&env, "dlq", "list", "--json", "--function", d->function, NULL);
    bool ok = out && count_objects(out) == d->want;
    free(out);
    return ok;
}

/* Waits until dlq list shows want dead letters of the function, then returns
 * the list (asserting the count). */
static char *wait_dlq(const char *function, int want, int timeout_ms)
{
    dlq_is d = { function, want };
    h_wait(dlq_count_is, &d, timeout_ms);
    return dlq_list(function, want);
}

/* dlq show of the first dead letter of a list answer. */
static char *dlq_show_first(const char *list)
{
    long id = h_json_num(list, "{", "id");
    cr_assert(id != LONG_MIN, "no id in %s", list);
    char ids[32];
    snprintf(ids, sizeof ids, "%ld", id);
    char *out = h_ctl(&env, "dlq", "show", ids, "--json", NULL);
    cr_assert_not_null(out, "heraldctl dlq show %s failed", ids);
    return out;
}

/* The i-th entry (0-based) of a dlq show's history[], or NULL. */
static const char *history_entry(const char *show, int i)
{
    const char *h = strstr(show, "\"history\":[");
    cr_assert_not_null(h, "no history in %s", show);
    const char *p = h;
    for (int k = 0; k <= i; k++) {
        p = strstr(p + 1, "{\"attempt\":");
        if (!p) return NULL;
    }
    return p;
}

static int history_len(const char *show)
{
    int n = 0;
    while (history_entry(show, n)) n++;
    return n;
}

/* Every history entry has this outcome, and an error containing err_has. */
static void assert_history(const char *show, int want, const char *outcome, const char *err_has)
{
    cr_assert_eq(history_len(show), want, "history has %d entries, expected %d: %s", history_len(show), want, show);
    for (int i = 0; i < want; i++) {
        const char *e = history_entry(show, i);
        const char *next = history_entry(show, i + 1);
        char buf[8192];
        cr_assert_eq(h_json_num(e, "{", "attempt"), i + 1, "history entry %d: %s", i, show);
        cr_assert_str_eq(json_str(e, "outcome", buf, sizeof buf), outcome, "history entry %d: %s", i, show);
        char *err = json_str(e, "error", buf, sizeof buf);
        cr_assert_not_null(err, "history entry %d has no error: %s", i, show);
        cr_assert(!next || strstr(e, "\"error\":\"") < next, "history entry %d has no error: %s", i, show);
        if (err_has) cr_assert(strstr(err, err_has), "history entry %d: error '%s' lacks '%s'", i, err, err_has);
    }
}

static bool pid_gone(pid_t pid)
{
    return kill(pid, 0) == -1 && errno == ESRCH;
}

/* --- 1. retries with backoff ------------------------------------------------ */

Test(failure, fails_twice_then_succeeds_on_attempt_3_after_backoff_gaps)
{
    char body[2048];
    snprintf(body, sizeof body,
             "functions = ( { name = \"flaky\"; exec = [\"tests/handlers/fail_flaky.sh\"]; max_attempts = 5;\n"
             "   backoff = { initial = 0.3; max = 60.0; multiplier = 2.0; jitter = \"none\"; };\n"
             "   env = { RECORD_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"flaky\"; } ); } );\n",
             h_path(&env, "attempts.txt"));
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, 2);
    free(publish("t", "x"));
    h_wait_sub(&env, "t", "flaky", "succeeded", 1, 20000);

    /* attempt 3 succeeded: attempts 1 and 2 failed, none after */
    FILE *f = fopen(h_path(&env, "attempts.txt"), "r");
    cr_assert_not_null(f);
    long at[8];
    int attempt[8], n = 0;
    while (n < 8 && fscanf(f, "%d %ld", &attempt[n], &at[n]) == 2) n++;
    fclose(f);
    cr_assert_eq(n, 3, "the handler ran %d times, expected 3", n);
    for (int i = 0; i < 3; i++) cr_assert_eq(attempt[i], i + 1, "run %d saw HERALD_ATTEMPT=%d", i, attempt[i]);
    long g1 = at[1] - at[0], g2 = at[2] - at[1];
    cr_log_info("gaps between attempt starts: %ld ms, %ld ms", g1, g2);
    cr_assert(g1 >= 300, "attempt 2 started %ld ms after attempt 1: backoff 0.3 s not respected", g1);
    cr_assert(g2 >= 600, "attempt 3 started %ld ms after attempt 2: backoff 0.6 s not respected", g2);
    cr_assert(g1 <= 300 + 1500, "attempt 2 started %ld ms after attempt 1 (backoff 0.3 s, no jitter)", g1);
    cr_assert(g2 <= 600 + 1500, "attempt 3 started %ld ms after attempt 2 (backoff 0.6 s, no jitter)", g2);
    h_assert_sub(&env, "t", "flaky", "failed", 2);
    h_assert_sub(&env, "t", "flaky", "dead", 0);
    h_assert_sub(&env, "t", "flaky", "ready", 0);
    h_assert_sub(&env, "t", "flaky", "delayed", 0);
    h_assert_sub(&env, "t", "flaky", "inflight", 0);
    /* it made it: the failures kept for a dead letter are dropped (committed
     * within ACK_COMMIT_MS), or the table grows with every flaky run */
    bool gone = false;
    for (int i = 0; i < 100 && !gone; i++) {
        sqlite3 *db = NULL;
        if (sqlite3_open_v2(h_path(&env, "data/herald.db"), &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
            sqlite3_stmt *st = NULL;
            sqlite3_busy_timeout(db, 1000);
            if (sqlite3_prepare_v2(db, "SELECT count(*) FROM failures", -1, &st, NULL) == SQLITE_OK &&
                sqlite3_step(st) == SQLITE_ROW)
                gone = sqlite3_column_int(st, 0) == 0;
            sqlite3_finalize(st);
        }
        sqlite3_close(db);
        if (!gone) usleep(20000);
    }
    cr_assert(gone, "the failure history of a delivery that succeeded was kept");
}

/* --- 2. exhausted attempts -------------------------------------------------- */

Test(failure, always_failing_handler_is_dead_lettered_after_max_attempts_with_every_error)
{
    h_config(&env, "os",
             "functions = ( { name = \"always\"; exec = [\"tests/handlers/fail.sh\", \"1\"]; max_attempts = 3;\n"
             "   backoff = { initial = 0.1; jitter = \"none\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"always\"; } ); } );\n");
    h_broker(&env);
    h_worker(&env, NULL, 2);
    char *id = publish("t", "doomed");
    h_wait_sub(&env, "t", "always", "dead", 1, 20000);

    /* stats' dead "reflects the database" (DESIGN §2): once it says 1, the
     * dead letter is there for dlq list */
    char *list = dlq_list("always", 1);
    char buf[4096];
    cr_assert_str_eq(json_str(list, "message_id", buf, sizeof buf), id, "%s", list);
    cr_assert_str_eq(json_str(list, "topic", buf, sizeof buf), "t", "%s", list);
    cr_assert_eq(h_json_num(list, "{", "attempts"), 3, "%s", list);
    cr_assert_str_eq(json_str(list, "outcome", buf, sizeof buf), "error", "%s", list);
    cr_assert(strstr(json_str(list, "error", buf, sizeof buf), "failing with 1"), "%s", list);

    char *show = dlq_show_first(list);
    cr_assert_eq(h_json_num(show, "{", "attempts"), 3, "%s", show);
    cr_assert_str_eq(json_str(show, "payload", buf, sizeof buf), "doomed", "%s", show);
    assert_history(show, 3, "error", "failing with 1");

    /* nothing left queued, and the counters agree */
    h_assert_sub(&env, "t", "always", "ready", 0);
    h_assert_sub(&env, "t", "always", "delayed", 0);
    h_assert_sub(&env, "t", "always", "inflight", 0);
    h_assert_sub(&env, "t", "always", "dead", 1);
    h_assert_sub(&env, "t", "always", "failed", 3);
    h_assert_sub(&env, "t", "always", "succeeded", 0);
    cr_assert_eq(h_fn_stat(&env, "always", "errors"), 3);
    free(show);
    free(list);
    free(id);
}

/* --- 3. permanent failure --------------------------------------------------- */

Test(failure, exit_65_is_dead_lettered_after_one_attempt_as_rejected)
{
    h_config(&env, "os",
             "functions = ( { name = \"picky\"; exec = [\"tests/handlers/fail.sh\", \"65\"]; max_attempts = 5;\n"
             "   backoff = { initial = 0.1; jitter = \"none\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"picky\"; } ); } );\n");
    h_broker(&env);
    h_worker(&env, NULL, 2);
    free(publish("t", "bad data"));
    char *list = wait_dlq("picky", 1, 20000);
    char buf[4096];
    cr_assert_eq(h_json_num(list, "{", "attempts"), 1, "%s", list);
    cr_assert_str_eq(json_str(list, "outcome", buf, sizeof buf), "rejected", "%s", list);
    char *show = dlq_show_first(list);
    assert_history(show, 1, "rejected", "failing with 65");
    h_assert_sub(&env, "t", "picky", "dead", 1);
    h_assert_sub(&env, "t", "picky", "failed", 1);
    h_assert_sub(&env, "t", "picky", "ready", 0);
    h_assert_sub(&env, "t", "picky", "delayed", 0);
    h_assert_sub(&env, "t", "picky", "inflight", 0);
    cr_assert_eq(h_fn_stat(&env, "picky", "rejected"), 1);
    cr_assert_eq(h_fn_stat(&env, "picky", "errors"), 0);
    free(show);
    free(list);
}

/* --- 4. timeouts reach escaped descendants ---------------------------------- */

/* The pids listed in a file, one a line; returns how many. */
static int read_pids(const char *path, pid_t *pids, int max)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int n = 0, p;
    while (n < max && fscanf(f, "%d", &p) == 1) pids[n++] = p;
    fclose(f);
    return n;
}

Test(failure, timeout_kills_handler_and_setsid_grandchild_then_retries_then_dead_letters)
{
    char body[2048];
    snprintf(body, sizeof body,
             "functions = ( { name = \"stuck\"; exec = [\"tests/handlers/fail_escape.sh\"]; timeout = 1.0;\n"
             "   max_attempts = 2; backoff = { initial = 0.1; jitter = \"none\"; };\n"
             "   env = { PID_DIR = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"stuck\"; } ); } );\n",
             env.dir);
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, 2);
    free(publish("t", "x"));
    char *list = wait_dlq("stuck", 1, 30000);

    /* the attempt has ended: every process it started is gone (no zombie either) */
    pid_t handlers[8], escaped[8];
    int nh = read_pids(h_path(&env, "handler.pids"), handlers, 8);
    int ne = read_pids(h_path(&env, "escaped.pids"), escaped, 8);
    cr_assert_eq(nh, 2, "the handler ran %d times, expected 2 (one retry)", nh);
    cr_assert_eq(ne, 2, "%d grandchildren recorded, expected 2", ne);
    for (int i = 0; i < nh; i++)
        cr_assert(pid_gone(handlers[i]), "attempt %d: handler pid %d still exists after its timeout", i + 1,
                  handlers[i]);
    for (int i = 0; i < ne; i++)
        cr_assert(pid_gone(escaped[i]), "attempt %d: setsid() grandchild pid %d still exists after the timeout",
                  i + 1, escaped[i]);

    char buf[4096];
    cr_assert_eq(h_json_num(list, "{", "attempts"), 2, "%s", list);
    cr_assert_str_eq(json_str(list, "outcome", buf, sizeof buf), "timeout", "%s", list);
    char *show = dlq_show_first(list);
    assert_history(show, 2, "timeout", "timeout after");
    for (int i = 0; i < 2; i++) {
        long d = h_json_num(history_entry(show, i), "{", "duration_ms");
        cr_assert(d >= 1000 && d < 10000, "attempt %d lasted %ld ms with timeout 1 s: %s", i + 1, d, show);
    }
    cr_assert_eq(h_fn_stat(&env, "stuck", "timeouts"), 2);
    h_assert_sub(&env, "t", "stuck", "dead", 1);
    h_assert_sub(&env, "t", "stuck", "ready", 0);
    h_assert_sub(&env, "t", "stuck", "delayed", 0);
    h_assert_sub(&env, "t", "stuck", "inflight", 0);
    free(show);
    free(list);
}

/* --- 5. a poison event in a native handler ---------------------------------- */

static bool worker_listed(void *arg)
{
    pid_t pid = *(pid_t *)arg;
    char *st = h_stats(&env);
    char want[64];
    snprintf(want, sizeof want, "\"pid\":%d,", (int)pid);
    bool ok = st && strstr(st, want);
    free(st);
    return ok;
}

Test(failure, native_segfault_dead_letters_only_the_poison_event_and_the_worker_survives)
{
    h_config(&env, "os",
             "functions = ( { name = \"nat\"; native = { library = \"build/tests/handlers/libnative.so\";\n"
             "   symbol = \"handle\"; }; max_attempts = 3; backoff = { initial = 0.1; jitter = \"none\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"nat\"; } ); } );\n");
    h_broker(&env);
    pid_t worker = h_worker(&env, NULL, 2);
    cr_assert(h_wait(worker_listed, &worker, 10000), "the worker never registered");

    /* 1,000 events; "boom" (number 500) makes native.c's handler segfault */
    FILE *f = fopen(h_path(&env, "in.txt"), "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 1000; i++) fprintf(f, i == 500 ? "boom\n" : "event-%d\n", i);
    fclose(f);
    publish_lines("t", h_path(&env, "in.txt"), h_path(&env, "ids.txt"), 1000);
    char *list = wait_dlq("nat", 1, 30000);
    h_wait_sub(&env, "t", "nat", "succeeded", 999, 30000);
    h_assert_sub(&env, "t", "nat", "dead", 1);
    char buf[4096];
    cr_assert_eq(h_json_num(list, "{", "attempts"), 3, "%s", list);
    cr_assert_str_eq(json_str(list, "outcome", buf, sizeof buf), "crashed", "%s", list);
    char *show = dlq_show_first(list);
    cr_assert_str_eq(json_str(show, "payload", buf, sizeof buf), "boom", "%s", show);
    assert_history(show, 3, "crashed", NULL);
    h_assert_sub(&env, "t", "nat", "failed", 3);
    h_assert_sub(&env, "t", "nat", "ready", 0);
    h_assert_sub(&env, "t", "nat", "delayed", 0);
    h_assert_sub(&env, "t", "nat", "inflight", 0);
    cr_assert_eq(h_fn_stat(&env, "nat", "crashed"), 3);

    /* the worker never went down for it: same process, still registered */
    int st;
    cr_assert_eq(waitpid(worker, &st, WNOHANG), 0, "the worker exited");
    cr_assert_eq(kill(worker, 0), 0);
    cr_assert(worker_listed(&worker), "stats no longer lists worker pid %d", (int)worker);
    free(show);
    free(list);
}

/* --- 6. a worker killed mid-flight ------------------------------------------ */

static bool n_workers(void *arg)
{
    int want = *(int *)arg, n = 0;
    char *st = h_stats(&env);
    const char *w = st ? strstr(st, "\"workers\":[") : NULL;
    for (const char *p = w; p && (p = strstr(p, "{\"id\":")) != NULL; p++) n++;
    free(st);
    return w && n == want;
}

/* The first word of each line of a file, sorted and unique. */
static size_t first_words(const char *path, char ***out)
{
    size_t total, n = h_lines_sorted(path, out, &total);
    for (size_t i = 0; i < n; i++) (*out)[i][strcspn((*out)[i], " ")] = 0;
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        if (u && strcmp((*out)[u - 1], (*out)[i]) == 0) { free((*out)[i]); continue; }
        (*out)[u++] = (*out)[i];
    }
    return u;
}

/* Every id of ids_path is the first word of some line of seen_path. */
static void assert_all_seen(const char *ids_path, const char *seen_path)
{
    char **ids, **seen;
    size_t ni = h_lines_sorted(ids_path, &ids, NULL);
    size_t ns = first_words(seen_path, &seen);
    for (size_t i = 0; i < ni; i++) {
        bool found = false;
        for (size_t j = 0; j < ns && !found; j++) found = strcmp(ids[i], seen[j]) == 0;
        cr_assert(found, "event %s was never handled to completion", ids[i]);
    }
    h_free_lines(ids, ni);
    h_free_lines(seen, ns);
}

typedef struct { const char *seen, *ids; size_t n; } all_seen;

static bool every_id_seen(void *arg)
{
    all_seen *a = arg;
    char **seen;
    size_t ns = first_words(a->seen, &seen);
    h_free_lines(seen, ns);
    return ns >= a->n;
}

Test(failure, worker_kill9_mid_flight_counts_lost_and_every_event_is_handled)
{
    char body[2048];
    snprintf(body, sizeof body,
             "functions = ( { name = \"slow\"; exec = [\"tests/handlers/fail_slow.sh\"]; timeout = 30.0;\n"
             "   max_attempts = 5; backoff = { initial = 0.1; jitter = \"none\"; };\n"
             "   env = { START_FILE = \"%s\"; RECORD_FILE = \"%s\"; SLEEP_S = \"2\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"slow\"; } ); } );\n",
             h_path(&env, "started.txt"), h_path(&env, "done.txt"));
    h_config(&env, "os", body);
    h_broker(&env);
    pid_t victim = h_worker(&env, NULL, 4);
    h_worker(&env, NULL, 4);
    int two = 2;
    cr_assert(h_wait(n_workers, &two, 10000), "both workers never registered: %s", h_stats(&env));

    const int n = 8;   /* = both workers' slots: each holds 4 */
    h_write_lines(h_path(&env, "in.txt"), n, "slow-%d");
    publish_lines("t", h_path(&env, "in.txt"), h_path(&env, "ids.txt"), (size_t)n);
    h_wait_lines(h_path(&env, "started.txt"), (size_t)n, 10000);
    h_assert_sub(&env, "t", "slow", "inflight", n);
    h_kill(&env, victim, SIGKILL);

    all_seen a = { h_path(&env, "done.txt"), h_path(&env, "ids.txt"), (size_t)n };
    cr_assert(h_wait(every_id_seen, &a, 30000), "not every event was handled: %zu lines in done.txt",
              h_count_lines(a.seen));
    assert_all_seen(a.ids, a.seen);
    h_wait_sub(&env, "t", "slow", "succeeded", n, 10000);
    long lost = h_fn_stat(&env, "slow", "lost");
    cr_assert(lost > 0 && lost != LONG_MIN, "stats counted %ld lost attempts after a worker was killed", lost);
    /* each lost delivery ran again, as attempt 2, on the surviving worker */
    long again = 0;
    char *done = h_read(a.seen, NULL);
    for (const char *p = done; p && (p = strstr(p, " 2\n")) != NULL; p++) again++;
    free(done);
    cr_assert_eq(again, lost, "%ld deliveries completed as attempt 2, but %ld attempts were counted lost", again,
                 lost);
    h_assert_sub(&env, "t", "slow", "failed", lost);
    h_assert_sub(&env, "t", "slow", "ready", 0);
    h_assert_sub(&env, "t", "slow", "delayed", 0);
    h_assert_sub(&env, "t", "slow", "inflight", 0);
    h_assert_sub(&env, "t", "slow", "dead", 0);
}

/* --- 7. a draining worker --------------------------------------------------- */

Test(failure, sigterm_to_busy_worker_finishes_and_acks_in_flight_then_exits_0)
{
    char body[2048];
    snprintf(body, sizeof body,
             "functions = ( { name = \"slow\"; exec = [\"tests/handlers/fail_slow.sh\"]; timeout = 30.0;\n"
             "   env = { START_FILE = \"%s\"; RECORD_FILE = \"%s\"; SLEEP_S = \"1\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"slow\"; } ); } );\n",
             h_path(&env, "started.txt"), h_path(&env, "done.txt"));
    h_config(&env, "os", body);
    h_broker(&env);
    pid_t worker = h_worker(&env, NULL, 4);
    int one = 1;
    cr_assert(h_wait(n_workers, &one, 10000), "the worker never registered");

    const int n = 4;   /* = its slots: all in flight at once */
    h_write_lines(h_path(&env, "in.txt"), n, "drain-%d");
    publish_lines("t", h_path(&env, "in.txt"), h_path(&env, "ids.txt"), (size_t)n);
    h_wait_lines(h_path(&env, "started.txt"), (size_t)n, 10000);
    cr_assert_lt(h_count_lines(h_path(&env, "done.txt")), (size_t)n, "every handler finished before the SIGTERM");

    long t0 = mono_ms();
    int st = h_signal_exit(&env, worker, SIGTERM, 10000);
    long took = mono_ms() - t0;
    cr_assert_neq(st, -1, "the worker did not exit within 10 s of SIGTERM");
    cr_assert_eq(st, 0, "the worker exited with %d after SIGTERM", st);
    cr_log_info("worker drained and exited in %ld ms", took);

    /* its in-flight deliveries ran to completion and were acked */
    cr_assert_eq(h_count_lines(h_path(&env, "done.txt")), (size_t)n, "%zu of %d in-flight deliveries completed",
                 h_count_lines(h_path(&env, "done.txt")), n);
    assert_all_seen(h_path(&env, "ids.txt"), h_path(&env, "done.txt"));
    h_wait_sub(&env, "t", "slow", "succeeded", n, 5000);
    /* once the broker has noticed the worker is gone, nothing was lost or retried */
    int none = 0;
    cr_assert(h_wait(n_workers, &none, 10000), "the broker still lists the worker: %s", h_stats(&env));
    cr_assert_eq(h_fn_stat(&env, "slow", "lost"), 0);
    h_assert_sub(&env, "t", "slow", "failed", 0);
    h_assert_sub(&env, "t", "slow", "succeeded", n);
    h_assert_sub(&env, "t", "slow", "ready", 0);
    h_assert_sub(&env, "t", "slow", "delayed", 0);
    h_assert_sub(&env, "t", "slow", "inflight", 0);
    char *stats = h_stats(&env);
    cr_assert(strstr(stats, "{\"name\":\"t\",\"published\":4}"), "stats: %s", stats);
    free(stats);
    cr_assert_eq(h_count_lines(h_path(&env, "started.txt")), (size_t)n, "a delivery ran twice");
}

/* --- 8. memory limits ------------------------------------------------------- */

static bool on_path(const char *prog)
{
    const char *path = getenv("PATH");
    if (!path) return false;
    char *copy = strdup(path), *save = NULL;
    bool found = false;
    for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", d, prog);
        found = access(p, X_OK) == 0;
    }
    free(copy);
    return found;
}

Test(failure, memory_mb_64_gives_python_memoryerror_and_node_starts_at_default)
{
    bool node = on_path("node");
    char nodefn[1024] = "", body[2048];
    if (node)
        snprintf(nodefn, sizeof nodefn,
                 ",\n { name = \"nodejs\"; max_attempts = 1; exec = [\"node\", \"-e\",\n"
                 "   \"require('fs').appendFileSync(process.env.RECORD_FILE, 'node ok\\\\n'); console.log('hi')\"];\n"
                 "   env = { RECORD_FILE = \"%s\"; }; }",
                 h_path(&env, "node.txt"));
    snprintf(body, sizeof body,
             "functions = ( { name = \"hog\"; exec = [\"python3\", \"tests/handlers/mem.py\"]; memory_mb = 64;\n"
             "   max_attempts = 1; }%s );\n"
             "topics = ( { name = \"mem\"; subscriptions = ( { function = \"hog\"; } ); }%s );\n",
             nodefn, node ? ", { name = \"js\"; subscriptions = ( { function = \"nodejs\"; } ); }" : "");
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, 2);

    free(publish("mem", "x"));
    char *list = wait_dlq("hog", 1, 30000);
    char buf[8192];
    cr_assert(strstr(json_str(list, "error", buf, sizeof buf), "MemoryError"),
              "the 512 MiB allocation under memory_mb = 64 did not end in MemoryError: %s", list);
    free(list);

    if (!node) cr_skip_test("node is not on PATH: its half (starts at the default memory_mb) is skipped");
    free(publish("js", "x"));
    h_wait_sub(&env, "js", "nodejs", "succeeded", 1, 30000);
    char *rec = h_read(h_path(&env, "node.txt"), NULL);
    cr_assert(rec && strcmp(rec, "node ok\n") == 0, "node's record: %s", rec ? rec : "(none)");
    free(rec);
    h_assert_sub(&env, "js", "nodejs", "dead", 0);
}

static bool pid_file_has_line(void *arg)
{
    return h_count_lines(arg) >= 1;
}

typedef struct { pid_t pid; } gone_arg;
static bool handler_gone(void *arg) { return pid_gone(((gone_arg *)arg)->pid); }

/* DESIGN §5 fencing: a worker that hears nothing from the broker for 3
 * heartbeats kills its in-flight handlers (another worker may get them), and
 * the delivery is redone once the broker is back. */
Test(failure, a_worker_cut_off_from_the_broker_kills_its_handlers_and_the_delivery_is_redone)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"slow\"; exec = [\"tests/handlers/fence_slow.sh\"]; timeout = 120;\n"
             "   max_attempts = 3; backoff = { initial = 0.1; jitter = \"none\"; };\n"
             "   env = { PID_FILE = \"%s\"; RECORD_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"slow\"; } ); } );\n",
             h_path(&env, "pid.txt"), h_path(&env, "record.txt"));
    h_config(&env, "os", body);
    pid_t broker = h_broker(&env);
    h_worker(&env, NULL, 2);
    char *id = publish("t", "x");
    cr_assert(h_wait(pid_file_has_line, h_path(&env, "pid.txt"), 20000), "the handler never started");
    char *pidtxt = h_read(h_path(&env, "pid.txt"), NULL);
    gone_arg g = { (pid_t)atoi(pidtxt) };
    free(pidtxt);
    cr_assert(g.pid > 0 && !pid_gone(g.pid), "the handler is not running");
    /* the broker goes silent (heartbeat 0.5 s): within ~1.5 s the worker must
     * kill what it runs, while the broker is still stopped */
    kill(broker, SIGSTOP);
    long t0 = mono_ms();
    bool killed = h_wait(handler_gone, &g, 6000);
    long took = mono_ms() - t0;
    kill(broker, SIGCONT);
    cr_assert(killed, "the worker kept running its handler for 6 s with the broker silent");
    cr_log_info("handler killed %ld ms after the broker went silent", took);
    cr_assert(took >= 1000, "killed after %ld ms: before 3 heartbeats of silence", took);
    /* back: the lease ends as lost and the delivery runs again, elsewhere or here */
    char want[128];
    snprintf(want, sizeof want, "%s 2", id);
    h_wait_lines(h_path(&env, "record.txt"), 1, 30000);
    char *rec = h_read(h_path(&env, "record.txt"), NULL);
    cr_assert(rec && strstr(rec, want), "the delivery was not redone as attempt 2: %s", rec);
    free(rec);
    free(id);
    h_wait_sub(&env, "t", "slow", "succeeded", 1, 10000);
}

/* DESIGN §10: a sync invoke that finds no free slot before its deadline is
 * refused as busy (nothing ran), not as a handler timeout. */
Test(failure, a_sync_invoke_with_no_free_slot_in_time_is_busy_and_never_runs)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"slow\"; exec = [\"tests/handlers/fail_slow.sh\"]; concurrency = 1;\n"
             "   env = { START_FILE = \"%s\"; RECORD_FILE = \"%s\"; SLEEP_S = \"4\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"slow\"; } ); } );\n",
             h_path(&env, "start.txt"), h_path(&env, "record.txt"));
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, 4);
    char *id = publish("t", "occupies the only slot");
    h_wait_lines(h_path(&env, "start.txt"), 1, 20000);
    char *out = NULL, *err = NULL;
    long t0 = mono_ms();
    int rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "--broker", env.adm, "invoke", "slow", "x", "--timeout", "1",
                   NULL);
    long took = mono_ms() - t0;
    cr_assert_eq(rc, 1, "exit %d, stdout %s", rc, out);
    cr_assert(strstr(err, "no worker slot became free"), "stderr: %s", err);
    cr_assert(took < 4000, "answered after %ld ms: the deadline is 1 s", took);
    free(out);
    free(err);
    /* the slot frees after ~4 s; a sentinel published now starts next — a
     * refused invoke still queued would have gone first (invokes lead) */
    h_wait_sub(&env, "t", "slow", "succeeded", 1, 20000);
    char *sentinel = publish("t", "sentinel");
    h_wait_lines(h_path(&env, "start.txt"), 2, 20000);
    char *starts = h_read(h_path(&env, "start.txt"), NULL);
    char *second = strchr(starts, '\n');
    cr_assert(second && strncmp(second + 1, sentinel, strlen(sentinel)) == 0,
              "the refused invoke ran anyway: %s", starts);
    free(starts);
    free(sentinel);
    free(id);
}
