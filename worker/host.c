/* host: a native function's host process (DESIGN §4 "native"), a fork of the launcher.
 *
 * It applies the function's env and RLIMIT_DATA, dlopens the library once,
 * finds the handler symbol, calls the optional herald_init (non-zero:
 * CH_H_INITFAIL, exit, and main refuses the function), says CH_H_READY, then
 * runs main's CH_H_JOBs in order, one at a time. Before and after each job it
 * writes its progress in its slot of the host board (runner_int.h), which is
 * how main knows which job a crash or a timeout belongs to and when to kill
 * us for overrunning; so results need not go out one by one: they are held
 * and sent together when no job is left to run or when they fill
 * HOST_HOLD_BYTES, and a small flusher thread sends them once the oldest has
 * waited HOST_HOLD_US — so results of quick jobs never wait for a slow job
 * behind them, nor die with it if it crashes. The flusher sleeps on a
 * timerfd that the main thread arms when it starts holding and disarms when
 * it sends: a batch that ends in time costs two syscalls and wakes nobody.
 * EOF from main: herald_fini, exit 0. State: the read buffer, the held results (shared with the flusher,
 * under its mutex) and the current response (output ≤ 6 MiB, error ≤ 4 KiB;
 * a larger set_output keeps only its size, for too_large_text).
 * herald_log() lines (hlog.h) are cut and rate-limited here and go out at
 * once, after the results held before them, as CH_LOG tagged with the job:
 * a handler that crashes next has still said its piece.
 * The flusher blocks every signal and has a small stack (RLIMIT_DATA counts
 * thread stacks); the handler runs on the main thread. stdout goes to stderr,
 * stdin is /dev/null. RLIMIT_DATA is skipped, with a warning, only when the
 * host already exceeds it before dlopen (a sanitizer build's shadow memory).
 */
#define _GNU_SOURCE
#include "runner_int.h"
#include "hlog.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "herald/handler.h"

#define MAX_JOB_ATTRS 256   /* attributes accepted per job (events carry ≤ 16) */

typedef struct {
    herald_response pub;    /* what the handler sees; must stay first */
    char *out;              /* set_output copy, ≤ PROTO_OUTPUT_MAX */
    size_t outlen;
    size_t over;            /* the last set_output's size when over the cap (then out is NULL); 0: none */
    char *err;              /* set_error copy (last PROTO_ERROR_TEXT_MAX bytes); NULL: none */
    const char *message_id; /* the job's, for herald_log's lines */
    uint32_t attempt;
} response;

static void log_line(herald_response *hr, const char *line);

static void set_output(herald_response *hr, const void *data, size_t len)
{
    response *r = (response *)hr;
    r->over = 0;
    if (len > PROTO_OUTPUT_MAX) {   /* the cap: nothing is kept, the size is reported */
        free(r->out);
        r->out = NULL;
        r->outlen = 0;
        r->over = len;
        return;
    }
    char *p = len ? malloc(len) : NULL;
    if (len && !p)
        return;
    if (len)
        memcpy(p, data, len);
    free(r->out);
    r->out = p;
    r->outlen = len;
}

static void set_error(herald_response *hr, const char *msg)
{
    response *r = (response *)hr;
    if (!msg)
        return;
    size_t n = strlen(msg);
    if (n > PROTO_ERROR_TEXT_MAX)
        msg += n - PROTO_ERROR_TEXT_MAX;   /* keep the end, where the cause usually is */
    char *p = strdup(msg);
    if (!p)
        return;
    free(r->err);
    r->err = p;
}

static int64_t clock_us(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* This process's VmData (what RLIMIT_DATA counts), in KiB; -1 if unknown. */
static long vm_data_kb(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (!f)
        return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmData: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

__attribute__((noreturn)) static void init_fail(int sock, const char *why)
{
    wbuf b = { 0 };
    if (chan_initfail_put(&b, why) == 0)
        launcher_write_all(sock, b.p, b.len);
    _exit(0);
}

/* Results made and not yet sent, shared by the main thread and the flusher. */
typedef struct {
    pthread_mutex_t mu;
    wbuf held;
    int64_t held_since;     /* monotonic µs when the oldest held result was made; 0: none */
    int sock;
    int tfd;                /* the flusher's alarm clock */
    bool stop;
} holder;

/* herald_log's lines: the host's rate, and where they go — into the held
 * results (so they stay in order with them) and out at once, or straight
 * to main without a flusher. */
static loglines hlines;
static holder *log_holder;
static int log_sock = -1;

static void send_held(holder *h);

static void log_line(herald_response *hr, const char *line)
{
    response *r = (response *)hr;
    if (!line || log_sock < 0)
        return;
    int64_t now = clock_us(CLOCK_MONOTONIC);
    loglines_feed(&hlines, line, strlen(line), now);
    loglines_end(&hlines, now);
    if (!hlines.nlines)
        return;   /* over the rate: counted, said with the next line or at the job's end */
    if (log_holder) {
        pthread_mutex_lock(&log_holder->mu);
        loglines_frame(&hlines, &log_holder->held, r->message_id, r->attempt);
        send_held(log_holder);   /* at once: a handler that then crashes has still said it */
        pthread_mutex_unlock(&log_holder->mu);
    } else {
        wbuf b = { 0 };
        loglines_frame(&hlines, &b, r->message_id, r->attempt);
        if (!b.failed && launcher_write_all(log_sock, b.p, b.len) < 0)
            _exit(1);   /* main is gone */
        wbuf_free(&b);
    }
}

/* Runs one job, the count-th, and appends its result to out (the caller
 * writes it). -1 if the job is malformed. */
static int run_job(wbuf *out, host_slot *slot, uint64_t count, herald_handler_fn *fn,
                   const char *function, uint32_t timeout_ms, const char *body, uint32_t n)
{
    chan_job m;
    if (!chan_job_get(body, n, &m) || m.nattrs > MAX_JOB_ATTRS)
        return -1;
    herald_handler_attr attrs[MAX_JOB_ATTRS];
    for (uint32_t i = 0; i < m.nattrs; i++) {
        attrs[i].key = chan_strs_next(&m.attr_strs);
        attrs[i].value = chan_strs_next(&m.attr_strs);
    }
    uint64_t seq = m.token;
    herald_event ev = { .function = function, .topic = m.topic, .message_id = m.message_id,
                        .attempt = (int)m.attempt, .max_attempts = (int)m.max_attempts,
                        .attrs = attrs, .nattrs = m.nattrs, .payload = m.payload, .payload_len = m.payload_len };

    response resp = { .pub = { .set_output = set_output, .set_error = set_error, .log = log_line },
                      .message_id = m.message_id, .attempt = m.attempt };
    resp.pub.worker_private = &resp;
    int64_t started_ms = clock_us(CLOCK_REALTIME) / 1000;
    ev.deadline_ms = started_ms + timeout_ms;
    int64_t t0 = clock_us(CLOCK_MONOTONIC);
    atomic_store_explicit(&slot->start_ms, t0 / 1000, memory_order_relaxed);
    atomic_store_explicit(&slot->started, count, memory_order_release);
    int rc = fn(&ev, &resp.pub);
    int64_t d = clock_us(CLOCK_MONOTONIC) - t0;
    atomic_store_explicit(&slot->done, count, memory_order_release);
    if (hlines.dropped)   /* lines it logged past the rate: counted before its result */
        loglines_frame(&hlines, out, m.message_id, m.attempt);

    proto_outcome o;
    const char *error = NULL;
    char buf[160];
    switch (rc) {
    case HERALD_OK:
        o = OUT_OK;
        if (resp.over)
            error = too_large_text(buf, resp.over);
        break;
    case HERALD_REJECT:
        o = OUT_REJECTED;
        error = resp.err ? resp.err : "handler returned HERALD_REJECT";
        break;
    case HERALD_RETRY:
        o = OUT_ERROR;
        error = resp.err ? resp.err : "handler returned HERALD_RETRY";
        break;
    default:
        o = OUT_ERROR;
        snprintf(buf, sizeof buf, "handler returned %d", rc);
        error = resp.err ? resp.err : buf;
        break;
    }
    int ret = 0;
    if (result_put(out, seq, o, started_ms, d < 0 ? 0 : d > UINT32_MAX ? UINT32_MAX : (uint32_t)d, error,
                   o == OUT_OK ? resp.out : "", o == OUT_OK ? resp.outlen : 0) != 0) {
        LOG_ERROR("host %s: out of memory writing a result", function);
        ret = -1;
    }
    free(resp.out);
    free(resp.err);
    return ret;
}


static void arm_us(holder *h, int64_t us)
{
    struct itimerspec it = { { 0, 0 }, { us / 1000000, (us % 1000000) * 1000 } };
    timerfd_settime(h->tfd, 0, &it, NULL);   /* 0 disarms */
}

/* Sends what is held; the caller holds the mutex. Main gone: exit. */
static void send_held(holder *h)
{
    if (h->held.len && launcher_write_all(h->sock, h->held.p, h->held.len) < 0)
        _exit(1);
    h->held.len = h->held.off = 0;
    h->held_since = 0;
}

static void *flusher(void *arg)
{
    holder *h = arg;
    for (;;) {
        uint64_t fired;
        if (read(h->tfd, &fired, sizeof fired) < 0 && errno != EINTR && errno != EAGAIN)
            return NULL;
        pthread_mutex_lock(&h->mu);
        bool stop = h->stop;
        if (!stop && h->held_since) {
            int64_t left = h->held_since + HOST_HOLD_US - clock_us(CLOCK_MONOTONIC);
            if (left > 0)
                arm_us(h, left);   /* main re-armed it for a newer hold */
            else
                send_held(h);
        }
        pthread_mutex_unlock(&h->mu);
        if (stop)
            return NULL;
    }
}

/* Starts the flusher; false if it cannot (then every result goes out at once). */
static bool holder_start(holder *h, int sock, pthread_t *t)
{
    memset(h, 0, sizeof *h);
    h->sock = sock;
    h->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    pthread_attr_t ta;
    if (h->tfd < 0)
        return false;
    if (pthread_mutex_init(&h->mu, NULL) != 0 || pthread_attr_init(&ta) != 0) {
        close(h->tfd);
        return false;
    }
    pthread_attr_setstacksize(&ta, 64 << 10);
    /* born with every signal blocked: none of the handler's may land on it */
    sigset_t all, was;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &was);
    bool ok = pthread_create(t, &ta, flusher, h) == 0;
    pthread_sigmask(SIG_SETMASK, &was, NULL);
    pthread_attr_destroy(&ta);
    if (!ok)
        close(h->tfd);
    return ok;
}

void host_main(int sock, const char *b, uint32_t n, host_slot *board)
{
    util_set_program("herald-host");
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0 && nul != 0) {
        dup2(nul, 0);
        close(nul);
    }
    dup2(2, 1);

    chan_host m;   /* m.id: main's id for us, the launcher's business */
    bool ok = chan_host_get(b, n, &m);
    uint32_t timeout_ms = m.timeout_ms, memory_mb = m.memory_mb, slot_ix = m.slot;
    char *function = strdup(m.function);
    char *library = strdup(m.library);
    char *symbol = strdup(m.symbol);
    for (const char *e; ok && (e = chan_strs_next(&m.env));) {
        char *kv = strdup(e);
        if (kv && strchr(kv, '='))
            putenv(kv);   /* stays ours for the process's life, as putenv wants */
    }
    if (!ok || !function || !library || !symbol || slot_ix >= HOST_SLOTS)
        init_fail(sock, "runner: bad host request");
    host_slot *slot = &board[slot_ix];
    prctl(PR_SET_NAME, "herald-host");

    if (memory_mb) {
        long data_kb = vm_data_kb();
        struct rlimit rl = { (rlim_t)memory_mb << 20, (rlim_t)memory_mb << 20 };
        if (data_kb > (long)memory_mb * 1024)
            /* Only a sanitizer build gets here (ASan's shadow counts as data):
             * the limit would make every allocation fail. */
            LOG_WARN("host %s: memory_mb %u not applied: already %ld KiB of data", function,
                     memory_mb, data_kb);
        else if (setrlimit(RLIMIT_DATA, &rl) < 0)
            LOG_WARN("host %s: setrlimit: %s", function, strerror(errno));
    }
    char why[1024];
    void *h = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(why, sizeof why, "dlopen: %s", dlerror());
        init_fail(sock, why);
    }
    herald_handler_fn *fn = (herald_handler_fn *)dlsym(h, symbol);
    if (!fn) {
        snprintf(why, sizeof why, "dlsym %s: %s", symbol, dlerror());
        init_fail(sock, why);
    }
    int (*init)(void) = (int (*)(void))dlsym(h, "herald_init");
    void (*fini)(void) = (void (*)(void))dlsym(h, "herald_fini");
    if (init) {
        int rc = init();
        if (rc != 0) {
            snprintf(why, sizeof why, "herald_init returned %d", rc);
            init_fail(sock, why);
        }
    }
    wbuf out = { 0 };
    if (chan_ready_put(&out) < 0 || launcher_write_all(sock, out.p, out.len) < 0)
        _exit(1);
    wbuf_free(&out);

    holder hd;
    pthread_t ft;
    bool flusher_up = holder_start(&hd, sock, &ft);
    if (!flusher_up)
        LOG_WARN("host %s: no flusher thread: results go out one by one", function);
    log_holder = flusher_up ? &hd : NULL;
    log_sock = sock;
    wbuf in = { 0 }, one = { 0 };
    uint64_t count = 0;
    for (;;) {
        if (!wbuf_reserve(&in, 1 << 16)) {
            /* a job too big for memory_mb: charged to it (the board says it
             * began), or it would come back uncounted again and again */
            LOG_ERROR("host %s: out of memory reading jobs", function);
            atomic_store_explicit(&slot->start_ms, clock_us(CLOCK_MONOTONIC) / 1000, memory_order_relaxed);
            atomic_store_explicit(&slot->started, count + 1, memory_order_release);
            _exit(1);
        }
        ssize_t got = recv(sock, in.p + in.len, in.cap - in.len, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;   /* EOF: main wants us gone */
        in.len += (size_t)got;
        const char *body;
        uint32_t len;
        bool bad = false;
        while (msg_next(&in, &body, &len, &bad)) {
            one.len = one.off = 0;
            if (body[0] != CH_H_JOB ||
                run_job(&one, slot, ++count, fn, function, timeout_ms, body + 1, len - 1) < 0) {
                LOG_ERROR("host %s: bad job", function);
                _exit(1);
            }
            if (!flusher_up) {
                if (launcher_write_all(sock, one.p, one.len) < 0) _exit(1);   /* main is gone */
                continue;
            }
            bool more = msg_pending(&in);
            pthread_mutex_lock(&hd.mu);
            wbuf_put(&hd.held, one.p, one.len);
            if (hd.held.failed) {
                LOG_ERROR("host %s: out of memory holding a result", function);
                _exit(1);
            }
            if (!more || hd.held.len >= HOST_HOLD_BYTES) {
                bool armed = hd.held_since != 0;
                send_held(&hd);
                if (armed)
                    arm_us(&hd, 0);
            } else if (hd.held_since == 0) {
                hd.held_since = clock_us(CLOCK_MONOTONIC);
                arm_us(&hd, HOST_HOLD_US);   /* the flusher sends them if we do not in time */
            }
            pthread_mutex_unlock(&hd.mu);
        }
        if (bad) {
            LOG_ERROR("host %s: malformed job stream", function);
            _exit(1);
        }
    }
    if (flusher_up) {
        pthread_mutex_lock(&hd.mu);
        send_held(&hd);
        hd.stop = true;
        arm_us(&hd, 1);   /* wake it to see stop */
        pthread_mutex_unlock(&hd.mu);
        pthread_join(ft, NULL);
    }
    if (fini)
        fini();
    _exit(0);
}
