/* deadletter.c — the writes of the dead-letter tools: `dlq replay` and
 * `dlq purge`, run by the admin endpoint a chunk per loop turn (admin.c), so
 * a replay or purge of a million dead letters never holds the loop: each
 * chunk is all or nothing inside its turn's transaction, and the answer goes
 * out after the commit of the last one.
 *
 * Replay puts a dead letter back on its own subscription's queue — not on
 * every subscription of its topic — with attempts reset, as a new message row
 * that keeps the message id (so `dlq show` keeps its whole history, which is
 * keyed by message id). With a rate, the i-th becomes visible at now + i/rate.
 * A dead letter whose subscription is gone stays where it is, with a reason.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"

static sub_t *sub_by_id(broker_t *b, int64_t id)
{
    for (size_t i = 0; i < b->nsubs; i++)
        if (b->subs[i]->id == id) return b->subs[i];
    return NULL;
}

/* Builds the selection's WHERE clause: the ids, or all (filtered), or none. */
static void where(char *sql, size_t n, const dead_select *sel)
{
    size_t k = strlen(sql);
    if (sel->nids) {
        k += (size_t)snprintf(sql + k, n - k, " WHERE id IN (");
        for (size_t i = 0; i < sel->nids && k < n; i++)
            k += (size_t)snprintf(sql + k, n - k, "%s%lld", i ? "," : "", (long long)sel->ids[i]);
        snprintf(sql + k, n - k, ") AND id > ?4 AND id <= ?5");
        return;
    }
    if (!sel->all) {   /* no ids and not all: nothing (admin.c refuses such a request first) */
        snprintf(sql + k, n - k, " WHERE 0 AND id > ?4 AND id <= ?5");
        return;
    }
    snprintf(sql + k, n - k, " WHERE (?1 IS NULL OR function = ?1) AND (?2 IS NULL OR topic = ?2)"
                             " AND (?3 IS NULL OR failed_ms < ?3) AND id > ?4 AND id <= ?5");
}

static sqlite3_stmt *select_dead(broker_t *b, const char *cols, const dead_select *sel, char *err, size_t n)
{
    size_t len = 256 + sel->nids * 24;
    char *sql = malloc(len);
    if (!sql) { snprintf(err, n, "out of memory"); return NULL; }
    snprintf(sql, len, "SELECT %s FROM dead", cols);
    where(sql, len, sel);
    strncat(sql, " ORDER BY id LIMIT ?6", len - strlen(sql) - 1);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(b->store.db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, n, "selecting dead letters: %s", sqlite3_errmsg(b->store.db));
        free(sql);
        return NULL;
    }
    free(sql);
    if (!sel->nids) {
        if (sel->function) sqlite3_bind_text(st, 1, sel->function, -1, SQLITE_STATIC);
        if (sel->topic) sqlite3_bind_text(st, 2, sel->topic, -1, SQLITE_STATIC);
        if (sel->failed_before_ms > 0) sqlite3_bind_int64(st, 3, sel->failed_before_ms);
    }
    sqlite3_bind_int64(st, 4, sel->after_id);
    sqlite3_bind_int64(st, 5, sel->max_id);
    sqlite3_bind_int(st, 6, sel->limit);
    return st;
}

static int exec1(broker_t *b, const char *sql, int64_t a)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(b->store.db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, a);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_OK ? 0 : -1;
}

/* One call is all or nothing inside the turn's transaction: a savepoint. */
static int savepoint(broker_t *b, const char *what)
{
    char sql[64];
    snprintf(sql, sizeof sql, "%s dlq", what);
    return sqlite3_exec(b->store.db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

static void rollback(broker_t *b)
{
    savepoint(b, "ROLLBACK TO");
    savepoint(b, "RELEASE");
}

/* What a replay changes in memory, applied only once every row is written. */
typedef struct { sub_t *s; delivery_t *d; bool delayed; } replayed;

int dead_replay(broker_t *b, const dead_select *sel, double rate, int64_t now_ms, bool dry_run, dead_result *res,
                int64_t *last, bool *more, char *err, size_t n)
{
    dead_result before = *res;   /* a failed chunk counts nothing */
    int rows = 0;
    *last = sel->after_id;
    sqlite3_stmt *st = select_dead(b, "id, sub, mid, topic, function, attrs, payload", sel, err, n);
    if (!st) return -1;
    if (!dry_run && (store_begin(&b->store) != 0 || savepoint(b, "SAVEPOINT") != 0)) {
        snprintf(err, n, "storage: %s", sqlite3_errmsg(b->store.db));
        sqlite3_finalize(st);
        return -1;
    }
    int64_t now = now_ms, wall = util_wall_ms();
    int rc;
    replayed *done = NULL;
    size_t ndone = 0, cap = 0;
    delivery_t *cur = NULL;   /* made for this row, not yet in done[] */
    static attr_strs strs;   /* the loop's thread only; copied by message_new */
    for (size_t i = 0; i < b->nsubs; i++) memset(&b->subs[i]->replay, 0, sizeof b->subs[i]->replay);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        rows++;
        *last = id;
        sub_t *s = sub_by_id(b, sqlite3_column_int64(st, 1));
        const char *topic = (const char *)sqlite3_column_text(st, 3);
        const char *fname = (const char *)sqlite3_column_text(st, 4);
        if (!s) {
            res->skipped++;
            size_t k = strlen(res->why);
            if (k + 200 < sizeof res->why)
                snprintf(res->why + k, sizeof res->why - k, "%sdead letter %lld not replayed: %s%s%s%s no longer exists",
                         k ? "\n" : "", (long long)id, topic[0] ? "subscription " : "function ", topic,
                         topic[0] ? " → " : "", fname);
            continue;
        }
        res->count++;
        if (dry_run) continue;
        if (ndone == cap) {
            replayed *v = realloc(done, (cap = cap ? cap * 2 : 64) * sizeof *v);
            if (!v) goto fail;
            done = v;
        }
        done[ndone] = (replayed){ s, NULL, false };
        char mid[PROTO_ID_MAX + 1];
        snprintf(mid, sizeof mid, "%s", (const char *)sqlite3_column_text(st, 2));
        const void *payload = sqlite3_column_blob(st, 6);
        size_t len = (size_t)sqlite3_column_bytes(st, 6);
        int64_t msg;
        if (store_insert_message(&b->store, mid, topic, sqlite3_column_blob(st, 5),
                                 (size_t)sqlite3_column_bytes(st, 5), payload, len, now, &msg) != 0)
            goto fail;
        int64_t visible = rate > 0 ? now + (int64_t)((double)(res->count - 1) * 1000.0 / rate) : now;
        /* never in the past: a chunk that runs late (queued behind another job)
         * keeps its keys above every delivery that already woke (the window's
         * cut must not go below those) */
        if (visible < wall) visible = wall;
        done[ndone].delayed = rate > 0;
        if (rate <= 0) {
            if (store_insert_queue(&b->store, s->id, msg, ATTEMPTS_REPLAYED) != 0) goto fail;
        } else if (store_insert_delayed(&b->store, s->id, msg, visible, ATTEMPTS_REPLAYED) != 0) {
            goto fail;
        } else if (s->replay.full || !queue_delay_takes(s, visible)) {
            /* past the window: a refill reads it in turn */
        } else if (s->dmem + s->replay.n >= DELAYED_WINDOW ||
                   (s->dmem + s->replay.n > 0 && s->dbytes + s->replay.bytes + (int64_t)len > WINDOW_BYTES)) {
            s->replay.full = true;   /* this row and the later ones (later keys) stay on disk */
            s->replay.ms = visible;
            s->replay.msg = msg;
        } else {
            proto_attr attrs[PROTO_MAX_ATTRS];
            uint32_t na = attrs_unpack(sqlite3_column_blob(st, 5), sqlite3_column_bytes(st, 5), attrs, &strs);
            message_t *m = message_new(msg, mid, topic, attrs, na);
            if (!m || !(m->payload = malloc(len ? len : 1))) { free(m); goto fail; }
            memcpy(m->payload, payload, len);
            m->payload_len = len;
            delivery_t *d = delivery_from_row(b, s, m, ATTEMPTS_REPLAYED);
            if (!d) { m->refs = 1; message_unref(&m); goto fail; }
            d->state = DELIVERY_RETRY_WAIT;   /* in_delayed once in the window (below) */
            d->visible_ms = visible;
            d->txn = b->store.txn_no;   /* its row is this transaction's */
            done[ndone].d = cur = d;
            s->replay.n++;
            s->replay.bytes += (int64_t)len;
        }
        ndone++;
        cur = NULL;
        if (exec1(b, "DELETE FROM dead WHERE id = ?", id) != 0) goto fail;
    }
    if (rc != SQLITE_DONE) goto fail;
    sqlite3_finalize(st);
    if (!dry_run && savepoint(b, "RELEASE") != 0) { st = NULL; goto fail; }
    for (size_t i = 0; i < ndone; i++) {   /* every row is written: now memory */
        sub_t *s = done[i].s;
        if (done[i].delayed) {
            if (done[i].d) {
                done[i].d->in_delayed = true;
                queue_delay(b, done[i].d, false);
            }
            s->delayed++;
        } else {
            s->caught_up = false;   /* the window reads it from the table */
            s->queued++;
        }
        s->dead--;
        b->backlog++;
    }
    for (size_t i = 0; i < b->nsubs; i++)
        if (b->subs[i]->replay.full) queue_delay_cut(b, b->subs[i], b->subs[i]->replay.ms, b->subs[i]->replay.msg);
    free(done);
    *more = rows == sel->limit;
    return 0;
fail:
    snprintf(err, n, "storage: %s", sqlite3_errmsg(b->store.db));
    sqlite3_finalize(st);
    if (!dry_run) rollback(b);
    for (size_t i = 0; i < ndone; i++)
        if (done[i].d) delivery_free(b, done[i].d);
    if (cur) delivery_free(b, cur);
    free(done);
    *res = before;
    return -1;
}

int dead_purge(broker_t *b, const dead_select *sel, bool dry_run, dead_result *res, int64_t *last, bool *more,
               char *err, size_t n)
{
    dead_result before = *res;   /* a failed chunk counts nothing */
    int rows = 0;
    *last = sel->after_id;
    sqlite3_stmt *st = select_dead(b, "id, sub, mid", sel, err, n);
    if (!st) return -1;
    if (!dry_run && (store_begin(&b->store) != 0 || savepoint(b, "SAVEPOINT") != 0)) {
        snprintf(err, n, "storage: %s", sqlite3_errmsg(b->store.db));
        sqlite3_finalize(st);
        return -1;
    }
    int64_t *subs = NULL;   /* the subscription of each purged row, counted at the end */
    size_t nsubs = 0, cap = 0;
    sqlite3_stmt *hist = NULL;
    if (sqlite3_prepare_v2(b->store.db, "DELETE FROM failures WHERE mid = ? AND sub = ?", -1, &hist, NULL)
        != SQLITE_OK)
        goto fail;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        rows++;
        *last = sqlite3_column_int64(st, 0);
        res->count++;
        if (dry_run) continue;
        int64_t sub = sqlite3_column_int64(st, 1);
        if (exec1(b, "DELETE FROM dead WHERE id = ?", sqlite3_column_int64(st, 0)) != 0) goto fail;
        /* the history goes with it unless another dead letter of the same
         * message and subscription still needs it (a replay that died again) */
        sqlite3_stmt *other = NULL;
        bool keep = false;
        if (sqlite3_prepare_v2(b->store.db, "SELECT 1 FROM dead WHERE mid = ? AND sub = ?", -1, &other, NULL) == SQLITE_OK) {
            sqlite3_bind_text(other, 1, (const char *)sqlite3_column_text(st, 2), -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(other, 2, sub);
            keep = sqlite3_step(other) == SQLITE_ROW;
        }
        sqlite3_finalize(other);
        if (!keep) {
            sqlite3_bind_text(hist, 1, (const char *)sqlite3_column_text(st, 2), -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(hist, 2, sub);
            if (sqlite3_step(hist) != SQLITE_DONE) goto fail;
            sqlite3_reset(hist);
        }
        if (nsubs == cap) {
            int64_t *v = realloc(subs, (cap = cap ? cap * 2 : 64) * sizeof *v);
            if (!v) goto fail;
            subs = v;
        }
        subs[nsubs++] = sub;
    }
    if (rc != SQLITE_DONE) goto fail;
    sqlite3_finalize(st);
    sqlite3_finalize(hist);
    st = hist = NULL;
    if (!dry_run && savepoint(b, "RELEASE") != 0) goto fail;
    for (size_t i = 0; i < nsubs; i++) {
        sub_t *s = sub_by_id(b, subs[i]);
        if (s) s->dead--;
    }
    free(subs);
    *more = rows == sel->limit;
    return 0;
fail:
    snprintf(err, n, "storage: %s", sqlite3_errmsg(b->store.db));
    sqlite3_finalize(st);
    sqlite3_finalize(hist);
    if (!dry_run) rollback(b);
    free(subs);
    *res = before;
    return -1;
}
