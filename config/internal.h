/* config/internal.h: the map of the config loader, private to the files of config/.
 *
 * config.c  entry points, the error list and its output, paths, destroy
 * scan.c    re-scan of the raw file text for integer literals libconfig 1.5
 *           truncates (beyond int32 without an L suffix)
 * check.c   every group's names, types, ranges, defaults and references
 * schedules.c the schedules list (its expressions and zones through sched/)
 * probe.c   what the running programs would find (heraldctl check --root)
 * sources.c the sources list (event sources, DESIGN §12)
 *
 * One cfg_ctx lives for one load: it owns the errors found so far and borrows
 * the config being built. Errors are collected, not printed, so that they can
 * be sorted by line and written in one piece at the end.
 */
#ifndef HERALD_CONFIG_INTERNAL_H
#define HERALD_CONFIG_INTERNAL_H

#include <libconfig.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* libconfig 1.5 refuses to nest includes deeper than this; the scan does too. */
#define CONFIG_INCLUDE_DEPTH 10

typedef struct {
    char *file;                 /* as shown in messages */
    int line;                   /* 0: the problem has no line (unreadable file) */
    size_t seq;                 /* order found, to keep the sort stable */
    char *text;                 /* the "what is wrong" part, one line */
} cfg_err;

typedef struct {
    char *file;
    int line;
} cfg_mark;

typedef struct {
    const char *name;           /* main file, as shown in messages */
    const char *inc_dir;        /* where libconfig looks for @include, or NULL */
    char *base;                 /* relative paths are joined to it; NULL: kept */
    bool base_canonical;        /* base came from realpath: "../" may be folded */
    cfg_err *errs; size_t nerrs, caperrs;
    cfg_mark *marks; size_t nmarks, capmarks;  /* lines holding a truncated integer */
    char **names; size_t nnames;  /* included files' names as shown, for the ctx's life */
    bool oom;                   /* an allocation failed; the load fails */
    herald_config *c;           /* being built, borrowed */
} cfg_ctx;

/* config.c */
void config_err_at(cfg_ctx *x, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void config_err(cfg_ctx *x, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The file a setting came from, as shown in messages (borrowed from x or s). */
const char *config_file_of(cfg_ctx *x, const config_setting_t *s);
/* A file named by @include, as shown in messages and as opened: malloc'ed. */
char *config_include_path(cfg_ctx *x, const char *name);
void config_mark_line(cfg_ctx *x, const char *file, int line);
bool config_line_marked(cfg_ctx *x, const config_setting_t *s);
char *config_strdup(cfg_ctx *x, const char *s);
/* Where s was written; its file name is kept by x->c. */
cfg_loc config_loc(cfg_ctx *x, const config_setting_t *s);
/* Writes every error found, sorted, to *errbuf (appending) or stderr. */
void config_flush_errs(cfg_ctx *x, char **errbuf);
void config_ctx_free(cfg_ctx *x);
/* value resolved against the config file's directory (absolute kept). */
char *config_resolve(cfg_ctx *x, const char *value);
/* Reads a whole file; NULL with errno set. */
char *config_read_text(const char *path);

/* scan.c: reports every integer literal of text that libconfig truncated. */
void config_scan_ints(cfg_ctx *x, const char *text, const char *file, int depth);

/* check.c's helpers, shared by the files that check a group of their own
 * (schedules.c). Getters: 0 absent (out untouched), 1 read, -1 reported. */
#define QUOTE_MAX 64            /* how much of a user's string a message quotes */
/* Where a setting lives, for messages: pre + key names the setting
 * ("broker." + "max_payload", "functions[0] (echo): " + "timeout"), and
 * where names its group in "unknown setting 'X' in <where>". */
typedef struct {
    char pre[320];
    char where[320];
} scope;
bool cfg_name_ok(const char *s);
bool cfg_ident_ok(const char *s);
const char *cfg_quote(const char *s, char *buf, size_t size);   /* safe and short for a message */
const char *cfg_num(double v, char *buf, size_t size);          /* 1000, 0.5, 1e+300 */
const char *cfg_type_name(const config_setting_t *s);           /* "a string", "a list", ... */
void cfg_check_names_list(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *const *known,
    bool list_known);
void cfg_check_names(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *const *known);
void cfg_wrong_type(cfg_ctx *x, const config_setting_t *s, const scope *sc, const char *key, const char *expected);
bool cfg_is_int(const config_setting_t *s);
int cfg_get_int(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key, long long lo,
    long long hi, long long *out);
int cfg_get_int32(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key, int lo, int hi, int *out);
int cfg_get_num(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key, const char *expected,
    double lo, bool lo_open, double hi, double *out);
int cfg_get_bool(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key, bool *out);
int cfg_get_str(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key, bool nonempty,
    const char **out);
void cfg_take_endpoint(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key, bool bind,
    char **dst);
void cfg_take_listen(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key, char **dst);
void cfg_take_path(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key, char **dst);
void cfg_take_path_at(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key, char **dst,
    cfg_loc *at);
config_setting_t *cfg_get_group(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key,
                                const char *example);
int cfg_get_strings(cfg_ctx *x, const config_setting_t *s, const scope *sc, const char *key, bool one_ok,
    const char *expected, char ***out, size_t *nout);
int cfg_get_list(cfg_ctx *x, const config_setting_t *s, const scope *sc, const char *key, const char *expected);
void cfg_key_pair(cfg_ctx *x, const config_setting_t *g, const scope *sc, const char *key, const char *other);
void cfg_named_group(cfg_ctx *x, const config_setting_t *g, const char *list, size_t idx, const char *const *known,
    char **name_out, char *label, size_t len, scope *sc);

/* schedules.c: the schedules list, after functions and topics (it refers to them). */
void config_check_schedules(cfg_ctx *x, const config_setting_t *s);
void config_free_schedule(cfg_schedule *s);

/* check.c: checks root and fills x->c; reports through x. */
void config_check_root(cfg_ctx *x, config_setting_t *root);

/* sources.c: checks the sources list (NULL: absent); runs after the broker
 * group (its defaults come from it). config_free_sources: for config_destroy. */
void config_check_sources(cfg_ctx *x, const config_setting_t *s);
void config_free_sources(herald_config *c);

#endif
