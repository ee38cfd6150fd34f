/* runner: the worker-side half of running handlers (see runner.h, DESIGN §4).
 *
 * Owns the public API, the launcher (pid, channel, outgoing buffer with the
 * fds to pass) and the dispatch loop; the function table is fndef.c's, the
 * run directory rundir.c's, and each kind of handler is a pool's:
 * pool_exec.c (a supervisor per exec attempt) and pool_host.c (native hosts
 * with their queues), reached only through the pool_* functions of
 * runner_core.h. Everything is reached through one epoll fd (runner_fd): the
 * launcher's socket and every pool object's; each event goes to the pool
 * that owns the object (its first member names the kind).
 * runner_dispatch() never blocks.
 * Invariants: main forks nothing (the launcher does); every socketpair is made
 * here and the child's end travels to the launcher by SCM_RIGHTS; a host or
 * attempt that ends mid-dispatch is unlinked at once but freed only at the end
 * of the dispatch (its epoll events may still be in this turn's batch: the
 * pools' sweep); callbacks run only inside runner_dispatch(), and
 * runner_submit() called from one only queues (the dispatch pumps before
 * returning).
 */
#define _GNU_SOURCE
#include "runner_core.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define EVENTS_PER_DISPATCH 128
#define MAX_FDS_PER_SEND 250 /* < SCM_MAX_FD (253) */
#define DESTROY_WAIT_MS 5000 /* launcher's exit after QUIT (its own grace is 2 s) */

/* --- shared with the pools ------------------------------------------------- */

void runner_set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

void runner_epoll_out(runner_t *r, int fd, void *obj, bool *armed, bool want)
{
    if (*armed == want || fd < 0)
        return;
    struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = obj };
    if (epoll_ctl(r->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
        *armed = want;
}

void runner_chan_send(int fd, wbuf *out)
{
    while (fd >= 0 && wbuf_pending(out) > 0) {
        ssize_t n = send(fd, out->p + out->off, wbuf_pending(out), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0) {   /* the other end died: what tells how is not ours to send */
            out->off = out->len;
            break;
        }
        out->off += (size_t)n;
    }
}

int runner_chan_read(int fd, wbuf *in)
{
    for (;;) {
        if (!wbuf_reserve(in, 1 << 16))
            return 1;
        ssize_t n = read(fd, in->p + in->len, in->cap - in->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n <= 0)
            return 1;
        in->len += (size_t)n;
    }
}

void runner_deliver(runner_t *r, const jobctx *c, uint64_t token, proto_outcome o, int64_t started_ms,
                    uint32_t dur_us, const char *error, const void *out, size_t outlen)
{
    if (r->busy)
        r->busy--;
    if (c && c->f) {
        if (o == OUT_OK && outlen && c->f->def.log_output)
            hlog_output(&c->f->log, c->f->def.name, c->message_id, c->attempt, out, outlen);
        if (util_verbose)
            hlog_delivery(c->f->def.name, c->message_id, c->attempt, o, dur_us);
    }
    runner_result res = { token, o, started_ms, dur_us, error, out, outlen };
    if (r->cb)
        r->cb(r->cbarg, &res);
}

/* --- the launcher channel --------------------------------------------------- */

static void lflush(runner_t *r)
{
    while (wbuf_pending(&r->lout) > 0) {
        size_t chunk = wbuf_pending(&r->lout);
        struct iovec iov = { r->lout.p + r->lout.off, chunk };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS_PER_SEND)];
        size_t nf = 0;
        while (nf < r->nfdq && nf < MAX_FDS_PER_SEND && r->fdq[nf].at < r->lsent_total + chunk)
            nf++;
        if (nf) {
            memset(cbuf, 0, sizeof cbuf);
            mh.msg_control = cbuf;
            mh.msg_controllen = CMSG_SPACE(sizeof(int) * nf);
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * nf);
            for (size_t i = 0; i < nf; i++)
                memcpy(CMSG_DATA(c) + i * sizeof(int), &r->fdq[i].fd, sizeof(int));
        }
        ssize_t n = sendmsg(r->lsock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0) {
            LOG_ERROR("runner: launcher channel: %s", strerror(errno));
            r->lout.off = r->lout.len;   /* the EOF on the read side handles the rest */
            break;
        }
        /* Sent fds travel with the first byte; our copies can go. */
        if (nf) {
            for (size_t i = 0; i < nf; i++)
                close(r->fdq[i].fd);
            memmove(r->fdq, r->fdq + nf, (r->nfdq - nf) * sizeof *r->fdq);
            r->nfdq -= nf;
        }
        r->lout.off += (size_t)n;
        r->lsent_total += (uint64_t)n;
    }
    runner_epoll_out(r, r->lsock, r, &r->lout_armed, wbuf_pending(&r->lout) > 0);
}

int runner_lsend(runner_t *r, const wbuf *b, int fd)
{
    if (b->failed)
        return -1;
    if (fd >= 0 && r->nfdq == r->capfdq) {
        size_t cap = r->capfdq ? r->capfdq * 2 : 64;
        fdslot *q = realloc(r->fdq, cap * sizeof *q);
        if (!q)
            return -1;
        r->fdq = q;
        r->capfdq = cap;
    }
    size_t before = r->lout.len;
    wbuf_put(&r->lout, b->p, b->len);
    if (r->lout.failed) {
        r->lout.failed = false;   /* nothing was appended: the buffer is intact */
        r->lout.len = before;
        return -1;
    }
    if (fd >= 0)
        r->fdq[r->nfdq++] = (fdslot){ r->lq_total, fd };
    r->lq_total += b->len;
    lflush(r);
    return 0;
}

void runner_lsend_kill(runner_t *r, uint64_t host_id)
{
    wbuf b = { 0 };
    if (chan_kill_put(&b, host_id) < 0 || runner_lsend(r, &b, -1) < 0)
        LOG_ERROR("runner: cannot ask the launcher to kill host %llu", (unsigned long long)host_id);
    wbuf_free(&b);
}

/* --- the launcher's messages ------------------------------------------------ */

static void launcher_gone(runner_t *r)
{
    if (r->broken)
        return;
    LOG_ERROR("runner: the launcher died: no handler can start any more");
    r->broken = true;
    epoll_ctl(r->epfd, EPOLL_CTL_DEL, r->lsock, NULL);
    pool_host_launcher_gone(r);
    pool_runtime_launcher_gone(r);
}

static void launcher_read(runner_t *r)
{
    int eof = runner_chan_read(r->lsock, &r->lin);
    const char *body;
    uint32_t n;
    bool bad = false;
    while (msg_next(&r->lin, &body, &n, &bad)) {
        chan_hostexit m;
        if ((uint8_t)body[0] == CH_L_HOSTEXIT && chan_hostexit_get(body + 1, n - 1, &m))
            pool_host_exited(r, m.id, m.status);
    }
    if (eof || bad)
        launcher_gone(r);
}

static void launcher_on_event(runner_t *r, uint32_t events)
{
    if (r->broken)
        return;
    if (events & EPOLLOUT)
        lflush(r);
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        launcher_read(r);
}

/* --- public API ------------------------------------------------------------- */

runner_t *runner_new(const runner_opts *o)
{
    runner_opts none = { 0 };
    if (!o)
        o = &none;
    runner_t *r = calloc(1, sizeof *r);
    if (!r) {
        LOG_ERROR("runner: out of memory");
        return NULL;
    }
    r->kind = OBJ_LAUNCHER;
    r->lsock = r->epfd = -1;
    r->launcher = -1;
    r->exec.idle_ms = o->idle_ms > 0 ? o->idle_ms : RUNNER_IDLE_MS;
    r->rt.slots = o->slots > 0 ? o->slots : (int)sysconf(_SC_NPROCESSORS_ONLN);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        strcpy(cwd, "/");
    r->root = o->root ? realpath(o->root, NULL) : strdup(cwd);
    if (!r->root) {
        LOG_ERROR("runner: root %s: %s", o->root ? o->root : ".", strerror(errno));
        goto fail;
    }
    r->wdir = rundir_create(o->run_dir, cwd);
    if (!r->wdir)
        goto fail;

    int board_fd = pool_host_init(r, o->hosts);
    if (board_fd < 0)
        goto fail_dir;
    const char *exe = o->launcher && access(o->launcher, X_OK) == 0 ? o->launcher : NULL;
    if (o->launcher && !exe)
        LOG_WARN("runner: %s: %s: forking the launcher instead", o->launcher, strerror(errno));
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        LOG_ERROR("runner: socketpair: %s", strerror(errno));
        close(board_fd);
        goto fail_dir;
    }
    pid_t pid;
    for (;;) {
        /* An exec'd launcher reports a failed exec on this pipe (closed by a
         * good one): then the launcher is forked as if there were none. */
        int st[2] = { -1, -1 };
        if (exe && pipe2(st, O_CLOEXEC) < 0)
            exe = NULL;
        pid = fork();
        if (pid < 0) {
            LOG_ERROR("runner: fork: %s", strerror(errno));
            close(sv[0]);
            close(sv[1]);
            close(board_fd);
            if (exe) {
                close(st[0]);
                close(st[1]);
            }
            goto fail_dir;
        }
        if (pid == 0) {
            /* The launcher: keep 0–2, our channel as fd 3 and (for an exec'd
             * launcher) the board as fd 4, nothing else. */
            int ch = fcntl(sv[1], F_DUPFD, 10), bd = fcntl(board_fd, F_DUPFD, 10);
            int rep = exe ? fcntl(st[1], F_DUPFD_CLOEXEC, 10) : -1;
            if (ch < 0 || bd < 0 || (exe && rep < 0) || dup2(ch, 3) < 0 || dup2(bd, 4) < 0 ||
                (exe && (dup2(rep, 5) < 0 || fcntl(5, F_SETFD, FD_CLOEXEC) < 0))) {
                if (exe) {   /* tell main, which then forks the launcher instead */
                    int e = errno;
                    if (write(rep >= 0 ? rep : st[1], &e, sizeof e) < 0)
                        _exit(127);
                }
                _exit(127);
            }
            if (exe) {
                launcher_close_from(6);
                char *argv[] = { (char *)"herald-launcher", r->wdir, NULL };
                execv(exe, argv);
                int e = errno;
                if (write(5, &e, sizeof e) < 0)
                    _exit(127);
                _exit(127);
            }
            launcher_close_from(4);
            launcher_main(3, r->wdir, r->native.board);
        }
        if (!exe)
            break;
        close(st[1]);
        int e = 0;
        ssize_t got;
        while ((got = read(st[0], &e, sizeof e)) < 0 && errno == EINTR)
            ;
        close(st[0]);
        if (got <= 0)
            break;   /* exec'd (or, a read error, unknowable: then it runs) */
        waitpid(pid, NULL, 0);
        LOG_WARN("runner: cannot run %s: %s: forking the launcher instead", exe,
                 got == (ssize_t)sizeof e ? strerror(e) : "it failed to start");
        exe = NULL;
    }
    close(board_fd);
    close(sv[1]);
    r->launcher = pid;
    r->lsock = sv[0];
    runner_set_nonblock(r->lsock);
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = r };
    if (r->epfd < 0 || epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->lsock, &ev) < 0) {
        LOG_ERROR("runner: epoll: %s", strerror(errno));
        runner_destroy(&r);
        return NULL;
    }
    return r;

fail_dir:
    exec_rmtree(r->wdir);
fail:
    pool_host_destroy(r);
    free(r->wdir);
    free(r->root);
    free(r);
    return NULL;
}

int runner_submit(runner_t *r, const runner_job *j)
{
    if (!r || !j || !j->function)
        return -1;
    fn *f = fndef_find(r, j->function);
    if (!f) {
        LOG_ERROR("runner: submit: unknown function %s", j->function);
        return -1;
    }
    if (r->broken)
        return -2;   /* not the function's fault: the caller hands it back */
    if (f->refused) {
        LOG_ERROR("runner: submit: function %s is refused", j->function);
        return -1;
    }
    int rc = -1;
    switch (f->kind) {
    case FN_EXEC: rc = pool_exec_submit(r, f, j); break;
    case FN_NATIVE: rc = pool_host_submit(r, f, j); break;
    case FN_RUNTIME: rc = pool_runtime_submit(r, f, j); break;
    }
    return rc == 0 ? 0 : -3;
}

void runner_take_stats(runner_t *r, runner_stats_fn *cb, void *arg)
{
    if (r && cb)
        pool_runtime_take_stats(r, cb, arg);
}

int runner_fd(const runner_t *r)
{
    return r ? r->epfd : -1;
}

int runner_next_timeout_ms(const runner_t *r)
{
    if (!r)
        return -1;
    int64_t now = util_mono_ms();
    int64_t each[] = { pool_host_next_deadline(r, now), pool_exec_next_deadline(r, now),
                       pool_runtime_next_deadline(r, now) };
    int64_t best = -1;
    for (size_t i = 0; i < sizeof each / sizeof each[0]; i++)
        if (each[i] >= 0 && (best < 0 || each[i] < best))
            best = each[i];
    for (const fn *f = r->fns; f; f = f->next)
        if (f->log.dropped) {   /* its "N lines dropped" */
            int64_t left = f->log.told_ms ? f->log.told_ms + HLOG_NOTICE_MS - now : 0;
            if (left < 0)
                left = 0;
            if (best < 0 || left < best)
                best = left;
        }
    return best > INT_MAX ? INT_MAX : (int)best;
}

/* Frees what the pools ended during this dispatch. */
static void sweep(runner_t *r)
{
    pool_host_sweep(r);
    pool_exec_sweep(r);
    pool_runtime_sweep(r);
}

void runner_dispatch(runner_t *r, runner_result_fn *cb, void *arg)
{
    if (!r)
        return;
    r->cb = cb;
    r->cbarg = arg;
    r->in_dispatch = true;
    struct epoll_event evs[EVENTS_PER_DISPATCH];
    int n = epoll_wait(r->epfd, evs, EVENTS_PER_DISPATCH, 0);
    for (int i = 0; i < n; i++) {
        void *obj = evs[i].data.ptr;
        uint32_t e = evs[i].events;
        switch (*(int *)obj) {
        case OBJ_LAUNCHER: launcher_on_event(r, e); break;
        case OBJ_ATTEMPT: pool_exec_on_event(r, obj, e); break;
        case OBJ_HOST: pool_host_on_event(r, obj, e); break;
        case OBJ_RUNTIME: pool_runtime_on_event(r, obj, e); break;
        }
    }
    /* Each pool's deadlines, starts and flushes; then the idle supervisors. */
    pool_host_tick(r, util_mono_ms());
    pool_exec_tick(r, util_mono_ms());
    pool_runtime_tick(r, util_mono_ms());
    int64_t now = util_mono_ms();
    for (fn *f = r->fns; f; f = f->next)
        if (f->log.dropped)
            hlog_tick(&f->log, f->def.name, now);
    r->in_dispatch = false;
    sweep(r);
}

void runner_cancel_all(runner_t *r)
{
    if (!r)
        return;
    pool_exec_cancel_all(r);
    pool_host_cancel_all(r);
    pool_runtime_cancel_all(r);
    r->busy = 0;
    if (!r->in_dispatch)
        sweep(r);
}

bool runner_broken(const runner_t *r)
{
    return !r || r->broken;
}

size_t runner_busy(const runner_t *r)
{
    return r ? r->busy : 0;
}

/* Waits for the launcher to exit, up to ms; then kills it. */
static void reap_launcher(runner_t *r, int ms)
{
    int pfd = (int)syscall(SYS_pidfd_open, r->launcher, 0);
    int64_t end = util_mono_ms() + ms;
    for (;;) {
        if (waitpid(r->launcher, NULL, WNOHANG) != 0)
            break;
        int64_t left = end - util_mono_ms();
        if (left <= 0) {
            LOG_ERROR("runner: the launcher did not stop: killing it");
            kill(r->launcher, SIGKILL);
            waitpid(r->launcher, NULL, 0);
            break;
        }
        if (pfd >= 0) {
            struct pollfd p = { .fd = pfd, .events = POLLIN };
            poll(&p, 1, (int)left);
        } else {
            poll(NULL, 0, left < 10 ? (int)left : 10);
        }
    }
    if (pfd >= 0)
        close(pfd);
    r->launcher = -1;
}

void runner_destroy(runner_t **rp)
{
    if (!rp || !*rp)
        return;
    runner_t *r = *rp;
    *rp = NULL;
    r->cb = NULL;
    /* Busy processes are killed, idle ones get EOF (hosts run herald_fini). */
    runner_cancel_all(r);
    pool_exec_stop(r);
    pool_host_stop(r);
    pool_runtime_stop(r);
    if (r->launcher > 0) {
        if (!r->broken) {
            wbuf b = { 0 };
            if (chan_quit_put(&b) == 0)
                runner_lsend(r, &b, -1);
            wbuf_free(&b);
            /* Deliver what is queued (the kills) before the EOF. */
            int64_t end = util_mono_ms() + 1000;
            while (wbuf_pending(&r->lout) > 0 && util_mono_ms() < end) {
                struct pollfd p = { .fd = r->lsock, .events = POLLOUT };
                poll(&p, 1, 100);
                lflush(r);
            }
        }
        if (r->lsock >= 0)
            close(r->lsock);
        r->lsock = -1;
        reap_launcher(r, DESTROY_WAIT_MS);
    }
    for (size_t i = 0; i < r->nfdq; i++)
        close(r->fdq[i].fd);
    free(r->fdq);
    if (r->lsock >= 0)
        close(r->lsock);
    if (r->epfd >= 0)
        close(r->epfd);
    if (r->wdir)
        exec_rmtree(r->wdir);
    pool_exec_destroy(r);
    pool_host_destroy(r);
    pool_runtime_destroy(r);
    while (r->fns) {
        fn *f = r->fns;
        r->fns = f->next;
        fndef_free(f);
    }
    wbuf_free(&r->lout);
    wbuf_free(&r->lin);
    free(r->wdir);
    free(r->root);
    free(r);
}
