/* exec: an exec supervisor (DESIGN §4), a fork of the launcher.
 *
 * It runs exec attempts one at a time: the first comes with its start, the
 * next ones from main on the same channel (CH_S_RUN) once it said it stays.
 * While an attempt runs it is that attempt's child subreaper, so every
 * process the handler starts, setsid() or not, re-parents to it when its
 * parent dies. Killing the tree: SIGKILL the handler's group while the
 * handler is an unreaped zombie (so the group id cannot be reused), then kill
 * and reap our children by PID until none is left. Only then does it take
 * another attempt; a tree it cannot kill (D state) retires it. Reuse saves
 * a fork and an exit per attempt, and the run directory's mkdir: between
 * attempts the dir is emptied, reset to 0700 and parked (WDIR/(sid % 8)/s<sid>);
 * the next attempt gets it renamed to its own path (WDIR/(id % 8)/id), so
 * each attempt still has a fresh empty dir of its own, gone from its path
 * before the result. It owns the payload (written without blocking,
 * interleaved with reading), stdout (6 MiB kept, the rest read, counted and
 * dropped; an ok attempt past 6 MiB reports no output but too_large_text),
 * stderr (last 4 KiB kept, and cut into log lines for main: CH_LOG before
 * the result, sent without blocking, hlog.h) and the deadline (SIGTERM at the timeout, SIGKILL
 * 1 s later). Invariant: exactly one CH_RESULT per attempt, or none when main
 * closed the channel (a cancel, or an idle supervisor's end: it exits). The
 * handler starts by vfork+execve from a helper that writes only its context
 * struct (posix_spawn's technique; posix_spawn itself cannot set RLIMIT_DATA
 * in the child alone).
 */
#define _GNU_SOURCE
#include "runner_int.h"
#include "hlog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define MAX_ARGS 4096       /* argv entries accepted from main */
#define MAX_ENV 4096        /* environment entries */
#define IO_CHUNK (1 << 16)  /* read/write size: one default pipe buffer */
#define REAP_MAX_MS 5000    /* give up killing a tree after this (D-state processes) */

typedef struct {
    const char *path;
    char **argv, **envp;
    const char *dir;
    int in, out, err;       /* pipe ends that become 0, 1, 2 */
    rlim_t data;            /* RLIMIT_DATA bytes; 0: unchanged */
    volatile int err_no;    /* set by the child when execve fails (shared memory: vfork) */
} spawn_ctx;

const char *exec_timeout_text(const char *prefix, uint32_t ms, char buf[static 48])
{
    snprintf(buf, 48, "%stimeout after %g s", prefix, ms / 1000.0);
    return buf;
}

const char *exec_killed_by(int sig, char buf[static 48])
{
    const char *a = sigabbrev_np(sig);
    if (a)
        snprintf(buf, 48, "killed by signal %d (SIG%s)", sig, a);
    else
        snprintf(buf, 48, "killed by signal %d", sig);
    return buf;
}

static int rm_at(int dfd, const char *name, bool dir_first)
{
    /* An attempt's dir is usually left empty: try rmdir first there. */
    if (dir_first && unlinkat(dfd, name, AT_REMOVEDIR) == 0)
        return 0;
    if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -1;
    if (unlinkat(dfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
        return 0;
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES) {   /* a handler may chmod 000 its own dirs */
        fchmodat(dfd, name, 0700, 0);
        fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0)
        return -1;
    fchmod(fd, 0700);
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            rm_at(dirfd(d), e->d_name, false);
    closedir(d);
    return unlinkat(dfd, name, AT_REMOVEDIR);
}

int exec_rmtree(const char *path)
{
    return rm_at(AT_FDCWD, path, true);
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs in the vfork child: only syscalls, only ctx written. */
__attribute__((noinline, noreturn)) static void child_exec(spawn_ctx *c)
{
    setpgid(0, 0);
    if (dup2(c->in, 0) < 0 || dup2(c->out, 1) < 0 || dup2(c->err, 2) < 0 || chdir(c->dir) < 0)
        goto fail;
    if (syscall(SYS_close_range, 3u, ~0u, 0) < 0)
        for (int fd = 3; fd < 65536; fd++)
            close(fd);
    if (c->data) {
        struct rlimit rl = { c->data, c->data };
        if (setrlimit(RLIMIT_DATA, &rl) < 0)
            goto fail;
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(c->path, c->argv, c->envp);
fail:
    c->err_no = errno ? errno : EINVAL;
    _exit(127);
}

static pid_t spawn(spawn_ctx *c)
{
    pid_t pid = vfork();
    if (pid == 0)
        child_exec(c);
    return pid;
}

/* Adds "K=V", replacing an earlier entry with the same key (later wins). */
static void env_set(char **env, size_t *n, char *kv)
{
    const char *eq = strchr(kv, '=');
    size_t klen = eq ? (size_t)(eq - kv) : strlen(kv);
    for (size_t i = 0; i < *n; i++)
        if (!strncmp(env[i], kv, klen) && env[i][klen] == '=') {
            env[i] = kv;
            return;
        }
    env[(*n)++] = kv;   /* the caller sized env for every entry */
}

static char *fmt(const char *f, const char *a, const char *b)
{
    size_t n = strlen(f) + strlen(a) + strlen(b) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, f, a, b);
    return s;
}

/* execvp's search, but with the handler's PATH rather than ours. */
static char *find_program(const char *name, char **env, size_t nenv)
{
    if (strchr(name, '/'))
        return strdup(name);
    const char *path = "/usr/local/bin:/usr/bin:/bin";
    for (size_t i = 0; i < nenv; i++)
        if (!strncmp(env[i], "PATH=", 5))
            path = env[i] + 5;
    while (*path) {
        const char *end = strchrnul(path, ':');
        if (end > path) {
            size_t dl = (size_t)(end - path);
            char *full = malloc(dl + strlen(name) + 2);
            if (!full)
                return NULL;
            memcpy(full, path, dl);
            full[dl] = '/';
            strcpy(full + dl + 1, name);
            struct stat st;
            if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0)
                return full;
            free(full);
        }
        path = *end ? end + 1 : end;
    }
    return NULL;
}

/* One supervisor's state across the attempts it runs, one at a time. */
typedef struct {
    int rep;                /* its channel to main */
    int sfd;                /* signalfd: SIGCHLD */
    const char *wdir;
    uint64_t sid;           /* its first attempt's id: names its parked run dir */
    char parked[4096];      /* the run dir between attempts, emptied; "" when none */
    struct stat made;       /* the run dir in use as mkdir made it */
    int flags;              /* … and its inode flags (FS_IOC_GETFLAGS), if has_flags */
    bool has_flags;
    wbuf in;                /* requests after the first */
    loglines log;           /* stderr as log lines for main (its rate spans the attempts) */
} sup;

static void report(int fd, uint64_t token, proto_outcome o, int64_t started_ms, uint32_t dur_us,
                   const char *error, const void *out, size_t outlen)
{
    wbuf b = { 0 };
    if (result_put(&b, token, o, started_ms, dur_us, error, out, outlen) == 0)
        launcher_write_all(fd, b.p, b.len);
    wbuf_free(&b);
}

/* Walks the entries of the directory open as fd (but . and ..): with
 * remove, deletes them (again while a pass still finds one: a directory
 * changed while read may skip entries). 0 when it is (now) empty, -1 when an
 * entry is left (or a read failed). */
static int dir_entries(int fd, bool remove)
{
    char buf[4096];
    for (int pass = 0; pass < 3; pass++) {
        if (lseek(fd, 0, SEEK_SET) < 0)
            return -1;
        bool any = false;
        ssize_t k;
        while ((k = getdents64(fd, buf, sizeof buf)) > 0)
            for (ssize_t off = 0; off < k;) {
                const struct dirent64 *e = (const void *)(buf + off);
                off += e->d_reclen;
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                    continue;
                if (!remove)
                    return -1;
                any = true;
                rm_at(fd, e->d_name, false);
            }
        if (k < 0)
            return -1;
        if (!any)
            return 0;
    }
    return -1;
}

/* Is the directory open as fd still the one mkdir made (same inode, owner,
 * group and inode flags), mode 0700, without an extended attribute a
 * handler can set (user.*, trusted.*, ACLs in system.*) and without an
 * entry? Only such a dir goes to an attempt: nothing an earlier attempt did
 * to it, or another handler did to it while parked, may reach it. */
static bool pristine(const sup *s, int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_dev != s->made.st_dev ||
        st.st_ino != s->made.st_ino || st.st_uid != s->made.st_uid || st.st_gid != s->made.st_gid ||
        (st.st_mode & 07777) != 0700)
        return false;
    int fl;
    if (s->has_flags && (ioctl(fd, FS_IOC_GETFLAGS, &fl) < 0 || fl != s->flags))
        return false;
    char names[1024];
    ssize_t n = flistxattr(fd, names, sizeof names);
    if (n < 0 && errno != ENOTSUP)
        return false;   /* ERANGE included: more names than a fresh dir has */
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(names + i) + 1)
        if (strncmp(names + i, "security.", 9) != 0)
            return false;
    return dir_entries(fd, false) == 0;
}

/* Gives the attempt its run dir at path: the parked one moved there (a
 * rename: ext4's mkdir searches its inode bitmap past every recently freed
 * inode, which at a thousand attempts a second cost more than the handler's
 * fork) if it is pristine — checked here, when it is taken, whatever
 * happened to it since — else a new one. 0, or -1 with errno. */
static int take_dir(sup *s, const char *path)
{
    if (s->parked[0]) {
        bool moved = rename(s->parked, path) == 0;
        if (!moved)
            exec_rmtree(s->parked);
        s->parked[0] = '\0';
        if (moved) {
            int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            bool ok = fd >= 0 && pristine(s, fd);
            if (fd >= 0)
                close(fd);
            if (ok)
                return 0;
            exec_rmtree(path);   /* not as made, or changed while parked: a new one */
        }
    }
    if (mkdir(path, 0700) < 0)
        return -1;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &s->made) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        exec_rmtree(path);
        errno = e;
        return -1;
    }
    s->has_flags = ioctl(fd, FS_IOC_GETFLAGS, &s->flags) == 0;
    close(fd);
    return 0;
}

/* After an attempt, once none of its processes is left: empties its run dir
 * (mode 0700 again) and parks it for the next attempt, which checks it; a
 * dir that cannot be emptied is removed. */
static void release_dir(sup *s, const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        bool ok = fchmod(fd, 0700) == 0 && dir_entries(fd, true) == 0;
        close(fd);
        if (ok) {
            snprintf(s->parked, sizeof s->parked, "%s/%llu/s%llu", s->wdir,
                     (unsigned long long)(s->sid % RUN_SHARDS), (unsigned long long)s->sid);
            if (rename(path, s->parked) == 0)
                return;
            s->parked[0] = '\0';
        }
    }
    if (exec_rmtree(path) < 0)
        LOG_WARN("supervisor: rm -r %s: %s", path, strerror(errno));
}

__attribute__((noreturn)) static void sup_exit(sup *s)
{
    if (s->parked[0])
        exec_rmtree(s->parked);
    _exit(0);
}

/* Fails before the handler started: reports, and the supervisor goes on. */
static bool fail(sup *s, const char *dir, const char *why)
{
    if (dir)
        release_dir(s, dir);
    report(s->rep, SUP_STAYS, OUT_ERROR, wall_ms(), 0, why, NULL, 0);
    return true;
}

typedef struct {
    char *out;              /* stdout kept, ≤ PROTO_OUTPUT_MAX */
    size_t outlen, outcap;
    uint64_t out_dropped;   /* stdout bytes past the cap */
    char err[STDERR_KEEP];  /* ring of the last stderr bytes */
    uint64_t errtotal;      /* stderr bytes seen */
    loglines *log;          /* stderr's lines go there too */
} capture;

/* Reads what is there: 1 at EOF (fd closed and set to -1), -1 when nothing
 * more is there now (EAGAIN), 0 when it stopped to let the other fds run. */
static int drain(int *fd, capture *c, bool is_out)
{
    static char scratch[IO_CHUNK];
    for (int rounds = 0; rounds < 64; rounds++) {   /* bounded: let the others run */
        char *dst = scratch;
        size_t want = sizeof scratch;
        if (is_out && c->outlen < PROTO_OUTPUT_MAX) {
            if (c->outcap - c->outlen < IO_CHUNK && c->outcap < PROTO_OUTPUT_MAX) {
                size_t cap = c->outcap ? c->outcap * 2 : IO_CHUNK;
                if (cap > PROTO_OUTPUT_MAX)
                    cap = PROTO_OUTPUT_MAX;
                char *p = realloc(c->out, cap);
                if (p) {
                    c->out = p;
                    c->outcap = cap;
                }
            }
            if (c->outcap > c->outlen) {
                dst = c->out + c->outlen;
                want = c->outcap - c->outlen;
                if (want > IO_CHUNK)
                    want = IO_CHUNK;
            }
        }
        ssize_t n = read(*fd, dst, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return -1;
        if (n <= 0) {
            close(*fd);
            *fd = -1;
            return 1;
        }
        if (is_out) {
            if (dst == scratch)
                c->out_dropped += (uint64_t)n;
            else
                c->outlen += (size_t)n;
        } else {
            for (ssize_t i = 0; i < n; i++)
                c->err[(c->errtotal + (uint64_t)i) % STDERR_KEEP] = scratch[i];
            c->errtotal += (uint64_t)n;
            loglines_feed(c->log, scratch, (size_t)n, mono_us());
        }
    }
    return 0;
}

/* The last STDERR_KEEP bytes of stderr as a C string, or NULL when empty. */
static char *stderr_text(const capture *c)
{
    if (c->errtotal == 0)
        return NULL;
    size_t n = c->errtotal < STDERR_KEEP ? (size_t)c->errtotal : STDERR_KEEP;
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    size_t start = (size_t)((c->errtotal - n) % STDERR_KEEP);
    for (size_t i = 0; i < n; i++)
        s[i] = c->err[(start + i) % STDERR_KEEP];
    s[n] = '\0';
    return s;
}

static void set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* What one attempt allocates; freed when it ends. */
typedef struct {
    char **argv, **env;
    const char **fenv;
    char *own[8];           /* the environment entries made here */
    size_t nown;
    char *prog;
} request;

static void request_free(request *q)
{
    free(q->argv);
    free(q->env);
    free(q->fenv);
    for (size_t i = 0; i < q->nown; i++)
        free(q->own[i]);
    free(q->prog);
}

static char *own(request *q, char *s)
{
    if (s && q->nown < sizeof q->own / sizeof q->own[0])
        return q->own[q->nown++] = s;
    free(s);
    return NULL;
}

/* Kills what is left of the handler's tree: its group, then every orphan
 * that re-parented to us, until we have no child left. false when some
 * process would not die (a D-state process): then this supervisor retires. */
static bool kill_tree(pid_t pid, uint64_t id)
{
    kill(-pid, SIGKILL);
    waitpid(pid, NULL, 0);
    if (launcher_kill_children(mono_us() / 1000 + REAP_MAX_MS) == 0)
        return true;
    LOG_ERROR("supervisor: attempt %llu: processes survived SIGKILL", (unsigned long long)id);
    return false;
}

/* One attempt, from its request to its report: what the steps of run_one share. */
typedef struct {
    chan_exec m;            /* the request (strings point into its body) */
    request q;              /* what the attempt allocates */
    char dir[4096];         /* its run directory */
    size_t nenv;            /* entries in q.env */
    int64_t started_ms;     /* wall clock, as reported */
    int64_t t0, end_us;     /* monotonic: the handler's start and exit (0: not seen) */
    pid_t pid;
    int in, out, err;       /* our ends of its stdin, stdout, stderr; -1 once closed */
    capture cap;
    const char *message_id; /* HERALD_MESSAGE_ID and HERALD_ATTEMPT, for its log lines */
    uint32_t attempt;
    bool timed_out, cancelled;
    siginfo_t si;           /* how it exited (si_pid 0: not seen) */
} run;

/* Decodes a CH_L_EXEC / CH_S_RUN body into u (argv, the function's
 * environment, the payload). false when it is malformed or memory is short. */
static bool run_decode(run *u, const char *b, uint32_t n)
{
    chan_exec *m = &u->m;
    request *q = &u->q;
    bool ok = chan_exec_get(b, n, m) && m->argc > 0 && m->argc <= MAX_ARGS && m->env.n <= MAX_ENV;
    uint32_t nfenv = m->env.n;
    if (ok) {
        q->argv = calloc(m->argc + 1, sizeof *q->argv);
        q->env = calloc(nfenv + 9, sizeof *q->env);
        q->fenv = calloc(nfenv + 1, sizeof *q->fenv);
    }
    for (uint32_t i = 0; q->argv && i < m->argc; i++)
        q->argv[i] = (char *)chan_strs_next(&m->args);
    for (uint32_t i = 0; q->fenv && i < nfenv; i++) {
        const char *e = q->fenv[i] = chan_strs_next(&m->env);
        if (!strncmp(e, "HERALD_MESSAGE_ID=", 18))   /* later entries win, as in the environment */
            u->message_id = e + 18;
        else if (!strncmp(e, "HERALD_ATTEMPT=", 15))
            u->attempt = (uint32_t)strtoul(e + 15, NULL, 10);
    }
    return ok && q->argv && q->env && q->fenv;
}

/* The environment, exactly (DESIGN §4); later entries win. Also sets
 * started_ms (HERALD_DEADLINE counts from it). false: out of memory. */
static bool run_environment(run *u)
{
    request *q = &u->q;
    char **env = q->env;
    size_t nenv = 0;
    static const char *const keep[] = { "PATH", "LANG", "TZ" };
    bool oom = false;
    for (size_t i = 0; i < 3; i++) {
        const char *v = getenv(keep[i]);
        if (v) {
            char *kv = own(q, fmt("%s=%s", keep[i], v));
            oom |= !kv;
            if (kv)
                env_set(env, &nenv, kv);
        }
    }
    char *home = own(q, fmt("%s=%s", "HOME", u->dir)), *tmp = own(q, fmt("%s=%s", "TMPDIR", u->dir));
    oom |= !home || !tmp;
    if (!oom) {
        env_set(env, &nenv, home);
        env_set(env, &nenv, tmp);
    }
    for (uint32_t i = 0; q->fenv[i]; i++)
        env_set(env, &nenv, (char *)q->fenv[i]);
    u->started_ms = wall_ms();
    char dl[32];
    snprintf(dl, sizeof dl, "%lld", (long long)(u->started_ms + u->m.timeout_ms));
    char *dlv = own(q, fmt("%s=%s", "HERALD_DEADLINE", dl));
    if (oom || !dlv)
        return false;
    env_set(env, &nenv, dlv);
    env[nenv] = NULL;
    u->nenv = nenv;
    return true;
}

/* Finds the program, makes the pipes and starts the handler in its run
 * directory. 0, or -1 with the reason in why (nothing left open). */
static int run_spawn(run *u, char *why, size_t why_len)
{
    request *q = &u->q;
    q->prog = u->m.program[0] ? strdup(u->m.program) : find_program(q->argv[0], q->env, u->nenv);
    if (!q->prog) {
        snprintf(why, why_len, "exec %.400s: command not found", q->argv[0]);
        return -1;
    }
    int pin[2] = { -1, -1 }, pout[2] = { -1, -1 }, perr[2] = { -1, -1 };
    if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0) {
        for (int i = 0; i < 2; i++) {
            if (pin[i] >= 0) close(pin[i]);
            if (pout[i] >= 0) close(pout[i]);
            if (perr[i] >= 0) close(perr[i]);
        }
        snprintf(why, why_len, "runner: pipe failed");
        return -1;
    }
    spawn_ctx sc = { .path = q->prog, .argv = q->argv, .envp = q->env, .dir = u->dir,
                     .in = pin[0], .out = pout[1], .err = perr[1],
                     .data = (rlim_t)u->m.memory_mb << 20, .err_no = 0 };
    u->t0 = mono_us();
    pid_t pid = spawn(&sc);
    close(pin[0]);
    close(pout[1]);
    close(perr[1]);
    if (pid < 0 || sc.err_no) {
        int e = pid < 0 ? errno : sc.err_no;
        if (pid > 0)
            waitpid(pid, NULL, 0);
        close(pin[1]);
        close(pout[0]);
        close(perr[0]);
        snprintf(why, why_len, "exec %.400s: %s", q->prog, strerror(e));
        return -1;
    }
    setpgid(pid, pid);   /* the child did it too; whichever runs first wins the race */
    u->pid = pid;
    u->in = pin[1];
    u->out = pout[0];
    u->err = perr[0];
    set_nonblock(u->in);
    set_nonblock(u->out);
    set_nonblock(u->err);
    if (u->m.payload_len == 0) {
        close(u->in);
        u->in = -1;
    }
    return 0;
}

/* Feeds the payload, reads stdout and stderr and enforces the timeout until
 * the handler exits (si, end_us) or main cancels (cancelled). */
static void run_io(sup *s, run *u)
{
    const char *payload = u->m.payload;
    size_t paylen = u->m.payload_len, payoff = 0;
    int64_t deadline_us = u->m.timeout_ms ? u->t0 + (int64_t)u->m.timeout_ms * 1000 : 0;
    int64_t kill_at_us = 0;
    pid_t pid = u->pid;
    bool log_waits = false;   /* log lines wait for main to take them */
    for (;;) {
        int64_t now = mono_us();
        if (deadline_us && !u->timed_out && now >= deadline_us) {
            u->timed_out = true;
            kill(-pid, SIGTERM);
            launcher_signal_children(SIGTERM);
            kill_at_us = now + KILL_GRACE_MS * 1000;
        }
        if (kill_at_us && now >= kill_at_us) {
            kill(-pid, SIGKILL);
            launcher_signal_children(SIGKILL);
            kill_at_us = now + KILL_GRACE_MS * 1000;   /* and again, should one survive */
        }
        int64_t next = kill_at_us ? kill_at_us : (u->timed_out ? 0 : deadline_us);
        int tmo = -1;
        if (next) {
            int64_t left = (next - now + 999) / 1000;
            tmo = left < 0 ? 0 : (int)left;
        }
        struct pollfd pf[5] = {
            { .fd = s->sfd, .events = POLLIN },
            { .fd = s->rep, .events = POLLIN | (log_waits ? POLLOUT : 0) },
            { .fd = u->in, .events = POLLOUT },
            { .fd = u->out, .events = POLLIN },
            { .fd = u->err, .events = POLLIN },
        };
        if (poll(pf, 5, tmo) < 0 && errno != EINTR)
            break;
        if (pf[1].revents & ~POLLOUT) {
            /* Main sends nothing while an attempt runs: EOF (or anything
             * else) is a cancel. */
            char c;
            ssize_t k = recv(s->rep, &c, 1, MSG_DONTWAIT);
            if (k >= 0 || (errno != EAGAIN && errno != EINTR)) {
                u->cancelled = true;
                break;
            }
        }
        if (pf[2].revents && u->in >= 0) {
            while (payoff < paylen) {
                size_t chunk = paylen - payoff < IO_CHUNK ? paylen - payoff : IO_CHUNK;
                ssize_t w = write(u->in, payload + payoff, chunk);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w < 0 && errno == EAGAIN)
                    break;
                if (w < 0) {   /* EPIPE: the handler does not want the rest */
                    payoff = paylen;
                    break;
                }
                payoff += (size_t)w;
            }
            if (payoff == paylen) {
                close(u->in);
                u->in = -1;
            }
        }
        if (pf[3].revents && u->out >= 0)
            drain(&u->out, &u->cap, true);
        if (pf[4].revents && u->err >= 0)
            drain(&u->err, &u->cap, false);
        if (s->log.nlines || s->log.dropped || log_waits)
            log_waits = loglines_send(&s->log, s->rep, u->message_id, u->attempt);
        if (pf[0].revents) {
            struct signalfd_siginfo ssi;
            while (read(s->sfd, &ssi, sizeof ssi) > 0)
                ;
            /* WNOWAIT: the zombie keeps the group id from being reused until
             * the group is killed below. */
            u->si.si_pid = 0;
            if (waitid(P_PID, (id_t)pid, &u->si, WEXITED | WNOHANG | WNOWAIT) == 0 && u->si.si_pid == pid) {
                u->end_us = mono_us();
                break;
            }
        }
    }
}

/* Kills what is left of the attempt, collects the rest of its output and
 * takes its run directory back; a cancel ends the supervisor here. true when
 * every process of it is gone (the supervisor may take another attempt). */
static bool run_end(sup *s, run *u)
{
    bool clean = kill_tree(u->pid, u->m.id);
    if (u->in >= 0)
        close(u->in);
    if (u->cancelled) {
        if (u->out >= 0)
            close(u->out);
        if (u->err >= 0)
            close(u->err);
        exec_rmtree(u->dir);
        sup_exit(s);
    }
    /* Every writer is gone, so reads end in EOF; EAGAIN would mean a
     * process survived SIGKILL and still holds the pipe: stop there. */
    while (u->out >= 0 && drain(&u->out, &u->cap, true) == 0)
        ;
    while (u->err >= 0 && drain(&u->err, &u->cap, false) == 0)
        ;
    if (u->out >= 0)
        close(u->out);
    if (u->err >= 0)
        close(u->err);
    if (clean)
        release_dir(s, u->dir);
    else if (exec_rmtree(u->dir) < 0)
        LOG_WARN("supervisor: rm -r %s: %s", u->dir, strerror(errno));
    return clean;
}

/* Reports how the attempt ended (one CH_RESULT): SUP_STAYS when clean. */
static bool run_report(sup *s, run *u, bool clean)
{
    if (!u->end_us)
        u->end_us = mono_us();
    int64_t d = u->end_us - u->t0;
    uint32_t dur = d < 0 ? 0 : d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
    uint32_t timeout_ms = u->m.timeout_ms;
    const siginfo_t *si = &u->si;
    char *etext = stderr_text(&u->cap);
    char buf[96];
    proto_outcome o;
    if (u->timed_out) {
        o = OUT_TIMEOUT;
        free(etext);
        etext = strdup(exec_timeout_text("", timeout_ms, buf));
    } else if (si->si_pid == 0) {
        o = OUT_CRASHED;   /* poll failed: should not happen */
        free(etext);
        etext = strdup("supervisor: lost track of the handler");
        clean = false;
    } else if (si->si_code == CLD_EXITED && si->si_status == 0) {
        o = OUT_OK;
        free(etext);
        etext = NULL;
    } else if (si->si_code == CLD_EXITED) {
        o = si->si_status == 65 ? OUT_REJECTED : OUT_ERROR;
        if (!etext) {
            snprintf(buf, sizeof buf, "exit status %d", si->si_status);
            etext = strdup(buf);
        }
    } else {
        o = OUT_CRASHED;
        if (!etext) {
            etext = strdup(exec_killed_by(si->si_status, buf));
        }
    }
    /* Its last lines, then the result: main logs them as this attempt's. */
    loglines_end(&s->log, mono_us());
    loglines_send(&s->log, s->rep, u->message_id, u->attempt);
    loglines_flush(&s->log, s->rep);
    capture *cap = &u->cap;
    char big[160];
    const char *okerr = NULL;   /* an ok attempt's note: its output is over the cap */
    if (cap->out_dropped) {
        LOG_DEBUG("supervisor: attempt %llu: %llu stdout bytes past the cap dropped",
                  (unsigned long long)u->m.id, (unsigned long long)cap->out_dropped);
        okerr = too_large_text(big, cap->outlen + cap->out_dropped);
    }
    report(s->rep, clean ? SUP_STAYS : 0, o, u->started_ms, dur,
           o == OUT_OK ? okerr : (etext ? etext : "handler failed"),
           o == OUT_OK && !okerr ? cap->out : NULL, o == OUT_OK && !okerr ? cap->outlen : 0);
    free(etext);
    return clean;
}

/* Runs one attempt described by a CH_L_EXEC / CH_S_RUN body and reports it:
 * decode, take a run dir, environment, spawn, I/O, end, report. true when
 * this supervisor may take another attempt (it said so in the report). A
 * cancel (main closed the channel) ends the process here. */
static bool run_one(sup *s, const char *b, uint32_t n)
{
    run u = { .pid = -1, .in = -1, .out = -1, .err = -1, .cap.log = &s->log };
    bool more;
    char why[4200];
    if (!run_decode(&u, b, n)) {
        /* main and this supervisor disagree on the format: do not go on */
        report(s->rep, 0, OUT_ERROR, wall_ms(), 0, "runner: bad exec request", NULL, 0);
        request_free(&u.q);
        return false;
    }
    snprintf(u.dir, sizeof u.dir, "%s/%llu/%llu", s->wdir, (unsigned long long)(u.m.id % RUN_SHARDS),
             (unsigned long long)u.m.id);
    if (take_dir(s, u.dir) < 0) {
        snprintf(why, sizeof why, "runner: mkdir %s: %s", u.dir, strerror(errno));
        request_free(&u.q);
        return fail(s, NULL, why);
    }
    if (!run_environment(&u)) {
        more = fail(s, u.dir, "runner: out of memory");
    } else if (run_spawn(&u, why, sizeof why) < 0) {
        more = fail(s, u.dir, why);
    } else {
        run_io(s, &u);
        more = run_report(s, &u, run_end(s, &u));
        free(u.cap.out);
        /* SIGCHLDs of the tree just reaped must not wake the next attempt. */
        struct signalfd_siginfo ssi;
        while (read(s->sfd, &ssi, sizeof ssi) > 0)
            ;
    }
    request_free(&u.q);
    return more;
}

/* Waits for main's next request (CH_S_RUN). Its body, or NULL when main
 * closed the channel (or broke the protocol): then the supervisor retires. */
static const char *next_request(sup *s, uint32_t *n)
{
    if (s->in.off == s->in.len && s->in.cap > (1u << 20))
        wbuf_free(&s->in);   /* after a large payload */
    for (;;) {
        const char *body;
        bool bad = false;
        if (msg_next(&s->in, &body, n, &bad))
            return (uint8_t)body[0] == CH_S_RUN ? (--*n, body + 1) : NULL;
        if (bad || !wbuf_reserve(&s->in, 1 << 16))
            return NULL;
        ssize_t got = read(s->rep, s->in.p + s->in.len, s->in.cap - s->in.len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return NULL;
        s->in.len += (size_t)got;
    }
}

void exec_supervise(int rep, const char *wdir, const char *b, uint32_t n)
{
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    prctl(PR_SET_NAME, "herald-exec");   /* in ps and top: not another launcher */
    sup s = { .rep = rep, .wdir = wdir };
    chan_exec first;
    chan_exec_get(b, n, &first);   /* run_one checks it */
    s.sid = first.id;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGPIPE);   /* a handler that closes stdin gives us EPIPE, not death */
    sigprocmask(SIG_BLOCK, &set, NULL);
    sigdelset(&set, SIGPIPE);
    s.sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (s.sfd < 0) {
        report(rep, 0, OUT_ERROR, wall_ms(), 0, "runner: signalfd failed", NULL, 0);
        _exit(0);
    }
    bool more = run_one(&s, b, n);
    free((char *)b);
    while (more && (b = next_request(&s, &n)))
        more = run_one(&s, b, n);
    sup_exit(&s);
}
