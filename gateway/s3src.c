/* s3src.c — S3 and MinIO bucket notifications as herald events (DESIGN §12):
 *
 *   POST /sources/s3/{topic}      body = a notification: S3's {"Records":[R,…]},
 *                                 or MinIO's webhook body {"EventName":…,
 *                                 "Key":…,"Records":[R]}. Each record R becomes
 *                                 one event on topic: payload {"Records":[R]}
 *                                 (R's bytes as sent, so S3 Lambda handlers run
 *                                 unchanged), attributes event_name (R's
 *                                 eventName less "s3:", as S3's Lambda events
 *                                 name it) and bucket (R's s3.bucket.name).
 *                                 200 {"published":N,"message_ids":[…]} once
 *                                 the broker confirmed every record; any other
 *                                 outcome is non-2xx, so the sender's retry
 *                                 queue (MinIO's queue_dir) posts it again.
 *   GET|HEAD /sources/s3/{topic}  the probe: MinIO sends HEAD to its webhook
 *                                 endpoint before it sends events (any answer
 *                                 means "up"). 200 topic known, 404 unknown,
 *                                 503 broker unreachable.
 *
 * Order: the whole body is checked first — strict JSON, then every record —
 * so a bad one anywhere is a 400 with nothing stored; then every record is
 * published, pipelined on one broker connection, and the answer waits for all
 * their confirms. Each record's dedup id is a hash of its bytes: a re-post of
 * the same notification within the broker's dedup window (5 minutes) stores
 * no record twice, whatever part of it was stored before. Past that window a
 * re-post can duplicate: delivery is at-least-once.
 *
 * JSON: a strict RFC 8259 checker (UTF-8, nesting ≤ MAX_DEPTH) that builds no
 * tree; a record is a span of the request body, which outlives the request.
 */
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

#define S3_PREFIX "/sources/s3/"
#define MAX_DEPTH 64                /* nesting the checker follows; a record is 4 deep */
#define MAX_RECORDS 1000            /* a notification carries one (S3, MinIO): bounds one request's publishes */
#define NAME_MAX_BYTES 255          /* eventName, bucket name: S3's are ≤ 63 bytes; well under an attribute's 1024 */
#define DEDUP_WINDOW_TEXT "5 minutes"   /* the broker's dedup window, for the error text */

/* ---- JSON: checking ------------------------------------------------------------------- */

typedef struct {
    const char *p, *end;        /* what is left to read */
    const char *start;          /* the text's first byte: offsets in errors */
    char err[160];              /* the first error, one line */
} jscan;

/* A JSON value's bytes. */
typedef struct { const char *p, *end; } span;

static int fail(jscan *s, const char *what)
{
    if (s->err[0]) return -1;
    if (s->p >= s->end)
        snprintf(s->err, sizeof s->err, "%s at the end of the body", what);
    else if (*s->p > 0x20 && *s->p < 0x7f)
        snprintf(s->err, sizeof s->err, "%s at byte %zu ('%c')", what, (size_t)(s->p - s->start), *s->p);
    else
        snprintf(s->err, sizeof s->err, "%s at byte %zu", what, (size_t)(s->p - s->start));
    return -1;
}

static void ws(jscan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) s->p++;
}

static bool at(const jscan *s, char c) { return s->p < s->end && *s->p == c; }
static bool digit_at(const char *p, const char *end) { return p < end && *p >= '0' && *p <= '9'; }

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char h = p[i];
        int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v << 4 | d;
    }
    return v;
}

static int jstring(jscan *s)
{
    s->p++;   /* the opening quote */
    while (s->p < s->end) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') { s->p++; return 0; }
        if (c < 0x20) return fail(s, "a control character inside a string");
        if (c == '\\') {
            char e = s->end - s->p >= 2 ? s->p[1] : 0;
            if (e == 'u') {
                if (s->end - s->p < 6 || hex4(s->p + 2) < 0) return fail(s, "a bad \\u escape");
                s->p += 6;
            } else if (e && strchr("\"\\/bfnrt", e)) {
                s->p += 2;
            } else {
                return fail(s, "a bad escape");
            }
        } else if (c >= 0x80) {
            size_t k = util_utf8_len((const unsigned char *)s->p, (size_t)(s->end - s->p));
            if (!k) return fail(s, "bytes that are not UTF-8");
            s->p += k;
        } else {
            s->p++;
        }
    }
    return fail(s, "an unterminated string");
}

static int jnumber(jscan *s)
{
    const char *p = s->p, *e = s->end;
    if (p < e && *p == '-') p++;
    if (p < e && *p == '0') p++;
    else if (digit_at(p, e)) while (digit_at(p, e)) p++;
    else return fail(s, "a bad number");
    if (p < e && *p == '.') {
        if (!digit_at(++p, e)) { s->p = p; return fail(s, "a digit expected after '.'"); }
        while (digit_at(p, e)) p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-')) p++;
        if (!digit_at(p, e)) { s->p = p; return fail(s, "a digit expected in the exponent"); }
        while (digit_at(p, e)) p++;
    }
    s->p = p;
    return 0;
}

static int jliteral(jscan *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0) return fail(s, "an unexpected character");
    s->p += n;
    return 0;
}

/* Checks one value at s->p (after white space) and steps over it. 0, or -1 with s->err. */
static int jvalue(jscan *s, int depth)
{
    ws(s);
    if (s->p >= s->end) return fail(s, "a value expected");
    char c = *s->p;
    if (c == '"') return jstring(s);
    if (c == 't') return jliteral(s, "true");
    if (c == 'f') return jliteral(s, "false");
    if (c == 'n') return jliteral(s, "null");
    if (c == '-' || (c >= '0' && c <= '9')) return jnumber(s);
    if (c != '{' && c != '[') return fail(s, "an unexpected character");
    if (depth >= MAX_DEPTH) return fail(s, "nesting deeper than 64 levels");
    bool obj = c == '{';
    char close = obj ? '}' : ']';
    s->p++;
    ws(s);
    if (at(s, close)) { s->p++; return 0; }
    for (;;) {
        if (obj) {
            ws(s);
            if (!at(s, '"')) return fail(s, "a member name (a string) expected");
            if (jstring(s) < 0) return -1;
            ws(s);
            if (!at(s, ':')) return fail(s, "':' expected");
            s->p++;
        }
        if (jvalue(s, depth + 1) < 0) return -1;
        ws(s);
        if (at(s, ',')) { s->p++; continue; }
        if (at(s, close)) { s->p++; return 0; }
        return fail(s, obj ? "',' or '}' expected" : "',' or ']' expected");
    }
}

/* ---- JSON: reading checked text ------------------------------------------------------------- */

static void put_utf8(char *o, size_t *n, unsigned cp)
{
    if (cp < 0x80) o[(*n)++] = (char)cp;
    else if (cp < 0x800) { o[(*n)++] = (char)(0xc0 | cp >> 6); o[(*n)++] = (char)(0x80 | (cp & 0x3f)); }
    else if (cp < 0x10000) {
        o[(*n)++] = (char)(0xe0 | cp >> 12); o[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        o[(*n)++] = (char)(0xf0 | cp >> 18); o[(*n)++] = (char)(0x80 | (cp >> 12 & 0x3f));
        o[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3f)); o[(*n)++] = (char)(0x80 | (cp & 0x3f));
    }
}

/* The text of the string value v (checked JSON), unescaped into out (NUL-
 * terminated). false when v is not a string, is empty, holds a NUL, or needs
 * more than cap - 1 bytes. A lone surrogate escape becomes U+FFFD. */
static bool text_of(span v, char *out, size_t cap)
{
    if (v.p >= v.end || *v.p != '"') return false;
    size_t n = 0;
    for (const char *c = v.p + 1; c < v.end - 1;) {
        if (n + (*c == '\\' ? 4 : 1) >= cap) return false;   /* an escape makes at most 4 bytes */
        if (*c != '\\') { out[n++] = *c++; continue; }
        char e = c[1];
        c += 2;
        if (e != 'u') {
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            out[n++] = to[strchr(from, e) - from];
            continue;
        }
        unsigned cp = (unsigned)hex4(c);
        c += 4;
        if (cp >= 0xd800 && cp < 0xdc00 && c + 6 <= v.end - 1 && c[0] == '\\' && c[1] == 'u') {
            int lo = hex4(c + 2);
            if (lo >= 0xdc00 && lo < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + ((unsigned)lo - 0xdc00);
                c += 6;
            }
        }
        if (cp >= 0xd800 && cp < 0xe000) cp = 0xfffd;
        if (cp == 0) return false;   /* an attribute value holds no NUL */
        put_utf8(out, &n, cp);
    }
    out[n] = 0;
    return n > 0;
}

/* Is the string value k (checked JSON) the text key? */
static bool key_is(span k, const char *key)
{
    char buf[64];
    return text_of(k, buf, sizeof buf) && strcmp(buf, key) == 0;
}

/* The value of member key of the object obj (checked JSON). When a key
 * repeats, the last one: what Python's, Node's and Go's parsers keep, so what
 * a handler reading the payload sees. */
static bool member(span obj, const char *key, span *out)
{
    if (obj.p >= obj.end || *obj.p != '{') return false;
    jscan s = { .p = obj.p + 1, .end = obj.end, .start = obj.p };
    bool found = false;
    ws(&s);
    if (at(&s, '}')) return false;
    for (;;) {
        ws(&s);
        span k = { s.p, NULL };
        jstring(&s);
        k.end = s.p;
        ws(&s);
        s.p++;   /* ':' */
        ws(&s);
        span v = { s.p, NULL };
        jvalue(&s, 0);
        v.end = s.p;
        if (key_is(k, key)) { *out = v; found = true; }
        ws(&s);
        if (!at(&s, ',')) return found;
        s.p++;
    }
}

/* The elements of the array arr (checked JSON), in order: call with *it
 * zeroed; false after the last one. */
static bool element(span arr, jscan *it, span *out)
{
    if (!it->start) *it = (jscan){ .p = arr.p + 1, .end = arr.end, .start = arr.p };
    ws(it);
    if (at(it, ',')) { it->p++; ws(it); }
    if (!(it->p < it->end) || *it->p == ']') return false;
    out->p = it->p;
    jvalue(it, 0);
    out->end = it->p;
    return true;
}

/* ---- the notification ------------------------------------------------------------------------ */

typedef struct {
    span rec;                               /* the record's bytes in the body */
    char event_name[NAME_MAX_BYTES + 1];    /* eventName less "s3:" */
    char bucket[NAME_MAX_BYTES + 1];        /* s3.bucket.name */
    int status;                             /* 1: sent, not confirmed yet; 0 confirmed; else HERALD_E_… */
    char mid[HERALD_ID_MAX];                /* the broker's message id when confirmed */
} s3_record;

typedef struct {
    s3_record *v; size_t n;     /* malloc'ed */
    bool test_event;            /* S3's s3:TestEvent: no records, nothing to publish */
} s3_body;

/* Checks the body and finds its records. 0, or -1 with err (one line). */
static int parse(const char *body, size_t len, s3_body *b, char *err, size_t errlen)
{
    memset(b, 0, sizeof *b);
    jscan s = { .p = body, .end = body + len, .start = body };
    if (jvalue(&s, 0) == 0) {
        ws(&s);
        if (s.p < s.end) fail(&s, "more bytes after the JSON value");
    }
    if (s.err[0]) {
        snprintf(err, errlen, "the body is not JSON: %s", s.err);
        return -1;
    }
    jscan lead = { .p = body, .end = s.p, .start = body };
    ws(&lead);
    span top = { lead.p, s.p }, records, v;
    if (*top.p != '{') {
        snprintf(err, errlen, "the body is a JSON %s, not an object with \"Records\"",
                 *top.p == '[' ? "array" : *top.p == '"' ? "string" : "scalar");
        return -1;
    }
    if (!member(top, "Records", &records)) {
        char event[32];
        if (member(top, "Event", &v) && text_of(v, event, sizeof event) && strcmp(event, "s3:TestEvent") == 0) {
            b->test_event = true;   /* what S3 sends when a notification is set up */
            return 0;
        }
        snprintf(err, errlen, "the body has no \"Records\" array (an S3 or MinIO notification is "
                              "{\"Records\":[{\"eventName\":…,\"s3\":{\"bucket\":{\"name\":…}}}]})");
        return -1;
    }
    if (*records.p != '[') {
        snprintf(err, errlen, "\"Records\" is not an array");
        return -1;
    }
    jscan it = { 0 };
    size_t n = 0;
    while (element(records, &it, &v)) n++;
    if (n > MAX_RECORDS) {
        snprintf(err, errlen, "%zu records in one notification: at most %d", n, MAX_RECORDS);
        return -1;
    }
    b->v = calloc(n ? n : 1, sizeof *b->v);
    if (!b->v) {
        snprintf(err, errlen, "out of memory for %zu records", n);
        return -1;
    }
    memset(&it, 0, sizeof it);
    for (size_t i = 0; element(records, &it, &v); i++) {
        s3_record *r = &b->v[b->n++];
        r->rec = v;
        span s3, bucket, name, ev;
        char en[NAME_MAX_BYTES + 4];
        if (*v.p != '{') {
            snprintf(err, errlen, "record %zu is not a JSON object", i + 1);
            goto bad;
        }
        if (!member(v, "eventName", &ev) || !text_of(ev, en, sizeof en)) {
            snprintf(err, errlen, "record %zu has no eventName (a string of 1 to %d bytes)", i + 1, NAME_MAX_BYTES);
            goto bad;
        }
        const char *bare = strncmp(en, "s3:", 3) == 0 ? en + 3 : en;   /* S3's Lambda events have no "s3:" */
        if (!*bare || strlen(bare) > NAME_MAX_BYTES) {
            snprintf(err, errlen, "record %zu has eventName \"%s\", which names no event", i + 1, en);
            goto bad;
        }
        strcpy(r->event_name, bare);
        if (!member(v, "s3", &s3) || !member(s3, "bucket", &bucket) || !member(bucket, "name", &name) ||
            !text_of(name, r->bucket, sizeof r->bucket)) {
            snprintf(err, errlen, "record %zu has no s3.bucket.name (a string of 1 to %d bytes)", i + 1,
                     NAME_MAX_BYTES);
            goto bad;
        }
    }
    return 0;
bad:
    free(b->v);
    b->v = NULL;
    return -1;
}

/* ---- publishing --------------------------------------------------------------------------------- */

static void confirmed(void *arg, int status, const char *mid)
{
    s3_record *r = arg;
    r->status = status;
    snprintf(r->mid, sizeof r->mid, "%s", mid ? mid : "");
}

/* Sends every record of b to topic and waits for the confirms: each record's
 * status says how it ended. why: libherald's or the broker's words for the
 * last failure. */
static void publish_all(gw_t *g, const char *topic, s3_body *b, char *why, size_t whylen)
{
    char err[512];
    herald_client *c = pool_take(g, err, sizeof err);
    if (!c) {
        for (size_t i = 0; i < b->n; i++) b->v[i].status = HERALD_E_UNREACHABLE;
        snprintf(why, whylen, "%s", err);
        return;
    }
    /* the payload is copied by libherald: one buffer serves every record */
    size_t cap = 0, sent = 0;
    char *payload = NULL;
    int fst = 0;
    for (size_t i = 0; i < b->n; i++) {
        s3_record *r = &b->v[i];
        size_t rl = (size_t)(r->rec.end - r->rec.p), pl = rl + sizeof "{\"Records\":[]}" - 1;
        if (fst) { r->status = fst; continue; }   /* the broker is not taking them: do not wait again per record */
        if (pl > cap) {
            char *p = realloc(payload, pl);
            if (!p) { r->status = fst = HERALD_E_NOMEM; snprintf(why, whylen, "out of memory"); continue; }
            payload = p;
            cap = pl;
        }
        memcpy(payload, "{\"Records\":[", 12);
        memcpy(payload + 12, r->rec.p, rl);
        memcpy(payload + 12 + rl, "]}", 2);
        herald_attr attrs[2] = { { "event_name", r->event_name }, { "bucket", r->bucket } };
        char did[HERALD_ID_MAX];
        gw_make_id(r->rec.p, rl, did);   /* the same record posted again is the same event */
        herald_publish_opts po = { .attrs = attrs, .nattrs = 2, .dedup_id = did };
        r->status = 1;
        int st = herald_publish_async(c, topic, payload, pl, &po, confirmed, r);
        if (st == 0) { sent++; continue; }
        r->status = fst = st;
        snprintf(why, whylen, "%s", *herald_last_error(c) ? herald_last_error(c) : herald_strerror(st));
    }
    free(payload);
    int frc = sent ? herald_flush(c, 0) : 0;
    bool bad = frc != 0;
    for (size_t i = 0; i < b->n; i++) {
        int st = b->v[i].status;
        bad = bad || st == HERALD_E_UNREACHABLE || st == HERALD_E_TIMEOUT;
        if (st < 0 && !fst) {
            fst = st;
            snprintf(why, whylen, "%s", *herald_last_error(c) ? herald_last_error(c) : herald_strerror(st));
        }
    }
    if (frc && !fst) snprintf(why, whylen, "%s", *herald_last_error(c) ? herald_last_error(c) : herald_strerror(frc));
    /* a client still holding confirms for b->v must not outlive this call:
     * closing it (bad) runs them now, while b->v exists */
    pool_give(g, c, bad);
    for (size_t i = 0; i < b->n; i++)
        if (b->v[i].status == 1) b->v[i].status = frc ? frc : HERALD_E_TIMEOUT;
}

static void answer(const char *topic, const s3_body *b, const char *why, gw_resp *r)
{
    size_t ok = 0, unknown = 0, first_bad = b->n;
    for (size_t i = 0; i < b->n; i++) {
        ok += b->v[i].status == 0;
        unknown += b->v[i].status == HERALD_E_UNKNOWN;
        if (b->v[i].status != 0 && first_bad == b->n) first_bad = i;
    }
    if (first_bad == b->n) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f) { http_json_error(r, 500, "out of memory"); return; }
        fprintf(f, "{\"published\":%zu,\"message_ids\":[", b->n);
        for (size_t i = 0; i < b->n; i++) fprintf(f, "%s\"%s\"", i ? "," : "", b->v[i].mid);   /* ids need no escaping */
        fputs("]}\n", f);
        fclose(f);
        http_take(r, 200, "application/json", buf, len);
        return;
    }
    if (unknown == b->n) {
        http_json_error(r, 404, "unknown topic '%s'", topic);
        return;
    }
    int st = b->v[first_bad].status;
    /* the broker went away mid-request (timeout) is "unreachable" here too: 503, as SNS answers it */
    http_json_error(r, st == HERALD_E_TIMEOUT ? 503 : gw_status_of(st),
                    "%zu of %zu records stored; record %zu: %s (post the notification again: records already "
                    "stored are not stored twice within " DEDUP_WINDOW_TEXT ")",
                    ok, b->n, first_bad + 1, why && *why ? why : herald_strerror(st));
}

static void probe(gw_t *g, const char *topic, gw_resp *r)
{
    char err[512];
    char **names = pool_names(g, "topics", err, sizeof err);
    if (!names) {
        http_json_error(r, 503, "%s", err);
        return;
    }
    bool found = false;
    for (char **p = names; *p && !found; p++) found = strcmp(*p, topic) == 0;
    pool_free_names(names);
    if (found)
        http_text(r, 200, "application/json", "{\"topic\":\"%s\",\"accepts\":\"POST of S3 or MinIO notification JSON\"}\n",
                  topic);   /* a valid name needs no escaping */
    else
        http_json_error(r, 404, "unknown topic '%s'", topic);
}

/* ---- the route ------------------------------------------------------------------------------------ */

bool s3src_match(const char *path, char *topic, size_t n)
{
    size_t pl = strlen(S3_PREFIX);
    if (strncmp(path, S3_PREFIX, pl) != 0) return false;
    const char *t = path + pl;
    if (!*t || strchr(t, '/') || strlen(t) >= n) return false;
    strcpy(topic, t);
    return true;
}

void s3src_serve(gw_t *g, gw_req *q, const char *topic, gw_resp *r)
{
    bool get = strcmp(q->method, "GET") == 0 || strcmp(q->method, "HEAD") == 0;
    if (!get && strcmp(q->method, "POST") != 0) {
        http_header(r, "Allow", "GET, HEAD, POST");
        http_json_error(r, 405, "%s takes POST (an S3 or MinIO notification), or GET and HEAD (a probe)", q->path);
        return;
    }
    if (!proto_valid_name(topic)) {
        http_json_error(r, 400, "invalid topic name '%.200s' (expected 1 to 128 of A-Z a-z 0-9 _ . -)", topic);
        return;
    }
    if (get) {
        probe(g, topic, r);
        return;
    }
    s3_body b;
    char err[600];
    if (parse(q->body, q->len, &b, err, sizeof err) != 0) {
        http_json_error(r, 400, "%s", err);
        return;
    }
    if (b.test_event || b.n == 0) {   /* nothing to publish: a setup probe */
        http_text(r, 200, "application/json", "{\"published\":0,\"message_ids\":[]}\n");
        free(b.v);
        return;
    }
    char why[512] = "";
    publish_all(g, topic, &b, why, sizeof why);
    answer(topic, &b, why, r);
    free(b.v);
}
