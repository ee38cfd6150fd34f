/* setup.c — from a loaded config to the broker's functions, topics and
 * subscriptions (each subscription bound to its row in `subs`), and back.
 *
 * Every function also gets a queue of its own with topic "" (async invoke:
 * deliveries stored for the function itself). Subscriptions are kept in one
 * fixed array (b->subs) that dispatch walks for fairness.
 */
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

int broker_setup(broker_t *b, herald_config *cfg)
{
    b->cfg = cfg;
    b->nfunctions = cfg->nfunctions;
    b->functions = calloc(cfg->nfunctions ? cfg->nfunctions : 1, sizeof *b->functions);
    b->ntopics = cfg->ntopics;
    b->topics = calloc(cfg->ntopics ? cfg->ntopics : 1, sizeof *b->topics);
    size_t total = cfg->nfunctions;
    for (size_t i = 0; i < cfg->ntopics; i++) total += cfg->topics[i].nsubs;
    b->subs = calloc(total ? total : 1, sizeof *b->subs);
    if (!b->functions || !b->topics || !b->subs) return -1;
    for (size_t i = 0; i < cfg->nfunctions; i++) {
        b->functions[i].name = cfg->functions[i].name;
        b->functions[i].cfg = &cfg->functions[i];
        b->functions[i].index = (int)i;
    }
    for (size_t i = 0; i < cfg->ntopics; i++) {
        const cfg_topic *ct = &cfg->topics[i];
        topic_t *t = &b->topics[i];
        t->name = ct->name;
        t->subs = calloc(ct->nsubs ? ct->nsubs : 1, sizeof *t->subs);
        if (!t->subs) return -1;
        for (size_t j = 0; j < ct->nsubs; j++) {
            function_t *fn = broker_function(b, ct->subs[j].function);
            sub_t *s = fn ? sub_new(b, ct->name, fn, &ct->subs[j]) : NULL;
            if (!s) return -1;
            t->subs[t->nsubs++] = s;
            b->subs[b->nsubs++] = s;
        }
    }
    for (size_t i = 0; i < b->nfunctions; i++) {
        sub_t *s = sub_new(b, "", &b->functions[i], NULL);
        if (!s) return -1;
        b->subs[b->nsubs++] = s;
    }
    return 0;
}

static void drop_list(broker_t *b, list_t *l)
{
    list_node *n;
    while ((n = list_pop_front(l)) != NULL) delivery_free(b, container_of(n, delivery_t, link));
}

void broker_teardown(broker_t *b)
{
    list_node *n;
    while ((n = list_pop_front(&b->workers)) != NULL) {
        worker_t *w = container_of(n, worker_t, link);
        drop_list(b, &w->leases);
        free(w->id); free(w->host); free(w->serves); free(w);
    }
    for (size_t i = 0; i < b->ntimers; i++) delivery_free(b, b->timers[i]);
    free(b->timers);
    b->timers = NULL;
    b->ntimers = b->timers_cap = 0;
    for (size_t i = 0; i < b->nsubs; i++) {
        drop_list(b, &b->subs[i]->ready);
        free(b->subs[i]->topic);
        free(b->subs[i]);
    }
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
