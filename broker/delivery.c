/* delivery.c — the delivery state machine. Nothing else changes a state.
 *
 *            publish / refill              wake (visible_ms reached)
 *   (row) ─────────────────▶ READY ◀──────────────────── RETRY_WAIT
 *                             │  ▲ return (unstarted,            ▲
 *                    dispatch │  │  no attempt counted)          │ fail, attempts left
 *                             ▼  │                               │
 *                           INFLIGHT ────────────────────────────┘
 *                             │  │ fail: attempts exhausted, or rejected
 *                     succeed │  └──────────────────▶ DEAD (row moved to `dead`)
 *                             ▼
 *                     row deleted, freed
 *
 * Each transition checks the state it starts from, moves the delivery between
 * containers, writes its row in the turn's open transaction and counts. A
 * transition never dispatches: dispatch_pump() does, once per loop turn.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"

delivery_t *delivery_new(broker_t *b, sub_t *sub, message_t *m, uint32_t attempts)
{
    (void)b;
    delivery_t *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->link.prev = d->link.next = &d->link;
    d->msg = m;
    m->refs++;
    d->sub = sub;
    d->state = DELIVERY_READY;
    d->attempts = attempts;
    return d;
}

delivery_t *delivery_from_row(broker_t *b, sub_t *sub, message_t *m, int64_t attempts_column)
{
    delivery_t *d = delivery_new(b, sub, m, attempts_column > 0 ? (uint32_t)attempts_column : 0);
    if (d) d->has_history = attempts_column != 0;
    return d;
}

void delivery_free(broker_t *b, delivery_t *d)
{
    (void)b;
    if (d->in_delayed) d->sub->dmem--, d->sub->dbytes -= (int64_t)d->msg->payload_len;
    message_unref(&d->msg);
    free(d);
}

void delivery_dispatch(broker_t *b, delivery_t *d, worker_t *w)
{
    if (d->state != DELIVERY_READY) return;
    if (d->inv) list_remove(&b->invoke_queue, &d->link);
    else window_remove(d->sub, d);
    d->state = DELIVERY_INFLIGHT;
    d->lease = ++b->next_lease;
    lease_put(&b->leases, d->lease, d);
    d->worker = w;
    list_push_back(&w->leases, &d->link);
    w->busy++;
    /* the backstop: w->busy deliveries, this one included, may run one
     * after another at this worker before this one ends (broker.h) */
    const cfg_function *c = d->sub->fn->cfg;
    int64_t each = (int64_t)(c->timeout_s * 1000.0) + LEASE_KILL_GRACE_MS +
                   (c->runtime ? (int64_t)(c->rt.init_timeout_s * 1000.0) : 0);
    d->lease_end_ms = util_mono_ms() + (int64_t)w->busy * each + LEASE_MARGIN_MS + 3 * b->heartbeat_ms;
    if (!d->inv) d->sub->inflight++;   /* a sync invoke is no row of any queue */
    d->sub->fn->running++;
}

/* INFLIGHT → nothing held: the common end of every lease. */
void delivery_release(broker_t *b, delivery_t *d)
{
    lease_del(&b->leases, d->lease);
    list_remove(&d->worker->leases, &d->link);
    d->worker->busy--;
    d->worker = NULL;
    d->lease = 0;
    if (!d->inv) d->sub->inflight--;
    d->sub->fn->running--;
}
#define end_lease delivery_release

static void count_duration(function_t *fn, uint32_t us);

void count_attempt(function_t *fn, proto_outcome o, const proto_result_entry *r)
{
    fn->invocations++;
    switch (o) {
    case OUT_OK: break;
    case OUT_TIMEOUT: fn->timeouts++; break;
    case OUT_REJECTED: fn->rejected++; break;
    case OUT_CRASHED: fn->crashed++; break;
    case OUT_LOST: fn->lost++; break;
    default: fn->errors++; break;
    }
    if (r) count_duration(fn, r->duration_us);
}

static void count_duration(function_t *fn, uint32_t us)
{
    hist_add(&fn->hist, us);
    fn->duration_total_us += us;
}

/* A write of this turn failed: the turn must not commit (a dead letter
 * without its row moved, a retry without its new time...). */
static void write_failed(broker_t *b, const char *what)
{
    LOG_ERROR("%s: %s", what, sqlite3_errmsg(b->store.db));
    b->store.failed = true;
}

/* The row is gone (acked or dead): drop it from the counts. */
static void forget_row(broker_t *b, delivery_t *d)
{
    if (d->in_delayed) d->sub->delayed--;
    else d->sub->queued--;
    b->backlog--;
}

void delivery_succeed(broker_t *b, delivery_t *d, const proto_result_entry *r)
{
    if (d->state != DELIVERY_INFLIGHT) return;
    if (d->inv) {
        invoke_finish(b, d, OUT_OK, NULL, r, NULL, 0);
        return;
    }
    end_lease(b, d);
    store_begin(&b->store);
    if (d->in_delayed) {
        if (store_delete_delivery(&b->store, d) != 0) b->store.failed = true;
    } else store_stage_ack(&b->store, d->sub->id, d->msg->id);   /* written with the others of its RESULT */
    if (d->attempts > 0 || d->has_history) {
        /* it made it: the failures kept for a dead letter it will never be go
         * (the rare path; without this the table grows with every flaky run) */
        sqlite3_stmt *h = b->store.del_failures;
        sqlite3_bind_text(h, 1, d->msg->mid, -1, SQLITE_STATIC);
        sqlite3_bind_int64(h, 2, d->sub->id);
        if (sqlite3_step(h) != SQLITE_DONE) write_failed(b, "dropping the failure history");
        sqlite3_reset(h);
    }
    forget_row(b, d);
    d->sub->succeeded++;
    count_attempt(d->sub->fn, OUT_OK, r);
    delivery_free(b, d);
}

int64_t backoff_ms(const cfg_backoff *p, uint32_t failures, double rnd)
{
    double delay = p->initial_s * pow(p->multiplier, failures > 0 ? failures - 1 : 0);
    if (delay > p->max_s) delay = p->max_s;
    switch (p->jitter) {
    case JITTER_FULL: delay *= rnd; break;
    case JITTER_EQUAL: delay = delay / 2 + delay / 2 * rnd; break;
    case JITTER_NONE: break;
    }
    return (int64_t)(delay * 1000.0);
}

static double random_unit(void)
{
    uint64_t r;
    util_random(&r, sizeof r);
    return (double)(r >> 11) / 9007199254740992.0;   /* 53 bits → [0,1) */
}

void delivery_fail(broker_t *b, delivery_t *d, proto_outcome o, const char *error,
                   const proto_result_entry *r, int64_t now_ms)
{
    if (d->state != DELIVERY_INFLIGHT) return;
    if (d->inv) {   /* a sync invoke is not stored and not retried: the caller hears */
        invoke_finish(b, d, o, error, r, NULL, 0);
        return;
    }
    const char *worker_id = d->worker ? d->worker->id : "";
    function_t *fn = d->sub->fn;
    end_lease(b, d);
    store_t *s = &b->store;
    store_begin(s);
    d->attempts++;
    d->sub->failed++;
    count_attempt(fn, o, r);

    /* every failed attempt is kept, with its class, for `dlq show` */
    sqlite3_stmt *f = s->ins_failure;
    sqlite3_bind_text(f, 1, d->msg->mid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(f, 2, d->sub->id);
    sqlite3_bind_int64(f, 3, d->attempts);
    sqlite3_bind_text(f, 4, proto_outcome_name(o), -1, SQLITE_STATIC);
    sqlite3_bind_text(f, 5, worker_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(f, 6, r ? r->started_ms : 0);
    sqlite3_bind_int64(f, 7, r ? r->duration_us / 1000 : 0);
    sqlite3_bind_text(f, 8, error ? error : "", -1, SQLITE_TRANSIENT);
    if (sqlite3_step(f) != SQLITE_DONE) write_failed(b, "recording a failure");
    sqlite3_reset(f);
    sqlite3_clear_bindings(f);

    int max = fn->cfg->max_attempts;
    if (o == OUT_REJECTED || (int)d->attempts >= max) {
        sqlite3_stmt *st = s->ins_dead;
        sqlite3_bind_int64(st, 1, d->msg->id);
        sqlite3_bind_int64(st, 2, d->sub->id);
        sqlite3_bind_text(st, 3, fn->name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, d->attempts);
        sqlite3_bind_text(st, 5, proto_outcome_name(o), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, error ? error : "", -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 7, now_ms);
        if (sqlite3_step(st) != SQLITE_DONE) write_failed(b, "dead letter");
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (store_delete_delivery(s, d) != 0) s->failed = true;
        forget_row(b, d);
        d->sub->dead++;
        delivery_free(b, d);
        return;
    }
    d->visible_ms = now_ms + backoff_ms(&fn->cfg->backoff, d->attempts, random_unit());
    bool counted = d->in_delayed;
    if (d->in_delayed) {
        sqlite3_bind_int64(s->upd_delayed, 1, d->visible_ms);
        sqlite3_bind_int64(s->upd_delayed, 2, d->attempts);
        sqlite3_bind_int64(s->upd_delayed, 3, d->msg->id);
        sqlite3_bind_int64(s->upd_delayed, 4, d->sub->id);
        if (sqlite3_step(s->upd_delayed) != SQLITE_DONE) write_failed(b, "retry");
        sqlite3_reset(s->upd_delayed);
        sqlite3_clear_bindings(s->upd_delayed);
        d->txn = s->txn_no;   /* its row's new time is this transaction's (queue_rollback) */
    } else {
        if (store_delete_delivery(s, d) != 0 ||
            store_insert_delayed(s, d->sub->id, d->msg->id, d->visible_ms, d->attempts) != 0)
            s->failed = true;
        d->in_delayed = true;
        d->txn = s->txn_no;   /* its `delayed` row is this transaction's (queue_rollback) */
        d->sub->queued--;
        d->sub->delayed++;
    }
    d->state = DELIVERY_RETRY_WAIT;
    queue_delay(b, d, counted);
}

void delivery_return(broker_t *b, delivery_t *d)
{
    if (d->state != DELIVERY_INFLIGHT) return;
    end_lease(b, d);
    d->state = DELIVERY_READY;
    if (d->inv) list_push_back(&b->invoke_queue, &d->link);
    else window_push(d->sub, d);
}

void delivery_wake(broker_t *b, delivery_t *d)
{
    (void)b;
    if (d->state != DELIVERY_RETRY_WAIT) return;
    d->state = DELIVERY_READY;
    window_push(d->sub, d);
}
