/* fndef: the runner's function definitions (runner_define, DESIGN §4).
 *
 * Owns r->fns: each definition deep-copied (def_copy, def_free), compared
 * with the one it replaces (def_equal: the same again only un-refuses it; a
 * change lets the pools retire what runs the old one), and resolved once, at
 * definition time, against the runner's root: a native function's library,
 * an exec function's argv and program (resolve_program, execvp's search with
 * the handler's PATH). What cannot run is refused here, with the reason
 * (runner_define_why); a native function's library that fails to start is
 * refused later, by pool_host.c.
 */
#define _GNU_SOURCE
#include "runner_core.h"

#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

static void def_free(proto_fndef *d)
{
    free(d->name);
    free(d->rt.handler);
    for (uint32_t i = 0; i < d->nexec; i++)
        free(d->exec[i]);
    free(d->exec);
    free(d->library);
    free(d->symbol);
    for (uint32_t i = 0; i < d->nenv; i++) {
        free(d->env[i].key);
        free(d->env[i].value);
    }
    free(d->env);
    memset(d, 0, sizeof *d);
}

static char *sdup(const char *s, bool *ok)
{
    if (!s)
        return NULL;
    char *c = strdup(s);
    if (!c)
        *ok = false;
    return c;
}

static int def_copy(proto_fndef *d, const proto_fndef *s)
{
    bool ok = true;
    memset(d, 0, sizeof *d);
    d->name = sdup(s->name, &ok);
    d->native = s->native;
    d->runtime = s->runtime;
    d->rt = s->rt;
    d->rt.handler = sdup(s->rt.handler, &ok);
    d->timeout_ms = s->timeout_ms;
    d->memory_mb = s->memory_mb;
    d->max_attempts = s->max_attempts;
    d->log_output = s->log_output;
    d->library = sdup(s->library, &ok);
    d->symbol = sdup(s->symbol, &ok);
    if (s->nexec && (d->exec = calloc(s->nexec, sizeof *d->exec)))
        for (d->nexec = 0; d->nexec < s->nexec; d->nexec++)
            d->exec[d->nexec] = sdup(s->exec[d->nexec], &ok);
    if (s->nenv && (d->env = calloc(s->nenv, sizeof *d->env)))
        for (d->nenv = 0; d->nenv < s->nenv; d->nenv++) {
            d->env[d->nenv].key = sdup(s->env[d->nenv].key, &ok);
            d->env[d->nenv].value = sdup(s->env[d->nenv].value, &ok);
        }
    if (!ok || (s->nexec && !d->exec) || (s->nenv && !d->env)) {
        def_free(d);
        return -1;
    }
    return 0;
}

static bool streq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static bool def_equal(const proto_fndef *a, const proto_fndef *b)
{
    if (!streq(a->name, b->name) || a->native != b->native || a->runtime != b->runtime ||
        a->rt.format != b->rt.format || a->rt.max_invocations != b->rt.max_invocations ||
        a->rt.idle_timeout_ms != b->rt.idle_timeout_ms || a->rt.init_timeout_ms != b->rt.init_timeout_ms ||
        a->rt.concurrency != b->rt.concurrency || !streq(a->rt.handler, b->rt.handler) ||
        a->timeout_ms != b->timeout_ms ||
        a->memory_mb != b->memory_mb || !streq(a->library, b->library) ||
        !streq(a->symbol, b->symbol) || a->nexec != b->nexec || a->nenv != b->nenv)
        return false;
    for (uint32_t i = 0; i < a->nexec; i++)
        if (!streq(a->exec[i], b->exec[i]))
            return false;
    for (uint32_t i = 0; i < a->nenv; i++)
        if (!streq(a->env[i].key, b->env[i].key) || !streq(a->env[i].value, b->env[i].value))
            return false;
    return true;
}

/* What a definition owns: its copy, argv, path. */
static void def_clear(fn *f)
{
    def_free(&f->def);
    for (uint32_t i = 0; f->exec.argv && f->exec.argv[i]; i++)
        free(f->exec.argv[i]);
    free(f->exec.argv);
    free(f->path);
    f->exec.argv = NULL;
    f->path = NULL;
}

void fndef_free(fn *f)
{
    def_clear(f);
    free(f);
}

/* exec's program lookup (execvp's, with the handler's PATH), done once at
 * definition time: a program that cannot run refuses the function, and the
 * supervisors need not search PATH per attempt. The absolute path, or NULL. */
static char *resolve_program(const char *prog, const proto_fndef *d)
{
    if (strchr(prog, '/'))
        return access(prog, X_OK) == 0 ? strdup(prog) : NULL;
    const char *path = getenv("PATH");
    for (uint32_t i = 0; i < d->nenv; i++)
        if (!strcmp(d->env[i].key, "PATH"))
            path = d->env[i].value;
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchrnul(path, ':');
        char full[PATH_MAX];
        struct stat st;
        if (end > path && snprintf(full, sizeof full, "%.*s/%s", (int)(end - path), path, prog) < (int)sizeof full &&
            stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0)
            return strdup(full);
        path = *end ? end + 1 : end;
    }
    return NULL;
}

int runner_define(runner_t *r, const proto_fndef *def)
{
    return runner_define_why(r, def, NULL, 0);
}

/* The reason a definition is refused: logged, and kept in why when given. */
#define REFUSE(...) do { LOG_ERROR("runner: define %s: %s", d.name, (snprintf(reason, sizeof reason, __VA_ARGS__), reason)); \
                         if (why && why_len) snprintf(why, why_len, "%s", reason); } while (0)

int runner_define_why(runner_t *r, const proto_fndef *def, char *why, size_t why_len)
{
    char reason[PROTO_ERROR_TEXT_MAX];
    if (!r || !def || !def->name || !proto_valid_name(def->name)) {
        LOG_ERROR("runner: define: bad function name");
        if (why && why_len) snprintf(why, why_len, "bad function name");
        return -1;
    }
    proto_fndef d;
    if (def_copy(&d, def) < 0) {
        LOG_ERROR("runner: define %s: out of memory", def->name);
        if (why && why_len) snprintf(why, why_len, "out of memory");
        return -1;
    }
    char **argv = NULL;
    char *library = NULL;
    if (d.native) {
        if (!d.library || !d.library[0] || !d.symbol || !d.symbol[0]) {
            REFUSE("native needs a library and a symbol");
            goto fail;
        }
        library = d.library[0] == '/' ? strdup(d.library) : rundir_join(r->root, d.library);
        if (!library)
            goto oom;
        if (access(library, R_OK) < 0) {
            REFUSE("library %s: %s", library, strerror(errno));
            goto fail;
        }
    } else {
        if (d.nexec == 0 || !d.exec[0][0]) {
            REFUSE(d.runtime ? "runtime needs a command" : "exec needs a command");
            goto fail;
        }
        argv = calloc(d.nexec + 1, sizeof *argv);
        if (!argv)
            goto oom;
        for (uint32_t i = 0; i < d.nexec; i++) {
            const char *a = d.exec[i];
            struct stat st;
            bool rel = a[0] != '/' && strchr(a, '/');
            /* The program with a '/' always; an argument only when it names a
             * file under root (exec = ["python3", "handlers/x.py"]): the handler
             * runs in an empty directory, where no relative path could work. */
            char *full = rel ? rundir_join(r->root, a) : NULL;
            if (rel && !full)
                goto oom;
            if (full && i > 0 && (a[0] == '-' || stat(full, &st) < 0)) {
                free(full);
                full = NULL;
            }
            argv[i] = full ? full : strdup(a);
            if (!argv[i])
                goto oom;
        }
        library = resolve_program(argv[0], &d);   /* exec keeps its program here */
        if (!library) {
            REFUSE("%s is not an executable program", argv[0]);
            goto fail;
        }
    }

    fn *f = NULL;
    for (fn *g = r->fns; g; g = g->next)
        if (!strcmp(g->def.name, d.name))
            f = g;
    if (!f) {
        f = calloc(1, sizeof *f);
        if (!f)
            goto oom;
        f->next = r->fns;
        r->fns = f;
    } else if (def_equal(&f->def, &d)) {
        f->refused = false;   /* the same again (a reconnect): give its start another try */
        f->def.log_output = d.log_output;   /* main's own business: nothing that runs changes */
        def_free(&d);
        free(library);
        for (uint32_t i = 0; argv && argv[i]; i++)
            free(argv[i]);
        free(argv);
        return 0;
    } else {
        /* Changed: each pool lets go of what it holds for the old definition. */
        pool_host_fn_changed(r, f);
        pool_runtime_fn_changed(r, f);
        def_clear(f);
    }
    f->def = d;
    f->kind = d.native ? FN_NATIVE : d.runtime ? FN_RUNTIME : FN_EXEC;
    f->exec.argv = argv;
    f->path = library;
    f->refused = false;
    return 0;
oom:
    REFUSE("out of memory");
fail:
    for (uint32_t i = 0; argv && i < d.nexec; i++)
        free(argv[i]);
    free(argv);
    free(library);
    def_free(&d);
    return -1;
}

fn *fndef_find(runner_t *r, const char *name)
{
    for (fn *f = r->fns; f; f = f->next)
        if (!strcmp(f->def.name, name))
            return f;
    return NULL;
}
