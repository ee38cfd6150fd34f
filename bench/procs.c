/* procs.c — the processes of a run and what /proc says about them.
 *
 * Owns nothing between calls: a run's temp dir, config and endpoints
 * (run_paths), starting herald's programs (fork + exec, output to a log in
 * the run dir), stopping them by PID (a signal, a bounded wait, then SIGKILL
 * of that PID only), heraldctl as the probe of readiness and state, and the
 * CPU ticks, RSS and disk bytes the table reports.
 *
 * Every wait has a deadline and gives up early when bench_interrupted is set.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double since_s(uint64_t t0_ns) { return (double)(mono_ns() - t0_ns) / 1e9; }

void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

double ticks_s(int64_t ticks)
{
    static long hz;
    if (!hz)
        hz = sysconf(_SC_CLK_TCK);
    return (double)ticks / (double)hz;
}

/* --- the run dir ----------------------------------------------------------- */

int paths_new(const bench_env *e, run_paths *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->dir, sizeof p->dir, "%s/herald-bench.XXXXXX", e->tmp_parent);
    if (!mkdtemp(p->dir)) {
        fprintf(stderr, "herald-bench: mkdtemp %s: %s\n", p->dir, strerror(errno));
        return -1;
    }
    /* ipc:// paths must fit sun_path (108 bytes) */
    if (strlen(p->dir) > 80) {
        fprintf(stderr, "herald-bench: %s: too long for ipc:// endpoints\n", p->dir);
        rmdir(p->dir);
        return -1;
    }
    snprintf(p->cfg, sizeof p->cfg, "%s/herald.cfg", p->dir);
    snprintf(p->pub_ep, sizeof p->pub_ep, "ipc://%s/pub", p->dir);
    snprintf(p->wrk_ep, sizeof p->wrk_ep, "ipc://%s/wrk", p->dir);
    snprintf(p->adm_ep, sizeof p->adm_ep, "ipc://%s/adm", p->dir);
    snprintf(p->adm_path, sizeof p->adm_path, "%s/adm", p->dir);
    snprintf(p->data_dir, sizeof p->data_dir, "%s/data", p->dir);
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    remove(path);
    return 0;
}

void paths_remove(const run_paths *p, bool keep)
{
    if (!p->dir[0])
        return;
    if (keep) {
        fprintf(stderr, "herald-bench: kept %s\n", p->dir);
        return;
    }
    nftw(p->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int config_write(const run_paths *p, const char *durability, const fn_def *fns, int nfns)
{
    FILE *f = fopen(p->cfg, "w");
    if (!f)
        return -1;
    fprintf(f, "# written by herald-bench for one run\n"
               "broker = { publish_endpoint = \"%s\"; worker_endpoint = \"%s\";\n"
               "           admin_endpoint = \"%s\"; data_dir = \"%s\"; durability = \"%s\"; };\n"
               "functions = (\n",
            p->pub_ep, p->wrk_ep, p->adm_ep, p->data_dir, durability);
    for (int i = 0; i < nfns; i++) {
        const fn_def *d = &fns[i];
        fprintf(f, "  { name = \"%s\";", d->name);
        if (d->kind == FNK_NATIVE) {
            fprintf(f, " native = { library = \"%s\"; symbol = \"%s\"; };\n", d->library, d->symbol);
        } else {
            fprintf(f, d->kind == FNK_RUNTIME ? " runtime = { command = [" : " exec = [");
            for (int k = 0; k < 3 && d->argv[k]; k++)
                fprintf(f, "%s\"%s\"", k ? ", " : "", d->argv[k]);
            if (d->kind == FNK_RUNTIME)
                fprintf(f, "]; handler = \"%s\"; };\n", d->handler);
            else
                fprintf(f, "];\n");
        }
        fprintf(f, "    env = {");
        for (int k = 0; k < 3 && d->env_k[k]; k++)
            fprintf(f, " %s = \"%s\";", d->env_k[k], d->env_v[k]);
        fprintf(f, " }; }%s\n", i + 1 < nfns ? "," : "");
    }
    fprintf(f, ");\ntopics = ( { name = \"bench\"; subscriptions = (");
    for (int i = 0; i < nfns; i++)
        fprintf(f, " { function = \"%s\"; }%s", fns[i].name, i + 1 < nfns ? "," : "");
    fprintf(f, " ); } );\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* --- processes ------------------------------------------------------------- */

pid_t proc_start(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        setpgid(0, 0);
        int fd = log ? open(log, O_WRONLY | O_CREAT | O_APPEND, 0644) : open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        int in = open("/dev/null", O_RDONLY);
        if (in >= 0) {
            dup2(in, 0);
            close(in);
        }
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        execvp(argv[0], argv);   /* a --wrap-broker word may need PATH */
        _exit(127);
    }
    return pid;
}

int proc_exited(pid_t pid)
{
    int st;
    pid_t w = waitpid(pid, &st, WNOHANG);
    return w == pid || (w < 0 && errno == ECHILD);
}

int proc_stop(pid_t pid, int sig, double timeout_s, double *took_s)
{
    uint64_t t0 = mono_ns();
    int st = 0;
    if (took_s)
        *took_s = 0;
    if (pid <= 0)
        return -1;
    kill(pid, sig);
    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            break;
        if (w < 0)
            return -1;
        if (since_s(t0) > timeout_s) {
            fprintf(stderr, "herald-bench: pid %d did not exit %.0f s after signal %d: SIGKILL\n",
                    (int)pid, timeout_s, sig);
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            break;
        }
        sleep_ms(1);
    }
    if (took_s)
        *took_s = since_s(t0);
    return st;
}

int ctl_run(const bench_env *e, const run_paths *p, double timeout_s, const char *const args[],
            char *out, size_t cap)
{
    char tmo[32];
    snprintf(tmo, sizeof tmo, "%.3f", timeout_s);
    const char *argv[16] = { e->ctl, "-c", p->cfg, "--timeout", tmo };
    int n = 5;
    for (int i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        dup2(fds[1], 1);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 2);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t r;
    /* heraldctl gives up by itself after timeout_s; the read ends at its exit */
    while ((r = read(fds[0], out + len, len + 1 < cap ? cap - len - 1 : 0)) > 0)
        len += (size_t)r;
    if (cap)
        out[len < cap ? len : cap - 1] = '\0';
    close(fds[0]);
    int st = proc_stop(pid, 0, timeout_s + 1.0, NULL);   /* signal 0: just wait (bounded) */
    if (st < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

pid_t broker_start(const bench_env *e, const run_paths *p, const char *log, double timeout_s,
                   double *ready_s)
{
    char *argv[40], wrap[512];
    int n = 0;
    if (e->wrap_broker) {   /* split on spaces: a profiler's own argv */
        snprintf(wrap, sizeof wrap, "%s", e->wrap_broker);
        for (char *sv, *w = strtok_r(wrap, " ", &sv); w && n < 35; w = strtok_r(NULL, " ", &sv))
            argv[n++] = w;
    }
    argv[n++] = (char *)e->broker;
    argv[n++] = "-c";
    argv[n++] = (char *)p->cfg;
    argv[n] = NULL;
    unlink(p->adm_path);   /* a stale socket file would look like a bound one */
    uint64_t t0 = mono_ns();
    pid_t pid = proc_start(argv, log);
    if (pid < 0)
        return -1;
    static const char *const stats[] = { "stats", "--json", NULL };
    char out[8192];
    for (;;) {
        if (bench_interrupted || since_s(t0) > timeout_s || proc_exited(pid))
            break;
        /* the admin socket exists once bound; before that heraldctl would wait
         * for ZeroMQ's reconnect interval and blur the figure */
        struct stat st;
        if (stat(p->adm_path, &st) != 0) {
            sleep_ms(1);
            continue;
        }
        if (ctl_run(e, p, 1.0, stats, out, sizeof out) == 0) {
            if (ready_s)
                *ready_s = since_s(t0);
            return pid;
        }
    }
    fprintf(stderr, "herald-bench: the broker did not become ready (see %s)\n", log);
    proc_stop(pid, SIGTERM, 5.0, NULL);
    return -1;
}

pid_t worker_start(const bench_env *e, const run_paths *p, const char *fns, int inflight,
                   const char *log)
{
    char conc[16], rundir[300];
    snprintf(conc, sizeof conc, "%d", inflight);
    snprintf(rundir, sizeof rundir, "%s/runs", p->dir);
    char *argv[] = { (char *)e->worker, "--broker", (char *)p->wrk_ep, "--functions", (char *)fns,
                     "--concurrency", conc, "--root", (char *)e->root, "--run-dir", rundir, NULL };
    return proc_start(argv, log);
}

int workers_wait(const bench_env *e, const run_paths *p, const pid_t *pids, int n, double timeout_s)
{
    static const char *const args[] = { "workers", "--json", NULL };
    char out[16384], key[48];
    uint64_t t0 = mono_ns();
    while (!bench_interrupted && since_s(t0) < timeout_s) {
        int found = 0;
        if (ctl_run(e, p, 1.0, args, out, sizeof out) == 0)
            for (int i = 0; i < n; i++) {
                snprintf(key, sizeof key, "\"pid\":%d,", (int)pids[i]);
                found += strstr(out, key) != NULL;
            }
        if (found == n)
            return 0;
        for (int i = 0; i < n; i++)
            if (proc_exited(pids[i])) {
                fprintf(stderr, "herald-bench: worker %d exited at start\n", (int)pids[i]);
                return -1;
            }
        sleep_ms(10);
    }
    fprintf(stderr, "herald-bench: workers did not register within %.0f s\n", timeout_s);
    return -1;
}

int64_t json_int(const char *json, const char *from, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *s = strstr(from ? from : json, k);
    if (!s)
        return -1;
    return strtoll(s + strlen(k), NULL, 10);
}

double json_num(const char *json, const char *from, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *s = strstr(from ? from : json, k);
    if (!s)
        return -1;
    return strtod(s + strlen(k), NULL);
}

/* --- /proc ----------------------------------------------------------------- */

typedef struct {
    pid_t pid, ppid;
    char comm[32];
    int64_t self, children;     /* utime+stime, cutime+cstime: clock ticks */
} pstat;

/* "pid (comm) state ppid … utime stime cutime cstime …": comm may hold spaces
 * and parentheses, so fields are counted from the last ')'. */
static int read_stat(pid_t pid, pstat *s)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *l = strchr(buf, '('), *r = strrchr(buf, ')');
    if (!l || !r || r < l)
        return -1;
    size_t cl = (size_t)(r - l - 1) < sizeof s->comm - 1 ? (size_t)(r - l - 1) : sizeof s->comm - 1;
    memcpy(s->comm, l + 1, cl);
    s->comm[cl] = '\0';
    s->pid = pid;
    /* after ')': field 3 is state; we need 4 (ppid) and 14–17 */
    long long f[18] = { 0 };
    char *p = r + 2;
    for (int i = 3; i <= 17 && *p; i++) {
        char *end;
        if (i == 3) {
            end = strchr(p, ' ');
            if (!end)
                return -1;
        } else {
            f[i] = strtoll(p, &end, 10);
        }
        p = end + (*end == ' ');
    }
    s->ppid = (pid_t)f[4];
    s->self = f[14] + f[15];
    s->children = f[16] + f[17];
    return 0;
}

int64_t proc_self_ticks(pid_t pid)
{
    pstat s;
    return read_stat(pid, &s) == 0 ? s.self : -1;
}

int64_t proc_busy_ticks(void)
{
    FILE *f = fopen("/proc/stat", "re");
    if (!f)
        return -1;
    long long v[8] = { 0 };   /* user nice system idle iowait irq softirq steal */
    int n = fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7]);
    fclose(f);
    return n == 8 ? (int64_t)(v[0] + v[1] + v[2] + v[5] + v[6]) : -1;
}

int proc_tree_ticks(const pid_t *roots, int nroots, tree_ticks *t)
{
    memset(t, 0, sizeof *t);
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    size_t cap = 1024, n = 0;
    pstat *all = malloc(cap * sizeof *all);
    if (!all) {
        closedir(d);
        return -1;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] < '1' || de->d_name[0] > '9')
            continue;
        if (n == cap) {
            pstat *b = realloc(all, 2 * cap * sizeof *all);
            if (!b)
                break;
            all = b;
            cap *= 2;
        }
        if (read_stat((pid_t)atoi(de->d_name), &all[n]) == 0)
            n++;
    }
    closedir(d);
    /* membership: a root, or a process whose parent is a member (iterate to a fixpoint) */
    char *in = calloc(n ? n : 1, 1);
    if (!in) {
        free(all);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        for (int r = 0; r < nroots; r++)
            if (all[i].pid == roots[r])
                in[i] = 1;
    for (bool grew = true; grew;) {
        grew = false;
        for (size_t i = 0; i < n; i++) {
            if (in[i])
                continue;
            for (size_t j = 0; j < n; j++)
                if (in[j] && all[j].pid == all[i].ppid) {
                    in[i] = 1;
                    grew = true;
                    break;
                }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!in[i])
            continue;
        pstat *s = &all[i];
        bool root = false, launcher = false;
        for (int r = 0; r < nroots; r++)
            root |= s->pid == roots[r];
        if (!root && !strcmp(s->comm, "herald-launcher"))
            for (size_t j = 0; j < n; j++)
                if (all[j].pid == s->ppid)
                    for (int r = 0; r < nroots; r++)
                        launcher |= all[j].pid == roots[r];
        if (root) {
            t->worker += s->self;
            t->other += s->children;        /* a worker reaps only its launcher, at exit */
        } else if (launcher) {
            t->launcher += s->self;
            t->exec += s->children;         /* supervisors and, through them, handlers */
            if (t->nlaunchers < 8)
                t->launchers[t->nlaunchers++] = s->pid;
        } else if (!strcmp(s->comm, "herald-host")) {
            t->hosts += s->self + s->children;
        } else {
            t->exec += s->self + s->children;   /* a live supervisor or handler */
            if (!strcmp(s->comm, "herald-runtime")) {
                t->rtsup += s->self;
                t->rtproc += s->children;       /* runtime processes it reaped */
            } else {
                for (size_t j = 0; j < n; j++)
                    if (all[j].pid == s->ppid && !strcmp(all[j].comm, "herald-runtime"))
                        t->rtproc += s->self + s->children;
            }
        }
    }
    free(in);
    free(all);
    return 0;
}

double proc_status_mib(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    double v = -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, fl)) {
            v = strtod(line + fl, NULL) / 1024.0;   /* kB */
            break;
        }
    fclose(f);
    return v;
}

int64_t dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int64_t sum = 0;
    struct dirent *de;
    struct stat st;
    char path[600];
    while ((de = readdir(d))) {
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            sum += st.st_size;
    }
    closedir(d);
    return sum;
}
