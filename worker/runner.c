/* runner: the worker-side half of running handlers (see runner.h, DESIGN §4).
 *
 * Owns: the launcher (pid, channel, outgoing buffer with the fds to pass),
 * the function table, one `attempt` per exec supervisor (the main end of its
 * channel; busy with one attempt, or idle waiting for the next: a supervisor
 * runs attempts one after another, and one idle for idle_ms is closed), and
 * per native function a queue of jobs and a
 * pool of `host`s (the main end of each host's channel, the jobs written to
 * it in order — the head is the one running — and a backstop deadline).
 * Everything is reached through one epoll fd (runner_fd): the launcher's
 * socket, every attempt's and every host's. runner_dispatch() never blocks.
 * Invariants: main forks nothing (the launcher does); every socketpair is made
 * here and the child's end travels to the launcher by SCM_RIGHTS; a host or
 * attempt that ends mid-dispatch is unlinked at once but freed only at the end
 * of the dispatch (its epoll events may still be in this turn's batch);
 * callbacks run only inside runner_dispatch(), and runner_submit() called from
 * one only queues (the dispatch pumps before returning).
 */
#define _GNU_SOURCE
#include "runner_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define HOST_PIPELINE RUNNER_HOST_PIPELINE
#define EVENTS_PER_DISPATCH 128
#define MAX_FDS_PER_SEND 250 /* < SCM_MAX_FD (253) */
#define DESTROY_WAIT_MS 5000 /* launcher's exit after QUIT (its own grace is 2 s) */
#define HOST_START_MS 30000  /* dlopen + herald_init longer than this: killed, function refused */

enum { OBJ_LAUNCHER = 1, OBJ_ATTEMPT, OBJ_HOST };

typedef struct job job;
struct job {
    job *next;
    uint64_t token;
    char *msg;              /* encoded CH_H_JOB frame; NULL once written to a host */
    size_t len;
};

typedef struct { job *head, *tail; size_t n; } jobq;

typedef struct fn fn;
typedef struct host host;

enum { H_STARTING, H_READY, H_STOPPING };

struct host {
    int kind;               /* OBJ_HOST: first, for epoll dispatch */
    host *next;             /* in fn->hosts, or the graveyard */
    fn *f;
    uint64_t id;            /* our id; the launcher names it so in CH_L_HOSTEXIT */
    int fd;                 /* main's end; -1 once closed */
    int state;              /* H_* */
    unsigned gen;           /* fn->gen it was started for */
    uint32_t timeout_ms;    /* of that definition */
    bool out_armed;         /* EPOLLOUT requested */
    bool backstop;          /* past its deadline: the launcher was asked to kill it */
    uint64_t kill_for;      /* the job (count) it was killed for overrunning */
    bool cancelled;         /* runner_cancel_all dropped its jobs: report nothing */
    wbuf out, in;
    jobq sent;              /* written (or being written), in order; head: the oldest unreported */
    uint64_t reported;      /* results read from it, ever (the count of sent.head - 1) */
    uint32_t slot;          /* its slot in the host board */
    int64_t spawned_ms;     /* monotonic: when it was requested (start deadline) */
};

struct fn {
    fn *next;
    proto_fndef def;        /* deep copy, exec/library paths as given */
    char **argv;            /* exec: argv with root-resolved paths */
    char *library;          /* native: root-resolved library; exec: the program's absolute path */
    unsigned gen;           /* bumped by a changed redefinition; older hosts retire */
    bool refused;           /* a host's start failed (herald_init, dlopen …) */
    jobq queue;             /* native jobs waiting for a host */
    host *hosts;
    int nhosts;             /* current-generation hosts starting or ready */
    int nstarting;
};

/* An exec supervisor, busy with an attempt or idle. */
typedef struct attempt attempt;
struct attempt {
    int kind;               /* OBJ_ATTEMPT */
    attempt *prev, *next;   /* in runner->attempts or runner->idle; next: the graveyard once dead */
    uint64_t token;         /* of the attempt it runs (busy) */
    int fd;                 /* main's end of the supervisor's channel */
    bool dead, idle;
    bool out_armed;         /* EPOLLOUT requested */
    int64_t idle_since_ms;  /* monotonic */
    wbuf in, out;           /* out: a CH_S_RUN being written */
};

typedef struct { uint64_t at; int fd; } fdslot;

struct runner {
    int kind;               /* OBJ_LAUNCHER */
    pid_t launcher;
    int lsock, epfd;
    bool lout_armed;
    bool broken;            /* the launcher is gone: no new processes */
    wbuf lout, lin;
    uint64_t lq_total, lsent_total;   /* stream bytes queued / sent to the launcher */
    fdslot *fdq;            /* fds to pass, in stream order, with their message's offset */
    size_t nfdq, capfdq;
    char *root, *wdir;
    int max_hosts;
    fn *fns;
    attempt *attempts;      /* supervisors running an attempt */
    attempt *idle;          /* supervisors waiting for one, the latest idled first */
    int idle_ms;
    uint64_t next_id;
    size_t busy;
    bool in_dispatch;
    bool unflushed;         /* jobs queued into hosts' buffers, not yet sent */
    runner_result_fn *cb;
    void *cbarg;
    host *dead_hosts;
    attempt *dead_attempts;
    host_slot *board;       /* HOST_SLOTS slots, shared with the hosts */
    bool *slot_used;
    uint32_t slot_hint;     /* where the search for a free slot starts */
};

static unsigned instances;  /* runners made by this process: unique worker dirs */

/* --- small helpers --------------------------------------------------------- */

static void jobq_push(jobq *q, job *j)
{
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    q->n++;
}

static job *jobq_pop(jobq *q)
{
    job *j = q->head;
    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        q->n--;
    }
    return j;
}

static void job_free(job *j)
{
    if (j) {
        free(j->msg);
        free(j);
    }
}

static void set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void epoll_out(runner_t *r, int fd, void *obj, bool *armed, bool want)
{
    if (*armed == want || fd < 0)
        return;
    struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = obj };
    if (epoll_ctl(r->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
        *armed = want;
}

/* Reads until EAGAIN. 1 at EOF (or a read error), else 0. */
static int chan_read(int fd, wbuf *in)
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

static char *join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/%s", a, b);
    return s;
}

static void deliver(runner_t *r, uint64_t token, proto_outcome o, int64_t started_ms,
                    uint32_t dur_us, const char *error, const void *out, size_t outlen)
{
    if (r->busy)
        r->busy--;
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
    epoll_out(r, r->lsock, r, &r->lout_armed, wbuf_pending(&r->lout) > 0);
}

/* Queues a message to the launcher (b: a whole frame) with an fd to pass, or -1. */
static int lsend(runner_t *r, const wbuf *b, int fd)
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

static void lsend_kill(runner_t *r, uint64_t host_id)
{
    wbuf b = { 0 };
    if (chan_kill_put(&b, host_id) < 0 || lsend(r, &b, -1) < 0)
        LOG_ERROR("runner: cannot ask the launcher to kill host %llu", (unsigned long long)host_id);
    wbuf_free(&b);
}

/* --- hosts ---------------------------------------------------------------- */

static void host_flush(runner_t *r, host *h)
{
    while (h->fd >= 0 && wbuf_pending(&h->out) > 0) {
        ssize_t n = send(h->fd, h->out.p + h->out.off, wbuf_pending(&h->out), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0) {   /* the host died: CH_L_HOSTEXIT will tell how */
            h->out.off = h->out.len;
            break;
        }
        h->out.off += (size_t)n;
    }
    epoll_out(r, h->fd, h, &h->out_armed, wbuf_pending(&h->out) > 0);
}

static void host_close(runner_t *r, host *h)
{
    if (h->fd >= 0) {
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, h->fd, NULL);
        close(h->fd);
        h->fd = -1;
    }
}

/* Leaves the pool's count (not the list): it takes no new jobs. */
static void host_retire(host *h)
{
    if (h->state == H_STOPPING)
        return;
    if (h->gen == h->f->gen) {
        h->f->nhosts--;
        if (h->state == H_STARTING)
            h->f->nstarting--;
    }
    h->state = H_STOPPING;
}

/* A free board slot, zeroed, or -1 (every slot is taken: logged once). */
static int slot_take(runner_t *r)
{
    static bool told;
    for (uint32_t k = 0; k < HOST_SLOTS; k++) {
        uint32_t i = (r->slot_hint + k) % HOST_SLOTS;
        if (r->slot_used[i])
            continue;
        r->slot_used[i] = true;
        r->slot_hint = i + 1;
        atomic_store(&r->board[i].started, 0);
        atomic_store(&r->board[i].done, 0);
        atomic_store(&r->board[i].start_ms, 0);
        return (int)i;
    }
    if (!told)
        LOG_ERROR("runner: %d native hosts are running: no more start until one ends", HOST_SLOTS);
    told = true;
    return -1;
}

static int spawn_host(runner_t *r, fn *f)
{
    int slot = slot_take(r);
    if (slot < 0)
        return -1;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        LOG_ERROR("runner: socketpair: %s", strerror(errno));
        r->slot_used[slot] = false;
        return -1;
    }
    host *h = calloc(1, sizeof *h);
    if (!h)
        goto fail;
    h->kind = OBJ_HOST;
    h->f = f;
    h->id = ++r->next_id;
    h->fd = sv[0];
    h->gen = f->gen;
    h->timeout_ms = f->def.timeout_ms;
    h->slot = (uint32_t)slot;
    h->state = H_STARTING;
    h->spawned_ms = util_mono_ms();
    set_nonblock(sv[0]);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = h };
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, sv[0], &ev) < 0)
        goto fail;
    wbuf b = { 0 };
    chan_host m = { .id = h->id, .timeout_ms = f->def.timeout_ms, .memory_mb = f->def.memory_mb,
                    .slot = h->slot, .function = f->def.name, .library = f->library,
                    .symbol = f->def.symbol, .fenv = f->def.env, .nfenv = f->def.nenv };
    int rc = chan_host_put(&b, &m) < 0 ? -1 : lsend(r, &b, sv[1]);
    wbuf_free(&b);
    if (rc < 0) {
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, sv[0], NULL);
        goto fail;
    }
    h->next = f->hosts;
    f->hosts = h;
    f->nhosts++;
    f->nstarting++;
    return 0;
fail:
    free(h);
    close(sv[0]);
    close(sv[1]);
    r->slot_used[slot] = false;
    return -1;
}

/* Writes one queued job into h. */
static void host_assign(runner_t *r, host *h, job *j)
{
    wbuf_put(&h->out, j->msg, j->len);
    if (h->out.failed) {   /* out of memory: fail the job rather than the host */
        h->out.failed = false;
        LOG_ERROR("runner: out of memory queueing a job");
        deliver(r, j->token, OUT_RETURNED, 0, 0, "runner: out of memory", NULL, 0);
        job_free(j);
        return;
    }
    free(j->msg);
    j->msg = NULL;
    jobq_push(&h->sent, j);
    /* sent at the end of this dispatch, with the others: one send (and one
     * wake-up of the host) for a batch of deliveries instead of one each */
    r->unflushed = true;
}

static void flush_hosts(runner_t *r)
{
    for (fn *f = r->fns; f; f = f->next)
        for (host *h = f->hosts; h; h = h->next)
            if (wbuf_pending(&h->out) > 0) host_flush(r, h);
    r->unflushed = false;
}

static void fail_queue(runner_t *r, jobq *q, proto_outcome o, const char *why)
{
    job *j;
    while ((j = jobq_pop(q))) {
        deliver(r, j->token, o, 0, 0, why, NULL, 0);
        job_free(j);
    }
}

/* Marks f refused (its library cannot start) and fails its queued jobs. */
static void fn_refuse(runner_t *r, fn *f, const char *why)
{
    LOG_ERROR("runner: function %s refused: %s", f->def.name, why);
    f->refused = true;
    char text[PROTO_ERROR_TEXT_MAX];
    snprintf(text, sizeof text, "function refused: %s", why);
    /* Counted as failed attempts, not returned: a broker re-sending them here
     * would loop; they reach the dead letters after max_attempts. */
    fail_queue(r, &f->queue, OUT_ERROR, text);
}

/* Hosts of every function, starting or ready. */
static int total_hosts(const runner_t *r)
{
    int n = 0;
    for (const fn *f = r->fns; f; f = f->next) n += f->nhosts;
    return n;
}

/* Starts queued jobs of f on its hosts, starting hosts as needed: about one
 * host per CPU for the whole worker (DESIGN §4), but always one for a
 * function with work — more processes than CPUs only add context switches
 * (W2, four functions: 8 hosts per worker became 4). */
static void pump(runner_t *r, fn *f)
{
    while (f->queue.n > 0 && !f->refused && !r->broken) {
        host *best = NULL;
        for (host *h = f->hosts; h; h = h->next)
            if (h->state == H_READY && h->gen == f->gen && !h->backstop && h->fd >= 0 &&
                (!best || h->sent.n < best->sent.n))
                best = h;
        if (best && best->sent.n == 0) {
            host_assign(r, best, jobq_pop(&f->queue));
            continue;
        }
        if ((f->nhosts == 0 || (f->nhosts < r->max_hosts && total_hosts(r) < r->max_hosts)) &&
            (size_t)f->nstarting < f->queue.n) {
            if (spawn_host(r, f) < 0)
                break;
            continue;
        }
        if (best && best->sent.n < HOST_PIPELINE) {
            host_assign(r, best, jobq_pop(&f->queue));
            continue;
        }
        break;
    }
}

static void host_unlink(runner_t *r, host *h)
{
    for (host **p = &h->f->hosts; *p; p = &(*p)->next)
        if (*p == h) {
            *p = h->next;
            break;
        }
    h->next = r->dead_hosts;
    r->dead_hosts = h;
}

/* h finished its head job: a result arrived. */
static void host_result(runner_t *r, host *h, const char *body, uint32_t n)
{
    runner_result res;
    bool ok = result_get(body, n, &res);
    job *j = h->sent.head;
    if (!ok || !j || j->token != res.token) {
        LOG_ERROR("runner: host %llu of %s sent a bad result: killing it",
                  (unsigned long long)h->id, h->f->def.name);
        lsend_kill(r, h->id);
        host_close(r, h);
        return;
    }
    jobq_pop(&h->sent);
    h->reported++;
    if (!h->cancelled)
        deliver(r, j->token, res.outcome, res.started_ms, res.duration_us, res.error, res.output, res.output_len);
    job_free(j);
    if (h->sent.n == 0 && (h->state == H_STOPPING || h->gen != h->f->gen)) {
        host_retire(h);
        host_close(r, h);   /* idle and outdated: EOF makes it run herald_fini and exit */
    }
}

static void host_read(runner_t *r, host *h)
{
    int eof = chan_read(h->fd, &h->in);
    const char *body;
    uint32_t n;
    bool bad = false;
    while (h->fd >= 0 && msg_next(&h->in, &body, &n, &bad)) {
        switch ((uint8_t)body[0]) {
        case CH_H_READY:
            if (h->state == H_STARTING) {
                h->state = H_READY;
                if (h->gen == h->f->gen)
                    h->f->nstarting--;
                else
                    host_close(r, h);
            }
            break;
        case CH_H_INITFAIL: {
            const char *why;
            chan_initfail_get(body + 1, n - 1, &why);
            if (h->gen == h->f->gen && !h->f->refused)
                fn_refuse(r, h->f, why);
            host_retire(h);
            break;
        }
        case CH_RESULT:
            host_result(r, h, body + 1, n - 1);
            break;
        default:
            bad = true;
            break;
        }
    }
    if (bad) {
        LOG_ERROR("runner: host %llu of %s: malformed stream: killing it",
                  (unsigned long long)h->id, h->f->def.name);
        lsend_kill(r, h->id);
        host_close(r, h);
    } else if (eof && h->fd >= 0) {
        host_close(r, h);   /* it died or is dying: CH_L_HOSTEXIT ends it */
    }
}

static host *host_find(runner_t *r, uint64_t id)
{
    for (fn *f = r->fns; f; f = f->next)
        for (host *h = f->hosts; h; h = h->next)
            if (h->id == id)
                return h;
    return NULL;
}

#define HOST_NEVER_STARTED (-1)   /* host_exited status: the fork failed */
#define HOST_LAUNCHER_GONE (-2)   /* host_exited status: nobody can tell any more */

/* The launcher reaped h (status: its wait status, or one of the above). */
static void host_exited(runner_t *r, host *h, int status)
{
    if (h->fd >= 0)
        host_read(r, h);   /* results it wrote before dying are still buffered */
    host_close(r, h);
    bool was_ready = h->state != H_STARTING;
    host_retire(h);
    host_unlink(r, h);
    fn *f = h->f;
    char why[256];
    if (status == HOST_NEVER_STARTED)
        snprintf(why, sizeof why, "could not start a host");
    else if (status == HOST_LAUNCHER_GONE)
        snprintf(why, sizeof why, "the runner's launcher died");
    else if (WIFSIGNALED(status))
        exec_killed_by(WTERMSIG(status), why);
    else
        snprintf(why, sizeof why, "exit status %d", WEXITSTATUS(status));
    if (!was_ready && status >= 0 && h->gen == f->gen && !f->refused) {
        char text[300];
        snprintf(text, sizeof text, "host died while starting: %s", why);
        fn_refuse(r, f, text);
    }
    if (h->cancelled) {
        job *j;
        while ((j = jobq_pop(&h->sent)))
            job_free(j);
        return;
    }
    /* What the board says it did (it is dead: its last writes are all seen).
     * The job it was running is charged the crash or the timeout — unless
     * main killed it for overrunning another job, which finished just in
     * time. Dead between jobs, it is the last job it finished (a thread or
     * an atexit of that handler, say): charged rather than run again
     * uncounted forever. The other jobs it finished, whose results died with
     * it, and those it never began go back to the broker without counting an
     * attempt. A host that did not die of its own doing (the launcher went,
     * main killed it for a start that took too long) is charged nothing. */
    const host_slot *sl = &r->board[h->slot];
    uint64_t started = atomic_load(&sl->started), done = atomic_load(&sl->done);
    uint64_t culprit = h->backstop ? h->kill_for : started;
    if (status < 0 || (h->backstop && (h->kill_for == 0 || done >= h->kill_for)))
        culprit = 0;
    uint64_t count = h->reported;
    job *j;
    while ((j = jobq_pop(&h->sent))) {
        count++;
        if (count != culprit) {
            deliver(r, j->token, OUT_RETURNED, 0, 0, NULL, NULL, 0);
            job_free(j);
            continue;
        }
        int64_t now = util_mono_ms(), began = atomic_load(&sl->start_ms);
        int64_t start_wall = util_wall_ms() - (now - began);
        uint32_t dur = (uint32_t)((now - began) * 1000);
        char text[320];
        proto_outcome o;
        if (started == done && !h->backstop) {
            o = OUT_CRASHED;
            snprintf(text, sizeof text, "the handler's host died after it returned: %s", why);
        } else if (h->backstop) {
            o = OUT_TIMEOUT;
            if (h->timeout_ms % 1000 == 0)
                snprintf(text, sizeof text, "timeout after %u s", h->timeout_ms / 1000);
            else
                snprintf(text, sizeof text, "timeout after %g s", h->timeout_ms / 1000.0);
        } else {
            o = OUT_CRASHED;
            if (status >= 0 && WIFSIGNALED(status))
                snprintf(text, sizeof text, "%s", why);   /* the same words as an exec handler's */
            else
                snprintf(text, sizeof text, "handler ended its host: %s", why);
        }
        deliver(r, j->token, o, start_wall, dur, text, NULL, 0);
        job_free(j);
    }
}

/* --- exec attempts --------------------------------------------------------- */

static attempt **attempt_list(runner_t *r, const attempt *a)
{
    return a->idle ? &r->idle : &r->attempts;
}

static void attempt_unlink(runner_t *r, attempt *a)
{
    if (a->prev)
        a->prev->next = a->next;
    else
        *attempt_list(r, a) = a->next;
    if (a->next)
        a->next->prev = a->prev;
    a->prev = a->next = NULL;
}

static void attempt_push(runner_t *r, attempt *a)
{
    attempt **l = attempt_list(r, a);
    a->prev = NULL;
    a->next = *l;
    if (a->next)
        a->next->prev = a;
    *l = a;
}

/* Closes the supervisor's channel: an idle one exits, a busy one kills its
 * attempt's tree first. */
static void attempt_end(runner_t *r, attempt *a)
{
    if (a->dead)
        return;
    a->dead = true;
    epoll_ctl(r->epfd, EPOLL_CTL_DEL, a->fd, NULL);
    close(a->fd);
    a->fd = -1;
    attempt_unlink(r, a);
    a->next = r->dead_attempts;
    r->dead_attempts = a;
}

static void attempt_flush(runner_t *r, attempt *a)
{
    while (a->fd >= 0 && wbuf_pending(&a->out) > 0) {
        ssize_t n = send(a->fd, a->out.p + a->out.off, wbuf_pending(&a->out), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0) {   /* it died: the EOF tells */
            a->out.off = a->out.len;
            break;
        }
        a->out.off += (size_t)n;
    }
    if (wbuf_pending(&a->out) == 0 && a->out.cap > (1u << 20))
        wbuf_free(&a->out);   /* after a large payload */
    epoll_out(r, a->fd, a, &a->out_armed, wbuf_pending(&a->out) > 0);
}

/* A supervisor that reported and stays waits for the next attempt. */
static void attempt_idle(runner_t *r, attempt *a)
{
    attempt_unlink(r, a);
    a->idle = true;
    a->token = 0;
    a->idle_since_ms = util_mono_ms();
    attempt_push(r, a);
}

/* After a large output: its buffer goes once the callback has had it (a is
 * freed only at the end of the dispatch; the callback may have handed it a
 * new attempt, whose result is not read yet). */
static void attempt_shrink(attempt *a)
{
    if (wbuf_pending(&a->in) == 0 && a->in.cap > (1u << 20))
        wbuf_free(&a->in);
}

static void attempt_read(runner_t *r, attempt *a)
{
    int eof = chan_read(a->fd, &a->in);
    if (a->idle) {   /* it says nothing while idle: EOF (it died) or garbage ends it */
        if (eof || wbuf_pending(&a->in) > 0)
            attempt_end(r, a);
        return;
    }
    const char *body;
    uint32_t n;
    bool bad = false;
    if (msg_next(&a->in, &body, &n, &bad) && (uint8_t)body[0] == CH_RESULT) {
        runner_result res;
        bool ok = result_get(body + 1, n - 1, &res);
        uint64_t token = a->token;
        /* Before the callback (it may submit): idle, or gone. */
        if (ok && res.token == SUP_STAYS && !eof && wbuf_pending(&a->in) == 0)
            attempt_idle(r, a);
        else
            attempt_end(r, a);
        if (!ok)
            deliver(r, token, OUT_CRASHED, 0, 0, "runner: malformed result from supervisor", NULL, 0);
        else
            deliver(r, token, res.outcome, res.started_ms, res.duration_us, res.error, res.output, res.output_len);
        attempt_shrink(a);
        return;
    }
    if (eof || bad) {
        uint64_t token = a->token;
        attempt_end(r, a);
        deliver(r, token, OUT_CRASHED, 0, 0, "runner: supervisor died without a result", NULL, 0);
    }
}

/* Closes the supervisors idle for idle_ms. The list is short: at most the
 * most attempts that ran at once. */
static void retire_idle(runner_t *r)
{
    int64_t now = util_mono_ms();
    attempt *next;
    for (attempt *a = r->idle; a; a = next) {
        next = a->next;
        if (now - a->idle_since_ms >= r->idle_ms)
            attempt_end(r, a);
    }
}

/* --- the launcher's messages ------------------------------------------------ */

static void launcher_gone(runner_t *r)
{
    if (r->broken)
        return;
    LOG_ERROR("runner: the launcher died: no handler can start any more");
    r->broken = true;
    epoll_ctl(r->epfd, EPOLL_CTL_DEL, r->lsock, NULL);
    for (fn *f = r->fns; f; f = f->next) {
        fail_queue(r, &f->queue, OUT_RETURNED, NULL);
        while (f->hosts)
            host_exited(r, f->hosts, HOST_LAUNCHER_GONE);
    }
}

static void launcher_read(runner_t *r)
{
    int eof = chan_read(r->lsock, &r->lin);
    const char *body;
    uint32_t n;
    bool bad = false;
    while (msg_next(&r->lin, &body, &n, &bad)) {
        if ((uint8_t)body[0] != CH_L_HOSTEXIT)
            continue;
        chan_hostexit m;
        host *h = chan_hostexit_get(body + 1, n - 1, &m) ? host_find(r, m.id) : NULL;
        if (h)
            host_exited(r, h, m.status);
    }
    if (eof || bad)
        launcher_gone(r);
}

/* --- public API ------------------------------------------------------------- */

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
        char *p = join(run_dir, e->d_name);
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
    r->idle_ms = o->idle_ms > 0 ? o->idle_ms : RUNNER_IDLE_MS;
    r->max_hosts = o->hosts > 0 ? o->hosts : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (r->max_hosts < 1)
        r->max_hosts = 1;
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        strcpy(cwd, "/");
    r->root = o->root ? realpath(o->root, NULL) : strdup(cwd);
    if (!r->root) {
        LOG_ERROR("runner: root %s: %s", o->root ? o->root : ".", strerror(errno));
        goto fail;
    }
    char *run_dir;
    if (o->run_dir) {
        run_dir = o->run_dir[0] == '/' ? strdup(o->run_dir) : join(cwd, o->run_dir);
    } else {
        const char *t = getenv("TMPDIR");
        run_dir = join(t && t[0] == '/' ? t : "/tmp", "herald-runs");
    }
    if (!run_dir || mkdir_p(run_dir) < 0) {
        LOG_ERROR("runner: run directory %s: %s", run_dir ? run_dir : "?", strerror(errno));
        free(run_dir);
        goto fail;
    }
    remove_stale(run_dir);
    char name[96];
    snprintf(name, sizeof name, "%d-%llu-%u", (int)getpid(), proc_start(getpid()), instances++);
    r->wdir = join(run_dir, name);
    free(run_dir);
    if (!r->wdir || mkdir(r->wdir, 0700) < 0) {
        LOG_ERROR("runner: mkdir %s: %s", r->wdir ? r->wdir : "?", strerror(errno));
        goto fail;
    }
    for (int i = 0; i < RUN_SHARDS; i++) {
        char shard[16];
        snprintf(shard, sizeof shard, "%d", i);
        char *p = join(r->wdir, shard);
        int rc = p ? mkdir(p, 0700) : -1;
        free(p);
        if (rc < 0) {
            LOG_ERROR("runner: mkdir in %s: %s", r->wdir, strerror(errno));
            goto fail_dir;
        }
    }

    /* The board is a memfd, so an exec'd launcher can map it too. */
    size_t board_size = HOST_SLOTS * sizeof(host_slot);
    int board_fd = memfd_create("herald-host-board", MFD_CLOEXEC);
    if (board_fd < 0 || ftruncate(board_fd, (off_t)board_size) < 0 ||
        (r->board = mmap(NULL, board_size, PROT_READ | PROT_WRITE, MAP_SHARED, board_fd, 0)) == MAP_FAILED ||
        !(r->slot_used = calloc(HOST_SLOTS, sizeof *r->slot_used))) {
        LOG_ERROR("runner: host board: %s", strerror(errno));
        if (board_fd >= 0)
            close(board_fd);
        goto fail_dir;
    }
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
            launcher_main(3, r->wdir, r->board);
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
    set_nonblock(r->lsock);
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
    if (r->board && r->board != MAP_FAILED)
        munmap(r->board, HOST_SLOTS * sizeof(host_slot));
    free(r->slot_used);
    free(r->wdir);
    free(r->root);
    free(r);
    return NULL;
}

static void def_free(proto_fndef *d)
{
    free(d->name);
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
    d->timeout_ms = s->timeout_ms;
    d->memory_mb = s->memory_mb;
    d->max_attempts = s->max_attempts;
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
    if (!streq(a->name, b->name) || a->native != b->native || a->timeout_ms != b->timeout_ms ||
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
        library = d.library[0] == '/' ? strdup(d.library) : join(r->root, d.library);
        if (!library)
            goto oom;
        if (access(library, R_OK) < 0) {
            REFUSE("library %s: %s", library, strerror(errno));
            goto fail;
        }
    } else {
        if (d.nexec == 0 || !d.exec[0][0]) {
            REFUSE("exec needs a command");
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
            char *full = rel ? join(r->root, a) : NULL;
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
        def_free(&d);
        free(library);
        for (uint32_t i = 0; argv && argv[i]; i++)
            free(argv[i]);
        free(argv);
        return 0;
    } else {
        /* Changed: hosts of the old definition finish what they hold, then go. */
        f->gen++;
        for (host *h = f->hosts; h; h = h->next) {
            h->state = H_STOPPING;
            if (h->sent.n == 0)
                host_close(r, h);   /* EOF: it runs herald_fini and exits */
        }
        f->nhosts = f->nstarting = 0;
        def_free(&f->def);
        for (uint32_t i = 0; f->argv && f->argv[i]; i++)
            free(f->argv[i]);
        free(f->argv);
        free(f->library);
    }
    f->def = d;
    f->argv = argv;
    f->library = library;
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

static fn *fn_find(runner_t *r, const char *name)
{
    for (fn *f = r->fns; f; f = f->next)
        if (!strcmp(f->def.name, name))
            return f;
    return NULL;
}

/* Is the idle supervisor a still there? One that died while idle (its EOF
 * not read yet), or broke the protocol by talking while idle, is ended. */
static bool idle_alive(runner_t *r, attempt *a)
{
    char c;
    if (recv(a->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) >= 0 || (errno != EAGAIN && errno != EINTR)) {
        attempt_end(r, a);
        return false;
    }
    return true;
}

/* Hands the attempt (a CH_S_RUN message, taken from b) to the idle
 * supervisor a. false when a turns out to be gone before it got a byte: then
 * it is ended and the attempt is still the caller's to place — not a failed
 * attempt. */
static bool submit_to_idle(runner_t *r, attempt *a, wbuf *b, uint64_t token)
{
    ssize_t n = send(a->fd, b->p, b->len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        attempt_end(r, a);
        return false;
    }
    attempt_unlink(r, a);
    a->idle = false;
    a->token = token;
    wbuf_free(&a->out);   /* empty: it was idle */
    a->out = *b;          /* its buffer, not a copy of the payload */
    a->out.off = n > 0 ? (size_t)n : 0;
    *b = (wbuf){ 0 };
    attempt_push(r, a);
    r->busy++;
    attempt_flush(r, a);
    return true;
}

static int submit_exec(runner_t *r, fn *f, const runner_job *j)
{
    char n1[16], n2[16];
    snprintf(n1, sizeof n1, "%d", j->attempt);
    snprintf(n2, sizeof n2, "%d", j->max_attempts);
    const proto_attr vars[] = {
        { (char *)"HERALD_FUNCTION", f->def.name },
        { (char *)"HERALD_TOPIC", (char *)(j->topic ? j->topic : "") },
        { (char *)"HERALD_MESSAGE_ID", (char *)(j->message_id ? j->message_id : "") },
        { (char *)"HERALD_ATTEMPT", n1 },
        { (char *)"HERALD_MAX_ATTEMPTS", n2 },
    };
    chan_exec m = { .id = ++r->next_id, .timeout_ms = f->def.timeout_ms, .memory_mb = f->def.memory_mb,
                    .program = f->library, .payload = j->payload, .payload_len = j->payload_len,
                    .argc = f->def.nexec, .argv = f->argv, .fenv = f->def.env, .nfenv = f->def.nenv,
                    .vars = vars, .nvars = 5, .attrs = j->attrs, .nattrs = j->nattrs };
    /* CH_S_RUN to an idle supervisor, else CH_L_EXEC to the launcher: encoded
     * once, again only when an idle one turned out dead after all. */
    wbuf b = { 0 };
    uint8_t type = 0;
    for (;;) {
        attempt *a = r->idle;
        if (a && !idle_alive(r, a))
            continue;
        uint8_t want = a ? CH_S_RUN : CH_L_EXEC;
        if (type != want) {
            wbuf_free(&b);
            if (chan_exec_put(&b, want, &m) < 0) {
                LOG_ERROR("runner: submit %s: out of memory", f->def.name);
                wbuf_free(&b);
                return -1;
            }
            type = want;
        }
        if (!a)
            break;
        if (submit_to_idle(r, a, &b, j->token))
            return 0;
    }
    /* No idle supervisor: the launcher starts one with this attempt. */
    attempt *a = calloc(1, sizeof *a);
    int sv[2] = { -1, -1 };
    if (!a || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        LOG_ERROR("runner: submit %s: %s", f->def.name, a ? strerror(errno) : "out of memory");
        free(a);
        wbuf_free(&b);
        return -1;
    }
    a->kind = OBJ_ATTEMPT;
    a->token = j->token;
    a->fd = sv[0];
    set_nonblock(sv[0]);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = a };
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, sv[0], &ev) < 0) {
        LOG_ERROR("runner: submit %s: cannot queue the attempt", f->def.name);
        goto fail;
    }
    if (lsend(r, &b, sv[1]) < 0) {
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, sv[0], NULL);
        LOG_ERROR("runner: submit %s: out of memory", f->def.name);
        goto fail;
    }
    wbuf_free(&b);
    attempt_push(r, a);
    r->busy++;
    return 0;
fail:
    wbuf_free(&b);
    close(sv[0]);
    close(sv[1]);
    free(a);
    return -1;
}

static int submit_native(runner_t *r, fn *f, const runner_job *j)
{
    job *q = calloc(1, sizeof *q);
    if (!q)
        return -1;
    wbuf b = { 0 };
    chan_job m = { .token = j->token, .topic = j->topic, .message_id = j->message_id,
                   .attempt = (uint32_t)j->attempt, .max_attempts = (uint32_t)j->max_attempts,
                   .nattrs = (uint32_t)j->nattrs, .attrs = j->attrs,
                   .payload = j->payload, .payload_len = j->payload_len };
    if (chan_job_put(&b, &m) < 0) {
        LOG_ERROR("runner: submit %s: out of memory", f->def.name);
        wbuf_free(&b);
        free(q);
        return -1;
    }
    q->token = j->token;
    q->msg = b.p;
    q->len = b.len;
    jobq_push(&f->queue, q);
    r->busy++;
    if (!r->in_dispatch)
        pump(r, f);
    return 0;
}

int runner_submit(runner_t *r, const runner_job *j)
{
    if (!r || !j || !j->function)
        return -1;
    fn *f = fn_find(r, j->function);
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
    int rc = f->def.native ? submit_native(r, f, j) : submit_exec(r, f, j);
    return rc == 0 ? 0 : -3;
}

int runner_fd(const runner_t *r)
{
    return r ? r->epfd : -1;
}

/* When main kills h if it is still at it (monotonic ms), or -1: no deadline;
 * *job: the job (count) that deadline is for, 0 for none. A running job (the
 * board says so): its start + the function's timeout — the host arms no
 * timer of its own. Between jobs with more written into it: the next one
 * starts now at the earliest, so look again by now + timeout. A start
 * (dlopen + herald_init): HOST_START_MS. */
static int64_t host_deadline(const runner_t *r, const host *h, uint64_t *job)
{
    *job = 0;
    if (h->backstop || h->fd < 0)
        return -1;
    if (h->state == H_STARTING)
        return h->spawned_ms + HOST_START_MS;
    if (h->sent.n == 0 || h->timeout_ms == 0)
        return -1;
    const host_slot *sl = &r->board[h->slot];
    uint64_t started = atomic_load_explicit(&sl->started, memory_order_acquire);
    if (started == atomic_load_explicit(&sl->done, memory_order_acquire))
        return util_mono_ms() + h->timeout_ms;   /* between jobs: not a kill, a wake-up */
    *job = started;
    return atomic_load_explicit(&sl->start_ms, memory_order_relaxed) + h->timeout_ms;
}

int runner_next_timeout_ms(const runner_t *r)
{
    if (!r)
        return -1;
    if (r->unflushed)
        return 0;   /* submitted jobs wait in buffers: dispatch now */
    int64_t best = -1, now = util_mono_ms();
    for (const attempt *a = r->idle; a; a = a->next) {   /* the next idle supervisor to close */
        int64_t left = a->idle_since_ms + r->idle_ms - now;
        if (left < 0)
            left = 0;
        if (best < 0 || left < best)
            best = left;
    }
    for (fn *f = r->fns; f; f = f->next)
        for (host *h = f->hosts; h; h = h->next) {
            uint64_t job;
            int64_t dl = host_deadline(r, h, &job);
            if (dl >= 0) {
                int64_t left = dl - now;
                if (left < 0)
                    left = 0;
                if (best < 0 || left < best)
                    best = left;
            }
        }
    return best > INT_MAX ? INT_MAX : (int)best;
}

static void free_graveyard(runner_t *r)
{
    while (r->dead_hosts) {
        host *h = r->dead_hosts;
        r->dead_hosts = h->next;
        if (r->slot_used)
            r->slot_used[h->slot] = false;
        wbuf_free(&h->in);
        wbuf_free(&h->out);
        job *j;
        while ((j = jobq_pop(&h->sent)))
            job_free(j);
        free(h);
    }
    while (r->dead_attempts) {
        attempt *a = r->dead_attempts;
        r->dead_attempts = a->next;
        wbuf_free(&a->in);
        wbuf_free(&a->out);
        free(a);
    }
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
        int kind = *(int *)evs[i].data.ptr;
        uint32_t e = evs[i].events;
        if (kind == OBJ_LAUNCHER) {
            if (r->broken)
                continue;
            if (e & EPOLLOUT)
                lflush(r);
            if (e & (EPOLLIN | EPOLLHUP | EPOLLERR))
                launcher_read(r);
        } else if (kind == OBJ_ATTEMPT) {
            attempt *a = evs[i].data.ptr;
            if (!a->dead && (e & EPOLLOUT))
                attempt_flush(r, a);
            if (!a->dead && (e & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                attempt_read(r, a);
        } else {
            host *h = evs[i].data.ptr;
            if (h->fd < 0)
                continue;   /* closed earlier in this batch */
            if (e & EPOLLOUT)
                host_flush(r, h);
            if (h->fd >= 0 && (e & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                host_read(r, h);
        }
    }
    /* A host past its job's deadline (or its start's): the launcher kills it. */
    int64_t now = util_mono_ms();
    for (fn *f = r->fns; f && !r->broken; f = f->next)
        for (host *h = f->hosts; h; h = h->next) {
            uint64_t job;
            int64_t dl = host_deadline(r, h, &job);
            if (dl >= 0 && now >= dl) {
                if (h->state == H_STARTING)
                    LOG_ERROR("runner: a host of %s did not start in %d s: killing it",
                              f->def.name, HOST_START_MS / 1000);
                h->backstop = true;
                h->kill_for = job;   /* the job the deadline was for, whatever runs by the kill */
                lsend_kill(r, h->id);
            }
        }
    for (fn *f = r->fns; f; f = f->next)
        pump(r, f);
    flush_hosts(r);
    retire_idle(r);
    r->in_dispatch = false;
    free_graveyard(r);
}

void runner_cancel_all(runner_t *r)
{
    if (!r)
        return;
    while (r->attempts)
        attempt_end(r, r->attempts);   /* EOF on its channel: the supervisor kills its tree */
    for (fn *f = r->fns; f; f = f->next) {
        job *j;
        while ((j = jobq_pop(&f->queue)))
            job_free(j);
        for (host *h = f->hosts; h; h = h->next) {
            if (h->sent.n == 0 || h->cancelled)
                continue;
            h->cancelled = true;
            while ((j = jobq_pop(&h->sent)))
                job_free(j);
            host_retire(h);
            host_close(r, h);
            if (!r->broken)
                lsend_kill(r, h->id);
        }
    }
    r->busy = 0;
    if (!r->in_dispatch)
        free_graveyard(r);
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
    /* Busy hosts are killed, idle ones get EOF and run herald_fini. */
    runner_cancel_all(r);
    while (r->idle)
        attempt_end(r, r->idle);   /* EOF: it removes its parked dir and exits */
    for (fn *f = r->fns; f; f = f->next)
        for (host *h = f->hosts; h; h = h->next)
            host_close(r, h);
    if (r->launcher > 0) {
        if (!r->broken) {
            wbuf b = { 0 };
            if (chan_quit_put(&b) == 0)
                lsend(r, &b, -1);
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
    while (r->fns) {
        fn *f = r->fns;
        r->fns = f->next;
        job *j;
        while ((j = jobq_pop(&f->queue)))
            job_free(j);
        while (f->hosts) {
            host *h = f->hosts;
            f->hosts = h->next;
            h->next = r->dead_hosts;
            r->dead_hosts = h;
        }
        def_free(&f->def);
        for (uint32_t i = 0; f->argv && f->argv[i]; i++)
            free(f->argv[i]);
        free(f->argv);
        free(f->library);
        free(f);
    }
    free_graveyard(r);
    munmap(r->board, HOST_SLOTS * sizeof(host_slot));
    free(r->slot_used);
    wbuf_free(&r->lout);
    wbuf_free(&r->lin);
    free(r->wdir);
    free(r->root);
    free(r);
}
