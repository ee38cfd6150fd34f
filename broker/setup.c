/* setup.c — from a loaded config to the broker's functions, topics and
 * subscriptions (each subscription bound to its row in `subs`), at start and
 * again on SIGHUP.
 *
 * Every function also gets a queue of its own with topic "" (async invoke:
 * deliveries stored for the function itself). Subscriptions are kept in one
 * array (b->subs) that dispatch walks for fairness.
 *
 * A reload keeps what is running: a subscription present in both configs keeps
 * its sub_t (its in-memory window, its leases, its counters) and a function
 * keeps its counters; only their settings are repointed at the new config. The
 * reload is refused — the running config stays — when it would remove a
 * subscription or function that still has ready, delayed or in-flight
 * deliveries, or change what needs a restart (endpoints, data_dir, durability).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"

static sub_t *sub_new(broker_t *b, const char *topic, function_t *fn, const cfg_subscription *cfg)
{
    sub_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->topic = strdup(topic);
    s->fn = fn;
    s->cfg = cfg;
    list_init(&s->ready);
    s->id = store_sub_id(&b->store, topic, fn->name);
    if (!s->topic || s->id < 0) { free(s->topic); free(s); return NULL; }
    return s;
}

static void sub_free(broker_t *b, sub_t *s)
{
    list_node *n;
    while ((n = list_pop_front(&s->ready)) != NULL) delivery_free(b, container_of(n, delivery_t, link));
    for (size_t i = 0; i < b->ntimers;) {   /* none when its counts were right; never left dangling */
        delivery_t *d = b->timers[i];
        if (d->sub != s) { i++; continue; }
        timers_remove(b, d);
        delivery_free(b, d);
    }
    free(s->topic);
    free(s);
}

/* The subscription (topic, function) among the old ones, taken out of the
 * array so it is not freed; NULL if it is new. */
static sub_t *take_old(sub_t **old, size_t nold, const char *topic, const char *function)
{
    for (size_t i = 0; i < nold; i++)
        if (old[i] && strcmp(old[i]->topic, topic) == 0 && strcmp(old[i]->fn->name, function) == 0) {
            sub_t *s = old[i];
            old[i] = NULL;
            return s;
        }
    return NULL;
}

/* Builds b's functions, topics and subs from cfg, reusing the old ones by
 * name; on reload, counts the rows of the subs it creates. On failure b is
 * unchanged (-1). */
static int build(broker_t *b, herald_config *cfg, bool reload)
{
    size_t nf = cfg->nfunctions, nt = cfg->ntopics, total = nf;
    for (size_t i = 0; i < nt; i++) total += cfg->topics[i].nsubs;
    function_t *fns = calloc(nf ? nf : 1, sizeof *fns);
    topic_t *tps = calloc(nt ? nt : 1, sizeof *tps);
    sub_t **subs = calloc(total ? total : 1, sizeof *subs);
    sub_t **fresh = calloc(total ? total : 1, sizeof *fresh);   /* created here: freed on failure */
    size_t nsubs = 0, nfresh = 0;
    if (!fns || !tps || !subs || !fresh) goto fail;
    for (size_t i = 0; i < nf; i++) {
        function_t *old = broker_function(b, cfg->functions[i].name);
        if (old) fns[i] = *old;   /* counters and running leases carry over */
        fns[i].name = cfg->functions[i].name;
        fns[i].cfg = &cfg->functions[i];
        fns[i].index = (int)i;
    }
    /* which old sub becomes which new one: decided before anything moves */
    sub_t **old = calloc(b->nsubs ? b->nsubs : 1, sizeof *old);
    if (!old) goto fail;
    if (b->nsubs) memcpy(old, b->subs, b->nsubs * sizeof *old);
    for (size_t i = 0; i < nt; i++) {
        const cfg_topic *ct = &cfg->topics[i];
        tps[i].name = ct->name;
        tps[i].subs = calloc(ct->nsubs ? ct->nsubs : 1, sizeof *tps[i].subs);
        topic_t *ot = broker_topic(b, ct->name);
        if (ot) tps[i].published = ot->published;
        if (!tps[i].subs) { free(old); goto fail; }
        for (size_t j = 0; j < ct->nsubs; j++) {
            function_t *fn = NULL;
            for (size_t k = 0; k < nf; k++)
                if (strcmp(fns[k].name, ct->subs[j].function) == 0) fn = &fns[k];
            sub_t *s = take_old(old, b->nsubs, ct->name, ct->subs[j].function);
            if (!s) {
                s = fn ? sub_new(b, ct->name, fn, &ct->subs[j]) : NULL;
                if (!s) { free(old); goto fail; }
                fresh[nfresh++] = s;
            }
            s->cfg = &ct->subs[j];
            tps[i].subs[tps[i].nsubs++] = s;
            subs[nsubs++] = s;
        }
    }
    for (size_t k = 0; k < nf; k++) {
        sub_t *s = take_old(old, b->nsubs, "", fns[k].name);
        if (!s) {
            s = sub_new(b, "", &fns[k], NULL);
            if (!s) { free(old); goto fail; }
            fresh[nfresh++] = s;
        }
        subs[nsubs++] = s;
    }
    /* commit: repoint every kept sub at its new function, free the dropped */
    for (size_t i = 0; i < nsubs; i++)
        for (size_t k = 0; k < nf; k++)
            if (strcmp(fns[k].name, subs[i]->fn->name) == 0) subs[i]->fn = &fns[k];
    for (size_t i = 0; i < b->nsubs; i++)
        if (old[i]) sub_free(b, old[i]);
    free(old);
    /* a subscription (re)created here may find rows of an earlier life:
     * counted now, read into its windows by the next refill */
    for (size_t i = 0; reload && i < nfresh; i++)
        if (store_count_sub(&b->store, b, fresh[i]) != 0)
            LOG_ERROR("counting the rows of %s → %s: %s", fresh[i]->topic, fresh[i]->fn->name,
                      sqlite3_errmsg(b->store.db));
    for (size_t i = 0; i < b->ntopics; i++) free(b->topics[i].subs);
    free(b->topics);
    free(b->functions);
    free(b->subs);
    free(fresh);
    b->functions = fns; b->nfunctions = nf;
    b->topics = tps; b->ntopics = nt;
    b->subs = subs; b->nsubs = nsubs;
    b->dispatch_rr = 0;
    b->cfg = cfg;
    return 0;
fail:
    for (size_t i = 0; i < nfresh; i++) sub_free(b, fresh[i]);
    for (size_t i = 0; tps && i < nt; i++) free(tps[i].subs);
    free(fresh); free(subs); free(tps); free(fns);
    return -1;
}

int broker_setup(broker_t *b, herald_config *cfg)
{
    return build(b, cfg, false);   /* main counts every queue next (store_counts) */
}

/* What a reload cannot change without a restart. */
static int restart_only(const cfg_broker *a, const cfg_broker *n, char *why, size_t len)
{
    const char *what = strcmp(a->publish_endpoint, n->publish_endpoint) ? "publish_endpoint"
                       : strcmp(a->worker_endpoint, n->worker_endpoint) ? "worker_endpoint"
                       : strcmp(a->admin_endpoint, n->admin_endpoint)   ? "admin_endpoint"
                       : strcmp(a->data_dir, n->data_dir)               ? "data_dir"
                       : a->durability != n->durability                 ? "durability"
                                                                        : NULL;
    if (what) snprintf(why, len, "broker.%s changed: that needs a restart", what);
    return what ? -1 : 0;
}

int broker_reload(broker_t *b)
{
    char *errs = NULL, why[1024];
    herald_config *nc = config_load(b->cfg->path, &errs);
    if (!nc) {
        LOG_ERROR("SIGHUP: %s is refused, the running config stays:\n%s", b->cfg->path, errs ? errs : "");
        free(errs);
        return -1;
    }
    free(errs);
    if (restart_only(&b->cfg->broker, &nc->broker, why, sizeof why) != 0) goto refuse;
    bool curve = nc->security.present && nc->security.curve;
    if (curve != b->auth.on ||
        (curve && strcmp(nc->security.secret_key, b->cfg->security.secret_key) != 0)) {
        snprintf(why, sizeof why, "security.curve or secret_key changed: that needs a restart");
        goto refuse;
    }

    /* a subscription (or a function's own queue) that goes away must be empty */
    for (size_t i = 0; i < b->nsubs; i++) {
        sub_t *s = b->subs[i];
        bool kept = false;
        if (!s->topic[0]) {
            kept = config_function(nc, s->fn->name) != NULL;
        } else {
            const cfg_topic *t = config_topic(nc, s->topic);
            for (size_t j = 0; t && j < t->nsubs && !kept; j++) kept = strcmp(t->subs[j].function, s->fn->name) == 0;
        }
        if (kept || (s->queued == 0 && s->delayed == 0 && s->inflight == 0 && s->ready.n == 0 && s->dmem == 0))
            continue;
        if (s->topic[0])
            snprintf(why, sizeof why, "it removes subscription %s → %s, which still has %lld ready, %lld delayed, "
                     "%lld in flight", s->topic, s->fn->name, (long long)(s->queued - s->inflight),
                     (long long)s->delayed, (long long)s->inflight);
        else
            snprintf(why, sizeof why, "it removes function %s, whose own queue still has %lld ready, "
                     "%lld delayed, %lld in flight", s->fn->name, (long long)(s->queued - s->inflight),
                     (long long)s->delayed, (long long)s->inflight);
        goto refuse;
    }
    /* workers keep serving the functions they asked for, by name */
    size_t nw = 0;
    for (list_node *n = b->workers.head.next; n != &b->workers.head; n = n->next) nw++;
    bool **serves = calloc(nw ? nw : 1, sizeof *serves);
    if (!serves) { snprintf(why, sizeof why, "out of memory"); goto refuse; }
    size_t k = 0;
    for (list_node *n = b->workers.head.next; n != &b->workers.head; n = n->next, k++) {
        worker_t *w = container_of(n, worker_t, link);
        if (!w->serves) continue;
        serves[k] = calloc(nc->nfunctions ? nc->nfunctions : 1, sizeof **serves);
        if (!serves[k]) { snprintf(why, sizeof why, "out of memory"); goto refuse_serves; }
        for (size_t i = 0; i < b->nfunctions; i++)
            for (size_t j = 0; w->serves[i] && j < nc->nfunctions; j++)
                if (strcmp(b->functions[i].name, nc->functions[j].name) == 0) serves[k][j] = true;
    }
    /* adding or removing a .pub takes effect for new connections */
    if (curve && auth_load(b, &nc->security, why, sizeof why) != 0) goto refuse_serves;
    herald_config *old = b->cfg;
    if (build(b, nc, true) != 0) { snprintf(why, sizeof why, "out of memory"); goto refuse_serves; }
    k = 0;
    for (list_node *n = b->workers.head.next; n != &b->workers.head; n = n->next, k++) {
        worker_t *w = container_of(n, worker_t, link);
        if (!w->serves) continue;
        free(w->serves);
        w->serves = serves[k];
    }
    free(serves);
    b->heartbeat_ms = (int64_t)(nc->broker.heartbeat_s * 1000.0 + 0.5);
    schedules_reload(b, nc);   /* before the old config goes: the schedules point into it */
    config_destroy(&old);
    workers_send_config(b);   /* new definitions for every worker */
    size_t nsubs = 0;
    for (size_t i = 0; i < nc->ntopics; i++) nsubs += nc->topics[i].nsubs;
    LOG_INFO("SIGHUP: reloaded %s: %zu functions, %zu topics, %zu subscriptions, %zu schedules", nc->path,
             nc->nfunctions, nc->ntopics, nsubs, nc->nschedules);
    return 0;
refuse_serves:
    for (size_t i = 0; i < nw; i++) free(serves[i]);
    free(serves);
refuse:
    LOG_ERROR("SIGHUP: reload of %s refused, the running config stays: %s", nc->path, why);
    config_destroy(&nc);
    return -1;
}

void broker_teardown(broker_t *b)
{
    invoke_teardown(b);   /* first: in-flight invokes point at leases freed below */
    admin_teardown(b);
    list_node *n;
    while ((n = list_pop_front(&b->workers)) != NULL) {
        worker_t *w = container_of(n, worker_t, link);
        while ((n = list_pop_front(&w->leases)) != NULL) delivery_free(b, container_of(n, delivery_t, link));
        worker_free(w);
    }
    for (size_t i = 0; i < b->ntimers; i++) delivery_free(b, b->timers[i]);
    free(b->timers);
    b->timers = NULL;
    b->ntimers = b->timers_cap = 0;
    for (size_t i = 0; i < b->nsubs; i++) sub_free(b, b->subs[i]);
    for (size_t i = 0; i < b->ntopics; i++) free(b->topics[i].subs);
    free(b->subs); free(b->topics); free(b->functions);
    b->subs = NULL; b->topics = NULL; b->functions = NULL;
    b->nsubs = b->ntopics = b->nfunctions = 0;
    lease_map_free(&b->leases);
}

function_t *broker_function(broker_t *b, const char *name)
{
    for (size_t i = 0; i < b->nfunctions; i++)
        if (strcmp(b->functions[i].name, name) == 0) return &b->functions[i];
    return NULL;
}

topic_t *broker_topic(broker_t *b, const char *name)
{
    for (size_t i = 0; i < b->ntopics; i++)
        if (strcmp(b->topics[i].name, name) == 0) return &b->topics[i];
    return NULL;
}
