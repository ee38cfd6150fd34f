/* metrics.c — GET /metrics: the broker's "stats" admin reply (the figures of
 * `heraldctl stats --json`, DESIGN §2) in the Prometheus text exposition
 * format 0.0.4, plus the gateway's own request counters.
 *
 * Counters (since the broker started) end in _total (the warm runtimes'
 * cold starts, init time, warm invocations and recycles by reason among
 * them); ready, delayed, inflight, dead and the worker figures are gauges;
 * durations are a summary
 * per function (quantiles 0.5 and 0.99 from the broker's histogram, _count =
 * invocations; no _sum: the stats reply has none). Every family has its
 * # HELP and # TYPE lines before its samples, even when it has no sample.
 * When the broker does not answer, the answer is still 200 with
 * herald_broker_up 0 and the gateway's counters: a scrape failure would say
 * the gateway is down, which it is not.
 */
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

#define STATS_TIMEOUT_MS 3000

/* A label value: \ " and newline escaped. */
static void label(FILE *out, const char *name, const msgpack_object *v)
{
    fprintf(out, "%s=\"", name);
    if (v && v->type == MSGPACK_OBJECT_STR) {
        for (uint32_t i = 0; i < v->via.str.size; i++) {
            char c = v->via.str.ptr[i];
            if (c == '\\') fputs("\\\\", out);
            else if (c == '"') fputs("\\\"", out);
            else if (c == '\n') fputs("\\n", out);
            else fputc(c, out);
        }
    }
    fputc('"', out);
}

static void value(FILE *out, const msgpack_object *v, double scale)
{
    if (!v) { fputs(" 0\n", out); return; }
    switch (v->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (scale == 1.0) fprintf(out, " %llu\n", (unsigned long long)v->via.u64);
        else fprintf(out, " %.10g\n", (double)v->via.u64 * scale);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        if (scale == 1.0) fprintf(out, " %lld\n", (long long)v->via.i64);
        else fprintf(out, " %.10g\n", (double)v->via.i64 * scale);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: fprintf(out, " %.10g\n", v->via.f64 * scale); break;
    default: fputs(" 0\n", out);
    }
}

static void family(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static uint32_t len_of(const msgpack_object *l)
{
    return l && l->type == MSGPACK_OBJECT_ARRAY ? l->via.array.size : 0;
}

/* One family over a list of maps: name{labels…} = row[key] × scale. */
static void rows(FILE *out, const msgpack_object *list, const char *name, const char *type, const char *help,
                 const char *const *labels, const char *const *label_keys, int nlabels, const char *key,
                 double scale)
{
    family(out, name, type, help);
    for (uint32_t i = 0; i < len_of(list); i++) {
        const msgpack_object *row = &list->via.array.ptr[i];
        fputs(name, out);
        fputc('{', out);
        for (int k = 0; k < nlabels; k++) {
            if (k) fputc(',', out);
            label(out, labels[k], mp_get(row, label_keys[k]));
        }
        fputc('}', out);
        value(out, mp_get(row, key), scale);
    }
}

static double num_of(const msgpack_object *v)
{
    if (!v) return 0;
    switch (v->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return (double)v->via.u64;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return v->via.f64;
    default: return 0;
    }
}

/* Warm runtimes (DESIGN §11): every function has these samples, 0 for exec
 * and native ones. The stats reply carries the mean init time; the total is
 * that mean times the cold starts. */
static void runtimes(FILE *out, const msgpack_object *f)
{
    static const char *const fn_l[] = { "function" }, *const name_k[] = { "name" };
    rows(out, f, "herald_function_cold_starts_total", "counter", "Runtime processes started (cold starts).", fn_l,
         name_k, 1, "cold_starts", 1.0);
    family(out, "herald_function_init_seconds_total", "counter",
           "Init time of the runtime processes started: from their start to their first /next.");
    for (uint32_t i = 0; i < len_of(f); i++) {
        const msgpack_object *row = &f->via.array.ptr[i];
        fputs("herald_function_init_seconds_total{", out);
        label(out, "function", mp_get(row, "name"));
        fprintf(out, "} %.10g\n", num_of(mp_get(row, "init_ms")) * num_of(mp_get(row, "cold_starts")) / 1000.0);
    }
    rows(out, f, "herald_function_warm_invocations_total", "counter",
         "Invocations served by an already initialized runtime process.", fn_l, name_k, 1, "warm", 1.0);
    family(out, "herald_function_recycles_total", "counter", "Runtime processes stopped, by reason.");
    for (uint32_t i = 0; i < len_of(f); i++) {
        const msgpack_object *row = &f->via.array.ptr[i], *r = mp_get(row, "recycles");
        for (uint32_t k = 0; r && r->type == MSGPACK_OBJECT_MAP && k < r->via.map.size; k++) {
            fputs("herald_function_recycles_total{", out);
            label(out, "function", mp_get(row, "name"));
            fputc(',', out);
            label(out, "reason", &r->via.map.ptr[k].key);
            fputc('}', out);
            value(out, &r->via.map.ptr[k].val, 1.0);
        }
    }
}

static int render(void *arg, const msgpack_object *st)
{
    FILE *out = arg;
    static const char *const topic_l[] = { "topic" }, *const name_k[] = { "name" };
    static const char *const sub_l[] = { "topic", "function" };
    static const char *const fn_l[] = { "function" };
    static const char *const w_l[] = { "worker", "host" }, *const w_k[] = { "id", "host" };
    family(out, "herald_broker_up", "gauge", "1 when the broker answered the gateway's stats request.");
    fputs("herald_broker_up 1\n", out);

    const msgpack_object *t = mp_get(st, "topics");
    rows(out, t, "herald_topic_published_total", "counter", "Events published to the topic (since the broker started).",
         topic_l, name_k, 1, "published", 1.0);

    const msgpack_object *s = mp_get(st, "subscriptions");
    static const struct { const char *key, *name, *type, *help; } subs[] = {
        { "ready", "herald_subscription_ready", "gauge", "Deliveries ready to run." },
        { "delayed", "herald_subscription_delayed", "gauge", "Deliveries waiting for their delay or retry backoff." },
        { "inflight", "herald_subscription_inflight", "gauge", "Deliveries leased to a worker now." },
        { "dead", "herald_subscription_dead", "gauge", "Dead letters of the subscription." },
        { "succeeded", "herald_subscription_succeeded_total", "counter", "Deliveries that succeeded." },
        { "failed", "herald_subscription_failed_total", "counter", "Attempts that failed." },
    };
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        rows(out, s, subs[i].name, subs[i].type, subs[i].help, sub_l, sub_l, 2, subs[i].key, 1.0);

    const msgpack_object *f = mp_get(st, "functions");
    static const struct { const char *key, *name, *help; } fns[] = {
        { "invocations", "herald_function_invocations_total", "Attempts run (events and invokes)." },
        { "errors", "herald_function_errors_total", "Attempts that ended in an error." },
        { "timeouts", "herald_function_timeouts_total", "Attempts killed at their timeout." },
        { "rejected", "herald_function_rejected_total", "Attempts that failed permanently (exit 65 / HERALD_REJECT)." },
        { "crashed", "herald_function_crashed_total", "Attempts killed by a signal." },
        { "lost", "herald_function_lost_total", "Attempts lost with their worker." },
        { "gb_seconds", "herald_function_gb_seconds_total", "Duration times memory, in GB-seconds." },
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        rows(out, f, fns[i].name, "counter", fns[i].help, fn_l, name_k, 1, fns[i].key, 1.0);
    family(out, "herald_function_duration_seconds", "summary",
           "Duration of the function's attempts (quantiles from the broker's log2 histogram).");
    for (uint32_t i = 0; i < len_of(f); i++) {
        const msgpack_object *row = &f->via.array.ptr[i];
        static const struct { const char *q, *key; } qs[] = { { "0.5", "p50_ms" }, { "0.99", "p99_ms" } };
        for (size_t k = 0; k < 2; k++) {
            fputs("herald_function_duration_seconds{", out);
            label(out, "function", mp_get(row, "name"));
            fprintf(out, ",quantile=\"%s\"}", qs[k].q);
            value(out, mp_get(row, qs[k].key), 0.001);
        }
        fputs("herald_function_duration_seconds_count{", out);
        label(out, "function", mp_get(row, "name"));
        fputc('}', out);
        value(out, mp_get(row, "invocations"), 1.0);
    }
    runtimes(out, f);

    const msgpack_object *w = mp_get(st, "workers");
    family(out, "herald_workers_connected", "gauge", "Workers connected to the broker.");
    fprintf(out, "herald_workers_connected %u\n", len_of(w));
    rows(out, w, "herald_worker_slots", "gauge", "Concurrent deliveries the worker takes.", w_l, w_k, 2, "slots", 1.0);
    rows(out, w, "herald_worker_busy", "gauge", "Deliveries the worker runs now.", w_l, w_k, 2, "busy", 1.0);

    const msgpack_object *rf = mp_get(st, "refused");
    family(out, "herald_refused_connections_total", "counter", "Connections refused by authentication, per endpoint.");
    static const char *const eps[] = { "publish", "worker", "admin" };
    for (size_t i = 0; i < 3; i++) {
        fprintf(out, "herald_refused_connections_total{endpoint=\"%s\"}", eps[i]);
        value(out, mp_get(rf, eps[i]), 1.0);
    }
    return 0;
}

void metrics_serve(gw_t *g, gw_req *q, gw_resp *r)
{
    (void)q;
    char *st = NULL, *buf = NULL;
    size_t st_len = 0, len = 0;
    FILE *sf = open_memstream(&st, &st_len);
    FILE *out = sf ? open_memstream(&buf, &len) : NULL;
    if (!out) {
        if (sf) fclose(sf);
        free(st);
        http_json_error(r, 500, "out of memory");
        return;
    }
    char err[512];
    int rc = pool_admin(g, "stats", STATS_TIMEOUT_MS, render, sf, err, sizeof err);
    fclose(sf);
    if (rc == 0) {
        fwrite(st, 1, st_len, out);
    } else {   /* a half-written stats part is dropped: the broker is up or down */
        fputs("# broker unreachable: ", out);
        for (const char *p = err; *p; p++) fputc(*p == '\n' ? ' ' : *p, out);
        fputc('\n', out);
        family(out, "herald_broker_up", "gauge", "1 when the broker answered the gateway's stats request.");
        fputs("herald_broker_up 0\n", out);
    }
    free(st);
    http_counts(g, out);
    fclose(out);
    http_take(r, 200, "text/plain; version=0.0.4; charset=utf-8", buf, len);
}
