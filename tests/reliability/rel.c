/* rel.c — see rel.h. */
#define _GNU_SOURCE
#include "rel.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

bool rel_full(void)
{
    const char *m = getenv("HERALD_RELIABILITY");
    return m && strcmp(m, "full") == 0;
}

bool rel_sanitized(void)
{
    const char *s = getenv("HERALD_TEST_SANITIZE");
    return s && s[0] == '1';   /* the Makefile's value carries trailing blanks ("1   ") */
}

long rel_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

long rel_status_kb(pid_t pid, const char *field)
{
    char path[64], key[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    snprintf(key, sizeof key, "\n%s:", field);
    char *s = h_read(path, NULL);
    if (!s) return -1;
    char *p = strstr(s, key);
    long kb = p ? strtol(p + strlen(key), NULL, 10) : -1;
    free(s);
    return kb;
}

long rel_topic_published(h_env *e, const char *topic)
{
    char *st = h_stats(e), anchor[200];
    snprintf(anchor, sizeof anchor, "{\"name\":\"%s\"", topic);
    long n = st ? h_json_num(st, anchor, "published") : LONG_MIN;
    free(st);
    return n;
}

int rel_workers_connected(h_env *e)
{
    char *st = h_stats(e);
    const char *w = st ? strstr(st, "\"workers\":[") : NULL;
    int n = -1;
    if (w) {
        n = 0;
        const char *end = strstr(w, "\"refused\":{");   /* the top-level map; a worker's "refused" is an array */
        for (const char *p = w; (p = strstr(p, "{\"id\":")) != NULL && (!end || p < end); p++) n++;
    }
    free(st);
    return n;
}

bool rel_wait_workers(h_env *e, int n, int timeout_ms)
{
    long end = rel_now_ms() + timeout_ms;
    do {
        if (rel_workers_connected(e) >= n) return true;
        usleep(50000);
    } while (rel_now_ms() < end);
    return false;
}

bool rel_sub_drained(h_env *e, const char *topic, const char *function)
{
    char anchor[300];
    snprintf(anchor, sizeof anchor, "{\"topic\":\"%s\",\"function\":\"%s\"", topic, function);
    char *st = h_stats(e);
    bool ok = st && h_json_num(st, anchor, "ready") == 0 && h_json_num(st, anchor, "delayed") == 0 &&
              h_json_num(st, anchor, "inflight") == 0;
    free(st);
    return ok;
}

bool rel_wait_drained(h_env *e, const char *topic, const char *function, int timeout_ms)
{
    long end = rel_now_ms() + timeout_ms;
    do {
        if (rel_sub_drained(e, topic, function)) return true;
        usleep(100000);
    } while (rel_now_ms() < end);
    return false;
}

bool rel_wait_lines(const char *path, size_t n, int timeout_ms)
{
    long end = rel_now_ms() + timeout_ms;
    do {
        if (h_count_lines(path) >= n) return true;
        usleep(100000);
    } while (rel_now_ms() < end);
    return false;
}

void rel_compact_pids(h_env *e)
{
    int k = 0;
    for (int i = 0; i < e->npids; i++)
        if (e->pids[i] > 0) e->pids[k++] = e->pids[i];
    e->npids = k;
}

/* ---- process trees ---------------------------------------------------------- */

static pid_t ppid_of(pid_t pid, char *state)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0) return -1;
    ssize_t n = read(f, buf, sizeof buf - 1);
    close(f);
    if (n <= 0) return -1;
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    int ppid = -1;
    char st = '?';
    if (!p || sscanf(p + 1, " %c %d", &st, &ppid) != 2) return -1;
    if (state) *state = st;
    return ppid;
}

bool rel_pid_alive(pid_t pid)
{
    char st = 0;
    return ppid_of(pid, &st) >= 0 && st != 'Z' && st != 'X';
}

/* Every live descendant of root into out (at most cap); returns the count. */
static int descendants(pid_t root, pid_t *out, int cap)
{
    enum { MAXP = 65536 };
    static pid_t pids[MAXP], ppids[MAXP];
    int np = 0;
    DIR *d = opendir("/proc");
    if (!d) return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && np < MAXP) {
        char *end;
        long p = strtol(de->d_name, &end, 10);
        if (*end || p <= 0) continue;
        char st = 0;
        pid_t pp = ppid_of((pid_t)p, &st);
        if (pp < 0 || st == 'Z') continue;
        pids[np] = (pid_t)p;
        ppids[np++] = pp;
    }
    closedir(d);
    int n = 0;
    out[n++] = root;   /* a frontier walk: children of what is already in out */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < np && n < cap; j++)
            if (ppids[j] == out[i]) out[n++] = pids[j];
    for (int i = 1; i < n; i++) out[i - 1] = out[i];
    return n - 1;
}

void rel_signal_tree(pid_t pid, int sig)
{
    pid_t tree[1024];
    int n = descendants(pid, tree, 1024);
    if (sig == SIGSTOP) kill(pid, sig);   /* freeze the top first: it cannot react */
    for (int i = 0; i < n; i++) kill(tree[i], sig);
    if (sig != SIGSTOP) kill(pid, sig);
}

int rel_tree(pid_t pid, pid_t *out, int cap)
{
    return descendants(pid, out, cap);
}

int rel_count_descendants(pid_t pid)
{
    pid_t tree[1024];
    return descendants(pid, tree, 1024);
}

/* ---- the paced publisher ---------------------------------------------------- */

void rel_feed_start(h_env *e, rel_feed *f, const char *topic, int n, int gate, const char *log)
{
    const char *pfx = f->prefix ? f->prefix : "L";
    int pace = f->pace_us > 0 ? f->pace_us : 200;
    memset(f, 0, sizeof *f);
    f->prefix = pfx;
    f->pace_us = pace;
    f->status = -1;
    f->n = n;
    f->shm = mmap(NULL, sizeof *f->shm, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq((void *)f->shm, MAP_FAILED);
    f->shm->written = 0;
    f->shm->gate = gate;
    char fifo[600];
    snprintf(fifo, sizeof fifo, "%s/%s.fifo", e->dir, log);
    cr_assert_eq(mkfifo(fifo, 0600), 0, "mkfifo %s", fifo);
    snprintf(f->out, sizeof f->out, "%s/%s.out", e->dir, log);
    snprintf(f->err, sizeof f->err, "%s/%s.err", e->dir, log);
    char script[1600];
    snprintf(script, sizeof script, "exec '%s/bin/herald-publish' --broker '%s' --timeout 60 --lines %s < '%s'",
             e->root, e->pub, topic, fifo);
    f->publisher = h_start(e, log, "/bin/sh", "-c", script, NULL);
    rel_feed_shm *shm = f->shm;
    const char *prefix = f->prefix;
    pid_t w = fork();
    cr_assert(w >= 0, "fork");
    if (w == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGPIPE, SIG_DFL);
        int fd = open(fifo, O_WRONLY);
        if (fd < 0) _exit(3);
        /* one page of pipe: `written` then tells how far the publisher has read */
        if (fcntl(fd, F_SETPIPE_SZ, 4096) < 0) _exit(5);
        char buf[1024];
        for (int i = 0; i < n;) {
            while (i >= __atomic_load_n(&shm->gate, __ATOMIC_ACQUIRE)) usleep(1000);
            size_t len = 0;
            for (int k = 0; k < 20 && i < n && i < shm->gate; k++, i++)
                len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%d\n", prefix, i);
            for (size_t off = 0; off < len;) {
                ssize_t wr = write(fd, buf + off, len - off);
                if (wr < 0) _exit(4);
                off += (size_t)wr;
            }
            __atomic_store_n(&shm->written, i, __ATOMIC_RELEASE);
            nanosleep(&(struct timespec){ 0, pace * 1000L }, NULL);
        }
        close(fd);
        _exit(0);
    }
    f->writer = w;
}

bool rel_feed_running(rel_feed *f)
{
    if (f->status < 0) f->status = h_wait_exit(f->publisher, 0);
    return f->status < 0;
}

int rel_feed_wait(h_env *e, rel_feed *f, int timeout_ms)
{
    __atomic_store_n(&f->shm->gate, f->n, __ATOMIC_RELEASE);
    int ws = h_wait_exit(f->writer, timeout_ms);
    cr_assert_eq(ws, 0, "the writer of the publisher's stdin exited %d", ws);
    int st = f->status >= 0 ? f->status : h_wait_exit(f->publisher, timeout_ms);
    f->status = st;
    if (st >= 0)
        for (int i = 0; i < e->npids; i++)
            if (e->pids[i] == f->publisher) e->pids[i] = 0;
    munmap((void *)f->shm, sizeof *f->shm);
    f->shm = NULL;
    return st;
}

/* ---- tallies ------------------------------------------------------------------ */

void rel_tally_stream(const char *prefix, const char *ids_path, const char *err_path, const char *record_path,
                      size_t n_lines, rel_tally *t, const pid_t *pid_dup, size_t *dup_by)
{
    memset(t, 0, sizeof *t);
    if (dup_by) *dup_by = 0;
    char **ids = calloc(n_lines, sizeof *ids);
    bool *refused = calloc(n_lines, sizeof *refused);
    unsigned *runs = calloc(n_lines, sizeof *runs);
    cr_assert(ids && refused && runs);
    char *err = err_path ? h_read(err_path, NULL) : NULL;
    for (char *p = err; p && (p = strstr(p, "LINE ")) != NULL; p += 5) {
        long ln = strtol(p + 5, NULL, 10);
        if (ln >= 1 && (size_t)ln <= n_lines) refused[ln - 1] = true;
    }
    free(err);
    char *out = h_read(ids_path, NULL);
    size_t i = 0;
    char *save = NULL;
    for (char *tok = out ? strtok_r(out, "\n", &save) : NULL; tok; tok = strtok_r(NULL, "\n", &save)) {
        /* one output line per input line: its id, or "ERROR why" */
        if (i >= n_lines) break;
        if (strncmp(tok, "ERROR ", 6) == 0) { refused[i++] = true; continue; }
        ids[i++] = tok;
        t->confirmed++;
    }
    char *rec = h_read(record_path, NULL);
    size_t plen = strlen(prefix);
    save = NULL;
    for (char *line = rec ? strtok_r(rec, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
        char id[128], payload[1100];
        long wpid = 0;
        if (sscanf(line, "%127s %1099s %ld", id, payload, &wpid) < 2) continue;
        if (strncmp(payload, prefix, plen) != 0) continue;
        char *end;
        long k = strtol(payload + plen, &end, 10);
        if (*end || k < 0 || (size_t)k >= n_lines) continue;
        t->runs++;
        if (!ids[k]) { t->unconfirmed++; continue; }
        if (strcmp(ids[k], id) != 0) { t->twice++; continue; }
        if (runs[k]++ > 0) {
            t->dup_runs++;
            for (const pid_t *p = pid_dup; p && *p; p++)
                if (*p == wpid) { (*dup_by)++; break; }
        }
    }
    for (size_t k = 0; k < n_lines; k++)
        if (ids[k] && runs[k] == 0) {
            if (!t->lost++) {
                static char first[128];
                snprintf(first, sizeof first, "%s (line %zu)", ids[k], k);
                t->first_lost = first;
            }
        }
    free(rec);
    free(out);
    free(ids);
    free(refused);
    free(runs);
}

void rel_report(const char *test, const char *fault, long faults, long confirmed, long lost, long duplicated,
                const char *extra)
{
    char line[1200];
    snprintf(line, sizeof line, "RELIABILITY|%s|%s|%ld|%ld|%ld|%ld|%s|%s\n", test, fault, faults, confirmed, lost,
             duplicated, extra ? extra : "", rel_full() ? "full" : "short");
    fputs(line, stderr);
    const char *path = getenv("HERALD_RELIABILITY_REPORT");
    if (path && *path) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
        if (fd >= 0) {
            if (write(fd, line, strlen(line)) < 0) { /* the line is on stderr too */ }
            close(fd);
        }
    }
}
