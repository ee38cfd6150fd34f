/* admin.c — the admin endpoint: ADMIN {command, args} → ADMIN_REPLY.
 *
 * Commands: "stats" (DESIGN §2 figures, every key of `heraldctl stats --json`),
 * "dlq.list" {function?, topic?, limit?}, "dlq.show" {id},
 * "dlq.replay" {ids?, function?, topic?, rate?, dry_run?},
 * "dlq.purge" {ids?, function?, topic?, older_than?, dry_run?}, "schedules" (→ one
 * map per schedule: name, topic, function, spec, timezone, catch_up, next, last,
 * fired), "ping" (→ the
 * broker's start time, wall ms: a restart shows as a new value), "memory" (→
 * {heap_in_use, sqlite}: bytes of heap allocated and not freed, all arenas, and
 * SQLite's share of them; what the reliability tests watch for leaks).
 * Dead letters are read through a read-only connection of their own. A
 * replay or purge is a job that writes a chunk per turn in the loop's
 * transaction; its answer goes out after the commit of its last chunk
 * (admin_flush), like a publish confirm. Replies are msgpack maps that
 * heraldctl prints as JSON or tables.
 * Everything here reads counters kept in memory: no query runs on the loop.
 */
#include <malloc.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "broker.h"
#include "dlq.h"

static void pk_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_stats(broker_t *b, msgpack_packer *pk)
{
    int64_t now = util_mono_ms();
    msgpack_pack_map(pk, 5);
    pk_str(pk, "topics");
    msgpack_pack_array(pk, b->ntopics);
    for (size_t i = 0; i < b->ntopics; i++) {
        msgpack_pack_map(pk, 2);
        pk_str(pk, "name"); pk_str(pk, b->topics[i].name);
        pk_str(pk, "published"); msgpack_pack_uint64(pk, b->topics[i].published);
    }
    /* a function's own queue (async invoke, topic "") is listed once used */
    size_t nsubs = 0;
    for (size_t i = 0; i < b->nsubs; i++) {
        sub_t *s = b->subs[i];
        if (s->topic[0] || s->queued || s->delayed || s->dead || s->succeeded || s->failed) nsubs++;
    }
    pk_str(pk, "subscriptions");
    msgpack_pack_array(pk, nsubs);
    for (size_t i = 0; i < b->nsubs; i++) {
        sub_t *s = b->subs[i];
        if (!(s->topic[0] || s->queued || s->delayed || s->dead || s->succeeded || s->failed)) continue;
        msgpack_pack_map(pk, 8);
        pk_str(pk, "topic"); pk_str(pk, s->topic);
        pk_str(pk, "function"); pk_str(pk, s->fn->name);
        pk_str(pk, "ready"); msgpack_pack_int64(pk, s->queued - s->inflight);
        pk_str(pk, "delayed"); msgpack_pack_int64(pk, s->delayed);
        pk_str(pk, "inflight"); msgpack_pack_int64(pk, s->inflight);
        pk_str(pk, "dead"); msgpack_pack_int64(pk, s->dead);
        pk_str(pk, "succeeded"); msgpack_pack_uint64(pk, s->succeeded);
        pk_str(pk, "failed"); msgpack_pack_uint64(pk, s->failed);
    }
    pk_str(pk, "functions");
    msgpack_pack_array(pk, b->nfunctions);
    for (size_t i = 0; i < b->nfunctions; i++) {
        function_t *fn = &b->functions[i];
        msgpack_pack_map(pk, 15);
        pk_str(pk, "name"); pk_str(pk, fn->name);
        pk_str(pk, "invocations"); msgpack_pack_uint64(pk, fn->invocations);
        pk_str(pk, "errors"); msgpack_pack_uint64(pk, fn->errors);
        pk_str(pk, "timeouts"); msgpack_pack_uint64(pk, fn->timeouts);
        pk_str(pk, "rejected"); msgpack_pack_uint64(pk, fn->rejected);
        pk_str(pk, "crashed"); msgpack_pack_uint64(pk, fn->crashed);
        pk_str(pk, "lost"); msgpack_pack_uint64(pk, fn->lost);
        pk_str(pk, "p50_ms"); msgpack_pack_double(pk, hist_percentile_ms(&fn->hist, 0.50));
        pk_str(pk, "p99_ms"); msgpack_pack_double(pk, hist_percentile_ms(&fn->hist, 0.99));
        /* GB-seconds: Σ duration × memory (Lambda's unit) */
        pk_str(pk, "gb_seconds");
        msgpack_pack_double(pk, (double)fn->duration_total_us / 1e6 * fn->cfg->memory_mb / 1024.0);
        pk_str(pk, "kind"); pk_str(pk, fn->cfg->runtime ? "runtime" : fn->cfg->native ? "native" : "exec");
        /* warm runtimes (DESIGN §11), from the workers' STATS; every reason
         * is listed, so that a reader never has to tell "absent" from 0 */
        pk_str(pk, "cold_starts"); msgpack_pack_uint64(pk, fn->rt.cold_starts);
        pk_str(pk, "init_ms");
        msgpack_pack_double(pk, fn->rt.cold_starts ? (double)fn->rt.init_us / 1e3 / (double)fn->rt.cold_starts : 0.0);
        pk_str(pk, "warm"); msgpack_pack_uint64(pk, fn->rt.warm);
        pk_str(pk, "recycles");
        msgpack_pack_map(pk, PROTO_RECYCLE_COUNT);
        for (int k = 0; k < PROTO_RECYCLE_COUNT; k++) {
            pk_str(pk, proto_recycle_name((proto_recycle)k));
            msgpack_pack_uint64(pk, fn->rt.recycles[k]);
        }
    }
    size_t nw = 0;
    for (list_node *n = b->workers.head.next; n != &b->workers.head; n = n->next)
        if (!container_of(n, worker_t, link)->dead) nw++;
    pk_str(pk, "workers");
    msgpack_pack_array(pk, nw);
    for (list_node *n = b->workers.head.next; n != &b->workers.head; n = n->next) {
        worker_t *w = container_of(n, worker_t, link);
        if (w->dead) continue;
        msgpack_pack_map(pk, 8);
        pk_str(pk, "id"); pk_str(pk, w->id);
        pk_str(pk, "host"); pk_str(pk, w->host);
        pk_str(pk, "pid"); msgpack_pack_uint32(pk, w->pid);
        pk_str(pk, "functions");
        size_t nf = 0;
        for (size_t i = 0; i < b->nfunctions; i++) nf += worker_serves(w, &b->functions[i]);
        msgpack_pack_array(pk, nf);
        for (size_t i = 0; i < b->nfunctions; i++)
            if (worker_serves(w, &b->functions[i])) pk_str(pk, b->functions[i].name);
        pk_str(pk, "slots"); msgpack_pack_uint32(pk, w->slots);
        pk_str(pk, "busy"); msgpack_pack_uint32(pk, w->busy);
        pk_str(pk, "last_seen_ms"); msgpack_pack_int64(pk, now - w->last_seen_ms);
        /* what it cannot run here, and why (its handler is missing, …) */
        pk_str(pk, "refused");
        msgpack_pack_array(pk, w->nrefusals);
        for (uint32_t i = 0; i < w->nrefusals; i++) {
            msgpack_pack_map(pk, 2);
            pk_str(pk, "function"); pk_str(pk, w->refusals[i].function);
            pk_str(pk, "reason"); pk_str(pk, w->refusals[i].reason);
        }
    }
    pk_str(pk, "refused");
    msgpack_pack_map(pk, 3);
    pk_str(pk, "publish"); msgpack_pack_uint64(pk, b->refused_auth[0]);
    pk_str(pk, "worker"); msgpack_pack_uint64(pk, b->refused_auth[1]);
    pk_str(pk, "admin"); msgpack_pack_uint64(pk, b->refused_auth[2]);
}

/* Arguments. Every command lists the arguments it takes and their types;
 * an argument it does not take, or one of another type, refuses the request
 * with an error that names it (PROTOCOL.md §4): a misspelt "dry_run" must
 * never turn into a real purge. nil is the same as leaving an argument out. */
typedef enum {
    ARG_NAME,       /* a str that is a name: [A-Za-z0-9_.-]{1,128} */
    ARG_UINT,       /* a non-negative integer */
    ARG_NUMBER,     /* a non-negative integer or float */
    ARG_BOOL,       /* true or false */
    ARG_IDS,        /* an array of non-negative integers */
} arg_kind;
typedef struct { const char *name; arg_kind kind; } arg_spec;

static const char *const arg_kind_name[] = {
    [ARG_NAME] = "a name ([A-Za-z0-9_.-]{1,128})", [ARG_UINT] = "an integer >= 0",
    [ARG_NUMBER] = "a number >= 0", [ARG_BOOL] = "a boolean", [ARG_IDS] = "an array of integers >= 0",
};

/* The commands and what each takes, in the order PROTOCOL.md §4 lists them. */
static const arg_spec ARGS_NONE[] = { { NULL, 0 } };
static const arg_spec ARGS_DLQ_LIST[] = { { "function", ARG_NAME }, { "topic", ARG_NAME }, { "limit", ARG_UINT },
                                          { NULL, 0 } };
static const arg_spec ARGS_DLQ_SHOW[] = { { "id", ARG_UINT }, { NULL, 0 } };
static const arg_spec ARGS_DLQ_REPLAY[] = { { "ids", ARG_IDS }, { "all", ARG_BOOL }, { "function", ARG_NAME },
                                            { "topic", ARG_NAME }, { "rate", ARG_NUMBER }, { "dry_run", ARG_BOOL },
                                            { NULL, 0 } };
static const arg_spec ARGS_DLQ_PURGE[] = { { "ids", ARG_IDS }, { "all", ARG_BOOL }, { "function", ARG_NAME },
                                           { "topic", ARG_NAME }, { "older_than", ARG_UINT },
                                           { "dry_run", ARG_BOOL }, { NULL, 0 } };

static bool arg_fits(const msgpack_object *o, arg_kind k)
{
    switch (k) {
    case ARG_NAME: return o->type == MSGPACK_OBJECT_STR && proto_valid_name_len(o->via.str.ptr, o->via.str.size);
    case ARG_UINT: return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX;
    case ARG_NUMBER:
        return (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) ||
               ((o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32) && o->via.f64 >= 0 &&
                o->via.f64 <= 1e12);
    case ARG_BOOL: return o->type == MSGPACK_OBJECT_BOOLEAN;
    case ARG_IDS:
        if (o->type != MSGPACK_OBJECT_ARRAY) return false;
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (o->via.array.ptr[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                o->via.array.ptr[i].via.u64 > INT64_MAX)
                return false;
        return true;
    }
    return false;
}

/* PROTO_OK, or PROTO_E_MALFORMED with err naming the first unknown or
 * mistyped argument. */
static uint32_t args_check(const proto_admin *a, const arg_spec *spec, char *err, size_t n)
{
    for (uint32_t i = 0; i < a->args.via.map.size; i++) {   /* a map with str keys: the decoder checked */
        const msgpack_object *k = &a->args.via.map.ptr[i].key, *v = &a->args.via.map.ptr[i].val;
        const arg_spec *s = spec;
        while (s->name && !(strlen(s->name) == k->via.str.size && memcmp(s->name, k->via.str.ptr, k->via.str.size) == 0))
            s++;
        if (!s->name) {
            char takes[160] = "";
            for (const arg_spec *t = spec; t->name; t++)
                snprintf(takes + strlen(takes), sizeof takes - strlen(takes), "%s%s", t == spec ? "" : ", ", t->name);
            snprintf(err, n, "%s: unknown argument '%.*s' (%s%s)", a->command,
                     k->via.str.size > 64 ? 64 : (int)k->via.str.size, k->via.str.ptr,
                     spec->name ? "it takes " : "it takes no arguments", takes);
            return PROTO_E_MALFORMED;
        }
        if (v->type != MSGPACK_OBJECT_NIL && !arg_fits(v, s->kind)) {
            snprintf(err, n, "%s: argument '%s' must be %s", a->command, s->name, arg_kind_name[s->kind]);
            return PROTO_E_MALFORMED;
        }
    }
    return PROTO_OK;
}

/* An argument args_check accepted; NULL when absent or nil. */
static const msgpack_object *arg(const proto_admin *a, const char *key)
{
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < a->args.via.map.size; i++) {
        const msgpack_object *k = &a->args.via.map.ptr[i].key;
        if (k->via.str.size == kl && memcmp(k->via.str.ptr, key, kl) == 0)
            return a->args.via.map.ptr[i].val.type == MSGPACK_OBJECT_NIL ? NULL : &a->args.via.map.ptr[i].val;
    }
    return NULL;
}

static const char *arg_str(const proto_admin *a, const char *key, char *buf, size_t n)
{
    const msgpack_object *o = arg(a, key);
    if (!o || o->via.str.size >= n) return NULL;
    memcpy(buf, o->via.str.ptr, o->via.str.size);
    buf[o->via.str.size] = 0;
    return buf;
}

static int64_t arg_int(const proto_admin *a, const char *key, int64_t dflt)
{
    const msgpack_object *o = arg(a, key);
    return o ? (int64_t)o->via.u64 : dflt;
}

/* A dlq.list / dlq.show request, parsed (so it can outlive its message). */
typedef struct {
    bool show;
    char function[PROTO_NAME_MAX + 1], topic[PROTO_NAME_MAX + 1];
    bool has_function, has_topic;
    int64_t limit, id;
} dlq_req;

static uint32_t dlq_parse(const proto_admin *a, dlq_req *r, char *err, size_t n)
{
    memset(r, 0, sizeof *r);
    r->show = strcmp(a->command, "dlq.show") == 0;
    uint32_t st = args_check(a, r->show ? ARGS_DLQ_SHOW : ARGS_DLQ_LIST, err, n);
    if (st != PROTO_OK) return st;
    if (!r->show) {
        r->has_function = arg_str(a, "function", r->function, sizeof r->function) != NULL;
        r->has_topic = arg_str(a, "topic", r->topic, sizeof r->topic) != NULL;
        r->limit = arg_int(a, "limit", 100);
        return PROTO_OK;
    }
    r->id = arg_int(a, "id", -1);
    if (r->id < 0) {
        snprintf(err, n, "dlq.show: needs the argument 'id' (an integer >= 0)");
        return PROTO_E_MALFORMED;
    }
    return PROTO_OK;
}

static uint32_t dlq_run(broker_t *b, const dlq_req *r, msgpack_sbuffer *body, char *err, size_t n)
{
    if (!b->dlq_db) {
        snprintf(err, n, "dead letters cannot be read: the read-only connection failed at start");
        return PROTO_E_INTERNAL;
    }
    if (!r->show) {
        dlq_filter f = { .function = r->has_function ? r->function : NULL,
                         .topic = r->has_topic ? r->topic : NULL, .limit = r->limit };
        return dlq_list(b->dlq_db, &f, body, err, n) == 0 ? PROTO_OK : PROTO_E_INTERNAL;
    }
    int rc = dlq_show(b->dlq_db, r->id, body, err, n);
    return rc == 0 ? PROTO_OK : rc == 1 ? PROTO_E_NOT_FOUND : PROTO_E_INTERNAL;
}

/* Which dead letters a replay/purge request selects: the ids given, or with
 * all: true every one (narrowed by function, topic, older_than). Neither, or
 * both, is an error: an empty request must never mean "all". */
static uint32_t selection(const proto_admin *a, dead_select *sel, int64_t **ids, char *fn, char *tp, size_t len,
                          char *err, size_t n)
{
    memset(sel, 0, sizeof *sel);
    *ids = NULL;
    const msgpack_object *o = arg(a, "ids"), *all = arg(a, "all");
    uint32_t nids = o ? o->via.array.size : 0;
    sel->all = all && all->via.boolean;
    if (nids && sel->all) {
        snprintf(err, n, "%s: give either ids or all: true, not both", a->command);
        return PROTO_E_MALFORMED;
    }
    if (!nids && !sel->all) {
        snprintf(err, n, "%s: says which dead letters: ids (a non-empty array) or all: true", a->command);
        return PROTO_E_MALFORMED;
    }
    sel->function = arg_str(a, "function", fn, len);
    sel->topic = arg_str(a, "topic", tp, len);
    int64_t older = arg_int(a, "older_than", 0);
    if (nids && (sel->function || sel->topic || older)) {
        snprintf(err, n, "%s: function, topic and older_than narrow all: true, not a list of ids", a->command);
        return PROTO_E_MALFORMED;
    }
    if (nids) {
        *ids = calloc(nids, sizeof **ids);
        if (!*ids) { snprintf(err, n, "out of memory"); return PROTO_E_INTERNAL; }
        for (uint32_t i = 0; i < nids; i++) (*ids)[i] = (int64_t)o->via.array.ptr[i].via.u64;
        sel->ids = *ids;
        sel->nids = nids;
    }
    if (older > 0) sel->failed_before_ms = util_wall_ms() - older * 1000;
    return PROTO_OK;
}

typedef struct pending_reply {
    struct pending_reply *next;
    unsigned char rid[256]; size_t rid_len;
    uint64_t req;
    msgpack_sbuffer body;       /* the answer, written after the commit */
    dlq_req dlq;                /* the dead-letter read to run then */
} pending_reply;

/* Queued to be answered after this turn's commit; false: no memory. */
static pending_reply *defer(broker_t *b, proto_frames *f, uint64_t req)
{
    pending_reply *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    memcpy(p->rid, frames_data(f, 0), frames_size(f, 0));
    p->rid_len = frames_size(f, 0);
    p->req = req;
    msgpack_sbuffer_init(&p->body);
    /* answers go out in the order the requests came */
    pending_reply **tail = &b->admin_pending;
    while (*tail) tail = &(*tail)->next;
    *tail = p;
    return p;
}

static void reply(broker_t *b, const void *rid, size_t rid_len, uint64_t req, uint32_t status,
                  const char *why, const msgpack_sbuffer *body)
{
    msgpack_sbuffer_clear(&b->sb);
    if (proto_encode_admin_reply(&b->sb, req, status, why, status == PROTO_OK ? body->data : NULL,
                                 status == PROTO_OK ? body->size : 0) == 0)
        frames_send(b->adm_sock, rid, rid_len, &b->sb, NULL, 0, ZMQ_DONTWAIT);
}

static void jobs_flush(broker_t *b, bool committed);

/* After the commit: dead-letter reads, and the replay or purge chunk that ran. */
void admin_flush(broker_t *b, bool committed)
{
    jobs_flush(b, committed);
    pending_reply *p = b->admin_pending, *next;
    for (; p; p = next) {   /* now the read-only connection sees this turn's dead letters */
        next = p->next;
        char err[512];
        uint32_t st = dlq_run(b, &p->dlq, &p->body, err, sizeof err);
        reply(b, p->rid, p->rid_len, p->req, st, st == PROTO_OK ? NULL : err, &p->body);
        msgpack_sbuffer_destroy(&p->body);
        free(p);
    }
    b->admin_pending = NULL;
}

/* A replay or purge in progress: a chunk of DLQ_CHUNK rows per loop turn,
 * each committed with its turn, so the loop keeps serving publishes, workers
 * and heartbeats while a million dead letters go; the answer goes out after
 * the commit of the last chunk. It covers the dead letters there were when
 * it was asked for (ids up to the largest then), and a replay's pacing counts
 * from then. A failed commit ends it with an error saying how many chunks'
 * worth were done before. */
struct dlq_job {
    struct dlq_job *next;
    unsigned char rid[256]; size_t rid_len;
    uint64_t req;
    bool replay, dry_run;
    double rate;
    int64_t now_ms;                     /* when it was asked for */
    dead_select sel;                    /* after_id moves on with each committed chunk */
    int64_t *ids;                       /* sel's ids, owned */
    char fn[PROTO_NAME_MAX + 1], tp[PROTO_NAME_MAX + 1];
    dead_result res, done;              /* so far; as of the last committed chunk */
    int64_t last;                       /* the last id of the chunk run this turn */
    bool ran, more;                     /* a chunk ran this turn; rows may remain after it */
};

static void job_free(dlq_job *j)
{
    free(j->ids);
    free(j);
}

static void job_answer(broker_t *b, const dlq_job *j)
{
    msgpack_sbuffer body;
    msgpack_sbuffer_init(&body);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, j->replay ? 3 : 1);
    pk_str(&pk, "count"); msgpack_pack_int64(&pk, j->res.count);
    if (j->replay) {
        pk_str(&pk, "skipped"); msgpack_pack_int64(&pk, j->res.skipped);
        pk_str(&pk, "why"); pk_str(&pk, j->res.why);
    }
    reply(b, j->rid, j->rid_len, j->req, PROTO_OK, NULL, &body);
    msgpack_sbuffer_destroy(&body);
}

static void job_fail(broker_t *b, const dlq_job *j, const char *why)
{
    char err[512];
    snprintf(err, sizeof err, "%s; %lld dead letters were %s before it", why, (long long)j->done.count,
             j->replay ? "replayed" : "purged");
    reply(b, j->rid, j->rid_len, j->req, PROTO_E_INTERNAL, err, NULL);
}

static uint32_t dead_write(broker_t *b, proto_frames *f, const proto_admin *a, bool *deferred, char *err,
                           size_t n)
{
    dlq_job *j = calloc(1, sizeof *j);
    if (!j) { snprintf(err, n, "out of memory"); return PROTO_E_INTERNAL; }
    j->replay = strcmp(a->command, "dlq.replay") == 0;
    uint32_t st_args = args_check(a, j->replay ? ARGS_DLQ_REPLAY : ARGS_DLQ_PURGE, err, n);
    if (st_args == PROTO_OK)
        st_args = selection(a, &j->sel, &j->ids, j->fn, j->tp, sizeof j->fn, err, n);
    if (st_args != PROTO_OK) {
        job_free(j);
        return st_args;
    }
    const msgpack_object *r = arg(a, "rate"), *dry = arg(a, "dry_run");
    if (r) j->rate = r->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (double)r->via.u64 : r->via.f64;
    j->dry_run = dry && dry->via.boolean;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(b->store.db, "SELECT coalesce(max(id), 0) FROM dead", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        snprintf(err, n, "storage: %s", sqlite3_errmsg(b->store.db));
        sqlite3_finalize(st);
        job_free(j);
        return PROTO_E_INTERNAL;
    }
    j->sel.max_id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    j->sel.limit = DLQ_CHUNK;
    j->now_ms = util_wall_ms();
    memcpy(j->rid, frames_data(f, 0), frames_size(f, 0));
    j->rid_len = frames_size(f, 0);
    j->req = a->req;
    dlq_job **tail = &b->dlq_jobs;
    while (*tail) tail = &(*tail)->next;
    *tail = j;
    *deferred = true;
    return PROTO_OK;
}

void admin_jobs_run(broker_t *b)
{
    dlq_job *j = b->dlq_jobs;
    if (!j || j->ran) return;
    char err[256];
    int rc = j->replay ? dead_replay(b, &j->sel, j->rate, j->now_ms, j->dry_run, &j->res, &j->last, &j->more, err,
                                     sizeof err)
                       : dead_purge(b, &j->sel, j->dry_run, &j->res, &j->last, &j->more, err, sizeof err);
    if (rc != 0) {   /* this chunk's writes are undone (its savepoint); the earlier ones stay */
        job_fail(b, j, err);
        b->dlq_jobs = j->next;
        job_free(j);
        return;
    }
    j->ran = true;
}

/* After the commit: the chunk that ran counts, or the job ends with an error. */
static void jobs_flush(broker_t *b, bool committed)
{
    dlq_job *j = b->dlq_jobs;
    if (!j || !j->ran) return;
    j->ran = false;
    if (!committed && !j->dry_run) {   /* a dry run wrote nothing: it goes on */
        job_fail(b, j, b->store.failure);
    } else {
        j->done = j->res;
        j->sel.after_id = j->last;
        if (j->more) return;
        job_answer(b, j);
    }
    b->dlq_jobs = j->next;
    job_free(j);
}

void admin_teardown(broker_t *b)
{
    while (b->dlq_jobs) {   /* stopping: unanswered, like any request the broker did not finish */
        dlq_job *j = b->dlq_jobs;
        b->dlq_jobs = j->next;
        job_free(j);
    }
}

void admin_handle(broker_t *b, proto_frames *f)
{
    char err[256];
    proto_msg m;
    /* a request refused whole is answered with its req / seqs where they read */
    if (f->n < 2 || f->truncated) {
        refuse(b, b->adm_sock, f, PROTO_E_MALFORMED, f->truncated ? "too many frames in one message" : "empty message");
        return;
    }
    if (proto_decode(frames_data(f, 1), frames_size(f, 1), &m, err, sizeof err) != 0) {
        refuse(b, b->adm_sock, f, PROTO_E_MALFORMED, err);
        return;
    }
    if ((uint32_t)f->n != 2 + m.nframes) {
        snprintf(err, sizeof err, "%s declares %u payload frames but %d came", proto_type_name(m.type),
                 m.nframes, f->n - 2);
        refuse(b, b->adm_sock, f, PROTO_E_MALFORMED, err);
        proto_msg_clear(&m);
        return;
    }
    if (m.type == MSG_ERROR || m.type == MSG_HEARTBEAT) {   /* refused, never answered (PROTOCOL.md §5) */
        b->dropped[2]++;
        proto_msg_clear(&m);
        return;
    }
    if (m.type == MSG_INVOKE) {
        invoke_handle(b, b->adm_sock, f, &m);
        proto_msg_clear(&m);
        return;
    }
    if (m.type == MSG_PUBLISH) {
        /* async invokes only (heraldctl invoke --async, with admin keys);
         * events for topics go to the publish endpoint */
        for (uint32_t i = 0; i < m.u.publish.npubs; i++)
            if (m.u.publish.pubs[i].topic[0]) {
                snprintf(err, sizeof err, "PUBLISH to topic '%s' on the admin endpoint: topics are published on the "
                         "publish endpoint (only async invokes are taken here)", m.u.publish.pubs[i].topic);
                refuse(b, b->adm_sock, f, PROTO_E_MALFORMED, err);
                proto_msg_clear(&m);
                return;
            }
        publish_take(b, b->adm_sock, f, &m);
        proto_msg_clear(&m);
        return;
    }
    if (m.type == MSG_HELLO) {
        hello_answer(b, b->adm_sock, f, &m.u.hello);
        proto_msg_clear(&m);
        return;
    }
    if (m.type != MSG_ADMIN) {
        snprintf(err, sizeof err, "%s is not accepted on the admin endpoint", proto_type_name(m.type));
        reply_error(b, b->adm_sock, f, PROTO_E_MALFORMED, err);
        proto_msg_clear(&m);
        return;
    }
    msgpack_sbuffer body;
    msgpack_sbuffer_init(&body);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);
    uint32_t status = PROTO_OK;
    const char *why = NULL;
    /* commands without arguments: one that comes with some is refused (dlq.* check their own) */
    static const char *const bare[] = { "stats", "schedules", "ping", "memory" };
    for (size_t i = 0; i < sizeof bare / sizeof *bare && status == PROTO_OK; i++)
        if (strcmp(m.u.admin.command, bare[i]) == 0 && (status = args_check(&m.u.admin, ARGS_NONE, err, sizeof err)))
            why = err;
    if (status != PROTO_OK) {
        /* refused: answered below */
    } else if (strcmp(m.u.admin.command, "stats") == 0) {
        pack_stats(b, &pk);
    } else if (strcmp(m.u.admin.command, "dlq.list") == 0 || strcmp(m.u.admin.command, "dlq.show") == 0) {
        /* Dead letters staged in the open transaction are not visible to
         * the read-only connection yet: read after this turn's commit, so
         * what stats counts, dlq list shows. */
        dlq_req r;
        status = dlq_parse(&m.u.admin, &r, err, sizeof err);
        pending_reply *p = status == PROTO_OK && b->store.in_txn ? defer(b, f, m.u.admin.req) : NULL;
        if (p) {
            p->dlq = r;
            msgpack_sbuffer_destroy(&body);
            proto_msg_clear(&m);
            return;
        }
        if (status == PROTO_OK) status = dlq_run(b, &r, &body, err, sizeof err);
        if (status != PROTO_OK) why = err;
    } else if (strcmp(m.u.admin.command, "dlq.replay") == 0 || strcmp(m.u.admin.command, "dlq.purge") == 0) {
        bool deferred = false;
        status = dead_write(b, f, &m.u.admin, &deferred, err, sizeof err);
        if (status != PROTO_OK) why = err;
        if (deferred) {
            msgpack_sbuffer_destroy(&body);
            proto_msg_clear(&m);
            return;
        }
    } else if (strcmp(m.u.admin.command, "schedules") == 0) {
        schedules_pack(b, &pk);
    } else if (strcmp(m.u.admin.command, "ping") == 0) {
        msgpack_pack_int64(&pk, b->started_ms);   /* which run of the broker answers */
    } else if (strcmp(m.u.admin.command, "memory") == 0) {
        /* Heap in use rather than RSS: RSS also moves with what the allocator
         * keeps cached or gives back, so only this one tells a leak from noise. */
        struct mallinfo2 mi = mallinfo2();
        msgpack_pack_map(&pk, 2);
        pk_str(&pk, "heap_in_use"); msgpack_pack_uint64(&pk, mi.uordblks + mi.hblkhd);
        pk_str(&pk, "sqlite"); msgpack_pack_int64(&pk, sqlite3_memory_used());
    } else {
        snprintf(err, sizeof err, "unknown admin command '%s'", m.u.admin.command);
        status = PROTO_E_MALFORMED;
        why = err;
    }
    msgpack_sbuffer_clear(&b->sb);
    if (proto_encode_admin_reply(&b->sb, m.u.admin.req, status, why,
                                 status == PROTO_OK ? body.data : NULL,
                                 status == PROTO_OK ? body.size : 0) == 0)
        frames_send(b->adm_sock, frames_data(f, 0), frames_size(f, 0), &b->sb, NULL, 0, ZMQ_DONTWAIT);
    msgpack_sbuffer_destroy(&body);
    proto_msg_clear(&m);
}
