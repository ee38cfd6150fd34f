/* native.c — herald's own HTTP routes (DESIGN §10):
 *
 *   POST /topics/{topic}            body = payload; X-Herald-Attr-{Key}: value
 *                                   (keys lower-cased), X-Herald-Dedup-Id,
 *                                   X-Herald-Delay (seconds). 202
 *                                   {"message_id":"…"} once the broker confirmed
 *                                   it durable; 404 unknown topic; 413 too large;
 *                                   503 throttled or broker unreachable.
 *   POST /functions/{f}/invoke      synchronous invoke: 200 + output byte for
 *                                   byte; 502 {"error"} handler failed; 404
 *                                   unknown function; 503 no worker serves it;
 *                                   504 timeout. X-Herald-Timeout (seconds)
 *                                   bounds queueing plus run.
 *   GET /healthz                    200 "ok" when the broker answers a ping on
 *                                   its admin endpoint, 503 otherwise.
 *
 * Errors are {"error":"…"} with the broker's or libherald's own words.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway.h"

#define ATTR_PREFIX "x-herald-attr-"
#define HEALTH_TIMEOUT_MS 1000

typedef struct {
    char keys[PROTO_MAX_ATTRS][PROTO_ATTR_KEY_MAX + 1];
    herald_attr attrs[PROTO_MAX_ATTRS];
    size_t n;
    char err[256];
} header_attrs;

static enum MHD_Result take_attr(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    header_attrs *h = cls;
    (void)kind;
    size_t pl = strlen(ATTR_PREFIX);
    if (!key || strncasecmp(key, ATTR_PREFIX, pl) != 0) return MHD_YES;
    const char *k = key + pl;
    size_t kl = strlen(k);
    if (kl == 0 || kl > PROTO_ATTR_KEY_MAX) {
        snprintf(h->err, sizeof h->err, "header %.*s…: an attribute key must be 1 to %d bytes", 40, key,
                 PROTO_ATTR_KEY_MAX);
        return MHD_NO;
    }
    if (h->n == PROTO_MAX_ATTRS) {
        snprintf(h->err, sizeof h->err, "more than %d X-Herald-Attr-* headers (an event has at most %d attributes)",
                 PROTO_MAX_ATTRS, PROTO_MAX_ATTRS);
        return MHD_NO;
    }
    /* HTTP header names have no case: herald's keys are their lower case */
    for (size_t i = 0; i <= kl; i++) h->keys[h->n][i] = (char)tolower((unsigned char)k[i]);
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->keys[i], h->keys[h->n]) == 0) {
            snprintf(h->err, sizeof h->err, "attribute '%s' is given twice", h->keys[i]);
            return MHD_NO;
        }
    h->attrs[h->n].key = h->keys[h->n];
    h->attrs[h->n].value = value ? value : "";
    h->n++;
    return MHD_YES;
}

/* Is this status a sign that the client's connection is broken? */
static bool broken(int st)
{
    return st == HERALD_E_UNREACHABLE || st == HERALD_E_TIMEOUT;
}

void native_publish(gw_t *g, gw_req *q, const char *topic, gw_resp *r)
{
    if (!proto_valid_name(topic)) {
        http_json_error(r, 400, "invalid topic name '%.200s' (expected 1 to 128 of A-Z a-z 0-9 _ . -)", topic);
        return;
    }
    header_attrs h = { .n = 0 };
    MHD_get_connection_values(q->conn, MHD_HEADER_KIND, take_attr, &h);
    if (h.err[0]) {
        http_json_error(r, 400, "%s", h.err);
        return;
    }
    herald_publish_opts po = { .attrs = h.attrs, .nattrs = h.n, .dedup_id = http_get(q, "X-Herald-Dedup-Id") };
    const char *delay = http_get(q, "X-Herald-Delay");
    if (delay) {
        char *end;
        po.delay = strtod(delay, &end);
        if (end == delay || *end || !(po.delay >= 0 && po.delay <= 900)) {
            http_json_error(r, 400, "X-Herald-Delay: '%.40s' is not a number of seconds from 0 to 900", delay);
            return;
        }
    }
    char err[512], id[HERALD_ID_MAX];
    herald_client *c = pool_take(g, err, sizeof err);
    if (!c) {
        http_json_error(r, 503, "%s", err);
        return;
    }
    int st = herald_publish(c, topic, q->body, q->len, &po, id);
    if (st == 0) {
        http_text(r, 202, "application/json", "{\"message_id\":\"%s\"}\n", id);
    } else if (st == HERALD_E_UNKNOWN) {
        http_json_error(r, 404, "unknown topic '%s'", topic);
    } else {
        http_json_error(r, gw_status_of(st), "%s", *herald_last_error(c) ? herald_last_error(c) : herald_strerror(st));
    }
    pool_give(g, c, broken(st));
}

void native_invoke(gw_t *g, gw_req *q, const char *function, gw_resp *r)
{
    if (!proto_valid_name(function)) {
        http_json_error(r, 400, "invalid function name '%.200s' (expected 1 to 128 of A-Z a-z 0-9 _ . -)",
                        function);
        return;
    }
    int timeout_ms = 0;   /* the broker's default: the function's timeout + 5 s */
    const char *t = http_get(q, "X-Herald-Timeout");
    if (t) {
        char *end;
        double s = strtod(t, &end);
        if (end == t || *end || !(s > 0 && s <= 3600)) {
            http_json_error(r, 400, "X-Herald-Timeout: '%.40s' is not a number of seconds (0 < S <= 3600)", t);
            return;
        }
        timeout_ms = (int)(s * 1000);
        if (timeout_ms < 1) timeout_ms = 1;
    }
    char err[512];
    herald_client *c = pool_take(g, err, sizeof err);
    if (!c) {
        http_json_error(r, 503, "%s", err);
        return;
    }
    void *out = NULL;
    size_t out_len = 0;
    int st = herald_invoke(c, function, q->body, q->len, timeout_ms, &out, &out_len);
    if (st == 0) {
        http_take(r, 200, "application/octet-stream", out, out_len);   /* byte for byte */
        out = NULL;
    } else if (st == HERALD_E_UNKNOWN) {
        http_json_error(r, 404, "unknown function '%s'", function);
    } else {
        http_json_error(r, gw_status_of(st), "%s", *herald_last_error(c) ? herald_last_error(c) : herald_strerror(st));
    }
    free(out);
    /* a timeout here is the handler's or the queue's, not the connection's */
    pool_give(g, c, st == HERALD_E_UNREACHABLE);
}

void native_healthz(gw_t *g, gw_req *q, gw_resp *r)
{
    (void)q;
    char err[512];
    if (pool_admin(g, "ping", HEALTH_TIMEOUT_MS, NULL, NULL, err, sizeof err) == 0)
        http_text(r, 200, "text/plain; charset=utf-8", "ok\n");
    else
        http_text(r, 503, "text/plain; charset=utf-8", "broker unreachable: %s\n", err);
}
