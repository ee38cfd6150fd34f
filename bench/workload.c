/* workload.c — one run of one workload, from an empty temp dir to a checked
 * result.
 *
 * A run: temp dir + shared file + config → broker (ready when `heraldctl
 * stats` answers) → workers (ready when `heraldctl workers` lists them) →
 * CPU baseline → the producer process publishes N events with libherald →
 * wait until every (subscription, event) pair was handled → CPU snapshot →
 * settle (the broker shows nothing ready or in flight) → stop workers, then
 * the broker, by PID → count missing and duplicate pairs → remove everything.
 * B1 publishes with no workers, restarts the broker, then drains with two.
 * X1, X2e (exec) and X2, X3 (runtime) count their handler's log lines
 * instead: one message id per run, matched against the confirmed ids.
 *
 * Figures (the same definitions as ../shared/peers/src/harness.c):
 *   publish ev/s   N / (just before the first publish → every publish confirmed)
 *   e2e /s         N·subs / (just before the first publish → the handler run
 *                  that completed the last new pair)
 *   latency        handler start − the stamp taken just before the publish call
 * The producer is its own process, forked before any ZeroMQ context exists.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <herald.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_SUBS 4
#define MAX_WORKERS 4

typedef struct {
    bench_shm *h;               /* the mapping (header first) */
    size_t len;                 /* mapped bytes */
    char path[128];             /* /dev/shm/herald-bench-PID-SEQ-NAME; "" once removed */
    uint8_t *seen;              /* seen[sub * n + seq]: handler runs */
    uint64_t *lat;              /* lat_ns[seq] (W3), else NULL */
    char (*ids)[BENCH_ID_MAX];  /* confirmed message ids by seq (exec, runtime), else NULL */
} shm_file;

/* Everything a run started, so that one cleanup path stops it all. */
typedef struct {
    const bench_env *e;
    const workload *w;
    run_paths p;
    shm_file s;
    pid_t broker, producer;
    pid_t workers[MAX_WORKERS];
    int nworkers;
    int producer_status;        /* wait status once reaped; -1 before */
    double producer_cpu;        /* its user+sys seconds */
    char fns[64];               /* the functions, comma-separated (worker --functions) */
    const char *sub_fn[MAX_SUBS];   /* function of subscription K */
} run_ctx;

/* Marks the run failed; the first reason is the one reported. */
__attribute__((format(printf, 2, 3))) static void fail(result *r, const char *fmt, ...)
{
    if (!r->why[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->why, sizeof r->why, fmt, ap);
        va_end(ap);
    }
    r->ok = false;
}

/* Exec and runtime handlers prove each run by the message id they log. */
static bool uses_ids(const workload *w) { return w->kind == KIND_EXEC || w->kind == KIND_RUNTIME; }

/* Python and Node handlers get a JSON event, as a Lambda function would. */
static bool json_events(const workload *w) { return uses_ids(w) && w->lang != LANG_SH; }

/* --- the shared file ------------------------------------------------------- */

static int shm_create(shm_file *f, const workload *w)
{
    static int seq;
    snprintf(f->path, sizeof f->path, "/dev/shm/herald-bench-%d-%d-%s", (int)getpid(), ++seq, w->name);
    int64_t pairs = w->n * w->subs;
    int64_t seen_off = BENCH_HDR, lat_off = 0, ids_off = 0;
    int64_t size = seen_off + ((pairs + 7) & ~(int64_t)7);
    if (w->kind == KIND_LATENCY) {
        lat_off = size;
        size += w->n * 8;
    }
    if (uses_ids(w)) {
        ids_off = size;
        size += w->n * BENCH_ID_MAX;
    }
    int fd = open(f->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, size) != 0) {
        fprintf(stderr, "herald-bench: %s: %s\n", f->path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(f->path);
        }
        f->path[0] = '\0';
        return -1;
    }
    void *base = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED) {
        unlink(f->path);
        f->path[0] = '\0';
        return -1;
    }
    f->h = base;
    f->len = (size_t)size;
    f->h->n = w->n;
    f->h->subs = w->subs;
    f->h->expected = pairs;
    f->h->seen_off = seen_off;
    f->h->lat_off = lat_off;
    f->h->ids_off = ids_off;
    f->h->size = size;
    f->seen = (uint8_t *)base + seen_off;
    f->lat = lat_off ? (uint64_t *)((char *)base + lat_off) : NULL;
    f->ids = ids_off ? (char (*)[BENCH_ID_MAX])((char *)base + ids_off) : NULL;
    __atomic_store_n(&f->h->magic, BENCH_MAGIC, __ATOMIC_RELEASE);   /* last: initialised */
    return 0;
}

static void shm_destroy(shm_file *f)
{
    if (f->h)
        munmap(f->h, f->len);
    f->h = NULL;
    if (f->path[0])
        unlink(f->path);
    f->path[0] = '\0';
}

/* --- the producer (a child process) ---------------------------------------- */

static bench_shm *P_h;              /* the producer's view of the shared file */
static char (*P_ids)[BENCH_ID_MAX];

static void confirmed(void *arg, int status, const char *id)
{
    if (status != 0) {
        __atomic_fetch_add(&P_h->pub_errors, 1, __ATOMIC_RELAXED);
        return;
    }
    P_h->pub_ok++;
    if (P_ids)
        snprintf(P_ids[(uintptr_t)arg], BENCH_ID_MAX, "%s", id);
}

/* {"seq":N,"t":STAMP,"pad":"xx…"}, padded to `size` bytes when it can be. */
static size_t json_payload(char *buf, size_t cap, int size, uint64_t seq, uint64_t stamp)
{
    int n = snprintf(buf, cap, "{\"seq\":%llu,\"t\":%llu,\"pad\":\"", (unsigned long long)seq,
                     (unsigned long long)stamp);
    int pad = size - n - 2 > 0 ? size - n - 2 : 0;
    memset(buf + n, 'x', (size_t)pad);
    memcpy(buf + n + pad, "\"}", 2);
    return (size_t)(n + pad + 2);
}

static void pace(uint64_t t0, int64_t i, double rate)
{
    uint64_t t = t0 + (uint64_t)((double)i * 1e9 / rate);
    struct timespec ts = { (time_t)(t / 1000000000ull), (long)(t % 1000000000ull) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
}

static int produce(const run_ctx *c)
{
    const workload *w = c->w;
    P_h = c->s.h;
    P_ids = c->s.ids;
    herald_options o = { .endpoint = c->p.pub_ep, .timeout_ms = 60000, .window = w->window };
    herald_client *hc = herald_connect(&o);
    if (!hc) {
        fprintf(stderr, "herald-bench: producer: herald_connect: %s\n", herald_last_error(NULL));
        return 1;
    }
    size_t cap = (size_t)w->payload + 64;   /* a JSON event's head may exceed a tiny payload */
    char *buf = malloc(cap);
    if (!buf)
        return 1;
    memset(buf, 'x', cap);
    bool json = json_events(w);
    int rc = 0;
    uint64_t t0 = mono_ns();
    P_h->t_pub_first_ns = t0;
    for (int64_t i = 0; i < w->n && !rc; i++) {
        if (w->rate > 0)
            pace(t0, i, w->rate);
        uint64_t seq = (uint64_t)i, stamp = mono_ns();
        size_t len = (size_t)w->payload;
        if (json) {
            len = json_payload(buf, cap, w->payload, seq, stamp);
        } else {
            memcpy(buf, &seq, 8);
            memcpy(buf + 8, &stamp, 8);
        }
        if (w->rate > 0) {   /* W3: one publish, its confirm, then the next */
            char id[HERALD_ID_MAX];
            rc = herald_publish(hc, "bench", buf, len, NULL, id);
            if (rc == 0) {
                P_h->pub_ok++;
                if (P_ids)
                    snprintf(P_ids[i], BENCH_ID_MAX, "%s", id);
            }
        } else {
            rc = herald_publish_async(hc, "bench", buf, len, NULL, confirmed,
                                      (void *)(uintptr_t)i);
        }
        if (rc)
            fprintf(stderr, "herald-bench: producer: publish %lld: %s %s\n", (long long)i,
                    herald_strerror(rc), herald_last_error(hc));
    }
    int frc = herald_flush(hc, 120000);
    P_h->t_pub_done_ns = mono_ns();
    if (frc)
        fprintf(stderr, "herald-bench: producer: flush: %s\n", herald_strerror(frc));
    herald_close(&hc);
    free(buf);
    return rc || frc || P_h->pub_errors ? 1 : 0;
}

static pid_t producer_start(run_ctx *c)
{
    c->producer_status = -1;
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGINT, SIG_IGN);    /* the bench stops us by PID */
        _exit(produce(c));
    }
    c->producer = pid;
    return pid;
}

/* Reaps the producer if it exited (block: wait for it). 1 once reaped. */
static int producer_reap(run_ctx *c, bool block)
{
    if (c->producer <= 0)
        return 1;
    int st;
    struct rusage ru;
    pid_t w = wait4(c->producer, &st, block ? 0 : WNOHANG, &ru);
    if (w != c->producer)
        return 0;
    c->producer_status = st;
    c->producer_cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                      (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    c->producer = 0;
    return 1;
}

/* --- starting and stopping ------------------------------------------------- */

static int start_workers(run_ctx *c, int n, result *r)
{
    char log[320];
    for (int i = 0; i < n; i++) {
        snprintf(log, sizeof log, "%s/worker%d.log", c->p.dir, i);
        c->workers[i] = worker_start(c->e, &c->p, c->fns, c->w->inflight, log);
        if (c->workers[i] < 0) {
            fail(r, "cannot start a worker");
            return -1;
        }
        c->nworkers = i + 1;
    }
    if (workers_wait(c->e, &c->p, c->workers, n, 15.0) != 0) {
        fail(r, "workers did not register");
        return -1;
    }
    return 0;
}

/* A process that outlived the worker that owned it is a product bug: report
 * it, then kill that PID. */
static void check_leftovers(const tree_ticks *t, result *r)
{
    for (int i = 0; i < t->nlaunchers; i++) {
        char path[64], comm[64] = "";
        snprintf(path, sizeof path, "/proc/%d/comm", (int)t->launchers[i]);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        if (fgets(comm, sizeof comm, f) && !strncmp(comm, "herald-launcher", 15)) {
            fprintf(stderr, "herald-bench: launcher %d outlived its worker: killing it\n",
                    (int)t->launchers[i]);
            kill(t->launchers[i], SIGKILL);
            fail(r, "a launcher outlived its worker");
        }
        fclose(f);
    }
}

static void stop_all(run_ctx *c, const tree_ticks *last, result *r)
{
    if (c->producer > 0) {
        kill(c->producer, SIGTERM);
        producer_reap(c, true);
    }
    /* workers first, so they finish what they hold while the broker is up */
    for (int i = 0; i < c->nworkers; i++) {
        int st = proc_stop(c->workers[i], SIGTERM, 10.0, NULL);
        if (st > 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
            fail(r, "a worker exited badly on SIGTERM");
    }
    c->nworkers = 0;
    if (last) {
        sleep_ms(100);
        check_leftovers(last, r);
    }
    if (c->broker > 0) {
        int st = proc_stop(c->broker, SIGTERM, 30.0, NULL);
        if (st != 0)
            fail(r, "the broker exited badly on SIGTERM");
    }
    c->broker = 0;
}

/* --- waiting and checking -------------------------------------------------- */

/* Waits until done() or the deadline; fails early when a process died or
 * the producer failed. For exec rows it also drains exitstats. 0 when done. */
typedef bool done_fn(run_ctx *c, void *arg);

static int wait_for(run_ctx *c, done_fn *done, void *arg, double timeout_s, exitstats *xs, result *r)
{
    uint64_t t0 = mono_ns(), producer_failed_at = 0;
    while (!done(c, arg)) {
        if (bench_interrupted) {
            fail(r, "interrupted");
            return -1;
        }
        if (since_s(t0) > timeout_s) {
            fail(r, "timeout: not everything was handled within %.0f s", timeout_s);
            return -1;
        }
        if (c->broker > 0 && proc_exited(c->broker)) {
            c->broker = 0;
            fail(r, "the broker died");
            return -1;
        }
        for (int i = 0; i < c->nworkers; i++)
            if (proc_exited(c->workers[i])) {
                fail(r, "a worker died");
                c->workers[i] = 0;
                return -1;
            }
        if (c->producer > 0 && producer_reap(c, false) && c->producer_status != 0)
            producer_failed_at = mono_ns();
        if (producer_failed_at && since_s(producer_failed_at) > 2.0) {
            fail(r, "the producer failed");
            return -1;
        }
        if (xs) {
            struct pollfd pfd = { exitstats_fd(xs), POLLIN, 0 };
            poll(&pfd, 1, 2);
            exitstats_drain(xs);
        } else {
            sleep_ms(2);
        }
    }
    return 0;
}

static bool all_handled(run_ctx *c, void *arg)
{
    (void)arg;
    return __atomic_load_n(&c->s.h->unique, __ATOMIC_ACQUIRE) >= c->s.h->expected;
}

/* Exec and runtime rows: the handler appends one line per run to ids.log */
typedef struct {
    char path[320];
    int fd;
    int64_t lines;
    uint64_t t_half_ns;         /* when the bench saw line n/2 */
    uint64_t t_done_ns;         /* when the bench saw line n */
} id_log;

static bool id_lines(run_ctx *c, void *arg)
{
    id_log *l = arg;
    if (l->fd < 0)
        l->fd = open(l->path, O_RDONLY | O_CLOEXEC);
    if (l->fd >= 0) {
        char buf[65536];
        ssize_t n;
        while ((n = read(l->fd, buf, sizeof buf)) > 0)
            for (ssize_t i = 0; i < n; i++)
                l->lines += buf[i] == '\n';
    }
    if (l->lines >= c->w->n / 2 && !l->t_half_ns)
        l->t_half_ns = mono_ns();
    if (l->lines >= c->w->n && !l->t_done_ns)
        l->t_done_ns = mono_ns();
    return l->lines >= c->w->n;
}

/* Polls `heraldctl stats` until no subscription has anything ready, delayed or
 * in flight, then checks the broker's counts: every subscription succeeded
 * exactly n times, nothing failed or dead. */
static void settle_and_check(run_ctx *c, result *r)
{
    static const char *const args[] = { "stats", "--json", NULL };
    char out[16384];
    uint64_t t0 = mono_ns();
    for (;;) {
        bool quiet = ctl_run(c->e, &c->p, 2.0, args, out, sizeof out) == 0;
        for (int s = 0; quiet && s < c->w->subs; s++) {
            char key[80];
            snprintf(key, sizeof key, "\"function\":\"%s\"", c->sub_fn[s]);
            const char *at = strstr(out, key);
            quiet = at && json_int(out, at, "ready") == 0 && json_int(out, at, "inflight") == 0 &&
                    json_int(out, at, "delayed") == 0;
        }
        if (quiet)
            break;
        if (bench_interrupted || since_s(t0) > 15.0) {
            fail(r, "the broker still had deliveries ready or in flight 15 s after the last");
            return;
        }
        sleep_ms(20);
    }
    for (int s = 0; s < c->w->subs; s++) {
        char key[80];
        snprintf(key, sizeof key, "\"function\":\"%s\"", c->sub_fn[s]);
        const char *at = strstr(out, key);
        if (json_int(out, at, "succeeded") != c->w->n || json_int(out, at, "dead") != 0 ||
            json_int(out, at, "failed") != 0)
            fail(r, "broker counts of %s: succeeded %lld of %lld, or failures", c->sub_fn[s],
                 (long long)json_int(out, at, "succeeded"), (long long)c->w->n);
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void count_pairs(run_ctx *c, result *r)
{
    const bench_shm *h = c->s.h;
    for (int64_t i = 0; i < h->expected; i++) {
        if (c->s.seen[i] == 0)
            r->missing++;
        else
            r->dup += c->s.seen[i] - 1;
    }
    r->bad = h->bad;
    if (!c->s.lat)
        return;
    uint64_t *v = malloc((size_t)h->n * sizeof *v);
    int64_t k = 0;
    if (!v)
        return;
    for (int64_t i = 0; i < h->n; i++)
        if (c->s.seen[i])
            v[k++] = c->s.lat[i];
    qsort(v, (size_t)k, sizeof *v, cmp_u64);
    if (k) {
        r->p50_us = (double)v[(int64_t)(0.50 * (double)(k - 1))] / 1e3;
        r->p99_us = (double)v[(int64_t)(0.99 * (double)(k - 1))] / 1e3;
        r->p999_us = (double)v[(int64_t)(0.999 * (double)(k - 1))] / 1e3;
        r->max_us = (double)v[k - 1] / 1e3;
    }
    free(v);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Exec and runtime rows: the ids the producer had confirmed against the
 * lines of ids.log. A line that is no confirmed id is `bad`. */
static void count_ids(run_ctx *c, const id_log *l, result *r)
{
    int64_t n = c->w->n;
    FILE *f = fopen(l->path, "re");
    char **ids = malloc((size_t)n * sizeof *ids), **got = NULL;
    size_t ngot = 0, cap = 0;
    char line[256];
    if (!ids) {
        if (f)
            fclose(f);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        ids[i] = c->s.ids[i];
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (ngot == cap) {
            cap = cap ? 2 * cap : 4096;
            char **g = realloc(got, cap * sizeof *got);
            if (!g)
                break;
            got = g;
        }
        got[ngot++] = strdup(line);
    }
    if (f)
        fclose(f);
    qsort(ids, (size_t)n, sizeof *ids, cmp_str);
    qsort(got, ngot, sizeof *got, cmp_str);
    size_t j = 0;
    for (int64_t i = 0; i < n; i++) {
        while (j < ngot && strcmp(got[j], ids[i]) < 0)
            r->bad++, j++;                  /* a line that is no confirmed id */
        size_t k = 0;
        while (j < ngot && !strcmp(got[j], ids[i]))
            k++, j++;
        if (!ids[i][0] || k == 0)
            r->missing++;
        else
            r->dup += (int64_t)k - 1;
    }
    r->bad += (int64_t)(ngot - j);
    for (size_t i = 0; i < ngot; i++)
        free(got[i]);
    free(got);
    free(ids);
}

/* --- CPU ------------------------------------------------------------------- */

typedef struct {
    int64_t broker;
    tree_ticks tree;
    int64_t busy;           /* the machine's non-idle ticks */
    double self_s;          /* this process's CPU (the exitstats listener's share) */
} cpu_snap;

static void snap(const run_ctx *c, cpu_snap *s)
{
    s->broker = c->broker > 0 ? proc_self_ticks(c->broker) : 0;
    proc_tree_ticks(c->workers, c->nworkers, &s->tree);
    s->busy = proc_busy_ticks();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    s->self_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                ru.ru_stime.tv_usec / 1e6;
}

/* X1: a handler lives about a millisecond, and its supervisor, on the other
 * CPU, reaps it at once — often before the scheduler has charged the
 * handler's last run, so the supervisor's cutime misses most of it (measured:
 * 0.1–0.2 ms per invocation by /proc, while /proc/stat showed ~0.9 ms of busy
 * machine per invocation; a CPU-heavy handler is charged in full). When the
 * /proc sum comes out lower, exec is the machine's busy time over the window
 * less every other process measured — which also charges exec with the
 * kernel threads' work (and anything else running then). */
static void exec_by_difference(const cpu_snap *a, const cpu_snap *b, double producer_s, cpu_split *d)
{
    if (a->busy < 0 || b->busy < 0)
        return;
    double rest = ticks_s(b->busy - a->busy) - d->broker - d->worker - d->launcher - d->hosts - producer_s -
                  (b->self_s - a->self_s);
    if (rest > d->exec) {
        d->exec = rest;
        d->exec_by_difference = true;
    }
}

static void cpu_delta(const cpu_snap *a, const cpu_snap *b, cpu_split *d)
{
    d->broker += ticks_s(b->broker - a->broker);
    d->worker += ticks_s(b->tree.worker - a->tree.worker);
    d->launcher += ticks_s(b->tree.launcher - a->tree.launcher);
    d->hosts += ticks_s(b->tree.hosts - a->tree.hosts);
    d->exec += ticks_s(b->tree.exec - a->tree.exec);
}

/* Runtime rows: the supervisors and their processes are alive over the whole
 * window (started on demand inside it), so /proc's figures are exact. */
static void cpu_runtime(const cpu_snap *a, const cpu_snap *b, cpu_split *d)
{
    d->supervisors = ticks_s(b->tree.rtsup - a->tree.rtsup);
    d->handlers = ticks_s(b->tree.rtproc - a->tree.rtproc);
    d->split = true;
}

/* Runtime rows: the function's cold starts, mean init time and warm
 * invocations from `heraldctl stats`. Workers report them every heartbeat,
 * so poll (a few seconds at most) until every event is accounted for:
 * each event went either to a fresh process (a cold start) or a warm one. */
static void runtime_stats(run_ctx *c, result *r)
{
    static const char *const args[] = { "stats", "--json", NULL };
    char out[16384], key[80];
    snprintf(key, sizeof key, "\"name\":\"%s\"", c->sub_fn[0]);
    uint64_t t0 = mono_ns();
    while (!bench_interrupted && since_s(t0) < 5.0) {
        if (ctl_run(c->e, &c->p, 2.0, args, out, sizeof out) == 0) {
            const char *fns = strstr(out, "\"functions\":");
            const char *at = fns ? strstr(fns, key) : NULL;
            if (at) {
                r->cold_starts = json_int(out, at, "cold_starts");
                r->init_ms = json_num(out, at, "init_ms");
                r->warm = json_int(out, at, "warm");
                if (r->cold_starts + r->warm >= c->w->n)
                    return;
            }
        }
        sleep_ms(50);
    }
}

/* --- --attach: a profiler over the measured window ------------------------- */

static pid_t attach_start(const run_ctx *c, const char *phase, int run)
{
    if (!c->e->attach)
        return 0;
    char pids[64] = "", tag[64], bp[16];
    for (int i = 0; i < c->nworkers; i++)
        snprintf(pids + strlen(pids), sizeof pids - strlen(pids), "%s%d", i ? "," : "", (int)c->workers[i]);
    snprintf(tag, sizeof tag, "%s-%s-%s%d", c->w->name, c->w->durability, phase, run);
    snprintf(bp, sizeof bp, "%d", (int)c->broker);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("BROKER_PID", bp, 1);
        setenv("WORKER_PIDS", pids, 1);
        setenv("RUN_TAG", tag, 1);
        setenv("RUN_DIR", c->p.dir, 1);
        setpgid(0, 0);
        signal(SIGINT, SIG_DFL);
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "exec %s", c->e->attach);   /* the PID we signal is the tool's */
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    sleep_ms(300);   /* let the tool attach before the window opens */
    return pid;
}

static void attach_stop(pid_t pid)
{
    if (pid > 0)
        proc_stop(pid, SIGINT, 60.0, NULL);
}

/* --- the workloads --------------------------------------------------------- */

static double rate(int64_t n, uint64_t t0, uint64_t t1) { return t1 > t0 ? (double)n * 1e9 / (double)(t1 - t0) : 0; }

/* W1, W2, W3, X1, X2, X2e, X3: workers up, publish, wait, check */
static int run_flow(run_ctx *c, int run, result *r)
{
    const workload *w = c->w;
    id_log xl = { .fd = -1 };
    exitstats *xs = NULL;
    cpu_snap a, b;
    memset(&b, 0, sizeof b);
    bool measured = false;
    snprintf(xl.path, sizeof xl.path, "%s/ids.log", c->p.dir);

    if (start_workers(c, w->workers, r) != 0)
        goto out;
    if (w->kind == KIND_EXEC) {
        char why[160];
        xs = exitstats_open(why, sizeof why);
        if (!xs && c->e->verbose)
            fprintf(stderr, "herald-bench: %s supervisors/handlers split unavailable: %s\n", w->name, why);
    }
    pid_t tool = attach_start(c, "", run);
    snap(c, &a);
    if (producer_start(c) < 0) {
        fail(r, "fork");
        attach_stop(tool);
        goto out;
    }
    int rc = uses_ids(w) ? wait_for(c, id_lines, &xl, w->timeout_s, xs, r)
                         : wait_for(c, all_handled, NULL, w->timeout_s, NULL, r);
    snap(c, &b);
    attach_stop(tool);
    measured = rc == 0;
    if (rc == 0) {
        producer_reap(c, true);
        if (c->producer_status != 0)
            fail(r, "the producer failed");
        settle_and_check(c, r);
        if (w->kind == KIND_RUNTIME)
            runtime_stats(c, r);
    }
out:
    stop_all(c, measured ? &b.tree : NULL, r);
    const bench_shm *h = c->s.h;
    r->pub_errors = h->pub_errors;
    r->cpu.producer = c->producer_cpu;
    if (measured) {
        cpu_delta(&a, &b, &r->cpu);
        r->pub_rate = rate(w->n, h->t_pub_first_ns, h->t_pub_done_ns);
        if (w->kind == KIND_EXEC) {
            exec_by_difference(&a, &b, r->cpu.producer, &r->cpu);
            r->e2e_rate = rate(w->n, h->t_pub_first_ns, xl.t_done_ns);
            double sup = 0, hand = 0;
            if (xs && b.tree.nlaunchers &&
                exitstats_split(xs, b.tree.launchers, b.tree.nlaunchers, &sup, &r->cpu.nsupervisors, &hand,
                                &r->cpu.nhandlers) == 0 && sup + hand > 0) {
                /* the proportion from the exit records, the total from /proc */
                r->cpu.split = true;
                r->cpu.supervisors = r->cpu.exec * sup / (sup + hand);
                r->cpu.handlers = r->cpu.exec * hand / (sup + hand);
                r->cpu.handlers_own = hand;
            }
        } else if (w->kind == KIND_RUNTIME) {
            cpu_runtime(&a, &b, &r->cpu);
            r->e2e_rate = rate(w->n, h->t_pub_first_ns, xl.t_done_ns);
            r->steady_rate = rate(w->n - w->n / 2, xl.t_half_ns, xl.t_done_ns);
        } else {
            r->e2e_rate = rate(h->expected, h->t_pub_first_ns, h->t_done_ns);
        }
        if (w->kind == KIND_LATENCY)
            r->achieved_rate = r->pub_rate;
    }
    if (uses_ids(w))
        count_ids(c, &xl, r);
    else
        count_pairs(c, r);
    if (xl.fd >= 0)
        close(xl.fd);
    exitstats_close(&xs);
    return 0;
}

/* B1: publish a backlog with no workers; restart; drain with two workers */
static int run_backlog(run_ctx *c, int run, result *r)
{
    const workload *w = c->w;
    const bench_shm *h = c->s.h;
    cpu_snap a, b;
    memset(&b, 0, sizeof b);
    bool measured = false;
    char log[320];
    snprintf(log, sizeof log, "%s/broker.log", c->p.dir);

    pid_t tool = attach_start(c, "publish", run);
    a.broker = proc_self_ticks(c->broker);
    if (producer_start(c) < 0) {
        fail(r, "fork");
        attach_stop(tool);
        goto out;
    }
    uint64_t t0 = mono_ns();
    while (!producer_reap(c, false)) {
        if (bench_interrupted || since_s(t0) > w->timeout_s || proc_exited(c->broker)) {
            fail(r, "the backlog was not published");
            attach_stop(tool);
            goto out;
        }
        sleep_ms(10);
    }
    attach_stop(tool);
    if (c->producer_status != 0) {
        fail(r, "the producer failed");
        goto out;
    }
    r->pub_rate = rate(w->n, h->t_pub_first_ns, h->t_pub_done_ns);
    r->broker_pub_cpu = ticks_s(proc_self_ticks(c->broker) - a.broker);
    r->cpu.broker += r->broker_pub_cpu;
    r->rss_mib = proc_status_mib(c->broker, "VmRSS:");
    r->hwm_mib = proc_status_mib(c->broker, "VmHWM:");
    r->db_mib = (double)dir_bytes(c->p.data_dir) / (1024.0 * 1024.0);

    /* restart: SIGTERM, wait for the exit, start again, time until it answers */
    int st = proc_stop(c->broker, SIGTERM, 60.0, &r->stop_s);
    c->broker = 0;
    if (st != 0)
        fail(r, "the broker exited badly on SIGTERM");
    c->broker = broker_start(c->e, &c->p, log, 120.0, &r->ready_s);
    if (c->broker < 0) {
        c->broker = 0;
        fail(r, "the broker did not restart");
        goto out;
    }
    r->rss_restart_mib = proc_status_mib(c->broker, "VmRSS:");
    static const char *const args[] = { "stats", "--json", NULL };
    char out[8192];
    if (ctl_run(c->e, &c->p, 5.0, args, out, sizeof out) != 0 ||
        json_int(out, strstr(out, "\"function\":\"bench0\""), "ready") != w->n)
        fail(r, "after the restart the broker did not report N ready");

    /* drain */
    snap(c, &a);
    uint64_t t_workers = mono_ns();
    if (start_workers(c, w->workers, r) != 0)
        goto out;
    tool = attach_start(c, "drain", run);
    int rc = wait_for(c, all_handled, NULL, w->timeout_s, NULL, r);
    snap(c, &b);
    attach_stop(tool);
    measured = rc == 0;
    if (rc == 0) {
        r->drain_rate = rate(h->expected, t_workers, h->t_done_ns);
        r->e2e_rate = r->drain_rate;
        settle_and_check(c, r);
    }
out:
    stop_all(c, measured ? &b.tree : NULL, r);
    r->pub_errors = h->pub_errors;
    r->cpu.producer = c->producer_cpu;
    if (measured)
        cpu_delta(&a, &b, &r->cpu);
    count_pairs(c, r);
    return 0;
}

int workload_run(const bench_env *e, const workload *w, int run, result *r)
{
    memset(r, 0, sizeof *r);
    r->ok = true;
    uint64_t t_run = mono_ns();
    run_ctx c;
    memset(&c, 0, sizeof c);
    c.e = e;
    c.w = w;
    c.producer_status = -1;
    if (w->subs < 1 || w->subs > MAX_SUBS || w->workers > MAX_WORKERS) {
        fail(r, "bad workload");
        return -1;
    }
    if (paths_new(e, &c.p) != 0) {
        fail(r, "no temp dir");
        return -1;
    }
    int ret = -1;
    if (shm_create(&c.s, w) != 0) {
        fail(r, "no shared file");
        goto out;
    }

    static const char *const names[MAX_SUBS] = { "bench0", "bench1", "bench2", "bench3" };
    static const char *const subs[MAX_SUBS] = { "0", "1", "2", "3" };
    char idlog[320], script[600], bootstrap[600];
    fn_def fns[MAX_SUBS];
    memset(fns, 0, sizeof fns);
    if (uses_ids(w)) {
        /* one function, named after the row ("x1", "x2e" …), logging ids */
        snprintf(idlog, sizeof idlog, "%s/ids.log", c.p.dir);
        snprintf(c.fns, sizeof c.fns, "%s", w->name);
        for (char *q = c.fns; *q; q++)
            *q = (char)(*q >= 'A' && *q <= 'Z' ? *q - 'A' + 'a' : *q);
        fn_def *d = &fns[0];
        *d = (fn_def){ .name = c.fns, .env_k = { "BENCH_LOG" }, .env_v = { idlog } };
        const char *interp = w->lang == LANG_NODE ? e->node : e->python;
        if (w->kind == KIND_EXEC) {
            snprintf(script, sizeof script, "%s/%s", e->root, w->handler);
            d->kind = FNK_EXEC;
            d->argv[0] = w->lang == LANG_SH ? script : interp;
            d->argv[1] = w->lang == LANG_SH ? NULL : script;
        } else {
            snprintf(bootstrap, sizeof bootstrap, "%s/examples/runtimes/%s", e->root,
                     w->lang == LANG_NODE ? "node/bootstrap.js" : "python/bootstrap.py");
            d->kind = FNK_RUNTIME;
            d->argv[0] = interp;
            d->argv[1] = bootstrap;
            d->handler = w->handler;
        }
        if (w->lang != LANG_SH && !interp[0]) {
            fail(r, "no %s on PATH", w->lang == LANG_NODE ? "node" : "python3");
            goto out;
        }
        c.sub_fn[0] = c.fns;
    } else {
        for (int s = 0; s < w->subs; s++) {
            fns[s] = (fn_def){ .name = names[s], .kind = FNK_NATIVE, .library = e->handler_so,
                               .symbol = "bench_handle", .env_k = { "BENCH_SHM", "BENCH_SUB" },
                               .env_v = { c.s.path, subs[s] } };
            c.sub_fn[s] = names[s];
            snprintf(c.fns + strlen(c.fns), sizeof c.fns - strlen(c.fns), "%s%s", s ? "," : "", names[s]);
        }
    }
    if (config_write(&c.p, w->durability, fns, w->subs) != 0) {
        fail(r, "cannot write the config");
        goto out;
    }
    char log[320];
    snprintf(log, sizeof log, "%s/broker.log", c.p.dir);
    c.broker = broker_start(e, &c.p, log, e->wrap_broker ? 300.0 : 15.0, NULL);
    if (c.broker < 0) {
        c.broker = 0;
        fail(r, "the broker did not start");
        goto out;
    }
    ret = w->kind == KIND_BACKLOG ? run_backlog(&c, run, r) : run_flow(&c, run, r);
    if (r->missing)
        fail(r, "%lld pairs never handled", (long long)r->missing);
    if (r->dup)
        fail(r, "%lld extra handler runs (duplicates)", (long long)r->dup);
    if (r->bad || r->pub_errors)
        fail(r, "%lld unplaceable handler runs, %lld publish errors", (long long)r->bad,
             (long long)r->pub_errors);
out:
    stop_all(&c, NULL, r);
    r->wall_s = since_s(t_run);
    if (!r->ok && e->verbose)
        fprintf(stderr, "herald-bench: %s run %d failed: %s (run dir %s)\n", w->name, run, r->why, c.p.dir);
    shm_destroy(&c.s);
    paths_remove(&c.p, e->keep || (!r->ok && e->verbose));
    return ret;
}
