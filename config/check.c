/* config/check.c: checks every group of a parsed config and fills the
 * herald_config (DESIGN §3, §2 worker, §7 security, §10 gateway).
 *
 * Rules: every setting name is known (a typo must never become a default);
 * every value has its type and range, or it is an error at its line (libconfig
 * 1.5's lookups read a wrongly typed value as "absent", so this file never
 * uses them: it looks at each setting's type itself); an absent setting gets
 * its default. The whole tree is checked even after an error, so that one
 * run reports every problem.
 *
 * State: none of its own; what it builds goes into x->c, which the caller
 * frees whatever happens.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <math.h> /* isfinite only: a macro, no libm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "../proto/proto.h"

/* DESIGN §1: an event carries at most 16 attributes, so a filter on more
 * keys could never match. */
#define FILTER_KEYS_MAX 16
/* Backoff delays are turned into int64 milliseconds downstream; a day is far
 * beyond any useful retry delay and far inside that range. */
#define BACKOFF_MAX_S 86400.0
/* DESIGN §11: a runtime idle for a day is stopped at the latest, and its
 * start may take as long as Lambda's init phase may (15 minutes). */
#define RT_IDLE_MAX_S 86400.0
#define RT_INIT_MAX_S 900.0
#define NAME_MAX_LEN 128


/* ---- small helpers ---------------------------------------------------------- */

bool cfg_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > NAME_MAX_LEN)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '.' && *s != '-')
            return false;
    return true;
}

bool cfg_ident_ok(const char *s)
{
    if (!isalpha((unsigned char)*s) && *s != '_')
        return false;
    for (s++; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_')
            return false;
    return true;
}

/* A user's string made safe and short for a one-line message. */
const char *cfg_quote(const char *s, char *buf, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; s[i] && o + 5 < size; i++) {
        if (i == QUOTE_MAX) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f)
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", ch);
        else
            buf[o++] = (char)ch;
    }
    buf[o] = '\0';
    return buf;
}

/* A number as a person wrote it: 1000, 0.5, 1e+300. */
const char *cfg_num(double v, char *buf, size_t size)
{
    /* No libm: the Makefile links none for config/. */
    if (v > -1e15 && v < 1e15 && v == (double)(long long)v)
        snprintf(buf, size, "%.0f", v);
    else
        snprintf(buf, size, "%g", v);
    return buf;
}

/* Edit distance, for "did you mean": small strings only. */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40)
        return 99;
    size_t row[41];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]) ? 0 : 1;
            size_t best = diag + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Reports every member of g whose name is not in known (NULL-terminated),
 * with the closest known name when one is near. */
void cfg_check_names_list(cfg_ctx *x, const config_setting_t *g, const scope *sc,
                             const char *const *known, bool list_known)
{
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        const config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(m);
        if (!name)
            continue;
        const char *guess = NULL;
        size_t best = 3;
        bool found = false;
        for (const char *const *k = known; *k; k++) {
            if (strcmp(*k, name) == 0) {
                found = true;
                break;
            }
            size_t d = distance(name, *k);
            if (d < best) {
                best = d;
                guess = *k;
            }
        }
        if (found)
            continue;
        if (guess) {
            config_err(x, m, "unknown setting '%s' in %s (did you mean '%s'?)", name, sc->where, guess);
        } else if (list_known) {
            char list[256] = "";
            for (const char *const *k = known; *k; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k == known ? "" : ", ", *k);
            config_err(x, m, "unknown setting '%s' in %s (known: %s)", name, sc->where, list);
        } else {
            config_err(x, m, "unknown setting '%s' in %s", name, sc->where);
        }
    }
}

void cfg_check_names(cfg_ctx *x, const config_setting_t *g, const scope *sc,
                        const char *const *known)
{
    cfg_check_names_list(x, g, sc, known, false);
}

const char *cfg_type_name(const config_setting_t *s)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_GROUP: return "a group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64: return "an integer";
    case CONFIG_TYPE_FLOAT: return "a float";
    case CONFIG_TYPE_STRING: return "a string";
    case CONFIG_TYPE_BOOL: return "a boolean";
    case CONFIG_TYPE_ARRAY: return "an array";
    case CONFIG_TYPE_LIST: return "a list";
    }
    return "nothing";
}

void cfg_wrong_type(cfg_ctx *x, const config_setting_t *s, const scope *sc, const char *key,
                       const char *expected)
{
    config_err(x, s, "%s%s: expected %s, not %s", sc->pre, key, expected, cfg_type_name(s));
}

bool cfg_is_int(const config_setting_t *s)
{
    return config_setting_type(s) == CONFIG_TYPE_INT || config_setting_type(s) == CONFIG_TYPE_INT64;
}

/* The getters: 0 absent (out untouched), 1 read, -1 reported. */

int cfg_get_int(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key,
                   long long lo, long long hi, long long *out)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (!s)
        return 0;
    if (!cfg_is_int(s)) {
        cfg_wrong_type(x, s, sc, key, "an integer");
        return -1;
    }
    long long v = config_setting_get_int64(s);
    if (config_line_marked(x, s))
        return -1;
    if (v < lo || v > hi) {
        if (hi == INT64_MAX)
            config_err(x, s, "%s%s: %lld is out of range (%s ≥ %lld)", sc->pre, key, v, key, lo);
        else
            config_err(x, s, "%s%s: %lld is out of range (%lld ≤ %s ≤ %lld)", sc->pre, key, v, lo,
                       key, hi);
        return -1;
    }
    *out = v;
    return 1;
}

int cfg_get_int32(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key,
                     int lo, int hi, int *out)
{
    long long v;
    int r = cfg_get_int(x, g, sc, key, lo, hi, &v);
    if (r == 1)
        *out = (int)v;
    return r;
}

/* A number of seconds (or any real): integers are accepted. lo_open makes
 * the lower bound exclusive; hi < 0 means no upper bound. */
int cfg_get_num(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key,
                   const char *expected, double lo, bool lo_open, double hi, double *out)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (!s)
        return 0;
    double v;
    if (cfg_is_int(s))
        v = (double)config_setting_get_int64(s);
    else if (config_setting_type(s) == CONFIG_TYPE_FLOAT)
        v = config_setting_get_float(s);
    else {
        cfg_wrong_type(x, s, sc, key, expected);
        return -1;
    }
    if (config_line_marked(x, s))
        return -1;
    if (!isfinite(v) || (lo_open ? v <= lo : v < lo) || (hi >= 0 && v > hi)) {
        char a[32], b[32], c[32];
        if (hi < 0)
            config_err(x, s, "%s%s: %s is out of range (%s %s %s)", sc->pre, key,
                       cfg_num(v, a, sizeof a), key, lo_open ? ">" : "≥", cfg_num(lo, b, sizeof b));
        else
            config_err(x, s, "%s%s: %s is out of range (%s %s %s ≤ %s)", sc->pre, key,
                       cfg_num(v, a, sizeof a), cfg_num(lo, b, sizeof b), lo_open ? "<" : "≤", key,
                       cfg_num(hi, c, sizeof c));
        return -1;
    }
    *out = v;
    return 1;
}

int cfg_get_bool(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key,
                    bool *out)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (!s)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
        cfg_wrong_type(x, s, sc, key, "true or false");
        return -1;
    }
    *out = config_setting_get_bool(s) != 0;
    return 1;
}

/* A string; *out borrows libconfig's (copy what is kept). */
int cfg_get_str(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key,
                   bool nonempty, const char **out)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (!s)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        cfg_wrong_type(x, s, sc, key, "a string");
        return -1;
    }
    const char *v = config_setting_get_string(s);
    if (nonempty && !*v) {
        config_err(x, s, "%s%s: must not be empty", sc->pre, key);
        return -1;
    }
    *out = v;
    return 1;
}

/* A ZeroMQ endpoint, checked fully (proto/endpoint.c): libzmq would keep 16
 * bits of port 99999 and bind another port without a word. bind: the broker's
 * own endpoints, where host '*' means every interface. */
void cfg_take_endpoint(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key,
                          bool bind, char **dst)
{
    const char *v;
    if (cfg_get_str(x, g, sc, key, true, &v) != 1)
        return;
    char why[256];
    if (endpoint_check(v, bind, why, sizeof why) != 0) {
        char q[QUOTE_MAX * 4 + 8];
        config_err(x, config_setting_get_member(g, key), "%s%s: '%s' %s", sc->pre, key, cfg_quote(v, q, sizeof q), why);
        return;
    }
    free(*dst);
    *dst = config_strdup(x, v);
}

/* gateway.listen: HOST:PORT or [IPV6]:PORT for HTTP; port 0 binds a free one
 * (the gateway logs which). The host itself is resolved at start. */
void cfg_take_listen(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key, char **dst)
{
    const char *v;
    if (cfg_get_str(x, g, sc, key, true, &v) != 1)
        return;
    const char *end = v[0] == '[' ? strchr(v, ']') : NULL;
    const char *colon = v[0] == '[' ? (end && end[1] == ':' ? end + 1 : NULL) : strrchr(v, ':');
    const char *port = colon ? colon + 1 : "";
    size_t plen = strlen(port), digits = strspn(port, "0123456789");
    char q[QUOTE_MAX * 4 + 8];
    const config_setting_t *s = config_setting_get_member(g, key);
    if (!colon || plen == 0 || digits != plen) {
        config_err(x, s, "%s%s: '%s' is not HOST:PORT (or [IPV6]:PORT)", sc->pre, key, cfg_quote(v, q, sizeof q));
        return;
    }
    while (*port == '0' && port[1])
        port++;
    if (strlen(port) > 5 || strtol(port, NULL, 10) > 65535) {
        config_err(x, s, "%s%s: '%s' has port %s, outside 0 to 65535", sc->pre, key, cfg_quote(v, q, sizeof q),
                   strlen(port) > 20 ? "beyond 65535" : port);
        return;
    }
    free(*dst);
    *dst = config_strdup(x, v);
}

/* A path, resolved against the config file's directory. */
void cfg_take_path(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key,
                      char **dst)
{
    const char *v;
    if (cfg_get_str(x, g, sc, key, true, &v) == 1) {
        free(*dst);
        *dst = config_resolve(x, v);
    }
}

/* The same, remembering where it was written (for check --root). */
void cfg_take_path_at(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key,
                         char **dst, cfg_loc *at)
{
    cfg_take_path(x, g, sc, key, dst);
    if (*dst)
        *at = config_loc(x, config_setting_get_member(g, key));
}

/* A group member that must itself be a group; NULL when absent or reported. */
config_setting_t *cfg_get_group(cfg_ctx *x, const config_setting_t *g, const scope *sc,
                                   const char *key, const char *example)
{
    config_setting_t *s = config_setting_get_member(g, key);
    if (!s)
        return NULL;
    if (!config_setting_is_group(s)) {
        cfg_wrong_type(x, s, sc, key, example);
        return NULL;
    }
    return s;
}

/* Collects the strings of an array or list into a malloc'ed vector of copies.
 * A bare string is a one-element list when one_ok. Returns -1 when reported. */
int cfg_get_strings(cfg_ctx *x, const config_setting_t *s, const scope *sc, const char *key,
                       bool one_ok, const char *expected, char ***out, size_t *nout)
{
    int n = 1; /* a bare string */
    if (one_ok && config_setting_type(s) == CONFIG_TYPE_STRING) {
    } else if (config_setting_is_array(s) || config_setting_is_list(s)) {
        n = config_setting_length(s);
        if (n == 0) {
            config_err(x, s, "%s%s: expected %s, not an empty one", sc->pre, key, expected);
            return -1;
        }
        for (int i = 0; i < n; i++) {
            const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
            if (config_setting_type(e) != CONFIG_TYPE_STRING) {
                config_err(x, e, "%s%s[%d]: expected a string, not %s", sc->pre, key, i,
                           cfg_type_name(e));
                return -1;
            }
        }
    } else {
        cfg_wrong_type(x, s, sc, key, expected);
        return -1;
    }
    char **v = calloc((size_t)n, sizeof *v);
    if (!v) {
        x->oom = true;
        return -1;
    }
    *out = v;
    *nout = (size_t)n;
    if (config_setting_type(s) == CONFIG_TYPE_STRING) {
        v[0] = config_strdup(x, config_setting_get_string(s));
        return 0;
    }
    for (int i = 0; i < n; i++)
        v[i] = config_strdup(x, config_setting_get_string_elem(s, (unsigned)i));
    return 0;
}

/* A list of groups (functions, topics, subscriptions); an empty array is an
 * empty list too. Returns its length, or -1 when reported. */
int cfg_get_list(cfg_ctx *x, const config_setting_t *s, const scope *sc, const char *key,
                    const char *expected)
{
    if (config_setting_is_list(s) ||
        (config_setting_is_array(s) && config_setting_length(s) == 0))
        return config_setting_length(s);
    cfg_wrong_type(x, s, sc, key, expected);
    return -1;
}

void cfg_key_pair(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key,
                     const char *other)
{
    bool a = config_setting_get_member(g, key) != NULL, b = config_setting_get_member(g, other) != NULL;
    if (a && !b)
        config_err(x, config_setting_get_member(g, key),
                   "%s%s: is set but %s is not: a client needs both its own key and the broker's",
                   sc->pre, key, other);
}

/* ---- broker ----------------------------------------------------------------- */

static void check_broker(cfg_ctx *x, const config_setting_t *g)
{
    static const char *const known[] = { "publish_endpoint", "worker_endpoint", "admin_endpoint",
                                         "data_dir", "durability", "max_payload", "max_backlog",
                                         "disk_min_free", "heartbeat", NULL };
    cfg_broker *b = &x->c->broker;
    scope sc = { "broker.", "broker" };
    if (!g)
        return;
    cfg_check_names(x, g, &sc, known);
    cfg_take_endpoint(x, g, &sc, "publish_endpoint", true, &b->publish_endpoint);
    cfg_take_endpoint(x, g, &sc, "worker_endpoint", true, &b->worker_endpoint);
    cfg_take_endpoint(x, g, &sc, "admin_endpoint", true, &b->admin_endpoint);
    cfg_take_path(x, g, &sc, "data_dir", &b->data_dir);
    const char *d;
    if (cfg_get_str(x, g, &sc, "durability", false, &d) == 1) {
        if (strcmp(d, "fsync") == 0)
            b->durability = DURABILITY_FSYNC;
        else if (strcmp(d, "os") == 0)
            b->durability = DURABILITY_OS;
        else {
            char q[QUOTE_MAX * 4 + 8];
            config_err(x, config_setting_get_member(g, "durability"),
                       "broker.durability: '%s' is not one of \"fsync\", \"os\"",
                       cfg_quote(d, q, sizeof q));
        }
    }
    long long v;
    if (cfg_get_int(x, g, &sc, "max_payload", 1024, 64LL * 1024 * 1024, &v) == 1)
        b->max_payload = v;
    if (cfg_get_int(x, g, &sc, "max_backlog", 1, INT64_MAX, &v) == 1)
        b->max_backlog = v;
    if (cfg_get_int(x, g, &sc, "disk_min_free", 0, INT64_MAX, &v) == 1)
        b->disk_min_free = v;
    cfg_get_num(x, g, &sc, "heartbeat", "a number of seconds", 0.1, false, 60, &b->heartbeat_s);
}

/* ---- security ----------------------------------------------------------------- */

static void check_security(cfg_ctx *x, const config_setting_t *g)
{
    static const char *const known[] = { "curve", "secret_key", "publishers", "workers", "admins",
                                         NULL };
    cfg_security *s = &x->c->security;
    scope sc = { "security.", "security" };
    if (!g)
        return;
    s->present = true;
    cfg_check_names(x, g, &sc, known);
    cfg_get_bool(x, g, &sc, "curve", &s->curve);
    cfg_take_path_at(x, g, &sc, "secret_key", &s->secret_key, &s->secret_key_at);
    cfg_take_path_at(x, g, &sc, "publishers", &s->publishers, &s->publishers_at);
    cfg_take_path_at(x, g, &sc, "workers", &s->workers, &s->workers_at);
    cfg_take_path_at(x, g, &sc, "admins", &s->admins, &s->admins_at);
    if (!s->curve)
        return;
    /* Without its key the broker cannot speak CURVE, and a missing role
     * directory would shut that endpoint to everyone: both are mistakes. */
    static const char *const need[] = { "secret_key", "publishers", "workers", "admins" };
    for (size_t i = 0; i < sizeof need / sizeof *need; i++)
        if (!config_setting_get_member(g, need[i]))
            config_err(x, g, "security: curve = true needs %s", need[i]);
}

/* ---- functions ------------------------------------------------------------------ */

static void check_backoff(cfg_ctx *x, const config_setting_t *g, const char *label, cfg_backoff *b)
{
    static const char *const known[] = { "initial", "max", "multiplier", "jitter", NULL };
    scope sc;
    snprintf(sc.pre, sizeof sc.pre, "%s: backoff.", label);
    snprintf(sc.where, sizeof sc.where, "%s backoff", label);
    cfg_check_names(x, g, &sc, known);
    int ri = cfg_get_num(x, g, &sc, "initial", "a number of seconds", 0, true, BACKOFF_MAX_S, &b->initial_s);
    int rm = cfg_get_num(x, g, &sc, "max", "a number of seconds", 0, true, BACKOFF_MAX_S, &b->max_s);
    cfg_get_num(x, g, &sc, "multiplier", "a number", 1, false, -1, &b->multiplier);
    const char *j;
    if (cfg_get_str(x, g, &sc, "jitter", false, &j) == 1) {
        if (strcmp(j, "full") == 0)
            b->jitter = JITTER_FULL;
        else if (strcmp(j, "equal") == 0)
            b->jitter = JITTER_EQUAL;
        else if (strcmp(j, "none") == 0)
            b->jitter = JITTER_NONE;
        else {
            char q[QUOTE_MAX * 4 + 8];
            config_err(x, config_setting_get_member(g, "jitter"),
                       "%sjitter: '%s' is not one of \"full\", \"equal\", \"none\"", sc.pre,
                       cfg_quote(j, q, sizeof q));
        }
    }
    if (ri >= 0 && rm >= 0 && b->max_s < b->initial_s) {
        char a[32], c[32];
        const config_setting_t *at = config_setting_get_member(g, rm ? "max" : "initial");
        config_err(x, at, "%smax: %s%s is less than backoff.initial (%s)", sc.pre,
                   cfg_num(b->max_s, a, sizeof a), rm ? "" : " (the default)",
                   cfg_num(b->initial_s, c, sizeof c));
    }
}

static void check_env(cfg_ctx *x, const config_setting_t *g, const char *label, cfg_function *f)
{
    int n = config_setting_length(g);
    if (n == 0)
        return;
    f->env = calloc((size_t)n, sizeof *f->env);
    if (!f->env) {
        x->oom = true;
        return;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(g, (unsigned)i);
        const char *k = config_setting_name(e);
        bool ok = true;
        if (!cfg_ident_ok(k)) {
            config_err(x, e, "%s: env.%s: not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)", label, k);
            ok = false;
        } else if (strncmp(k, "HERALD_", 7) == 0) {
            config_err(x, e, "%s: env.%s: HERALD_* variables are set by herald itself", label, k);
            ok = false;
        }
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            config_err(x, e, "%s: env.%s: expected a string, not %s", label, k, cfg_type_name(e));
            ok = false;
        }
        if (!ok)
            continue;
        cfg_pair *p = &f->env[f->nenv++];
        p->key = config_strdup(x, k);
        p->value = config_strdup(x, config_setting_get_string(e));
    }
}

static void check_native(cfg_ctx *x, const config_setting_t *g, const char *label, cfg_function *f)
{
    static const char *const known[] = { "library", "symbol", NULL };
    scope sc;
    snprintf(sc.pre, sizeof sc.pre, "%s: native.", label);
    snprintf(sc.where, sizeof sc.where, "%s native", label);
    cfg_check_names(x, g, &sc, known);
    const char *v;
    int r = cfg_get_str(x, g, &sc, "library", true, &v);
    if (r == 1) {
        f->library = config_strdup(x, v);
        f->library_at = config_loc(x, config_setting_get_member(g, "library"));
    }
    else if (r == 0)
        config_err(x, g, "%s: native: needs library (the .so to load)", label);
    r = cfg_get_str(x, g, &sc, "symbol", true, &v);
    if (r == 1) {
        if (!cfg_ident_ok(v)) {
            char q[QUOTE_MAX * 4 + 8];
            config_err(x, config_setting_get_member(g, "symbol"),
                       "%ssymbol: '%s' is not a C identifier", sc.pre, cfg_quote(v, q, sizeof q));
        } else {
            f->symbol = config_strdup(x, v);
            f->symbol_at = config_loc(x, config_setting_get_member(g, "symbol"));
        }
    } else if (r == 0) {
        config_err(x, g, "%s: native: needs symbol (the handler function's name)", label);
    }
}

/* The name of a function or topic group ("functions", idx): checked and
 * copied into *name, and the label its messages carry — "functions[2]", or
 * "functions[2] (echo)" once the name is known — with the scope of its keys;
 * then its setting names are checked against known. */
void cfg_named_group(cfg_ctx *x, const config_setting_t *g, const char *list, size_t idx,
                        const char *const *known, char **name_out, char *label, size_t len, scope *sc)
{
    snprintf(label, len, "%s[%zu]", list, idx);
    snprintf(sc->pre, sizeof sc->pre, "%s: ", label);
    const char *name;
    int r = cfg_get_str(x, g, sc, "name", false, &name);
    if (r == 0) {
        config_err(x, g, "%s: needs a name", label);
    } else if (r == 1) {
        char q[QUOTE_MAX * 4 + 8];
        if (!cfg_name_ok(name)) {
            config_err(x, config_setting_get_member(g, "name"),
                       "%s: name '%s' is invalid (expected 1 to 128 of A-Z a-z 0-9 _ . -)", label,
                       cfg_quote(name, q, sizeof q));
        } else {
            *name_out = config_strdup(x, name);
            snprintf(label, len, "%s[%zu] (%s)", list, idx, name);
            snprintf(sc->pre, sizeof sc->pre, "%s: ", label);
        }
    }
    snprintf(sc->where, sizeof sc->where, "%s", label);
    cfg_check_names(x, g, sc, known);
}

/* runtime = { command = [...]; handler; format; max_invocations;
 * idle_timeout; init_timeout; } (DESIGN §11). The command goes where exec's
 * argv goes (f->exec): both are the program the worker starts. */
static void check_runtime(cfg_ctx *x, const config_setting_t *g, const char *label, cfg_function *f)
{
    static const char *const known[] = { "command", "handler", "format", "max_invocations", "idle_timeout",
                                         "init_timeout", NULL };
    scope sc;
    char q[QUOTE_MAX * 4 + 8];
    snprintf(sc.pre, sizeof sc.pre, "%s: runtime.", label);
    snprintf(sc.where, sizeof sc.where, "%s runtime", label);
    cfg_check_names(x, g, &sc, known);
    const config_setting_t *cmd = config_setting_get_member(g, "command");
    /* Beside an exec (an error already reported) the command is checked,
     * then dropped: f->exec is exec's. */
    bool keep = !f->exec;
    char **argv = NULL;
    size_t argc = 0;
    if (!cmd)
        config_err(x, g, "%s: runtime: needs command (the program to start, as an array of strings)", label);
    else if (cfg_get_strings(x, cmd, &sc, "command", false, "a non-empty array of strings", &argv, &argc) == 0 &&
             argv[0] && !*argv[0])
        config_err(x, cmd, "%s: runtime.command[0]: the program must not be empty", label);
    if (keep) {
        f->exec = argv;
        f->nexec = argc;
        if (cmd)
            f->exec_at = config_loc(x, cmd);
    } else {
        for (size_t i = 0; i < argc; i++)
            free(argv[i]);
        free(argv);
    }

    const char *v;
    if (cfg_get_str(x, g, &sc, "handler", true, &v) == 1) {
        /* AWS's rule for a handler is [^\s]+; ours also keeps it to
         * printable ASCII, since it goes into an environment variable. */
        bool ok = strlen(v) <= PROTO_RT_HANDLER_MAX;
        for (const char *p = v; ok && *p; p++)
            ok = *p > 0x20 && *p < 0x7f;
        if (ok)
            f->rt.handler = config_strdup(x, v);
        else
            config_err(x, config_setting_get_member(g, "handler"),
                       "%shandler: '%s' is not 1 to %d printable ASCII characters without spaces", sc.pre,
                       cfg_quote(v, q, sizeof q), PROTO_RT_HANDLER_MAX);
    }
    if (cfg_get_str(x, g, &sc, "format", false, &v) == 1) {
        if (strcmp(v, "raw") == 0)
            f->rt.format = RT_FORMAT_RAW;
        else if (strcmp(v, "sns") == 0)
            f->rt.format = RT_FORMAT_SNS;
        else
            config_err(x, config_setting_get_member(g, "format"), "%sformat: '%s' is not one of \"raw\", \"sns\"",
                       sc.pre, cfg_quote(v, q, sizeof q));
    }
    cfg_get_int32(x, g, &sc, "max_invocations", 0, 1000000000, &f->rt.max_invocations);
    cfg_get_num(x, g, &sc, "idle_timeout", "a number of seconds", 0, true, RT_IDLE_MAX_S, &f->rt.idle_timeout_s);
    cfg_get_num(x, g, &sc, "init_timeout", "a number of seconds", 0, true, RT_INIT_MAX_S, &f->rt.init_timeout_s);
}

/* A function has exactly one of exec, native, runtime: reported at the
 * second one given, or at the group when there is none. */
static void check_kind(cfg_ctx *x, const config_setting_t *g, const char *label)
{
    static const char *const kinds[] = { "exec", "native", "runtime" };
    const config_setting_t *given[3];
    int n = 0;
    for (int i = 0; i < 3; i++) {
        const config_setting_t *s = config_setting_get_member(g, kinds[i]);
        if (s)
            given[n++] = s;
    }
    if (n == 0)
        config_err(x, g, "%s: has none of exec, native, runtime: give exactly one", label);
    else if (n == 2)
        config_err(x, given[1], "%s: has both %s and %s: give exactly one of exec, native, runtime", label,
                   config_setting_name(given[0]), config_setting_name(given[1]));
    else if (n == 3)
        config_err(x, given[1], "%s: has exec, native and runtime: give exactly one", label);
}

static void check_function(cfg_ctx *x, const config_setting_t *g, size_t idx, cfg_function *f)
{
    static const char *const known[] = { "name", "exec", "native", "runtime", "timeout", "memory_mb",
                                         "concurrency", "max_attempts", "backoff", "env", NULL };
    f->timeout_s = 30.0;
    f->memory_mb = 128;
    f->max_attempts = 3;
    f->backoff = (cfg_backoff){ .initial_s = 1.0, .max_s = 300.0, .multiplier = 2.0,
                                .jitter = JITTER_FULL };
    f->rt = (cfg_runtime){ .format = RT_FORMAT_RAW, .idle_timeout_s = 300.0, .init_timeout_s = 10.0 };
    f->line = config_setting_source_line(g);
    if (!config_setting_is_group(g)) {
        config_err(x, g, "functions[%zu]: expected a group { name = \"...\"; exec = [...]; }, not %s",
                   idx, cfg_type_name(g));
        return;
    }
    char label[200];
    scope sc;
    cfg_named_group(x, g, "functions", idx, known, &f->name, label, sizeof label, &sc);

    /* With more than one kind the load fails; each is still checked, and the
     * first one given decides the kind, so that what is kept is consistent. */
    check_kind(x, g, label);
    const config_setting_t *exec = config_setting_get_member(g, "exec");
    const config_setting_t *native = config_setting_get_member(g, "native");
    const config_setting_t *runtime = config_setting_get_member(g, "runtime");
    if (exec && cfg_get_strings(x, exec, &sc, "exec", false, "a non-empty array of strings", &f->exec,
                            &f->nexec) == 0 && f->exec[0] && !*f->exec[0])
        config_err(x, exec, "%s: exec[0]: the program must not be empty", label);
    if (exec)
        f->exec_at = config_loc(x, exec);
    if (native) {
        if (!config_setting_is_group(native))
            cfg_wrong_type(x, native, &sc, "native",
                       "a group { library = \"...\"; symbol = \"...\"; }");
        else
            check_native(x, native, label, f);
        f->native = !exec;
    }
    if (runtime) {
        if (!config_setting_is_group(runtime))
            cfg_wrong_type(x, runtime, &sc, "runtime", "a group { command = [\"...\"]; ... }");
        else
            check_runtime(x, runtime, label, f);
        f->runtime = !exec && !native;
    }

    cfg_get_num(x, g, &sc, "timeout", "a number of seconds", 0, true, 900, &f->timeout_s);
    cfg_get_int32(x, g, &sc, "memory_mb", 16, 10240, &f->memory_mb);
    cfg_get_int32(x, g, &sc, "concurrency", 1, 100000, &f->concurrency);
    cfg_get_int32(x, g, &sc, "max_attempts", 1, 100, &f->max_attempts);
    const config_setting_t *b = cfg_get_group(x, g, &sc, "backoff",
                                          "a group { initial = 1.0; max = 300.0; ... }");
    if (b)
        check_backoff(x, b, label, &f->backoff);
    const config_setting_t *env = cfg_get_group(x, g, &sc, "env", "a group { NAME = \"value\"; }");
    if (env)
        check_env(x, env, label, f);
}

static void check_functions(cfg_ctx *x, const config_setting_t *s)
{
    scope sc = { "", "" };
    if (!s)
        return;
    int n = cfg_get_list(x, s, &sc, "functions", "a list ( { name = ...; }, ... )");
    if (n <= 0)
        return;
    x->c->functions = calloc((size_t)n, sizeof *x->c->functions);
    if (!x->c->functions) {
        x->oom = true;
        return;
    }
    x->c->nfunctions = (size_t)n;
    for (int i = 0; i < n; i++) {
        cfg_function *f = &x->c->functions[i];
        check_function(x, config_setting_get_elem(s, (unsigned)i), (size_t)i, f);
        for (int j = 0; f->name && j < i; j++)
            if (x->c->functions[j].name && strcmp(x->c->functions[j].name, f->name) == 0) {
                config_err(x, config_setting_get_member(config_setting_get_elem(s, (unsigned)i), "name"),
                           "functions[%d]: name '%s' is already used by functions[%d] (line %d)",
                           i, f->name, j, x->c->functions[j].line);
                break;
            }
    }
}

/* ---- topics ------------------------------------------------------------------- */

static void check_filter(cfg_ctx *x, const config_setting_t *g, const scope *sc,
                         cfg_subscription *s)
{
    int n = config_setting_length(g);
    if (n == 0)
        return;
    if (n > FILTER_KEYS_MAX) {
        config_err(x, g, "%sfilter: %d keys, but an event carries at most %d attributes", sc->pre,
                   n, FILTER_KEYS_MAX);
        return;
    }
    s->filters = calloc((size_t)n, sizeof *s->filters);
    if (!s->filters) {
        x->oom = true;
        return;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(g, (unsigned)i);
        char key[200];
        snprintf(key, sizeof key, "filter.%s", config_setting_name(e));
        cfg_filter *f = &s->filters[s->nfilters];
        if (cfg_get_strings(x, e, sc, key, true, "a string or a non-empty array of strings",
                        &f->values, &f->nvalues) < 0)
            continue;
        f->key = config_strdup(x, config_setting_name(e));
        s->nfilters++;
    }
}

static void check_subscription(cfg_ctx *x, const config_setting_t *g, const char *label,
                               cfg_topic *t)
{
    static const char *const known[] = { "function", "filter", NULL };
    cfg_subscription *s = &t->subs[t->nsubs];
    scope sc;
    snprintf(sc.pre, sizeof sc.pre, "%s: subscription: ", label);
    snprintf(sc.where, sizeof sc.where, "%s subscription", label);
    if (!config_setting_is_group(g)) {
        config_err(x, g, "%s: subscription: expected a group { function = \"...\"; }, not %s",
                   label, cfg_type_name(g));
        return;
    }
    s->line = config_setting_source_line(g);
    cfg_check_names(x, g, &sc, known);
    const char *fn;
    int r = cfg_get_str(x, g, &sc, "function", false, &fn);
    if (r == 0) {
        config_err(x, g, "%s: subscription: needs a function", label);
        return;
    }
    if (r < 0)
        return;
    const config_setting_t *fs = config_setting_get_member(g, "function");
    char q[QUOTE_MAX * 4 + 8];
    if (!config_function(x->c, fn)) {
        config_err(x, fs, "%s: subscription: unknown function '%s'", label, cfg_quote(fn, q, sizeof q));
        return;
    }
    for (size_t i = 0; i < t->nsubs; i++)
        if (strcmp(t->subs[i].function, fn) == 0) {
            config_err(x, fs, "%s: subscription: function '%s' already subscribes to this topic (line %d)",
                       label, fn, t->subs[i].line);
            return;
        }
    const config_setting_t *filter = cfg_get_group(x, g, &sc, "filter",
                                               "a group { attribute = [\"value\", ...]; }");
    t->nsubs++;
    s->function = config_strdup(x, fn);
    if (filter)
        check_filter(x, filter, &sc, s);
}

static void check_topic(cfg_ctx *x, const config_setting_t *g, size_t idx, cfg_topic *t)
{
    static const char *const known[] = { "name", "subscriptions", NULL };
    t->line = config_setting_source_line(g);
    if (!config_setting_is_group(g)) {
        config_err(x, g, "topics[%zu]: expected a group { name = \"...\"; subscriptions = (...); }, not %s",
                   idx, cfg_type_name(g));
        return;
    }
    char label[200];
    scope sc;
    cfg_named_group(x, g, "topics", idx, known, &t->name, label, sizeof label, &sc);
    const config_setting_t *subs = config_setting_get_member(g, "subscriptions");
    if (!subs)
        return;
    int n = cfg_get_list(x, subs, &sc, "subscriptions", "a list ( { function = ...; }, ... )");
    if (n <= 0)
        return;
    t->subs = calloc((size_t)n, sizeof *t->subs);
    if (!t->subs) {
        x->oom = true;
        return;
    }
    for (int i = 0; i < n; i++)
        check_subscription(x, config_setting_get_elem(subs, (unsigned)i), label, t);
}

static void check_topics(cfg_ctx *x, const config_setting_t *s)
{
    scope sc = { "", "" };
    if (!s)
        return;
    int n = cfg_get_list(x, s, &sc, "topics", "a list ( { name = ...; }, ... )");
    if (n <= 0)
        return;
    x->c->topics = calloc((size_t)n, sizeof *x->c->topics);
    if (!x->c->topics) {
        x->oom = true;
        return;
    }
    x->c->ntopics = (size_t)n;
    for (int i = 0; i < n; i++) {
        cfg_topic *t = &x->c->topics[i];
        check_topic(x, config_setting_get_elem(s, (unsigned)i), (size_t)i, t);
        for (int j = 0; t->name && j < i; j++)
            if (x->c->topics[j].name && strcmp(x->c->topics[j].name, t->name) == 0) {
                config_err(x, config_setting_get_member(config_setting_get_elem(s, (unsigned)i), "name"),
                           "topics[%d]: name '%s' is already used by topics[%d] (line %d)", i,
                           t->name, j, x->c->topics[j].line);
                break;
            }
    }
}

/* ---- worker and gateway ------------------------------------------------------------- */

static void check_worker(cfg_ctx *x, const config_setting_t *g)
{
    static const char *const known[] = { "broker", "key", "broker_key", "concurrency", "functions",
                                         "root", "run_dir", NULL };
    cfg_worker *w = &x->c->worker;
    scope sc = { "worker.", "worker" };
    if (!g)
        return;
    w->present = true;
    cfg_check_names(x, g, &sc, known);
    cfg_take_endpoint(x, g, &sc, "broker", false, &w->broker);
    cfg_take_path_at(x, g, &sc, "key", &w->key, &w->key_at);
    cfg_take_path_at(x, g, &sc, "broker_key", &w->broker_key, &w->broker_key_at);
    cfg_key_pair(x, g, &sc, "key", "broker_key");
    cfg_key_pair(x, g, &sc, "broker_key", "key");
    cfg_get_int32(x, g, &sc, "concurrency", 1, 100000, &w->concurrency);
    cfg_take_path(x, g, &sc, "root", &w->root);
    cfg_take_path(x, g, &sc, "run_dir", &w->run_dir);
    const config_setting_t *fs = config_setting_get_member(g, "functions");
    if (!fs || cfg_get_strings(x, fs, &sc, "functions", false, "a non-empty array of function names",
                           &w->functions, &w->nfunctions) < 0)
        return;
    for (size_t i = 0; i < w->nfunctions; i++) {
        const config_setting_t *e = config_setting_get_elem(fs, (unsigned)i);
        const char *f = w->functions[i];
        char q[QUOTE_MAX * 4 + 8];
        if (!f)
            continue;
        if (!cfg_name_ok(f)) {
            config_err(x, e, "worker.functions[%zu]: '%s' is not a valid function name", i,
                       cfg_quote(f, q, sizeof q));
            continue;
        }
        /* The worker learns definitions from the broker, so only a file that
         * defines functions can tell a typo here. */
        if (x->c->nfunctions && !config_function(x->c, f))
            config_err(x, e, "worker.functions[%zu]: unknown function '%s'", i, f);
        for (size_t j = 0; j < i; j++)
            if (w->functions[j] && strcmp(w->functions[j], f) == 0) {
                config_err(x, e, "worker.functions[%zu]: '%s' is listed twice", i, f);
                break;
            }
    }
}

static void check_gateway(cfg_ctx *x, const config_setting_t *g)
{
    static const char *const known[] = { "listen", "broker", "admin", "region", "account", "key",
                                         "broker_key", "console_write", NULL };
    cfg_gateway *gw = &x->c->gateway;
    scope sc = { "gateway.", "gateway" };
    char q[QUOTE_MAX * 4 + 8];
    if (!g)
        return;
    gw->present = true;
    cfg_check_names(x, g, &sc, known);
    cfg_take_listen(x, g, &sc, "listen", &gw->listen);
    cfg_take_endpoint(x, g, &sc, "broker", false, &gw->broker);
    cfg_take_endpoint(x, g, &sc, "admin", false, &gw->admin);
    const char *v;
    /* Both go into ARNs (arn:aws:sns:REGION:ACCOUNT:topic): a ':' would
     * shift every field after it. */
    if (cfg_get_str(x, g, &sc, "region", true, &v) == 1) {
        bool ok = strlen(v) <= 64;
        for (const char *p = v; *p; p++)
            ok = ok && (islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-');
        if (ok) {
            free(gw->region);
            gw->region = config_strdup(x, v);
        } else {
            config_err(x, config_setting_get_member(g, "region"),
                       "gateway.region: '%s' is not a region name (like us-east-1)", cfg_quote(v, q, sizeof q));
        }
    }
    if (cfg_get_str(x, g, &sc, "account", true, &v) == 1) {
        bool ok = strlen(v) == 12;
        for (const char *p = v; *p; p++)
            ok = ok && isdigit((unsigned char)*p);
        if (ok) {
            free(gw->account);
            gw->account = config_strdup(x, v);
        } else {
            config_err(x, config_setting_get_member(g, "account"),
                       "gateway.account: '%s' is not an account id (12 digits)", cfg_quote(v, q, sizeof q));
        }
    }
    cfg_take_path_at(x, g, &sc, "key", &gw->key, &gw->key_at);
    cfg_take_path_at(x, g, &sc, "broker_key", &gw->broker_key, &gw->broker_key_at);
    cfg_key_pair(x, g, &sc, "key", "broker_key");
    cfg_key_pair(x, g, &sc, "broker_key", "key");
    cfg_get_bool(x, g, &sc, "console_write", &gw->console_write);
}

/* ---- root ---------------------------------------------------------------------- */

static void set_defaults(cfg_ctx *x)
{
    herald_config *c = x->c;
    c->broker.publish_endpoint = config_strdup(x, "tcp://127.0.0.1:7710");
    c->broker.worker_endpoint = config_strdup(x, "tcp://127.0.0.1:7711");
    c->broker.admin_endpoint = config_strdup(x, "tcp://127.0.0.1:7712");
    c->broker.data_dir = config_resolve(x, "var/herald");
    c->broker.durability = DURABILITY_FSYNC;
    c->broker.max_payload = 262144;
    c->broker.max_backlog = 10000000;
    c->broker.disk_min_free = 268435456;
    c->broker.heartbeat_s = 1.0;
    c->worker.broker = config_strdup(x, "tcp://127.0.0.1:7711");
    c->gateway.listen = config_strdup(x, "127.0.0.1:7780");
    c->gateway.broker = config_strdup(x, "tcp://127.0.0.1:7710");
    c->gateway.admin = config_strdup(x, "tcp://127.0.0.1:7712");
    c->gateway.region = config_strdup(x, "us-east-1");
    c->gateway.account = config_strdup(x, "000000000000");
}

/* A top-level group: NULL when absent or not a group (reported). */
static const config_setting_t *top_group(cfg_ctx *x, const config_setting_t *root, const char *key)
{
    const config_setting_t *s = config_setting_get_member(root, key);
    if (s && !config_setting_is_group(s)) {
        config_err(x, s, "%s: expected a group { ... }, not %s", key, cfg_type_name(s));
        return NULL;
    }
    return s;
}

void config_check_root(cfg_ctx *x, config_setting_t *root)
{
    static const char *const known[] = { "broker", "security", "functions", "topics", "schedules", "worker",
                                         "gateway", NULL };
    scope sc = { "", "the top level" };
    set_defaults(x);
    cfg_check_names_list(x, root, &sc, known, true);
    check_broker(x, top_group(x, root, "broker"));
    check_security(x, top_group(x, root, "security"));
    /* functions before topics and worker: both refer to function names. */
    check_functions(x, config_setting_get_member(root, "functions"));
    check_topics(x, config_setting_get_member(root, "topics"));
    config_check_schedules(x, config_setting_get_member(root, "schedules"));
    check_worker(x, top_group(x, root, "worker"));
    check_gateway(x, top_group(x, root, "gateway"));
}
