/* queue.c — each subscription's bounded in-memory windows of its durable
 * queue: the ready one (`queue` rows) and the delayed one (`delayed` rows).
 *
 * The `queue` table is the truth; memory holds at most SUB_WINDOW READY
 * deliveries per subscription and about WINDOW_BYTES of their payloads, read
 * back in message order from the table's key (sub, msg) after `cursor`. A
 * freshly published delivery goes straight into memory only while the window
 * is caught up with the table and has room — otherwise it stays on disk and a
 * later refill reads it — so memory never grows with the backlog, and the
 * fast path (publish → dispatch) never reads SQLite. The delayed windows are
 * described where their code begins, below.
 */
#include <stdlib.h>
#include <string.h>

#include "broker.h"

bool queue_take_new(const sub_t *s, size_t len)
{
    return s->caught_up && s->ready.n < SUB_WINDOW &&
           (s->ready.n == 0 || s->ready_bytes + (int64_t)len <= WINDOW_BYTES);
}

void window_push(sub_t *s, delivery_t *d)
{
    list_push_back(&s->ready, &d->link);
    s->ready_bytes += (int64_t)d->msg->payload_len;
}

void window_remove(sub_t *s, delivery_t *d)
{
    list_remove(&s->ready, &d->link);
    s->ready_bytes -= (int64_t)d->msg->payload_len;
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
    if (s->caught_up || s->ready.n >= SUB_WINDOW / 2 || (s->ready.n && s->ready_bytes >= WINDOW_BYTES / 2)) return;
    int want = SUB_WINDOW - (int)s->ready.n;
    sqlite3_stmt *st = b->store.load_window;
    sqlite3_bind_int64(st, 1, s->id);
    sqlite3_bind_int64(st, 2, s->cursor);
    sqlite3_bind_int(st, 3, want);
    int got = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t msg = sqlite3_column_int64(st, 0);
        if (!skipped(b, s->id, msg)) {   /* else in flight: it is in memory already */
            message_t *m = message_from_row(st, 0, 2, 3, 4, 5);
            if (!m) break;
            delivery_t *d = delivery_from_row(b, s, m, sqlite3_column_int64(st, 1));
            if (!d) { m->refs = 1; message_unref(&m); break; }
            window_push(s, d);
        }
        got++;
        s->cursor = msg;
        if (s->ready_bytes >= WINDOW_BYTES) break;   /* rc stays SQLITE_ROW: not caught up */
    }
    if (rc == SQLITE_DONE && got < want) s->caught_up = true;
    else if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        LOG_ERROR("reading the queue of %s/%s: %s", s->topic, s->fn->name, sqlite3_errmsg(b->store.db));
    sqlite3_reset(st);
}

/* --- the delayed windows ---------------------------------------------------
 * A subscription's `delayed` rows (retry backoff, --delay, paced replays) are
 * ordered by key (visible_ms, msg). Memory holds every row at or below the
 * subscription's cursor (all of them while dall) and no other: the earliest,
 * the next to wake, about DELAYED_WINDOW at most. A delivery that becomes
 * delayed in memory stays only when its key is within the window; past it,
 * its row waits on disk. A window grown past DELAYED_WINDOW lets its latest
 * waiting deliveries go and brings the cursor down; one fallen below half is
 * read further from the table, between transactions only (a row of the open
 * transaction may yet be rolled back). So a million retries in backoff, or
 * events published with --delay, cost memory for the next few thousand. */

static bool key_le(int64_t ms, int64_t msg, int64_t cms, int64_t cmsg)
{
    return ms < cms || (ms == cms && msg <= cmsg);
}

bool queue_delay_takes(const sub_t *s, int64_t visible_ms)
{
    /* a new message's id is above every stored one: at an equal time its key
     * is past the cursor */
    return s->dall || visible_ms < s->dcursor_ms;
}

static int cmp_later(const void *a, const void *b)   /* by key, the latest first */
{
    const delivery_t *x = *(delivery_t *const *)a, *y = *(delivery_t *const *)b;
    if (x->visible_ms != y->visible_ms) return x->visible_ms > y->visible_ms ? -1 : 1;
    return x->msg->id > y->msg->id ? -1 : x->msg->id < y->msg->id;
}

static void note_later(const delivery_t *d, int64_t *ms, int64_t *msg)
{
    if (!key_le(d->visible_ms, d->msg->id, *ms, *msg)) *ms = d->visible_ms, *msg = d->msg->id;
}

/* More than DELAYED_WINDOW of s's delayed rows in memory, or WINDOW_BYTES of
 * their payloads: the latest waiting ones leave, down to 3/4 of both (but one
 * stays), and the cursor comes down to the latest key still held. Woken and
 * running deliveries stay, and so does every waiting one at or below the
 * latest of them: every row under the cursor stays in memory. What could not
 * go stays, and the next trim waits for a quarter window more: a window of
 * mostly woken deliveries is not scanned again on every retry. */
static void trim(broker_t *b, sub_t *s)
{
    if ((s->dmem <= DELAYED_WINDOW || s->dmem <= s->dtrim_mem) &&
        (s->dbytes <= WINDOW_BYTES || s->dbytes <= s->dtrim_bytes))
        return;
    int64_t hms = 0, hmsg = 0;
    for (list_node *ln = s->ready.head.next; ln != &s->ready.head; ln = ln->next) {
        const delivery_t *d = container_of(ln, delivery_t, link);
        if (d->in_delayed) note_later(d, &hms, &hmsg);
    }
    for (list_node *wn = b->workers.head.next; wn != &b->workers.head; wn = wn->next) {
        worker_t *w = container_of(wn, worker_t, link);
        for (list_node *ln = w->leases.head.next; ln != &w->leases.head; ln = ln->next) {
            const delivery_t *d = container_of(ln, delivery_t, link);
            if (d->sub == s && d->in_delayed) note_later(d, &hms, &hmsg);
        }
    }
    delivery_t **v = malloc((b->ntimers + 1) * sizeof *v);
    if (!v) { LOG_ERROR("out of memory trimming a delayed window"); return; }
    size_t n = 0;
    for (size_t i = 0; i < b->ntimers; i++) {
        delivery_t *d = b->timers[i];
        if (d->sub == s && !key_le(d->visible_ms, d->msg->id, hms, hmsg)) v[n++] = d;
    }
    qsort(v, n, sizeof *v, cmp_later);
    size_t i = 0;
    for (; i < n && s->dmem > 1 && (s->dmem > DELAYED_WINDOW * 3 / 4 || s->dbytes > WINDOW_BYTES / 4 * 3); i++) {
        timers_remove(b, v[i]);
        delivery_free(b, v[i]);
    }
    if (i < n) note_later(v[i], &hms, &hmsg);
    s->dcursor_ms = hms;
    s->dcursor_msg = hmsg;
    s->dall = false;
    s->dtrim_mem = s->dmem + DELAYED_WINDOW / 4;
    s->dtrim_bytes = s->dbytes + WINDOW_BYTES / 4;
    free(v);
}

void queue_delay(broker_t *b, delivery_t *d, bool counted)
{
    sub_t *s = d->sub;
    if (!counted) s->dmem++, s->dbytes += (int64_t)d->msg->payload_len;
    if (!s->dall && !key_le(d->visible_ms, d->msg->id, s->dcursor_ms, s->dcursor_msg)) {
        delivery_free(b, d);   /* its row waits on disk; a refill reads it in turn */
        return;
    }
    timers_add(b, d);
    trim(b, s);
}

void queue_delay_cut(broker_t *b, sub_t *s, int64_t ms, int64_t msg)
{
    for (size_t i = 0; i < b->ntimers;) {
        delivery_t *d = b->timers[i];
        if (d->sub != s || key_le(d->visible_ms, d->msg->id, ms, msg - 1)) { i++; continue; }
        timers_remove(b, d);   /* the last entry moves to i: look at i again */
        delivery_free(b, d);
    }
    if (s->dall || !key_le(s->dcursor_ms, s->dcursor_msg, ms, msg - 1)) {
        s->dcursor_ms = ms;
        s->dcursor_msg = msg - 1;
    }
    s->dall = false;
}

/* The current row of load_delayed as a waiting delivery of s, in the heap. */
static delivery_t *delayed_from_row(broker_t *b, sub_t *s, sqlite3_stmt *st)
{
    message_t *m = message_from_row(st, 0, 4, 5, 6, 7);
    if (!m) return NULL;
    delivery_t *d = delivery_from_row(b, s, m, sqlite3_column_int64(st, 3));
    if (!d) { m->refs = 1; message_unref(&m); return NULL; }
    d->in_delayed = true;
    d->state = DELIVERY_RETRY_WAIT;
    d->visible_ms = sqlite3_column_int64(st, 2);
    s->dmem++;
    s->dbytes += (int64_t)m->payload_len;
    timers_add(b, d);
    return d;
}

/* load_delayed bound to s's rows with keys in (lo, hi], at most limit (-1: all). */
static sqlite3_stmt *bind_range(broker_t *b, const sub_t *s, int64_t lo_ms, int64_t lo_msg, int64_t hi_ms,
                                int64_t hi_msg, int limit)
{
    sqlite3_stmt *st = b->store.load_delayed;
    sqlite3_bind_int64(st, 1, s->id);
    sqlite3_bind_int64(st, 2, lo_ms);
    sqlite3_bind_int64(st, 3, lo_msg);
    sqlite3_bind_int64(st, 4, hi_ms);
    sqlite3_bind_int64(st, 5, hi_msg);
    sqlite3_bind_int(st, 6, limit);
    return st;
}

void queue_refill_delayed(broker_t *b, sub_t *s)
{
    if (s->dall || s->dmem >= DELAYED_WINDOW / 2 || (s->dmem && s->dbytes >= WINDOW_BYTES / 2) || b->store.in_txn)
        return;
    int want = DELAYED_WINDOW - (int)s->dmem;
    sqlite3_stmt *st = bind_range(b, s, s->dcursor_ms, s->dcursor_msg, INT64_MAX, INT64_MAX, want);
    int got = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!delayed_from_row(b, s, st)) { rc = SQLITE_NOMEM; break; }
        got++;
        s->dcursor_ms = sqlite3_column_int64(st, 2);
        s->dcursor_msg = sqlite3_column_int64(st, 0);
        if (s->dbytes >= WINDOW_BYTES) break;   /* rc stays SQLITE_ROW: not all read */
    }
    if (rc == SQLITE_DONE && got < want) s->dall = true;
    else if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        LOG_ERROR("reading the delayed deliveries of %s/%s: %s", s->topic, s->fn->name,
                  rc == SQLITE_NOMEM ? "out of memory" : sqlite3_errmsg(b->store.db));
    sqlite3_reset(st);
}

/* After a rollback: s's rows within its window that memory does not hold
 * (skip, sorted) are read again. */
static int reload_delayed(broker_t *b, sub_t *s, const struct row_key *skip, size_t nskip)
{
    sqlite3_stmt *st = bind_range(b, s, 0, 0, s->dall ? INT64_MAX : s->dcursor_ms,
                                  s->dall ? INT64_MAX : s->dcursor_msg, -1);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct row_key k = { s->id, sqlite3_column_int64(st, 0) };
        if (nskip && bsearch(&k, skip, nskip, sizeof k, cmp_key)) continue;   /* in memory */
        if (!delayed_from_row(b, s, st)) { rc = SQLITE_NOMEM; break; }
    }
    sqlite3_reset(st);
    trim(b, s);
    return rc == SQLITE_DONE ? 0 : -1;
}

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

/* A failed commit rolled transaction txn back. The ready windows are read
 * again from the table, which is the truth, except the delayed deliveries
 * that woke into them: their rows are in `delayed`, not `queue`, so they
 * stay. Deliveries whose rows txn wrote (publishes, replays, a retry's move
 * to `delayed`, whose row is back in `queue`) go, from the windows and from
 * the timer heap. The rows of deliveries in flight are not read again
 * (b->reload_skip); the `delayed` rows within each delayed window that memory
 * lost with the turn are read again; and the counters are counted again from
 * the tables: a scan the loop makes only here, after a failure. */
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
        s->ready_bytes = 0;
        while ((ln = list_pop_front(&keep)) != NULL) window_push(s, container_of(ln, delivery_t, link));
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
    for (size_t i = 0; i < b->nsubs; i++)
        if (reload_delayed(b, b->subs[i], held, nd) != 0)
            LOG_ERROR("reading `delayed` again after a rollback failed: some retries wait for a restart");
    free(held);
    if (store_counts(&b->store, b) != 0)
        LOG_ERROR("counting the queues again after a rollback failed: stats may be off");
}
