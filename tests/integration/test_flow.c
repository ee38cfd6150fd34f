/* test_flow.c — flow control and idempotence of DESIGN §5 through the real
 * programs: a function's concurrency across workers, --delay, --dedup-id,
 * idempotent publishing through a broker kill -9, max_backlog back-pressure,
 * and the SIGHUP reload rules. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static h_env env;

static void setup(void) { h_setup(&env); }
static void teardown(void) { h_teardown(&env); }

TestSuite(flow, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers ------------------------------------------------------------- */


static int64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}


/* Number of lines of a file whose first word is id. */
static size_t lines_with_id(const char *path, const char *id)
{
    char *s = h_read(path, NULL);
    if (!s) return 0;
    size_t n = 0, len = strlen(id);
    for (char *line = s; *line;) {
        char *nl = strchr(line, '\n');
        if (strncmp(line, id, len) == 0 && (line[len] == ' ' || line[len] == '\n' || line[len] == 0)) n++;
        if (!nl) break;
        line = nl + 1;
    }
    free(s);
    return n;
}

typedef struct { const char *path; const char *id; } id_in_file;

static bool has_id(void *arg)
{
    id_in_file *f = arg;
    return lines_with_id(f->path, f->id) > 0;
}

/* herald-publish TOPIC PAYLOAD [extra args...]: its exit code; the printed id
 * (trailing newline cut) into id, stderr into *err when asked. */
static int publish(const char *topic, const char *payload, char id[128], char **err, const char *a1,
                   const char *a2, const char *a3, const char *a4)
{
    char *out = NULL, *e2 = NULL;
    int rc = h_run(&env, NULL, &out, &e2, "bin/herald-publish", "--broker", env.pub, topic, payload, a1, a2, a3,
                   a4, NULL);
    if (id) {
        snprintf(id, 128, "%s", out ? out : "");
        id[strcspn(id, "\n")] = 0;
    }
    free(out);
    if (err) *err = e2;
    else free(e2);
    return rc;
}

static int workers_connected(h_env *e)
{
    char *st = h_stats(e);
    const char *w = st ? strstr(st, "\"workers\":[") : NULL;
    int n = -1;
    if (w) {
        n = 0;
        /* workers[] holds arrays: no ']' bound; the top-level "refused" is a map, a worker's an array */
        const char *end = strstr(w, "\"refused\":{");
        for (const char *p = w; (p = strstr(p, "{\"id\":")) != NULL && (!end || p < end); p++) n++;
    }
    free(st);
    return n;
}

typedef struct { h_env *e; int n; } n_workers;

static bool workers_at_least(void *arg)
{
    n_workers *w = arg;
    return workers_connected(w->e) >= w->n;
}

typedef struct { h_env *e; const char *topic, *function; } sub_ref;

/* nothing ready, delayed or in flight on the subscription */
static bool sub_drained(void *arg)
{
    sub_ref *s = arg;
    char anchor[300];
    snprintf(anchor, sizeof anchor, "{\"topic\":\"%s\",\"function\":\"%s\"", s->topic, s->function);
    char *st = h_stats(s->e);
    bool ok = st && h_json_num(st, anchor, "ready") == 0 && h_json_num(st, anchor, "delayed") == 0 &&
              h_json_num(st, anchor, "inflight") == 0;
    free(st);
    return ok;
}

typedef struct { const char *path; const char *needle; } file_has;

static bool file_contains(void *arg)
{
    file_has *f = arg;
    char *s = h_read(f->path, NULL);
    bool ok = s && strstr(s, f->needle);
    free(s);
    return ok;
}

/* Forget a program that exited on its own, so teardown does not signal its
 * (reaped, possibly reused) process group. */
static void forget(h_env *e, pid_t pid)
{
    for (int i = 0; i < e->npids; i++)
        if (e->pids[i] == pid) e->pids[i] = 0;
}

/* ---- 1. concurrency ------------------------------------------------------ */

typedef struct { int64_t t; int d; } edge;

static int cmp_edge(const void *a, const void *b)
{
    const edge *x = a, *y = b;
    if (x->t != y->t) return x->t < y->t ? -1 : 1;
    return x->d - y->d;   /* at a tie an end (-1) comes before a start (+1) */
}

Test(flow, function_concurrency_caps_runs_across_workers)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"slow\"; exec = [\"tests/handlers/flow_times.sh\"]; concurrency = 2;\n"
             "   env = { TIMES_FILE = \"%s\"; SLEEP_S = \"0.2\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"slow\"; } ); } );\n",
             h_path(&env, "times.txt"));
    h_config(&env, "os", body);
    h_broker(&env);
    for (int i = 0; i < 3; i++) h_worker(&env, NULL, 4);
    n_workers nw = { &env, 3 };
    cr_assert(h_wait(workers_at_least, &nw, 20000), "3 workers never connected: %d", workers_connected(&env));

    const int n = 20;
    h_write_lines(h_path(&env, "in.txt"), n, "job-%d");
    char *err = NULL;
    int rc = h_run(&env, h_path(&env, "in.txt"), NULL, &err, "bin/herald-publish", "--broker", env.pub, "--lines",
                   "t", NULL);
    cr_assert_eq(rc, 0, "publish: %s", err);
    free(err);
    h_wait_lines(h_path(&env, "times.txt"), (size_t)n, 40000);

    /* the intervals each handler measured lie inside its real run, so their
     * overlap is a lower bound of the real concurrency — and with 12 slots
     * and a broken limit it would reach far above 2 */
    char *s = h_read(h_path(&env, "times.txt"), NULL);
    edge ev[2 * 64];
    int ne = 0;
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
        char id[128];
        long long a, b;
        cr_assert_eq(sscanf(line, "%127s %lld %lld", id, &a, &b), 3, "bad line: %s", line);
        cr_assert(b >= a, "end before start: %s", line);
        cr_assert(ne + 2 <= (int)(sizeof ev / sizeof ev[0]), "too many runs");
        ev[ne++] = (edge){ a, +1 };
        ev[ne++] = (edge){ b, -1 };
    }
    free(s);
    qsort(ev, (size_t)ne, sizeof ev[0], cmp_edge);
    int cur = 0, max = 0;
    for (int i = 0; i < ne; i++) {
        cur += ev[i].d;
        if (cur > max) max = cur;
    }
    cr_assert_leq(max, 2, "function concurrency = 2 but %d handlers ran at once", max);
    cr_assert_geq(max, 2, "never 2 at once (max %d): the concurrency is not used", max);
    /* the last handler wrote its line before its result reached the broker */
    sub_ref sr = { &env, "t", "slow" };
    cr_assert(h_wait(sub_drained, &sr, 15000), "the queue never drained");
    cr_assert_eq(h_sub_stat(&env, "t", "slow", "succeeded"), n);
}

/* ---- 2. --delay and --dedup-id ------------------------------------------- */

Test(flow, delayed_publish_is_not_handled_before_its_delay)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; exec = [\"tests/handlers/flow_times.sh\"];\n"
             "   env = { TIMES_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n",
             h_path(&env, "times.txt"));
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, 4);
    n_workers nw = { &env, 1 };
    cr_assert(h_wait(workers_at_least, &nw, 20000), "the worker never connected");

    char id[128];
    int64_t before = realtime_ns();
    cr_assert_eq(publish("t", "later", id, NULL, "--delay", "2", NULL, NULL), 0);
    int64_t returned = realtime_ns();
    cr_assert(id[0], "no message id printed");
    /* stored as delayed, not ready (2 s is long enough to look) */
    long delayed = h_sub_stat(&env, "t", "rec", "delayed");
    if (realtime_ns() - before < 1500000000LL)
        cr_assert_eq(delayed, 1, "a --delay 2 event right after its publish: delayed %ld", delayed);

    id_in_file f = { h_path(&env, "times.txt"), id };
    cr_assert(h_wait(has_id, &f, 15000), "the delayed event was never handled");
    char *s = h_read(f.path, NULL);
    char rid[128];
    long long start = 0, end = 0;
    cr_assert_eq(sscanf(s, "%127s %lld %lld", rid, &start, &end), 3, "times: %s", s);
    free(s);
    /* the broker takes the delay from when it stored the event, which lies
     * between the call and its return: the strict bound is the call */
    cr_assert_geq(start, before + 2000000000LL, "handled %.3f s after the publish began, before its 2 s delay",
                  (double)(start - before) / 1e9);
    fprintf(stderr, "flow: --delay 2 handled %.3f s after herald-publish returned\n",
            (double)(start - returned) / 1e9);
    cr_assert_eq(h_count_lines(f.path), 1);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Publishes n lines "PREFIX-i" with --delay; the confirmed ids go to ids_path. */
static void publish_delayed_lines(const char *prefix, int n, const char *delay, const char *ids_path)
{
    char in[64], fmt[64];
    snprintf(in, sizeof in, "%s.txt", prefix);
    snprintf(fmt, sizeof fmt, "%s-%%d", prefix);
    h_write_lines(h_path(&env, in), n, fmt);
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, h_path(&env, in), &out, &err, "bin/herald-publish", "--broker", env.pub, "--lines",
                   "--delay", delay, "t", NULL);
    cr_assert_eq(rc, 0, "herald-publish --lines --delay %s: exit %d: %.300s", delay, rc, err ? err : "");
    h_write(ids_path, out);
    free(out);
    free(err);
    cr_assert_eq(h_count_lines(ids_path), (size_t)n);
}

/* More delayed events than a subscription keeps in memory (DELAYED_WINDOW,
 * 8,192): the rest wait on disk and are read in time order as the first ones
 * wake — with the broker running throughout, and with a broker killed and
 * restarted while they wait. Every one is handled exactly once. */
Test(flow, delayed_events_beyond_the_memory_window_are_each_handled_once)
{
    char record[600], body[1024];
    snprintf(record, sizeof record, "%s", h_path(&env, "record.txt"));
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"build/tests/handlers/librel_record.so\";"
             " symbol = \"record\"; }; env = { RECORD_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n",
             record);
    h_config(&env, "os", body);
    pid_t broker = h_broker(&env);
    h_worker(&env, NULL, 8);
    n_workers nw = { &env, 1 };
    cr_assert(h_wait(workers_at_least, &nw, 20000), "the worker never connected");
    const int n = 20000;
    char ids_a[600], ids_b[600];
    snprintf(ids_a, sizeof ids_a, "%s", h_path(&env, "ids_a.txt"));
    snprintf(ids_b, sizeof ids_b, "%s", h_path(&env, "ids_b.txt"));

    /* 1. the broker runs throughout */
    publish_delayed_lines("a", n, "1", ids_a);
    h_wait_lines(record, (size_t)n, 60000);

    /* 2. killed and restarted while they wait */
    publish_delayed_lines("b", n, "3", ids_b);
    h_kill(&env, broker, SIGKILL);
    h_broker(&env);
    h_wait_lines(record, (size_t)(2 * n), 60000);
    h_wait_sub(&env, "t", "rec", "delayed", 0, 10000);
    h_wait_sub(&env, "t", "rec", "inflight", 0, 10000);

    /* exactly once: the record's ids, sorted, have no repeat, and hold every
     * confirmed id */
    char *rec = h_read(record, NULL);
    char **got = calloc((size_t)(3 * n), sizeof *got);
    size_t ng = 0;
    char *save = NULL;
    for (char *line = strtok_r(rec, "\n", &save); line && ng < (size_t)(3 * n); line = strtok_r(NULL, "\n", &save)) {
        line[strcspn(line, " ")] = 0;
        got[ng++] = line;
    }
    cr_assert_eq(ng, (size_t)(2 * n), "%zu handler runs for %d events", ng, 2 * n);
    qsort(got, ng, sizeof *got, cmp_str);
    for (size_t i = 1; i < ng; i++) cr_assert_str_neq(got[i - 1], got[i], "%s was handled twice", got[i]);
    const char *files[] = { ids_a, ids_b };
    for (int f = 0; f < 2; f++) {
        char *ids = h_read(files[f], NULL), *sv = NULL;
        for (char *id = strtok_r(ids, "\n", &sv); id; id = strtok_r(NULL, "\n", &sv))
            cr_assert_not_null(bsearch(&id, got, ng, sizeof *got, cmp_str), "confirmed %s never handled", id);
        free(ids);
    }
    free(got);
    free(rec);
}

Test(flow, dedup_id_is_stored_once_and_answered_with_the_first_id)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; exec = [\"tests/handlers/spine_record.sh\"];\n"
             "   env = { RECORD_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); },\n"
             "           { name = \"u\"; subscriptions = ( { function = \"rec\"; } ); } );\n",
             h_path(&env, "rec.txt"));
    h_config(&env, "os", body);
    h_broker(&env);
    const char *rec = h_path(&env, "rec.txt");

    /* no worker yet: the queue shows what was stored */
    char a[128], b[128], c[128], u[128], s[128];
    cr_assert_eq(publish("t", "first", a, NULL, "--dedup-id", "order-42", NULL, NULL), 0);
    cr_assert_eq(publish("t", "second", b, NULL, "--dedup-id", "order-42", NULL, NULL), 0);
    cr_assert(a[0], "no message id printed");
    cr_assert_str_eq(b, a, "the repeated --dedup-id got another message id");
    cr_assert_eq(h_sub_stat(&env, "t", "rec", "ready"), 1, "a repeated --dedup-id was stored again");
    /* the same id on another topic is another event */
    cr_assert_eq(publish("u", "other-topic", u, NULL, "--dedup-id", "order-42", NULL, NULL), 0);
    cr_assert_str_neq(u, a);
    cr_assert_eq(h_sub_stat(&env, "u", "rec", "ready"), 1);

    pid_t w = h_worker(&env, NULL, 1);
    id_in_file fa = { rec, a };
    cr_assert(h_wait(has_id, &fa, 15000), "the deduplicated event was never handled");
    id_in_file fu = { rec, u };
    cr_assert(h_wait(has_id, &fu, 15000), "the other topic's event was never handled");
    sub_ref sr = { &env, "t", "rec" };
    cr_assert(h_wait(sub_drained, &sr, 15000));
    cr_assert_eq(h_signal_exit(&env, w, SIGTERM, 15000), 0, "the worker did not stop on SIGTERM");

    /* handled and acked: still within the window, so still not stored again */
    cr_assert_eq(publish("t", "third", c, NULL, "--dedup-id", "order-42", NULL, NULL), 0);
    cr_assert_str_eq(c, a, "a --dedup-id repeated after its event was handled got another message id");
    cr_assert_eq(h_sub_stat(&env, "t", "rec", "ready"), 0, "a --dedup-id repeated after handling was stored again");
    /* the sentinel: queued after anything the repeats could have stored */
    cr_assert_eq(publish("t", "sentinel", s, NULL, NULL, NULL, NULL, NULL), 0);
    cr_assert_str_neq(s, a);
    h_worker(&env, NULL, 1);
    id_in_file fs = { rec, s };
    cr_assert(h_wait(has_id, &fs, 15000), "the sentinel was never handled");
    cr_assert(h_wait(sub_drained, &sr, 15000));

    char *r = h_read(rec, NULL);
    cr_assert_eq(lines_with_id(rec, a), 1, "the deduplicated event ran %zu times:\n%s", lines_with_id(rec, a), r);
    cr_assert(strstr(r, " first\n"), "%s", r);
    cr_assert_null(strstr(r, " second\n"), "a duplicate's payload was handled:\n%s", r);
    cr_assert_null(strstr(r, " third\n"), "a duplicate's payload was handled:\n%s", r);
    cr_assert_eq(h_count_lines(rec), 3, "expected first, other-topic, sentinel:\n%s", r);
    free(r);
}

/* ---- 3. idempotent publishing through a broker kill -9 ------------------- */

typedef struct { const char *path; off_t size; } file_grown;

static bool file_nonempty(void *arg)
{
    file_grown *f = arg;
    struct stat st;
    return stat(f->path, &st) == 0 && st.st_size > f->size;
}

typedef struct { volatile int *count; int want; } progress_past;

static bool written_past(void *arg)
{
    progress_past *p = arg;
    return __atomic_load_n(p->count, __ATOMIC_ACQUIRE) >= p->want;
}

/* Few lines wait for a confirm beyond those the pipe holds: the publisher's
 * window (1,000) has room for what the test then asks of it. */
typedef struct { volatile int *written; const char *ids; } caught_up;
static bool confirms_caught_up(void *arg)
{
    caught_up *c = arg;
    return (long)__atomic_load_n(c->written, __ATOMIC_ACQUIRE) - (long)h_count_lines(c->ids) <= 4096 / 10 + 50;
}

/* the subscription's stored deliveries, unchanged since the last look */
typedef struct { h_env *e; long last; } stable_count;

static bool stored_stable(void *arg)
{
    stable_count *c = arg;
    long now = h_sub_stat(c->e, "t", "rec", "ready");
    bool same = now >= 0 && now == c->last;
    c->last = now;
    return same;
}

Test(flow, publisher_streaming_through_broker_kill9_stores_each_line_once)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"examples/handlers/libcount.so\"; symbol = \"count\"; };\n"
             "   env = { COUNT_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n",
             h_path(&env, "seen.txt"));
    h_config(&env, "fsync", body);
    pid_t broker = h_broker(&env);

    /* 20,000 unique lines "line-N" through a FIFO, written by a child of
     * ours at an even pace (10 lines every 0.3 ms) so that publishes are
     * streaming when the kill lands — a file would be published in 0.1 s,
     * before any kill could. It counts the lines it got into the pipe in
     * shared memory, and shrinks the pipe to one page so that count tells
     * how far the publisher has read. The publisher's stdout is
     * block-buffered: its first ids appear some 2,800 lines in. */
    const int n = 20000;
    char *fifo = h_path(&env, "in.fifo");
    cr_assert_eq(mkfifo(fifo, 0600), 0, "mkfifo %s", fifo);
    char script[1200];
    snprintf(script, sizeof script, "exec '%s/bin/herald-publish' --broker '%s' --timeout 30 --lines t < '%s'",
             env.root, env.pub, fifo);
    pid_t pub = h_start(&env, "publisher", "/bin/sh", "-c", script, NULL);
    volatile int *written = mmap(NULL, sizeof(int), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq((void *)written, MAP_FAILED);
    *written = 0;
    pid_t writer = fork();
    cr_assert(writer >= 0, "fork");
    if (writer == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGPIPE, SIG_DFL);
        int fd = open(fifo, O_WRONLY);
        if (fd < 0) _exit(3);
        if (fcntl(fd, F_SETPIPE_SZ, 4096) < 0) _exit(5);
        char buf[256];
        for (int i = 1; i <= n;) {
            size_t len = 0;
            int k = 0;
            for (; k < 10 && i <= n; k++, i++) len += (size_t)snprintf(buf + len, sizeof buf - len, "line-%d\n", i);
            for (size_t off = 0; off < len;) {
                ssize_t w = write(fd, buf + off, len - off);
                if (w < 0) _exit(4);
                off += (size_t)w;
            }
            __atomic_store_n(written, i - 1, __ATOMIC_RELEASE);
            nanosleep(&(struct timespec){ 0, 300000 }, NULL);
        }
        close(fd);
        _exit(0);
    }
    file_grown fg = { h_path(&env, "publisher.out"), 0 };
    cr_assert(h_wait(file_nonempty, &fg, 20000), "the publisher printed no id");
    /* Two kills -9, each at a moment frozen with SIGSTOP so that what it
     * cuts is known.
     * 1. Publisher frozen: the broker commits all it has received and its
     *    confirms wait unread; the publisher wakes up to a dead connection
     *    and re-sends whatever it has no confirm for — some of it already
     *    stored, to be answered "already stored" with the original id (how
     *    many is up to timing: confirms already in the socket may be read). */
    kill(pub, SIGSTOP);
    stable_count sc = { &env, -2 };
    h_wait(stored_stable, &sc, 5000);   /* best effort: only sharpens the case */
    int at_kill1 = __atomic_load_n(written, __ATOMIC_ACQUIRE);
    h_kill(&env, broker, SIGKILL);
    cr_assert_lt(h_wait_exit(writer, 0), 0, "the whole input was written before the first kill");
    size_t printed_before = h_count_lines(fg.path);
    broker = h_broker(&env);
    kill(pub, SIGCONT);
    /* 2. Broker frozen: the publisher goes on taking lines — 500 past what
     *    the one-page pipe holds — that cannot be stored; all of them are
     *    in flight when the kill lands and must be stored after the restart,
     *    once each. */
    progress_past pp = { written, at_kill1 + 4096 / 10 + 500 };
    cr_assert(h_wait(written_past, &pp, 20000), "the publisher took no more lines after the first restart");
    caught_up cu = { written, fg.path };
    h_wait(confirms_caught_up, &cu, 10000);   /* best effort: a slow broker (sanitizers, load) lags behind */
    kill(broker, SIGSTOP);
    int at_stop = __atomic_load_n(written, __ATOMIC_ACQUIRE);
    pp.want = at_stop + 4096 / 10 + 500;
    /* Best effort too: when the broker lagged (sanitizers, load), the
     * publisher's window may already be full of unconfirmed publishes at the
     * stop, and those are what the kill cuts; either way some are in flight. */
    bool streamed = h_wait(written_past, &pp, 10000);
    int at_kill2 = __atomic_load_n(written, __ATOMIC_ACQUIRE);
    h_kill(&env, broker, SIGKILL);
    if (!streamed)
        fprintf(stderr, "flow: the publisher took %d lines with the broker stopped (its window was full)\n",
                at_kill2 - at_stop);
    cr_assert_lt(h_wait_exit(writer, 0), 0, "the whole input was written before the second kill");
    cr_assert_lt(h_wait_exit(pub, 0), 0, "the publisher finished before the second kill");
    h_broker(&env);
    cr_assert_eq(h_wait_exit(writer, 60000), 0, "the writer of the publisher's stdin failed");
    int st = h_wait_exit(pub, 60000);
    forget(&env, pub);
    char *perr = h_read(h_path(&env, "publisher.err"), NULL);
    cr_assert_eq(st, 0, "the publisher exited %d through the restart: %s", st, perr ? perr : "");
    free(perr);
    munmap((void *)written, sizeof(int));

    char **ids;
    size_t total;
    size_t nids = h_lines_sorted(h_path(&env, "publisher.out"), &ids, &total);
    cr_assert_eq(total, (size_t)n, "the publisher printed %zu ids for %d lines", total, n);
    cr_assert_eq(nids, (size_t)n, "the publisher printed %zu distinct ids for %d lines", nids, n);

    h_worker(&env, NULL, 16);
    h_wait_lines(h_path(&env, "seen.txt"), (size_t)n, 60000);
    sub_ref sr = { &env, "t", "rec" };
    cr_assert(h_wait(sub_drained, &sr, 30000), "the queue never drained");

    /* Every id printed was handled, and nothing else was: a line stored twice
     * (once before the kill, unconfirmed, and again on the re-send) would be
     * a second event with its own id, handled but never printed. Runs of the
     * same id more than once are at-least-once, allowed. */
    char **seen;
    size_t seen_total;
    size_t nseen = h_lines_sorted(h_path(&env, "seen.txt"), &seen, &seen_total);
    size_t i = 0, j = 0, missing = 0, extra = 0;
    const char *first_missing = NULL, *first_extra = NULL;
    while (i < nids || j < nseen) {
        int c = i == nids ? 1 : j == nseen ? -1 : strcmp(ids[i], seen[j]);
        if (c == 0) { i++; j++; }
        else if (c < 0) { if (!missing++) first_missing = ids[i]; i++; }
        else { if (!extra++) first_extra = seen[j]; j++; }
    }
    cr_assert_eq(missing, 0, "%zu confirmed ids never handled (e.g. %s)", missing, first_missing);
    cr_assert_eq(extra, 0, "%zu events handled that the publisher was never given as ids — stored twice (e.g. %s)",
                 extra, first_extra);
    cr_assert_eq(nseen, (size_t)n, "%zu distinct events handled for %d input lines", nseen, n);
    /* Ids are PRODUCER-SEQ, so a re-send stored again would carry the same id
     * as the original: the broker's count shows it. No worker died after the
     * restart, so every stored delivery was acked exactly once. */
    long succeeded = h_sub_stat(&env, "t", "rec", "succeeded");
    cr_assert_eq(succeeded, n, "%ld deliveries acked for %d input lines", succeeded, n);
    fprintf(stderr, "flow: kills -9 at %d and %d lines written (%zu ids printed at the first); %zu runs for %d events\n",
            at_kill1, at_kill2, printed_before, seen_total, n);
    h_free_lines(ids, nids);
    h_free_lines(seen, nseen);
}

/* ---- 4. max_backlog -------------------------------------------------------- */

Test(flow, max_backlog_throttles_publishes_until_drained)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"examples/handlers/libcount.so\"; symbol = \"count\"; };\n"
             "   env = { COUNT_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n",
             h_path(&env, "seen.txt"));
    h_config_broker(&env, "os", "max_backlog = 1000;", body);
    h_broker(&env);

    /* 1,001 lines pipelined: the broker takes exactly 1,000 */
    h_write_lines(h_path(&env, "in.txt"), 1001, "b-%d");
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, h_path(&env, "in.txt"), &out, &err, "bin/herald-publish", "--broker", env.pub, "--lines",
                   "t", NULL);
    h_write(h_path(&env, "ids.txt"), out);
    cr_assert_eq(rc, 1, "1,001 publishes over max_backlog 1000: exit %d, stderr %s", rc, err);
    /* one output line per input line: 1,000 ids, then line 1,001's ERROR */
    cr_assert_eq(h_count_lines(h_path(&env, "ids.txt")), 1001, "%zu output lines for 1,001 input lines",
                 h_count_lines(h_path(&env, "ids.txt")));
    const char *last = strstr(out, "\nERROR ");
    cr_assert(last && strstr(last, "throttled") && strchr(last + 1, '\n') == out + strlen(out) - 1 &&
              !strstr(last + 2, "ERROR "), "the last output line is not line 1,001's ERROR: %.200s", last ? last : out);
    cr_assert(strstr(err, "LINE 1001:") && strstr(err, "throttled"), "stderr: %s", err);
    free(out);
    free(err);
    cr_assert_eq(h_sub_stat(&env, "t", "rec", "ready"), 1000);

    /* one more, on its own */
    rc = publish("t", "over", NULL, &err, NULL, NULL, NULL, NULL);
    cr_assert_eq(rc, 1, "a publish over max_backlog: exit %d", rc);
    cr_assert(strstr(err, "throttled"), "stderr: %s", err);
    cr_assert(strchr(err, '\n') == err + strlen(err) - 1, "the refusal is not one line: %s", err);
    free(err);
    cr_assert_eq(h_sub_stat(&env, "t", "rec", "ready"), 1000);

    h_worker(&env, NULL, 8);
    sub_ref sr = { &env, "t", "rec" };
    cr_assert(h_wait(sub_drained, &sr, 30000), "the worker never drained the queue");
    char id[128];
    rc = publish("t", "after", id, &err, NULL, NULL, NULL, NULL);
    cr_assert_eq(rc, 0, "publish after the drain: %s", err);
    free(err);
    id_in_file f = { h_path(&env, "seen.txt"), id };
    cr_assert(h_wait(has_id, &f, 15000), "the publish after the drain was never handled");
    cr_assert_eq(h_count_lines(f.path), 1001);
}

/* ---- 5. SIGHUP reload rules ------------------------------------------------ */

static void write_reload_config(h_env *e, bool drop_sub, bool add_late)
{
    char body[2048];
    snprintf(body, sizeof body,
             "functions = (\n"
             " { name = \"keep_fn\"; native = { library = \"examples/handlers/libcount.so\"; symbol = \"count\"; };\n"
             "   env = { COUNT_FILE = \"%s\"; }; },\n"
             " { name = \"drop_fn\"; native = { library = \"examples/handlers/libcount.so\"; symbol = \"count\"; };\n"
             "   env = { COUNT_FILE = \"%s\"; }; }%s%s%s );\n"
             "topics = ( { name = \"news\"; subscriptions = ( { function = \"keep_fn\"; }%s%s ); } );\n",
             h_path(e, "keep.txt"), h_path(e, "drop.txt"),
             add_late ? ",\n { name = \"late_fn\"; native = { library = \"examples/handlers/libcount.so\"; "
                        "symbol = \"count\"; };\n   env = { COUNT_FILE = \""
                      : "",
             add_late ? h_path(e, "late.txt") : "", add_late ? "\"; }; }" : "",
             drop_sub ? "" : ", { function = \"drop_fn\"; }", add_late ? ", { function = \"late_fn\"; }" : "");
    h_config(e, "os", body);
}

Test(flow, sighup_refuses_removing_a_busy_subscription_and_applies_an_added_one)
{
    write_reload_config(&env, false, false);
    pid_t broker = h_broker(&env);
    char e1[128], e2[128], e3[128];
    cr_assert_eq(publish("news", "one", e1, NULL, NULL, NULL, NULL, NULL), 0);
    cr_assert_eq(h_sub_stat(&env, "news", "drop_fn", "ready"), 1);

    /* removing news → drop_fn, which has a queued delivery: refused */
    write_reload_config(&env, true, false);
    kill(broker, SIGHUP);
    file_has refused = { h_path(&env, "broker.err"), "refused" };
    cr_assert(h_wait(file_contains, &refused, 10000), "no refusal logged for a reload removing a busy subscription");
    char *log = h_read(refused.path, NULL);
    char *line = strstr(log, "refused");
    while (line > log && line[-1] != '\n') line--;
    char *eol = strchr(line, '\n');
    if (eol) *eol = 0;
    cr_assert(strstr(line, "drop_fn") && strstr(line, "news"), "the refusal does not name the subscription: %s", line);
    free(log);
    cr_assert_eq(h_wait_exit(broker, 0), -1, "the broker died on a refused reload");

    /* the old config keeps running: both subscriptions get new events */
    cr_assert_eq(publish("news", "two", e2, NULL, NULL, NULL, NULL, NULL), 0);
    cr_assert_eq(h_sub_stat(&env, "news", "drop_fn", "ready"), 2, "drop_fn's queue after the refused reload");
    h_worker(&env, NULL, 4);
    id_in_file k1 = { h_path(&env, "keep.txt"), e1 }, k2 = { h_path(&env, "keep.txt"), e2 };
    id_in_file d1 = { h_path(&env, "drop.txt"), e1 }, d2 = { h_path(&env, "drop.txt"), e2 };
    cr_assert(h_wait(has_id, &k1, 15000) && h_wait(has_id, &k2, 15000), "keep_fn missed an event");
    cr_assert(h_wait(has_id, &d1, 15000) && h_wait(has_id, &d2, 15000),
              "drop_fn missed an event after its removal was refused");

    /* a valid reload: a new function subscribed to the topic */
    write_reload_config(&env, false, true);
    kill(broker, SIGHUP);
    file_has reloaded = { h_path(&env, "broker.err"), "reloaded" };
    cr_assert(h_wait(file_contains, &reloaded, 10000), "no reload logged for a valid SIGHUP");
    cr_assert_eq(publish("news", "three", e3, NULL, NULL, NULL, NULL, NULL), 0);
    id_in_file l3 = { h_path(&env, "late.txt"), e3 };
    cr_assert(h_wait(has_id, &l3, 15000), "the subscription added by SIGHUP never got a new event");
    id_in_file k3 = { h_path(&env, "keep.txt"), e3 }, d3 = { h_path(&env, "drop.txt"), e3 };
    cr_assert(h_wait(has_id, &k3, 15000) && h_wait(has_id, &d3, 15000), "an old subscription missed an event");
    cr_assert_eq(h_count_lines(l3.path), 1, "the added subscription got events from before it existed");
}

/* The broker started without subscription t2 → rec while the database still
 * held its rows (ready and delayed); a SIGHUP adds it back: its rows are
 * counted (a reload removing it again is refused) and each runs once. */
static void write_t2_config(bool with_t2)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"build/tests/handlers/librel_record.so\";"
             " symbol = \"record\"; }; env = { RECORD_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); }%s );\n",
             h_path(&env, "record.txt"), with_t2 ? ", { name = \"t2\"; subscriptions = ( { function = \"rec\"; } ); }" : "");
    h_config(&env, "os", body);
}

Test(flow, a_subscription_added_back_by_sighup_counts_and_runs_its_old_rows_once)
{
    write_t2_config(true);
    pid_t broker = h_broker(&env);
    char ids[5][128];
    for (int i = 0; i < 5; i++)
        cr_assert_eq(publish("t2", "old", ids[i], NULL, i < 2 ? NULL : "--delay", i < 2 ? NULL : "2", NULL, NULL), 0);
    cr_assert_eq(h_signal_exit(&env, broker, SIGTERM, 15000), 0);

    write_t2_config(false);
    broker = h_broker(&env);
    write_t2_config(true);
    kill(broker, SIGHUP);
    file_has reloaded = { h_path(&env, "broker.err"), "reloaded" };
    cr_assert(h_wait(file_contains, &reloaded, 10000), "no reload logged");
    h_assert_sub(&env, "t2", "rec", "ready", 2);
    h_assert_sub(&env, "t2", "rec", "delayed", 3);

    write_t2_config(false);
    kill(broker, SIGHUP);
    file_has refused = { h_path(&env, "broker.err"), "refused" };
    cr_assert(h_wait(file_contains, &refused, 10000), "removing t2 → rec with 5 rows was not refused");
    cr_assert_eq(h_wait_exit(broker, 0), -1, "the broker died");

    h_worker(&env, NULL, 4);
    h_wait_lines(h_path(&env, "record.txt"), 5, 20000);
    h_wait_sub(&env, "t2", "rec", "delayed", 0, 10000);
    h_wait_sub(&env, "t2", "rec", "ready", 0, 10000);
    h_assert_sub(&env, "t2", "rec", "succeeded", 5);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(lines_with_id(h_path(&env, "record.txt"), ids[i]), 1, "%s ran %zu times", ids[i],
                     lines_with_id(h_path(&env, "record.txt"), ids[i]));
    cr_assert_eq(h_count_lines(h_path(&env, "record.txt")), 5);
}

/* Message rows in the database (read-only, beside the running broker). */
static long db_messages(void)
{
    char path[600];
    snprintf(path, sizeof path, "%s/data/herald.db", env.dir);
    sqlite3 *db = NULL;
    long n = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        sqlite3_busy_timeout(db, 5000);
        if (sqlite3_prepare_v2(db, "SELECT count(*) FROM messages", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return n;
}

static bool few_messages(void *arg)
{
    long n = db_messages();
    return n >= 0 && n <= *(long *)arg;
}

/* A subscription no worker serves holds one delivery forever; the events of
 * another topic, all handled, must not stay in the database behind it. */
Test(flow, one_delivery_that_stays_does_not_keep_later_messages_on_disk, .timeout = 120)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"build/tests/handlers/librel_record.so\";"
             " symbol = \"record\"; }; env = { RECORD_FILE = \"%s\"; }; },\n"
             "  { name = \"idle\"; native = { library = \"build/tests/handlers/librel_record.so\";"
             " symbol = \"record\"; }; env = { RECORD_FILE = \"/dev/null\"; }; } );\n"
             "topics = ( { name = \"stuck\"; subscriptions = ( { function = \"idle\"; } ); },\n"
             "  { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n",
             h_path(&env, "record.txt"));
    h_config(&env, "os", body);
    h_broker(&env);
    h_start(&env, "worker", "bin/herald-worker", "--broker", env.wrk, "--functions", "rec", "--concurrency", "64",
            NULL);
    char id[128];
    cr_assert_eq(publish("stuck", "forever", id, NULL, NULL, NULL, NULL, NULL), 0);
    const int n = 70000;   /* past GC_SWEEP_SPAN ids above the one that stays */
    char ids[600];
    snprintf(ids, sizeof ids, "%s", h_path(&env, "ids.txt"));
    h_write_lines(h_path(&env, "in.txt"), n, "m-%d");
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, h_path(&env, "in.txt"), &out, &err, "bin/herald-publish", "--broker", env.pub, "--lines", "t",
                   NULL);
    cr_assert_eq(rc, 0, "herald-publish --lines: exit %d: %.300s", rc, err ? err : "");
    free(out);
    free(err);
    h_wait_lines(h_path(&env, "record.txt"), (size_t)n, 60000);
    h_wait_sub(&env, "t", "rec", "ready", 0, 20000);
    h_assert_sub(&env, "stuck", "idle", "ready", 1);
    long want = 10;   /* the one that stays, and a few the sweep has not reached again */
    cr_assert(h_wait(few_messages, &want, 30000), "%ld message rows stay on disk behind one stuck delivery",
              db_messages());
}
