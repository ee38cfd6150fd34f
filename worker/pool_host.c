/* pool_host: native functions (DESIGN §4 "native"), main's side.
 *
 * Owns, per native function, its queue of jobs and its pool of `host`s (the
 * main end of each host's channel, the jobs written to it in order — the
 * head is the one running — and its deadline), the host board (a shared
 * page where each host writes which job it started and finished: how main
 * charges a crash or a timeout to the right job) and the hosts that ended
 * this dispatch (freed at its end). It starts hosts (by the launcher), feeds
 * them jobs (pump: about one host per CPU for the whole worker), reads their
 * results, kills one past its deadline (by the launcher) and settles the
 * jobs of one that died (host_exited). The dispatch loop reaches it through
 * the pool_host_* functions (runner_core.h).
 */
#define _GNU_SOURCE
#include "runner_core.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define HOST_PIPELINE RUNNER_HOST_PIPELINE
#define HOST_START_MS 30000  /* dlopen + herald_init longer than this: killed, function refused */

/* What a host is doing. The first three are its phase in the pool; the
 * others are how it ends, and keep the phase it had (host.phase) for the
 * pool's counts and for host_exited. Every change goes through the
 * transitions below ("--- host states").
 *
 *   STARTING --CH_H_READY--> READY
 *   STARTING, READY --retired (CH_H_INITFAIL, a changed definition)--> DRAINING
 *   STARTING, READY, DRAINING --past its deadline--> KILLING
 *   STARTING, READY, DRAINING --channel closed--> CLOSED
 *   any with jobs --runner_cancel_all--> CANCELLED
 *   any --CH_L_HOSTEXIT--> freed (host_exited)
 *
 * Only a READY host takes jobs; only STARTING, READY and DRAINING hosts
 * (channel open, no kill asked) have a deadline. */
typedef enum {
    HOST_STARTING,  /* dlopen + herald_init; counted in nhosts and nstarting */
    HOST_READY,     /* takes jobs; counted in nhosts */
    HOST_DRAINING,  /* retired (or of an older definition): finishes the jobs it holds, then is
                       sent away (EOF); not counted */
    HOST_KILLING,   /* past its deadline (kill_for): the launcher was asked to kill it; its
                       channel may still bring results until it dies */
    HOST_CLOSED,    /* its channel is closed (EOF, a bad stream, sent away): waits for its exit */
    HOST_CANCELLED, /* runner_cancel_all dropped its jobs and had it killed: reports nothing */
} host_state;

struct host {
    int kind;               /* OBJ_HOST: first, for epoll dispatch */
    host *next;             /* in fn->hosts, or the graveyard */
    fn *f;
    uint64_t id;            /* our id; the launcher names it so in CH_L_HOSTEXIT */
    int fd;                 /* main's end; -1 once closed */
    host_state state;
    host_state phase;       /* STARTING, READY or DRAINING: state while it is one of those,
                               else the one it had (a READY msg or a retire still moves it) */
    unsigned gen;           /* fn->native.gen it was started for: its definition's */
    uint32_t timeout_ms;    /* of that definition */
    bool out_armed;         /* EPOLLOUT requested */
    uint64_t kill_for;      /* KILLING: the job (count) it was killed for overrunning; 0: its start */
    wbuf out, in;
    jobq sent;              /* written (or being written), in order; head: the oldest unreported */
    uint64_t reported;      /* results read from it, ever (the count of sent.head - 1) */
    uint32_t slot;          /* its slot in the host board */
    int64_t spawned_ms;     /* monotonic: when it was requested (start deadline) */
};

static void host_flush(runner_t *r, host *h)
{
    runner_chan_send(h->fd, &h->out);
    runner_epoll_out(r, h->fd, h, &h->out_armed, wbuf_pending(&h->out) > 0);
}

/* --- host states: every transition ------------------------------------------ */

static bool host_live(const host *h)
{
    return h->state == HOST_STARTING || h->state == HOST_READY || h->state == HOST_DRAINING;
}

/* Moves h's phase (and its state, while it is live). */
static void host_set_phase(host *h, host_state phase)
{
    h->phase = phase;
    if (host_live(h))
        h->state = phase;
}

/* Closes main's end (EOF to the host, if it still reads). A live host is
 * CLOSED; one being killed or cancelled stays so. */
static void host_close(runner_t *r, host *h)
{
    if (h->fd >= 0) {
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, h->fd, NULL);
        close(h->fd);
        h->fd = -1;
    }
    if (host_live(h))
        h->state = HOST_CLOSED;
}

/* Leaves the pool's count (not the list): it takes no new jobs. */
static void host_retire(host *h)
{
    if (h->phase == HOST_DRAINING)
        return;
    if (h->gen == h->f->native.gen) {
        h->f->native.nhosts--;
        if (h->phase == HOST_STARTING)
            h->f->native.nstarting--;
    }
    host_set_phase(h, HOST_DRAINING);
}

/* CH_H_READY: its library is loaded and herald_init passed. */
static void host_ready(runner_t *r, host *h)
{
    if (h->phase != HOST_STARTING)
        return;
    host_set_phase(h, HOST_READY);
    if (h->gen == h->f->native.gen)
        h->f->native.nstarting--;
    else
        host_close(r, h);
}

/* Its function's definition changed (the pool's counts are reset by the caller). */
static void host_outdated(runner_t *r, host *h)
{
    if (h->state != HOST_CANCELLED)
        host_set_phase(h, HOST_DRAINING);
    if (h->sent.n == 0)
        host_close(r, h);   /* EOF: it runs herald_fini and exits */
}

/* Past the deadline of job (count) `job`, or of its start (0): killed. */
static void host_overdue(runner_t *r, host *h, uint64_t job)
{
    if (h->state == HOST_STARTING)
        LOG_ERROR("runner: a host of %s did not start in %d s: killing it",
                  h->f->def.name, HOST_START_MS / 1000);
    h->state = HOST_KILLING;
    h->kill_for = job;   /* the job the deadline was for, whatever runs by the kill */
    runner_lsend_kill(r, h->id);
}

/* runner_cancel_all: its jobs dropped without a word, it is retired and killed. */
static void host_cancel(runner_t *r, host *h)
{
    job *j;
    while ((j = jobq_pop(&h->sent)))
        job_free(j);
    host_retire(h);
    host_close(r, h);
    h->state = HOST_CANCELLED;
    if (!r->broken)
        runner_lsend_kill(r, h->id);
}

/* A free board slot, zeroed, or -1 (every slot is taken: logged once). */
static int slot_take(runner_t *r)
{
    static bool told;
    for (uint32_t k = 0; k < HOST_SLOTS; k++) {
        uint32_t i = (r->native.slot_hint + k) % HOST_SLOTS;
        if (r->native.slot_used[i])
            continue;
        r->native.slot_used[i] = true;
        r->native.slot_hint = i + 1;
        atomic_store(&r->native.board[i].started, 0);
        atomic_store(&r->native.board[i].done, 0);
        atomic_store(&r->native.board[i].start_ms, 0);
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
        r->native.slot_used[slot] = false;
        return -1;
    }
    host *h = calloc(1, sizeof *h);
    if (!h)
        goto fail;
    h->kind = OBJ_HOST;
    h->f = f;
    h->id = ++r->next_id;
    h->fd = sv[0];
    h->gen = f->native.gen;
    h->timeout_ms = f->def.timeout_ms;
    h->slot = (uint32_t)slot;
    h->state = h->phase = HOST_STARTING;
    h->spawned_ms = util_mono_ms();
    runner_set_nonblock(sv[0]);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = h };
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, sv[0], &ev) < 0)
        goto fail;
    wbuf b = { 0 };
    chan_host m = { .id = h->id, .timeout_ms = f->def.timeout_ms, .memory_mb = f->def.memory_mb,
                    .slot = h->slot, .function = f->def.name, .library = f->path,
                    .symbol = f->def.symbol, .fenv = f->def.env, .nfenv = f->def.nenv };
    int rc = chan_host_put(&b, &m) < 0 ? -1 : runner_lsend(r, &b, sv[1]);
    wbuf_free(&b);
    if (rc < 0) {
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, sv[0], NULL);
        goto fail;
    }
    h->next = f->native.hosts;
    f->native.hosts = h;
    f->native.nhosts++;
    f->native.nstarting++;
    return 0;
fail:
    free(h);
    close(sv[0]);
    close(sv[1]);
    r->native.slot_used[slot] = false;
    return -1;
}

/* Writes one queued job into h. */
static void host_assign(runner_t *r, host *h, job *j)
{
    wbuf_put(&h->out, j->msg, j->len);
    if (h->out.failed) {   /* out of memory: fail the job rather than the host */
        h->out.failed = false;
        LOG_ERROR("runner: out of memory queueing a job");
        runner_deliver(r, &j->ctx, j->token, OUT_RETURNED, 0, 0, "runner: out of memory", NULL, 0);
        job_free(j);
        return;
    }
    free(j->msg);
    j->msg = NULL;
    jobq_push(&h->sent, j);
    /* sent at the end of this dispatch, with the others: one send (and one
     * wake-up of the host) for a batch of deliveries instead of one each */
    r->native.unflushed = true;
}

static void flush_hosts(runner_t *r)
{
    for (fn *f = r->fns; f; f = f->next)
        for (host *h = f->native.hosts; h; h = h->next)
            if (wbuf_pending(&h->out) > 0) host_flush(r, h);
    r->native.unflushed = false;
}

static void fail_queue(runner_t *r, jobq *q, proto_outcome o, const char *why)
{
    job *j;
    while ((j = jobq_pop(q))) {
        runner_deliver(r, &j->ctx, j->token, o, 0, 0, why, NULL, 0);
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
    fail_queue(r, &f->native.queue, OUT_ERROR, text);
}

/* Hosts of every function, starting or ready. */
static int total_hosts(const runner_t *r)
{
    int n = 0;
    for (const fn *f = r->fns; f; f = f->next) n += f->native.nhosts;
    return n;
}

/* Starts queued jobs of f on its hosts, starting hosts as needed: about one
 * host per CPU for the whole worker (DESIGN §4), but always one for a
 * function with work — more processes than CPUs only add context switches
 * (W2, four functions: 8 hosts per worker became 4). */
static void pump(runner_t *r, fn *f)
{
    while (f->native.queue.n > 0 && !f->refused && !r->broken) {
        host *best = NULL;
        for (host *h = f->native.hosts; h; h = h->next)
            if (h->state == HOST_READY &&
                (!best || h->sent.n < best->sent.n))
                best = h;
        if (best && best->sent.n == 0) {
            host_assign(r, best, jobq_pop(&f->native.queue));
            continue;
        }
        if ((f->native.nhosts == 0 || (f->native.nhosts < r->native.max_hosts && total_hosts(r) < r->native.max_hosts)) &&
            (size_t)f->native.nstarting < f->native.queue.n) {
            if (spawn_host(r, f) < 0)
                break;
            continue;
        }
        if (best && best->sent.n < HOST_PIPELINE) {
            host_assign(r, best, jobq_pop(&f->native.queue));
            continue;
        }
        break;
    }
}

static void host_unlink(runner_t *r, host *h)
{
    for (host **p = &h->f->native.hosts; *p; p = &(*p)->next)
        if (*p == h) {
            *p = h->next;
            break;
        }
    h->next = r->native.dead;
    r->native.dead = h;
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
        runner_lsend_kill(r, h->id);
        host_close(r, h);
        return;
    }
    jobq_pop(&h->sent);
    h->reported++;
    if (h->state != HOST_CANCELLED)
        runner_deliver(r, &j->ctx, j->token, res.outcome, res.started_ms, res.duration_us, res.error, res.output, res.output_len);
    job_free(j);
    if (h->sent.n == 0 && (h->phase == HOST_DRAINING || h->gen != h->f->native.gen)) {
        host_retire(h);
        host_close(r, h);   /* idle and outdated: EOF makes it run herald_fini and exit */
    }
}

static void host_read(runner_t *r, host *h)
{
    int eof = runner_chan_read(h->fd, &h->in);
    const char *body;
    uint32_t n;
    bool bad = false;
    while (h->fd >= 0 && msg_next(&h->in, &body, &n, &bad)) {
        switch ((uint8_t)body[0]) {
        case CH_H_READY:
            host_ready(r, h);
            break;
        case CH_H_INITFAIL: {
            const char *why;
            chan_initfail_get(body + 1, n - 1, &why);
            if (h->gen == h->f->native.gen && !h->f->refused)
                fn_refuse(r, h->f, why);
            host_retire(h);
            break;
        }
        case CH_RESULT:
            host_result(r, h, body + 1, n - 1);
            break;
        case CH_LOG:   /* herald_log lines, before their job's result */
            bad = !hlog_chan(&h->f->log, h->f->def.name, body + 1, n - 1);
            break;
        default:
            bad = true;
            break;
        }
    }
    if (bad) {
        LOG_ERROR("runner: host %llu of %s: malformed stream: killing it",
                  (unsigned long long)h->id, h->f->def.name);
        runner_lsend_kill(r, h->id);
        host_close(r, h);
    } else if (eof && h->fd >= 0) {
        host_close(r, h);   /* it died or is dying: CH_L_HOSTEXIT ends it */
    }
}

static host *host_find(runner_t *r, uint64_t id)
{
    for (fn *f = r->fns; f; f = f->next)
        for (host *h = f->native.hosts; h; h = h->next)
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
    bool was_ready = h->phase != HOST_STARTING;
    bool killed = h->state == HOST_KILLING;
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
    if (!was_ready && status >= 0 && h->gen == f->native.gen && !f->refused) {
        char text[300];
        snprintf(text, sizeof text, "host died while starting: %s", why);
        fn_refuse(r, f, text);
    }
    if (h->state == HOST_CANCELLED) {
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
    const host_slot *sl = &r->native.board[h->slot];
    uint64_t started = atomic_load(&sl->started), done = atomic_load(&sl->done);
    uint64_t culprit = killed ? h->kill_for : started;
    if (status < 0 || (killed && (h->kill_for == 0 || done >= h->kill_for)))
        culprit = 0;
    uint64_t count = h->reported;
    job *j;
    while ((j = jobq_pop(&h->sent))) {
        count++;
        if (count != culprit) {
            runner_deliver(r, &j->ctx, j->token, OUT_RETURNED, 0, 0, NULL, NULL, 0);
            job_free(j);
            continue;
        }
        int64_t now = util_mono_ms(), began = atomic_load(&sl->start_ms);
        int64_t start_wall = util_wall_ms() - (now - began);
        uint32_t dur = (uint32_t)((now - began) * 1000);
        char text[320];
        proto_outcome o;
        if (started == done && !killed) {
            o = OUT_CRASHED;
            snprintf(text, sizeof text, "the handler's host died after it returned: %s", why);
        } else if (killed) {
            o = OUT_TIMEOUT;
            char t[48];
            snprintf(text, sizeof text, "%s", exec_timeout_text("", h->timeout_ms, t));
        } else {
            o = OUT_CRASHED;
            if (status >= 0 && WIFSIGNALED(status))
                snprintf(text, sizeof text, "%s", why);   /* the same words as an exec handler's */
            else
                snprintf(text, sizeof text, "handler ended its host: %s", why);
        }
        runner_deliver(r, &j->ctx, j->token, o, start_wall, dur, text, NULL, 0);
        job_free(j);
    }
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
    if (!host_live(h))
        return -1;
    if (h->state == HOST_STARTING)
        return h->spawned_ms + HOST_START_MS;
    if (h->sent.n == 0 || h->timeout_ms == 0)
        return -1;
    const host_slot *sl = &r->native.board[h->slot];
    uint64_t started = atomic_load_explicit(&sl->started, memory_order_acquire);
    if (started == atomic_load_explicit(&sl->done, memory_order_acquire))
        return util_mono_ms() + h->timeout_ms;   /* between jobs: not a kill, a wake-up */
    *job = started;
    return atomic_load_explicit(&sl->start_ms, memory_order_relaxed) + h->timeout_ms;
}

/* --- the pool's interface (runner_core.h) ------------------------------------ */

int pool_host_submit(runner_t *r, fn *f, const runner_job *j)
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
    jobctx_set(&q->ctx, f, j);
    q->msg = b.p;
    q->len = b.len;
    jobq_push(&f->native.queue, q);
    r->busy++;
    if (!r->in_dispatch)
        pump(r, f);
    return 0;
}



void pool_host_on_event(runner_t *r, void *obj, uint32_t events)
{
    host *h = obj;
    if (h->fd < 0)
        return;   /* closed earlier in this batch */
    if (events & EPOLLOUT)
        host_flush(r, h);
    if (h->fd >= 0 && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        host_read(r, h);
}

int64_t pool_host_next_deadline(const runner_t *r, int64_t now)
{
    if (r->native.unflushed)
        return 0;   /* submitted jobs wait in buffers: dispatch now */
    int64_t best = -1;
    for (fn *f = r->fns; f; f = f->next)
        for (host *h = f->native.hosts; h; h = h->next) {
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
    return best;
}

void pool_host_tick(runner_t *r, int64_t now)
{
    /* A host past its job's deadline (or its start's): the launcher kills it. */
    for (fn *f = r->fns; f && !r->broken; f = f->next)
        for (host *h = f->native.hosts; h; h = h->next) {
            uint64_t job;
            int64_t dl = host_deadline(r, h, &job);
            if (dl >= 0 && now >= dl)
                host_overdue(r, h, job);
        }
    for (fn *f = r->fns; f; f = f->next)
        pump(r, f);
    flush_hosts(r);
}

void pool_host_cancel_all(runner_t *r)
{
    for (fn *f = r->fns; f; f = f->next) {
        job *j;
        while ((j = jobq_pop(&f->native.queue)))
            job_free(j);
        for (host *h = f->native.hosts; h; h = h->next)
            if (h->sent.n > 0 && h->state != HOST_CANCELLED)
                host_cancel(r, h);
    }
}

void pool_host_sweep(runner_t *r)
{
    while (r->native.dead) {
        host *h = r->native.dead;
        r->native.dead = h->next;
        if (r->native.slot_used)
            r->native.slot_used[h->slot] = false;
        wbuf_free(&h->in);
        wbuf_free(&h->out);
        job *j;
        while ((j = jobq_pop(&h->sent)))
            job_free(j);
        free(h);
    }
}

void pool_host_stop(runner_t *r)
{
    /* Busy hosts were killed by the cancel; idle ones get EOF and run herald_fini. */
    for (fn *f = r->fns; f; f = f->next)
        for (host *h = f->native.hosts; h; h = h->next)
            host_close(r, h);
}

void pool_host_destroy(runner_t *r)
{
    for (fn *f = r->fns; f; f = f->next) {
        job *j;
        while ((j = jobq_pop(&f->native.queue)))
            job_free(j);
        while (f->native.hosts) {
            host *h = f->native.hosts;
            f->native.hosts = h->next;
            h->next = r->native.dead;
            r->native.dead = h;
        }
    }
    pool_host_sweep(r);
    if (r->native.board)
        munmap(r->native.board, HOST_SLOTS * sizeof(host_slot));
    r->native.board = NULL;
    free(r->native.slot_used);
    r->native.slot_used = NULL;
}

int pool_host_init(runner_t *r, int max_hosts)
{
    r->native.max_hosts = max_hosts > 0 ? max_hosts : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (r->native.max_hosts < 1)
        r->native.max_hosts = 1;
    /* The board is a memfd, so an exec'd launcher can map it too. */
    size_t board_size = HOST_SLOTS * sizeof(host_slot);
    int board_fd = memfd_create("herald-host-board", MFD_CLOEXEC);
    void *board = MAP_FAILED;
    if (board_fd < 0 || ftruncate(board_fd, (off_t)board_size) < 0 ||
        (board = mmap(NULL, board_size, PROT_READ | PROT_WRITE, MAP_SHARED, board_fd, 0)) == MAP_FAILED ||
        !(r->native.slot_used = calloc(HOST_SLOTS, sizeof *r->native.slot_used))) {
        LOG_ERROR("runner: host board: %s", strerror(errno));
        if (board != MAP_FAILED)
            munmap(board, board_size);
        if (board_fd >= 0)
            close(board_fd);
        return -1;
    }
    r->native.board = board;
    return board_fd;
}

void pool_host_exited(runner_t *r, uint64_t id, int status)
{
    host *h = host_find(r, id);
    if (h)
        host_exited(r, h, status);
}

void pool_host_launcher_gone(runner_t *r)
{
    for (fn *f = r->fns; f; f = f->next) {
        fail_queue(r, &f->native.queue, OUT_RETURNED, NULL);
        while (f->native.hosts)
            host_exited(r, f->native.hosts, HOST_LAUNCHER_GONE);
    }
}

void pool_host_fn_changed(runner_t *r, fn *f)
{
    f->native.gen++;
    for (host *h = f->native.hosts; h; h = h->next)
        host_outdated(r, h);
    f->native.nhosts = f->native.nstarting = 0;
}
