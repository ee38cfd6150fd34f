/* session.c: the worker's session with one broker (see session.h).
 *
 * Owns the DEALER socket and its monitor, the registration state, the
 * heartbeat clocks, the results not yet sent and the refusals of the last
 * CONFIG. A broker silent for 3 heartbeats: the handlers in flight are
 * killed (fencing: the broker will hand them to someone else) and the
 * session registers again on a fresh socket. An ERROR "not registered" (the
 * broker restarted) does the same. Deliveries go to the runner as they come;
 * its results come back through session_on_result and leave in batches,
 * one RESULT per loop turn (session_flush).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "session.h"

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
struct session {
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
    bool failed;                /* the broker refused the registration */
    int64_t heartbeat_ms;
    int64_t last_heard_ms, last_sent_ms, register_sent_ms;   /* monotonic */
    pending_result *results; size_t nresults, cap;
    refusal *refused; uint32_t nrefused, refused_cap;   /* of the last CONFIG, and since */
    int64_t retry_since_ms, retry_logged_ms;   /* monotonic; 0: not retrying */
    int64_t stats_sent_ms;      /* monotonic: the last STATS */
    proto_stats stats;          /* being built (session_stats) */
    uint32_t stats_cap;
    msgpack_sbuffer sb;
    proto_frames in;
};

static int send_hdr(session_t *s, const proto_iov *iov, size_t n)
{
    if (frames_send(s->sock, NULL, 0, &s->sb, iov, n, ZMQ_DONTWAIT) != 0) return -1;
    s->last_sent_ms = util_mono_ms();
    return 0;
}

int session_open(session_t *s)
{
    if (s->mon) zmq_close(s->mon);
    if (s->sock) zmq_close(s->sock);
    s->mon = NULL;
    s->sock = zmq_socket(s->zctx, ZMQ_DEALER);
    if (!s->sock) return -1;
    char why[512], mon[64];
    if (keys_client(s->sock, s->key, s->broker_key, why, sizeof why) != 0) {
        fprintf(stderr, "herald-worker: %s\n", why);
        return -1;
    }
    snprintf(mon, sizeof mon, "inproc://worker-monitor-%u", ++s->generation);
    if (zmq_socket_monitor(s->sock, mon, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) == 0) {
        s->mon = zmq_socket(s->zctx, ZMQ_PAIR);
        if (s->mon && zmq_connect(s->mon, mon) != 0) { zmq_close(s->mon); s->mon = NULL; }
    }
    int zero = 0;
    int64_t maxmsg = (64LL << 20) + (64 << 10);
    zmq_setsockopt(s->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s->sock, ZMQ_ROUTING_ID, s->id, strlen(s->id));
    zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(s->sock, ZMQ_SNDHWM, &zero, sizeof zero);
    if (zmq_connect(s->sock, s->endpoint) != 0) {
        fprintf(stderr, "herald-worker: cannot connect to %s: %s\n", s->endpoint, zmq_strerror(zmq_errno()));
        return -1;
    }
    proto_register r = { .worker_id = s->id, .host = s->host, .pid = (uint32_t)getpid(),
                         .slots = s->slots, .functions = s->functions, .nfunctions = s->nfunctions };
    msgpack_sbuffer_clear(&s->sb);
    proto_encode_register(&s->sb, &r);
    send_hdr(s, NULL, 0);
    s->registered = false;
    s->register_sent_ms = s->last_heard_ms = util_mono_ms();
    return 0;
}

void session_on_result(void *arg, const runner_result *res)
{
    session_t *s = arg;
    if (s->nresults == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        pending_result *p = realloc(s->results, cap * sizeof *p);
        if (!p) { LOG_ERROR("out of memory: a result is dropped (the broker retries it)"); return; }
        s->results = p;
        s->cap = cap;
    }
    pending_result *p = &s->results[s->nresults++];
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

static void drop_results(session_t *s)
{
    for (size_t i = 0; i < s->nresults; i++) {
        free(s->results[i].error);
        free(s->results[i].output);
    }
    s->nresults = 0;
}

static void refusals_clear(session_t *s)
{
    for (uint32_t i = 0; i < s->nrefused; i++) {
        free(s->refused[i].function);
        free(s->refused[i].reason);
    }
    s->nrefused = 0;
}

static bool is_refused(const session_t *s, const char *function)
{
    for (uint32_t i = 0; i < s->nrefused; i++)
        if (strcmp(s->refused[i].function, function) == 0) return true;
    return false;
}

static void refusal_add(session_t *s, const char *function, const char *reason)
{
    if (s->nrefused == s->refused_cap) {
        uint32_t cap = s->refused_cap ? s->refused_cap * 2 : 8;
        refusal *r = realloc(s->refused, cap * sizeof *r);
        if (!r) { LOG_ERROR("out of memory: refusal of %s not recorded", function); return; }
        s->refused = r;
        s->refused_cap = cap;
    }
    char *f = strdup(function), *why = strdup(reason);
    if (!f || !why) { free(f); free(why); return; }
    s->refused[s->nrefused++] = (refusal){ f, why };
}

/* The whole list: the broker replaces what it knew with it. */
static void send_refused(session_t *s)
{
    proto_refusal rs[PROTO_MAX_BATCH];
    uint32_t n = s->nrefused < PROTO_MAX_BATCH ? s->nrefused : PROTO_MAX_BATCH;
    for (uint32_t i = 0; i < n; i++) rs[i] = (proto_refusal){ s->refused[i].function, s->refused[i].reason };
    proto_refused r = { rs, n };
    msgpack_sbuffer_clear(&s->sb);
    if (proto_encode_refused(&s->sb, &r) != 0 || send_hdr(s, NULL, 0) != 0)
        LOG_WARN("cannot send the list of refused functions: %s", zmq_strerror(zmq_errno()));
}

/* Results go back in batches: one RESULT per loop turn (split at the cap). */
void session_flush(session_t *s)
{
    static proto_result_entry es[PROTO_MAX_BATCH];
    static proto_iov iov[PROTO_MAX_BATCH];
    for (size_t off = 0; off < s->nresults; off += PROTO_MAX_BATCH) {
        size_t n = s->nresults - off < PROTO_MAX_BATCH ? s->nresults - off : PROTO_MAX_BATCH;
        for (size_t i = 0; i < n; i++) {
            pending_result *p = &s->results[off + i];
            es[i] = (proto_result_entry){ .lease = p->lease, .outcome = p->outcome,
                                          .started_ms = p->started_ms, .duration_us = p->duration_us,
                                          .error = p->error };
            iov[i] = (proto_iov){ p->output, p->output_len };
        }
        proto_result r = { .rs = es, .n = (uint32_t)n };
        msgpack_sbuffer_clear(&s->sb);
        if (proto_encode_result(&s->sb, &r) != 0 || send_hdr(s, iov, n) != 0)
            LOG_WARN("cannot send results: %s (the broker will retry those deliveries)",
                     zmq_strerror(zmq_errno()));
    }
    drop_results(s);
}

static void on_deliver(session_t *s, const proto_deliver *d, proto_frames *f)
{
    for (uint32_t i = 0; i < d->n; i++) {
        const proto_delivery *e = &d->ds[i];
        runner_job j = { .token = e->lease, .function = e->function, .topic = e->topic,
                         .message_id = e->message_id, .attempt = (int)e->attempt,
                         .max_attempts = (int)e->max_attempts, .attrs = e->attrs, .nattrs = e->nattrs,
                         .payload = frames_data(f, 1 + (int)i), .payload_len = frames_size(f, 1 + (int)i) };
        int rc = runner_submit(s->runner, &j);
        if (rc == -1 && !is_refused(s, e->function)) {
            /* not defined here, or its handler stopped being able to start:
             * the broker must stop sending it here before it gets the
             * delivery back (REFUSED goes out before this turn's RESULT) */
            LOG_ERROR("function %s is not available on this worker: refusing it", e->function);
            refusal_add(s, e->function, "its handler cannot start on this worker (see the worker's log)");
            send_refused(s);
        }
        if (rc == -3) {   /* out of fds or memory for a moment: a failed attempt, retried with backoff */
            runner_result r = { .token = e->lease, .outcome = OUT_ERROR, .started_ms = util_wall_ms(),
                                .error = "the worker could not start the handler: out of resources (see its log)" };
            session_on_result(s, &r);
        } else if (rc != 0) {   /* back to the broker unstarted, for another worker: no attempt counted */
            runner_result r = { .token = e->lease, .outcome = OUT_RETURNED };
            session_on_result(s, &r);
        }
    }
}

/* Defines every function of a CONFIG; those that cannot run here are
 * refused, and the broker is told which and why before anything else. */
static void on_config(session_t *s, const proto_config *c)
{
    s->heartbeat_ms = c->heartbeat_ms ? c->heartbeat_ms : 1000;
    refusals_clear(s);
    char why[PROTO_ERROR_TEXT_MAX];
    for (uint32_t i = 0; i < c->nfns; i++) {
        why[0] = 0;
        if (runner_define_why(s->runner, &c->fns[i], why, sizeof why) == 0) continue;
        LOG_ERROR("function %s refused on this worker: %s", c->fns[i].name, why[0] ? why : "see above");
        refusal_add(s, c->fns[i].name, why[0] ? why : "refused (see the worker's log)");
    }
    send_refused(s);
    if (!s->registered) {
        uint32_t serving = c->nfns - s->nrefused;
        char names[512] = "";
        size_t used = 0;
        for (uint32_t i = 0; i < s->nrefused && used + 1 < sizeof names; i++)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                                     s->refused[i].function);
        if (s->nrefused)
            LOG_INFO("registered with %s as %s: serving %u function%s, refused %u (%s), %u slot%s", s->endpoint,
                     s->id, serving, serving == 1 ? "" : "s", s->nrefused, names, s->slots, s->slots == 1 ? "" : "s");
        else
            LOG_INFO("registered with %s as %s: serving %u function%s, %u slot%s", s->endpoint, s->id, serving,
                     serving == 1 ? "" : "s", s->slots, s->slots == 1 ? "" : "s");
    }
    s->registered = true;
    s->retry_since_ms = 0;
}

static void handle(session_t *s, proto_frames *f)
{
    char err[256];
    proto_msg m;
    if (f->n < 1 || proto_decode(frames_data(f, 0), frames_size(f, 0), &m, err, sizeof err) != 0) {
        LOG_WARN("undecodable message from the broker: %s", f->n < 1 ? "empty" : err);
        return;
    }
    s->last_heard_ms = util_mono_ms();
    if ((uint32_t)f->n != 1 + m.nframes) {
        LOG_WARN("%s with %d frames instead of %u: dropped", proto_type_name(m.type), f->n - 1, m.nframes);
        proto_msg_clear(&m);
        return;
    }
    switch (m.type) {
    case MSG_CONFIG:
        on_config(s, &m.u.config);
        break;
    case MSG_DELIVER:
        on_deliver(s, &m.u.deliver, f);
        break;
    case MSG_HEARTBEAT:
        break;
    case MSG_ERROR:
        if (m.u.error.status == PROTO_E_CONFLICT) {
            /* the broker does not know us (it restarted): its old leases are void */
            LOG_INFO("broker says: %s; registering again", m.u.error.text);
            runner_cancel_all(s->runner);
            drop_results(s);
            session_open(s);
        } else if (!s->registered) {
            fprintf(stderr, "herald-worker: the broker refused the registration: %s\n", m.u.error.text);
            s->failed = true;
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
bool session_handshake_refused(session_t *s)
{
    if (!s->mon) return false;
    bool stop = false;
    for (;;) {
        zmq_msg_t ev;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, s->mon, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&ev); break; }
        uint16_t event = 0;
        if (zmq_msg_size(&ev) >= 2) memcpy(&event, zmq_msg_data(&ev), 2);
        bool more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        if (more) { zmq_msg_init(&ev); zmq_msg_recv(&ev, s->mon, 0); zmq_msg_close(&ev); }
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
            fprintf(stderr, "herald-worker: broker %s refused our key: is it in the broker's workers directory?\n",
                    s->endpoint);
        else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
            fprintf(stderr, "herald-worker: handshake with broker %s failed: CURVE on one side only? "
                    "(--key/--broker-key)\n", s->endpoint);
        else
            continue;
        stop = true;
    }
    return stop;
}

/* --- the session's life and its loop turn (session.h) ------------------------- */

session_t *session_new(const session_opts *o)
{
    session_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->endpoint = o->endpoint;
    s->key = o->key;
    s->broker_key = o->broker_key;
    snprintf(s->id, sizeof s->id, "%s", o->id);
    snprintf(s->host, sizeof s->host, "%s", o->host);
    s->slots = o->slots;
    s->functions = o->functions;
    s->nfunctions = o->nfunctions;
    s->runner = o->runner;
    s->zctx = o->zctx;
    s->heartbeat_ms = 1000;
    msgpack_sbuffer_init(&s->sb);
    frames_init(&s->in);
    return s;
}

void session_destroy(session_t **sp)
{
    if (!sp || !*sp)
        return;
    session_t *s = *sp;
    *sp = NULL;
    if (s->mon) zmq_close(s->mon);
    if (s->sock) {
        int linger = 2000;   /* the last results must reach the broker */
        zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(s->sock);
    }
    drop_results(s);
    free(s->stats.es);
    free(s->results);
    refusals_clear(s);
    free(s->refused);
    frames_close(&s->in);
    free(s->in.parts);
    msgpack_sbuffer_destroy(&s->sb);
    free(s);
}

void session_drain(session_t *s)
{
    msgpack_sbuffer_clear(&s->sb);
    proto_encode_drain(&s->sb);
    send_hdr(s, NULL, 0);
}

/* runner_take_stats's callback: one STATS entry (the name borrowed until sent). */
static void stats_add(void *arg, const char *function, const runner_rtstats *st)
{
    session_t *s = arg;
    if (s->stats.n == s->stats_cap) {
        uint32_t cap = s->stats_cap ? s->stats_cap * 2 : 8;
        proto_stats_entry *es = realloc(s->stats.es, cap * sizeof *es);
        if (!es)
            return;   /* these counts are lost: stats, not deliveries */
        s->stats.es = es;
        s->stats_cap = cap;
    }
    proto_stats_entry *e = &s->stats.es[s->stats.n++];
    e->function = (char *)function;
    e->cold_starts = st->cold_starts;
    e->init_us = st->init_us;
    e->warm = st->warm;
    memcpy(e->recycles, st->recycles, sizeof e->recycles);
}

void session_stats(session_t *s, int64_t now, bool now_or_never)
{
    if (!s->registered || (!now_or_never && now - s->stats_sent_ms < s->heartbeat_ms))
        return;
    s->stats_sent_ms = now;
    s->stats.n = 0;
    runner_take_stats(s->runner, stats_add, s);
    for (uint32_t at = 0; at < s->stats.n; at += PROTO_MAX_BATCH) {
        proto_stats part = { s->stats.es + at, s->stats.n - at < PROTO_MAX_BATCH ? s->stats.n - at : PROTO_MAX_BATCH };
        msgpack_sbuffer_clear(&s->sb);
        if (proto_encode_stats(&s->sb, &part) == 0)
            send_hdr(s, NULL, 0);
    }
}

void session_bye(session_t *s)
{
    session_stats(s, util_mono_ms(), true);
    if (s->registered) {
        msgpack_sbuffer_clear(&s->sb);
        proto_encode_bye(&s->sb);
        send_hdr(s, NULL, 0);
    }
}

bool session_silent(const session_t *s, int64_t now)
{
    return now - s->last_heard_ms > 3 * s->heartbeat_ms;
}

void session_reconnect(session_t *s, int64_t now)
{
    if (s->registered) {
        LOG_WARN("broker %s silent for 3 heartbeats: stopping %zu handlers, reconnecting",
                 s->endpoint, runner_busy(s->runner));
        s->retry_since_ms = s->retry_logged_ms = now;
    } else if (!s->retry_since_ms) {
        LOG_WARN("no answer from the broker at %s: retrying every %lld ms until it answers", s->endpoint,
                 (long long)(3 * s->heartbeat_ms));
        s->retry_since_ms = s->retry_logged_ms = now;
    } else if (now - s->retry_logged_ms >= RETRY_LOG_MS) {
        LOG_WARN("still no answer from the broker at %s after %lld s: retrying", s->endpoint,
                 (long long)((now - s->retry_since_ms + 3 * s->heartbeat_ms) / 1000));
        s->retry_logged_ms = now;
    }
    runner_cancel_all(s->runner);
    drop_results(s);
    session_open(s);
}

void session_heartbeat(session_t *s, int64_t now)
{
    if (now - s->last_sent_ms >= s->heartbeat_ms) {
        msgpack_sbuffer_clear(&s->sb);
        proto_encode_heartbeat(&s->sb);
        send_hdr(s, NULL, 0);
    }
}

long session_poll_ms(const session_t *s)
{
    return (long)(s->heartbeat_ms / 2);
}

int session_pollitems(const session_t *s, zmq_pollitem_t items[2])
{
    items[0] = (zmq_pollitem_t){ s->sock, 0, ZMQ_POLLIN, 0 };
    if (!s->mon)
        return 1;
    items[1] = (zmq_pollitem_t){ s->mon, 0, ZMQ_POLLIN, 0 };
    return 2;
}

void session_read(session_t *s)
{
    for (int k = 0; k < 256; k++) {
        if (frames_recv(s->sock, &s->in, PROTO_MAX_FRAMES + 1, ZMQ_DONTWAIT) != 0) break;
        handle(s, &s->in);
        frames_close(&s->in);
    }
}

size_t session_pending(const session_t *s)
{
    return s->nresults;
}

bool session_failed(const session_t *s)
{
    return s->failed;
}

const char *session_endpoint(const session_t *s)
{
    return s->endpoint;
}
