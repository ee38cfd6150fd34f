/* config/sources.c: checks the `sources` list (DESIGN §12, docs/SOURCES.md)
 * and fills herald_config.sources.
 *
 * sources = ( { name = "photos"; type = "fs"; path = "/srv/photos"; bucket = "photos";
 *               topic = "uploads"; recursive = true;
 *               events = ["ObjectCreated:*", "ObjectRemoved:*"];
 *               prefix = ""; suffix = ".jpg"; ignore = [".*.swp", "*~", "4913"];
 *               rescan = 300.0; region = "us-east-1";
 *               broker = "tcp://127.0.0.1:7710"; key = "…"; broker_key = "…";
 *               state_dir = "…"; } );
 *
 * The same rules as check.c: every setting name known, every value of its
 * type and range or a FILE:LINE error, an absent one its default. The getters
 * here are this file's own (check.c keeps its helpers static), so the two
 * files change independently. Defaults that depend on other groups (broker,
 * state_dir) are taken from x->c, so this runs after the broker group.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <math.h> /* isfinite only: a macro, no libm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "../proto/proto.h"

/* A week: a rescan less often than that is no safety net; and it becomes ms. */
#define RESCAN_MAX_S (7 * 86400.0)
#define RESCAN_DEFAULT_S 300.0
#define QUOTE_MAX 64

/* What an editor leaves beside the file it saves: vim's swap files and its
 * write test ("4913"), backups ending in '~', emacs lock files. */
static const char *const default_ignore[] = { ".*.swp", ".*.swx", "*~", "4913", ".#*", NULL };

static const char *const known[] = { "name", "type", "path", "bucket", "topic", "recursive", "events",
                                     "prefix", "suffix", "ignore", "rescan", "region", "broker", "key",
                                     "broker_key", "state_dir", NULL };

/* A string member: 0 absent, 1 read (*out borrowed), -1 reported. */
static int get_str(cfg_ctx *x, const config_setting_t *g, const char *label, const char *key, bool nonempty,
                   const char **out)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (!s)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        config_err(x, s, "%s: %s: expected a string, not %s", label, key, cfg_type_name(s));
        return -1;
    }
    const char *v = config_setting_get_string(s);
    if (nonempty && !*v) {
        config_err(x, s, "%s: %s: must not be empty", label, key);
        return -1;
    }
    *out = v;
    return 1;
}

static void take_str(cfg_ctx *x, const config_setting_t *g, const char *label, const char *key, char **dst)
{
    const char *v;
    if (get_str(x, g, label, key, false, &v) == 1) {
        free(*dst);
        *dst = config_strdup(x, v);
    }
}

static void take_path(cfg_ctx *x, const config_setting_t *g, const char *label, const char *key, char **dst)
{
    const char *v;
    if (get_str(x, g, label, key, true, &v) == 1) {
        free(*dst);
        *dst = config_resolve(x, v);
    }
}

/* S3's rule for bucket names: 3-63 of a-z 0-9 . -, a letter or digit at
 * each end (they go into ARNs and handlers' URLs unchanged). */
static bool bucket_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > 63 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        return false;
    for (; *s; s++)
        if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '.' && *s != '-')
            return false;
    return true;
}

/* events = [...]: S3's event type names (with or without "s3:"). */
static unsigned event_bit(const char *v)
{
    if (strncmp(v, "s3:", 3) == 0)
        v += 3;
    if (strcmp(v, "ObjectCreated:*") == 0 || strcmp(v, "ObjectCreated:Put") == 0)
        return SOURCE_EV_CREATED;
    if (strcmp(v, "ObjectRemoved:*") == 0 || strcmp(v, "ObjectRemoved:Delete") == 0)
        return SOURCE_EV_REMOVED;
    return 0;
}

/* A list of strings (or one bare string), copied; -1 when reported. */
static int get_strings(cfg_ctx *x, const config_setting_t *s, const char *label, const char *key, char ***out,
                       size_t *nout)
{
    bool one = config_setting_type(s) == CONFIG_TYPE_STRING;
    if (!one && !config_setting_is_array(s) && !config_setting_is_list(s)) {
        config_err(x, s, "%s: %s: expected a list of strings, not %s", label, key, cfg_type_name(s));
        return -1;
    }
    int n = one ? 1 : config_setting_length(s);
    for (int i = 0; !one && i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            config_err(x, e, "%s: %s[%d]: expected a string, not %s", label, key, i, cfg_type_name(e));
            return -1;
        }
    }
    char **v = calloc((size_t)n + 1, sizeof *v);
    if (!v) {
        x->oom = true;
        return -1;
    }
    for (int i = 0; i < n; i++)
        v[i] = config_strdup(x, one ? config_setting_get_string(s) : config_setting_get_string_elem(s, (unsigned)i));
    *out = v;
    *nout = (size_t)n;
    return 0;
}

/* The broker a source reaches by default: this file's publish endpoint, a
 * wildcard bind address (host '*') read as this machine. */
static char *default_broker(cfg_ctx *x)
{
    const char *ep = x->c->broker.publish_endpoint ? x->c->broker.publish_endpoint : "tcp://127.0.0.1:7710";
    const char *star = strstr(ep, "://*:");
    if (!star)
        return config_strdup(x, ep);
    char buf[512];
    snprintf(buf, sizeof buf, "%.*s://127.0.0.1:%s", (int)(star - ep), ep, star + 5);
    return config_strdup(x, buf);
}

static void check_events(cfg_ctx *x, const config_setting_t *g, const char *label, cfg_source *src)
{
    const config_setting_t *s = config_setting_get_member(g, "events");
    if (!s)
        return;
    char **v = NULL;
    size_t n = 0;
    if (get_strings(x, s, label, "events", &v, &n) < 0)
        return;
    unsigned bits = 0;
    for (size_t i = 0; i < n; i++) {
        char q[QUOTE_MAX * 4 + 8];
        unsigned b = v[i] ? event_bit(v[i]) : 0;
        if (!b && v[i])
            config_err(x, config_setting_type(s) == CONFIG_TYPE_STRING ? s : config_setting_get_elem(s, (unsigned)i),
                       "%s: events: '%s' is not one of ObjectCreated:*, ObjectCreated:Put, ObjectRemoved:*, "
                       "ObjectRemoved:Delete", label, cfg_quote(v[i], q, sizeof q));
        bits |= b;
        free(v[i]);
    }
    free(v);
    if (n == 0)
        config_err(x, s, "%s: events: an empty list would announce nothing", label);
    else if (bits)
        src->events = bits;
}

static void check_ignore(cfg_ctx *x, const config_setting_t *g, const char *label, cfg_source *src)
{
    const config_setting_t *s = config_setting_get_member(g, "ignore");
    if (!s) {
        size_t n = 0;
        while (default_ignore[n])
            n++;
        src->ignore = calloc(n + 1, sizeof *src->ignore);
        if (!src->ignore) {
            x->oom = true;
            return;
        }
        for (size_t i = 0; i < n; i++)
            src->ignore[i] = config_strdup(x, default_ignore[i]);
        src->nignore = n;
        return;
    }
    if (config_setting_is_array(s) && config_setting_length(s) == 0)
        return;   /* ignore = []: nothing ignored */
    if (get_strings(x, s, label, "ignore", &src->ignore, &src->nignore) < 0)
        return;
    for (size_t i = 0; i < src->nignore; i++)
        if (src->ignore[i] && !src->ignore[i][0])
            config_err(x, config_setting_type(s) == CONFIG_TYPE_STRING ? s : config_setting_get_elem(s, (unsigned)i),
                       "%s: ignore[%zu]: an empty pattern", label, i);
}

static void check_source(cfg_ctx *x, const config_setting_t *g, size_t idx, cfg_source *src)
{
    char label[200], q[QUOTE_MAX * 4 + 8];
    snprintf(label, sizeof label, "sources[%zu]", idx);
    src->line = config_setting_source_line(g);
    if (!config_setting_is_group(g)) {
        config_err(x, g, "%s: expected a group { name = ...; type = \"fs\"; ... }, not %s", label, cfg_type_name(g));
        return;
    }
    const char *v;
    if (get_str(x, g, label, "name", true, &v) == 1) {
        if (!proto_valid_name(v))
            config_err(x, config_setting_get_member(g, "name"), "%s: name: '%s' is not 1 to 128 of A-Z a-z 0-9 _ . -",
                       label, cfg_quote(v, q, sizeof q));
        else
            src->name = config_strdup(x, v);
    } else if (!config_setting_get_member(g, "name")) {
        config_err(x, g, "%s: name is missing", label);
    }
    if (src->name)
        snprintf(label, sizeof label, "sources[%zu] (%s)", idx, src->name);
    for (int i = 0; i < config_setting_length(g); i++) {
        const config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
        const char *mn = config_setting_name(m);
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++)
            ok = strcmp(*k, mn) == 0;
        if (!ok)
            config_err(x, m, "%s: unknown setting '%s' (known: name, type, path, bucket, topic, recursive, events, "
                       "prefix, suffix, ignore, rescan, region, broker, key, broker_key, state_dir)", label, mn);
    }
    int r = get_str(x, g, label, "type", true, &v);
    if (r == 0)
        config_err(x, g, "%s: type is missing (type = \"fs\": a watched directory)", label);
    else if (r == 1 && strcmp(v, "fs") != 0)
        config_err(x, config_setting_get_member(g, "type"), "%s: type: '%s' is not a known source type (fs)", label,
                   cfg_quote(v, q, sizeof q));
    else if (r == 1)
        src->type = config_strdup(x, v);
    take_path(x, g, label, "path", &src->path);
    if (!config_setting_get_member(g, "path"))
        config_err(x, g, "%s: path is missing (the directory to watch)", label);
    r = get_str(x, g, label, "bucket", true, &v);
    if (r == 1 && !bucket_ok(v))
        config_err(x, config_setting_get_member(g, "bucket"),
                   "%s: bucket: '%s' is not an S3 bucket name (3 to 63 of a-z 0-9 . -, a letter or digit at each end)",
                   label, cfg_quote(v, q, sizeof q));
    else if (r == 1)
        src->bucket = config_strdup(x, v);
    else if (r == 0)
        config_err(x, g, "%s: bucket is missing (the bucket name events carry)", label);
    r = get_str(x, g, label, "topic", true, &v);
    if (r == 0) {
        config_err(x, g, "%s: topic is missing (where the events are published)", label);
    } else if (r == 1) {
        const config_setting_t *ts = config_setting_get_member(g, "topic");
        if (!proto_valid_name(v))
            config_err(x, ts, "%s: topic: '%s' is not a valid topic name", label, cfg_quote(v, q, sizeof q));
        else if (x->c->ntopics && !config_topic(x->c, v))   /* only a file with topics can tell a typo */
            config_err(x, ts, "%s: topic: unknown topic '%s'", label, v);
        else
            src->topic = config_strdup(x, v);
    }
    const config_setting_t *s = config_setting_get_member(g, "recursive");
    if (s && config_setting_type(s) != CONFIG_TYPE_BOOL)
        config_err(x, s, "%s: recursive: expected true or false, not %s", label, cfg_type_name(s));
    else if (s)
        src->recursive = config_setting_get_bool(s) != 0;
    check_events(x, g, label, src);
    take_str(x, g, label, "prefix", &src->prefix);
    take_str(x, g, label, "suffix", &src->suffix);
    check_ignore(x, g, label, src);
    if ((s = config_setting_get_member(g, "rescan"))) {
        bool integer = config_setting_type(s) == CONFIG_TYPE_INT || config_setting_type(s) == CONFIG_TYPE_INT64;
        double d = integer ? (double)config_setting_get_int64(s)
                 : config_setting_type(s) == CONFIG_TYPE_FLOAT ? config_setting_get_float(s) : -1;
        if (!config_setting_is_number(s)) {
            config_err(x, s, "%s: rescan: expected a number of seconds, not %s", label, cfg_type_name(s));
        } else if (!config_line_marked(x, s)) {
            if (!isfinite(d) || d < 0 || d > RESCAN_MAX_S)
                config_err(x, s, "%s: rescan: %g is out of range (0 ≤ rescan ≤ %g; 0: only at start and after "
                           "an overflow)", label, d, RESCAN_MAX_S);
            else
                src->rescan_s = d;
        }
    }
    if (get_str(x, g, label, "region", true, &v) == 1) {
        bool ok = strlen(v) <= 64;
        for (const char *p = v; *p; p++)
            ok = ok && (islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-');
        if (ok) {
            free(src->region);
            src->region = config_strdup(x, v);
        } else {
            config_err(x, config_setting_get_member(g, "region"), "%s: region: '%s' is not a region name "
                       "(like us-east-1)", label, cfg_quote(v, q, sizeof q));
        }
    }
    if (get_str(x, g, label, "broker", true, &v) == 1) {
        char why[256];
        if (endpoint_check(v, false, why, sizeof why) != 0) {
            config_err(x, config_setting_get_member(g, "broker"), "%s: broker: '%s' %s", label,
                       cfg_quote(v, q, sizeof q), why);
        } else {
            free(src->broker);
            src->broker = config_strdup(x, v);
        }
    }
    take_path(x, g, label, "key", &src->key);
    take_path(x, g, label, "broker_key", &src->broker_key);
    if (!src->key != !src->broker_key) {
        const char *set = src->key ? "key" : "broker_key";
        config_err(x, config_setting_get_member(g, set), "%s: %s: is set but %s is not: a client needs both its "
                   "own key and the broker's", label, set, src->key ? "broker_key" : "key");
    }
    take_path(x, g, label, "state_dir", &src->state_dir);
}

static void set_source_defaults(cfg_ctx *x, cfg_source *src)
{
    src->recursive = true;
    src->events = SOURCE_EV_CREATED | SOURCE_EV_REMOVED;
    src->rescan_s = RESCAN_DEFAULT_S;
    src->prefix = config_strdup(x, "");
    src->suffix = config_strdup(x, "");
    src->region = config_strdup(x, "us-east-1");
    src->broker = default_broker(x);
}

void config_check_sources(cfg_ctx *x, const config_setting_t *s)
{
    herald_config *c = x->c;
    if (!s)
        return;
    if (!config_setting_is_list(s) && !(config_setting_is_array(s) && config_setting_length(s) == 0)) {
        config_err(x, s, "sources: expected a list ( { name = ...; type = \"fs\"; ... }, ... ), not %s", cfg_type_name(s));
        return;
    }
    size_t n = (size_t)config_setting_length(s);
    if (n == 0)
        return;
    c->sources = calloc(n, sizeof *c->sources);
    if (!c->sources) {
        x->oom = true;
        return;
    }
    c->nsources = n;
    for (size_t i = 0; i < n; i++) {
        cfg_source *src = &c->sources[i];
        const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
        set_source_defaults(x, src);
        check_source(x, g, i, src);
        if (src->name && !src->state_dir) {   /* beside the broker's database, one directory per source */
            char sub[300];
            snprintf(sub, sizeof sub, "/sources/%s", src->name);
            size_t dl = strlen(c->broker.data_dir ? c->broker.data_dir : "");
            src->state_dir = malloc(dl + strlen(sub) + 1);
            if (!src->state_dir)
                x->oom = true;
            else
                sprintf(src->state_dir, "%s%s", c->broker.data_dir ? c->broker.data_dir : "", sub);
        }
        for (size_t j = 0; j < i && src->name; j++)
            if (c->sources[j].name && strcmp(c->sources[j].name, src->name) == 0) {
                config_err(x, g, "sources[%zu]: name '%s' is used twice (also sources[%zu])", i, src->name, j);
                break;
            }
    }
}

void config_free_sources(herald_config *c)
{
    for (size_t i = 0; i < c->nsources; i++) {
        cfg_source *s = &c->sources[i];
        free(s->name);
        free(s->type);
        free(s->path);
        free(s->bucket);
        free(s->topic);
        free(s->prefix);
        free(s->suffix);
        for (size_t k = 0; k < s->nignore; k++)
            free(s->ignore[k]);
        free(s->ignore);
        free(s->region);
        free(s->broker);
        free(s->key);
        free(s->broker_key);
        free(s->state_dir);
    }
    free(c->sources);
    c->sources = NULL;
    c->nsources = 0;
}

const cfg_source *config_source(const herald_config *c, const char *name)
{
    for (size_t i = 0; i < c->nsources; i++)
        if (c->sources[i].name && strcmp(c->sources[i].name, name) == 0)
            return &c->sources[i];
    return NULL;
}
