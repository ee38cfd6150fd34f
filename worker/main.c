/* main.c — herald-worker: one session with a broker, and the loop that feeds
 * its deliveries to the runner and its results back.
 *
 * Start-up order matters: the runner forks its launcher before any ZeroMQ
 * thread exists (a process with ZeroMQ threads must not fork except straight
 * into exec).
 *
 * Session: REGISTER → CONFIG (function definitions) → REFUSED (the functions
 * whose handler cannot be loaded or found here, and why: the broker sends
 * this worker none of their deliveries) → DELIVER / RESULT, with HEARTBEAT
 * each way when idle. A broker silent for 3 heartbeats: the worker kills its
 * in-flight handlers (fencing: the broker will hand them to someone else) and
 * registers again on a fresh socket, saying so in its log (rate-limited)
 * while the broker does not answer. An ERROR "not registered" (the broker
 * restarted) does the same. SIGTERM: DRAIN (no new work), finish what is in
 * flight (bounded by its timeouts), report, BYE, exit 0.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <herald.h>   /* HERALD_VERSION */

#include "../config/config.h"
#include "runner.h"

typedef struct {
    uint64_t lease;
    uint32_t outcome;
    int64_t started_ms;
    uint32_t duration_us;
    char *error;                /* owned */
    void *output; size_t output_len;   /* owned */
} pending_result;

/* A function this worker cannot run (REFUSED). */
typedef struct {
    char *function;             /* owned */
    char *reason;               /* owned, one line */
} refusal;

/* While the broker does not answer: said once, then every RETRY_LOG_MS. */
#define RETRY_LOG_MS 10000

typedef struct {
    const char *endpoint;
    const char *key, *broker_key;   /* CURVE: ours (.key), the broker's (.pub); NULL: plaintext */
    void *mon;                  /* the socket's monitor: a refused key is said, not retried forever */
    unsigned generation;        /* sockets opened, names the monitor */
    char id[64];
    char host[256];
    uint32_t slots;
    char **functions; uint32_t nfunctions;
    runner_t *runner;
    void *zctx, *sock;
    bool registered;
    int64_t heartbeat_ms;
    int64_t last_heard_ms, last_sent_ms, register_sent_ms;   /* monotonic */
    pending_result *results; size_t nresults, cap;
    refusal *refused; uint32_t nrefused, refused_cap;   /* of the last CONFIG, and since */
    int64_t retry_since_ms, retry_logged_ms;   /* monotonic; 0: not retrying */
    msgpack_sbuffer sb;
    proto_frames in;
    int exit_code;              /* -1 while running */
} worker_t;

static volatile sig_atomic_t stop_flag;
static void on_stop(int sig) { (void)sig; stop_flag = 1; }

static void usage(FILE *f)
{
    fprintf(f, "usage: herald-worker --broker ENDPOINT [--functions a,b] [--concurrency N]\n"
               "                     [--root DIR] [--run-dir DIR] [--key FILE --broker-key FILE]\n"
               "                     [-c FILE] [--verbose] | --version\n");
}

static int send_hdr(worker_t *w, const proto_iov *iov, size_t n)
{
    if (frames_send(w->sock, NULL, 0, &w->sb, iov, n, ZMQ_DONTWAIT) != 0) return -1;
    w->last_sent_ms = util_mono_ms();
    return 0;
}

static int session_open(worker_t *w)
{
    if (w->mon) zmq_close(w->mon);
    if (w->sock) zmq_close(w->sock);
    w->mon = NULL;
    w->sock = zmq_socket(w->zctx, ZMQ_DEALER);
    if (!w->sock) return -1;
    char why[512], mon[64];
    if (keys_client(w->sock, w->key, w->broker_key, why, sizeof why) != 0) {
        fprintf(stderr, "herald-worker: %s\n", why);
        return -1;
    }
    snprintf(mon, sizeof mon, "inproc://worker-monitor-%u", ++w->generation);
    if (zmq_socket_monitor(w->sock, mon, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) == 0) {
        w->mon = zmq_socket(w->zctx, ZMQ_PAIR);
        if (w->mon && zmq_connect(w->mon, mon) != 0) { zmq_close(w->mon); w->mon = NULL; }
    }
    int zero = 0;
    int64_t maxmsg = (64LL << 20) + (64 << 10);
    zmq_setsockopt(w->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(w->sock, ZMQ_ROUTING_ID, w->id, strlen(w->id));
    zmq_setsockopt(w->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(w->sock, ZMQ_SNDHWM, &zero, sizeof zero);
    if (zmq_connect(w->sock, w->endpoint) != 0) {
        fprintf(stderr, "herald-worker: cannot connect to %s: %s\n", w->endpoint, zmq_strerror(zmq_errno()));
        return -1;
    }
    proto_register r = { .worker_id = w->id, .host = w->host, .pid = (uint32_t)getpid(),
                         .slots = w->slots, .functions = w->functions, .nfunctions = w->nfunctions };
    msgpack_sbuffer_clear(&w->sb);
    proto_encode_register(&w->sb, &r);
    send_hdr(w, NULL, 0);
    w->registered = false;
    w->register_sent_ms = w->last_heard_ms = util_mono_ms();
    return 0;
}

static void on_result(void *arg, const runner_result *res)
{
    worker_t *w = arg;
    if (w->nresults == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        pending_result *p = realloc(w->results, cap * sizeof *p);
        if (!p) { LOG_ERROR("out of memory: a result is dropped (the broker retries it)"); return; }
        w->results = p;
        w->cap = cap;
    }
    pending_result *p = &w->results[w->nresults++];
    p->lease = res->token;
    p->outcome = res->outcome;
    p->started_ms = res->started_ms;
    p->duration_us = res->duration_us;
    p->error = res->error ? strdup(res->error) : NULL;
    p->output = NULL;
    p->output_len = 0;
    if (res->output_len) {
        p->output = malloc(res->output_len);
        if (p->output) {
            memcpy(p->output, res->output, res->output_len);
            p->output_len = res->output_len;
        }
    }
}

static void drop_results(worker_t *w)
{
    for (size_t i = 0; i < w->nresults; i++) {
        free(w->results[i].error);
        free(w->results[i].output);
    }
    w->nresults = 0;
}

static void refusals_clear(worker_t *w)
{
    for (uint32_t i = 0; i < w->nrefused; i++) {
        free(w->refused[i].function);
        free(w->refused[i].reason);
    }
    w->nrefused = 0;
}

static bool is_refused(const worker_t *w, const char *function)
{
    for (uint32_t i = 0; i < w->nrefused; i++)
        if (strcmp(w->refused[i].function, function) == 0) return true;
    return false;
}

static void refusal_add(worker_t *w, const char *function, const char *reason)
{
    if (w->nrefused == w->refused_cap) {
        uint32_t cap = w->refused_cap ? w->refused_cap * 2 : 8;
        refusal *r = realloc(w->refused, cap * sizeof *r);
        if (!r) { LOG_ERROR("out of memory: refusal of %s not recorded", function); return; }
        w->refused = r;
        w->refused_cap = cap;
    }
    char *f = strdup(function), *why = strdup(reason);
    if (!f || !why) { free(f); free(why); return; }
    w->refused[w->nrefused++] = (refusal){ f, why };
}

/* The whole list: the broker replaces what it knew with it. */
static void send_refused(worker_t *w)
{
    proto_refusal rs[PROTO_MAX_BATCH];
    uint32_t n = w->nrefused < PROTO_MAX_BATCH ? w->nrefused : PROTO_MAX_BATCH;
    for (uint32_t i = 0; i < n; i++) rs[i] = (proto_refusal){ w->refused[i].function, w->refused[i].reason };
    proto_refused r = { rs, n };
    msgpack_sbuffer_clear(&w->sb);
    if (proto_encode_refused(&w->sb, &r) != 0 || send_hdr(w, NULL, 0) != 0)
        LOG_WARN("cannot send the list of refused functions: %s", zmq_strerror(zmq_errno()));
}

/* Results go back in batches: one RESULT per loop turn (split at the cap). */
static void flush_results(worker_t *w)
{
    static proto_result_entry es[PROTO_MAX_BATCH];
    static proto_iov iov[PROTO_MAX_BATCH];
    for (size_t off = 0; off < w->nresults; off += PROTO_MAX_BATCH) {
        size_t n = w->nresults - off < PROTO_MAX_BATCH ? w->nresults - off : PROTO_MAX_BATCH;
        for (size_t i = 0; i < n; i++) {
            pending_result *p = &w->results[off + i];
            es[i] = (proto_result_entry){ .lease = p->lease, .outcome = p->outcome,
                                          .started_ms = p->started_ms, .duration_us = p->duration_us,
                                          .error = p->error };
            iov[i] = (proto_iov){ p->output, p->output_len };
        }
        proto_result r = { .rs = es, .n = (uint32_t)n };
        msgpack_sbuffer_clear(&w->sb);
        if (proto_encode_result(&w->sb, &r) != 0 || send_hdr(w, iov, n) != 0)
            LOG_WARN("cannot send results: %s (the broker will retry those deliveries)",
                     zmq_strerror(zmq_errno()));
    }
    drop_results(w);
}

static void on_deliver(worker_t *w, const proto_deliver *d, proto_frames *f)
{
    for (uint32_t i = 0; i < d->n; i++) {
        const proto_delivery *e = &d->ds[i];
        runner_job j = { .token = e->lease, .function = e->function, .topic = e->topic,
                         .message_id = e->message_id, .attempt = (int)e->attempt,
                         .max_attempts = (int)e->max_attempts, .attrs = e->attrs, .nattrs = e->nattrs,
                         .payload = frames_data(f, 1 + (int)i), .payload_len = frames_size(f, 1 + (int)i) };
        int rc = runner_submit(w->runner, &j);
        if (rc == -1 && !is_refused(w, e->function)) {
            /* not defined here, or its handler stopped being able to start:
             * the broker must stop sending it here before it gets the
             * delivery back (REFUSED goes out before this turn's RESULT) */
            LOG_ERROR("function %s is not available on this worker: refusing it", e->function);
            refusal_add(w, e->function, "its handler cannot start on this worker (see the worker's log)");
            send_refused(w);
        }
        if (rc == -3) {   /* out of fds or memory for a moment: a failed attempt, retried with backoff */
            runner_result r = { .token = e->lease, .outcome = OUT_ERROR, .started_ms = util_wall_ms(),
                                .error = "the worker could not start the handler: out of resources (see its log)" };
            on_result(w, &r);
        } else if (rc != 0) {   /* back to the broker unstarted, for another worker: no attempt counted */
            runner_result r = { .token = e->lease, .outcome = OUT_RETURNED };
            on_result(w, &r);
        }
    }
}

/* Defines every function of a CONFIG; those that cannot run here are
 * refused, and the broker is told which and why before anything else. */
static void on_config(worker_t *w, const proto_config *c)
{
    w->heartbeat_ms = c->heartbeat_ms ? c->heartbeat_ms : 1000;
    refusals_clear(w);
    char why[PROTO_ERROR_TEXT_MAX];
    for (uint32_t i = 0; i < c->nfns; i++) {
        why[0] = 0;
        if (runner_define_why(w->runner, &c->fns[i], why, sizeof why) == 0) continue;
        LOG_ERROR("function %s refused on this worker: %s", c->fns[i].name, why[0] ? why : "see above");
        refusal_add(w, c->fns[i].name, why[0] ? why : "refused (see the worker's log)");
    }
    send_refused(w);
    if (!w->registered) {
        uint32_t serving = c->nfns - w->nrefused;
        char names[512] = "";
        size_t used = 0;
        for (uint32_t i = 0; i < w->nrefused && used + 1 < sizeof names; i++)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                                     w->refused[i].function);
        if (w->nrefused)
            LOG_INFO("registered with %s as %s: serving %u function%s, refused %u (%s), %u slot%s", w->endpoint,
                     w->id, serving, serving == 1 ? "" : "s", w->nrefused, names, w->slots, w->slots == 1 ? "" : "s");
        else
            LOG_INFO("registered with %s as %s: serving %u function%s, %u slot%s", w->endpoint, w->id, serving,
                     serving == 1 ? "" : "s", w->slots, w->slots == 1 ? "" : "s");
    }
    w->registered = true;
    w->retry_since_ms = 0;
}

static void handle(worker_t *w, proto_frames *f)
{
    char err[256];
    proto_msg m;
    if (f->n < 1 || proto_decode(frames_data(f, 0), frames_size(f, 0), &m, err, sizeof err) != 0) {
        LOG_WARN("undecodable message from the broker: %s", f->n < 1 ? "empty" : err);
        return;
    }
    w->last_heard_ms = util_mono_ms();
    if ((uint32_t)f->n != 1 + m.nframes) {
        LOG_WARN("%s with %d frames instead of %u: dropped", proto_type_name(m.type), f->n - 1, m.nframes);
        proto_msg_clear(&m);
        return;
    }
    switch (m.type) {
    case MSG_CONFIG:
        on_config(w, &m.u.config);
        break;
    case MSG_DELIVER:
        on_deliver(w, &m.u.deliver, f);
        break;
    case MSG_HEARTBEAT:
        break;
    case MSG_ERROR:
        if (m.u.error.status == PROTO_E_CONFLICT) {
            /* the broker does not know us (it restarted): its old leases are void */
            LOG_INFO("broker says: %s; registering again", m.u.error.text);
            runner_cancel_all(w->runner);
            drop_results(w);
            session_open(w);
        } else if (!w->registered) {
            fprintf(stderr, "herald-worker: the broker refused the registration: %s\n", m.u.error.text);
            w->exit_code = 1;
        } else {
            LOG_WARN("broker error: %s", m.u.error.text);
        }
        break;
    default:
        LOG_WARN("unexpected %s from the broker: ignored", proto_type_name(m.type));
    }
    proto_msg_clear(&m);
}

/* A refused CURVE key is a configuration error: say so and stop, rather than
 * reconnecting forever. true when the worker must exit. */
static bool handshake_refused(worker_t *w)
{
    if (!w->mon) return false;
    bool stop = false;
    for (;;) {
        zmq_msg_t ev;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, w->mon, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&ev); break; }
        uint16_t event = 0;
        if (zmq_msg_size(&ev) >= 2) memcpy(&event, zmq_msg_data(&ev), 2);
        bool more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        if (more) { zmq_msg_init(&ev); zmq_msg_recv(&ev, w->mon, 0); zmq_msg_close(&ev); }
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
            fprintf(stderr, "herald-worker: broker %s refused our key: is it in the broker's workers directory?\n",
                    w->endpoint);
        else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
            fprintf(stderr, "herald-worker: handshake with broker %s failed: CURVE on one side only? "
                    "(--key/--broker-key)\n", w->endpoint);
        else
            continue;
        stop = true;
    }
    return stop;
}

static int split_functions(worker_t *w, const char *list)
{
    char *copy = strdup(list), *save = NULL;
    if (!copy) return -1;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!proto_valid_name(t)) {
            fprintf(stderr, "herald-worker: --functions: '%s' is not a valid function name\n", t);
            free(copy);
            return -1;
        }
        char **f = realloc(w->functions, (w->nfunctions + 1) * sizeof *f);
        if (!f) { free(copy); return -1; }
        w->functions = f;
        w->functions[w->nfunctions++] = strdup(t);
    }
    free(copy);
    return 0;
}

int main(int argc, char **argv)
{
    util_set_program("herald-worker");
    worker_t w;
    memset(&w, 0, sizeof w);
    w.exit_code = -1;
    const char *cfg_path = NULL, *functions = NULL, *root = NULL, *run_dir = NULL;
    long concurrency = 0;
    static const struct option opts[] = {
        { "broker", required_argument, NULL, 'b' }, { "functions", required_argument, NULL, 'f' },
        { "concurrency", required_argument, NULL, 'n' }, { "root", required_argument, NULL, 'r' },
        { "run-dir", required_argument, NULL, 'd' }, { "config", required_argument, NULL, 'c' },
        { "verbose", no_argument, NULL, 'v' }, { "help", no_argument, NULL, 'h' },
        { "key", required_argument, NULL, 'K' }, { "broker-key", required_argument, NULL, 'B' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, "b:f:n:r:d:c:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'b': w.endpoint = optarg; break;
        case 'f': functions = optarg; break;
        case 'n': {
            char *end;
            concurrency = strtol(optarg, &end, 10);
            if (*end || concurrency < 1 || concurrency > 100000) {
                fprintf(stderr, "herald-worker: --concurrency must be an integer from 1 to 100000\n");
                return 2;
            }
            break;
        }
        case 'r': root = optarg; break;
        case 'd': run_dir = optarg; break;
        case 'c': cfg_path = optarg; break;
        case 'v': util_verbose = 1; break;
        case 'K': w.key = optarg; break;
        case 'B': w.broker_key = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("herald-worker %s\n", HERALD_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) { usage(stderr); return 2; }
    char ep_why[256];   /* libzmq would keep 16 bits of port 99999 and connect elsewhere */
    if (w.endpoint && endpoint_check(w.endpoint, false, ep_why, sizeof ep_why) != 0) {
        fprintf(stderr, "herald-worker: --broker '%s' %s\n", w.endpoint, ep_why);
        return 2;
    }
    herald_config *cfg = NULL;
    if (cfg_path) {
        cfg = config_load(cfg_path, NULL);
        if (!cfg) return 2;
        if (!w.endpoint && cfg->worker.present) w.endpoint = cfg->worker.broker;
        if (!concurrency && cfg->worker.concurrency) concurrency = cfg->worker.concurrency;
        if (!root) root = cfg->worker.root;
        if (!run_dir) run_dir = cfg->worker.run_dir;
        if (!w.key && !w.broker_key) {
            w.key = cfg->worker.key;
            w.broker_key = cfg->worker.broker_key;
        }
        if (!functions && cfg->worker.nfunctions)
            for (size_t i = 0; i < cfg->worker.nfunctions; i++)
                if (split_functions(&w, cfg->worker.functions[i]) != 0) return 2;
    }
    if (!w.endpoint) w.endpoint = "tcp://127.0.0.1:7711";
    char kwhy[512];
    if (keys_pick(&w.key, &w.broker_key, kwhy, sizeof kwhy) != 0) {
        fprintf(stderr, "herald-worker: %s\n", kwhy);
        config_destroy(&cfg);
        return 2;
    }
    if (functions && split_functions(&w, functions) != 0) return 2;
    if (!concurrency) concurrency = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    w.slots = (uint32_t)concurrency;
    gethostname(w.host, sizeof w.host - 1);
    char rnd[8];
    util_random(rnd, sizeof rnd);
    static const char alnum[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    int len = snprintf(w.id, sizeof w.id, "w%d_", (int)getpid());
    for (int i = 0; i < 8; i++) w.id[len + i] = alnum[(unsigned char)rnd[i] % 36];

    struct sigaction sa = { .sa_handler = on_stop };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* before any ZeroMQ thread exists; the lean launcher program lives in
     * ../libexec beside our bin/, in the tree as once installed */
    char launcher[PATH_MAX + 32] = "";
    char exe[PATH_MAX];
    ssize_t exe_len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (exe_len > 0) {
        exe[exe_len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(launcher, sizeof launcher, "%s/../libexec/herald-launcher", exe);
    }
    runner_opts ro = { .root = root, .run_dir = run_dir, .hosts = 0, .launcher = launcher[0] ? launcher : NULL };
    w.runner = runner_new(&ro);
    if (!w.runner) { config_destroy(&cfg); return 1; }

    w.zctx = zmq_ctx_new();
    msgpack_sbuffer_init(&w.sb);
    frames_init(&w.in);
    w.heartbeat_ms = 1000;
    if (session_open(&w) != 0) { w.exit_code = 1; goto out; }

    bool draining = false;
    while (w.exit_code < 0) {
        int64_t now = util_mono_ms();
        if (stop_flag && !draining) {
            draining = true;
            msgpack_sbuffer_clear(&w.sb);
            proto_encode_drain(&w.sb);
            send_hdr(&w, NULL, 0);
            LOG_INFO("SIGTERM: finishing %zu in-flight deliveries", runner_busy(w.runner));
        }
        if (draining && runner_busy(w.runner) == 0 && w.nresults == 0) {
            /* after the last RESULT, on the same socket: the broker drops us at once */
            if (w.registered) {
                msgpack_sbuffer_clear(&w.sb);
                proto_encode_bye(&w.sb);
                send_hdr(&w, NULL, 0);
            }
            w.exit_code = 0;
            break;
        }
        if (now - w.last_heard_ms > 3 * w.heartbeat_ms) {
            if (draining) {
                LOG_WARN("broker silent while draining: %zu deliveries not reported", runner_busy(w.runner));
                w.exit_code = 0;
                break;
            }
            if (w.registered) {
                LOG_WARN("broker %s silent for 3 heartbeats: stopping %zu handlers, reconnecting",
                         w.endpoint, runner_busy(w.runner));
                w.retry_since_ms = w.retry_logged_ms = now;
            } else if (!w.retry_since_ms) {
                LOG_WARN("no answer from the broker at %s: retrying every %lld ms until it answers", w.endpoint,
                         (long long)(3 * w.heartbeat_ms));
                w.retry_since_ms = w.retry_logged_ms = now;
            } else if (now - w.retry_logged_ms >= RETRY_LOG_MS) {
                LOG_WARN("still no answer from the broker at %s after %lld s: retrying", w.endpoint,
                         (long long)((now - w.retry_since_ms + 3 * w.heartbeat_ms) / 1000));
                w.retry_logged_ms = now;
            }
            runner_cancel_all(w.runner);
            drop_results(&w);
            session_open(&w);
        }
        if (now - w.last_sent_ms >= w.heartbeat_ms) {
            msgpack_sbuffer_clear(&w.sb);
            proto_encode_heartbeat(&w.sb);
            send_hdr(&w, NULL, 0);
        }
        long timeout = w.heartbeat_ms / 2;
        int rt = runner_next_timeout_ms(w.runner);
        if (rt >= 0 && rt < timeout) timeout = rt;
        zmq_pollitem_t items[3] = {
            { w.sock, 0, ZMQ_POLLIN, 0 },
            { NULL, runner_fd(w.runner), ZMQ_POLLIN, 0 },
            { w.mon, 0, ZMQ_POLLIN, 0 },
        };
        if (zmq_poll(items, w.mon ? 3 : 2, timeout) < 0 && zmq_errno() != EINTR) {
            LOG_ERROR("poll: %s", zmq_strerror(zmq_errno()));
            w.exit_code = 1;
            break;
        }
        for (int k = 0; k < 256; k++) {
            if (frames_recv(w.sock, &w.in, PROTO_MAX_FRAMES + 1, ZMQ_DONTWAIT) != 0) break;
            handle(&w, &w.in);
            frames_close(&w.in);
        }
        if (handshake_refused(&w)) { w.exit_code = 1; break; }
        runner_dispatch(w.runner, on_result, &w);
        if (w.nresults) flush_results(&w);
        if (runner_broken(w.runner)) {
            /* Every delivery it still got would fail here: go, so that the
             * broker gives them to other workers and a supervisor restarts us. */
            fprintf(stderr, "herald-worker: the handler launcher died: no handler can start; exiting\n");
            w.exit_code = 1;
            break;
        }
    }
out:
    if (w.mon) zmq_close(w.mon);
    if (w.sock) {
        int linger = 2000;   /* the last results must reach the broker */
        zmq_setsockopt(w.sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(w.sock);
    }
    zmq_ctx_term(w.zctx);
    runner_destroy(&w.runner);
    drop_results(&w);
    free(w.results);
    refusals_clear(&w);
    free(w.refused);
    frames_close(&w.in);
    free(w.in.parts);
    msgpack_sbuffer_destroy(&w.sb);
    for (uint32_t i = 0; i < w.nfunctions; i++) free(w.functions[i]);
    free(w.functions);
    config_destroy(&cfg);
    return w.exit_code < 0 ? 1 : w.exit_code;
}
