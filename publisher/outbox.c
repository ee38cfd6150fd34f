/* outbox: the publishes a client has accepted and the broker has not confirmed.
 *
 * Each entry is a private copy (topic, attributes, payload in one allocation),
 * because after a reconnect it is sent again with its original sequence
 * (DESIGN §5). Sequences are handed out here, contiguous from 1 (or from a
 * seq the app chose: hc_outbox_skip_to, the skipped ones never used), so the ring
 * needs no index: the entry of seq s lives at ring[s % cap] while head <= s <
 * tail. A confirmed entry frees its slot at once; head then skips free slots,
 * so confirms may arrive in any order.
 *
 * Batches: every sent batch gets a serial and a count of its unconfirmed
 * entries; batches_out (those with a count above 0) drives the send policy in
 * session.c. Invariant: in-flight serials span at most cap values, because
 * each in-flight batch holds a live entry and batches cover seqs in order.
 * No sockets and no clock here: callers pass now_ms.
 */
#include "client.h"

#include <stdlib.h>
#include <string.h>

int hc_outbox_init(hc_outbox *ob, uint32_t cap)
{
    memset(ob, 0, sizeof *ob);
    ob->ring = calloc(cap, sizeof *ob->ring);
    if (!ob->ring) goto fail_ring;
    ob->bcap = cap + 1;
    ob->batch_left = calloc(ob->bcap, sizeof *ob->batch_left);
    if (!ob->batch_left) goto fail_batch;
    ob->cap = cap;
    ob->head = ob->tail = ob->next_send = 1;
    return 0;
fail_batch:
    free(ob->ring);
    ob->ring = NULL;
fail_ring:
    return -1;
}

void hc_outbox_free(hc_outbox *ob)
{
    if (!ob->ring) return;
    for (uint32_t i = 0; i < ob->cap; i++) free(ob->ring[i].mem);
    free(ob->ring);
    free(ob->batch_left);
    memset(ob, 0, sizeof *ob);
}

static char *put_str(char **at, const char *s, size_t n)
{
    char *p = *at;
    memcpy(p, s, n);
    p[n] = '\0';
    *at += n + 1;
    return p;
}

hc_entry *hc_outbox_push(hc_outbox *ob, const char *topic, const char *function,
                         const herald_attr *attrs, size_t nattrs, const char *dedup_id,
                         uint32_t delay_ms, const void *payload, size_t len,
                         herald_confirm_fn *cb, void *arg, int64_t now_ms)
{
    if (hc_outbox_full(ob)) return NULL;
    size_t tlen = strlen(topic), flen = function ? strlen(function) : 0;
    size_t dlen = dedup_id ? strlen(dedup_id) : 0;
    /* proto_attr array first: malloc's alignment suits it; bytes after it. */
    size_t size = nattrs * sizeof(proto_attr) + len + tlen + 1 + (function ? flen + 1 : 0) +
                  (dedup_id ? dlen + 1 : 0);
    size_t klen[PROTO_MAX_ATTRS], vlen[PROTO_MAX_ATTRS];
    for (size_t i = 0; i < nattrs; i++) {
        klen[i] = strlen(attrs[i].key);
        vlen[i] = strlen(attrs[i].value);
        size += klen[i] + vlen[i] + 2;
    }
    char *mem = malloc(size ? size : 1);
    if (!mem) return NULL;

    hc_entry *e = &ob->ring[ob->tail % ob->cap];
    e->seq = ob->tail++;
    e->submitted_ms = now_ms;
    e->batch = 0;
    e->cb = cb;
    e->arg = arg;
    e->mem = mem;
    proto_attr *pa = (proto_attr *)mem;
    char *at = mem + nattrs * sizeof(proto_attr);
    e->payload = at;
    if (len) memcpy(at, payload, len);
    e->len = len;
    ob->bytes += len;
    at += len;
    e->pub.seq = e->seq;
    e->pub.topic = put_str(&at, topic, tlen);
    e->pub.function = function ? put_str(&at, function, flen) : NULL;
    e->pub.dedup_id = dedup_id ? put_str(&at, dedup_id, dlen) : NULL;
    e->pub.delay_ms = delay_ms;
    for (size_t i = 0; i < nattrs; i++) {
        pa[i].key = put_str(&at, attrs[i].key, klen[i]);
        pa[i].value = put_str(&at, attrs[i].value, vlen[i]);
    }
    e->pub.attrs = nattrs ? pa : NULL;
    e->pub.nattrs = (uint32_t)nattrs;
    return e;
}

bool hc_outbox_skip_to(hc_outbox *ob, uint64_t seq)
{
    if (seq < ob->tail) return false;
    if (hc_outbox_live(ob) == 0) {   /* nothing between: the ring starts over at seq */
        ob->head = ob->tail = ob->next_send = seq;
        return true;
    }
    /* the slots of [tail, seq) are free: live entries span fewer than cap seqs */
    if (seq - ob->head >= ob->cap) return false;
    ob->tail = seq;
    return true;
}

hc_entry *hc_outbox_find(hc_outbox *ob, uint64_t seq)
{
    if (seq < ob->head || seq >= ob->tail) return NULL;
    hc_entry *e = &ob->ring[seq % ob->cap];
    return e->seq == seq ? e : NULL;
}

hc_entry *hc_outbox_oldest(hc_outbox *ob)
{
    return hc_outbox_find(ob, ob->head);
}

bool hc_outbox_take(hc_outbox *ob, uint64_t seq, hc_done *d)
{
    hc_entry *e = hc_outbox_find(ob, seq);
    if (!e) return false;
    if (e->batch) {
        uint32_t *left = &ob->batch_left[e->batch % ob->bcap];
        if (*left && --*left == 0) ob->batches_out--;
    }
    d->cb = e->cb;
    d->arg = e->arg;
    d->seq = seq;
    ob->bytes -= e->len;
    free(e->mem);
    memset(e, 0, sizeof *e);
    while (ob->head < ob->tail && ob->ring[ob->head % ob->cap].seq != ob->head) ob->head++;
    if (ob->next_send < ob->head) ob->next_send = ob->head;
    return true;
}

uint32_t hc_outbox_collect(hc_outbox *ob, uint32_t max, hc_entry **out)
{
    uint32_t n = 0;
    for (uint64_t s = ob->next_send; s < ob->tail && n < max; s++) {
        hc_entry *e = hc_outbox_find(ob, s);
        if (e) out[n++] = e;
    }
    if (n == 0) ob->next_send = ob->tail;   /* only freed slots were left */
    return n;
}

void hc_outbox_mark_sent(hc_outbox *ob, hc_entry **es, uint32_t n)
{
    if (n == 0) return;
    uint64_t serial = ++ob->batch_serial;
    ob->batch_left[serial % ob->bcap] = n;
    ob->batches_out++;
    for (uint32_t i = 0; i < n; i++) es[i]->batch = serial;
    ob->next_send = es[n - 1]->seq + 1;
}

uint64_t hc_outbox_oldest_batch(hc_outbox *ob)
{
    for (uint64_t s = ob->head; s < ob->next_send; s++) {
        hc_entry *e = hc_outbox_find(ob, s);
        if (e && e->batch) return e->batch;
    }
    return 0;
}

void hc_outbox_unsend_all(hc_outbox *ob)
{
    for (uint64_t s = ob->head; s < ob->tail; s++) {
        hc_entry *e = hc_outbox_find(ob, s);
        if (e) e->batch = 0;
    }
    memset(ob->batch_left, 0, ob->bcap * sizeof *ob->batch_left);
    ob->batches_out = 0;
    ob->next_send = ob->head;
}
