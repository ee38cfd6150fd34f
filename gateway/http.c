/* http.c — the HTTP side: reads each request's body (libmicrohttpd has
 * already undone chunked transfer encoding), enforces the body limit, routes
 * the request to its handler, sends the handler's answer and counts it.
 *
 * Routes, first match wins (DESIGN §10): GET /healthz, GET /metrics,
 * POST /topics/{topic}, POST /functions/{f}/invoke, /sources/s3/{topic}
 * (s3src.c); then any path containing
 * /2015-03-31/functions/ is Lambda; then a POST whose form body has Action=
 * is SNS (at any path: `--endpoint-url http://h:p/gw` posts to /gw).
 *
 * Body limits: broker.max_payload for the native routes (S3 notifications
 * included) and Lambda; for SNS
 * forms 3 × max_payload + 64 KiB (percent-encoding triples a byte at worst).
 * A Content-Length above the limit is answered 413 before the body is read
 * when the client waits for it (Expect: 100-continue) or the body is larger
 * than DRAIN_MAX; otherwise, like a chunked body that grows past the limit,
 * the body is read to its end, dropped, and answered 413 — a client still
 * sending when the server answers and closes gets its connection reset
 * instead of the answer (curl: "Send failure: Broken pipe"). A chunked body
 * that goes past DRAIN_MAX has its connection closed.
 *
 * State: one http_conn per request (libmicrohttpd's con_cls), freed in
 * http_completed. Counters of answered requests per (route, status).
 */
#define _GNU_SOURCE   /* vasprintf */
#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway.h"

#define LAMBDA_PREFIX "/2015-03-31/functions/"
#define FORM_HEADROOM (64u << 10)   /* the other fields of an SNS form */
#define OTHER_LIMIT (64u << 10)     /* a body on a route that takes none */
#define DRAIN_MAX (16u << 20)       /* a too-large body up to this is read (and dropped) before the 413 */

typedef enum { KIND_NATIVE, KIND_LAMBDA, KIND_FORM, KIND_OTHER } body_kind;

typedef struct {
    gw_req q;
    size_t cap;                 /* of q.body */
    size_t limit;               /* bytes the body may have */
    size_t seen;                /* bytes received, kept or not */
    bool too_large;
    body_kind kind;
} http_conn;

/* ---- small helpers -------------------------------------------------------------- */

void xml_escape(FILE *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '&': fputs("&amp;", out); break;
        case '<': fputs("&lt;", out); break;
        case '>': fputs("&gt;", out); break;
        default:
            /* XML 1.0 has no way to carry other control characters */
            fputc(c < 0x20 && c != '\t' && c != '\n' && c != '\r' ? '?' : c, out);
        }
    }
}

void gw_make_id(const char *s, size_t n, char out[HERALD_ID_MAX])
{
    if (n > 0 && proto_valid_id_len(s, n)) {
        memcpy(out, s, n);
        out[n] = 0;
        return;
    }
    /* two FNV-1a 64-bit hashes with different offsets: 128 bits, stable */
    uint64_t h1 = 0xcbf29ce484222325ULL, h2 = 0x84222325cbf29ce4ULL;
    for (size_t i = 0; i < n; i++) {
        h1 = (h1 ^ (unsigned char)s[i]) * 0x100000001b3ULL;
        h2 = (h2 ^ (unsigned char)s[i]) * 0x100000001b3ULL;
        h2 ^= h2 >> 29;
    }
    snprintf(out, HERALD_ID_MAX, "h%016llx%016llx", (unsigned long long)h1, (unsigned long long)h2);
}

int gw_status_of(int st)
{
    switch (st) {
    case HERALD_E_INVALID: return 400;
    case HERALD_E_REFUSED: return 400;
    case HERALD_E_TOO_LARGE: return 413;
    case HERALD_E_UNKNOWN: return 404;
    case HERALD_E_THROTTLED: return 503;
    case HERALD_E_NO_WORKER: return 503;
    case HERALD_E_HANDLER: return 502;
    case HERALD_E_UNREACHABLE: return 503;
    case HERALD_E_TIMEOUT: return 504;
    case HERALD_E_BUSY: return 429;   /* no worker slot in time: nothing ran, try later */
    default: return 500;
    }
}

static void new_request_id(char out[40])
{
    unsigned char b[16];
    util_random(b, sizeof b);
    b[6] = (b[6] & 0x0f) | 0x40;   /* a version-4 UUID, as AWS's request ids are */
    b[8] = (b[8] & 0x3f) | 0x80;
    snprintf(out, 40, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
             b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* ---- responses -------------------------------------------------------------------- */

void http_take(gw_resp *r, int status, const char *ctype, char *body, size_t len)
{
    free(r->body);
    r->status = status;
    r->ctype = ctype;
    r->body = body;
    r->len = len;
}

static void vtext(gw_resp *r, int status, const char *ctype, const char *fmt, va_list ap)
{
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    if (n < 0) { s = NULL; n = 0; }
    http_take(r, status, ctype, s, (size_t)n);
}

void http_text(gw_resp *r, int status, const char *ctype, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vtext(r, status, ctype, fmt, ap);
    va_end(ap);
}

void http_json_error(gw_resp *r, int status, const char *fmt, ...)
{
    char msg[4400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) { http_take(r, 500, NULL, NULL, 0); return; }
    fputs("{\"error\":", f);
    json_string(f, msg, strlen(msg));
    fputs("}\n", f);
    fclose(f);
    http_take(r, status, "application/json", buf, len);
}

void http_header(gw_resp *r, const char *name, const char *fmt, ...)
{
    if (r->nheaders >= (int)(sizeof r->headers / sizeof r->headers[0])) return;
    gw_header *h = &r->headers[r->nheaders++];
    h->name = name;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->value, sizeof h->value, fmt, ap);
    va_end(ap);
}

const char *http_get(const gw_req *q, const char *name)
{
    return MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, name);
}

static void count(gw_t *g, gw_route route, int status)
{
    pthread_mutex_lock(&g->count_lock);
    size_t i;
    for (i = 0; i < g->ncounts; i++)
        if (g->counts[i].route == route && g->counts[i].status == status) break;
    if (i == g->ncounts && g->ncounts < sizeof g->counts / sizeof g->counts[0]) {
        g->counts[i].route = route;
        g->counts[i].status = status;
        g->counts[i].n = 0;
        g->ncounts++;
    }
    if (i < g->ncounts) g->counts[i].n++;
    pthread_mutex_unlock(&g->count_lock);
}

void http_counts(gw_t *g, FILE *out)
{
    static const char *const names[ROUTE_COUNT] = { "publish", "invoke", "healthz", "metrics",
                                                    "sns", "lambda", "s3", "console", "other" };
    fputs("# HELP herald_gateway_requests_total HTTP requests the gateway answered, by route and status.\n"
          "# TYPE herald_gateway_requests_total counter\n", out);
    pthread_mutex_lock(&g->count_lock);
    for (size_t i = 0; i < g->ncounts; i++)
        fprintf(out, "herald_gateway_requests_total{route=\"%s\",code=\"%d\"} %llu\n", names[g->counts[i].route],
                g->counts[i].status, (unsigned long long)g->counts[i].n);
    pthread_mutex_unlock(&g->count_lock);
}

static enum MHD_Result send_resp(gw_t *g, struct MHD_Connection *conn, gw_resp *r)
{
    struct MHD_Response *mr = r->body && r->len
                                  ? MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_MUST_FREE)
                                  : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (mr && r->body && r->len) r->body = NULL;   /* the response owns it now */
    free(r->body);
    r->body = NULL;
    if (!mr) return MHD_NO;
    if (r->ctype) MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype);
    for (int i = 0; i < r->nheaders; i++) MHD_add_response_header(mr, r->headers[i].name, r->headers[i].value);
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    count(g, r->route, r->status);
    return rc;
}

/* ---- routing -------------------------------------------------------------------------- */

/* "/topics/NAME" → NAME; "/functions/NAME/invoke" → NAME. */
static bool match_topic(const char *path, char *name, size_t n)
{
    if (strncmp(path, "/topics/", 8) != 0) return false;
    const char *t = path + 8;
    if (!*t || strchr(t, '/') || strlen(t) >= n) return false;
    strcpy(name, t);
    return true;
}

static bool match_function(const char *path, char *name, size_t n)
{
    if (strncmp(path, "/functions/", 11) != 0) return false;
    const char *f = path + 11, *slash = strchr(f, '/');
    if (!slash || slash == f || strcmp(slash, "/invoke") != 0 || (size_t)(slash - f) >= n) return false;
    memcpy(name, f, (size_t)(slash - f));
    name[slash - f] = 0;
    return true;
}

static body_kind kind_of(const char *method, const char *path)
{
    char name[300];
    if (strstr(path, LAMBDA_PREFIX)) return KIND_LAMBDA;
    if (strcmp(method, "POST") != 0) return KIND_OTHER;
    if (match_topic(path, name, sizeof name) || match_function(path, name, sizeof name) ||
        s3src_match(path, name, sizeof name))
        return KIND_NATIVE;
    return KIND_FORM;
}

static void too_large(gw_t *g, http_conn *h, gw_resp *r)
{
    switch (h->kind) {
    case KIND_LAMBDA:
        r->route = ROUTE_LAMBDA;
        lambda_error(r, 413, "RequestTooLargeException",
                     "Request must be smaller than %zu bytes for the Invoke operation", h->limit);
        break;
    case KIND_FORM:
        r->route = ROUTE_SNS;
        sns_error(r, &h->q, 413, "RequestEntityTooLarge", "Request body larger than %zu bytes", h->limit);
        break;
    default:
        r->route = strncmp(h->q.path, "/topics/", 8) == 0      ? ROUTE_PUBLISH
                   : strncmp(h->q.path, "/sources/", 9) == 0 ? ROUTE_S3
                                                             : ROUTE_INVOKE;
        http_json_error(r, 413, "payload of %zu bytes is larger than max_payload (%zu bytes)", h->seen,
                        g->max_payload);
    }
}

static void route(gw_t *g, http_conn *h, gw_resp *r)
{
    gw_req *q = &h->q;
    const char *m = q->method, *p = q->path;
    bool get = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0, post = strcmp(m, "POST") == 0;
    char name[300];
    const char *lam = strstr(p, LAMBDA_PREFIX);
    if (strcmp(p, "/healthz") == 0 || strcmp(p, "/metrics") == 0) {
        bool health = p[1] == 'h';
        r->route = health ? ROUTE_HEALTHZ : ROUTE_METRICS;
        if (!get) {
            http_header(r, "Allow", "GET, HEAD");
            http_json_error(r, 405, "%s takes GET", p);
        } else if (health) {
            native_healthz(g, q, r);
        } else {
            metrics_serve(g, q, r);
        }
    } else if (match_topic(p, name, sizeof name)) {
        r->route = ROUTE_PUBLISH;
        if (post) native_publish(g, q, name, r);
        else { http_header(r, "Allow", "POST"); http_json_error(r, 405, "%s takes POST (the body is the event)", p); }
    } else if (match_function(p, name, sizeof name)) {
        r->route = ROUTE_INVOKE;
        if (post) native_invoke(g, q, name, r);
        else { http_header(r, "Allow", "POST"); http_json_error(r, 405, "%s takes POST (the body is the payload)", p); }
    } else if (s3src_match(p, name, sizeof name)) {
        r->route = ROUTE_S3;
        s3src_serve(g, q, name, r);
    } else if (console_match(p)) {
        r->route = ROUTE_CONSOLE;
        console_serve(g, q, r);
    } else if (lam) {
        r->route = ROUTE_LAMBDA;
        lambda_serve(g, q, lam + strlen(LAMBDA_PREFIX), r);
    } else if (post && form_has_action(q->body, q->len)) {
        r->route = ROUTE_SNS;
        sns_serve(g, q, r);
    } else {
        r->route = ROUTE_OTHER;
        http_json_error(r, 404,
                        "no route for %s %s (routes: POST /topics/TOPIC, POST /functions/FUNCTION/invoke, "
                        "POST /sources/s3/TOPIC, GET /metrics, GET /healthz, GET /console/, /api/…, SNS Query actions, "
                        "Lambda Invoke)", m, p);
    }
}

/* ---- the libmicrohttpd callbacks ---------------------------------------------------------- */

enum MHD_Result http_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                            const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    gw_t *g = cls;
    (void)version;
    http_conn *h = *con_cls;
    gw_resp r = { .status = 500 };
    if (!h) {   /* first call: headers only */
        h = calloc(1, sizeof *h);
        if (!h) return MHD_NO;
        *con_cls = h;
        h->q.conn = conn;
        h->q.method = method;
        h->q.path = url;
        new_request_id(h->q.id);
        h->kind = kind_of(method, url);
        size_t mp = g->max_payload;
        h->limit = h->kind == KIND_FORM ? 3 * mp + FORM_HEADROOM : h->kind == KIND_OTHER ? OTHER_LIMIT : mp;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            unsigned long long n = strtoull(cl, &end, 10);
            if (end != cl && n > h->limit) {
                h->too_large = true;
                const char *ex = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
                if ((ex && strcasecmp(ex, "100-continue") == 0) || n > DRAIN_MAX) {
                    h->seen = (size_t)n;   /* answer now: it is not read */
                    too_large(g, h, &r);
                    return send_resp(g, conn, &r);
                }
            }
        }
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        h->seen += n;
        if (h->too_large || h->q.len + n > h->limit) {
            if (h->seen > DRAIN_MAX) return MHD_NO;   /* a chunked body without end: close */
            h->too_large = true;   /* read to the end, keep nothing */
            free(h->q.body);
            h->q.body = NULL;
            h->q.len = h->cap = 0;
            return MHD_YES;
        }
        if (h->q.len + n + 1 > h->cap) {
            size_t cap = h->cap ? h->cap : 4096;
            while (cap < h->q.len + n + 1) cap *= 2;
            char *b = realloc(h->q.body, cap);
            if (!b) return MHD_NO;
            h->q.body = b;
            h->cap = cap;
        }
        memcpy(h->q.body + h->q.len, upload, n);
        h->q.len += n;
        h->q.body[h->q.len] = 0;
        return MHD_YES;
    }
    if (h->too_large) {
        too_large(g, h, &r);
        return send_resp(g, conn, &r);
    }
    if (!h->q.body) {
        h->q.body = strdup("");
        if (!h->q.body) return MHD_NO;
    }
    route(g, h, &r);
    return send_resp(g, conn, &r);
}

void http_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode t)
{
    (void)cls;
    (void)conn;
    (void)t;
    http_conn *h = *con_cls;
    if (!h) return;
    free(h->q.body);
    free(h);
    *con_cls = NULL;
}
