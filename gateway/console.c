/* console.c — the web console (DESIGN §14) and the JSON API it reads:
 *
 *   GET  /console, /console/{file}   the page: static files of console/ in the
 *                                    repo, built into the program (no build
 *                                    step, no CDN, nothing read at run time)
 *   GET  /api/stats                  = heraldctl stats --json
 *   GET  /api/schedules              = heraldctl schedules --json
 *   GET  /api/dlq?function=&topic=&limit=   = heraldctl dlq list --json
 *   GET  /api/dlq/{id}               = heraldctl dlq show ID --json
 *   POST /api/dlq/replay, /api/dlq/purge    form body: ids=1,2,3 or all=1,
 *                                    function=, topic=, dry_run=1 (purge:
 *                                    older_than=SECONDS) → {"count":N[,"dry_run":true]};
 *                                    403 unless gateway.console_write = true
 *
 * Every figure comes from the broker's admin calls, the ones heraldctl makes:
 * the console computes nothing the broker does not say (its rates are the
 * differences between two stats answers). Errors are {"error":"…"}: 400 a bad
 * argument, 404 no such dead letter, 503 the broker did not answer.
 */
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

#define API_TIMEOUT_MS 5000
#define CONSOLE_PREFIX "/console"
#define API_PREFIX "/api/"

/* The files of console/, generated into the build by the Makefile. */
typedef struct { const char *name, *ctype; const unsigned char *data; size_t len; } console_asset;
extern const console_asset console_assets[];
extern const size_t console_nassets;

bool console_match(const char *path)
{
    return strcmp(path, CONSOLE_PREFIX) == 0 || strncmp(path, CONSOLE_PREFIX "/", strlen(CONSOLE_PREFIX) + 1) == 0 ||
           strncmp(path, API_PREFIX, strlen(API_PREFIX)) == 0;
}

static void serve_file(gw_req *q, gw_resp *r)
{
    const char *name = q->path + strlen(CONSOLE_PREFIX);
    if (*name == '/') name++;
    if (!*name) name = "index.html";
    for (size_t i = 0; i < console_nassets; i++) {
        const console_asset *a = &console_assets[i];
        if (strcmp(a->name, name) != 0) continue;
        char *body = malloc(a->len ? a->len : 1);
        if (!body) { http_json_error(r, 500, "out of memory"); return; }
        memcpy(body, a->data, a->len);
        http_take(r, 200, a->ctype, body, a->len);
        http_header(r, "Cache-Control", "no-cache");
        return;
    }
    http_json_error(r, 404, "no file %s in the console", name);
}

/* The admin result as JSON: the body of the answer. */
static int to_json(void *arg, const msgpack_object *result)
{
    gw_resp *r = arg;
    char *body = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&body, &len);
    if (!f) return -1;
    json_print(f, result);
    fclose(f);
    http_take(r, 200, "application/json", body, len);
    return 0;
}

static void call(gw_t *g, gw_resp *r, const char *command, const msgpack_sbuffer *args, bool long_op)
{
    char err[768];
    int rc = pool_admin_args(g, command, args ? args->data : NULL, args ? args->size : 0, long_op, API_TIMEOUT_MS,
                             to_json, r, err, sizeof err);
    if (rc == -2)   /* the broker's refusal: a bad argument, or no such dead letter */
        http_json_error(r, strstr(err, "no dead letter") ? 404 : 400, "%s", err);
    else if (rc != 0)
        http_json_error(r, 503, "the broker did not answer: %s", err);
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* A query or form value that must be a name ([A-Za-z0-9_.-]{1,128}); NULL when absent. */
static int name_arg(gw_resp *r, const char *key, const char *v)
{
    if (v && *v && !proto_valid_name(v)) {
        http_json_error(r, 400, "%s: '%.128s' is not a name (1 to 128 of A-Z a-z 0-9 _ . -)", key, v);
        return -1;
    }
    return 0;
}

static void dlq_list(gw_t *g, gw_req *q, gw_resp *r)
{
    const char *fn = MHD_lookup_connection_value(q->conn, MHD_GET_ARGUMENT_KIND, "function");
    const char *tp = MHD_lookup_connection_value(q->conn, MHD_GET_ARGUMENT_KIND, "topic");
    const char *lim = MHD_lookup_connection_value(q->conn, MHD_GET_ARGUMENT_KIND, "limit");
    if (name_arg(r, "function", fn) != 0 || name_arg(r, "topic", tp) != 0) return;
    long long limit = 100;
    if (lim && *lim) {
        char *end;
        limit = strtoll(lim, &end, 10);
        if (*end || limit < 0 || limit > 100000) {
            http_json_error(r, 400, "limit: '%.40s' is not a number from 0 (all) to 100000", lim);
            return;
        }
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1 + (fn && *fn) + (tp && *tp));
    if (fn && *fn) { pack_str(&pk, "function"); pack_str(&pk, fn); }
    if (tp && *tp) { pack_str(&pk, "topic"); pack_str(&pk, tp); }
    pack_str(&pk, "limit");
    msgpack_pack_int64(&pk, limit);
    call(g, r, "dlq.list", &sb, false);
    msgpack_sbuffer_destroy(&sb);
}

static void dlq_show(gw_t *g, const char *idtext, gw_resp *r)
{
    char *end;
    long long id = strtoll(idtext, &end, 10);
    if (*end || end == idtext || id < 0) {
        http_json_error(r, 404, "no route for /api/dlq/%.40s (a dead letter's id is an integer)", idtext);
        return;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "id");
    msgpack_pack_int64(&pk, id);
    call(g, r, "dlq.show", &sb, false);
    msgpack_sbuffer_destroy(&sb);
}

/* ids=1,2,3 → a msgpack array; -1 (answered 400) when one is not an id. */
static int pack_ids(msgpack_packer *pk, const char *ids, gw_resp *r)
{
    size_t n = 0;
    for (const char *p = ids; *p; p++) n += *p == ',';
    msgpack_pack_array(pk, n + 1);
    const char *p = ids;
    for (size_t i = 0; i <= n; i++) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 0 || (*end && *end != ',')) {
            http_json_error(r, 400, "ids: '%.80s' is not a list of dead-letter ids (1,2,3)", ids);
            return -1;
        }
        msgpack_pack_int64(pk, v);
        p = *end ? end + 1 : end;
    }
    return 0;
}

static void dlq_write(gw_t *g, gw_req *q, bool replay, gw_resp *r)
{
    if (!g->gw->console_write) {
        http_json_error(r, 403, "replay and purge from the console are off: set gateway.console_write = true");
        return;
    }
    form_t f = { 0 };
    char err[256];
    if (form_parse(&f, q->body, q->len, err, sizeof err) != 0) {
        http_json_error(r, 400, "the body is not a form: %s", err);
        return;
    }
    static const char *const known[] = { "ids", "all", "function", "topic", "dry_run", "older_than", "rate", NULL };
    for (size_t i = 0; i < f.n; i++) {
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++) ok = strcmp(*k, f.v[i].key) == 0;
        if (!ok || (!replay && strcmp(f.v[i].key, "rate") == 0) || (replay && strcmp(f.v[i].key, "older_than") == 0)) {
            http_json_error(r, 400, "unknown field '%.60s' (%s takes ids or all, function, topic, dry_run, %s)",
                            f.v[i].key, replay ? "replay" : "purge", replay ? "rate" : "older_than");
            form_free(&f);
            return;
        }
    }
    const char *ids = form_get(&f, "ids", NULL), *all = form_get(&f, "all", NULL);
    const char *fn = form_get(&f, "function", NULL), *tp = form_get(&f, "topic", NULL);
    const char *dry = form_get(&f, "dry_run", NULL), *older = form_get(&f, "older_than", NULL);
    const char *rate = form_get(&f, "rate", NULL);
    bool want_all = all && strcmp(all, "1") == 0, dry_run = dry && strcmp(dry, "1") == 0;
    if ((ids && *ids) == want_all) {
        http_json_error(r, 400, "give ids=1,2,3 or all=1 (with function= or topic= to narrow it), one of them");
        form_free(&f);
        return;
    }
    if (name_arg(r, "function", fn) != 0 || name_arg(r, "topic", tp) != 0) { form_free(&f); return; }
    double older_s = 0, rate_v = 0;
    char *end;
    if (older && *older && ((older_s = strtod(older, &end)) < 0 || *end)) {
        http_json_error(r, 400, "older_than: '%.40s' is not a number of seconds", older);
        form_free(&f);
        return;
    }
    if (rate && *rate && ((rate_v = strtod(rate, &end)) <= 0 || *end)) {
        http_json_error(r, 400, "rate: '%.40s' is not a positive number of replays per second", rate);
        form_free(&f);
        return;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    bool has_fn = fn && *fn, has_tp = tp && *tp;
    msgpack_pack_map(&pk, 2 + has_fn + has_tp + (older_s > 0) + (rate_v > 0));
    if (want_all) {
        pack_str(&pk, "all");
        msgpack_pack_true(&pk);
    } else {
        pack_str(&pk, "ids");
        if (pack_ids(&pk, ids, r) != 0) goto out;
    }
    if (has_fn) { pack_str(&pk, "function"); pack_str(&pk, fn); }
    if (has_tp) { pack_str(&pk, "topic"); pack_str(&pk, tp); }
    if (older_s > 0) { pack_str(&pk, "older_than"); msgpack_pack_int64(&pk, (int64_t)older_s); }
    if (rate_v > 0) { pack_str(&pk, "rate"); msgpack_pack_double(&pk, rate_v); }
    pack_str(&pk, "dry_run");
    if (dry_run) msgpack_pack_true(&pk);
    else msgpack_pack_false(&pk);
    call(g, r, replay ? "dlq.replay" : "dlq.purge", &sb, true);
out:
    msgpack_sbuffer_destroy(&sb);
    form_free(&f);
}

void console_serve(gw_t *g, gw_req *q, gw_resp *r)
{
    const char *p = q->path, *m = q->method;
    bool get = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0, post = strcmp(m, "POST") == 0;
    if (strncmp(p, CONSOLE_PREFIX, strlen(CONSOLE_PREFIX)) == 0) {
        if (!get) {
            http_header(r, "Allow", "GET, HEAD");
            http_json_error(r, 405, "%s takes GET", p);
        } else if (strcmp(p, CONSOLE_PREFIX) == 0) {   /* relative links need the slash */
            http_header(r, "Location", CONSOLE_PREFIX "/");
            http_text(r, 308, "text/plain", "see " CONSOLE_PREFIX "/\n");
        } else {
            serve_file(q, r);
        }
        return;
    }
    const char *api = p + strlen(API_PREFIX);
    bool write = strcmp(api, "dlq/replay") == 0 || strcmp(api, "dlq/purge") == 0;
    if (write != post) {
        http_header(r, "Allow", write ? "POST" : "GET, HEAD");
        http_json_error(r, 405, "%s takes %s", p, write ? "POST" : "GET");
        return;
    }
    if (write) dlq_write(g, q, api[4] == 'r', r);
    else if (strcmp(api, "stats") == 0) call(g, r, "stats", NULL, false);
    else if (strcmp(api, "schedules") == 0) call(g, r, "schedules", NULL, false);
    else if (strcmp(api, "dlq") == 0) dlq_list(g, q, r);
    else if (strncmp(api, "dlq/", 4) == 0) dlq_show(g, api + 4, r);
    else http_json_error(r, 404, "no route for %s (the API: /api/stats, /api/schedules, /api/dlq, /api/dlq/ID, "
                         "POST /api/dlq/replay, POST /api/dlq/purge)", p);
}
