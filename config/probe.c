/* config/probe.c: what the running programs would find (DESIGN §3,
 * `heraldctl check FILE --root DIR`), so that a missing handler, library or
 * key fails the check instead of every delivery, or the start, later.
 *
 * Paths are resolved as the programs resolve them: an exec program, a runtime
 * command or a native library with a '/' against the worker's root (DESIGN
 * §4, §11), a bare program name in PATH (the function's env PATH, else ours:
 * heraldctl's PATH stands for the worker's), key paths as the loader resolved
 * them (against the config file's directory).
 *
 * An exec or runtime command argument is checked as a file under root when it
 * looks like one: relative, with a '/', not an option ('-…'), no space, ':' or
 * '=', and a '.' in its last part (handlers/x.py, dist/index.js — not
 * text/plain). The worker hands such an argument over resolved only when the
 * file exists, and an exec handler runs in an empty directory, where the
 * relative name finds nothing; a runtime runs in root, where it is missing too.
 *
 * A native library is read, never loaded: dlopen would run the library's
 * constructors inside heraldctl. The check reads its ELF header (a shared
 * object of this machine's class, byte order and architecture) and its
 * dynamic symbol table (the symbol defined as a function). What only the
 * dynamic loader can tell — a dependency of the library that is missing — is
 * left to the worker, which refuses the function and logs why.
 *
 * State: one cfg_ctx for the errors of one probe; nothing else.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "../proto/proto.h"

/* The ELF machine of the programs that load the libraries: ours. 0: not
 * known here, not checked. */
#if defined(__x86_64__)
#define HOST_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define HOST_MACHINE EM_AARCH64
#elif defined(__i386__)
#define HOST_MACHINE EM_386
#elif defined(__arm__)
#define HOST_MACHINE EM_ARM
#else
#define HOST_MACHINE 0
#endif

#if __SIZEOF_POINTER__ == 8
typedef Elf64_Ehdr ehdr_t;
typedef Elf64_Shdr shdr_t;
typedef Elf64_Sym sym_t;
#define HOST_CLASS ELFCLASS64
#define SYM_TYPE(i) ELF64_ST_TYPE(i)
#else
typedef Elf32_Ehdr ehdr_t;
typedef Elf32_Shdr shdr_t;
typedef Elf32_Sym sym_t;
#define HOST_CLASS ELFCLASS32
#define SYM_TYPE(i) ELF32_ST_TYPE(i)
#endif
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_DATA ELFDATA2LSB
#else
#define HOST_DATA ELFDATA2MSB
#endif

/* The default PATH of execvp, when none is set. */
#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

/* An error at a setting the loader located. */
#define err_at(x, at, ...) config_err_at((x), (at).file, (at).line, __VA_ARGS__)

static char *join(cfg_ctx *x, const char *root, const char *rel)
{
    char *p = NULL;
    if (rel[0] == '/')
        p = strdup(rel);
    else if (asprintf(&p, "%s/%s", root, rel) < 0)
        p = NULL;
    if (!p)
        x->oom = true;
    return p;
}

/* ---- exec ----------------------------------------------------------------------- */

static bool in_path(const char *prog, const char *path)
{
    while (*path) {
        const char *end = strchrnul(path, ':');
        char full[4096];
        struct stat st;
        if (end > path && snprintf(full, sizeof full, "%.*s/%s", (int)(end - path), path, prog) < (int)sizeof full &&
            stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0)
            return true;
        path = *end ? end + 1 : end;
    }
    return false;
}

/* The rule of the file's opening comment. */
static bool names_a_file(const char *a)
{
    if (a[0] == '/' || a[0] == '-' || !strchr(a, '/') || strpbrk(a, " \t\n:="))
        return false;
    const char *last = strrchr(a, '/') + 1;
    const char *dot = strchr(last, '.');
    return dot && dot != last && dot[1];
}

/* An exec program or a runtime command (f->exec both): what names it in
 * messages, "exec" or "runtime.command". */
static void probe_exec(cfg_ctx *x, const cfg_function *f, const char *label, const char *root)
{
    const char *prog = f->exec[0];
    const char *what = f->runtime ? "runtime.command" : "exec";
    if (strchr(prog, '/')) {
        char *full = join(x, root, prog);
        struct stat st;
        if (!full)
            return;
        if (stat(full, &st) != 0)
            err_at(x, f->exec_at, "%s: %s[0]: %s %s", label, what, full,
                   errno == ENOENT || errno == ENOTDIR ? "does not exist" : strerror(errno));
        else if (!S_ISREG(st.st_mode))
            err_at(x, f->exec_at, "%s: %s[0]: %s is not a regular file", label, what, full);
        else if (access(full, X_OK) != 0)
            err_at(x, f->exec_at, "%s: %s[0]: %s is not executable (mode %04o)", label, what, full,
                   (unsigned)(st.st_mode & 07777));
        free(full);
    } else {
        const char *path = getenv("PATH");
        for (size_t i = 0; i < f->nenv; i++)
            if (strcmp(f->env[i].key, "PATH") == 0)
                path = f->env[i].value;
        if (!in_path(prog, path ? path : DEFAULT_PATH))
            err_at(x, f->exec_at, "%s: %s[0]: '%s' is not an executable program in PATH", label, what, prog);
    }
    for (size_t i = 1; i < f->nexec; i++) {
        if (!names_a_file(f->exec[i]))
            continue;
        char *full = join(x, root, f->exec[i]);
        struct stat st;
        /* A runtime runs in root itself (LAMBDA_TASK_ROOT), an exec handler
         * in an empty directory. */
        if (full && stat(full, &st) != 0 && f->runtime)
            err_at(x, f->exec_at, "%s: %s[%zu]: %s does not exist", label, what, i, full);
        else if (full && stat(full, &st) != 0)
            err_at(x, f->exec_at, "%s: exec[%zu]: %s does not exist (the handler would get '%s' in an empty directory)",
                   label, i, full, f->exec[i]);
        free(full);
    }
}

/* ---- native ----------------------------------------------------------------------- */

/* Why the mapped file is not a library this machine loads, or NULL. */
static const char *elf_header_problem(const unsigned char *m, size_t size)
{
    if (size < sizeof(ehdr_t) || memcmp(m, ELFMAG, SELFMAG) != 0)
        return "is not an ELF shared library";
    const ehdr_t *eh = (const ehdr_t *)m;
    if (m[EI_CLASS] != HOST_CLASS)
        return HOST_CLASS == ELFCLASS64 ? "is a 32-bit library; the worker is 64-bit"
                                        : "is a 64-bit library; the worker is 32-bit";
    if (m[EI_DATA] != HOST_DATA)
        return "is built for the other byte order";
    if (eh->e_type != ET_DYN)
        return "is not an ELF shared library";
    if (HOST_MACHINE && eh->e_machine != HOST_MACHINE)
        return "is built for another architecture";
    return NULL;
}

/* 1: symbol is a function in the dynamic symbol table; 0: not there; -1:
 * defined but not a function; 2: the table cannot be read (no section
 * headers): not judged. Every offset is checked against size. */
static int elf_has_function(const unsigned char *m, size_t size, const char *symbol)
{
    const ehdr_t *eh = (const ehdr_t *)m;
    if (eh->e_shoff == 0 || eh->e_shnum == 0 || eh->e_shentsize != sizeof(shdr_t) || eh->e_shoff > size ||
        (size - eh->e_shoff) / sizeof(shdr_t) < eh->e_shnum)
        return 2;
    const shdr_t *sh = (const shdr_t *)(m + eh->e_shoff);
    for (size_t i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_DYNSYM)
            continue;
        if (sh[i].sh_link >= eh->e_shnum || sh[i].sh_entsize != sizeof(sym_t) || sh[i].sh_offset > size ||
            sh[i].sh_size > size - sh[i].sh_offset)
            return 2;
        const shdr_t *str = &sh[sh[i].sh_link];
        if (str->sh_offset > size || str->sh_size > size - str->sh_offset)
            return 2;
        const char *strs = (const char *)(m + str->sh_offset);
        size_t nstrs = str->sh_size;
        const sym_t *syms = (const sym_t *)(m + sh[i].sh_offset);
        size_t nsyms = sh[i].sh_size / sizeof(sym_t);
        size_t want = strlen(symbol);
        for (size_t k = 0; k < nsyms; k++) {
            size_t off = syms[k].st_name;
            if (off >= nstrs || nstrs - off <= want || memcmp(strs + off, symbol, want + 1) != 0)
                continue;
            if (syms[k].st_shndx == SHN_UNDEF)
                continue;
            int type = SYM_TYPE(syms[k].st_info);
            return type == STT_FUNC || type == STT_GNU_IFUNC ? 1 : -1;
        }
        return 0;
    }
    return 2;
}

static void probe_native(cfg_ctx *x, const cfg_function *f, const char *label, const char *root)
{
    char *full = join(x, root, f->library);
    if (!full)
        return;
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0) {
        err_at(x, f->library_at, "%s: native.library: %s %s", label, full,
               errno == ENOENT || errno == ENOTDIR ? "does not exist" : strerror(errno));
    } else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        err_at(x, f->library_at, "%s: native.library: %s is not a regular file", label, full);
    } else {
        size_t size = (size_t)st.st_size;
        void *m = size ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
        const char *why = m == MAP_FAILED ? "is not an ELF shared library" : elf_header_problem(m, size);
        if (why) {
            err_at(x, f->library_at, "%s: native.library: %s %s", label, full, why);
        } else if (f->symbol) {
            int r = elf_has_function(m, size, f->symbol);
            if (r == 0)
                err_at(x, f->symbol_at, "%s: native.symbol: '%s' is not a function defined in %s", label, f->symbol,
                       full);
            else if (r < 0)
                err_at(x, f->symbol_at, "%s: native.symbol: '%s' is defined in %s but is not a function", label,
                       f->symbol, full);
        }
        if (m != MAP_FAILED)
            munmap(m, size);
    }
    if (fd >= 0)
        close(fd);
    free(full);
}

/* ---- keys ------------------------------------------------------------------------- */

static bool probe_exists(cfg_ctx *x, const char *what, const char *path, cfg_loc at, struct stat *st)
{
    if (stat(path, st) != 0) {
        err_at(x, at, "%s: %s: %s", what, path, strerror(errno));
        return false;
    }
    return true;
}

/* A secret key: as the broker's start checks its own (auth.c), for every
 * program's. */
static void probe_secret(cfg_ctx *x, const char *what, const char *path, cfg_loc at)
{
    struct stat st;
    char z85[41], why[600];
    if (!probe_exists(x, what, path, at, &st))
        return;
    if (!S_ISREG(st.st_mode)) {
        err_at(x, at, "%s: %s is not a regular file", what, path);
        return;
    }
    if (st.st_mode & 077) {
        err_at(x, at, "%s: %s is readable or writable by group or others (mode %04o): chmod 600 %s", what, path,
               (unsigned)(st.st_mode & 07777), path);
        return;
    }
    if (keys_read(path, "public-key", z85, why, sizeof why) != 0 ||
        keys_read(path, "secret-key", z85, why, sizeof why) != 0)
        err_at(x, at, "%s: %s", what, why);
    explicit_bzero(z85, sizeof z85);
}

static void probe_public(cfg_ctx *x, const char *what, const char *path, cfg_loc at)
{
    struct stat st;
    char z85[41], why[600];
    if (!probe_exists(x, what, path, at, &st))
        return;
    if (keys_read(path, "public-key", z85, why, sizeof why) != 0)
        err_at(x, at, "%s: %s", what, why);
}

/* A role directory: every .pub in it must read, as the broker loads them. */
static void probe_dir(cfg_ctx *x, const char *what, const char *dir, cfg_loc at)
{
    DIR *d = opendir(dir);
    if (!d) {
        err_at(x, at, "%s: %s: %s", what, dir, strerror(errno));
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".pub") != 0)
            continue;
        char path[4096], z85[41], why[600];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (keys_read(path, "public-key", z85, why, sizeof why) != 0)
            err_at(x, at, "%s: %s", what, why);
    }
    closedir(d);
}

static void probe_keys(cfg_ctx *x, const herald_config *c)
{
    const cfg_security *s = &c->security;
    if (s->present && s->curve) {
        if (s->secret_key)
            probe_secret(x, "security.secret_key", s->secret_key, s->secret_key_at);
        if (s->publishers)
            probe_dir(x, "security.publishers", s->publishers, s->publishers_at);
        if (s->workers)
            probe_dir(x, "security.workers", s->workers, s->workers_at);
        if (s->admins)
            probe_dir(x, "security.admins", s->admins, s->admins_at);
    }
    if (c->worker.key)
        probe_secret(x, "worker.key", c->worker.key, c->worker.key_at);
    if (c->worker.broker_key)
        probe_public(x, "worker.broker_key", c->worker.broker_key, c->worker.broker_key_at);
    if (c->gateway.key)
        probe_secret(x, "gateway.key", c->gateway.key, c->gateway.key_at);
    if (c->gateway.broker_key)
        probe_public(x, "gateway.broker_key", c->gateway.broker_key, c->gateway.broker_key_at);
}

/* ---- entry -------------------------------------------------------------------------- */

size_t config_probe(const herald_config *c, const char *root, char **errbuf)
{
    cfg_ctx x = { .name = c->path };
    for (size_t i = 0; i < c->nfunctions; i++) {
        const cfg_function *f = &c->functions[i];
        char label[200];
        snprintf(label, sizeof label, "functions[%zu] (%s)", i, f->name);
        if (f->native && f->library)
            probe_native(&x, f, label, root);
        else if (!f->native && f->nexec)
            probe_exec(&x, f, label, root);
    }
    probe_keys(&x, c);
    size_t n = x.nerrs + (x.oom ? 1 : 0);
    if (n)
        config_flush_errs(&x, errbuf);
    config_ctx_free(&x);
    return n;
}
