/* admin.c — heraldctl's admin client: a DEALER on the admin endpoint, one
 * request at a time, each answered within the timeout or reported as
 * "unreachable" — except a long one (a replay or purge of many dead letters),
 * which is waited for as long as the broker answers a ping within the
 * timeout. Replies are matched by request id; stale ones are skipped. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* A connect refused this long in a row, with no connect in between, is
 * "connection refused" at once (not after the timeout); long enough that a
 * burst overflowing an ipc:// listen backlog (a refusal too) gets in on a retry. */
#define REFUSED_MS 300

int admin_open(admin_client *a, const char *endpoint, int timeout_ms, const char *key_file,
               const char *broker_key_file)
{
    memset(a, 0, sizeof *a);
    a->endpoint = endpoint;
    a->timeout_ms = timeout_ms;
    frames_init(&a->in);
    a->zctx = zmq_ctx_new();
    a->sock = a->zctx ? zmq_socket(a->zctx, ZMQ_DEALER) : NULL;
    if (!a->sock) {
        snprintf(a->error, sizeof a->error, "cannot create a socket: %s", zmq_strerror(zmq_errno()));
        return -1;
    }
    int zero = 0;
    int64_t maxmsg = (64LL << 20) + (64 << 10);
    zmq_setsockopt(a->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(a->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    /* A DEALER's send blocks while it has no pipe (a refused handshake can end
     * it): bounded like every other wait of a request. */
    int sndtimeo = timeout_ms > 0 ? timeout_ms : 1;
    zmq_setsockopt(a->sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    if (keys_client(a->sock, key_file, broker_key_file, a->error, sizeof a->error) != 0) return -1;
    /* inproc names are per context, and the context is this client's alone */
    const char *mon = "inproc://ctl-monitor";
    if (zmq_socket_monitor(a->sock, mon, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                         ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                                         ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_RETRIED) == 0) {
        a->mon = zmq_socket(a->zctx, ZMQ_PAIR);
        if (a->mon && zmq_connect(a->mon, mon) != 0) { zmq_close(a->mon); a->mon = NULL; }
    }
    if (zmq_connect(a->sock, endpoint) != 0) {
        snprintf(a->error, sizeof a->error, "bad endpoint %s: %s", endpoint, zmq_strerror(zmq_errno()));
        return -1;
    }
    return 0;
}

/* True (and a->error set, by the first event that says so) when the broker
 * refused our CURVE handshake, or, before any handshake succeeded, when the
 * connection itself was refused (a retry before any connect: no broker
 * listens on the tcp:// port or the ipc:// path) or the handshake was dropped
 * without a reason (CURVE on one side only, seen from the side that did not
 * get to read the other's greeting, or the wrong broker key). Once a handshake
 * succeeded, a refused reconnect (a long request waiting through a broker
 * restart) is not final: the timeout decides. */
static bool refused(admin_client *a)
{
    if (!a->mon) return false;
    zmq_msg_t ev;
    zmq_msg_init(&ev);
    bool no = false;
    while (zmq_msg_recv(&ev, a->mon, ZMQ_DONTWAIT) >= 0) {
        uint16_t event = 0;
        if (zmq_msg_size(&ev) >= 2) memcpy(&event, zmq_msg_data(&ev), 2);
        bool more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        zmq_msg_init(&ev);
        if (more) { zmq_msg_recv(&ev, a->mon, 0); zmq_msg_close(&ev); zmq_msg_init(&ev); }
        if (event == ZMQ_EVENT_CONNECTED) {
            a->connected = true;
            a->refused_since_ms = 0;
        } else if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            a->handshaken = true;
        } else if (no) {
            continue;   /* the first verdict stands */
        } else if (event == ZMQ_EVENT_CONNECT_RETRIED && !a->connected && !a->handshaken &&
                   (a->refused_since_ms ? util_mono_ms() - a->refused_since_ms
                                        : (a->refused_since_ms = util_mono_ms(), 0)) < REFUSED_MS) {
            continue;   /* libzmq retries every 100 ms: refused for REFUSED_MS in a row is final */
        } else if (event == ZMQ_EVENT_CONNECT_RETRIED && !a->connected && !a->handshaken) {
            snprintf(a->error, sizeof a->error, "broker unreachable at %s: connection refused (is it running?)",
                     a->endpoint);
            no = true;
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL && !a->handshaken && ++a->handshake_drops < 3) {
            continue;   /* one alone is also a broker killed during our handshake; libzmq retries in 100 ms */
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL && !a->handshaken) {
            snprintf(a->error, sizeof a->error, "handshake with broker %s failed: CURVE on one side only, or the "
                     "wrong broker key? (--key/--broker-key, HERALD_KEY/HERALD_BROKER_KEY)", a->endpoint);
            no = true;
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
            snprintf(a->error, sizeof a->error, "broker %s refused our key: is it in the broker's admins directory?",
                     a->endpoint);
            no = true;
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
            snprintf(a->error, sizeof a->error, "handshake with broker %s failed: CURVE on one side only? "
                     "(--key/--broker-key, HERALD_KEY/HERALD_BROKER_KEY)", a->endpoint);
            no = true;
        }
    }
    zmq_msg_close(&ev);
    return no;
}

static int send_ping(admin_client *a, uint64_t req)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = proto_encode_admin(&sb, req, "ping", NULL, 0) == 0 ? frames_send(a->sock, NULL, 0, &sb, NULL, 0, 0) : -1;
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* The broker's start time in a ping's answer (0: an answer without it). */
static int64_t ping_started(const proto_msg *m)
{
    const msgpack_object *r = &m->u.admin_reply.result;
    return r->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)r->via.u64 : 0;
}

/* Sends the header sb (+ payloads) and waits up to wait_ms for the reply of
 * type `want` carrying request id req; with keepalive, a ping answered
 * within wait_ms by the same run of the broker (started, when known) gives
 * it wait_ms more. 0: a->reply holds it (and a->in its frames). -1:
 * a->error says why. */
static int request(admin_client *a, msgpack_sbuffer *sb, const proto_iov *iov, size_t niov, msg_type want,
                   uint64_t req, int wait_ms, bool keepalive, int64_t started)
{
    uint64_t ping = 0;   /* the ping waiting for its answer, if any */
    if (a->have_reply) { proto_msg_clear(&a->reply); a->have_reply = false; }
    if (frames_send(a->sock, NULL, 0, sb, iov, niov, 0) != 0) {
        snprintf(a->error, sizeof a->error, "cannot send to %s: %s", a->endpoint, zmq_strerror(zmq_errno()));
        return -1;
    }
    int64_t deadline = util_mono_ms() + wait_ms;
    for (;;) {
        int64_t left = deadline - util_mono_ms();
        if (left <= 0 && keepalive && !ping) {   /* still working, or gone? */
            ping = ++a->next_req;
            if (send_ping(a, ping) != 0) break;
            deadline = util_mono_ms() + wait_ms;
            continue;
        }
        if (left <= 0) break;
        zmq_pollitem_t it[2] = { { a->sock, 0, ZMQ_POLLIN, 0 }, { a->mon, 0, ZMQ_POLLIN, 0 } };
        if (zmq_poll(it, a->mon ? 2 : 1, (long)left) <= 0) continue;
        if (refused(a)) return -1;
        if (frames_recv(a->sock, &a->in, 2, ZMQ_DONTWAIT) != 0) continue;
        char err[256];
        if (a->in.n < 1 ||
            proto_decode(frames_data(&a->in, 0), frames_size(&a->in, 0), &a->reply, err, sizeof err) != 0)
            continue;
        if (a->reply.type == MSG_ERROR) {
            snprintf(a->error, sizeof a->error, "the broker refused the request: %s", a->reply.u.error.text);
            proto_msg_clear(&a->reply);
            return -1;
        }
        uint64_t got = want == MSG_ADMIN_REPLY ? a->reply.u.admin_reply.req : a->reply.u.invoke_reply.req;
        if (a->reply.type == want && got == req && (uint32_t)a->in.n == 1 + a->reply.nframes) {
            a->have_reply = true;
            return 0;
        }
        if (ping && a->reply.type == MSG_ADMIN_REPLY && a->reply.u.admin_reply.req == ping) {
            if (started && ping_started(&a->reply) != started) {   /* it restarted: our request died with it */
                snprintf(a->error, sizeof a->error, "the broker at %s restarted before it answered: part of the "
                         "request may be done; run it again for the rest", a->endpoint);
                proto_msg_clear(&a->reply);
                return -1;
            }
            ping = 0;   /* alive: wait on */
            deadline = util_mono_ms() + wait_ms;
        }
        proto_msg_clear(&a->reply);   /* a late answer to an earlier request */
    }
    snprintf(a->error, sizeof a->error, "broker unreachable at %s: no answer within %g s", a->endpoint,
             wait_ms / 1000.0);
    return -1;
}

static int call(admin_client *a, const char *command, const void *args, size_t args_len, bool keepalive,
                int64_t started)
{
    uint64_t req = ++a->next_req;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    proto_encode_admin(&sb, req, command, args, args_len);
    int rc = request(a, &sb, NULL, 0, MSG_ADMIN_REPLY, req, a->timeout_ms, keepalive, started);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

int admin_call(admin_client *a, const char *command, const void *args, size_t args_len)
{
    return call(a, command, args, args_len, false, 0);
}

int admin_call_long(admin_client *a, const char *command, const void *args, size_t args_len)
{
    /* which run of the broker takes the request: a later ping answered by
     * another one means the request died with the first */
    if (call(a, "ping", NULL, 0, false, 0) != 0) return -1;
    int64_t started = ping_started(&a->reply);
    return call(a, command, args, args_len, true, started);
}

int admin_invoke(admin_client *a, const char *function, const void *payload, size_t len,
                 uint32_t timeout_ms, int wait_ms, const void **out, size_t *out_len)
{
    uint64_t req = ++a->next_req;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    proto_invoke in = { .req = req, .function = (char *)function, .timeout_ms = timeout_ms };
    proto_encode_invoke(&sb, &in);
    proto_iov iov = { payload, len };
    int rc = request(a, &sb, &iov, 1, MSG_INVOKE_REPLY, req, wait_ms, false, 0);
    msgpack_sbuffer_destroy(&sb);
    if (rc == 0) {
        *out = frames_data(&a->in, 1);   /* valid until the next call or admin_close */
        *out_len = frames_size(&a->in, 1);
    }
    return rc;
}

void admin_close(admin_client *a)
{
    if (a->have_reply) proto_msg_clear(&a->reply);
    a->have_reply = false;
    frames_close(&a->in);
    free(a->in.parts);
    a->in.parts = NULL;
    if (a->mon) zmq_close(a->mon);
    if (a->sock) zmq_close(a->sock);
    if (a->zctx) zmq_ctx_term(a->zctx);
    a->sock = a->zctx = a->mon = NULL;
}
