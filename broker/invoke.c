/* invoke.c — synchronous invokes (Lambda's RequestResponse): INVOKE on the
 * publish or admin endpoint runs the function once on a worker and answers
 * INVOKE_REPLY with the handler's output or error.
 *
 * Nothing is stored and nothing is retried: an invoke is a delivery in memory
 * (d->inv set) on b->invoke_queue until a worker slot frees, dispatched ahead
 * of queued work (someone is waiting), counted in its function's concurrency
 * and stats. Unknown function, or no connected worker serving it: answered at
 * once. Its deadline bounds queueing plus run; past it the caller hears
 * "timeout" and a late result is dropped (the lease still ends normally, so
 * the slot is accounted for). An output over 6 MiB fails the invoke
 * (Function.ResponseSizeTooLarge), never a cut-off success.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"

static void reply(broker_t *b, void *sock, const void *rid, size_t rid_len, uint64_t req, uint32_t status,
                  const char *error, const char *mid, const void *out, size_t out_len)
{
    proto_invoke_reply r = { .req = req, .status = status, .error = (char *)error, .message_id = (char *)mid };
    proto_iov iov = { out, out_len };
    msgpack_sbuffer_clear(&b->sb);
    if (proto_encode_invoke_reply(&b->sb, &r) == 0)
        frames_send(sock, rid, rid_len, &b->sb, &iov, 1, ZMQ_DONTWAIT);
}

static bool served(broker_t *b, const function_t *fn)
{
    for (list_node *n = b->workers.head.next; n != &b->workers.head; n = n->next) {
        worker_t *w = container_of(n, worker_t, link);
        if (!w->dead && !w->draining && worker_serves(w, fn)) return true;
    }
    return false;
}

static sub_t *own_queue(broker_t *b, const function_t *fn)
{
    for (size_t i = 0; i < b->nsubs; i++)
        if (b->subs[i]->fn == fn && !b->subs[i]->topic[0]) return b->subs[i];
    return NULL;
}

void invoke_handle(broker_t *b, void *sock, proto_frames *f, const proto_msg *m)
{
    const proto_invoke *in = &m->u.invoke;
    const void *rid = frames_data(f, 0);
    size_t rid_len = frames_size(f, 0);
    char why[256];
    function_t *fn = broker_function(b, in->function);
    if (!fn) {
        snprintf(why, sizeof why, "unknown function '%s'", in->function);
        reply(b, sock, rid, rid_len, in->req, PROTO_E_UNKNOWN_FUNCTION, why, "", NULL, 0);
        return;
    }
    /* what the request itself gets wrong before what the moment does: a
     * payload too large stays too large when a worker comes (PROTOCOL.md INVOKE) */
    size_t len = frames_size(f, 2);
    if ((int64_t)len > b->cfg->broker.max_payload) {
        snprintf(why, sizeof why, "payload of %zu bytes is larger than max_payload (%lld bytes)", len,
                 (long long)b->cfg->broker.max_payload);
        reply(b, sock, rid, rid_len, in->req, PROTO_E_TOO_LARGE, why, "", NULL, 0);
        return;
    }
    if (!served(b, fn)) {
        snprintf(why, sizeof why, "no connected worker serves function '%s'", in->function);
        reply(b, sock, rid, rid_len, in->req, PROTO_E_NO_WORKER, why, "", NULL, 0);
        return;
    }
    /* a fresh message id per invoke: "i" + this run's start + a sequence */
    char mid[PROTO_ID_MAX + 1];
    snprintf(mid, sizeof mid, "i%llx-%llu", (unsigned long long)b->started_ms,
             (unsigned long long)++b->invoke_seq);
    invocation *inv = calloc(1, sizeof *inv);
    message_t *msg = message_new(0, mid, "", NULL, 0);
    sub_t *own = own_queue(b, fn);
    delivery_t *d = msg && own ? delivery_new(b, own, msg, 0) : NULL;
    if (!inv || !d) {
        free(inv);
        if (msg && !d) { msg->refs = 1; message_unref(&msg); }
        reply(b, sock, rid, rid_len, in->req, PROTO_E_INTERNAL, "out of memory", "", NULL, 0);
        return;
    }
    zmq_msg_init(&msg->zmsg);
    zmq_msg_move(&msg->zmsg, &f->parts[2]);
    msg->zmsg_owned = true;
    msg->payload = zmq_msg_data(&msg->zmsg);
    msg->payload_len = len;
    memcpy(inv->rid, rid, rid_len);
    inv->rid_len = rid_len;
    inv->sock = sock;
    inv->req = in->req;
    int64_t timeout = in->timeout_ms ? in->timeout_ms : (int64_t)(fn->cfg->timeout_s * 1000.0) + 5000;
    inv->deadline_ms = util_mono_ms() + timeout;
    inv->d = d;
    d->inv = inv;
    list_push_back(&b->invocations, &inv->link);
    list_push_back(&b->invoke_queue, &d->link);
}

static void forget(broker_t *b, delivery_t *d)
{
    invocation *inv = d->inv;
    list_remove(&b->invocations, &inv->link);
    free(inv);
    d->inv = NULL;
    delivery_free(b, d);
}

void invoke_finish(broker_t *b, delivery_t *d, proto_outcome o, const char *error,
                   const proto_result_entry *r, const void *out, size_t out_len)
{
    invocation *inv = d->inv;
    function_t *fn = d->sub->fn;
    /* An ok attempt with an error text had an output over the cap (PROTOCOL.md
     * RESULT): a sync invoke fails with it, like Lambda's ResponseSizeTooLarge. */
    if (o == OUT_OK && error && *error) o = OUT_ERROR;
    delivery_release(b, d);
    count_attempt(fn, o, r);
    if (!inv->answered) {
        char why[PROTO_ERROR_TEXT_MAX + 64];
        if (o != OUT_OK)
            snprintf(why, sizeof why, "%s", error && *error ? error : proto_outcome_name(o));
        reply(b, inv->sock, inv->rid, inv->rid_len, inv->req, o == OUT_OK ? PROTO_OK : PROTO_E_HANDLER,
              o == OUT_OK ? NULL : why, d->msg->mid, o == OUT_OK ? out : NULL, o == OUT_OK ? out_len : 0);
    }
    forget(b, d);
}

void invoke_tick(broker_t *b, int64_t now)
{
    list_node *n = b->invocations.head.next;
    while (n != &b->invocations.head) {
        invocation *inv = container_of(n, invocation, link);
        n = n->next;
        if (inv->answered || now < inv->deadline_ms) continue;
        delivery_t *d = inv->d;
        /* BUSY: it never ran (a client may retry); TIMEOUT: it may have */
        bool queued = d->state == DELIVERY_READY;
        reply(b, inv->sock, inv->rid, inv->rid_len, inv->req, queued ? PROTO_E_BUSY : PROTO_E_TIMEOUT,
              queued ? "timeout: no worker slot became free in time" : "timeout: the handler did not answer in time",
              queued ? "" : d->msg->mid, NULL, 0);
        inv->answered = true;
        if (d->state == DELIVERY_READY) {   /* never dispatched: gone */
            list_remove(&b->invoke_queue, &d->link);
            forget(b, d);
        }
    }
}

void invoke_teardown(broker_t *b)
{
    list_node *n;
    while ((n = list_pop_front(&b->invoke_queue)) != NULL) forget(b, container_of(n, delivery_t, link));
    /* in-flight ones are freed with their workers' leases */
    while ((n = list_pop_front(&b->invocations)) != NULL) {
        invocation *inv = container_of(n, invocation, link);
        inv->d->inv = NULL;
        free(inv);
    }
}
