/* pool.c — the gateway's connections to the broker.
 *
 * Publish endpoint: a pool of libherald clients. A client is not thread-safe,
 * so a request borrows one (pool_take) for the length of its call and gives
 * it back (pool_give); the pool grows on demand up to POOL_MAX, then requests
 * wait for a free one. A client whose connection looks broken is closed and
 * replaced by a fresh one on the next take.
 *
 * Admin endpoint: one admin client (ctl/admin.c) behind admin_lock: stats,
 * ping. After a failed call its socket is closed and the next call opens a
 * new one: a DEALER keeps unsent requests queued while the broker is down,
 * and a queue of stale pings must not build up behind /healthz polls.
 * With gateway.key / broker_key set, both speak CURVE.
 */
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

/* Each client is a ZeroMQ context with its own I/O thread: bound them. A
 * request holds one for its publish (ms) or its synchronous invoke (up to
 * the function's timeout), so this is also the cap on concurrent invokes. */
#define POOL_MAX 128
#define CLIENT_TIMEOUT_MS 5000      /* a publish's confirm, after which it is "unreachable" */
#define CLIENT_WINDOW 64            /* async publishes in flight per client (a PublishBatch has ≤ 10) */

int pool_init(gw_t *g)
{
    g->idle = calloc(POOL_MAX, sizeof *g->idle);
    if (!g->idle) return -1;
    pthread_mutex_init(&g->pool_lock, NULL);
    pthread_cond_init(&g->pool_cond, NULL);
    pthread_mutex_init(&g->admin_lock, NULL);
    pthread_mutex_init(&g->count_lock, NULL);
    return 0;
}

void pool_destroy(gw_t *g)
{
    pthread_mutex_lock(&g->pool_lock);
    for (size_t i = 0; i < g->nidle; i++) herald_close(&g->idle[i]);
    g->nclients -= g->nidle;
    g->nidle = 0;
    pthread_mutex_unlock(&g->pool_lock);
    free(g->idle);
    g->idle = NULL;
    pthread_mutex_lock(&g->admin_lock);
    if (g->admin_ok) admin_close(&g->admin);
    g->admin_ok = false;
    pthread_mutex_unlock(&g->admin_lock);
}

herald_client *pool_take(gw_t *g, char *err, size_t errlen)
{
    pthread_mutex_lock(&g->pool_lock);
    while (g->nidle == 0 && g->nclients >= POOL_MAX) pthread_cond_wait(&g->pool_cond, &g->pool_lock);
    if (g->nidle) {
        herald_client *c = g->idle[--g->nidle];
        pthread_mutex_unlock(&g->pool_lock);
        return c;
    }
    g->nclients++;   /* reserved: connect outside the lock */
    pthread_mutex_unlock(&g->pool_lock);
    herald_options o = { .endpoint = g->gw->broker, .timeout_ms = CLIENT_TIMEOUT_MS, .window = CLIENT_WINDOW,
                         .key_file = g->gw->key, .broker_key_file = g->gw->broker_key };
    herald_client *c = herald_connect(&o);
    if (!c) {
        snprintf(err, errlen, "cannot connect to broker %s: %s", g->gw->broker, herald_last_error(NULL));
        pthread_mutex_lock(&g->pool_lock);
        g->nclients--;
        pthread_cond_signal(&g->pool_cond);
        pthread_mutex_unlock(&g->pool_lock);
    }
    return c;
}

void pool_give(gw_t *g, herald_client *c, bool broken)
{
    if (!c) return;
    if (broken) herald_close(&c);   /* nothing is pending: the caller's call has returned */
    pthread_mutex_lock(&g->pool_lock);
    if (c) g->idle[g->nidle++] = c;
    else g->nclients--;
    pthread_cond_signal(&g->pool_cond);
    pthread_mutex_unlock(&g->pool_lock);
}

static int admin_connect(gw_t *g, int timeout_ms, char *err, size_t errlen)
{
    if (admin_open(&g->admin, g->gw->admin, timeout_ms, g->gw->key, g->gw->broker_key) == 0) return 0;
    snprintf(err, errlen, "%s", g->admin.error);
    admin_close(&g->admin);
    return -1;
}

int pool_admin_args(gw_t *g, const char *command, const void *args, size_t args_len, bool long_op, int timeout_ms,
                    admin_fn *fn, void *arg, char *err, size_t errlen)
{
    int rc = -1;
    pthread_mutex_lock(&g->admin_lock);
    if (!g->admin_ok) {
        if (admin_connect(g, timeout_ms, err, errlen) != 0) goto out;
        g->admin_ok = true;
    }
    g->admin.timeout_ms = timeout_ms;
    if ((long_op ? admin_call_long(&g->admin, command, args, args_len)
                 : admin_call(&g->admin, command, args, args_len)) != 0) {
        snprintf(err, errlen, "%s", g->admin.error);
        admin_close(&g->admin);   /* a fresh socket next time: no stale queue */
        g->admin_ok = false;
        goto out;
    }
    const proto_admin_reply *r = &g->admin.reply.u.admin_reply;
    if (r->status != PROTO_OK) {
        snprintf(err, errlen, "the broker refused '%s': %s", command,
                 r->error ? r->error : proto_status_name(r->status));
        rc = -2;
        goto out;
    }
    rc = fn ? fn(arg, &r->result) : 0;
out:
    pthread_mutex_unlock(&g->admin_lock);
    return rc;
}

int pool_admin(gw_t *g, const char *command, int timeout_ms, admin_fn *fn, void *arg, char *err, size_t errlen)
{
    return pool_admin_args(g, command, NULL, 0, false, timeout_ms, fn, arg, err, errlen) == 0 ? 0 : -1;
}

typedef struct { const char *list; char **names; } names_arg;

static int collect_names(void *arg, const msgpack_object *result)
{
    names_arg *na = arg;
    const msgpack_object *l = mp_get(result, na->list);
    uint32_t n = l && l->type == MSGPACK_OBJECT_ARRAY ? l->via.array.size : 0;
    na->names = calloc(n + 1, sizeof *na->names);
    if (!na->names) return -1;
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *nm = mp_get(&l->via.array.ptr[i], "name");
        if (!nm || nm->type != MSGPACK_OBJECT_STR) continue;
        na->names[k] = strndup(nm->via.str.ptr, nm->via.str.size);
        if (!na->names[k]) { pool_free_names(na->names); na->names = NULL; return -1; }
        k++;
    }
    return 0;
}

char **pool_names(gw_t *g, const char *list, char *err, size_t errlen)
{
    names_arg na = { list, NULL };
    if (errlen) err[0] = 0;
    if (pool_admin(g, "stats", 3000, collect_names, &na, err, errlen) != 0) {
        if (!na.names && !*err) snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return na.names;
}

void pool_free_names(char **names)
{
    if (!names) return;
    for (char **p = names; *p; p++) free(*p);
    free(names);
}
