/* client: libherald's public API (include/herald.h) and the wait loop.
 *
 * A client owns a zmq context, the session (session.c) and the outbox of
 * unconfirmed publishes (outbox.c). Nothing runs in the background: every
 * blocking call runs turns of wait_until() — send what may go, give up on
 * publishes older than timeout_ms, poll, handle what came — so confirm
 * callbacks run in the caller's thread, inside herald_publish_async,
 * herald_flush and herald_close.
 *
 * Invariants: at most `window` publishes are unconfirmed (the outbox's cap);
 * no publish is accepted before a WELCOME told us max_payload; every accepted
 * publish ends with exactly one callback (confirmed, refused, or given up on
 * after timeout_ms), herald_close included.
 */
#include "client.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Why the calling thread's latest herald_connect returned NULL
 * (herald_last_error(NULL)); a client's own errors live in the client. */
static __thread char connect_error[HC_ERROR_MAX];

#define WINDOW_MAX 1000000   /* the ring is allocated up front: keep it sane */

void hc_set_error(herald_client *c, const char *fmt, ...)
{
    char buf[HC_ERROR_MAX];   /* fmt's arguments may point into last_error */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(c->last_error, buf, sizeof buf);
}

void hc_set_fatal(herald_client *c, int status, const char *fmt, ...)
{
    char buf[HC_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(c->last_error, buf, sizeof buf);
    memcpy(c->fatal_error, buf, sizeof buf);
    c->fatal = status;
}

static void unreachable_error(herald_client *c)
{
    hc_set_error(c, "broker %s unreachable: no answer within %g s%s%s", c->endpoint,
                 c->timeout_ms / 1000.0, c->handshake_note[0] ? " (" : "",
                 c->handshake_note[0] ? c->handshake_note : "");
    if (c->handshake_note[0]) strncat(c->last_error, ")", sizeof c->last_error - strlen(c->last_error) - 1);
}

/* [0-9A-Za-z]{20}, unbiased: bytes >= 248 (= 4 × 62) are redrawn. */
static void make_producer(char out[HC_PRODUCER_LEN + 1])
{
    static const char digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    unsigned char buf[32];
    size_t n = 0;
    while (n < HC_PRODUCER_LEN) {
        util_random(buf, sizeof buf);
        for (size_t i = 0; i < sizeof buf && n < HC_PRODUCER_LEN; i++)
            if (buf[i] < 248) out[n++] = digits[buf[i] % 62];
    }
    out[n] = '\0';
}

herald_client *herald_connect(const herald_options *opts)
{
    herald_options o = opts ? *opts : (herald_options){ 0 };
    const char *ep = o.endpoint && *o.endpoint ? o.endpoint : getenv("HERALD_BROKER");
    if (!ep || !*ep) ep = HC_DEFAULT_ENDPOINT;
    int window = o.window > 0 ? o.window : HC_DEFAULT_WINDOW;
    connect_error[0] = '\0';
    char why[256];
    if (endpoint_check(ep, false, why, sizeof why) != 0) {
        snprintf(connect_error, sizeof connect_error, "endpoint '%.200s' %s", ep, why);
        return NULL;
    }
    if (window > WINDOW_MAX) {
        snprintf(connect_error, sizeof connect_error, "window %d is above %d", window, WINDOW_MAX);
        return NULL;
    }
    if (!o.key_file != !o.broker_key_file) {
        snprintf(connect_error, sizeof connect_error,
                 "CURVE needs both key_file (ours) and broker_key_file (the broker's public key)");
        return NULL;
    }

    if (o.producer_id && !proto_valid_producer(o.producer_id)) {
        snprintf(connect_error, sizeof connect_error,
                 "producer_id '%.60s' is not 1 to 40 of 0-9 A-Z a-z _", o.producer_id);
        return NULL;
    }

    herald_client *c = calloc(1, sizeof *c);
    if (!c) goto fail_client;
    c->endpoint = strdup(ep);
    if (!c->endpoint) goto fail_endpoint;
    c->timeout_ms = o.timeout_ms > 0 ? o.timeout_ms : HC_DEFAULT_TIMEOUT_MS;
    if (o.producer_id) {
        snprintf(c->producer, sizeof c->producer, "%s", o.producer_id);
        c->own_producer = true;
    } else {
        make_producer(c->producer);
    }
    if (o.key_file && hc_session_load_keys(c, o.key_file, o.broker_key_file, connect_error,
                                           sizeof connect_error) < 0)
        goto fail_keys;
    if (hc_outbox_init(&c->ob, (uint32_t)window) < 0) goto fail_outbox;
    c->pubs = malloc(PROTO_MAX_BATCH * sizeof *c->pubs);
    c->iov = malloc(PROTO_MAX_BATCH * sizeof *c->iov);
    c->batch = malloc(PROTO_MAX_BATCH * sizeof *c->batch);
    if (!c->pubs || !c->iov || !c->batch) goto fail_scratch;
    msgpack_sbuffer_init(&c->sb);
    frames_init(&c->in);
    c->ctx = zmq_ctx_new();
    if (!c->ctx) goto fail_ctx;
    if (hc_session_open(c) < 0) {
        memcpy(connect_error, c->last_error, sizeof connect_error);
        goto fail_session;
    }
    return c;

fail_session:
    zmq_ctx_term(c->ctx);
fail_ctx:
    frames_close(&c->in);
    free(c->in.parts);
    msgpack_sbuffer_destroy(&c->sb);
fail_scratch:
    free(c->pubs);
    free(c->iov);
    free(c->batch);
    hc_outbox_free(&c->ob);
fail_outbox:
fail_keys:
    free(c->endpoint);
fail_endpoint:
    free(c);
fail_client:
    if (!connect_error[0]) snprintf(connect_error, sizeof connect_error, "out of memory");
    return NULL;
}

/* ---- the wait loop ----------------------------------------------------- */

typedef enum { UNTIL_WELCOME, UNTIL_ROOM, UNTIL_DONE, UNTIL_EMPTY } until_t;

static bool reached(herald_client *c, until_t u, uint64_t seq)
{
    switch (u) {
    case UNTIL_WELCOME: return c->welcomed;
    case UNTIL_ROOM: return !hc_outbox_full(&c->ob);
    case UNTIL_DONE: return hc_outbox_find(&c->ob, seq) == NULL;
    case UNTIL_EMPTY: return hc_outbox_live(&c->ob) == 0;
    }
    return true;
}

/* Ends every live publish with status (callbacks run). */
static void fail_all(herald_client *c, int status)
{
    hc_entry *e;
    while ((e = hc_outbox_oldest(&c->ob))) {
        hc_done d;
        hc_outbox_take(&c->ob, e->seq, &d);
        if (d.cb) d.cb(d.arg, status, "");
    }
}

/* What "no answer in time" means now: TIMEOUT while connected to a broker
 * that answered our HELLO on this connection, else UNREACHABLE. */
static int silence_status(const herald_client *c)
{
    return c->handshaken && !c->hello_pending && c->welcomed ? HERALD_E_TIMEOUT : HERALD_E_UNREACHABLE;
}

/* Gives up on publishes older than timeout_ms, oldest first. */
static void expire(herald_client *c, int64_t now)
{
    hc_entry *e;
    while ((e = hc_outbox_oldest(&c->ob)) && now - e->submitted_ms >= c->timeout_ms) {
        int status = silence_status(c);
        if (status == HERALD_E_UNREACHABLE)
            unreachable_error(c);
        else
            hc_set_error(c, "no confirm from broker %s within %g s", c->endpoint, c->timeout_ms / 1000.0);
        c->expired++;
        c->expired_status = status;
        hc_done d;
        hc_outbox_take(&c->ob, e->seq, &d);
        if (d.cb) d.cb(d.arg, status, "");
    }
}

/* Runs turns until u holds. 0; c->fatal once the client cannot go on;
 * HERALD_E_TIMEOUT at deadline_ms. force: send every unsent publish now
 * (the caller is going to wait anyway) instead of gathering a batch. */
static int wait_until(herald_client *c, until_t u, uint64_t seq, int64_t deadline_ms, bool force)
{
    for (;;) {
        if (reached(c, u, seq)) return 0;
        if (u == UNTIL_WELCOME && c->no_broker[0]) return HERALD_E_UNREACHABLE;   /* no broker to wait for */
        if (c->fatal) {
            fail_all(c, c->fatal);
            memcpy(c->last_error, c->fatal_error, sizeof c->last_error);
            return c->fatal;
        }
        int64_t now = util_mono_ms();
        expire(c, now);
        if (reached(c, u, seq)) return 0;
        if (now >= deadline_ms) return HERALD_E_TIMEOUT;
        hc_session_pump(c, force);   /* a failed send stays unsent: next turn */
        int64_t wake = deadline_ms;
        hc_entry *old = hc_outbox_oldest(&c->ob);
        if (old && old->submitted_ms + c->timeout_ms < wake) wake = old->submitted_ms + c->timeout_ms;
        int rc = hc_session_poll(c, wake > now ? wake - now : 1);
        if (rc && !c->fatal) return rc;
    }
}

static int await_welcome(herald_client *c)
{
    if (c->welcomed) return 0;
    c->no_broker[0] = '\0';   /* a new try: a broker may have come meanwhile, */
    c->refused_since_ms = 0;  /* so retries queued in the monitor before it count anew */
    int rc = wait_until(c, UNTIL_WELCOME, 0, util_mono_ms() + c->timeout_ms, false);
    if (rc == HERALD_E_UNREACHABLE && c->no_broker[0] && !c->fatal) {
        hc_set_error(c, "broker %s unreachable: %s", c->endpoint, c->no_broker);
    } else if (rc == HERALD_E_TIMEOUT) {
        unreachable_error(c);
        rc = HERALD_E_UNREACHABLE;
    }
    return rc;
}

/* ---- publishing -------------------------------------------------------- */

/* Checks, waits for the limits and for room in the window, and adds one
 * publish to the outbox (*seq is its sequence). 0 or a status. */
static int enqueue(herald_client *c, const char *topic, const char *function, const void *payload,
                   size_t len, const herald_publish_opts *o, herald_confirm_fn *cb, void *arg,
                   uint64_t *seq)
{
    if (!c) return HERALD_E_INVALID;
    if (c->closing) {
        hc_set_error(c, "the client is closing: no new publishes");
        return HERALD_E_INVALID;
    }
    char err[HC_ERROR_MAX];
    uint32_t delay_ms;
    int rc = hc_check_publish(topic, function, payload, len, o, &delay_ms, err, sizeof err);
    if (rc) {
        hc_set_error(c, "%s", err);
        return rc;
    }
    if (c->fatal) {
        memcpy(c->last_error, c->fatal_error, sizeof c->last_error);
        return c->fatal;
    }
    uint64_t want = o ? o->seq : 0;
    if (want && !c->own_producer) {
        hc_set_error(c, "an explicit seq needs herald_options.producer_id");
        return HERALD_E_INVALID;
    }
    if (want && want < c->ob.tail) {
        hc_set_error(c, "seq %llu is not above the last one this client used (%llu)", (unsigned long long)want,
                     (unsigned long long)(c->ob.tail - 1));
        return HERALD_E_INVALID;
    }
    if ((rc = await_welcome(c))) return rc;
    if (len > c->max_payload) {
        hc_set_error(c, "payload of %zu bytes is larger than the broker's max_payload (%llu bytes)", len,
                     (unsigned long long)c->max_payload);
        return HERALD_E_TOO_LARGE;
    }
    /* Confirms that came meanwhile: callbacks, room, and the send below. */
    if ((rc = hc_session_poll(c, 0)) && c->fatal) return c->fatal;
    if (hc_outbox_full(&c->ob)) {
        unsigned expired = c->expired;
        rc = wait_until(c, UNTIL_ROOM, 0, util_mono_ms() + c->timeout_ms, true);
        /* Room made by giving up on old publishes is no room: the broker is
         * not answering, so this one is refused too. */
        if (!rc && c->expired != expired) rc = c->expired_status;
        if (rc == HERALD_E_TIMEOUT)
            hc_set_error(c, "window full (%u publishes, %zu payload bytes in flight; at most %u and %zu MiB): "
                         "no confirm from broker %s within %g s", hc_outbox_live(&c->ob), c->ob.bytes, c->ob.cap,
                         HC_WINDOW_BYTES >> 20, c->endpoint, c->timeout_ms / 1000.0);
        if (rc) return rc;
    }
    /* An explicit seq far above the oldest live one waits for the outbox to
     * empty: the ring holds seqs of one span of at most `window`. */
    if (want && !hc_outbox_skip_to(&c->ob, want)) {
        rc = wait_until(c, UNTIL_EMPTY, 0, util_mono_ms() + c->timeout_ms, true);
        if (rc == HERALD_E_TIMEOUT)
            hc_set_error(c, "no confirm from broker %s within %g s", c->endpoint, c->timeout_ms / 1000.0);
        if (rc) return rc;
        if (want < c->ob.tail || !hc_outbox_skip_to(&c->ob, want)) {   /* a callback published meanwhile */
            hc_set_error(c, "seq %llu is not above the last one this client used (%llu)",
                         (unsigned long long)want, (unsigned long long)(c->ob.tail - 1));
            return HERALD_E_INVALID;
        }
    }
    const herald_attr *attrs = o ? o->attrs : NULL;
    hc_entry *e = hc_outbox_push(&c->ob, topic ? topic : "", function, attrs, o ? o->nattrs : 0,
                                 o ? o->dedup_id : NULL, delay_ms, payload, len, cb, arg, util_mono_ms());
    if (!e) {
        hc_set_error(c, "out of memory copying a publish of %zu bytes", len);
        return HERALD_E_NOMEM;
    }
    *seq = e->seq;
    hc_session_pump(c, false);
    return 0;
}

int herald_publish_async(herald_client *c, const char *topic, const void *payload, size_t len,
                         const herald_publish_opts *opts, herald_confirm_fn *cb, void *arg)
{
    uint64_t seq;
    if (!topic) {
        if (c) hc_set_error(c, "topic is NULL");
        return HERALD_E_INVALID;
    }
    return enqueue(c, topic, NULL, payload, len, opts, cb, arg, &seq);
}

typedef struct {
    bool done;
    int status;
    char id[HERALD_ID_MAX];
} sync_result;

static void sync_confirmed(void *arg, int status, const char *id)
{
    sync_result *r = arg;
    r->done = true;
    r->status = status;
    snprintf(r->id, sizeof r->id, "%s", id ? id : "");
}

/* One publish (or async invoke), waited for. Earlier async publishes go out
 * first and their callbacks run meanwhile. */
static int publish_sync(herald_client *c, const char *topic, const char *function, const void *payload,
                        size_t len, const herald_publish_opts *o, char message_id[HERALD_ID_MAX])
{
    sync_result r = { 0 };
    uint64_t seq;
    if (message_id) message_id[0] = '\0';
    int rc = enqueue(c, topic, function, payload, len, o, sync_confirmed, &r, &seq);
    if (rc) return rc;
    /* expire() settles the entry by submitted + timeout_ms; the slack only
     * guards against a bug leaving the loop spinning. */
    rc = wait_until(c, UNTIL_DONE, seq, util_mono_ms() + c->timeout_ms + 1000, true);
    if (!r.done) {
        hc_done d;   /* r lives on this stack: the entry must not outlive it */
        hc_outbox_take(&c->ob, seq, &d);
        return rc ? rc : HERALD_E_TIMEOUT;
    }
    if (message_id) memcpy(message_id, r.id, HERALD_ID_MAX);
    return r.status;
}

int herald_publish(herald_client *c, const char *topic, const void *payload, size_t len,
                   const herald_publish_opts *opts, char message_id[HERALD_ID_MAX])
{
    if (!topic) {
        if (message_id) message_id[0] = '\0';
        if (c) hc_set_error(c, "topic is NULL");
        return HERALD_E_INVALID;
    }
    return publish_sync(c, topic, NULL, payload, len, opts, message_id);
}

int herald_invoke_async(herald_client *c, const char *function, const void *payload, size_t len,
                        char message_id[HERALD_ID_MAX])
{
    /* A PUBLISH entry with topic "" and the function set: stored like an
     * event, then delivered to that one function. */
    return publish_sync(c, NULL, function, payload, len, NULL, message_id);
}

int herald_invoke(herald_client *c, const char *function, const void *payload, size_t len, int timeout_ms,
                  void **output, size_t *output_len)
{
    if (output) *output = NULL;
    if (output_len) *output_len = 0;
    if (!c) return HERALD_E_INVALID;
    if (!function || !proto_valid_name(function)) {
        hc_set_error(c, "invalid function name (expected 1 to 128 of A-Z a-z 0-9 _ . -)");
        return HERALD_E_INVALID;
    }
    if (c->inv_req) {
        hc_set_error(c, "one synchronous invoke at a time per client (called from a callback?)");
        return HERALD_E_INVALID;
    }
    if (c->fatal) {
        memcpy(c->last_error, c->fatal_error, sizeof c->last_error);
        return c->fatal;
    }
    int rc = await_welcome(c);
    if (rc) return rc;
    if (len > c->max_payload) {
        hc_set_error(c, "payload of %zu bytes is larger than the broker's max_payload (%llu bytes)", len,
                     (unsigned long long)c->max_payload);
        return HERALD_E_TOO_LARGE;
    }
    proto_invoke in = { .req = ++c->inv_seq, .function = (char *)function,
                        .timeout_ms = timeout_ms > 0 ? (uint32_t)timeout_ms : 0 };
    proto_iov iov = { payload, len };
    msgpack_sbuffer_clear(&c->sb);
    if (proto_encode_invoke(&c->sb, &in) != 0) return HERALD_E_NOMEM;
    unsigned gen = c->generation;
    if (frames_send(c->sock, NULL, 0, &c->sb, &iov, 1, ZMQ_DONTWAIT) != 0) {
        hc_set_error(c, "cannot send to broker %s: %s", c->endpoint, zmq_strerror(errno));
        return HERALD_E_UNREACHABLE;
    }
    c->inv_req = in.req;
    c->inv_done = false;
    /* the broker answers by the deadline it was given (default: the
     * function's timeout + 5 s, at most 900 + 5 s); a little slack for the trip */
    int64_t deadline = util_mono_ms() + (timeout_ms > 0 ? timeout_ms : 905000) + 2000;
    rc = 0;
    while (!c->inv_done && !c->fatal) {
        int64_t now = util_mono_ms();
        if (now >= deadline) {
            hc_set_error(c, "no answer to the invoke of %s from broker %s", function, c->endpoint);
            rc = HERALD_E_TIMEOUT;
            break;
        }
        if (c->generation != gen) {   /* the connection was replaced: the reply is lost */
            hc_set_error(c, "the connection to broker %s was lost during the invoke of %s", c->endpoint, function);
            rc = HERALD_E_UNREACHABLE;
            break;
        }
        hc_session_pump(c, false);     /* async publishes keep flowing meanwhile */
        expire(c, now);
        int prc = hc_session_poll(c, deadline - now < 100 ? deadline - now : 100);
        if (prc && !c->fatal) { rc = prc; break; }
    }
    c->inv_req = 0;
    if (!rc && c->fatal) {
        memcpy(c->last_error, c->fatal_error, sizeof c->last_error);
        rc = c->fatal;
    }
    if (rc) return rc;
    if (c->inv_status != PROTO_OK) {
        hc_set_error(c, "%s", c->inv_error[0] ? c->inv_error : proto_status_name(c->inv_status));
        free(c->inv_out);
        c->inv_out = NULL;
        int st = hc_status_from_proto(c->inv_status);
        return st ? st : HERALD_E_REFUSED;
    }
    if (output) *output = c->inv_out;   /* the caller's now */
    else free(c->inv_out);
    if (output_len) *output_len = c->inv_out_len;
    c->inv_out = NULL;
    return 0;
}

int herald_reconnect(herald_client *c)
{
    if (!c) return HERALD_E_INVALID;
    if (c->fatal) return c->fatal;
    return hc_session_reopen(c);
}

int herald_flush(herald_client *c, int timeout_ms)
{
    if (!c) return HERALD_E_INVALID;
    if (timeout_ms <= 0) timeout_ms = c->timeout_ms;
    unsigned expired = c->expired;
    int rc = wait_until(c, UNTIL_EMPTY, 0, util_mono_ms() + timeout_ms, true);
    if (!rc && c->expired != expired) rc = c->expired_status;   /* last_error set by expire() */
    if (rc == HERALD_E_TIMEOUT) {
        if (silence_status(c) == HERALD_E_UNREACHABLE) {
            unreachable_error(c);
            rc = HERALD_E_UNREACHABLE;
        } else {
            hc_set_error(c, "flush: %u publishes still unconfirmed after %g s", hc_outbox_live(&c->ob),
                         timeout_ms / 1000.0);
        }
    }
    return rc;
}

void herald_close(herald_client **pc)
{
    if (!pc || !*pc) return;
    herald_client *c = *pc;
    if (!c->fatal && hc_outbox_live(&c->ob)) herald_flush(c, c->timeout_ms);
    c->closing = true;   /* callbacks below must not add publishes */
    fail_all(c, c->fatal ? c->fatal : HERALD_E_TIMEOUT);
    hc_session_close(c);   /* LINGER 0: what is not confirmed now was reported above */
    zmq_ctx_term(c->ctx);
    frames_close(&c->in);
    free(c->in.parts);
    msgpack_sbuffer_destroy(&c->sb);
    free(c->pubs);
    free(c->iov);
    free(c->batch);
    hc_outbox_free(&c->ob);
    free(c->endpoint);
    free(c->inv_out);
    free(c);
    *pc = NULL;
}

const char *herald_strerror(int status)
{
    switch (status) {
    case 0: return "success";
    case HERALD_E_UNREACHABLE: return "broker unreachable";
    case HERALD_E_TIMEOUT: return "timed out waiting for the broker";
    case HERALD_E_INVALID: return "invalid argument";
    case HERALD_E_TOO_LARGE: return "payload too large";
    case HERALD_E_UNKNOWN: return "unknown topic or function";
    case HERALD_E_THROTTLED: return "throttled by the broker: try later";
    case HERALD_E_REFUSED: return "refused by the broker";
    case HERALD_E_HANDLER: return "the handler failed";
    case HERALD_E_NO_WORKER: return "no worker serves the function";
    case HERALD_E_NOMEM: return "out of memory";
    case HERALD_E_INTERNAL: return "broker-side failure: nothing stored";
    case HERALD_E_BUSY: return "no worker slot became free in time: nothing ran";
    default: return "unknown status";
    }
}

const char *herald_last_error(const herald_client *c)
{
    return c ? c->last_error : connect_error;
}
