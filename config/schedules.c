/* config/schedules.c: the `schedules` list (DESIGN §12).
 *
 *   schedules = ( { name; cron | rate | at; timezone; topic | function;
 *                   payload; attributes = { k = "v"; }; catch_up; starting_deadline; }, ... );
 *
 * Every expression is compiled here (sched/cron.c) and every zone read from
 * the system's tzdata (sched/tz.c), so that a mistake is a FILE:LINE error at
 * load, never a schedule that silently does not fire. Targets must exist:
 * functions and topics are checked before this list.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "../proto/proto.h"
#include "../sched/cron.h"

#define SCHEDULE_NAME_MAX 64   /* EventBridge Scheduler's limit */

static bool utf8_ok(const char *s, size_t n)
{
    for (size_t i = 0, k; i < n; i += k)
        if ((k = util_utf8_len((const unsigned char *)s + i, n - i)) == 0)
            return false;
    return true;
}

static void check_attributes(cfg_ctx *x, const config_setting_t *g, const char *label, cfg_schedule *s)
{
    int n = config_setting_length(g);
    if (n == 0)
        return;
    if (n > PROTO_MAX_ATTRS) {
        config_err(x, g, "%s: attributes: %d of them, an event carries at most %d", label, n, PROTO_MAX_ATTRS);
        return;
    }
    s->attrs = calloc((size_t)n, sizeof *s->attrs);
    if (!s->attrs) {
        x->oom = true;
        return;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(g, (unsigned)i);
        const char *k = config_setting_name(e);
        if (!proto_valid_attr_key(k)) {
            config_err(x, e, "%s: attributes.%s: not a valid attribute key ([A-Za-z0-9_.-], 1 to 128)", label, k);
            continue;
        }
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            config_err(x, e, "%s: attributes.%s: expected a string, not %s", label, k, cfg_type_name(e));
            continue;
        }
        const char *v = config_setting_get_string(e);
        size_t len = strlen(v);
        if (len > PROTO_ATTR_VALUE_MAX || !utf8_ok(v, len)) {
            config_err(x, e, "%s: attributes.%s: a value is valid UTF-8 of at most %d bytes", label, k,
                       PROTO_ATTR_VALUE_MAX);
            continue;
        }
        cfg_pair *p = &s->attrs[s->nattrs++];
        p->key = config_strdup(x, k);
        p->value = config_strdup(x, v);
    }
}

/* The one expression of cron, rate and at: compiled, and kept in its wrapped form. */
static void check_spec(cfg_ctx *x, const config_setting_t *g, const char *label, scope *sc, cfg_schedule *s)
{
    static const char *const kinds[] = { "cron", "rate", "at" };
    const config_setting_t *given = NULL;
    int kind = -1;
    for (int k = 0; k < 3; k++) {
        const config_setting_t *e = config_setting_get_member(g, kinds[k]);
        if (!e)
            continue;
        if (given) {
            config_err(x, e, "%s: has both %s and %s: a schedule is one of cron, rate or at", label, kinds[kind],
                       kinds[k]);
            return;
        }
        given = e;
        kind = k;
    }
    if (!given) {
        config_err(x, g, "%s: needs one of cron = \"MIN HOUR DOM MONTH DOW YEAR\", rate = \"N minutes\" or "
                   "at = \"YYYY-MM-DDTHH:MM:SS\"", label);
        return;
    }
    const char *expr;
    if (cfg_get_str(x, g, sc, kinds[kind], true, &expr) != 1)
        return;
    cron_t c;
    char why[256];
    int rc = kind == 0 ? cron_parse_cron(expr, &c, why, sizeof why)
             : kind == 1 ? cron_parse_rate(expr, &c, why, sizeof why)
                         : cron_parse_at(expr, &c, why, sizeof why);
    if (rc != 0) {
        char q[QUOTE_MAX * 4 + 8];
        size_t kl = strlen(kinds[kind]);   /* "rate: ..." after `rate "…":` says rate twice */
        const char *w = strncmp(why, kinds[kind], kl) == 0 && why[kl] == ':' && why[kl + 1] == ' ' ? why + kl + 2 : why;
        config_err(x, given, "%s: %s \"%s\": %s", label, kinds[kind], cfg_quote(expr, q, sizeof q), w);
        return;
    }
    size_t len = strlen(kinds[kind]) + strlen(expr) + 3;
    s->spec = malloc(len);
    if (!s->spec) {
        x->oom = true;
        return;
    }
    snprintf(s->spec, len, "%s(%s)", kinds[kind], expr);
}

static void check_target(cfg_ctx *x, const config_setting_t *g, const char *label, scope *sc, cfg_schedule *s)
{
    const char *topic = NULL, *function = NULL;
    int rt = cfg_get_str(x, g, sc, "topic", true, &topic);
    int rf = cfg_get_str(x, g, sc, "function", true, &function);
    if (rt == 1 && rf == 1) {
        config_err(x, config_setting_get_member(g, "function"),
                   "%s: has both topic and function: a schedule publishes to a topic or invokes a function", label);
        return;
    }
    if (rt == 0 && rf == 0) {
        config_err(x, g, "%s: needs a target: topic = \"...\" (a publish) or function = \"...\" (an Event invoke)",
                   label);
        return;
    }
    char q[QUOTE_MAX * 4 + 8];
    if (rt == 1) {
        if (!config_topic(x->c, topic))
            config_err(x, config_setting_get_member(g, "topic"), "%s: topic '%s' is not defined in topics", label,
                       cfg_quote(topic, q, sizeof q));
        else
            s->topic = config_strdup(x, topic);
    }
    if (rf == 1) {
        if (!config_function(x->c, function))
            config_err(x, config_setting_get_member(g, "function"), "%s: function '%s' is not defined in functions",
                       label, cfg_quote(function, q, sizeof q));
        else
            s->function = config_strdup(x, function);
    }
}

static void check_schedule(cfg_ctx *x, const config_setting_t *g, size_t idx, cfg_schedule *s)
{
    static const char *const known[] = { "name", "cron", "rate", "at", "timezone", "topic", "function", "payload",
                                         "attributes", "catch_up", "starting_deadline", NULL };
    s->line = config_setting_source_line(g);
    if (!config_setting_is_group(g)) {
        config_err(x, g, "schedules[%zu]: expected a group { name = \"...\"; rate = \"5 minutes\"; topic = \"...\"; }, "
                   "not %s", idx, cfg_type_name(g));
        return;
    }
    char label[200];
    scope sc;
    cfg_named_group(x, g, "schedules", idx, known, &s->name, label, sizeof label, &sc);
    if (s->name && strlen(s->name) > SCHEDULE_NAME_MAX) {
        config_err(x, config_setting_get_member(g, "name"), "%s: name is longer than %d bytes", label,
                   SCHEDULE_NAME_MAX);
        free(s->name);
        s->name = NULL;
    }
    check_spec(x, g, label, &sc, s);
    check_target(x, g, label, &sc, s);

    const char *zone = "UTC";
    if (cfg_get_str(x, g, &sc, "timezone", true, &zone) >= 0) {
        char why[256];
        tz_t *z = tz_load(zone, why, sizeof why);
        if (!z)
            config_err(x, config_setting_get_member(g, "timezone"), "%s: timezone: %s", label, why);
        else
            s->timezone = config_strdup(x, zone);
        tz_destroy(&z);
    }

    const char *payload;
    if (cfg_get_str(x, g, &sc, "payload", false, &payload) == 1) {
        if ((int64_t)strlen(payload) > x->c->broker.max_payload)
            config_err(x, config_setting_get_member(g, "payload"),
                       "%s: payload: %zu bytes, larger than broker.max_payload (%lld)", label, strlen(payload),
                       (long long)x->c->broker.max_payload);
        else
            s->payload = config_strdup(x, payload);
    }
    const config_setting_t *attrs = cfg_get_group(x, g, &sc, "attributes", "a group { key = \"value\"; }");
    if (attrs)
        check_attributes(x, attrs, label, s);

    const char *cu;
    if (cfg_get_str(x, g, &sc, "catch_up", true, &cu) == 1) {
        if (strcmp(cu, "latest") == 0)
            s->catch_up = CATCH_UP_LATEST;
        else if (strcmp(cu, "none") == 0)
            s->catch_up = CATCH_UP_NONE;
        else if (strcmp(cu, "all") == 0)
            s->catch_up = CATCH_UP_ALL;
        else {
            char q[QUOTE_MAX * 4 + 8];
            config_err(x, config_setting_get_member(g, "catch_up"),
                       "%s: catch_up: '%s' is not one of latest, none, all", label, cfg_quote(cu, q, sizeof q));
        }
    }
    cfg_get_num(x, g, &sc, "starting_deadline", "a number of seconds", 0, true, 366.0 * 86400,
                &s->starting_deadline_s);
}

void config_check_schedules(cfg_ctx *x, const config_setting_t *s)
{
    scope sc = { "", "" };
    if (!s)
        return;
    int n = cfg_get_list(x, s, &sc, "schedules", "a list ( { name = ...; rate = ...; topic = ...; }, ... )");
    if (n <= 0)
        return;
    x->c->schedules = calloc((size_t)n, sizeof *x->c->schedules);
    if (!x->c->schedules) {
        x->oom = true;
        return;
    }
    x->c->nschedules = (size_t)n;
    for (int i = 0; i < n; i++) {
        cfg_schedule *e = &x->c->schedules[i];
        check_schedule(x, config_setting_get_elem(s, (unsigned)i), (size_t)i, e);
        for (int j = 0; e->name && j < i; j++)
            if (x->c->schedules[j].name && strcmp(x->c->schedules[j].name, e->name) == 0) {
                config_err(x, config_setting_get_member(config_setting_get_elem(s, (unsigned)i), "name"),
                           "schedules[%d]: name '%s' is already used by schedules[%d] (line %d)", i, e->name, j,
                           x->c->schedules[j].line);
                break;
            }
    }
}

void config_free_schedule(cfg_schedule *s)
{
    free(s->name);
    free(s->spec);
    free(s->timezone);
    free(s->topic);
    free(s->function);
    free(s->payload);
    for (size_t i = 0; i < s->nattrs; i++) {
        free(s->attrs[i].key);
        free(s->attrs[i].value);
    }
    free(s->attrs);
}
