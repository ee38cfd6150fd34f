/* rundir: where exec attempts run (DESIGN §4: a fresh directory per attempt).
 *
 * Owns the layout on disk: RUN_DIR (runner_opts.run_dir, by default
 * $TMPDIR/herald-runs) holds one directory per live runner, named
 * "pid-starttime-instance" so that a later worker can tell a dead one's
 * (remove_stale: its process is gone, or its pid was reused) and remove it;
 * each holds RUN_SHARDS shard directories, under which the supervisors make
 * and park the attempts' own (exec.c). Main makes the worker directory once
 * (rundir_create) and removes it in runner_destroy.
 */
#define _GNU_SOURCE
#include "runner_core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned instances;  /* runners made by this process: unique worker dirs */

char *rundir_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/%s", a, b);
    return s;
}

/* "pid-starttime": who owns a worker dir; the start time guards against pid reuse. */
static unsigned long long proc_start(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long long start = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt
     * cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime */
    if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                    &start) != 1)
        return 0;
    return start;
}

static void remove_stale(const char *run_dir)
{
    DIR *d = opendir(run_dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        int pid;
        unsigned long long start;
        unsigned inst;
        if (sscanf(e->d_name, "%d-%llu-%u", &pid, &start, &inst) != 3 || pid <= 0)
            continue;
        if (proc_start(pid) == start)
            continue;   /* its worker lives */
        char *p = rundir_join(run_dir, e->d_name);
        if (p && exec_rmtree(p) == 0)
            LOG_INFO("runner: removed stale run directory %s", p);
        free(p);
    }
    closedir(d);
}

static int mkdir_p(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return -1;
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            mkdir(p, 0755);
            *s = '/';
        }
    int rc = mkdir(p, 0755);
    free(p);
    return rc < 0 && errno != EEXIST ? -1 : 0;
}

char *rundir_create(const char *run_dir_opt, const char *cwd)
{
    char *run_dir;
    if (run_dir_opt) {
        run_dir = run_dir_opt[0] == '/' ? strdup(run_dir_opt) : rundir_join(cwd, run_dir_opt);
    } else {
        const char *t = getenv("TMPDIR");
        run_dir = rundir_join(t && t[0] == '/' ? t : "/tmp", "herald-runs");
    }
    if (!run_dir || mkdir_p(run_dir) < 0) {
        LOG_ERROR("runner: run directory %s: %s", run_dir ? run_dir : "?", strerror(errno));
        free(run_dir);
        return NULL;
    }
    remove_stale(run_dir);
    char name[96];
    snprintf(name, sizeof name, "%d-%llu-%u", (int)getpid(), proc_start(getpid()), instances++);
    char *wdir = rundir_join(run_dir, name);
    free(run_dir);
    if (!wdir || mkdir(wdir, 0700) < 0) {
        LOG_ERROR("runner: mkdir %s: %s", wdir ? wdir : "?", strerror(errno));
        free(wdir);
        return NULL;
    }
    for (int i = 0; i < RUN_SHARDS; i++) {
        char shard[16];
        snprintf(shard, sizeof shard, "%d", i);
        char *p = rundir_join(wdir, shard);
        int rc = p ? mkdir(p, 0700) : -1;
        free(p);
        if (rc < 0) {
            LOG_ERROR("runner: mkdir in %s: %s", wdir, strerror(errno));
            exec_rmtree(wdir);
            free(wdir);
            return NULL;
        }
    }
    return wdir;
}
