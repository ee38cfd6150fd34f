/* config/config.c: the loader's entry points (DESIGN §3). It reads the text,
 * lets libconfig parse it, has scan.c re-scan it for truncated integers and
 * check.c check every group, and collects every problem as "FILE:LINE: what".
 *
 * State: one cfg_ctx per load (errors found, lines marked by the scan, the
 * config being built). A load either returns a complete, checked config or
 * NULL with every error written: never a half-checked config.
 *
 * Errors are sorted by file (the main file first) and line before they are
 * written, so that a user fixes them top to bottom.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- errors ---------------------------------------------------------------- */

static void add_err(cfg_ctx *x, const char *file, int line, char *text)
{
    if (!text) {
        x->oom = true;
        return;
    }
    /* A user string in a message must not break the one-line-per-error rule. */
    for (char *p = text; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    if (x->nerrs == x->caperrs) {
        size_t cap = x->caperrs ? 2 * x->caperrs : 16;
        cfg_err *e = realloc(x->errs, cap * sizeof *e);
        if (!e) {
            free(text);
            x->oom = true;
            return;
        }
        x->errs = e;
        x->caperrs = cap;
    }
    char *f = strdup(file ? file : x->name);
    if (!f) {
        free(text);
        x->oom = true;
        return;
    }
    x->errs[x->nerrs] = (cfg_err){ .file = f, .line = line, .seq = x->nerrs, .text = text };
    x->nerrs++;
}

void config_err_at(cfg_ctx *x, const char *file, int line, const char *fmt, ...)
{
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&text, fmt, ap) < 0)
        text = NULL;
    va_end(ap);
    add_err(x, file, line, text);
}

void config_err(cfg_ctx *x, const config_setting_t *s, const char *fmt, ...)
{
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&text, fmt, ap) < 0)
        text = NULL;
    va_end(ap);
    add_err(x, config_file_of(x, s), s ? (int)config_setting_source_line(s) : 0, text);
}

/* Main file first, then other files by name, each by line, then as found. */
static int err_cmp(const void *pa, const void *pb, void *arg)
{
    const cfg_err *a = pa, *b = pb;
    const char *main_file = arg;
    int am = strcmp(a->file, main_file) == 0, bm = strcmp(b->file, main_file) == 0;
    if (am != bm)
        return bm - am;
    int c = strcmp(a->file, b->file);
    if (c)
        return c;
    if (a->line != b->line)
        return a->line < b->line ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Writes every error to *errbuf (appending) or stderr. */
void config_flush_errs(cfg_ctx *x, char **errbuf)
{
    if (x->oom)
        config_err_at(x, NULL, 0, "out of memory while reading the configuration");
    qsort_r(x->errs, x->nerrs, sizeof *x->errs, err_cmp, (void *)x->name);

    char *out = NULL;
    size_t len = 0;
    FILE *f = errbuf ? open_memstream(&out, &len) : stderr;
    if (!f) {
        f = stderr;
        errbuf = NULL;
    }
    for (size_t i = 0; i < x->nerrs; i++) {
        if (x->errs[i].line > 0)
            fprintf(f, "%s:%d: %s\n", x->errs[i].file, x->errs[i].line, x->errs[i].text);
        else
            fprintf(f, "%s: %s\n", x->errs[i].file, x->errs[i].text);
    }
    if (!errbuf)
        return;
    fclose(f);
    if (!out)
        return;
    if (!*errbuf) {
        *errbuf = out;
        return;
    }
    size_t old = strlen(*errbuf);
    char *joined = realloc(*errbuf, old + len + 1);
    if (!joined) {
        /* Losing the earlier text is better than losing these errors. */
        free(*errbuf);
        *errbuf = out;
        return;
    }
    memcpy(joined + old, out, len + 1);
    *errbuf = joined;
    free(out);
}

/* ---- marks: lines where the scan found a truncated integer ----------------- */

void config_mark_line(cfg_ctx *x, const char *file, int line)
{
    if (x->nmarks == x->capmarks) {
        size_t cap = x->capmarks ? 2 * x->capmarks : 8;
        cfg_mark *m = realloc(x->marks, cap * sizeof *m);
        if (!m) {
            x->oom = true;
            return;
        }
        x->marks = m;
        x->capmarks = cap;
    }
    char *f = strdup(file);
    if (!f) {
        x->oom = true;
        return;
    }
    x->marks[x->nmarks++] = (cfg_mark){ .file = f, .line = line };
}

/* A value read from a marked line is libconfig's truncation of what was
 * written: judging its range would only add a confusing second error. */
bool config_line_marked(cfg_ctx *x, const config_setting_t *s)
{
    const char *file = config_file_of(x, s);
    int line = config_setting_source_line(s);
    for (size_t i = 0; i < x->nmarks; i++)
        if (x->marks[i].line == line && strcmp(x->marks[i].file, file) == 0)
            return true;
    return false;
}

/* ---- files and paths -------------------------------------------------------- */

cfg_loc config_loc(cfg_ctx *x, const config_setting_t *s)
{
    cfg_loc at = { NULL, 0 };
    if (!s)
        return at;
    const char *f = config_file_of(x, s);
    herald_config *c = x->c;
    for (size_t i = 0; i < c->nfiles && !at.file; i++)
        if (strcmp(c->files[i], f) == 0)
            at.file = c->files[i];
    if (!at.file) {
        char **v = realloc(c->files, (c->nfiles + 1) * sizeof *v);
        char *d = strdup(f);
        if (!v || !d) {
            free(d);
            if (v)
                c->files = v;
            x->oom = true;
            return at;
        }
        c->files = v;
        c->files[c->nfiles++] = d;
        at.file = d;
    }
    at.line = (int)config_setting_source_line(s);
    return at;
}

char *config_strdup(cfg_ctx *x, const char *s)
{
    char *d = strdup(s);
    if (!d)
        x->oom = true;
    return d;
}

char *config_include_path(cfg_ctx *x, const char *name)
{
    char *p = NULL;
    if (name[0] == '/' || !x->inc_dir || strcmp(x->inc_dir, ".") == 0)
        p = strdup(name);
    else if (asprintf(&p, "%s/%s", x->inc_dir, name) < 0)
        p = NULL;
    if (!p)
        x->oom = true;
    return p;
}

const char *config_file_of(cfg_ctx *x, const config_setting_t *s)
{
    const char *f = s ? config_setting_source_file(s) : NULL;
    if (!f || strcmp(f, x->name) == 0)
        return x->name;
    /* libconfig keeps an included file's name as written after @include;
     * show it as opened, joined to the include directory. */
    if (f[0] == '/' || !x->inc_dir || strcmp(x->inc_dir, ".") == 0)
        return f;
    size_t dl = strlen(x->inc_dir);
    for (size_t i = 0; i < x->nnames; i++)
        if (strncmp(x->names[i], x->inc_dir, dl) == 0 && x->names[i][dl] == '/' &&
            strcmp(x->names[i] + dl + 1, f) == 0)
            return x->names[i];
    char **n = realloc(x->names, (x->nnames + 1) * sizeof *n);
    if (!n) {
        x->oom = true;
        return f;
    }
    x->names = n;
    char *p = config_include_path(x, f);
    if (!p)
        return f;
    x->names[x->nnames++] = p;
    return p;
}

char *config_read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? 2 * cap : 8192;
            char *b = realloc(buf, cap);
            if (!b) {
                errno = ENOMEM;
                goto fail;
            }
            buf = b;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        errno = EIO;
        goto fail;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
fail:
    free(buf);
    fclose(f);
    return NULL;
}

char *config_resolve(cfg_ctx *x, const char *value)
{
    if (value[0] == '/' || !x->base)
        return config_strdup(x, value);
    const char *rel = value;
    size_t blen = strlen(x->base);
    /* Only a canonical base (no symlinks) may lose components to "..": in a
     * path with symlinks, "a/.." is not always the directory holding a. */
    for (;;) {
        if (strncmp(rel, "./", 2) == 0) {
            rel += 2;
        } else if (strcmp(rel, ".") == 0) {
            rel += 1;
        } else if (x->base_canonical && (strncmp(rel, "../", 3) == 0 || strcmp(rel, "..") == 0) &&
                   blen > 1) {
            while (blen > 1 && x->base[blen - 1] != '/')
                blen--;
            if (blen > 1)
                blen--; /* the slash, unless it is the root's */
            rel += rel[2] ? 3 : 2;
        } else {
            break;
        }
        while (*rel == '/')
            rel++;
    }
    char *p = NULL;
    int n;
    if (!*rel)
        n = asprintf(&p, "%.*s", (int)blen, x->base);
    else if (blen == 1 && x->base[0] == '/')
        n = asprintf(&p, "/%s", rel);
    else
        n = asprintf(&p, "%.*s/%s", (int)blen, x->base, rel);
    if (n < 0) {
        x->oom = true;
        return NULL;
    }
    return p;
}

/* The directory part of path: "." when it has none. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* Relative paths are joined to the canonical directory when it exists, so
 * that a program that changes directory later still finds its files. */
static int set_base(cfg_ctx *x, const char *dir)
{
    char *real = realpath(dir, NULL);
    if (real) {
        x->base = real;
        x->base_canonical = true;
        return 0;
    }
    x->base = strdup(dir);
    return x->base ? 0 : -1;
}

/* ---- load ------------------------------------------------------------------- */

void config_ctx_free(cfg_ctx *x)
{
    for (size_t i = 0; i < x->nerrs; i++) {
        free(x->errs[i].file);
        free(x->errs[i].text);
    }
    free(x->errs);
    for (size_t i = 0; i < x->nmarks; i++)
        free(x->marks[i].file);
    free(x->marks);
    for (size_t i = 0; i < x->nnames; i++)
        free(x->names[i]);
    free(x->names);
    free(x->base);
}

/* libconfig does not say which include it could not open: read the name
 * back from the @include on the error's line of the main text. */
static bool include_name(const char *text, int line, char *out, size_t size)
{
    const char *p = text;
    for (int l = 1; l < line && p; l++) {
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    const char *inc = p ? strstr(p, "@include") : NULL;
    const char *eol = p ? strchr(p, '\n') : NULL;
    if (!inc || (eol && inc > eol))
        return false;
    const char *q = strchr(inc, '"');
    const char *end = q ? strchr(q + 1, '"') : NULL;
    if (!end || (eol && end > eol) || (size_t)(end - q - 1) >= size)
        return false;
    memcpy(out, q + 1, (size_t)(end - q - 1));
    out[end - q - 1] = '\0';
    return true;
}

static void parse_error(cfg_ctx *x, config_t *cf, const char *main_text)
{
    const char *file = config_error_file(cf);
    char *shown = NULL;
    if (file && strcmp(file, x->name) != 0)
        shown = config_include_path(x, file);
    const char *text = config_error_text(cf) ? config_error_text(cf) : "cannot parse";
    char name[PATH_MAX];
    if (!shown && strcmp(text, "cannot open include file") == 0 &&
        include_name(main_text, config_error_line(cf), name, sizeof name)) {
        char *path = config_include_path(x, name);
        config_err_at(x, NULL, config_error_line(cf), "cannot open include file '%s'",
                      path ? path : name);
        free(path);
        return;
    }
    /* libconfig's own text is often just "syntax error": do not say it twice. */
    if (strncmp(text, "syntax error", 12) == 0)
        config_err_at(x, shown ? shown : NULL, config_error_line(cf), "%s", text);
    else
        config_err_at(x, shown ? shown : NULL, config_error_line(cf), "syntax error: %s", text);
    free(shown);
}

/* The shared second half of both loads: parse, scan, check, report. text is
 * the main file's text (for the scan); path non-NULL reads the file itself so
 * that libconfig records its name in every setting. */
static herald_config *load(cfg_ctx *x, const char *text, const char *path, char **errbuf)
{
    herald_config *c = calloc(1, sizeof *c);
    config_t cf;
    config_init(&cf);
    if (!c || !(c->path = strdup(x->name))) {
        x->oom = true;
        goto done;
    }
    x->c = c;
    if (x->inc_dir)
        config_set_include_dir(&cf, x->inc_dir);

    int ok = path ? config_read_file(&cf, path) : config_read_string(&cf, text);
    if (!ok) {
        if (config_error_type(&cf) == CONFIG_ERR_FILE_IO && !config_error_file(&cf))
            config_err_at(x, NULL, 0, "cannot read: %s", strerror(errno ? errno : EIO));
        else
            parse_error(x, &cf, text);
        goto done;
    }
    config_scan_ints(x, text, x->name, 0);
    config_check_root(x, config_root_setting(&cf));

done:
    (config_destroy)(&cf);
    if (x->nerrs || x->oom) {
        config_flush_errs(x, errbuf);
        config_destroy(&c);
    }
    return c;
}

herald_config *config_load(const char *path, char **errbuf)
{
    cfg_ctx x = { .name = path };
    herald_config *c = NULL;
    char *dir = NULL;
    char *text = config_read_text(path);
    if (!text) {
        config_err_at(&x, NULL, 0, "cannot read: %s", strerror(errno));
        config_flush_errs(&x, errbuf);
        goto cleanup;
    }
    dir = dir_of(path);
    if (!dir || set_base(&x, dir) < 0) {
        x.oom = true;
        config_flush_errs(&x, errbuf);
        goto cleanup;
    }
    x.inc_dir = dir;
    c = load(&x, text, path, errbuf);
cleanup:
    config_ctx_free(&x);
    free(dir);
    free(text);
    return c;
}

herald_config *config_load_string(const char *text, const char *name, const char *base_dir,
                                  char **errbuf)
{
    cfg_ctx x = { .name = name ? name : "<string>", .inc_dir = base_dir };
    if (base_dir && set_base(&x, base_dir) < 0) {
        x.oom = true;
        config_flush_errs(&x, errbuf);
        config_ctx_free(&x);
        return NULL;
    }
    herald_config *c = load(&x, text ? text : "", NULL, errbuf);
    config_ctx_free(&x);
    return c;
}

/* ---- the config's life ------------------------------------------------------- */

static void free_function(cfg_function *f)
{
    free(f->name);
    for (size_t i = 0; i < f->nexec; i++)
        free(f->exec[i]);
    free(f->exec);
    free(f->library);
    free(f->symbol);
    free(f->rt.handler);
    for (size_t i = 0; i < f->nenv; i++) {
        free(f->env[i].key);
        free(f->env[i].value);
    }
    free(f->env);
}

static void free_topic(cfg_topic *t)
{
    free(t->name);
    for (size_t i = 0; i < t->nsubs; i++) {
        cfg_subscription *s = &t->subs[i];
        free(s->function);
        for (size_t j = 0; j < s->nfilters; j++) {
            for (size_t k = 0; k < s->filters[j].nvalues; k++)
                free(s->filters[j].values[k]);
            free(s->filters[j].values);
            free(s->filters[j].key);
        }
        free(s->filters);
    }
    free(t->subs);
}

void config_destroy(herald_config **pc)
{
    herald_config *c = pc ? *pc : NULL;
    if (!c)
        return;
    free(c->path);
    free(c->broker.publish_endpoint);
    free(c->broker.worker_endpoint);
    free(c->broker.admin_endpoint);
    free(c->broker.data_dir);
    free(c->security.secret_key);
    free(c->security.publishers);
    free(c->security.workers);
    free(c->security.admins);
    for (size_t i = 0; i < c->nfunctions; i++)
        free_function(&c->functions[i]);
    free(c->functions);
    for (size_t i = 0; i < c->ntopics; i++)
        free_topic(&c->topics[i]);
    free(c->topics);
    for (size_t i = 0; i < c->nschedules; i++)
        config_free_schedule(&c->schedules[i]);
    free(c->schedules);
    free(c->worker.broker);
    free(c->worker.key);
    free(c->worker.broker_key);
    for (size_t i = 0; i < c->worker.nfunctions; i++)
        free(c->worker.functions[i]);
    free(c->worker.functions);
    free(c->worker.root);
    free(c->worker.run_dir);
    free(c->gateway.listen);
    free(c->gateway.broker);
    free(c->gateway.admin);
    free(c->gateway.region);
    free(c->gateway.account);
    free(c->gateway.key);
    free(c->gateway.broker_key);
    config_free_sources(c);
    for (size_t i = 0; i < c->nfiles; i++)
        free(c->files[i]);
    free(c->files);
    free(c);
    *pc = NULL;
}

const cfg_function *config_function(const herald_config *c, const char *name)
{
    if (!c || !name)
        return NULL;
    for (size_t i = 0; i < c->nfunctions; i++)
        if (c->functions[i].name && strcmp(c->functions[i].name, name) == 0)
            return &c->functions[i];
    return NULL;
}

const cfg_topic *config_topic(const herald_config *c, const char *name)
{
    if (!c || !name)
        return NULL;
    for (size_t i = 0; i < c->ntopics; i++)
        if (c->topics[i].name && strcmp(c->topics[i].name, name) == 0)
            return &c->topics[i];
    return NULL;
}

const char *config_jitter_name(cfg_jitter j)
{
    switch (j) {
    case JITTER_FULL: return "full";
    case JITTER_EQUAL: return "equal";
    case JITTER_NONE: return "none";
    }
    return "?";
}

const char *config_durability_name(cfg_durability d)
{
    switch (d) {
    case DURABILITY_FSYNC: return "fsync";
    case DURABILITY_OS: return "os";
    }
    return "?";
}

const char *config_catch_up_name(cfg_catch_up c)
{
    switch (c) {
    case CATCH_UP_LATEST: return "latest";
    case CATCH_UP_NONE: return "none";
    case CATCH_UP_ALL: return "all";
    }
    return "?";
}

const char *config_rt_format_name(cfg_rt_format f)
{
    switch (f) {
    case RT_FORMAT_RAW: return "raw";
    case RT_FORMAT_SNS: return "sns";
    }
    return "?";
}
