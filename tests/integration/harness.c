/* harness.c — see harness.h. */
#define _GNU_SOURCE
#include "harness.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

char *h_path(h_env *e, const char *name)
{
    static char bufs[8][512];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, 512, "%s/%s", e->dir, name);
    return b;
}

void h_setup(h_env *e)
{
    memset(e, 0, sizeof *e);
    snprintf(e->dir, sizeof e->dir, "/tmp/herald-test-XXXXXX");
    cr_assert_not_null(mkdtemp(e->dir), "mkdtemp");
    const char *root = getenv("HERALD_ROOT");
    if (root) snprintf(e->root, sizeof e->root, "%s", root);
    else cr_assert_not_null(getcwd(e->root, sizeof e->root));
    snprintf(e->pub, sizeof e->pub, "ipc://%s/pub.sock", e->dir);
    snprintf(e->wrk, sizeof e->wrk, "ipc://%s/wrk.sock", e->dir);
    snprintf(e->adm, sizeof e->adm, "ipc://%s/adm.sock", e->dir);
    snprintf(e->cfg, sizeof e->cfg, "%s/herald.cfg", e->dir);
    signal(SIGPIPE, SIG_IGN);
    const char *curve = getenv("HERALD_TEST_CURVE");
    if (curve && strcmp(curve, "1") == 0) {
        char cmd[2048];
        snprintf(cmd, sizeof cmd,
                 "set -e; cd '%s' && mkdir -p keys/publishers keys/workers keys/admins && "
                 "'%s/bin/heraldctl' keygen keys/broker >/dev/null && '%s/bin/heraldctl' keygen keys/client >/dev/null && "
                 "for r in publishers workers admins; do cp keys/client.pub keys/$r/; done",
                 e->dir, e->root, e->root);
        cr_assert_eq(system(cmd), 0, "cannot make the test's CURVE keys");
        setenv("HERALD_KEY", h_path(e, "keys/client.key"), 1);
        setenv("HERALD_BROKER_KEY", h_path(e, "keys/broker.pub"), 1);
        e->curve = true;
    }
}

void h_teardown(h_env *e)
{
    for (int i = 0; i < e->npids; i++)
        if (e->pids[i] > 0) kill(-e->pids[i], SIGTERM);
    for (int i = 0; i < e->npids; i++) {
        if (e->pids[i] <= 0) continue;
        if (h_wait_exit(e->pids[i], 5000) < 0) {
            kill(-e->pids[i], SIGKILL);
            h_wait_exit(e->pids[i], 5000);
        }
        e->pids[i] = 0;
    }
    if (getenv("HERALD_KEEP_TEST_DIR")) {
        fprintf(stderr, "kept %s\n", e->dir);
        return;
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", e->dir);
}

void h_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

void h_config_broker(h_env *e, const char *durability, const char *extra_broker, const char *body)
{
    FILE *f = fopen(e->cfg, "w");
    cr_assert_not_null(f);
    fprintf(f, "broker = { publish_endpoint = \"%s\"; worker_endpoint = \"%s\"; admin_endpoint = \"%s\";\n"
               "  data_dir = \"%s/data\"; durability = \"%s\"; heartbeat = 0.5;%s%s };\n%s\n",
            e->pub, e->wrk, e->adm, e->dir, durability ? durability : "os",
            extra_broker && *extra_broker ? "\n  " : "", extra_broker ? extra_broker : "", body);
    if (e->curve)
        fprintf(f, "security = { curve = true; secret_key = \"keys/broker.key\"; publishers = \"keys/publishers\";\n"
                   "  workers = \"keys/workers\"; admins = \"keys/admins\"; };\n");
    fclose(f);
}

void h_config(h_env *e, const char *durability, const char *body)
{
    h_config_broker(e, durability, NULL, body);
}

static pid_t spawn(h_env *e, const char *log, const char *in_path, int out_fd, int err_fd,
                   const char *prog, char **argv)
{
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork");
    if (pid == 0) {
        setpgid(0, 0);
        /* a test killed by its timeout never runs its teardown: take the
         * program down with it rather than leak it */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int in = open(in_path ? in_path : "/dev/null", O_RDONLY);
        if (in >= 0) dup2(in, 0);
        if (out_fd < 0 && log) {
            char p[600];
            snprintf(p, sizeof p, "%s/%s.out", e->dir, log);
            out_fd = open(p, O_WRONLY | O_CREAT | O_APPEND, 0644);
            snprintf(p, sizeof p, "%s/%s.err", e->dir, log);
            err_fd = open(p, O_WRONLY | O_CREAT | O_APPEND, 0644);
        }
        if (out_fd >= 0) dup2(out_fd, 1);
        if (err_fd >= 0) dup2(err_fd, 2);
        char path[700];
        if (prog[0] == '/') snprintf(path, sizeof path, "%s", prog);
        else snprintf(path, sizeof path, "%s/%s", e->root, prog);
        execv(path, argv);
        dprintf(2, "exec %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid);
    return pid;
}

static char **collect(const char *prog, va_list ap)
{
    static char *argv[64];
    int n = 0;
    argv[n++] = (char *)prog;
    char *a;
    while ((a = va_arg(ap, char *)) != NULL && n < 63) argv[n++] = a;
    argv[n] = NULL;
    return argv;
}

pid_t h_start(h_env *e, const char *log, const char *prog, ...)
{
    va_list ap;
    va_start(ap, prog);
    char **argv = collect(prog, ap);
    va_end(ap);
    cr_assert(e->npids < H_MAX_PROCS);
    pid_t pid = spawn(e, log, NULL, -1, -1, prog, argv);
    e->pids[e->npids++] = pid;
    return pid;
}

static bool broker_answers(void *arg)
{
    h_env *e = arg;
    char *out = NULL;
    int rc = h_run(e, NULL, &out, NULL, "bin/heraldctl", "--broker", e->adm, "--timeout", "0.5", "stats",
                   "--json", NULL);
    free(out);
    return rc == 0;
}

pid_t h_broker(h_env *e)
{
    pid_t pid = h_start(e, "broker", "bin/herald-broker", "-c", e->cfg, NULL);
    if (!h_wait(broker_answers, e, 20000)) {
        char *out = NULL, *err = NULL;
        int rc = h_run(e, NULL, &out, &err, "bin/heraldctl", "--broker", e->adm, "--timeout", "2", "stats", NULL);
        cr_assert_fail("the broker did not come up: heraldctl stats exits %d: %s; its log:\n%s", rc, err,
                       h_read(h_path(e, "broker.err"), NULL));
    }
    return pid;
}

pid_t h_worker(h_env *e, const char *functions, int concurrency)
{
    char conc[16], log[32];
    snprintf(conc, sizeof conc, "%d", concurrency);
    snprintf(log, sizeof log, "worker%d", e->npids);
    if (functions)
        return h_start(e, log, "bin/herald-worker", "--broker", e->wrk, "--root", e->root, "--run-dir",
                       h_path(e, "runs"), "--concurrency", conc, "--functions", functions, NULL);
    return h_start(e, log, "bin/herald-worker", "--broker", e->wrk, "--root", e->root, "--run-dir",
                   h_path(e, "runs"), "--concurrency", conc, NULL);
}

int h_wait_exit(pid_t pid, int timeout_ms)
{
    long end = now_ms() + timeout_ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0) return -1;
        if (now_ms() > end) return -1;
        usleep(2000);
    }
}

void h_kill(h_env *e, pid_t pid, int sig)
{
    kill(pid, sig);
    if (sig == SIGKILL || sig == SIGTERM) {
        int st = h_wait_exit(pid, 15000);
        cr_assert(st >= 0, "pid %d did not exit after signal %d", pid, sig);
        kill(-pid, SIGKILL);   /* anything left in its group */
        for (int i = 0; i < e->npids; i++)
            if (e->pids[i] == pid) e->pids[i] = 0;
    }
}

static char *slurp_fd(int fd)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap) buf = realloc(buf, cap *= 2);
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n <= 0) break;
        len += (size_t)n;
    }
    buf[len] = 0;
    return buf;
}

/* h_run's commands are clients (publish, heraldctl, curl) that give up on
 * their own within seconds; one still running after this long is stuck, and
 * where it is stuck is what a report of the hang needs. */
#define H_RUN_SUSPECT_MS 45000

/* Writes every thread's stack of pid to stderr: gdb when it is installed and
 * may attach (root, or ptrace allowed), else each thread's kernel wait
 * channel and system call from /proc. */
static void dump_stacks(pid_t pid, const char *prog)
{
    fprintf(stderr, "harness: %s (pid %d) still running after %d s; its threads:\n", prog, (int)pid,
            H_RUN_SUSPECT_MS / 1000);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "if command -v gdb >/dev/null; then gdb -p %d -batch -nx -ex 'thread apply all bt 20' 2>&1 "
             "| grep -E '^(Thread|#)' >&2; fi; for t in /proc/%d/task/*; do "
             "echo \"  task ${t##*/}: wchan $(cat $t/wchan 2>/dev/null) syscall $(cut -d' ' -f1 $t/syscall 2>/dev/null)\" >&2; "
             "done",
             (int)pid, (int)pid);
    if (system(cmd) != 0) fprintf(stderr, "harness: could not read the stacks of pid %d\n", (int)pid);
}

int h_run(h_env *e, const char *in_path, char **out, char **err, const char *prog, ...)
{
    va_list ap;
    va_start(ap, prog);
    char **argv = collect(prog, ap);
    va_end(ap);
    char op[600], ep[600];
    static int seq;
    snprintf(op, sizeof op, "%s/run%d.%d.out", e->dir, getpid(), seq);
    snprintf(ep, sizeof ep, "%s/run%d.%d.err", e->dir, getpid(), seq++);
    int ofd = open(op, O_RDWR | O_CREAT | O_TRUNC, 0644), efd = open(ep, O_RDWR | O_CREAT | O_TRUNC, 0644);
    pid_t pid = spawn(e, NULL, in_path, ofd, efd, prog, argv);
    int st = h_wait_exit(pid, H_RUN_SUSPECT_MS);
    if (st < 0) {   /* a client command should be long done: show where it is, then go on waiting */
        dump_stacks(pid, prog);
        st = h_wait_exit(pid, 120000 - H_RUN_SUSPECT_MS);
    }
    if (st < 0) { kill(-pid, SIGKILL); st = h_wait_exit(pid, 5000); }
    if (out) { lseek(ofd, 0, SEEK_SET); *out = slurp_fd(ofd); }
    if (err) { lseek(efd, 0, SEEK_SET); *err = slurp_fd(efd); }
    close(ofd);
    close(efd);
    unlink(op);
    unlink(ep);
    return st;
}

bool h_wait(bool (*cond)(void *arg), void *arg, int timeout_ms)
{
    long end = now_ms() + timeout_ms;
    while (now_ms() < end) {
        if (cond(arg)) return true;
        usleep(20000);
    }
    return cond(arg);
}

char *h_read(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return NULL;
    char *s = slurp_fd(fd);
    close(fd);
    if (len) *len = strlen(s);
    return s;
}

size_t h_count_lines(const char *path)
{
    char *s = h_read(path, NULL);
    if (!s) return 0;
    size_t n = 0;
    for (char *p = s; *p; p++) n += *p == '\n';
    free(s);
    return n;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

size_t h_lines_sorted(const char *path, char ***lines, size_t *total)
{
    char *s = h_read(path, NULL);
    *lines = NULL;
    if (total) *total = 0;
    if (!s) return 0;
    size_t n = 0, cap = 1024;
    char **v = malloc(cap * sizeof *v);
    char *save = NULL;
    for (char *t = strtok_r(s, "\n", &save); t; t = strtok_r(NULL, "\n", &save)) {
        if (n == cap) v = realloc(v, (cap *= 2) * sizeof *v);
        v[n++] = strdup(t);
    }
    free(s);
    if (total) *total = n;
    qsort(v, n, sizeof *v, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        if (u && strcmp(v[u - 1], v[i]) == 0) { free(v[i]); continue; }
        v[u++] = v[i];
    }
    *lines = v;
    return u;
}

void h_free_lines(char **lines, size_t n)
{
    for (size_t i = 0; i < n; i++) free(lines[i]);
    free(lines);
}

char *h_stats(h_env *e)
{
    char *out = NULL;
    int rc = h_run(e, NULL, &out, NULL, "bin/heraldctl", "--broker", e->adm, "stats", "--json", NULL);
    if (rc != 0) { free(out); return NULL; }
    return out;
}

int h_signal_exit(h_env *e, pid_t pid, int sig, int timeout_ms)
{
    kill(pid, sig);
    int st = h_wait_exit(pid, timeout_ms);
    if (st < 0) return -1;
    kill(-pid, SIGKILL);   /* anything left in its group */
    for (int i = 0; i < e->npids; i++)
        if (e->pids[i] == pid) e->pids[i] = 0;
    return st;
}

long h_json_num(const char *json, const char *anchor, const char *key)
{
    if (!json) return LONG_MIN;
    const char *a = strstr(json, anchor);
    if (!a) return LONG_MIN;
    char k[128];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = strstr(a + strlen(anchor), k);
    const char *end = strchr(a + strlen(anchor), '}');   /* stay in the anchor's object */
    if (!p || (end && p > end)) return LONG_MIN;
    char *q;
    long v = strtol(p + strlen(k), &q, 10);
    return q == p + strlen(k) ? LONG_MIN : v;
}

long h_sub_stat(h_env *e, const char *topic, const char *function, const char *key)
{
    char anchor[300];
    snprintf(anchor, sizeof anchor, "{\"topic\":\"%s\",\"function\":\"%s\"", topic, function);
    char *st = h_stats(e);
    long v = h_json_num(st, anchor, key);
    free(st);
    return v;
}

long h_fn_stat(h_env *e, const char *function, const char *key)
{
    char anchor[300];
    snprintf(anchor, sizeof anchor, "{\"name\":\"%s\",", function);
    char *st = h_stats(e);
    const char *fns = st ? strstr(st, "\"functions\":[") : NULL;
    long v = h_json_num(fns, anchor, key);
    free(st);
    return v;
}

char *h_ctl(h_env *e, ...)
{
    const char *a[17] = { 0 };
    va_list ap;
    va_start(ap, e);
    for (int n = 0; n < 16 && (a[n] = va_arg(ap, const char *)) != NULL; n++)
        ;
    va_end(ap);
    char *out = NULL;
    int rc = h_run(e, NULL, &out, NULL, "bin/heraldctl", "--broker", e->adm, a[0], a[1], a[2], a[3], a[4],
                   a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15], NULL);
    if (rc != 0) { free(out); return NULL; }
    return out;
}

void h_write_lines(const char *path, int n, const char *fmt)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s", path);
    for (int i = 0; i < n; i++) { fprintf(f, fmt, i); fputc('\n', f); }
    fclose(f);
}

void h_wait_lines(const char *path, size_t n, int timeout_ms)
{
    /* The deadline moves with every new line: a loaded machine makes the
     * handlers slow, not wrong; only a stream that stops fails. */
    size_t have = h_count_lines(path);
    long quiet_until = now_ms() + timeout_ms;
    while (have < n && now_ms() < quiet_until) {
        usleep(20000);
        size_t now_have = h_count_lines(path);
        if (now_have > have) quiet_until = now_ms() + timeout_ms;
        have = now_have;
    }
    cr_assert(have >= n, "%s: %zu lines, expected %zu; none came in the last %d ms", path, have, n, timeout_ms);
}

typedef struct { h_env *e; const char *topic, *function, *key; long want; } sub_is;

static bool sub_stat_is(void *arg)
{
    sub_is *s = arg;
    return h_sub_stat(s->e, s->topic, s->function, s->key) == s->want;
}

void h_wait_sub(h_env *e, const char *topic, const char *function, const char *key, long want, int timeout_ms)
{
    sub_is s = { e, topic, function, key, want };
    if (!h_wait(sub_stat_is, &s, timeout_ms)) {
        char *st = h_stats(e);
        cr_assert_fail("subscription %s→%s: %s never became %ld within %d ms; stats: %s", topic, function, key,
                       want, timeout_ms, st ? st : "(no answer)");
    }
}

void h_assert_sub(h_env *e, const char *topic, const char *function, const char *key, long want)
{
    long v = h_sub_stat(e, topic, function, key);
    if (v != want) {
        char *st = h_stats(e);
        cr_assert_fail("subscription %s→%s: %s is %ld, expected %ld; stats: %s", topic, function, key, v, want,
                       st ? st : "(no answer)");
    }
}

typedef struct { h_env *e; char *url; size_t len; } gw_wait;
static bool gateway_listening(void *arg)
{
    gw_wait *w = arg;
    char *log = h_read(h_path(w->e, "gateway.err"), NULL);
    const char *p = log ? strstr(log, "listening on 127.0.0.1:") : NULL;
    if (p) snprintf(w->url, w->len, "http://127.0.0.1:%d", atoi(p + strlen("listening on 127.0.0.1:")));
    free(log);
    return p != NULL;
}

pid_t h_gateway(h_env *e, char *url, size_t url_len)
{
    pid_t pid = h_start(e, "gateway", "bin/herald-gateway", "-c", e->cfg, NULL);
    gw_wait w = { e, url, url_len };
    cr_assert(h_wait(gateway_listening, &w, 10000), "the gateway did not say where it listens (see %s/gateway.err)",
              e->dir);
    return pid;
}

int h_curl(h_env *e, char **body, ...)
{
    const char *a[15] = { 0 };
    va_list ap;
    va_start(ap, body);
    for (int n = 0; n < 14 && (a[n] = va_arg(ap, const char *)) != NULL; n++)
        ;
    va_end(ap);
    char *out = NULL, *err = NULL;
    int rc = h_run(e, NULL, &out, &err, "/usr/bin/curl", "-s", "-S", "-w", "\n%{http_code}", a[0], a[1], a[2], a[3],
                   a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], NULL);
    int status = -1;
    char *nl = out ? strrchr(out, '\n') : NULL;
    if (rc == 0 && nl) {
        status = atoi(nl + 1);
        *nl = 0;
    }
    if (rc != 0) fprintf(stderr, "curl failed (%d): %s\n", rc, err ? err : "");
    free(err);
    if (body) *body = out;
    else free(out);
    return status;
}
