/* timers.c — RETRY_WAIT deliveries in a binary min-heap by visible_ms (wall
 * clock: the same time written in `delayed`). timers_run() wakes the due ones
 * and tells the loop how long it may sleep. */
#include <stdlib.h>

#include "broker.h"

static void swap(broker_t *b, size_t i, size_t j)
{
    delivery_t *t = b->timers[i];
    b->timers[i] = b->timers[j];
    b->timers[j] = t;
    b->timers[i]->heap_pos = i;
    b->timers[j]->heap_pos = j;
}

static void sift_up(broker_t *b, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (b->timers[p]->visible_ms <= b->timers[i]->visible_ms) break;
        swap(b, i, p);
        i = p;
    }
}

static void sift_down(broker_t *b, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < b->ntimers && b->timers[l]->visible_ms < b->timers[m]->visible_ms) m = l;
        if (r < b->ntimers && b->timers[r]->visible_ms < b->timers[m]->visible_ms) m = r;
        if (m == i) return;
        swap(b, i, m);
        i = m;
    }
}

void timers_add(broker_t *b, delivery_t *d)
{
    if (b->ntimers == b->timers_cap) {
        size_t cap = b->timers_cap ? b->timers_cap * 2 : 256;
        delivery_t **t = realloc(b->timers, cap * sizeof *t);
        if (!t) { LOG_ERROR("out of memory for timers"); return; }
        b->timers = t;
        b->timers_cap = cap;
    }
    d->heap_pos = b->ntimers;
    b->timers[b->ntimers++] = d;
    sift_up(b, d->heap_pos);
}

void timers_remove(broker_t *b, delivery_t *d)
{
    size_t i = d->heap_pos;
    if (i >= b->ntimers || b->timers[i] != d) return;
    b->ntimers--;
    if (i != b->ntimers) {
        b->timers[i] = b->timers[b->ntimers];
        b->timers[i]->heap_pos = i;
        sift_down(b, i);
        sift_up(b, i);
    }
}

/* Frees every waiting delivery whose row transaction txn wrote (a failed
 * commit's), keeping the rest as a heap. */
void timers_drop_txn(broker_t *b, uint64_t txn)
{
    size_t n = 0;
    for (size_t i = 0; i < b->ntimers; i++) {
        delivery_t *d = b->timers[i];
        if (d->txn == txn) {
            delivery_free(b, d);
            continue;
        }
        d->heap_pos = n;
        b->timers[n++] = d;
    }
    b->ntimers = n;
    for (size_t i = n / 2; i-- > 0;) sift_down(b, i);
}

int64_t timers_run(broker_t *b, int64_t now)
{
    while (b->ntimers && b->timers[0]->visible_ms <= now) {
        delivery_t *d = b->timers[0];
        timers_remove(b, d);
        delivery_wake(b, d);
    }
    return b->ntimers ? b->timers[0]->visible_ms - now : -1;
}
