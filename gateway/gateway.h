/* gateway.h — herald-gateway's map (DESIGN §10).
 *
 * herald-gateway is an HTTP front of a broker: a client of its publish
 * endpoint (libherald: publish, invoke) and of its admin endpoint (ctl's
 * admin client: stats, ping). It keeps no state of its own beyond request
 * counters; the broker is the truth (topics, functions, stats).
 *
 * Threads: libmicrohttpd runs one thread per connection. A libherald client
 * and an admin client are NOT thread-safe (ZeroMQ sockets), so they are never
 * shared: libherald clients live in a pool (pool.c) and are lent to one
 * request at a time under a mutex; the one admin client is used under its own
 * mutex. A mutex hand-over is the full memory barrier ZeroMQ asks for when a
 * socket moves between threads.
 *
 * Files, in reading order: main.c (args, config, signals, the daemon),
 * http.c (request bodies, limits, routing, responses), pool.c (broker
 * connections), native.c (/topics, /functions, /healthz), metrics.c
 * (/metrics), form.c (x-www-form-urlencoded), sns.c (SNS Query protocol),
 * lambda.c (Lambda Invoke), s3src.c (S3/MinIO bucket-notification webhooks),
 * console.c (the web console and its JSON API).
 */
#ifndef HERALD_GATEWAY_H
#define HERALD_GATEWAY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <microhttpd.h>
#include <herald.h>

#include "../config/config.h"
#include "../ctl/ctl.h"

/* ---- types ------------------------------------------------------------------ */

/* Which handler answered, for the request counters of /metrics. */
typedef enum {
    ROUTE_PUBLISH,              /* POST /topics/{topic} */
    ROUTE_INVOKE,               /* POST /functions/{f}/invoke */
    ROUTE_HEALTHZ,
    ROUTE_METRICS,
    ROUTE_SNS,
    ROUTE_LAMBDA,
    ROUTE_S3,                   /* /sources/s3/{topic} */
    ROUTE_CONSOLE,              /* /console/…, /api/… */
    ROUTE_OTHER,                /* no route: 404 / 405 / 413 before routing */
    ROUTE_COUNT
} gw_route;

/* One header of a response. */
typedef struct { const char *name; char value[160]; } gw_header;

/* What a handler answers; http.c sends it. body is malloc'ed (or NULL). */
typedef struct {
    int status;
    const char *ctype;          /* NULL: no Content-Type */
    char *body; size_t len;
    gw_header headers[4]; int nheaders;
    gw_route route;
} gw_resp;

/* One request, as handlers see it: the whole body is in. */
typedef struct {
    struct MHD_Connection *conn;
    const char *method;
    const char *path;           /* percent-decoded by libmicrohttpd, no query */
    char *body; size_t len;     /* NUL-terminated (the NUL is not counted) */
    char id[40];                /* request id: x-amzn-RequestId and SNS RequestId */
} gw_req;

/* The program's state, one per process. */
typedef struct {
    herald_config *cfg;
    const cfg_gateway *gw;      /* cfg->gateway */
    size_t max_payload;         /* bytes: the body limit of publish and invoke (broker.max_payload of the config) */
    struct MHD_Daemon *daemon;

    /* pool.c */
    pthread_mutex_t pool_lock;
    pthread_cond_t pool_cond;
    herald_client **idle; size_t nidle;     /* connected, free clients */
    size_t nclients;            /* idle + lent */
    pthread_mutex_t admin_lock;
    admin_client admin;
    bool admin_ok;              /* admin is open and its socket has no stale request queued */

    /* http.c: request counters for /metrics */
    pthread_mutex_t count_lock;
    struct { gw_route route; int status; uint64_t n; } counts[128]; size_t ncounts;
} gw_t;

/* ---- http.c ------------------------------------------------------------------ */

/* The libmicrohttpd access and completion callbacks (main.c passes them). */
enum MHD_Result http_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                            const char *version, const char *upload, size_t *upload_size, void **con_cls);
void http_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode t);
/* Response builders: each replaces r's body. The format is printf's. */
void http_text(gw_resp *r, int status, const char *ctype, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void http_take(gw_resp *r, int status, const char *ctype, char *body, size_t len);   /* takes body */
/* {"error":"text"} with that status. */
void http_json_error(gw_resp *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void http_header(gw_resp *r, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A request header (any case), or NULL. */
const char *http_get(const gw_req *q, const char *name);
/* Request counters for /metrics: appends them in Prometheus text to out. */
void http_counts(gw_t *g, FILE *out);

/* ---- pool.c ------------------------------------------------------------------ */

int pool_init(gw_t *g);
void pool_destroy(gw_t *g);
/* Lends a connected libherald client (waiting while every one is lent and
 * the pool is full). NULL when none can be made: err says why. */
herald_client *pool_take(gw_t *g, char *err, size_t errlen);
/* Gives it back. broken: its connection is suspect (unreachable, refused):
 * it is closed instead, and the next take makes a fresh one. */
void pool_give(gw_t *g, herald_client *c, bool broken);
/* Runs an admin command on the broker (NULL args: {}). 0: the reply's result
 * is passed to fn, under the admin lock (the object dies when fn returns).
 * -1: unreachable or refused; err says why. timeout_ms bounds the wait. */
typedef int admin_fn(void *arg, const msgpack_object *result);
int pool_admin(gw_t *g, const char *command, int timeout_ms, admin_fn *fn, void *arg, char *err, size_t errlen);
/* The same with packed msgpack args; long_op: a replay or purge, waited for
 * while the broker answers pings. -1: unreachable; -2: the broker refused it
 * (err has its words). */
int pool_admin_args(gw_t *g, const char *command, const void *args, size_t args_len, bool long_op, int timeout_ms,
                    admin_fn *fn, void *arg, char *err, size_t errlen);
/* A list of names (the "name" of each map of a stats array: "topics",
 * "functions") as a malloc'ed NULL-terminated array (caller frees with
 * pool_free_names). NULL: the broker did not answer; err says why. */
char **pool_names(gw_t *g, const char *list, char *err, size_t errlen);
void pool_free_names(char **names);

/* ---- native.c: POST /topics/{t}, POST /functions/{f}/invoke, GET /healthz ---- */

void native_publish(gw_t *g, gw_req *q, const char *topic, gw_resp *r);
void native_invoke(gw_t *g, gw_req *q, const char *function, gw_resp *r);
void native_healthz(gw_t *g, gw_req *q, gw_resp *r);

/* ---- metrics.c: GET /metrics ---------------------------------------------------- */

void metrics_serve(gw_t *g, gw_req *q, gw_resp *r);

/* ---- form.c: application/x-www-form-urlencoded --------------------------------- */

typedef struct { char *key, *value; size_t vlen; } form_pair;
typedef struct { form_pair *v; size_t n, cap; } form_t;

/* Decodes body into pairs ('+' is a space, %XX a byte). -1 on bad encoding
 * (a '%' without two hex digits, a NUL in a key): err says where. */
int form_parse(form_t *f, const char *body, size_t len, char *err, size_t errlen);
/* The first value of key (NUL-terminated; *vlen its length, which counts
 * embedded NULs), or NULL. */
const char *form_get(const form_t *f, const char *key, size_t *vlen);
void form_free(form_t *f);
/* Does the raw body carry an Action= field? (Routes a POST to SNS even when
 * the rest of it does not decode.) */
bool form_has_action(const char *body, size_t len);

/* ---- sns.c: SNS Query protocol --------------------------------------------------- */

void sns_serve(gw_t *g, gw_req *q, gw_resp *r);
/* The SNS error document, for errors found before sns_serve (bad encoding, too large). */
void sns_error(gw_resp *r, const gw_req *q, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* ---- lambda.c: Lambda Invoke --------------------------------------------------- */

/* rest: the path after ".../2015-03-31/functions/". */
void lambda_serve(gw_t *g, gw_req *q, const char *rest, gw_resp *r);
void lambda_error(gw_resp *r, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- s3src.c: S3 / MinIO bucket notifications ---------------------------------- */

/* "/sources/s3/TOPIC" → TOPIC (n: the size of topic). */
bool s3src_match(const char *path, char *topic, size_t n);
/* POST: each record of the notification as its own event; GET/HEAD: the probe. */
void s3src_serve(gw_t *g, gw_req *q, const char *topic, gw_resp *r);

/* ---- console.c: the web console and its JSON API -------------------------------- */

bool console_match(const char *path);   /* /console, /console/…, /api/… */
void console_serve(gw_t *g, gw_req *q, gw_resp *r);

/* ---- shared small helpers (http.c) ---------------------------------------------- */

/* Escapes & < > for XML text; other control bytes but \t \n \r become '?'. */
void xml_escape(FILE *out, const char *s, size_t n);
/* A message or dedup id from any text: s itself when it is a valid id, else
 * "h" + 32 hex digits of a hash of it (stable: the same text, the same id). */
void gw_make_id(const char *s, size_t n, char out[HERALD_ID_MAX]);
/* The HTTP status and words for a failed libherald call on a native route. */
int gw_status_of(int herald_status);

#endif
