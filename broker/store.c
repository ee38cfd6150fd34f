/* store.c — the broker's SQLite database: schema, prepared statements, the
 * one write transaction per loop turn, recovery counts and message collection.
 *
 * Tables (see docs in proto/PROTOCOL.md for the state machine):
 *   messages  one row per stored event (payload once, whatever the fan-out)
 *   queue     (sub, msg) → attempts: deliveries that are READY or INFLIGHT.
 *             WITHOUT ROWID with that key, so a delivery costs one B-tree
 *             insert and one delete, and a subscription's queue reads back in
 *             message order from its key.
 *   delayed   (msg, sub) → visible_ms, attempts: deliveries waiting for a
 *             delay or a retry (the rare path; indexed by visible_ms too)
 *   dead, failures   dead letters (payload copied) and every failed attempt,
 *                    keyed by message id so the history survives replays
 *   producers        high-water publish sequence per producer id
 *   refusals         refused (producer, seq): a re-sent refused publish is
 *                    refused again, never answered "already stored"
 *   dedup            explicit --dedup-id ids per topic, for DEDUP_WINDOW_MS
 *   meta             next_msg_id: message ids are never reused (written when
 *                    store_gc() collects rows: until then the largest id is a row)
 *
 * Message rows are not deleted one by one: store_gc() removes, a batch per
 * turn, every id below the smallest one any queue or delayed row still needs;
 * when that one stays, it sweeps the ids above it for those no row needs.
 *
 * Invariant: every write happens inside store_begin()/store_commit(); the loop
 * confirms nothing before store_commit() returned 0.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker.h"

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS subs(id INTEGER PRIMARY KEY, topic TEXT NOT NULL,"
    "  function TEXT NOT NULL, UNIQUE(topic, function));"
    "CREATE TABLE IF NOT EXISTS messages(id INTEGER PRIMARY KEY, mid TEXT NOT NULL,"
    "  topic TEXT NOT NULL, attrs BLOB, payload BLOB NOT NULL, created_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS queue(sub INTEGER NOT NULL, msg INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL, PRIMARY KEY(sub, msg)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS delayed(msg INTEGER NOT NULL, sub INTEGER NOT NULL,"
    "  visible_ms INTEGER NOT NULL, attempts INTEGER NOT NULL, PRIMARY KEY(msg, sub)) WITHOUT ROWID;"
    "DROP INDEX IF EXISTS delayed_by_time;"   /* before the delayed windows: by time only */
    "CREATE INDEX IF NOT EXISTS delayed_by_sub ON delayed(sub, visible_ms);"
    "CREATE TABLE IF NOT EXISTS producers(id TEXT PRIMARY KEY, seq INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS producers_by_age ON producers(updated_ms);"
    "CREATE TABLE IF NOT EXISTS refusals(producer TEXT NOT NULL, seq INTEGER NOT NULL,"
    "  status INTEGER NOT NULL, text TEXT NOT NULL, created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY(producer, seq)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS refusals_by_age ON refusals(created_ms);"
    "CREATE TABLE IF NOT EXISTS dedup(topic TEXT NOT NULL, id TEXT NOT NULL, mid TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL, PRIMARY KEY(topic, id)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS dedup_by_age ON dedup(created_ms);"
    "CREATE TABLE IF NOT EXISTS dead(id INTEGER PRIMARY KEY AUTOINCREMENT, msg INTEGER NOT NULL,"
    "  sub INTEGER NOT NULL, mid TEXT NOT NULL, topic TEXT NOT NULL, function TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL, outcome TEXT NOT NULL, error TEXT, failed_ms INTEGER NOT NULL,"
    "  attrs BLOB, payload BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS dead_by_mid ON dead(mid, sub);"
    "CREATE TABLE IF NOT EXISTS failures(mid TEXT NOT NULL, sub INTEGER NOT NULL,"
    "  n INTEGER NOT NULL, attempt INTEGER NOT NULL, outcome TEXT NOT NULL, worker TEXT,"
    "  started_ms INTEGER, duration_ms INTEGER, error TEXT, PRIMARY KEY(mid, sub, n)) WITHOUT ROWID;";

static int prep(store_t *s, sqlite3_stmt **st, const char *sql)
{
    if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK) {
        LOG_ERROR("%s: preparing \"%s\": %s", s->path, sql, sqlite3_errmsg(s->db));
        return -1;
    }
    return 0;
}

static int exec_sql(store_t *s, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &err) != SQLITE_OK) {
        LOG_ERROR("%s: %s", s->path, err ? err : sqlite3_errmsg(s->db));
        sqlite3_free(err);
        return -1;
    }
    return 0;
}

/* Runs a statement that returns no rows; resets it. 0 or -1 (logged). */
static int step_done(store_t *s, sqlite3_stmt *st)
{
    /* no sqlite3_clear_bindings: every caller binds every parameter anew */
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        snprintf(s->why, sizeof s->why, "%s", sqlite3_errmsg(s->db));
        LOG_ERROR("%s: %s", s->path, s->why);
        return -1;
    }
    return 0;
}

int store_mkdir(const char *dir)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) return -1;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return (mkdir(buf, 0700) == 0 || errno == EEXIST) ? 0 : -1;
}

/* After each commit of the loop's connection: the WAL's length in frames.
 * Shorter than after the last commit: the WAL was started over (or
 * truncated): a new cycle, in which the checkpointer's older figures mean
 * nothing. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)db;
    (void)name;
    store_t *s = arg;
    if (frames < s->wal_now) __atomic_add_fetch(&s->wal_cycle, 1, __ATOMIC_RELAXED);
    s->wal_now = frames;
    s->wal_restarting = false;   /* started over, or not (a reader held on): look again */
    return SQLITE_OK;
}

/* WAL checkpoints run here, on their own connection, so the loop never waits
 * for the database file's fsync (the loop's connection has autocheckpoint off). */
static void *checkpointer(void *arg)
{
    store_t *s = arg;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(s->path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        LOG_ERROR("%s: checkpoint connection: %s", s->path, db ? sqlite3_errmsg(db) : "no memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 100);
    /* a connection opens the WAL only once it has read the database */
    sqlite3_exec(db, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
    while (!__atomic_load_n(&s->checkpoint_stop, __ATOMIC_ACQUIRE)) {
        int log = 0, done = 0;
        uint64_t cycle = __atomic_load_n(&s->wal_cycle, __ATOMIC_RELAXED);
        int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            LOG_WARN("%s: checkpoint: %s", s->path, sqlite3_errmsg(db));
        if (done >= 0)
            __atomic_store_n(&s->wal_mark, cycle << 32 | (uint32_t)done, __ATOMIC_RELAXED);
        /* A WAL that grows past ~64 MiB is truncated once the loop lets it:
         * PASSIVE alone lets the file reuse its space, not shrink. */
        if (log > 16384 && done == log)
            sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        usleep(log > 4096 ? 20000 : 200000);
    }
    sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    sqlite3_close(db);
    return NULL;
}

int store_open(store_t *s, const char *data_dir, cfg_durability durability)
{
    memset(s, 0, sizeof *s);
    msgpack_sbuffer_init(&s->stage_attrs);
    if (store_mkdir(data_dir) != 0) {
        LOG_ERROR("data_dir %s: cannot create: %s", data_dir, strerror(errno));
        return -1;
    }
    size_t n = strlen(data_dir) + 16;
    s->path = malloc(n);
    if (!s->path) return -1;
    snprintf(s->path, n, "%s/herald.db", data_dir);
    /* NOMUTEX: this connection is the loop's alone (the checkpointer has its
     * own), so SQLite's per-call mutex is pure cost on the hot path */
    if (sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        LOG_ERROR("%s: %s", s->path, s->db ? sqlite3_errmsg(s->db) : "cannot open");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 5000);
    /* FULL fsyncs the WAL at every commit: a confirmed event survives power
     * loss. NORMAL writes the WAL at commit without fsync: it survives a crash
     * of the process, not of the machine. */
    const char *sync = durability == DURABILITY_FSYNC ? "FULL" : "NORMAL";
    /* secure_delete: Debian builds SQLite with it on, which zeroes every freed
     * page and so writes it to the WAL: collecting a message row cost as much
     * WAL as storing it. FAST zeroes deleted content only where the page is
     * written anyway (docs/SECURITY.md). */
    char pragmas[256];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA wal_autocheckpoint=0;"
             "PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY; PRAGMA secure_delete=FAST;", sync);
    if (exec_sql(s, pragmas) != 0 || exec_sql(s, SCHEMA) != 0) goto fail;
    sqlite3_wal_hook(s->db, wal_hook, s);

    if (prep(s, &s->begin, "BEGIN IMMEDIATE") || prep(s, &s->commit, "COMMIT") ||
        prep(s, &s->rollback, "ROLLBACK") ||
        prep(s, &s->ins_msg, "INSERT INTO messages(id, mid, topic, attrs, payload, created_ms)"
                             " VALUES(?,?,?,?,?,?)") ||
        prep(s, &s->ins_queue, "INSERT INTO queue(sub, msg, attempts) VALUES(?,?,?)") ||
        prep(s, &s->ins_delayed, "INSERT INTO delayed(msg, sub, visible_ms, attempts) VALUES(?,?,?,?)") ||
        prep(s, &s->del_queue, "DELETE FROM queue WHERE sub=? AND msg=?") ||
        prep(s, &s->del_delayed, "DELETE FROM delayed WHERE msg=? AND sub=?") ||
        prep(s, &s->del_queue_range, "DELETE FROM queue WHERE sub=? AND msg BETWEEN ? AND ?") ||
        prep(s, &s->get_producer, "SELECT seq FROM producers WHERE id=?") ||
        prep(s, &s->upd_producer, "INSERT INTO producers(id, seq, updated_ms) VALUES(?,?,?)"
                                  " ON CONFLICT(id) DO UPDATE SET seq=max(seq, excluded.seq),"
                                  " updated_ms=excluded.updated_ms") ||
        prep(s, &s->get_refusal, "SELECT status, text FROM refusals WHERE producer=? AND seq=?") ||
        prep(s, &s->ins_refusal, "INSERT OR REPLACE INTO refusals(producer, seq, status, text, created_ms)"
                                 " VALUES(?,?,?,?,?)") ||
        prep(s, &s->del_refusal, "DELETE FROM refusals WHERE producer=? AND seq=?") ||
        prep(s, &s->get_dedup, "SELECT mid FROM dedup WHERE topic=? AND id=? AND created_ms >= ?") ||
        prep(s, &s->ins_dedup, "INSERT OR REPLACE INTO dedup(topic, id, mid, created_ms) VALUES(?,?,?,?)") ||
        prep(s, &s->prune[0], "DELETE FROM dedup WHERE created_ms < ?") ||
        prep(s, &s->prune[1], "DELETE FROM refusals WHERE created_ms < ?") ||
        prep(s, &s->prune[2], "DELETE FROM producers WHERE updated_ms < ?") ||
        prep(s, &s->del_failures, "DELETE FROM failures WHERE mid = ? AND sub = ?") ||
        prep(s, &s->set_meta, "INSERT OR REPLACE INTO meta(key, value) VALUES(?,?)") ||
        prep(s, &s->load_window, "SELECT q.msg, q.attempts, m.mid, m.topic, m.attrs, m.payload"
                                 " FROM queue q JOIN messages m ON m.id = q.msg"
                                 " WHERE q.sub=? AND q.msg>? ORDER BY q.msg LIMIT ?") ||
        prep(s, &s->load_delayed, "SELECT d.msg, d.sub, d.visible_ms, d.attempts, m.mid, m.topic,"
                                  " m.attrs, m.payload FROM delayed d JOIN messages m ON m.id = d.msg"
                                  " WHERE d.sub=?1 AND (d.visible_ms, d.msg) > (?2, ?3)"
                                  " AND (d.visible_ms, d.msg) <= (?4, ?5)"
                                  " ORDER BY d.visible_ms, d.msg LIMIT ?6") ||
        prep(s, &s->min_queue, "SELECT msg FROM queue WHERE sub=? ORDER BY msg LIMIT 1") ||
        prep(s, &s->min_delayed, "SELECT msg FROM delayed ORDER BY msg LIMIT 1") ||
        prep(s, &s->sweep_queue, "SELECT msg FROM queue WHERE sub=? AND msg>=? AND msg<?") ||
        prep(s, &s->sweep_delayed, "SELECT msg FROM delayed WHERE msg>=? AND msg<?") ||
        prep(s, &s->next_msg, "SELECT id FROM messages WHERE id>=? ORDER BY id LIMIT 1") ||
        prep(s, &s->gc_msgs, "DELETE FROM messages WHERE id >= ? AND id < ?") ||
        prep(s, &s->upd_delayed, "UPDATE delayed SET visible_ms=?, attempts=? WHERE msg=? AND sub=?") ||
        prep(s, &s->ins_dead, "INSERT INTO dead(msg, sub, mid, topic, function, attempts, outcome,"
                              " error, failed_ms, attrs, payload) SELECT id, ?2, mid, topic, ?3, ?4,"
                              " ?5, ?6, ?7, attrs, payload FROM messages WHERE id = ?1") ||
        prep(s, &s->ins_failure, "INSERT OR REPLACE INTO failures(mid, sub, n, attempt, outcome,"
                                 " worker, started_ms, duration_ms, error)"
                                 " VALUES(?,?,(SELECT count(*) FROM failures WHERE mid=?1 AND sub=?2),"
                                 " ?,?,?,?,?,?)"))
        goto fail;

    /* Message ids continue from the larger of the recorded next id and the
     * largest row, so an id is never handed out twice even after the rows
     * holding the highest ids were collected. */
    sqlite3_stmt *st = NULL;
    if (prep(s, &st, "SELECT max(coalesce((SELECT value FROM meta WHERE key='next_msg_id'), 1),"
                     " coalesce((SELECT max(id) FROM messages), 0) + 1),"
                     " coalesce((SELECT min(id) FROM messages), 1)") != 0)
        goto fail;
    if (sqlite3_step(st) == SQLITE_ROW) {
        s->next_msg_id = sqlite3_column_int64(st, 0);
        s->gc_floor = s->gc_floor_committed = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);

    s->checkpoint_stop = false;
    if (pthread_create(&s->checkpointer, NULL, checkpointer, s) != 0) {
        LOG_ERROR("cannot start the checkpoint thread");
        goto fail;
    }
    s->checkpointer_started = true;
    return 0;
fail:
    store_close(s);
    return -1;
}

void store_close(store_t *s)
{
    if (s->checkpointer_started) {
        __atomic_store_n(&s->checkpoint_stop, true, __ATOMIC_RELEASE);
        pthread_join(s->checkpointer, NULL);
        s->checkpointer_started = false;
    }
    sqlite3_stmt **all[] = {
        &s->begin, &s->commit, &s->rollback, &s->ins_msg, &s->ins_queue, &s->ins_delayed,
        &s->del_queue, &s->del_delayed, &s->upd_producer, &s->get_producer, &s->set_meta,
        &s->load_window, &s->load_delayed, &s->min_queue, &s->min_delayed, &s->gc_msgs,
        &s->sweep_queue, &s->sweep_delayed, &s->next_msg, &s->upd_delayed, &s->ins_dead, &s->ins_failure,
        &s->get_refusal, &s->ins_refusal, &s->del_refusal, &s->get_dedup, &s->ins_dedup,
        &s->prune[0], &s->prune[1], &s->prune[2], &s->del_failures, &s->del_queue_range,
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        sqlite3_finalize(*all[i]);
        *all[i] = NULL;
    }
    free(s->sub_ids);
    s->sub_ids = NULL;
    s->nsub_ids = 0;
    for (int n = 0; n <= STAGE_ROWS; n++) {
        sqlite3_finalize(s->ins_msg_n[n]);
        sqlite3_finalize(s->ins_queue_n[n]);
        s->ins_msg_n[n] = s->ins_queue_n[n] = NULL;
    }
    free(s->smsg);
    free(s->sq);
    free(s->sa);
    s->smsg = NULL;
    s->sq = s->sa = NULL;
    s->nsmsg = s->nsq = s->nsa = s->sq_cap = s->sa_cap = 0;
    msgpack_sbuffer_destroy(&s->stage_attrs);
    msgpack_sbuffer_init(&s->stage_attrs);   /* store_close may run twice */
    if (s->db) sqlite3_close(s->db);
    s->db = NULL;
    free(s->path);
    s->path = NULL;
}

/* The n-row variant of a multi-row statement, prepared on first use. */
static sqlite3_stmt *stmt_n(store_t *s, sqlite3_stmt **cache, size_t n, const char *head, const char *row,
                            const char *tail)
{
    if (cache[n]) return cache[n];
    size_t cap = strlen(head) + n * (strlen(row) + 1) + strlen(tail) + 1;
    char *sql = malloc(cap), *w = sql;
    if (!sql) return NULL;
    w += sprintf(w, "%s", head);
    for (size_t i = 0; i < n; i++) w += sprintf(w, "%s%s", i ? "," : "", row);
    sprintf(w, "%s", tail);
    prep(s, &cache[n], sql);
    free(sql);
    return cache[n];
}

int store_stage_message(store_t *s, const char *mid, const char *topic, const void *attrs, size_t attrs_len,
                        const void *payload, size_t len, int64_t now_ms, int64_t *id)
{
    if (!s->smsg && !(s->smsg = malloc(PROTO_MAX_BATCH * sizeof *s->smsg))) return -1;
    if (s->nsmsg == PROTO_MAX_BATCH && store_flush(s) != 0) return -1;
    staged_msg *m = &s->smsg[s->nsmsg];
    m->id = *id = s->next_msg_id++;
    m->created_ms = now_ms;
    size_t ml = strnlen(mid, PROTO_ID_MAX);
    memcpy(m->mid, mid, ml);
    m->mid[ml] = 0;
    m->topic = topic;
    m->attrs_off = s->stage_attrs.size;
    m->attrs_len = attrs_len;
    if (attrs_len && msgpack_sbuffer_write(&s->stage_attrs, attrs, attrs_len) != 0) return -1;
    m->payload = payload;
    m->len = len;
    s->nsmsg++;
    return 0;
}

static int stage_row(staged_row **v, size_t *n, size_t *cap, int64_t sub, int64_t msg)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 256;
        staged_row *r = realloc(*v, c * sizeof *r);
        if (!r) return -1;
        *v = r;
        *cap = c;
    }
    (*v)[(*n)++] = (staged_row){ sub, msg };
    return 0;
}

int store_stage_queue(store_t *s, int64_t sub, int64_t msg) { return stage_row(&s->sq, &s->nsq, &s->sq_cap, sub, msg); }
int store_stage_ack(store_t *s, int64_t sub, int64_t msg) { return stage_row(&s->sa, &s->nsa, &s->sa_cap, sub, msg); }

static int cmp_row(const void *a, const void *b)
{
    const staged_row *x = a, *y = b;
    return x->sub != y->sub ? (x->sub < y->sub ? -1 : 1) : (x->msg < y->msg ? -1 : x->msg > y->msg);
}

int store_flush(store_t *s)
{
    int rc = 0;
    if ((s->nsmsg || s->nsq || s->nsa) && store_begin(s) != 0) rc = -1;
    for (size_t i = 0; rc == 0 && i < s->nsmsg;) {
        size_t n = s->nsmsg - i < STAGE_ROWS ? s->nsmsg - i : STAGE_ROWS;
        sqlite3_stmt *st = stmt_n(s, s->ins_msg_n, n, "INSERT INTO messages(id, mid, topic, attrs, payload, created_ms) VALUES",
                                  "(?,?,?,?,?,?)", "");
        if (!st) { rc = -1; break; }
        for (size_t k = 0; k < n; k++) {
            const staged_msg *m = &s->smsg[i + k];
            int c = (int)k * 6;
            sqlite3_bind_int64(st, c + 1, m->id);
            sqlite3_bind_text(st, c + 2, m->mid, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, c + 3, m->topic, -1, SQLITE_STATIC);
            if (m->attrs_len) sqlite3_bind_blob(st, c + 4, s->stage_attrs.data + m->attrs_off, (int)m->attrs_len, SQLITE_STATIC);
            else sqlite3_bind_null(st, c + 4);
            sqlite3_bind_blob64(st, c + 5, m->len ? m->payload : "", m->len, SQLITE_STATIC);
            sqlite3_bind_int64(st, c + 6, m->created_ms);
        }
        rc = step_done(s, st);
        i += n;
    }
    for (size_t i = 0; rc == 0 && i < s->nsq;) {
        size_t n = s->nsq - i < STAGE_ROWS ? s->nsq - i : STAGE_ROWS;
        sqlite3_stmt *st = stmt_n(s, s->ins_queue_n, n, "INSERT INTO queue(sub, msg, attempts) VALUES", "(?,?,0)", "");
        if (!st) { rc = -1; break; }
        for (size_t k = 0; k < n; k++) {
            sqlite3_bind_int64(st, (int)k * 2 + 1, s->sq[i + k].sub);
            sqlite3_bind_int64(st, (int)k * 2 + 2, s->sq[i + k].msg);
        }
        rc = step_done(s, st);
        i += n;
    }
    /* acks: in key order, a run of consecutive message ids of one
     * subscription is one range delete (dispatch is FIFO, so a worker's acks
     * mostly are such runs); an IN (...) list made SQLite build a temporary
     * table per statement and cost more than deleting one by one */
    if (s->nsa > 1) qsort(s->sa, s->nsa, sizeof *s->sa, cmp_row);
    for (size_t i = 0; rc == 0 && i < s->nsa;) {
        size_t n = 1;
        while (i + n < s->nsa && s->sa[i + n].sub == s->sa[i].sub && s->sa[i + n].msg == s->sa[i].msg + (int64_t)n)
            n++;
        sqlite3_bind_int64(s->del_queue_range, 1, s->sa[i].sub);
        sqlite3_bind_int64(s->del_queue_range, 2, s->sa[i].msg);
        sqlite3_bind_int64(s->del_queue_range, 3, s->sa[i + n - 1].msg);
        rc = step_done(s, s->del_queue_range);
        i += n;
    }
    s->nsmsg = s->nsq = s->nsa = 0;
    msgpack_sbuffer_clear(&s->stage_attrs);
    if (rc != 0) s->failed = true;
    return rc;
}

int store_begin(store_t *s)
{
    if (s->in_txn) return 0;
    if (step_done(s, s->begin) != 0) return -1;
    s->in_txn = true;
    s->txn_no++;
    s->txn_started_ms = util_mono_ms();
    return 0;
}

/* The turn's transaction is lost: its rows and its collection of messages. */
static int rollback(store_t *s)
{
    s->in_txn = false;
    s->failed = false;
    s->next_id_dirty = false;
    s->gc_floor = s->gc_floor_committed;
    snprintf(s->failure, sizeof s->failure, "storage failed: the commit did not succeed (%.140s)",
             s->why[0] ? s->why : "unknown error");
    /* A failed COMMIT (an I/O error, a full disk) may have rolled back
     * already: then there is no transaction left to end. */
    if (!sqlite3_get_autocommit(s->db))
        step_done(s, s->rollback);
    return -1;
}

int store_commit(store_t *s)
{
    if (!s->in_txn) return 0;
    if (store_flush(s) != 0 || s->failed) return rollback(s);   /* a lost write: the whole turn goes */
    if (s->next_id_dirty) {
        sqlite3_bind_text(s->set_meta, 1, "next_msg_id", -1, SQLITE_STATIC);
        sqlite3_bind_int64(s->set_meta, 2, s->next_msg_id);
        if (step_done(s, s->set_meta) != 0) return rollback(s);   /* GC removed the rows that held it */
        s->next_id_dirty = false;
    }
    s->in_txn = false;
    if (step_done(s, s->commit) != 0) return rollback(s);
    s->gc_floor_committed = s->gc_floor;
    return 0;
}

/* Keeps the WAL from growing without end. SQLite starts writing the WAL from
 * its beginning again only when a write transaction begins with every frame
 * already copied into the database; under steady load the checkpointer never
 * sees that moment (a commit always lands while it copies), so the file grew
 * until the 64 MiB truncate, and a write that grows a file makes fdatasync
 * commit the file system's journal too: about 1.7x the latency of an
 * overwrite on this machine. So, between transactions, once the checkpointer
 * has copied all but a few frames of a WAL past WAL_RESTART_FRAMES, the loop
 * copies the rest itself (a few pages and one fsync of the database), and
 * the next transaction overwrites the WAL from its start. */
void store_restart_wal(store_t *s)
{
    if (s->in_txn) return;
    if (s->wal_restarting || s->wal_now < WAL_RESTART_FRAMES) return;
    uint64_t mark = __atomic_load_n(&s->wal_mark, __ATOMIC_RELAXED);
    int done = (int)(uint32_t)mark;
    if ((uint32_t)(mark >> 32) != __atomic_load_n(&s->wal_cycle, __ATOMIC_RELAXED) ||
        done < s->wal_now - WAL_RESTART_SLACK)
        return;   /* figures of an earlier cycle, or too much left to copy here */
    int nlog = 0, ndone = 0;
    if (sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &ndone) == SQLITE_OK &&
        nlog == ndone)
        s->wal_restarting = true;   /* the next transaction starts the WAL over */
}

int64_t store_sub_id(store_t *s, const char *topic, const char *function)
{
    sqlite3_stmt *st = NULL;
    int64_t id = -1;
    if (prep(s, &st, "INSERT INTO subs(topic, function) VALUES(?1, ?2)"
                     " ON CONFLICT(topic, function) DO NOTHING") != 0)
        return -1;
    sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, function, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        LOG_ERROR("%s: %s", s->path, sqlite3_errmsg(s->db));
        return -1;
    }
    if (prep(s, &st, "SELECT id FROM subs WHERE topic=?1 AND function=?2") != 0) return -1;
    sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, function, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    /* store_gc must know every subscription, including ones added on SIGHUP */
    bool known = false;
    for (size_t i = 0; i < s->nsub_ids && !known; i++) known = s->sub_ids[i] == id;
    if (id >= 0 && !known) {
        int64_t *v = realloc(s->sub_ids, (s->nsub_ids + 1) * sizeof *v);
        if (!v) return -1;
        s->sub_ids = v;
        s->sub_ids[s->nsub_ids++] = id;
    }
    return id;
}

int store_insert_message(store_t *s, const char *mid, const char *topic,
                         const void *attrs, size_t attrs_len,
                         const void *payload, size_t len, int64_t now_ms, int64_t *id)
{
    sqlite3_stmt *st = s->ins_msg;
    *id = s->next_msg_id;
    sqlite3_bind_int64(st, 1, *id);
    sqlite3_bind_text(st, 2, mid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, topic, -1, SQLITE_STATIC);
    if (attrs_len) sqlite3_bind_blob(st, 4, attrs, (int)attrs_len, SQLITE_STATIC);
    else sqlite3_bind_null(st, 4);
    /* zeroblob-safe: an empty payload is a blob of length 0, not NULL */
    sqlite3_bind_blob64(st, 5, len ? payload : "", len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, now_ms);
    if (step_done(s, st) != 0) return -1;
    s->next_msg_id++;
    return 0;
}

int store_insert_queue(store_t *s, int64_t sub, int64_t msg, int64_t attempts)
{
    sqlite3_bind_int64(s->ins_queue, 1, sub);
    sqlite3_bind_int64(s->ins_queue, 2, msg);
    sqlite3_bind_int64(s->ins_queue, 3, attempts);
    return step_done(s, s->ins_queue);
}

int store_insert_delayed(store_t *s, int64_t sub, int64_t msg, int64_t visible_ms, int64_t attempts)
{
    sqlite3_bind_int64(s->ins_delayed, 1, msg);
    sqlite3_bind_int64(s->ins_delayed, 2, sub);
    sqlite3_bind_int64(s->ins_delayed, 3, visible_ms);
    sqlite3_bind_int64(s->ins_delayed, 4, attempts);
    return step_done(s, s->ins_delayed);
}

int store_delete_delivery(store_t *s, const delivery_t *d)
{
    if (d->in_delayed) {
        sqlite3_bind_int64(s->del_delayed, 1, d->msg->id);
        sqlite3_bind_int64(s->del_delayed, 2, d->sub->id);
        return step_done(s, s->del_delayed);
    }
    sqlite3_bind_int64(s->del_queue, 1, d->sub->id);
    sqlite3_bind_int64(s->del_queue, 2, d->msg->id);
    return step_done(s, s->del_queue);
}

int store_producer_get(store_t *s, const char *producer, uint64_t *seq)
{
    *seq = 0;
    sqlite3_bind_text(s->get_producer, 1, producer, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s->get_producer);
    if (rc == SQLITE_ROW) *seq = (uint64_t)sqlite3_column_int64(s->get_producer, 0);
    sqlite3_reset(s->get_producer);
    sqlite3_clear_bindings(s->get_producer);
    return (rc == SQLITE_ROW || rc == SQLITE_DONE) ? 0 : -1;
}

int store_producer_set(store_t *s, const char *producer, uint64_t seq)
{
    sqlite3_bind_text(s->upd_producer, 1, producer, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s->upd_producer, 2, (int64_t)seq);
    sqlite3_bind_int64(s->upd_producer, 3, util_wall_ms());
    return step_done(s, s->upd_producer);
}

int store_refusal_get(store_t *s, const char *producer, uint64_t seq, uint32_t *status,
                      char *text, size_t n)
{
    sqlite3_stmt *st = s->get_refusal;
    sqlite3_bind_text(st, 1, producer, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (int64_t)seq);
    int found = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *status = (uint32_t)sqlite3_column_int(st, 0);
        snprintf(text, n, "%s", (const char *)sqlite3_column_text(st, 1));
        found = 1;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return found;
}

int store_refusal_set(store_t *s, const char *producer, uint64_t seq, uint32_t status, const char *text)
{
    if (store_begin(s) != 0) return -1;
    sqlite3_stmt *st = s->ins_refusal;
    sqlite3_bind_text(st, 1, producer, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (int64_t)seq);
    sqlite3_bind_int(st, 3, (int)status);
    sqlite3_bind_text(st, 4, text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, util_wall_ms());
    return step_done(s, st);
}

int store_refusal_clear(store_t *s, const char *producer, uint64_t seq)
{
    if (store_begin(s) != 0) return -1;
    sqlite3_stmt *st = s->del_refusal;
    sqlite3_bind_text(st, 1, producer, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (int64_t)seq);
    return step_done(s, st);
}

int store_dedup_get(store_t *s, const char *topic, const char *id, int64_t now_ms, char *mid, size_t n)
{
    sqlite3_stmt *st = s->get_dedup;
    sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now_ms - DEDUP_WINDOW_MS);
    int found = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(mid, n, "%s", (const char *)sqlite3_column_text(st, 0));
        found = 1;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return found;
}

int store_dedup_set(store_t *s, const char *topic, const char *id, const char *mid, int64_t now_ms)
{
    if (store_begin(s) != 0) return -1;
    sqlite3_stmt *st = s->ins_dedup;
    sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, mid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now_ms);
    return step_done(s, st);
}

/* Drops dedup ids past their window, refusals and producers past any
 * client's retry horizon (PRODUCER_TTL_MS). Index range deletes. */
int store_prune(store_t *s, int64_t now_ms)
{
    int64_t before[3] = { now_ms - DEDUP_WINDOW_MS, now_ms - PRODUCER_TTL_MS, now_ms - PRODUCER_TTL_MS };
    if (store_begin(s) != 0) return -1;
    for (int i = 0; i < 3; i++) {
        sqlite3_bind_int64(s->prune[i], 1, before[i]);
        if (step_done(s, s->prune[i]) != 0) return -1;
    }
    return 0;
}

/* At start only (the loop never counts rows): fills each subscription's
 * queued / delayed / dead counts and the total backlog. */
int store_count_sub(store_t *s, broker_t *b, sub_t *sub)
{
    static const char *q[] = {
        "SELECT count(*) FROM queue WHERE sub=?",
        "SELECT count(*) FROM delayed WHERE sub=?",
        "SELECT count(*) FROM dead WHERE sub=?",
    };
    int64_t n[3] = { 0, 0, 0 };
    for (int k = 0; k < 3; k++) {
        sqlite3_stmt *st = NULL;
        if (prep(s, &st, q[k]) != 0) return -1;
        sqlite3_bind_int64(st, 1, sub->id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) n[k] = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW) return -1;
    }
    sub->queued = n[0];
    sub->delayed = n[1];
    sub->dead = n[2];
    b->backlog += n[0] + n[1];
    return 0;
}

int store_counts(store_t *s, broker_t *b)
{
    static const char *q[] = {
        "SELECT sub, count(*) FROM queue GROUP BY sub",
        "SELECT sub, count(*) FROM delayed GROUP BY sub",
        "SELECT sub, count(*) FROM dead GROUP BY sub",
    };
    b->backlog = 0;
    for (size_t i = 0; i < b->nsubs; i++) b->subs[i]->queued = b->subs[i]->delayed = b->subs[i]->dead = 0;
    /* every subscription the database knows, configured or not: GC must not
     * collect messages that a removed subscription's rows still need */
    sqlite3_stmt *ids = NULL;
    if (prep(s, &ids, "SELECT id FROM subs") != 0) return -1;
    while (sqlite3_step(ids) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(ids, 0);
        bool known = false;
        for (size_t i = 0; i < s->nsub_ids && !known; i++) known = s->sub_ids[i] == id;
        if (known) continue;
        int64_t *v = realloc(s->sub_ids, (s->nsub_ids + 1) * sizeof *v);
        if (!v) { sqlite3_finalize(ids); return -1; }
        s->sub_ids = v;
        s->sub_ids[s->nsub_ids++] = id;
    }
    sqlite3_finalize(ids);
    for (int k = 0; k < 3; k++) {
        sqlite3_stmt *st = NULL;
        if (prep(s, &st, q[k]) != 0) return -1;
        while (sqlite3_step(st) == SQLITE_ROW) {
            int64_t id = sqlite3_column_int64(st, 0), n = sqlite3_column_int64(st, 1);
            if (k < 2) b->backlog += n;
            for (size_t i = 0; i < b->nsubs; i++) {
                if (b->subs[i]->id != id) continue;
                if (k == 0) b->subs[i]->queued = n;
                else if (k == 1) b->subs[i]->delayed = n;
                else b->subs[i]->dead = n;
            }
        }
        sqlite3_finalize(st);
    }
    return 0;
}

static bool needed_bit(const uint8_t *needed, int64_t k)
{
    return needed[k / 8] >> (k % 8) & 1;
}

/* The message ids in st's rows, which the sweep must keep: a `queue` or
 * `delayed` row needs them. -1 when the read failed: then nothing may go. */
static int mark_needed(sqlite3_stmt *st, int64_t lo, uint8_t *needed)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t k = sqlite3_column_int64(st, 0) - lo;
        if (k >= 0 && k < GC_BATCH) needed[k / 8] |= (uint8_t)(1u << (k % 8));
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* The smallest message id st (min_queue or min_delayed, bound) finds, into
 * *low when smaller. -1 when the read failed. */
static int lower_to(sqlite3_stmt *st, int64_t *low)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_int64(st, 0) < *low) *low = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

/* The floor is held by a row that stays (a subscription no worker serves, a
 * long delay, a backlog): the ids above it are swept, GC_BATCH a pass from
 * the next row that exists, and those no row needs are deleted around those
 * it does; from the newest id the sweep starts again at the floor. A pass
 * that deletes nothing (a backlog: every row still needed) makes the next
 * ones wait GC_SWEEP_REST. */
static int sweep(store_t *s)
{
    if (s->next_msg_id - s->gc_floor <= GC_SWEEP_SPAN) return 0;
    if (s->gc_rest > 0) { s->gc_rest--; return 0; }
    if (s->gc_sweep <= s->gc_floor || s->gc_sweep >= s->next_msg_id) s->gc_sweep = s->gc_floor + 1;
    /* from the next row that exists: what earlier passes deleted is skipped */
    sqlite3_bind_int64(s->next_msg, 1, s->gc_sweep);
    int64_t lo = sqlite3_step(s->next_msg) == SQLITE_ROW ? sqlite3_column_int64(s->next_msg, 0) : s->next_msg_id;
    sqlite3_reset(s->next_msg);
    if (lo >= s->next_msg_id) {   /* nothing left above: start again from the floor */
        s->gc_sweep = s->next_msg_id;
        return 0;
    }
    int64_t hi = lo + GC_BATCH < s->next_msg_id ? lo + GC_BATCH : s->next_msg_id;
    uint8_t needed[GC_BATCH / 8];
    memset(needed, 0, sizeof needed);
    for (size_t i = 0; i < s->nsub_ids; i++) {
        sqlite3_bind_int64(s->sweep_queue, 1, s->sub_ids[i]);
        sqlite3_bind_int64(s->sweep_queue, 2, lo);
        sqlite3_bind_int64(s->sweep_queue, 3, hi);
        if (mark_needed(s->sweep_queue, lo, needed) != 0) return -1;
    }
    sqlite3_bind_int64(s->sweep_delayed, 1, lo);
    sqlite3_bind_int64(s->sweep_delayed, 2, hi);
    if (mark_needed(s->sweep_delayed, lo, needed) != 0) return -1;
    if (store_begin(s) != 0) return -1;
    int64_t deleted = 0;
    for (int64_t from = lo; from < hi;) {   /* each run of unneeded ids: one range delete */
        while (from < hi && needed_bit(needed, from - lo)) from++;
        int64_t to = from;
        while (to < hi && !needed_bit(needed, to - lo)) to++;
        if (to > from) {
            sqlite3_bind_int64(s->gc_msgs, 1, from);
            sqlite3_bind_int64(s->gc_msgs, 2, to);
            if (step_done(s, s->gc_msgs) != 0) return -1;
            deleted += sqlite3_changes(s->db);
        }
        from = to;
    }
    s->gc_sweep = hi;
    if (deleted) s->next_id_dirty = true;   /* the largest id may be gone from `messages` now */
    else s->gc_rest = GC_SWEEP_REST;
    return 0;
}

/* Collects message rows no delivery needs any more: every id below the
 * smallest one still in `queue` (per subscription: an index seek each) or in
 * `delayed` (its key starts with msg), and, when that row stays, the unneeded
 * ids above it (sweep). Dead letters hold their own copy. At most GC_BATCH
 * ids per call, inside the turn's transaction. */
int store_gc(store_t *s, broker_t *b)
{
    int64_t low = s->next_msg_id;
    for (size_t i = 0; i < s->nsub_ids; i++) {
        sqlite3_bind_int64(s->min_queue, 1, s->sub_ids[i]);
        if (lower_to(s->min_queue, &low) != 0) return -1;   /* unknown: collect nothing */
    }
    if (lower_to(s->min_delayed, &low) != 0) return -1;
    (void)b;
    if (low <= s->gc_floor) return sweep(s);
    int64_t hi = low;
    if (hi - s->gc_floor > GC_BATCH) hi = s->gc_floor + GC_BATCH;
    if (store_begin(s) != 0) return -1;
    sqlite3_bind_int64(s->gc_msgs, 1, s->gc_floor);
    sqlite3_bind_int64(s->gc_msgs, 2, hi);
    if (step_done(s, s->gc_msgs) != 0) return -1;
    s->gc_floor = hi;
    s->next_id_dirty = true;   /* the largest id may be gone from `messages` now */
    return 0;
}

int attrs_pack(msgpack_sbuffer *sb, const proto_attr *a, uint32_t n)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    if (msgpack_pack_map(&pk, n) != 0) return -1;
    for (uint32_t i = 0; i < n; i++) {
        size_t kl = strlen(a[i].key), vl = strlen(a[i].value);
        if (msgpack_pack_str(&pk, kl) || msgpack_pack_str_body(&pk, a[i].key, kl) ||
            msgpack_pack_str(&pk, vl) || msgpack_pack_str_body(&pk, a[i].value, vl))
            return -1;
    }
    return 0;
}

uint32_t attrs_unpack(const void *blob, int len, proto_attr *attrs, attr_strs *strs)
{
    uint32_t n = 0;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    if (blob && len > 0 && msgpack_unpack_next(&up, blob, (size_t)len, NULL) == MSGPACK_UNPACK_SUCCESS &&
        up.data.type == MSGPACK_OBJECT_MAP) {
        msgpack_object_map *mp = &up.data.via.map;
        for (uint32_t i = 0; i < mp->size && n < PROTO_MAX_ATTRS; i++) {
            msgpack_object *k = &mp->ptr[i].key, *v = &mp->ptr[i].val;
            if (k->type != MSGPACK_OBJECT_STR || v->type != MSGPACK_OBJECT_STR) continue;
            if (k->via.str.size > PROTO_ATTR_VALUE_MAX || v->via.str.size > PROTO_ATTR_VALUE_MAX) continue;
            memcpy((*strs)[n][0], k->via.str.ptr, k->via.str.size);
            (*strs)[n][0][k->via.str.size] = 0;
            memcpy((*strs)[n][1], v->via.str.ptr, v->via.str.size);
            (*strs)[n][1][v->via.str.size] = 0;
            attrs[n].key = (*strs)[n][0];
            attrs[n].value = (*strs)[n][1];
            n++;
        }
    }
    msgpack_unpacked_destroy(&up);
    return n;
}
