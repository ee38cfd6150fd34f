/* dlq.c — reading dead letters: `dlq list` and `dlq show` as msgpack maps.
 *
 * Pure functions of a read-only SQLite connection, shared by the broker (its
 * admin endpoint, on a connection of its own, never the loop's writer) and by
 * heraldctl (straight from the database file, broker running or not). The keys
 * are those of `heraldctl dlq list --json` / `dlq show --json` (DESIGN §2).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dlq.h"

static void pk_str(msgpack_packer *pk, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s ? s : "", n);
}

static void pk_strn(msgpack_packer *pk, const void *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void dlq_rfc3339(int64_t ms, char *buf, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + k, n - k, ".%03dZ", (int)(ms % 1000));
}

static bool valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n) return false;
        if (c == 0) return false;   /* NUL: not text a terminal or JSON reader wants */
        for (size_t k = 1; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return false;
        if (len == 2 && c < 0xC2) return false;                       /* overlong */
        if (len == 3 && c == 0xE0 && s[i + 1] < 0xA0) return false;
        if (len == 3 && c == 0xED && s[i + 1] >= 0xA0) return false;  /* surrogates */
        if (len == 4 && (c > 0xF4 || (c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] >= 0x90)))
            return false;
        i += len;
    }
    return true;
}

static char *base64(const unsigned char *p, size_t n, size_t *out_len)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t len = (n + 2) / 3 * 4;
    char *o = malloc(len + 1), *w = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        *w++ = t[v >> 18 & 63];
        *w++ = t[v >> 12 & 63];
        *w++ = i + 1 < n ? t[v >> 6 & 63] : '=';
        *w++ = i + 2 < n ? t[v & 63] : '=';
    }
    *w = 0;
    *out_len = len;
    return o;
}

/* The list keys, from a row of the dead-letter SELECT below (columns 0–8). */
static void pack_list_keys(msgpack_packer *pk, sqlite3_stmt *st)
{
    char when[40];
    pk_str(pk, "id"); msgpack_pack_int64(pk, sqlite3_column_int64(st, 0));
    pk_str(pk, "message_id"); pk_str(pk, (const char *)sqlite3_column_text(st, 1));
    pk_str(pk, "topic"); pk_str(pk, (const char *)sqlite3_column_text(st, 2));
    pk_str(pk, "function"); pk_str(pk, (const char *)sqlite3_column_text(st, 3));
    pk_str(pk, "attempts"); msgpack_pack_int64(pk, sqlite3_column_int64(st, 4));
    pk_str(pk, "outcome"); pk_str(pk, (const char *)sqlite3_column_text(st, 5));
    pk_str(pk, "error"); pk_str(pk, (const char *)sqlite3_column_text(st, 6));
    dlq_rfc3339(sqlite3_column_int64(st, 7), when, sizeof when);
    pk_str(pk, "failed_at"); pk_str(pk, when);
    pk_str(pk, "payload_bytes"); msgpack_pack_int64(pk, sqlite3_column_int64(st, 8));
}

#define DLQ_COLUMNS "id, mid, topic, function, attempts, outcome, error, failed_ms, length(payload)"

int dlq_list(sqlite3 *db, const dlq_filter *f, msgpack_sbuffer *out, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    const char *sql = "SELECT " DLQ_COLUMNS " FROM dead"
                      " WHERE (?1 IS NULL OR function = ?1) AND (?2 IS NULL OR topic = ?2)"
                      " ORDER BY id DESC LIMIT ?3";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "reading dead letters: %s", sqlite3_errmsg(db));
        return -1;
    }
    if (f->function) sqlite3_bind_text(st, 1, f->function, -1, SQLITE_STATIC);
    if (f->topic) sqlite3_bind_text(st, 2, f->topic, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, f->limit > 0 ? f->limit : -1);   /* 0: all */
    /* count first (the array header comes before its items), then pack */
    msgpack_sbuffer items;
    msgpack_sbuffer_init(&items);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &items, msgpack_sbuffer_write);
    uint32_t n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        msgpack_pack_map(&pk, 9);
        pack_list_keys(&pk, st);
        n++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "reading dead letters: %s", sqlite3_errmsg(db));
        msgpack_sbuffer_destroy(&items);
        return -1;
    }
    msgpack_packer po;
    msgpack_packer_init(&po, out, msgpack_sbuffer_write);
    msgpack_pack_array(&po, n);
    msgpack_sbuffer_write(out, items.data, items.size);
    msgpack_sbuffer_destroy(&items);
    return 0;
}

int dlq_show(sqlite3 *db, int64_t id, msgpack_sbuffer *out, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL, *hs = NULL;
    int ret = -1;
    if (sqlite3_prepare_v2(db, "SELECT " DLQ_COLUMNS ", attrs, payload, msg, sub FROM dead WHERE id = ?",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT attempt, outcome, worker, started_ms, duration_ms, error FROM failures"
                               " WHERE mid = ? AND sub = ? ORDER BY n", -1, &hs, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "reading dead letters: %s", sqlite3_errmsg(db));
        goto out;
    }
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        snprintf(err, errlen, "no dead letter with id %lld", (long long)id);
        ret = 1;
        goto out;
    }
    if (rc != SQLITE_ROW) {
        snprintf(err, errlen, "reading dead letters: %s", sqlite3_errmsg(db));
        goto out;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 13);
    pack_list_keys(&pk, st);

    pk_str(&pk, "attributes");
    const void *ab = sqlite3_column_blob(st, 9);
    int al = sqlite3_column_bytes(st, 9);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    if (ab && al > 0 && msgpack_unpack_next(&up, ab, (size_t)al, NULL) == MSGPACK_UNPACK_SUCCESS &&
        up.data.type == MSGPACK_OBJECT_MAP)
        msgpack_pack_object(&pk, up.data);
    else
        msgpack_pack_map(&pk, 0);
    msgpack_unpacked_destroy(&up);

    const unsigned char *p = sqlite3_column_blob(st, 10);
    size_t plen = (size_t)sqlite3_column_bytes(st, 10);
    bool text = valid_utf8(p, plen);
    pk_str(&pk, "payload");
    if (text) {
        pk_strn(&pk, p ? (const char *)p : "", plen);
    } else {
        size_t bl = 0;
        char *b64 = base64(p, plen, &bl);
        if (!b64) { snprintf(err, errlen, "out of memory"); goto out; }
        pk_strn(&pk, b64, bl);
        free(b64);
    }
    pk_str(&pk, "payload_encoding");
    pk_str(&pk, text ? "utf-8" : "base64");

    sqlite3_bind_text(hs, 1, (const char *)sqlite3_column_text(st, 1), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(hs, 2, sqlite3_column_int64(st, 12));
    msgpack_sbuffer hist;
    msgpack_sbuffer_init(&hist);
    msgpack_packer ph;
    msgpack_packer_init(&ph, &hist, msgpack_sbuffer_write);
    uint32_t n = 0;
    char when[40];
    while (sqlite3_step(hs) == SQLITE_ROW) {
        msgpack_pack_map(&ph, 6);
        pk_str(&ph, "attempt"); msgpack_pack_int64(&ph, sqlite3_column_int64(hs, 0));
        pk_str(&ph, "outcome"); pk_str(&ph, (const char *)sqlite3_column_text(hs, 1));
        pk_str(&ph, "worker"); pk_str(&ph, (const char *)sqlite3_column_text(hs, 2));
        int64_t started = sqlite3_column_int64(hs, 3);
        if (started > 0) dlq_rfc3339(started, when, sizeof when);
        pk_str(&ph, "started_at");
        if (started > 0) pk_str(&ph, when);
        else msgpack_pack_nil(&ph);   /* never started: its worker was lost first */
        pk_str(&ph, "duration_ms"); msgpack_pack_int64(&ph, sqlite3_column_int64(hs, 4));
        pk_str(&ph, "error"); pk_str(&ph, (const char *)sqlite3_column_text(hs, 5));
        n++;
    }
    pk_str(&pk, "history");
    msgpack_pack_array(&pk, n);
    msgpack_sbuffer_write(out, hist.data, hist.size);
    msgpack_sbuffer_destroy(&hist);
    ret = 0;
out:
    sqlite3_finalize(st);
    sqlite3_finalize(hs);
    return ret;
}

sqlite3 *dlq_open(const char *path, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    char uri[4200];
    snprintf(uri, sizeof uri, "file:%s?mode=ro", path);
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, db ? sqlite3_errmsg(db) : "cannot open");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 2000);
    /* a file that is not a herald database fails here, not in the first query */
    if (sqlite3_exec(db, "SELECT 1 FROM dead LIMIT 0", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: not a herald database (%s)", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return NULL;
    }
    return db;
}
