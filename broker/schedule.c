/* schedule.c — schedules in the broker (DESIGN §12): each slot of a schedule
 * becomes one event, stored exactly once.
 *
 * A schedule's state is one row of `schedules`: `done` (every slot at or
 * before it is settled: fired or skipped), `next_fire`, `last_fire` and
 * `fired`. A firing stores its event through publish_local() as producer
 * "sched_ID" with the slot's time as its sequence, so its message id is
 * "sched_ID-SLOT"; the row, the producer's high-water mark and the event are
 * written in the turn's transaction. The row's `done` decides what fires,
 * not the mark: a publisher that named itself "sched_1" must not be able to
 * silence a schedule. A broker killed at any moment has all three on disk or
 * none: a slot is never stored twice and never lost. What is staged in memory is applied
 * only after the commit (schedules_committed), so a failed commit fires the
 * same slots again with the same ids.
 *
 * Slots that fell while the broker was down are decided once at start by
 * `catch_up`; slots that fall while it runs all fire, late if the loop was
 * busy, at most SLOTS_PER_TURN per schedule per turn. The clock may step back
 * (NTP): nothing at or before `done` ever fires again. Rates are anchored at
 * the epoch (rate(5 minutes) fires at :00, :05, …), the same across restarts.
 *
 * HERALD_TEST_CLOCK_OFFSET (seconds, tests only) shifts the clock that
 * schedules read, so a test can be "an hour later" without waiting one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.h"

/* At most this many slots fire per schedule per turn (a long stall, a clock
 * step forward), and at most this many missed ones with catch_up = "all". */
#define SLOTS_PER_TURN 100
#define CATCH_UP_MAX 100
/* A schedule whose firing is refused (throttled, disk alarm) tries again after this. */
#define REFUSED_RETRY_S 1

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS schedules(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,"
    " spec TEXT NOT NULL, timezone TEXT NOT NULL, done INTEGER NOT NULL, next_fire INTEGER,"
    " last_fire INTEGER, fired INTEGER NOT NULL DEFAULT 0);";

static int64_t clock_offset_s(void)
{
    const char *v = getenv("HERALD_TEST_CLOCK_OFFSET");
    return v ? strtoll(v, NULL, 10) : 0;
}

static int64_t now_s(const broker_t *b)
{
    return util_wall_ms() / 1000 + b->sched_offset_s;
}

/* RFC 3339 UTC of a slot: "2026-12-07T02:00:00Z". */
static void rfc3339(int64_t t, char out[32])
{
    int64_t y;
    int mo, d, h, mi, s;
    tz_split(t, &y, &mo, &d, &h, &mi, &s);
    snprintf(out, 32, "%04lld-%02d-%02dT%02d:%02d:%02dZ", (long long)y, mo, d, h, mi, s);
}

static int step(sqlite3 *db, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        LOG_ERROR("schedules: %s", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

/* The row of s as it is in memory (or as staged: the staged values). */
static int write_row(broker_t *b, schedule_t *s, int64_t done, int64_t next, int64_t last, uint64_t fired)
{
    if (store_begin(&b->store) != 0) return -1;
    sqlite3_stmt *st = b->sched_upd;
    sqlite3_bind_int64(st, 1, s->id);
    sqlite3_bind_int64(st, 2, done);
    if (next) sqlite3_bind_int64(st, 3, next);
    if (last) sqlite3_bind_int64(st, 4, last);
    sqlite3_bind_int64(st, 5, (int64_t)fired);
    b->sched_dirty = true;
    if (step(b->store.db, st) != 0) { b->store.failed = true; return -1; }
    return 0;
}

/* The first slot after t, or 0 when there is none (an `at` past, years ended). */
static int64_t slot_after(const schedule_t *s, int64_t t)
{
    int64_t n;
    return cron_next(&s->expr, s->tz, t, &n) == 0 ? n : 0;
}

/* A new schedule, or one whose spec or zone changed: it starts now — its
 * first slot is the first one after now — under a fresh row id, so its ids
 * never meet an earlier life's. */
static int start_fresh(broker_t *b, schedule_t *s, int64_t now)
{
    if (store_begin(&b->store) != 0) return -1;
    sqlite3_stmt *st = b->sched_new;
    sqlite3_bind_text(st, 1, s->cfg->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->cfg->spec, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, s->cfg->timezone, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now);
    if (step(b->store.db, st) != 0) return -1;
    s->id = sqlite3_last_insert_rowid(b->store.db);
    s->done = now;
    s->next = slot_after(s, now);
    s->last = 0;
    s->fired = 0;
    snprintf(s->producer, sizeof s->producer, "sched_%lld", (long long)s->id);
    b->sched_dirty = true;
    return write_row(b, s, s->done, s->next, 0, 0);
}

static int compile(schedule_t *s, const cfg_schedule *c)
{
    char why[256];
    s->cfg = c;
    if (cron_parse(c->spec, &s->expr, why, sizeof why) != 0) {   /* checked at load: not expected */
        LOG_ERROR("schedule %s: %s: %s", c->name, c->spec, why);
        return -1;
    }
    s->tz = strcmp(c->timezone, "UTC") == 0 ? NULL : tz_load(c->timezone, why, sizeof why);
    if (strcmp(c->timezone, "UTC") != 0 && !s->tz) {
        LOG_ERROR("schedule %s: %s", c->name, why);
        return -1;
    }
    return 0;
}

/* The event of one slot: the configured payload, or EventBridge's
 * "Scheduled Event" with the slot's time. */
static int fire(broker_t *b, schedule_t *s, int64_t slot)
{
    const cfg_schedule *c = s->cfg;
    char mid[PROTO_ID_MAX + 1], why[192], body[1024], when[32];
    snprintf(mid, sizeof mid, "%s-%lld", s->producer, (long long)slot);
    const char *payload = c->payload;
    if (!payload) {
        rfc3339(slot, when);
        snprintf(body, sizeof body,
                 "{\"version\":\"0\",\"id\":\"%s\",\"detail-type\":\"Scheduled Event\",\"source\":\"herald.scheduler\","
                 "\"account\":\"%s\",\"time\":\"%s\",\"region\":\"%s\",\"resources\":[\"%s\"],\"detail\":{}}",
                 mid, b->cfg->gateway.account, when, b->cfg->gateway.region, c->name);
        payload = body;
    }
    proto_attr attrs[PROTO_MAX_ATTRS];
    for (size_t i = 0; i < c->nattrs; i++) attrs[i] = (proto_attr){ c->attrs[i].key, c->attrs[i].value };
    uint32_t st = publish_local(b, s->producer, (uint64_t)slot, c->topic, c->function, attrs, (uint32_t)c->nattrs,
                                payload, strlen(payload), why, sizeof why);
    if (st == PROTO_OK) return 0;
    if (!s->refused) LOG_WARN("schedule %s: the slot %s was refused, trying again: %s", c->name, mid, why);
    s->refused = true;
    s->retry_at = now_s(b) + REFUSED_RETRY_S;
    return -1;
}

/* Fires the due slots of s, at most SLOTS_PER_TURN; the new state is staged. */
static void run_one(broker_t *b, schedule_t *s, int64_t now)
{
    int64_t done = s->staged ? s->s_done : s->done, next = s->staged ? s->s_next : s->next;
    int64_t last = s->staged ? s->s_last : s->last;
    uint64_t fired = s->staged ? s->s_fired : s->fired;
    int n = 0;
    while (next && next <= now && n < SLOTS_PER_TURN) {
        if (fire(b, s, next) != 0) break;
        s->refused = false;
        done = last = next;
        fired++;
        n++;
        next = slot_after(s, next);
    }
    if (n == 0) return;
    if (write_row(b, s, done, next, last, fired) != 0) return;
    s->staged = true;
    s->s_done = done, s->s_next = next, s->s_last = last, s->s_fired = fired;
}

/* At start: the slots missed while the broker was down — after `done`, at
 * or before now — by catch_up. Only the newest CATCH_UP_MAX can fire, so
 * they are looked for in a window before now that doubles until it holds
 * enough of them or reaches `done` (a minutely cron down for a year walks
 * hours, not a year). Afterwards every slot up to now is settled. */
static void catch_up(broker_t *b, schedule_t *s, int64_t now)
{
    const cfg_schedule *c = s->cfg;
    size_t keep = c->catch_up == CATCH_UP_ALL ? CATCH_UP_MAX : 1;   /* none: 1, to say what it skipped */
    int64_t ring[CATCH_UP_MAX], from;
    size_t n = 0;
    for (int64_t w = 3600;; w *= 2) {
        from = now - w > s->done ? now - w : s->done;
        n = 0;
        for (int64_t x, t = from; (x = slot_after(s, t)) && x <= now; t = x) ring[n++ % CATCH_UP_MAX] = x;
        if (n >= keep || from == s->done) break;
    }
    if (n == 0) return;
    if (c->catch_up == CATCH_UP_NONE) keep = 0;
    if (keep > n) keep = n;
    size_t fired = 0, late = 0, refused = 0;
    int64_t last = s->last;
    for (size_t i = n - keep; i < n; i++) {
        int64_t slot = ring[i % CATCH_UP_MAX];
        if (c->starting_deadline_s > 0 && (double)(now - slot) > c->starting_deadline_s) { late++; continue; }
        if (fire(b, s, slot) != 0) { refused++; continue; }
        last = slot;
        fired++;
    }
    s->refused = false;   /* at start a refused slot is not tried again: it is reported as skipped */
    LOG_INFO("schedule %s: %s%zu slot%s missed while the broker was down; catch_up = %s fired %zu%s%s", c->name,
             from == s->done ? "" : "more than ", n, n == 1 ? "" : "s", config_catch_up_name(c->catch_up), fired,
             late ? ", skipped those older than starting_deadline" : "",
             refused ? ", skipped those the broker refused (throttled)" : "");
    int64_t next = slot_after(s, now);
    if (write_row(b, s, now, next, last, s->fired + fired) != 0) return;
    s->staged = true;
    s->s_done = now, s->s_next = next, s->s_last = last, s->s_fired = s->fired + fired;
}

static void free_one(schedule_t *s)
{
    tz_destroy(&s->tz);
}

static bool configured(const herald_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nschedules; i++)
        if (strcmp(cfg->schedules[i].name, name) == 0) return true;
    return false;
}

/* Deletes a schedule's row in the open transaction. */
static int delete_row(broker_t *b, const char *name)
{
    if (store_begin(&b->store) != 0) return -1;
    sqlite3_bind_text(b->sched_del, 1, name, -1, SQLITE_STATIC);
    b->sched_dirty = true;
    return step(b->store.db, b->sched_del);
}

/* s's row from an earlier run, when its spec and zone are still the same:
 * true and its state in s. */
static bool load_row(broker_t *b, schedule_t *s)
{
    sqlite3_stmt *get = b->sched_get;
    sqlite3_bind_text(get, 1, s->cfg->name, -1, SQLITE_STATIC);
    bool same = sqlite3_step(get) == SQLITE_ROW &&
                strcmp((const char *)sqlite3_column_text(get, 1), s->cfg->spec) == 0 &&
                strcmp((const char *)sqlite3_column_text(get, 2), s->cfg->timezone) == 0;
    if (same) {
        s->id = sqlite3_column_int64(get, 0);
        s->done = sqlite3_column_int64(get, 3);
        s->last = sqlite3_column_int64(get, 4);
        s->fired = (uint64_t)sqlite3_column_int64(get, 5);
        snprintf(s->producer, sizeof s->producer, "sched_%lld", (long long)s->id);
        s->next = slot_after(s, s->done);
    }
    sqlite3_reset(get);
    sqlite3_clear_bindings(get);
    return same;
}

/* Rows of schedules cfg no longer has (removed by a SIGHUP, or while the broker was down) go. */
static void drop_unconfigured(broker_t *b, const herald_config *cfg)
{
    sqlite3_stmt *names;
    if (sqlite3_prepare_v2(b->store.db, "SELECT name FROM schedules", -1, &names, NULL) != SQLITE_OK) return;
    char **gone = NULL;
    size_t ngone = 0;
    while (sqlite3_step(names) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(names, 0);
        if (configured(cfg, name)) continue;
        char **g = realloc(gone, (ngone + 1) * sizeof *gone);
        if (!g) break;
        gone = g;
        gone[ngone++] = strdup(name);
    }
    sqlite3_finalize(names);
    for (size_t i = 0; i < ngone; i++) {
        if (gone[i] && delete_row(b, gone[i]) == 0) LOG_INFO("schedule %s: removed", gone[i]);
        free(gone[i]);
    }
    free(gone);
}

/* Matches the configured schedules with their rows: kept (same spec and
 * zone: running, or from an earlier run), changed or new (start now, under a
 * new row), gone (row deleted). At start, kept ones catch up on what they
 * missed. */
static int sync(broker_t *b, const herald_config *cfg, bool at_start)
{
    int64_t now = now_s(b);
    schedule_t *fresh = calloc(cfg->nschedules ? cfg->nschedules : 1, sizeof *fresh);
    if (!fresh) return -1;
    for (size_t i = 0; i < cfg->nschedules; i++) {
        schedule_t *s = &fresh[i];
        if (compile(s, &cfg->schedules[i]) != 0) goto fail;
        schedule_t *old = NULL;
        for (size_t k = 0; k < b->nschedules && !old; k++)
            if (strcmp(b->schedules[k].cfg->name, s->cfg->name) == 0) old = &b->schedules[k];
        bool same = false;
        if (old && strcmp(old->cfg->spec, s->cfg->spec) == 0 && strcmp(old->cfg->timezone, s->cfg->timezone) == 0) {
            tz_t *tz = s->tz;   /* running and unchanged: its state carries over */
            *s = *old;
            s->cfg = &cfg->schedules[i];
            s->tz = tz;
            same = true;
        } else if (!old) {
            same = load_row(b, s);
        }
        if (!same) {   /* the old row (another spec) goes: its ids are never reused */
            if (delete_row(b, s->cfg->name) != 0 || start_fresh(b, s, now) != 0) goto fail;
            if (old || !at_start)
                LOG_INFO("schedule %s: %s %s from now; next %lld", s->cfg->name, s->cfg->spec,
                         old ? "changed, counted" : "added, counted", (long long)s->next);
        } else if (at_start) {
            catch_up(b, s, now);
        }
    }
    drop_unconfigured(b, cfg);
    for (size_t k = 0; k < b->nschedules; k++) free_one(&b->schedules[k]);   /* kept ones have their own zone */
    free(b->schedules);
    b->schedules = fresh;
    b->nschedules = cfg->nschedules;
    return 0;
fail:
    /* the old ones point into a config that may be about to go: none runs */
    for (size_t i = 0; i < cfg->nschedules; i++) free_one(&fresh[i]);
    free(fresh);
    for (size_t k = 0; k < b->nschedules; k++) free_one(&b->schedules[k]);
    free(b->schedules);
    b->schedules = NULL;
    b->nschedules = 0;
    LOG_ERROR("schedules: none runs until the next reload or restart");
    return -1;
}

int schedules_open(broker_t *b)
{
    b->sched_offset_s = clock_offset_s();
    if (b->sched_offset_s) LOG_WARN("HERALD_TEST_CLOCK_OFFSET: schedules read the clock %+lld s off (tests only)",
                                    (long long)b->sched_offset_s);
    sqlite3 *db = b->store.db;
    if (sqlite3_exec(db, SCHEMA, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT id, spec, timezone, done, last_fire, fired FROM schedules WHERE name = ?", -1,
                           &b->sched_get, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO schedules(name, spec, timezone, done) VALUES (?, ?, ?, ?)", -1,
                           &b->sched_new, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "UPDATE schedules SET done = ?2, next_fire = ?3, last_fire = ?4, fired = ?5 WHERE id = ?1",
                           -1, &b->sched_upd, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "DELETE FROM schedules WHERE name = ?", -1, &b->sched_del, NULL) != SQLITE_OK) {
        LOG_ERROR("schedules: %s", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

int schedules_start(broker_t *b)
{
    return sync(b, b->cfg, true);
}

int schedules_reload(broker_t *b, const herald_config *cfg)
{
    return sync(b, cfg, false);
}

int64_t schedules_run(broker_t *b)
{
    if (b->nschedules == 0) return -1;   /* every loop turn comes here: nothing to read then */
    int64_t now_ms = util_wall_ms() + b->sched_offset_s * 1000, now = now_ms / 1000, soonest = -1;
    for (size_t i = 0; i < b->nschedules; i++) {
        schedule_t *s = &b->schedules[i];
        if (!s->refused || now >= s->retry_at) run_one(b, s, now);
        int64_t next = s->refused ? s->retry_at : s->staged ? s->s_next : s->next;
        if (next && (soonest < 0 || next < soonest)) soonest = next;
    }
    if (soonest < 0) return -1;
    return soonest * 1000 > now_ms ? soonest * 1000 - now_ms : 0;
}

void schedules_committed(broker_t *b, bool committed)
{
    for (size_t i = 0; i < b->nschedules; i++) {
        schedule_t *s = &b->schedules[i];
        if (!s->staged) continue;
        if (committed) s->done = s->s_done, s->next = s->s_next, s->last = s->s_last, s->fired = s->s_fired;
        s->staged = false;   /* rolled back: the same slots fire again, with the same ids */
    }
    b->sched_dirty = false;
}

void schedules_pack(broker_t *b, msgpack_packer *pk)
{
    msgpack_pack_array(pk, b->nschedules);
    for (size_t i = 0; i < b->nschedules; i++) {
        const schedule_t *s = &b->schedules[i];
        const cfg_schedule *c = s->cfg;
        char next[32], last[32];
        rfc3339(s->next, next);
        rfc3339(s->last, last);
        const char *keys[] = { "name", "topic", "function", "spec", "timezone", "catch_up", "next", "last" };
        const char *vals[] = { c->name, c->topic, c->function, c->spec, c->timezone,
                               config_catch_up_name(c->catch_up), s->next ? next : NULL, s->last ? last : NULL };
        msgpack_pack_map(pk, 9);
        for (size_t k = 0; k < 8; k++) {
            msgpack_pack_str(pk, strlen(keys[k]));
            msgpack_pack_str_body(pk, keys[k], strlen(keys[k]));
            if (!vals[k]) {
                msgpack_pack_nil(pk);
                continue;
            }
            msgpack_pack_str(pk, strlen(vals[k]));
            msgpack_pack_str_body(pk, vals[k], strlen(vals[k]));
        }
        msgpack_pack_str(pk, 5);
        msgpack_pack_str_body(pk, "fired", 5);
        msgpack_pack_uint64(pk, s->fired);
    }
}

void schedules_close(broker_t *b)
{
    for (size_t i = 0; i < b->nschedules; i++) free_one(&b->schedules[i]);
    free(b->schedules);
    b->schedules = NULL;
    b->nschedules = 0;
    sqlite3_finalize(b->sched_get);
    sqlite3_finalize(b->sched_new);
    sqlite3_finalize(b->sched_upd);
    sqlite3_finalize(b->sched_del);
    b->sched_get = b->sched_new = b->sched_upd = b->sched_del = NULL;
}
