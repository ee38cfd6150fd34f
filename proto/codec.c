/* codec: every header frame <-> proto_msg, strictly.
 *
 * Decoding: proto_prescan, msgpack_unpack_next into m->up, then a typed walk
 * that checks every field (type, range, name rules, string limits) and copies
 * what it keeps into one arena per message. The walk runs twice over the same
 * code: a measuring pass that validates and adds up the arena bytes, then,
 * after one exact malloc, a filling pass that cannot fail. A refused frame
 * costs no arena at all.
 *
 * msgpack-c's strings point into the bytes it unpacked, not into its zone, so
 * for ADMIN args and ADMIN_REPLY results (kept as msgpack_object) the frame is
 * copied into the arena and their pointers moved onto the copy: a decoded
 * message never refers to the caller's frame.
 *
 * Encoding: msgpack_packer calls into an sbuffer, rolled back on failure.
 */
#include "proto.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* decoding context and arena                                                */

typedef struct {
    proto_msg *m;
    bool measure;           /* first pass: validate and count, write nothing */
    size_t used;            /* arena bytes used (or that would be) so far */
    const char *frame;      /* the caller's frame, for the ADMIN copy */
    size_t len;
    char *err;
    size_t errlen;
} dctx;

/* Returns the arena block, or NULL in the measuring pass (callers then build
 * entries in locals and store them only when the block is non-NULL). */
static void *arena_alloc(dctx *c, size_t size, size_t align)
{
    size_t off = (c->used + align - 1) & ~(align - 1);
    c->used = off + size;
    if (c->measure)
        return NULL;
    /* The filling pass repeats the measured one, so this holds by construction. */
    assert(c->used <= c->m->arena_cap);
    c->m->arena_used = c->used;
    return c->m->arena ? c->m->arena + off : NULL;   /* no arena (nothing to copy): not NULL + 0 */
}

/* "entry 12": the label of an array element, for error messages. Called for
 * every entry of every batch (twice, one per pass), so no printf here. */
static const char *label_of(char *buf, const char *prefix, uint32_t i)
{
    size_t n = strlen(prefix);
    memcpy(buf, prefix, n);
    buf[n++] = ' ';
    char d[10];
    int k = 0;
    do { d[k++] = (char)('0' + i % 10); i /= 10; } while (i);
    while (k) buf[n++] = d[--k];
    buf[n] = 0;
    return buf;
}

#define ARENA_ARRAY(c, n, T) ((T *)arena_alloc((c), (size_t)(n) * sizeof(T), _Alignof(T)))

static char *arena_str(dctx *c, const msgpack_object *o)
{
    char *s = arena_alloc(c, o->via.str.size + 1, 1);
    if (s) {
        if (o->via.str.size)
            memcpy(s, o->via.str.ptr, o->via.str.size);
        s[o->via.str.size] = '\0';
    }
    return s;
}

/* Records why; only the measuring pass can fail, so the filling pass never
 * overwrites a reason. `where` is "" or "entry 3" and the like. */
__attribute__((format(printf, 4, 5)))
static int fail(dctx *c, const char *where, const char *field, const char *fmt, ...)
{
    if (!c->err || !c->errlen)
        return -1;
    char why[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "%s %s%s%s%s%s", proto_type_name(c->m->type),
             where, *where ? ": " : "", field, *field ? ": " : "", why);
    return -1;
}

/* The visible -1 lets the compiler see that a failed check never returns 0. */
#define FAIL(...) (fail(__VA_ARGS__), -1)

/* ------------------------------------------------------------------------ */
/* field checkers: each returns 0 or FAIL()                                  */

static int get_uint(dctx *c, const char *where, const char *field, const msgpack_object *o,
                    uint64_t min, uint64_t max, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return FAIL(c, where, field, "not an unsigned integer");
    if (o->via.u64 < min || o->via.u64 > max)
        return FAIL(c, where, field, "%llu out of range %llu..%llu", (unsigned long long)o->via.u64,
                    (unsigned long long)min, (unsigned long long)max);
    *out = o->via.u64;
    return 0;
}

static int get_u32(dctx *c, const char *where, const char *field, const msgpack_object *o,
                   uint32_t min, uint32_t max, uint32_t *out)
{
    uint64_t v;
    if (get_uint(c, where, field, o, min, max, &v) < 0)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

typedef enum {
    STR_ANY,            /* only the length bounds and no NUL */
    STR_NAME,           /* proto_valid_name */
    STR_NAME_OR_EMPTY,  /* "" or a name (topics of invokes) */
    STR_ID,             /* proto_valid_id */
    STR_PRODUCER,       /* id without '-' */
    STR_COMMAND,        /* [a-z.] */
} str_kind;

static bool str_ok(str_kind k, const char *p, size_t n)
{
    switch (k) {
    case STR_ANY:
        return true;
    case STR_NAME:
        return proto_valid_name_len(p, n);
    case STR_NAME_OR_EMPTY:
        return n == 0 || proto_valid_name_len(p, n);
    case STR_ID:
        return proto_valid_id_len(p, n);
    case STR_PRODUCER:
        return n <= PROTO_PRODUCER_MAX && proto_valid_id_len(p, n) && !memchr(p, '-', n);
    case STR_COMMAND:
        for (size_t i = 0; i < n; i++)
            if (!((p[i] >= 'a' && p[i] <= 'z') || p[i] == '.'))
                return false;
        return true;
    }
    return false;
}

static const char *const kind_why[] = {
    [STR_ANY] = "invalid", [STR_NAME] = "invalid name", [STR_NAME_OR_EMPTY] = "invalid name",
    [STR_ID] = "invalid id", [STR_PRODUCER] = "invalid producer id",
    [STR_COMMAND] = "invalid command",
};

/* A str of minlen..maxlen bytes, no NUL, of the given kind, copied into the
 * arena. With nullable, nil gives NULL. */
static int get_str(dctx *c, const char *where, const char *field, const msgpack_object *o,
                   size_t minlen, size_t maxlen, str_kind kind, bool nullable, char **out)
{
    if (nullable && o->type == MSGPACK_OBJECT_NIL) {
        *out = NULL;
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_STR)
        return FAIL(c, where, field, nullable ? "not a string or nil" : "not a string");
    size_t n = o->via.str.size;
    if (n < minlen || n > maxlen)
        return FAIL(c, where, field, "length %zu out of range %zu..%zu", n, minlen, maxlen);
    /* A NUL would silently cut the C copy: refuse rather than store something else. */
    if (n && memchr(o->via.str.ptr, '\0', n))
        return FAIL(c, where, field, "contains a NUL byte");
    if (!str_ok(kind, o->via.str.ptr, n))
        return FAIL(c, where, field, "%s", kind_why[kind]);
    *out = arena_str(c, o);
    return 0;
}

static bool str_is(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && memcmp(o->via.str.ptr, s, n) == 0;
}

static int get_array(dctx *c, const char *where, const char *field, const msgpack_object *o,
                     uint32_t min, uint32_t max, const msgpack_object **items, uint32_t *n)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return FAIL(c, where, field, "not an array");
    if (o->via.array.size < min || o->via.array.size > max)
        return FAIL(c, where, field, "%u elements, want %u..%u", o->via.array.size, min, max);
    *items = o->via.array.ptr;
    *n = o->via.array.size;
    return 0;
}

typedef struct {
    uint32_t max_pairs;
    size_t key_max, value_max;
    bool no_eq_in_key;      /* environment variables */
    const char *what;       /* "attribute", "variable" */
    str_kind key_kind;      /* STR_NAME: keys are names */
} map_rules;

/* PUBLISH: keys are names (PROTOCOL.md §2). DELIVER takes any key, so events
 * stored before keys were checked are still delivered. */
static const map_rules pub_attr_rules = {
    PROTO_MAX_ATTRS, PROTO_ATTR_KEY_MAX, PROTO_ATTR_VALUE_MAX, false, "attribute", STR_NAME};
static const map_rules attr_rules = {
    PROTO_MAX_ATTRS, PROTO_ATTR_KEY_MAX, PROTO_ATTR_VALUE_MAX, false, "attribute", STR_ANY};
/* Environments come from the broker's own config; the caps only bound the work. */
static const map_rules env_rules = {1024, PROTO_NAME_MAX, PROTO_STR_MAX, true, "variable", STR_ANY};

/* A map str→str under the rules, no duplicate keys, into an arena array. */
static int get_strmap(dctx *c, const char *where, const char *field, const msgpack_object *o,
                      const map_rules *r, proto_attr **out, uint32_t *nout)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return FAIL(c, where, field, "not a map");
    uint32_t n = o->via.map.size;
    if (n > r->max_pairs)
        return FAIL(c, where, field, "%u entries, at most %u", n, r->max_pairs);
    const msgpack_object_kv *kv = o->via.map.ptr;
    proto_attr *a = ARENA_ARRAY(c, n, proto_attr);
    char label[160];
    for (uint32_t i = 0; i < n; i++) {
        proto_attr x;
        snprintf(label, sizeof label, "%s %s %u key", field, r->what, i);
        if (get_str(c, where, label, &kv[i].key, 1, r->key_max, r->key_kind, false, &x.key) < 0)
            return -1;
        if (r->no_eq_in_key && memchr(kv[i].key.via.str.ptr, '=', kv[i].key.via.str.size))
            return FAIL(c, where, label, "contains '='");
        snprintf(label, sizeof label, "%s %s %u value", field, r->what, i);
        if (get_str(c, where, label, &kv[i].val, 0, r->value_max, STR_ANY, false, &x.value) < 0)
            return -1;
        /* Quadratic, but n is capped (16 for attributes); only the first pass checks. */
        for (uint32_t j = 0; c->measure && j < i; j++)
            if (kv[j].key.via.str.size == kv[i].key.via.str.size &&
                memcmp(kv[j].key.via.str.ptr, kv[i].key.via.str.ptr, kv[i].key.via.str.size) == 0)
                return FAIL(c, where, field, "duplicate key \"%.*s\"", (int)kv[i].key.via.str.size,
                            kv[i].key.via.str.ptr);
        if (a)
            a[i] = x;
    }
    *out = a;
    *nout = n;
    return 0;
}

/* Opaque objects (ADMIN args, ADMIN_REPLY result) still obey the string rules,
 * so whoever copies a str out of them with strlen gets what was sent. */
static int check_any(dctx *c, const char *field, const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        if (o->via.str.size > PROTO_STR_MAX)
            return FAIL(c, "", field, "string of %u bytes, at most %u", o->via.str.size, PROTO_STR_MAX);
        if (o->via.str.size && memchr(o->via.str.ptr, '\0', o->via.str.size))
            return FAIL(c, "", field, "string contains a NUL byte");
        return 0;
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (check_any(c, field, &o->via.array.ptr[i]) < 0)
                return -1;
        return 0;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++)
            if (check_any(c, field, &o->via.map.ptr[i].key) < 0 ||
                check_any(c, field, &o->via.map.ptr[i].val) < 0)
                return -1;
        return 0;
    default:
        return 0;
    }
}

/* Moves the byte pointers of o from the caller's frame onto our copy of it.
 * Recursion depth is bounded by PROTO_MAX_DEPTH (the pre-scan). */
static void rebase(msgpack_object *o, const char *from, size_t len, const char *to)
{
    const char **p = NULL;
    switch (o->type) {
    case MSGPACK_OBJECT_STR: p = &o->via.str.ptr; break;
    case MSGPACK_OBJECT_BIN: p = &o->via.bin.ptr; break;
    case MSGPACK_OBJECT_EXT: p = &o->via.ext.ptr; break;
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < o->via.array.size; i++)
            rebase(&o->via.array.ptr[i], from, len, to);
        return;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            rebase(&o->via.map.ptr[i].key, from, len, to);
            rebase(&o->via.map.ptr[i].val, from, len, to);
        }
        return;
    default:
        return;
    }
    if (*p >= from && *p <= from + len)
        *p = to + (*p - from);
}

/* Keeps an opaque object alive with the message: a frame copy in the arena. */
static void keep_object(dctx *c, msgpack_object *o)
{
    char *copy = arena_alloc(c, c->len, 1);
    if (copy) {
        memcpy(copy, c->frame, c->len);
        rebase(o, c->frame, c->len, copy);
    }
}

/* ------------------------------------------------------------------------ */
/* one function per message body; f: the fields after [version, type]        */

static int dec_hello(dctx *c, const msgpack_object *f)
{
    proto_hello *h = &c->m->u.hello;
    if (get_str(c, "", "client_id", &f[0], 1, PROTO_ID_MAX, STR_ID, false, &h->client_id) < 0)
        return -1;
    if (!str_is(&f[1], "publisher") && !str_is(&f[1], "worker") && !str_is(&f[1], "admin"))
        return FAIL(c, "", "role", "not \"publisher\", \"worker\" or \"admin\"");
    return get_str(c, "", "role", &f[1], 1, 16, STR_ANY, false, &h->role);
}

static int dec_welcome(dctx *c, const msgpack_object *f)
{
    proto_welcome *w = &c->m->u.welcome;
    if (get_uint(c, "", "max_payload", &f[0], 0, UINT64_MAX, &w->max_payload) < 0 ||
        get_u32(c, "", "max_batch", &f[1], 1, PROTO_MAX_BATCH, &w->max_batch) < 0 ||
        get_u32(c, "", "heartbeat_ms", &f[2], 0, UINT32_MAX, &w->heartbeat_ms) < 0)
        return -1;
    return 0;
}

static int dec_pub(dctx *c, const char *where, const msgpack_object *o, proto_pub *p)
{
    const msgpack_object *e;
    uint32_t ne;
    if (get_array(c, where, "", o, 6, 6, &e, &ne) < 0 ||
        get_uint(c, where, "seq", &e[0], 1, UINT64_MAX, &p->seq) < 0 ||
        get_str(c, where, "topic", &e[1], 0, PROTO_NAME_MAX, STR_NAME_OR_EMPTY, false, &p->topic) < 0 ||
        get_strmap(c, where, "attrs", &e[2], &pub_attr_rules, &p->attrs, &p->nattrs) < 0 ||
        get_u32(c, where, "delay_ms", &e[3], 0, 900000, &p->delay_ms) < 0 ||
        get_str(c, where, "dedup_id", &e[4], 1, PROTO_ID_MAX, STR_ID, true, &p->dedup_id) < 0 ||
        get_str(c, where, "function", &e[5], 1, PROTO_NAME_MAX, STR_NAME, true, &p->function) < 0)
        return -1;
    /* Decided on the wire objects: in the measuring pass the copies are NULL. */
    bool invoke = e[1].via.str.size == 0;
    bool has_fn = e[5].type != MSGPACK_OBJECT_NIL;
    if (invoke && !has_fn)
        return FAIL(c, where, "function", "required when topic is \"\"");
    if (!invoke && has_fn)
        return FAIL(c, where, "function", "must be nil when topic is set");
    return 0;
}

static int dec_publish(dctx *c, const msgpack_object *f)
{
    proto_publish *p = &c->m->u.publish;
    const msgpack_object *e;
    uint32_t n;
    if (get_str(c, "", "producer", &f[0], 1, PROTO_PRODUCER_MAX, STR_PRODUCER, false, &p->producer) < 0 ||
        get_array(c, "", "entries", &f[1], 1, PROTO_MAX_BATCH, &e, &n) < 0)
        return -1;
    proto_pub *pubs = ARENA_ARRAY(c, n, proto_pub);
    char where[32];
    for (uint32_t i = 0; i < n; i++) {
        proto_pub x;
        label_of(where, "entry", i);
        if (dec_pub(c, where, &e[i], &x) < 0)
            return -1;
        if (pubs)
            pubs[i] = x;
    }
    p->pubs = pubs;
    p->npubs = n;
    c->m->nframes = n;
    return 0;
}

static int dec_confirm(dctx *c, const msgpack_object *f)
{
    proto_confirm *cf = &c->m->u.confirm;
    const msgpack_object *e;
    uint32_t n;
    /* No batch cap: a broker may confirm several publish messages at once. */
    if (get_array(c, "", "entries", &f[0], 0, UINT32_MAX, &e, &n) < 0)
        return -1;
    proto_confirm_entry *es = ARENA_ARRAY(c, n, proto_confirm_entry);
    char where[32];
    for (uint32_t i = 0; i < n; i++) {
        proto_confirm_entry x;
        const msgpack_object *g;
        uint32_t ng;
        label_of(where, "entry", i);
        if (get_array(c, where, "", &e[i], 3, 3, &g, &ng) < 0 ||
            get_uint(c, where, "seq", &g[0], 0, UINT64_MAX, &x.seq) < 0 ||
            get_u32(c, where, "status", &g[1], 0, PROTO_STATUS_COUNT - 1, &x.status) < 0 ||
            get_str(c, where, "text", &g[2], 0, PROTO_ERROR_WIRE_MAX, STR_ANY, false, &x.text) < 0)
            return -1;
        if (es)
            es[i] = x;
    }
    cf->entries = es;
    cf->n = n;
    return 0;
}

static int dec_register(dctx *c, const msgpack_object *f)
{
    proto_register *r = &c->m->u.reg;
    const msgpack_object *fn;
    uint32_t n;
    if (get_str(c, "", "worker_id", &f[0], 1, PROTO_ID_MAX, STR_ID, false, &r->worker_id) < 0 ||
        get_str(c, "", "host", &f[1], 1, 255, STR_ANY, false, &r->host) < 0 ||
        get_u32(c, "", "pid", &f[2], 0, UINT32_MAX, &r->pid) < 0 ||
        get_u32(c, "", "slots", &f[3], 1, 1000000, &r->slots) < 0 ||
        get_array(c, "", "functions", &f[4], 0, 1024, &fn, &n) < 0)
        return -1;
    char **names = ARENA_ARRAY(c, n, char *);
    char label[32];
    for (uint32_t i = 0; i < n; i++) {
        char *s;
        snprintf(label, sizeof label, "function %u", i);
        if (get_str(c, "", label, &fn[i], 1, PROTO_NAME_MAX, STR_NAME, false, &s) < 0)
            return -1;
        if (names)
            names[i] = s;
    }
    r->functions = names;
    r->nfunctions = n;
    return 0;
}

/* CONFIG's 10th fn element, for kind "runtime": [handler, format,
 * max_invocations, idle_timeout_ms, init_timeout_ms, concurrency]. */
static int dec_runtime(dctx *c, const char *where, const msgpack_object *o, proto_runtime *rt)
{
    const msgpack_object *e;
    uint32_t ne;
    if (get_array(c, where, "runtime", o, 6, 6, &e, &ne) < 0 ||
        get_str(c, where, "runtime.handler", &e[0], 1, PROTO_RT_HANDLER_MAX, STR_ANY, true, &rt->handler) < 0)
        return -1;
    if (str_is(&e[1], "raw"))
        rt->format = PROTO_RT_RAW;
    else if (str_is(&e[1], "sns"))
        rt->format = PROTO_RT_SNS;
    else
        return FAIL(c, where, "runtime.format", "not \"raw\" or \"sns\"");
    /* A zero timeout would stop a process before it could start or serve. */
    if (get_u32(c, where, "runtime.max_invocations", &e[2], 0, UINT32_MAX, &rt->max_invocations) < 0 ||
        get_u32(c, where, "runtime.idle_timeout_ms", &e[3], 1, UINT32_MAX, &rt->idle_timeout_ms) < 0 ||
        get_u32(c, where, "runtime.init_timeout_ms", &e[4], 1, UINT32_MAX, &rt->init_timeout_ms) < 0 ||
        get_u32(c, where, "runtime.concurrency", &e[5], 0, UINT32_MAX, &rt->concurrency) < 0)
        return -1;
    return 0;
}

/* 9 elements (a peer older than runtimes), 10 or 11: the 10th is nil for
 * exec and native, the runtime settings for kind "runtime"; the 11th,
 * log_output, a bool (absent: false). */
static int dec_fndef(dctx *c, const char *where, const msgpack_object *o, proto_fndef *d)
{
    const msgpack_object *e, *ex;
    uint32_t ne, nex;
    if (get_array(c, where, "", o, 9, 11, &e, &ne) < 0 ||
        get_str(c, where, "name", &e[0], 1, PROTO_NAME_MAX, STR_NAME, false, &d->name) < 0)
        return -1;
    d->native = d->runtime = d->log_output = false;
    d->rt = (proto_runtime){ 0 };
    if (ne == 11) {
        if (e[10].type != MSGPACK_OBJECT_BOOLEAN)
            return FAIL(c, where, "log_output", "not a bool");
        d->log_output = e[10].via.boolean;
    }
    if (str_is(&e[1], "native"))
        d->native = true;
    else if (str_is(&e[1], "runtime"))
        d->runtime = true;
    else if (!str_is(&e[1], "exec"))
        return FAIL(c, where, "kind", "not \"exec\", \"native\" or \"runtime\"");
    const char *kind = d->native ? "native" : d->runtime ? "runtime" : "exec";
    /* argv needs a program; a native handler has none. */
    if (get_array(c, where, "exec", &e[2], d->native ? 0 : 1, d->native ? 0 : 1024, &ex, &nex) < 0)
        return -1;
    char **argv = ARENA_ARRAY(c, nex, char *);
    char label[32];
    for (uint32_t i = 0; i < nex; i++) {
        char *s;
        snprintf(label, sizeof label, "exec %u", i);
        if (get_str(c, where, label, &ex[i], i == 0 ? 1 : 0, PROTO_STR_MAX, STR_ANY, false, &s) < 0)
            return -1;
        if (argv)
            argv[i] = s;
    }
    d->exec = argv;
    d->nexec = nex;
    if (d->native) {
        if (get_str(c, where, "library", &e[3], 1, PROTO_STR_MAX, STR_ANY, false, &d->library) < 0 ||
            get_str(c, where, "symbol", &e[4], 1, PROTO_NAME_MAX, STR_ANY, false, &d->symbol) < 0)
            return -1;
    } else {
        if (e[3].type != MSGPACK_OBJECT_NIL)
            return FAIL(c, where, "library", "must be nil for %s", kind);
        if (e[4].type != MSGPACK_OBJECT_NIL)
            return FAIL(c, where, "symbol", "must be nil for %s", kind);
        d->library = d->symbol = NULL;
    }
    if (get_u32(c, where, "timeout_ms", &e[5], 0, UINT32_MAX, &d->timeout_ms) < 0 ||
        get_u32(c, where, "memory_mb", &e[6], 0, UINT32_MAX, &d->memory_mb) < 0 ||
        get_u32(c, where, "max_attempts", &e[7], 0, UINT32_MAX, &d->max_attempts) < 0 ||
        get_strmap(c, where, "env", &e[8], &env_rules, &d->env, &d->nenv) < 0)
        return -1;
    if (d->runtime) {
        if (ne < 10)
            return FAIL(c, where, "runtime", "missing: kind \"runtime\" needs its settings as a 10th element");
        return dec_runtime(c, where, &e[9], &d->rt);
    }
    if (ne >= 10 && e[9].type != MSGPACK_OBJECT_NIL)
        return FAIL(c, where, "runtime", "must be nil for %s", kind);
    return 0;
}

static int dec_config(dctx *c, const msgpack_object *f)
{
    proto_config *cf = &c->m->u.config;
    const msgpack_object *e;
    uint32_t n;
    if (get_u32(c, "", "heartbeat_ms", &f[0], 0, UINT32_MAX, &cf->heartbeat_ms) < 0 ||
        get_uint(c, "", "max_payload", &f[1], 0, UINT64_MAX, &cf->max_payload) < 0 ||
        get_array(c, "", "fns", &f[2], 0, UINT32_MAX, &e, &n) < 0)
        return -1;
    proto_fndef *fns = ARENA_ARRAY(c, n, proto_fndef);
    char where[32];
    for (uint32_t i = 0; i < n; i++) {
        proto_fndef x;
        label_of(where, "fn", i);
        if (dec_fndef(c, where, &e[i], &x) < 0)
            return -1;
        if (fns)
            fns[i] = x;
    }
    cf->fns = fns;
    cf->nfns = n;
    return 0;
}

static int dec_deliver(dctx *c, const msgpack_object *f)
{
    proto_deliver *d = &c->m->u.deliver;
    const msgpack_object *e;
    uint32_t n;
    if (get_array(c, "", "entries", &f[0], 1, PROTO_MAX_BATCH, &e, &n) < 0)
        return -1;
    proto_delivery *ds = ARENA_ARRAY(c, n, proto_delivery);
    char where[32];
    for (uint32_t i = 0; i < n; i++) {
        proto_delivery x;
        const msgpack_object *g;
        uint32_t ng;
        label_of(where, "entry", i);
        if (get_array(c, where, "", &e[i], 7, 7, &g, &ng) < 0 ||
            get_uint(c, where, "lease", &g[0], 0, UINT64_MAX, &x.lease) < 0 ||
            get_str(c, where, "function", &g[1], 1, PROTO_NAME_MAX, STR_NAME, false, &x.function) < 0 ||
            get_str(c, where, "topic", &g[2], 0, PROTO_NAME_MAX, STR_NAME_OR_EMPTY, false, &x.topic) < 0 ||
            get_str(c, where, "message_id", &g[3], 1, PROTO_ID_MAX, STR_ID, false, &x.message_id) < 0 ||
            get_u32(c, where, "attempt", &g[4], 0, UINT32_MAX, &x.attempt) < 0 ||
            get_u32(c, where, "max_attempts", &g[5], 0, UINT32_MAX, &x.max_attempts) < 0 ||
            get_strmap(c, where, "attrs", &g[6], &attr_rules, &x.attrs, &x.nattrs) < 0)
            return -1;
        if (ds)
            ds[i] = x;
    }
    d->ds = ds;
    d->n = n;
    c->m->nframes = n;
    return 0;
}

static int dec_result(dctx *c, const msgpack_object *f)
{
    proto_result *r = &c->m->u.result;
    const msgpack_object *e;
    uint32_t n;
    if (get_array(c, "", "entries", &f[0], 1, PROTO_MAX_BATCH, &e, &n) < 0)
        return -1;
    proto_result_entry *rs = ARENA_ARRAY(c, n, proto_result_entry);
    char where[32];
    for (uint32_t i = 0; i < n; i++) {
        proto_result_entry x;
        const msgpack_object *g;
        uint32_t ng;
        label_of(where, "entry", i);
        if (get_array(c, where, "", &e[i], 5, 5, &g, &ng) < 0 ||
            get_uint(c, where, "lease", &g[0], 0, UINT64_MAX, &x.lease) < 0)
            return -1;
        int oc = -1;
        for (int k = 0; k < OUT_COUNT && oc < 0; k++)
            if (str_is(&g[1], proto_outcome_name((proto_outcome)k)))
                oc = k;
        if (oc < 0)
            return FAIL(c, where, "outcome", "unknown outcome");
        x.outcome = (uint32_t)oc;
        if (g[2].type == MSGPACK_OBJECT_POSITIVE_INTEGER && g[2].via.u64 <= INT64_MAX)
            x.started_ms = (int64_t)g[2].via.u64;
        else if (g[2].type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            x.started_ms = g[2].via.i64;
        else
            return FAIL(c, where, "started_ms", "not a 64-bit integer");
        if (get_u32(c, where, "duration_us", &g[3], 0, UINT32_MAX, &x.duration_us) < 0 ||
            get_str(c, where, "error", &g[4], 0, PROTO_ERROR_WIRE_MAX, STR_ANY, true, &x.error) < 0)
            return -1;
        if (rs)
            rs[i] = x;
    }
    r->rs = rs;
    r->n = n;
    c->m->nframes = n;
    return 0;
}

static int dec_admin(dctx *c, const msgpack_object *f)
{
    proto_admin *a = &c->m->u.admin;
    if (get_uint(c, "", "req", &f[0], 0, UINT64_MAX, &a->req) < 0 ||
        get_str(c, "", "command", &f[1], 1, 64, STR_COMMAND, false, &a->command) < 0)
        return -1;
    if (f[2].type != MSGPACK_OBJECT_MAP)
        return FAIL(c, "", "args", "not a map");
    for (uint32_t i = 0; i < f[2].via.map.size; i++)
        if (f[2].via.map.ptr[i].key.type != MSGPACK_OBJECT_STR)
            return FAIL(c, "", "args", "key %u is not a string", i);
    if (check_any(c, "args", &f[2]) < 0)
        return -1;
    a->args = f[2];
    keep_object(c, &a->args);
    return 0;
}

static int dec_admin_reply(dctx *c, const msgpack_object *f)
{
    proto_admin_reply *a = &c->m->u.admin_reply;
    if (get_uint(c, "", "req", &f[0], 0, UINT64_MAX, &a->req) < 0 ||
        get_u32(c, "", "status", &f[1], 0, PROTO_STATUS_COUNT - 1, &a->status) < 0 ||
        get_str(c, "", "error", &f[2], 0, PROTO_ERROR_WIRE_MAX, STR_ANY, true, &a->error) < 0 ||
        check_any(c, "result", &f[3]) < 0)
        return -1;
    if (a->status == PROTO_OK && f[2].type != MSGPACK_OBJECT_NIL)
        return FAIL(c, "", "error", "not nil with status 0");
    a->result = f[3];
    keep_object(c, &a->result);
    return 0;
}

static int dec_error(dctx *c, const msgpack_object *f)
{
    proto_error *e = &c->m->u.error;
    if (get_u32(c, "", "status", &f[0], 0, PROTO_STATUS_COUNT - 1, &e->status) < 0 ||
        get_str(c, "", "text", &f[1], 0, PROTO_ERROR_WIRE_MAX, STR_ANY, false, &e->text) < 0)
        return -1;
    return 0;
}

static int dec_invoke(dctx *c, const msgpack_object *f)
{
    proto_invoke *i = &c->m->u.invoke;
    if (get_uint(c, "", "req", &f[0], 0, UINT64_MAX, &i->req) < 0 ||
        get_str(c, "", "function", &f[1], 1, PROTO_NAME_MAX, STR_NAME, false, &i->function) < 0 ||
        get_u32(c, "", "timeout_ms", &f[2], 0, 3600u * 1000u, &i->timeout_ms) < 0)
        return -1;
    c->m->nframes = 1;
    return 0;
}

static int dec_invoke_reply(dctx *c, const msgpack_object *f)
{
    proto_invoke_reply *r = &c->m->u.invoke_reply;
    if (get_uint(c, "", "req", &f[0], 0, UINT64_MAX, &r->req) < 0 ||
        get_u32(c, "", "status", &f[1], 0, PROTO_STATUS_COUNT - 1, &r->status) < 0 ||
        get_str(c, "", "error", &f[2], 0, PROTO_ERROR_WIRE_MAX, STR_ANY, true, &r->error) < 0 ||
        get_str(c, "", "message_id", &f[3], 0, PROTO_ID_MAX, STR_ANY, false, &r->message_id) < 0)
        return -1;
    if (r->status == PROTO_OK && f[2].type != MSGPACK_OBJECT_NIL)
        return FAIL(c, "", "error", "not nil with status 0");
    c->m->nframes = 1;
    return 0;
}

static int dec_refused(dctx *c, const msgpack_object *f)
{
    proto_refused *r = &c->m->u.refused;
    const msgpack_object *e;
    uint32_t n;
    if (get_array(c, "", "entries", &f[0], 0, PROTO_MAX_BATCH, &e, &n) < 0)
        return -1;
    proto_refusal *rs = ARENA_ARRAY(c, n, proto_refusal);
    char where[32];
    for (uint32_t i = 0; i < n; i++) {
        proto_refusal x;
        const msgpack_object *g;
        uint32_t ng;
        label_of(where, "entry", i);
        if (get_array(c, where, "", &e[i], 2, 2, &g, &ng) < 0 ||
            get_str(c, where, "function", &g[0], 1, PROTO_NAME_MAX, STR_NAME, false, &x.function) < 0 ||
            get_str(c, where, "reason", &g[1], 0, PROTO_ERROR_WIRE_MAX, STR_ANY, false, &x.reason) < 0)
            return -1;
        if (rs)
            rs[i] = x;
    }
    r->rs = rs;
    r->n = n;
    return 0;
}

/* STATS recycles: a map reason → count, each reason of the fixed set at most once. */
static int dec_recycles(dctx *c, const char *where, const msgpack_object *o, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return FAIL(c, where, "recycles", "not a map");
    if (o->via.map.size > PROTO_RECYCLE_COUNT)
        return FAIL(c, where, "recycles", "%u entries, at most %u", o->via.map.size, (unsigned)PROTO_RECYCLE_COUNT);
    for (int k = 0; k < PROTO_RECYCLE_COUNT; k++)
        out[k] = 0;
    unsigned seen = 0;
    char label[48];
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *key = &o->via.map.ptr[i].key;
        snprintf(label, sizeof label, "recycles reason %u", i);
        if (key->type != MSGPACK_OBJECT_STR)
            return FAIL(c, where, label, "not a string");
        int r = -1;
        for (int k = 0; k < PROTO_RECYCLE_COUNT && r < 0; k++)
            if (str_is(key, proto_recycle_name((proto_recycle)k)))
                r = k;
        if (r < 0) {
            /* Quoted only when it is plainly a word: it goes into a log line. */
            if (key->via.str.size <= 32 && str_ok(STR_NAME, key->via.str.ptr, key->via.str.size))
                return FAIL(c, where, label, "unknown reason \"%.*s\"", (int)key->via.str.size, key->via.str.ptr);
            return FAIL(c, where, label, "unknown reason");
        }
        if (seen & (1u << r))
            return FAIL(c, where, "recycles", "duplicate reason \"%s\"", proto_recycle_name((proto_recycle)r));
        seen |= 1u << r;
        snprintf(label, sizeof label, "recycles %s", proto_recycle_name((proto_recycle)r));
        if (get_uint(c, where, label, &o->via.map.ptr[i].val, 0, UINT64_MAX, &out[r]) < 0)
            return -1;
    }
    return 0;
}

static int dec_stats(dctx *c, const msgpack_object *f)
{
    proto_stats *st = &c->m->u.stats;
    const msgpack_object *e;
    uint32_t n;
    if (get_array(c, "", "entries", &f[0], 0, PROTO_MAX_BATCH, &e, &n) < 0)
        return -1;
    proto_stats_entry *es = ARENA_ARRAY(c, n, proto_stats_entry);
    char where[32];
    for (uint32_t i = 0; i < n; i++) {
        proto_stats_entry x;
        const msgpack_object *g;
        uint32_t ng;
        label_of(where, "entry", i);
        if (get_array(c, where, "", &e[i], 5, 5, &g, &ng) < 0 ||
            get_str(c, where, "function", &g[0], 1, PROTO_NAME_MAX, STR_NAME, false, &x.function) < 0 ||
            get_uint(c, where, "cold_starts", &g[1], 0, UINT64_MAX, &x.cold_starts) < 0 ||
            get_uint(c, where, "init_us", &g[2], 0, UINT64_MAX, &x.init_us) < 0 ||
            get_uint(c, where, "warm", &g[3], 0, UINT64_MAX, &x.warm) < 0 ||
            dec_recycles(c, where, &g[4], x.recycles) < 0)
            return -1;
        if (es)
            es[i] = x;
    }
    st->es = es;
    st->n = n;
    return 0;
}

static int dec_nothing(dctx *c, const msgpack_object *f)
{
    (void)c, (void)f;
    return 0;
}

static const struct {
    uint32_t nfields;   /* elements after [version, type] */
    int (*decode)(dctx *, const msgpack_object *);
} bodies[] = {
    [MSG_HELLO] = {2, dec_hello},         [MSG_WELCOME] = {3, dec_welcome},
    [MSG_PUBLISH] = {2, dec_publish},     [MSG_CONFIRM] = {1, dec_confirm},
    [MSG_REGISTER] = {5, dec_register},   [MSG_CONFIG] = {3, dec_config},
    [MSG_DELIVER] = {1, dec_deliver},     [MSG_RESULT] = {1, dec_result},
    [MSG_HEARTBEAT] = {0, dec_nothing},   [MSG_DRAIN] = {0, dec_nothing},
    [MSG_ADMIN] = {3, dec_admin},         [MSG_ADMIN_REPLY] = {4, dec_admin_reply},
    [MSG_ERROR] = {2, dec_error},
    [MSG_INVOKE] = {3, dec_invoke},       [MSG_INVOKE_REPLY] = {4, dec_invoke_reply},
    [MSG_REFUSED] = {1, dec_refused},     [MSG_BYE] = {0, dec_nothing},
    [MSG_STATS] = {1, dec_stats},
};
_Static_assert(sizeof bodies / sizeof *bodies == MSG_TYPE_COUNT, "a msg_type has no decoder");

/* ------------------------------------------------------------------------ */

static int set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int proto_decode(const void *frame, size_t len, proto_msg *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (err && errlen)
        err[0] = '\0';
    /* Before msgpack-c: it would allocate whatever the bytes claim. */
    if (proto_prescan(frame, len, err, errlen) < 0)
        return -1;

    msgpack_unpacked_init(&m->up);
    size_t off = 0;
    if (msgpack_unpack_next(&m->up, frame, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) {
        set_err(err, errlen, "msgpack refused the frame");
        goto fail_up;
    }
    const msgpack_object *top = &m->up.data;
    if (top->type != MSGPACK_OBJECT_ARRAY || top->via.array.size < 2) {
        set_err(err, errlen, "not an array [version, type, ...]");
        goto fail_up;
    }
    const msgpack_object *a = top->via.array.ptr;
    if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 != PROTO_VERSION) {
        set_err(err, errlen, "unsupported protocol version (want %d)", PROTO_VERSION);
        goto fail_up;
    }
    int type = -1;
    for (int t = 0; t < MSG_TYPE_COUNT && type < 0; t++)
        if (str_is(&a[1], proto_type_name((msg_type)t)))
            type = t;
    if (type < 0) {
        if (a[1].type == MSGPACK_OBJECT_STR && a[1].via.str.size <= 32 &&
            str_ok(STR_NAME, a[1].via.str.ptr, a[1].via.str.size))
            set_err(err, errlen, "unknown message type \"%.*s\"", (int)a[1].via.str.size, a[1].via.str.ptr);
        else
            set_err(err, errlen, "unknown message type");
        goto fail_up;
    }
    m->type = (msg_type)type;
    if (top->via.array.size != 2 + bodies[type].nfields) {
        set_err(err, errlen, "%s: %u elements, want %u", proto_type_name(m->type),
                top->via.array.size, 2 + bodies[type].nfields);
        goto fail_up;
    }

    dctx c = {.m = m, .measure = true, .frame = frame, .len = len, .err = err, .errlen = errlen};
    if (bodies[type].decode(&c, a + 2) < 0)
        goto fail_up;
    if (c.used) {
        m->arena = malloc(c.used);
        if (!m->arena) {
            set_err(err, errlen, "out of memory (%zu bytes)", c.used);
            goto fail_up;
        }
        m->arena_cap = c.used;
    }
    /* Second pass over the same code: fills the arena, cannot fail. */
    c.measure = false;
    c.used = 0;
    if (bodies[type].decode(&c, a + 2) < 0) {
        set_err(err, errlen, "internal error: second decoding pass failed");
        goto fail_arena;
    }
    return 0;

fail_arena:
    free(m->arena);
fail_up:
    msgpack_unpacked_destroy(&m->up);
    memset(m, 0, sizeof *m);
    return -1;
}

void proto_msg_clear(proto_msg *m)
{
    if (!m)
        return;
    msgpack_unpacked_destroy(&m->up);
    free(m->arena);
    /* Zeroed so that a second clear, or a clear after a failed decode, is harmless. */
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------------ */
/* encoders                                                                  */

/* Every pack call returns 0 or -1 (the sbuffer's realloc failed). */
#define TRY(x) do { if ((x) < 0) goto oom; } while (0)

static int pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (msgpack_pack_str(pk, n) < 0)
        return -1;
    return n ? msgpack_pack_str_body(pk, s, n) : 0;
}

static int pack_str_or_nil(msgpack_packer *pk, const char *s)
{
    return s ? pack_str(pk, s) : msgpack_pack_nil(pk);
}

static int pack_head(msgpack_packer *pk, msg_type t, size_t nfields)
{
    if (msgpack_pack_array(pk, 2 + nfields) < 0 || msgpack_pack_uint64(pk, PROTO_VERSION) < 0)
        return -1;
    return pack_str(pk, proto_type_name(t));
}

static int pack_strmap(msgpack_packer *pk, const proto_attr *a, uint32_t n)
{
    if (msgpack_pack_map(pk, n) < 0)
        return -1;
    for (uint32_t i = 0; i < n; i++)
        if (pack_str(pk, a[i].key) < 0 || pack_str(pk, a[i].value) < 0)
            return -1;
    return 0;
}

/* Encoders start like this: the rollback point and a packer on sb. */
#define BEGIN(sb) size_t start_ = (sb)->size; msgpack_packer pk_; \
    msgpack_packer_init(&pk_, (sb), msgpack_sbuffer_write); msgpack_packer *pk = &pk_
/* ... and end like this: a half-written frame must not stay in sb. */
#define END(sb) return 0; oom: (sb)->size = start_; return -1

int proto_encode_hello(msgpack_sbuffer *sb, const proto_hello *h)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_HELLO, 2));
    TRY(pack_str(pk, h->client_id));
    TRY(pack_str(pk, h->role));
    END(sb);
}

int proto_encode_welcome(msgpack_sbuffer *sb, const proto_welcome *w)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_WELCOME, 3));
    TRY(msgpack_pack_uint64(pk, w->max_payload));
    TRY(msgpack_pack_uint32(pk, w->max_batch));
    TRY(msgpack_pack_uint32(pk, w->heartbeat_ms));
    END(sb);
}

int proto_encode_publish(msgpack_sbuffer *sb, const proto_publish *p)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_PUBLISH, 2));
    TRY(pack_str(pk, p->producer));
    TRY(msgpack_pack_array(pk, p->npubs));
    for (uint32_t i = 0; i < p->npubs; i++) {
        const proto_pub *e = &p->pubs[i];
        TRY(msgpack_pack_array(pk, 6));
        TRY(msgpack_pack_uint64(pk, e->seq));
        TRY(pack_str(pk, e->topic));
        TRY(pack_strmap(pk, e->attrs, e->nattrs));
        TRY(msgpack_pack_uint32(pk, e->delay_ms));
        TRY(pack_str_or_nil(pk, e->dedup_id));
        TRY(pack_str_or_nil(pk, e->function));
    }
    END(sb);
}

int proto_encode_confirm(msgpack_sbuffer *sb, const proto_confirm *c)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_CONFIRM, 1));
    TRY(msgpack_pack_array(pk, c->n));
    for (uint32_t i = 0; i < c->n; i++) {
        TRY(msgpack_pack_array(pk, 3));
        TRY(msgpack_pack_uint64(pk, c->entries[i].seq));
        TRY(msgpack_pack_uint32(pk, c->entries[i].status));
        TRY(pack_str(pk, c->entries[i].text));
    }
    END(sb);
}

int proto_encode_register(msgpack_sbuffer *sb, const proto_register *r)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_REGISTER, 5));
    TRY(pack_str(pk, r->worker_id));
    TRY(pack_str(pk, r->host));
    TRY(msgpack_pack_uint32(pk, r->pid));
    TRY(msgpack_pack_uint32(pk, r->slots));
    TRY(msgpack_pack_array(pk, r->nfunctions));
    for (uint32_t i = 0; i < r->nfunctions; i++)
        TRY(pack_str(pk, r->functions[i]));
    END(sb);
}

int proto_encode_config(msgpack_sbuffer *sb, const proto_config *c)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_CONFIG, 3));
    TRY(msgpack_pack_uint32(pk, c->heartbeat_ms));
    TRY(msgpack_pack_uint64(pk, c->max_payload));
    TRY(msgpack_pack_array(pk, c->nfns));
    for (uint32_t i = 0; i < c->nfns; i++) {
        const proto_fndef *d = &c->fns[i];
        /* The layout follows the kind, not the pointers, so its rule (argv
         * for exec and runtime, library+symbol only for native, the runtime
         * settings only for runtime) always holds. runtime wins over native. */
        bool native = d->native && !d->runtime;
        /* 11 only when log_output is set: a worker from before it takes every
         * other CONFIG as it did */
        TRY(msgpack_pack_array(pk, d->log_output ? 11 : 10));
        TRY(pack_str(pk, d->name));
        TRY(pack_str(pk, d->runtime ? "runtime" : native ? "native" : "exec"));
        TRY(msgpack_pack_array(pk, native ? 0 : d->nexec));
        for (uint32_t k = 0; !native && k < d->nexec; k++)
            TRY(pack_str(pk, d->exec[k]));
        TRY(native ? pack_str(pk, d->library) : msgpack_pack_nil(pk));
        TRY(native ? pack_str(pk, d->symbol) : msgpack_pack_nil(pk));
        TRY(msgpack_pack_uint32(pk, d->timeout_ms));
        TRY(msgpack_pack_uint32(pk, d->memory_mb));
        TRY(msgpack_pack_uint32(pk, d->max_attempts));
        TRY(pack_strmap(pk, d->env, d->nenv));
        if (!d->runtime) {
            TRY(msgpack_pack_nil(pk));
        } else {
            TRY(msgpack_pack_array(pk, 6));
            TRY(pack_str_or_nil(pk, d->rt.handler));
            TRY(pack_str(pk, d->rt.format == PROTO_RT_SNS ? "sns" : "raw"));
            TRY(msgpack_pack_uint32(pk, d->rt.max_invocations));
            TRY(msgpack_pack_uint32(pk, d->rt.idle_timeout_ms));
            TRY(msgpack_pack_uint32(pk, d->rt.init_timeout_ms));
            TRY(msgpack_pack_uint32(pk, d->rt.concurrency));
        }
        if (d->log_output)
            TRY(msgpack_pack_true(pk));
    }
    END(sb);
}

int proto_encode_deliver(msgpack_sbuffer *sb, const proto_deliver *d)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_DELIVER, 1));
    TRY(msgpack_pack_array(pk, d->n));
    for (uint32_t i = 0; i < d->n; i++) {
        const proto_delivery *e = &d->ds[i];
        TRY(msgpack_pack_array(pk, 7));
        TRY(msgpack_pack_uint64(pk, e->lease));
        TRY(pack_str(pk, e->function));
        TRY(pack_str(pk, e->topic));
        TRY(pack_str(pk, e->message_id));
        TRY(msgpack_pack_uint32(pk, e->attempt));
        TRY(msgpack_pack_uint32(pk, e->max_attempts));
        TRY(pack_strmap(pk, e->attrs, e->nattrs));
    }
    END(sb);
}

int proto_encode_result(msgpack_sbuffer *sb, const proto_result *r)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_RESULT, 1));
    TRY(msgpack_pack_array(pk, r->n));
    for (uint32_t i = 0; i < r->n; i++) {
        const proto_result_entry *e = &r->rs[i];
        TRY(msgpack_pack_array(pk, 5));
        TRY(msgpack_pack_uint64(pk, e->lease));
        TRY(pack_str(pk, proto_outcome_name((proto_outcome)e->outcome)));
        TRY(msgpack_pack_int64(pk, e->started_ms));
        TRY(msgpack_pack_uint32(pk, e->duration_us));
        TRY(pack_str_or_nil(pk, e->error));
    }
    END(sb);
}

int proto_encode_heartbeat(msgpack_sbuffer *sb)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_HEARTBEAT, 0));
    END(sb);
}

int proto_encode_drain(msgpack_sbuffer *sb)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_DRAIN, 0));
    END(sb);
}

int proto_encode_refused(msgpack_sbuffer *sb, const proto_refused *r)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_REFUSED, 1));
    TRY(msgpack_pack_array(pk, r->n));
    for (uint32_t i = 0; i < r->n; i++) {
        TRY(msgpack_pack_array(pk, 2));
        TRY(pack_str(pk, r->rs[i].function));
        TRY(pack_str(pk, r->rs[i].reason));
    }
    END(sb);
}

int proto_encode_bye(msgpack_sbuffer *sb)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_BYE, 0));
    END(sb);
}

int proto_encode_stats(msgpack_sbuffer *sb, const proto_stats *s)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_STATS, 1));
    TRY(msgpack_pack_array(pk, s->n));
    for (uint32_t i = 0; i < s->n; i++) {
        const proto_stats_entry *e = &s->es[i];
        TRY(msgpack_pack_array(pk, 5));
        TRY(pack_str(pk, e->function));
        TRY(msgpack_pack_uint64(pk, e->cold_starts));
        TRY(msgpack_pack_uint64(pk, e->init_us));
        TRY(msgpack_pack_uint64(pk, e->warm));
        uint32_t nr = 0;
        for (int k = 0; k < PROTO_RECYCLE_COUNT; k++)
            nr += e->recycles[k] != 0;
        TRY(msgpack_pack_map(pk, nr));
        for (int k = 0; k < PROTO_RECYCLE_COUNT; k++)
            if (e->recycles[k]) {
                TRY(pack_str(pk, proto_recycle_name((proto_recycle)k)));
                TRY(msgpack_pack_uint64(pk, e->recycles[k]));
            }
    }
    END(sb);
}

int proto_encode_admin(msgpack_sbuffer *sb, uint64_t req, const char *command,
                       const void *args, size_t args_len)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_ADMIN, 3));
    TRY(msgpack_pack_uint64(pk, req));
    TRY(pack_str(pk, command));
    /* Already packed by the caller: written raw, never re-encoded. */
    if (args && args_len)
        TRY(msgpack_sbuffer_write(sb, args, args_len));
    else
        TRY(msgpack_pack_map(pk, 0));
    END(sb);
}

int proto_encode_admin_reply(msgpack_sbuffer *sb, uint64_t req, uint32_t status,
                             const char *error, const void *result, size_t result_len)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_ADMIN_REPLY, 4));
    TRY(msgpack_pack_uint64(pk, req));
    TRY(msgpack_pack_uint32(pk, status));
    TRY(pack_str_or_nil(pk, error));
    if (result && result_len)
        TRY(msgpack_sbuffer_write(sb, result, result_len));
    else
        TRY(msgpack_pack_nil(pk));
    END(sb);
}

int proto_encode_error(msgpack_sbuffer *sb, uint32_t status, const char *text)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_ERROR, 2));
    TRY(msgpack_pack_uint32(pk, status));
    TRY(pack_str(pk, text));
    END(sb);
}

int proto_encode_invoke(msgpack_sbuffer *sb, const proto_invoke *i)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_INVOKE, 3));
    TRY(msgpack_pack_uint64(pk, i->req));
    TRY(pack_str(pk, i->function));
    TRY(msgpack_pack_uint32(pk, i->timeout_ms));
    END(sb);
}

int proto_encode_invoke_reply(msgpack_sbuffer *sb, const proto_invoke_reply *r)
{
    BEGIN(sb);
    TRY(pack_head(pk, MSG_INVOKE_REPLY, 4));
    TRY(msgpack_pack_uint64(pk, r->req));
    TRY(msgpack_pack_uint32(pk, r->status));
    TRY(pack_str_or_nil(pk, r->error));
    TRY(pack_str(pk, r->message_id ? r->message_id : ""));
    END(sb);
}

/* ------------------------------------------------------------------------ */

int proto_peek_ref(const void *frame, size_t len, proto_ref *r)
{
    r->nseqs = 0;
    r->req = 0;
    if (proto_prescan(frame, len, NULL, 0) < 0) return -1;   /* before msgpack-c allocates */
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int rc = -1;
    size_t off = 0;
    if (msgpack_unpack_next(&up, frame, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) goto out;
    const msgpack_object *top = &up.data;
    if (top->type != MSGPACK_OBJECT_ARRAY || top->via.array.size < 3) goto out;
    const msgpack_object *a = top->via.array.ptr;
    if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 != PROTO_VERSION) goto out;
    if (str_is(&a[1], "ADMIN") || str_is(&a[1], "INVOKE")) {
        if (a[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER) goto out;
        r->type = str_is(&a[1], "ADMIN") ? MSG_ADMIN : MSG_INVOKE;
        r->req = a[2].via.u64;
        rc = 0;
    } else if (str_is(&a[1], "PUBLISH")) {
        if (top->via.array.size < 4 || a[3].type != MSGPACK_OBJECT_ARRAY || a[3].via.array.size == 0 ||
            a[3].via.array.size > PROTO_MAX_BATCH)
            goto out;
        for (uint32_t i = 0; i < a[3].via.array.size; i++) {
            const msgpack_object *e = &a[3].via.array.ptr[i];
            if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size < 1 ||
                e->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || e->via.array.ptr[0].via.u64 == 0)
                goto out;
            r->seqs[i] = e->via.array.ptr[0].via.u64;
        }
        r->type = MSG_PUBLISH;
        r->nseqs = a[3].via.array.size;
        rc = 0;
    }
out:
    msgpack_unpacked_destroy(&up);
    return rc;
}
