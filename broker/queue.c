/* queue.c — each subscription's bounded in-memory window of its durable queue.
 *
 * The `queue` table is the truth; memory holds at most SUB_WINDOW READY
 * deliveries per subscription, read back in message order from the table's
 * key (sub, msg) after `cursor`. A freshly published delivery goes straight
 * into memory only while the window is caught up with the table and has room
 * — otherwise it stays on disk and a later refill reads it — so memory never
 * grows with the backlog, and the fast path (publish → dispatch) never reads
 * SQLite.
 */
#include <stdlib.h>
#include <string.h>

#include "broker.h"

bool queue_take_new(const sub_t *s)
{
    return s->caught_up && s->ready.n < SUB_WINDOW;
}

/* Reads a message row's attributes (a msgpack map blob) into a message. */
static message_t *message_from_row(sqlite3_stmt *st, int c_id, int c_mid, int c_topic,
                                   int c_attrs, int c_payload)
{
    proto_attr attrs[PROTO_MAX_ATTRS];
    static attr_strs strs;   /* the loop's thread only; copied by message_new */
    uint32_t n = attrs_unpack(sqlite3_column_blob(st, c_attrs), sqlite3_column_bytes(st, c_attrs), attrs, &strs);
    message_t *m = message_new(sqlite3_column_int64(st, c_id), (const char *)sqlite3_column_text(st, c_mid),
                               (const char *)sqlite3_column_text(st, c_topic), attrs, n);
    if (!m) return NULL;
    size_t len = (size_t)sqlite3_column_bytes(st, c_payload);
    m->payload = malloc(len ? len : 1);
    if (!m->payload) { free(m); return NULL; }
    if (len) memcpy(m->payload, sqlite3_column_blob(st, c_payload), len);
    m->payload_len = len;
    return m;
}

static int cmp_key(const void *a, const void *b)
{
    const struct row_key *x = a, *y = b;
    return x->sub != y->sub ? (x->sub < y->sub ? -1 : 1) : (x->msg < y->msg ? -1 : x->msg > y->msg);
}

/* Is this row an in-flight delivery's, after a rollback? */
static bool skipped(const broker_t *b, int64_t sub, int64_t msg)
{
    struct row_key k = { sub, msg };
    return b->nreload_skip && bsearch(&k, b->reload_skip, b->nreload_skip, sizeof k, cmp_key);
}

void queue_refill(broker_t *b, sub_t *s)
{
    if (b->reload_skip) {   /* every window read past the rows in flight at the rollback? */
        bool all = true;
        for (size_t i = 0; i < b->nsubs && all; i++) all = b->subs[i]->caught_up;
        if (all) {
            free(b->reload_skip);
            b->reload_skip = NULL;
            b->nreload_skip = 0;
        }
    }
    if (s->caught_up || s->ready.n >= SUB_WINDOW / 2) return;
    int want = SUB_WINDOW - (int)s->ready.n;
    sqlite3_stmt *st = b->store.load_window;
    sqlite3_bind_int64(st, 1, s->id);
    sqlite3_bind_int64(st, 2, s->cursor);
    sqlite3_bind_int(st, 3, want);
    int got = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        got++;
        s->cursor = sqlite3_column_int64(st, 0);
        if (skipped(b, s->id, s->cursor)) continue;   /* in flight: it is in memory already */
        message_t *m = message_from_row(st, 0, 2, 3, 4, 5);
        if (!m) break;
        delivery_t *d = delivery_from_row(b, s, m, sqlite3_column_int64(st, 1));
        if (!d) { m->refs = 1; message_unref(&m); break; }
        list_push_back(&s->ready, &d->link);
    }
    if (rc == SQLITE_DONE && got < want) s->caught_up = true;
    else if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        LOG_ERROR("reading the queue of %s/%s: %s", s->topic, s->fn->name, sqlite3_errmsg(b->store.db));
    sqlite3_reset(st);
}

/* A failed commit rolled transaction txn back. The ready windows are read
 * again from the table, which is the truth, except the delayed deliveries
 * that woke into them: their rows are in `delayed`, which is read only at
 * start, so they stay. Deliveries whose rows txn wrote (publishes, replays,
 * a retry's move to `delayed`, whose row is back in `queue`) go, from the
 * windows and from the timer heap. The rows of deliveries in flight are not
 * read again (b->reload_skip), and the counters are counted again from the
 * tables: a scan the loop makes only here, after a failure. */
/* Appends d's row to v (in `delayed` or in `queue`, as asked). */
static void add_key(struct row_key **v, size_t *n, size_t *cap, const delivery_t *d, bool delayed)
{
    if (d->inv || d->in_delayed != delayed) return;   /* a sync invoke has no row */
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        struct row_key *p = realloc(*v, c * sizeof *p);
        if (!p) { LOG_ERROR("out of memory after a rollback: a delivery may run twice"); return; }
        *v = p;
        *cap = c;
    }
    (*v)[(*n)++] = (struct row_key){ d->sub->id, d->msg->id };
}

void queue_rollback(broker_t *b, uint64_t txn)
{
    /* in-flight rows of `queue`: not to be read into the windows again */
    size_t n = 0, cap = 0;
    struct row_key *skip = NULL;
    for (list_node *wn = b->workers.head.next; wn != &b->workers.head; wn = wn->next) {
        worker_t *w = container_of(wn, worker_t, link);
        for (list_node *ln = w->leases.head.next; ln != &w->leases.head; ln = ln->next)
            add_key(&skip, &n, &cap, container_of(ln, delivery_t, link), false);
    }
    if (n > 1) qsort(skip, n, sizeof *skip, cmp_key);
    free(b->reload_skip);
    b->reload_skip = skip;
    b->nreload_skip = n;
    for (size_t i = 0; i < b->nsubs; i++) {
        sub_t *s = b->subs[i];
        list_t keep;
        list_init(&keep);
        list_node *ln;
        while ((ln = list_pop_front(&s->ready)) != NULL) {
            delivery_t *d = container_of(ln, delivery_t, link);
            if (d->in_delayed && d->txn != txn) list_push_back(&keep, &d->link);
            else delivery_free(b, d);
        }
        while ((ln = list_pop_front(&keep)) != NULL) list_push_back(&s->ready, ln);
        s->cursor = 0;
        s->caught_up = false;
    }
    timers_drop_txn(b, txn);
    /* `delayed` rows memory lost with the turn (a delayed delivery acked or
     * dead-lettered in it): read again, all but those memory still holds */
    size_t nd = 0, capd = 0;
    struct row_key *held = NULL;
    for (size_t i = 0; i < b->ntimers; i++) add_key(&held, &nd, &capd, b->timers[i], true);
    for (size_t i = 0; i < b->nsubs; i++)
        for (list_node *ln = b->subs[i]->ready.head.next; ln != &b->subs[i]->ready.head; ln = ln->next)
            add_key(&held, &nd, &capd, container_of(ln, delivery_t, link), true);
    for (list_node *wn = b->workers.head.next; wn != &b->workers.head; wn = wn->next) {
        worker_t *w = container_of(wn, worker_t, link);
        for (list_node *ln = w->leases.head.next; ln != &w->leases.head; ln = ln->next)
            add_key(&held, &nd, &capd, container_of(ln, delivery_t, link), true);
    }
    if (nd > 1) qsort(held, nd, sizeof *held, cmp_key);
    if (queue_load_delayed(b, held, nd) != 0)
        LOG_ERROR("reading `delayed` again after a rollback failed: some retries wait for a restart");
    free(held);
    if (store_counts(&b->store, b) != 0)
        LOG_ERROR("counting the queues again after a rollback failed: stats may be off");
}

/* At start: every `delayed` row becomes a RETRY_WAIT delivery in the timer
 * heap. (Debt: a large delayed backlog is held whole in memory; a windowed
 * load by visible_ms would bound it like the ready queues.) */
int queue_load_delayed(broker_t *b, const struct row_key *skip, size_t nskip)
{
    sqlite3_stmt *st = b->store.load_due;
    sqlite3_bind_int64(st, 1, INT64_MIN);
    sqlite3_bind_int64(st, 2, INT64_MAX);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t sub_id = sqlite3_column_int64(st, 1);
        sub_t *s = NULL;
        for (size_t i = 0; i < b->nsubs; i++)
            if (b->subs[i]->id == sub_id) s = b->subs[i];
        if (!s) continue;   /* a removed subscription's rows wait for its return */
        struct row_key k = { sub_id, sqlite3_column_int64(st, 0) };
        if (nskip && bsearch(&k, skip, nskip, sizeof k, cmp_key)) continue;   /* in memory */
        message_t *m = message_from_row(st, 0, 4, 5, 6, 7);
        if (!m) { rc = SQLITE_NOMEM; break; }
        delivery_t *d = delivery_from_row(b, s, m, sqlite3_column_int64(st, 3));
        if (!d) { m->refs = 1; message_unref(&m); rc = SQLITE_NOMEM; break; }
        d->in_delayed = true;
        d->state = DELIVERY_RETRY_WAIT;
        d->visible_ms = sqlite3_column_int64(st, 2);
        timers_add(b, d);
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}
