/* refuse.c — the answer to a request refused as a whole.
 *
 * A request that is malformed, or came with the wrong number of frames, is
 * answered with its own reply type when its correlation can be read
 * (PROTOCOL.md §5): a PUBLISH gets a CONFIRM with every entry's seq and the
 * status, an ADMIN an ADMIN_REPLY with its req, an INVOKE an INVOKE_REPLY
 * with its req. So a client matches the refusal to what it refused, as it
 * matches any answer — and every decoder already takes those messages, where
 * a new field in ERROR would be refused by every decoder deployed (element
 * counts are exact). The CONFIRM is queued with the turn's other confirms,
 * so it never overtakes the confirm of an earlier publish. Everything else
 * (no readable correlation, or a type this endpoint does not take) gets
 * ERROR, as before.
 */
#include <stdio.h>
#include <string.h>

#include "broker.h"

void refuse(broker_t *b, void *sock, proto_frames *f, uint32_t status, const char *text)
{
    proto_ref r;
    bool pub = sock == b->pub_sock, adm = sock == b->adm_sock;
    if (f->n < 2 || (!pub && !adm) || proto_peek_ref(frames_data(f, 1), frames_size(f, 1), &r) != 0 ||
        (r.type == MSG_ADMIN && !adm)) {
        reply_error(b, sock, f, status, text);
        return;
    }
    if (status == PROTO_E_MALFORMED) b->dropped[pub ? 0 : 2]++;
    LOG_DEBUG("refused a %s: %s", proto_type_name(r.type), text);
    switch (r.type) {
    case MSG_PUBLISH:
        publish_refuse(b, sock, f, r.seqs, r.nseqs, status, text);
        break;
    case MSG_ADMIN:
        msgpack_sbuffer_clear(&b->sb);
        if (proto_encode_admin_reply(&b->sb, r.req, status, text, NULL, 0) == 0)
            frames_send(sock, frames_data(f, 0), frames_size(f, 0), &b->sb, NULL, 0, ZMQ_DONTWAIT);
        break;
    default: {   /* INVOKE: its reply has one frame, the output, empty here */
        proto_invoke_reply ir = { .req = r.req, .status = status, .error = (char *)text, .message_id = "" };
        proto_iov none = { NULL, 0 };
        msgpack_sbuffer_clear(&b->sb);
        if (proto_encode_invoke_reply(&b->sb, &ir) == 0)
            frames_send(sock, frames_data(f, 0), frames_size(f, 0), &b->sb, &none, 1, ZMQ_DONTWAIT);
        break;
    }
    }
}

/* HELLO is optional (a client that needs no limits may skip it) and binds
 * nothing: its client_id is for logs only, a PUBLISH names its producer
 * itself. Its role must be one this endpoint serves — "publisher" on the
 * publish endpoint, "worker" on the worker endpoint, "admin" or
 * "publisher" (libherald's async invokes, heraldctl invoke --async) on the
 * admin endpoint — so a client pointed at the wrong port hears so at once. */
void hello_answer(broker_t *b, void *sock, proto_frames *f, const proto_hello *h)
{
    const char *want = sock == b->pub_sock ? "publisher" : sock == b->wrk_sock ? "worker" : "admin";
    bool ok = strcmp(h->role, want) == 0 || (sock == b->adm_sock && strcmp(h->role, "publisher") == 0);
    if (!ok) {
        char why[160];
        snprintf(why, sizeof why, "HELLO: role \"%s\" on the %s endpoint, which serves \"%s\"%s", h->role,
                 sock == b->pub_sock ? "publish" : sock == b->wrk_sock ? "worker" : "admin", want,
                 sock == b->adm_sock ? " (or \"publisher\")" : "");
        reply_error(b, sock, f, PROTO_E_MALFORMED, why);
        return;
    }
    send_welcome(b, sock, f);
}
