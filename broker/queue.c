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

void queue_refill(broker_t *b, sub_t *s)
{
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

/* At start: every `delayed` row becomes a RETRY_WAIT delivery in the timer
 * heap. (Debt: a large delayed backlog is held whole in memory; a windowed
 * load by visible_ms would bound it like the ready queues.) */
int queue_load_delayed(broker_t *b)
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
