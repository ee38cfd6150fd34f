/* session: the client's link to the broker's publish endpoint (a ROUTER).
 *
 * One DEALER socket (no empty delimiter frame) and a PAIR that reads its
 * monitor. The first message on every socket is HELLO {producer id,
 * "publisher"}; the broker answers WELCOME with its limits, then one CONFIRM
 * per PUBLISH, or ERROR for a request it refused whole.
 *
 * Reconnect (DESIGN §5): when a connection that completed its handshake drops,
 * this file closes the socket and opens a fresh one rather than letting libzmq
 * reconnect the old one, because the old socket's queue may still hold
 * PUBLISH messages that would reach the new connection before its HELLO. The
 * fresh socket queues HELLO, then every unconfirmed publish with its original
 * sequence; the broker answers those it already stored with their original
 * ids. The monitor watches HANDSHAKE_SUCCEEDED rather than CONNECTED: a TCP
 * connect whose CURVE handshake fails must not count as "was connected".
 */
#include "client.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MONITOR_EVENTS (ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED | \
                        ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_RETRIED | \
                        ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | \
                        ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
#define DRAIN_MAX 1024   /* messages handled per poll, so a flood cannot starve the caller */

/* ---- CURVE keys -------------------------------------------------------- */

int hc_session_load_keys(herald_client *c, const char *key_file, const char *broker_key_file,
                         char *err, size_t errlen)
{
    if (!zmq_has("curve")) {
        snprintf(err, errlen, "this libzmq was built without CURVE support");
        return -1;
    }
    if (keys_read(key_file, "public-key", c->curve_public, err, errlen) < 0 ||
        keys_read(key_file, "secret-key", c->curve_secret, err, errlen) < 0 ||
        keys_read(broker_key_file, "public-key", c->curve_server, err, errlen) < 0)
        return -1;
    c->curve = true;
    return 0;
}

/* ---- the socket -------------------------------------------------------- */

static int set_int(void *s, int opt, int v)
{
    return zmq_setsockopt(s, opt, &v, sizeof v);
}

static int send_hello(herald_client *c)
{
    proto_hello h = { .client_id = c->producer, .role = "publisher" };
    c->sb.size = 0;
    if (proto_encode_hello(&c->sb, &h) < 0) return -1;
    /* Queued even while unconnected (no ZMQ_IMMEDIATE): it leaves first. */
    if (frames_send(c->sock, NULL, 0, &c->sb, NULL, 0, 0) < 0) return -1;
    c->hello_pending = true;
    return 0;
}

/* Says what failed while errno is still libzmq's, then unwinds. */
#define FAIL(label) do { \
        hc_set_error(c, "cannot %s for broker %s: %s", what, c->endpoint, zmq_strerror(errno)); \
        goto label; \
    } while (0)

int hc_session_open(herald_client *c)
{
    char mon_ep[96];
    snprintf(mon_ep, sizeof mon_ep, "inproc://herald-monitor-%p-%u", (void *)c, ++c->generation);
    const char *what = "create a socket";
    void *m = NULL, *s = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!s) FAIL(fail_socket);
    /* HWMs count messages: at most one per in-flight publish, plus HELLOs. */
    int hwm = (int)c->ob.cap + 64;
    int64_t maxmsg = HC_MAX_MSG_SIZE;
    what = "set socket options";
    if (set_int(s, ZMQ_SNDHWM, hwm) < 0 || set_int(s, ZMQ_RCVHWM, hwm) < 0 ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0 ||
        set_int(s, ZMQ_SNDTIMEO, c->timeout_ms) < 0 || set_int(s, ZMQ_LINGER, 0) < 0 ||
        set_int(s, ZMQ_HEARTBEAT_IVL, HC_ZMTP_HEARTBEAT_MS) < 0 ||
        set_int(s, ZMQ_HEARTBEAT_TIMEOUT, HC_ZMTP_HEARTBEAT_TIMEOUT_MS) < 0)
        FAIL(fail_options);
    what = "set the CURVE keys";
    if (c->curve && (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, c->curve_server, 41) < 0 ||
                     zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, c->curve_public, 41) < 0 ||
                     zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, c->curve_secret, 41) < 0))
        FAIL(fail_options);
    /* Monitor before connect, or the first events go nowhere. */
    what = "monitor the socket";
    if (zmq_socket_monitor(s, mon_ep, MONITOR_EVENTS) < 0) FAIL(fail_options);
    m = zmq_socket(c->ctx, ZMQ_PAIR);
    if (!m) FAIL(fail_options);
    if (set_int(m, ZMQ_LINGER, 0) < 0 || zmq_connect(m, mon_ep) < 0) FAIL(fail_monitor);
    what = "connect";
    if (zmq_connect(s, c->endpoint) < 0) FAIL(fail_monitor);
    c->sock = s;
    c->mon = m;
    c->handshaken = false;
    c->connected = false;
    what = "queue HELLO";
    if (send_hello(c) < 0) FAIL(fail_hello);
    return 0;

fail_hello:
    c->sock = c->mon = NULL;
fail_monitor:
    zmq_close(m);
fail_options:
    zmq_close(s);
fail_socket:
    return -1;
}
#undef FAIL

void hc_session_close(herald_client *c)
{
    if (c->sock) {
        /* The monitor first: a socket being closed still reports events
         * (disconnected, closed), and libzmq's IO thread blocks for good
         * sending one to a monitor whose reader is gone — every socket of
         * the context, the next one included, would then stop connecting. */
        zmq_socket_monitor(c->sock, NULL, 0);
        set_int(c->sock, ZMQ_LINGER, 0);   /* close never waits: the outbox holds the copies */
        zmq_close(c->sock);
        c->sock = NULL;
    }
    if (c->mon) {
        zmq_close(c->mon);
        c->mon = NULL;
    }
    c->handshaken = false;
    c->hello_pending = false;
}

/* After a dropped connection: fresh socket, HELLO, every unconfirmed publish.
 * Confirms still unread on the old socket are dropped on purpose: their
 * publishes go again and come back "already stored" with the same ids, and
 * not reading them here keeps callbacks out of this function. */
int hc_session_reopen(herald_client *c)
{
    hc_session_close(c);
    hc_outbox_unsend_all(&c->ob);
    if (hc_session_open(c) < 0) {
        hc_set_fatal(c, HERALD_E_INTERNAL, "cannot reconnect to %s: %s", c->endpoint, c->last_error);
        return c->fatal;
    }
    return hc_session_pump(c, true);
}

/* ---- sending ----------------------------------------------------------- */

static int send_batch(herald_client *c, hc_entry **es, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        c->pubs[i] = es[i]->pub;
        c->iov[i] = (proto_iov){ es[i]->payload, es[i]->len };
    }
    proto_publish p = { .producer = c->producer, .pubs = c->pubs, .npubs = n };
    c->sb.size = 0;
    if (proto_encode_publish(&c->sb, &p) < 0) {
        hc_set_error(c, "out of memory encoding a batch of %u", n);
        return HERALD_E_NOMEM;
    }
    while (frames_send(c->sock, NULL, 0, &c->sb, c->iov, n, 0) < 0) {
        if (errno == EINTR) continue;
        hc_set_error(c, "cannot send to broker %s: %s", c->endpoint, zmq_strerror(errno));
        return errno == EAGAIN ? HERALD_E_TIMEOUT : HERALD_E_INTERNAL;
    }
    return 0;
}

int hc_session_pump(herald_client *c, bool force)
{
    if (!c->welcomed || c->fatal || !c->sock) return 0;   /* limits unknown, or nowhere to send */
    for (;;) {
        uint32_t unsent = hc_outbox_unsent(&c->ob);
        if (unsent == 0) return 0;
        /* Latency first: with fewer than two batches in flight the broker
         * would idle, so send now. Otherwise gather until a full batch, or
         * until a confirm brings batches_out down again. */
        if (!force && c->ob.batches_out >= 2 && unsent < c->max_batch) return 0;
        uint32_t n = hc_outbox_collect(&c->ob, c->max_batch, c->batch);
        if (n == 0) return 0;
        int rc = send_batch(c, c->batch, n);
        if (rc) return rc;   /* still unsent: the next turn tries again */
        hc_outbox_mark_sent(&c->ob, c->batch, n);
    }
}

/* ---- receiving --------------------------------------------------------- */

static void finish(herald_client *c, uint64_t seq, int status, const char *text)
{
    hc_done d;
    if (!hc_outbox_take(&c->ob, seq, &d)) return;   /* a duplicate answer, or given up on */
    if (status) hc_set_error(c, "%s", text && *text ? text : herald_strerror(status));
    if (d.cb) d.cb(d.arg, status, status ? "" : (text ? text : ""));
}

static void on_welcome(herald_client *c, const proto_welcome *w)
{
    uint32_t b = w->max_batch;
    if (b > HC_BATCH_MAX) b = HC_BATCH_MAX;
    if (b > PROTO_MAX_BATCH) b = PROTO_MAX_BATCH;
    c->max_batch = b ? b : 1;
    c->max_payload = w->max_payload;
    c->welcomed = true;
    c->hello_pending = false;
}

/* An ERROR is a refusal that carries no correlation. A broker that can read
 * a refused PUBLISH's seqs answers with a CONFIRM entry per seq instead
 * (PROTOCOL.md §5), which finish() matches like any confirm; so an ERROR here
 * refuses our HELLO when no WELCOME followed it yet, else (an older broker,
 * or a batch it could not read) our oldest batch in flight. */
static void on_error(herald_client *c, const proto_error *e)
{
    int status = hc_status_from_proto(e->status);
    if (!status) status = HERALD_E_REFUSED;
    const char *text = e->text && *e->text ? e->text : proto_status_name(e->status);
    if (c->hello_pending) {
        hc_set_fatal(c, status, "broker %s refused HELLO: %s", c->endpoint, text);
        return;
    }
    uint64_t serial = hc_outbox_oldest_batch(&c->ob);
    hc_set_error(c, "%s", text);
    if (!serial) return;
    /* Collect first: callbacks may publish and move the ring. */
    uint64_t seqs[PROTO_MAX_BATCH];
    uint32_t n = 0;
    for (uint64_t s = c->ob.head; s < c->ob.next_send && n < PROTO_MAX_BATCH; s++) {
        hc_entry *en = hc_outbox_find(&c->ob, s);
        if (en && en->batch == serial) seqs[n++] = s;
    }
    for (uint32_t i = 0; i < n; i++) finish(c, seqs[i], status, text);
}

static void handle(herald_client *c, proto_msg *m)
{
    switch (m->type) {
    case MSG_WELCOME:
        on_welcome(c, &m->u.welcome);
        break;
    case MSG_CONFIRM:
        /* In the broker's order, which is publish order within a batch. */
        for (uint32_t i = 0; i < m->u.confirm.n; i++) {
            const proto_confirm_entry *ce = &m->u.confirm.entries[i];
            finish(c, ce->seq, hc_status_from_proto(ce->status), ce->text);
        }
        break;
    case MSG_ERROR:
        on_error(c, &m->u.error);
        break;
    default:
        break;   /* nothing else is meant for a publisher: dropped */
    }
}

static int drain_socket(herald_client *c)
{
    for (int i = 0; i < DRAIN_MAX && c->sock; i++) {
        if (frames_recv(c->sock, &c->in, PROTO_MAX_FRAMES, ZMQ_DONTWAIT) < 0) {
            if (errno == EAGAIN || errno == EINTR) return 0;
            hc_set_error(c, "cannot receive from broker %s: %s", c->endpoint, zmq_strerror(errno));
            return HERALD_E_INTERNAL;
        }
        proto_msg m;
        char err[256];
        bool ok = c->in.n >= 1 && !c->in.truncated &&
                  proto_decode(frames_data(&c->in, 0), frames_size(&c->in, 0), &m, err, sizeof err) == 0;
        if (ok && m.nframes != (uint32_t)(c->in.n - 1)) {
            proto_msg_clear(&m);
            ok = false;
        }
        /* An invoke's output is the one payload frame that comes to a
         * client: kept (copied) for herald_invoke before the frames go. */
        if (ok && m.type == MSG_INVOKE_REPLY && c->inv_req && m.u.invoke_reply.req == c->inv_req) {
            size_t n = frames_size(&c->in, 1);
            free(c->inv_out);
            c->inv_out = malloc(n ? n : 1);
            if (c->inv_out) memcpy(c->inv_out, frames_data(&c->in, 1), n);
            c->inv_out_len = c->inv_out ? n : 0;
            c->inv_status = c->inv_out ? m.u.invoke_reply.status : PROTO_E_INTERNAL;
            snprintf(c->inv_error, sizeof c->inv_error, "%s",
                     !c->inv_out ? "out of memory for the invoke's output"
                     : m.u.invoke_reply.error ? m.u.invoke_reply.error : "");
            c->inv_done = true;
        }
        /* Let the frames go before any callback, which may re-enter this
         * function and reuse c->in. */
        frames_close(&c->in);
        if (!ok) continue;   /* undecodable: dropped, like the broker does */
        handle(c, &m);
        proto_msg_clear(&m);
    }
    return 0;
}

static int drain_monitor(herald_client *c)
{
    while (c->mon) {
        zmq_msg_t ev;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, c->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return 0;
        }
        uint16_t event = 0;
        uint32_t value = 0;
        if (zmq_msg_size(&ev) >= 6) {
            memcpy(&event, zmq_msg_data(&ev), 2);
            memcpy(&value, (char *)zmq_msg_data(&ev) + 2, 4);
        }
        bool more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        if (more) {   /* the endpoint frame */
            zmq_msg_t ep;
            zmq_msg_init(&ep);
            zmq_msg_recv(&ep, c->mon, 0);
            zmq_msg_close(&ep);
        }
        switch (event) {
        case ZMQ_EVENT_CONNECTED:
            c->connected = true;
            c->refused_since_ms = 0;
            if (strncmp(c->no_broker, "connection refused", 18) == 0)   /* from stale retries */
                c->no_broker[0] = '\0';
            break;
        case ZMQ_EVENT_CONNECT_RETRIED: {
            /* Retries before this socket ever connected: the connect itself
             * fails (nothing listens on the tcp:// port or the ipc:// path),
             * for HC_REFUSED_MS in a row. Final only for a client no broker
             * ever welcomed: after that it is a broker restart, and the
             * outbox waits it out. */
            if (c->connected || c->welcomed) break;
            int64_t now = util_mono_ms();
            if (!c->refused_since_ms) c->refused_since_ms = now;
            if (now - c->refused_since_ms >= HC_REFUSED_MS && !c->no_broker[0])
                snprintf(c->no_broker, sizeof c->no_broker, "connection refused (is it running?)");
            break;
        }
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
            c->handshaken = true;
            c->handshake_drops = 0;
            c->handshake_note[0] = '\0';
            break;
        case ZMQ_EVENT_DISCONNECTED:
            if (c->handshaken) return hc_session_reopen(c);   /* the new monitor starts empty */
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
            hc_set_fatal(c, HERALD_E_REFUSED,
                         "broker %s refused our CURVE key (ZAP status %u): is it in the broker's publishers directory?",
                         c->endpoint, value);
            return c->fatal;
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
            if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
                hc_set_fatal(c, HERALD_E_REFUSED, "handshake with broker %s failed: CURVE on one side only (%s)",
                             c->endpoint, c->curve ? "it does not use CURVE, we do: --key/--broker-key"
                                                   : "it uses CURVE: give --key and --broker-key");
            else
                hc_set_fatal(c, HERALD_E_REFUSED, "handshake with broker %s failed (ZMTP protocol error 0x%x)",
                             c->endpoint, value);
            return c->fatal;
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            /* Also what a wrong broker key looks like; kept for the
             * "unreachable" message, since a dropped handshake can be transient. */
            snprintf(c->handshake_note, sizeof c->handshake_note, "the handshake failed%s",
                     c->curve ? ": is the broker key right?" : "");
            /* Before any WELCOME, handshakes dropped without a reason again
             * and again are a broker that speaks CURVE when we do not (seen
             * from the side that did not read the other's greeting first), or
             * the reverse, or a wrong broker key: said after a few (about
             * 0.3 s). One alone is also a broker killed during ours. */
            if (!c->welcomed && ++c->handshake_drops >= HC_HANDSHAKE_DROPS && !c->no_broker[0])
                snprintf(c->no_broker, sizeof c->no_broker, "the handshake failed: %s",
                         c->curve ? "CURVE on one side only (it does not use CURVE, we do), or the wrong broker key?"
                                  : "CURVE on one side only? (it uses CURVE: give --key and --broker-key)");
            break;
        default:
            break;
        }
    }
    return 0;
}

int hc_session_poll(herald_client *c, int64_t timeout_ms)
{
    if (timeout_ms > 0 && c->sock) {
        zmq_pollitem_t it[2] = { { c->sock, 0, ZMQ_POLLIN, 0 }, { c->mon, 0, ZMQ_POLLIN, 0 } };
        if (timeout_ms > INT_MAX) timeout_ms = INT_MAX;
        if (zmq_poll(it, 2, (long)timeout_ms) < 0 && errno != EINTR) {
            hc_set_error(c, "cannot poll the broker socket: %s", zmq_strerror(errno));
            return HERALD_E_INTERNAL;
        }
    }
    /* Socket first: what arrived before a disconnect is handled before the
     * monitor replaces the socket. */
    int rc = drain_socket(c);
    if (rc) return rc;
    return drain_monitor(c);
}
