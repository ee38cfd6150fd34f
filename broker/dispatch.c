/* dispatch.c — the one place that hands READY deliveries to workers: once
 * per loop turn after the commit, and in the middle of a long turn (between
 * PUBLISH messages, see loop.c) for what earlier turns committed. Nothing
 * uncommitted is ever dispatched: a delivery published in the open
 * transaction waits at the tail of its queue, and mid-turn no queue is
 * refilled from the table (the loop's connection would see the open
 * transaction's rows).
 *
 * Credits: a worker holds at most `slots` deliveries; a function runs at most
 * its `concurrency` across all workers. Fairness: each worker's free slots are
 * filled one delivery per eligible subscription in turn, starting from a
 * rotating subscription, so one busy queue cannot starve the others; and each
 * pump starts with the next worker, so that at low rates the work spreads over
 * every worker instead of all going to the first one with a free slot. Each
 * worker gets one DELIVER batch per turn (split at PROTO_MAX_BATCH).
 */
#include <stdlib.h>
#include <string.h>

#include "broker.h"

static bool can_run(const worker_t *w, const sub_t *s)
{
    if (!worker_serves(w, s->fn)) return false;
    int limit = s->fn->cfg->concurrency;
    return limit == 0 || s->fn->running < limit;
}

static int send_batch(broker_t *b, worker_t *w, delivery_t **ds, uint32_t n)
{
    proto_delivery pd[PROTO_MAX_BATCH];
    proto_iov iov[PROTO_MAX_BATCH];
    for (uint32_t i = 0; i < n; i++) {
        delivery_t *d = ds[i];
        pd[i] = (proto_delivery){
            .lease = d->lease, .function = d->sub->fn->name, .topic = d->msg->topic,
            .message_id = d->msg->mid, .attempt = d->attempts + 1,
            .max_attempts = (uint32_t)d->sub->fn->cfg->max_attempts,
            .attrs = d->msg->attrs, .nattrs = d->msg->nattrs,
        };
        iov[i] = (proto_iov){ d->msg->payload, d->msg->payload_len };
    }
    proto_deliver dv = { .ds = pd, .n = n };
    msgpack_sbuffer_clear(&b->sb);
    if (proto_encode_deliver(&b->sb, &dv) != 0) return -1;
    if (frames_send(b->wrk_sock, w->rid, w->rid_len, &b->sb, iov, n, ZMQ_DONTWAIT) != 0) return -1;
    w->last_sent_ms = util_mono_ms();
    return 0;
}

/* May d go out now? Not if the open transaction, not yet on disk, made it. */
static bool committed(const broker_t *b, const delivery_t *d)
{
    return !b->store.in_txn || d->txn != b->store.txn_no;
}

static void fill_worker(broker_t *b, worker_t *w, bool mid_turn)
{
    static delivery_t *batch[PROTO_MAX_BATCH];
    uint32_t n = 0;
    size_t ns = b->nsubs;
    /* sync invokes first: someone is waiting for each */
    list_node *q = b->invoke_queue.head.next;
    while (q != &b->invoke_queue.head && w->busy < w->slots) {
        delivery_t *d = container_of(q, delivery_t, link);
        q = q->next;
        if (!can_run(w, d->sub)) continue;
        delivery_dispatch(b, d, w);
        batch[n++] = d;
        if (n == PROTO_MAX_BATCH) {
            if (send_batch(b, w, batch, n) != 0) goto unreachable;
            n = 0;
        }
    }
    bool progress = true;
    while (w->busy < w->slots && progress) {
        progress = false;
        for (size_t k = 0; k < ns && w->busy < w->slots; k++) {
            sub_t *s = b->subs[(b->dispatch_rr + k) % ns];
            if (!can_run(w, s)) continue;
            if (s->ready.n == 0 && !mid_turn) queue_refill(b, s);
            list_node *node = list_first(&s->ready);
            if (!node) continue;
            delivery_t *d = container_of(node, delivery_t, link);
            if (!committed(b, d)) continue;   /* FIFO: all behind it are newer */
            delivery_dispatch(b, d, w);
            batch[n++] = d;
            progress = true;
            if (n == PROTO_MAX_BATCH) {
                if (send_batch(b, w, batch, n) != 0) goto unreachable;
                n = 0;
            }
        }
    }
    if (n && send_batch(b, w, batch, n) != 0) goto unreachable;
    return;
unreachable:
    /* the worker's connection is gone or full: give the batch back, unstarted */
    LOG_WARN("worker %s: cannot send deliveries: %s", w->id, zmq_strerror(zmq_errno()));
    for (uint32_t i = 0; i < n; i++) delivery_return(b, batch[i]);
    w->dead = true;
}

void dispatch_pump(broker_t *b, bool mid_turn)
{
    if (b->nsubs == 0) return;
    if (!mid_turn)
        for (size_t i = 0; i < b->nsubs; i++) {
            queue_refill(b, b->subs[i]);
            queue_refill_delayed(b, b->subs[i]);
        }
    size_t nw = b->workers.n, first = nw ? b->worker_rr++ % nw : 0;
    list_node *start = b->workers.head.next;
    for (size_t k = 0; k < first; k++) start = start->next;
    for (size_t k = 0; k < nw; k++) {
        list_node *n = start;
        start = start->next == &b->workers.head ? b->workers.head.next : start->next;
        worker_t *w = container_of(n, worker_t, link);
        if (!worker_ready(w) || w->busy >= w->slots) continue;
        fill_worker(b, w, mid_turn);
    }
    b->dispatch_rr = (b->dispatch_rr + 1) % b->nsubs;
}
