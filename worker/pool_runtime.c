/* pool_runtime: main's side of runtime functions (DESIGN §11).
 *
 * Per runtime function: a queue of events (each an encoded CH_RT_EVENT) and a
 * list of `rtproc`s, one per runtime supervisor (runtime.c) — the main end of
 * its channel and the event it holds. A proc is starting (spawned, its
 * process has not asked for an event yet), ready (idle or holding an event)
 * or stopping (it said it goes, or main closed it: it takes nothing more).
 * An event goes to an idle ready proc of the function's current definition;
 * else, below min(worker slots, the function's concurrency) processes, a new
 * proc is spawned with it (a cold start) — unless starts are backing off after
 * init failures (1 s doubling to 30 s, reset by a start that works).
 * A proc that goes without reporting its event (it died first, or was
 * stopping) hands the event back to the queue's head: no attempt is counted.
 * Stats per function (cold starts, init time, warm invocations, recycles by
 * reason) accumulate here until runner_take_stats() takes them.
 */
#define _GNU_SOURCE
#include "runner_core.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BACKOFF_FIRST_MS 1000
#define BACKOFF_MAX_MS 30000

typedef enum { RP_STARTING, RP_READY, RP_STOPPING } rp_state;

struct rtproc {
    int kind;                   /* OBJ_RUNTIME: first, for epoll dispatch */
    rtproc *next;               /* in f->rt.procs, or the graveyard */
    fn *f;
    int fd;                     /* main's end; -1 once closed */
    rp_state state;
    unsigned gen;               /* f->rt.gen it was started for */
    job *held;                  /* the event it holds (sent), until reported */
    bool accounted;             /* its end is counted (it said CH_RT_GONE, or main retired it):
                                   no crash is charged, an event it holds goes back */
    bool init_failed;           /* its init failed: counted, and the backoff set, once */
    uint64_t served;            /* events it reported */
    bool out_armed;
    wbuf in, out;
};

/* Processes of f that count against its limit (not stopping). */
static int live_procs(const fn *f)
{
    int n = 0;
    for (const rtproc *p = f->rt.procs; p; p = p->next)
        n += p->state != RP_STOPPING && p->gen == f->rt.gen;
    return n;
}

static int proc_limit(const runner_t *r, const fn *f)
{
    int lim = r->rt.slots > 0 ? r->rt.slots : 1;
    if (f->def.rt.concurrency > 0 && (int)f->def.rt.concurrency < lim)
        lim = (int)f->def.rt.concurrency;
    return lim;
}

static void proc_flush(runner_t *r, rtproc *p)
{
    runner_chan_send(p->fd, &p->out);
    if (wbuf_pending(&p->out) == 0 && p->out.cap > (1u << 20))
        wbuf_free(&p->out);   /* after a large payload */
    runner_epoll_out(r, p->fd, p, &p->out_armed, wbuf_pending(&p->out) > 0);
}

static void proc_close(runner_t *r, rtproc *p)
{
    if (p->fd >= 0) {
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, p->fd, NULL);
        close(p->fd);
        p->fd = -1;
    }
    p->state = RP_STOPPING;
}

/* Gives p the job (it is idle, or just spawned). */
static void proc_assign(runner_t *r, rtproc *p, job *j)
{
    p->held = j;
    wbuf_put(&p->out, j->msg, j->len);
    if (p->out.failed) {
        p->out.failed = false;
        p->held = NULL;
        LOG_ERROR("runner: out of memory handing an event to a runtime of %s", p->f->def.name);
        runner_deliver(r, j->token, OUT_RETURNED, 0, 0, "runner: out of memory", NULL, 0);
        job_free(j);
        return;
    }
    proc_flush(r, p);
}

/* Spawns a runtime supervisor for f with the job j. 0, or -1 (j not taken). */
static int proc_spawn(runner_t *r, fn *f, job *j)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        LOG_ERROR("runner: socketpair: %s", strerror(errno));
        return -1;
    }
    rtproc *p = calloc(1, sizeof *p);
    if (!p)
        goto fail;
    p->kind = OBJ_RUNTIME;
    p->f = f;
    p->fd = sv[0];
    p->gen = f->rt.gen;
    p->state = RP_STARTING;
    runner_set_nonblock(sv[0]);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = p };
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, sv[0], &ev) < 0)
        goto fail;
    const char *region = getenv("AWS_REGION");
    chan_runtime st = {
        .id = ++r->next_id,
        .timeout_ms = f->def.timeout_ms, .memory_mb = f->def.memory_mb,
        .max_invocations = f->def.rt.max_invocations,
        .idle_timeout_ms = f->def.rt.idle_timeout_ms, .init_timeout_ms = f->def.rt.init_timeout_ms,
        .format = f->def.rt.format == PROTO_RT_SNS ? RT_FORMAT_SNS : RT_FORMAT_RAW,
        .function = f->def.name,
        .handler = f->def.rt.handler ? f->def.rt.handler : "",
        .root = r->root,
        .region = region && region[0] ? region : "us-east-1",
        .account = "000000000000",
        .program = f->path,
        .argc = f->def.nexec, .argv = f->exec.argv,
        .fenv = f->def.env, .nfenv = f->def.nenv,
    };
    wbuf b = { 0 };
    int rc = chan_runtime_put(&b, &st) < 0 ? -1 : runner_lsend(r, &b, sv[1]);
    wbuf_free(&b);
    if (rc < 0) {
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, sv[0], NULL);
        goto fail;
    }
    /* the launcher owns sv[1] now (runner_lsend closes ours once it is sent) */
    p->next = f->rt.procs;
    f->rt.procs = p;
    proc_assign(r, p, j);
    return 0;
fail:
    free(p);
    close(sv[0]);
    close(sv[1]);
    return -1;
}

static void proc_unlink(runner_t *r, rtproc *p)
{
    for (rtproc **q = &p->f->rt.procs; *q; q = &(*q)->next)
        if (*q == p) {
            *q = p->next;
            break;
        }
    p->next = r->rt.dead;
    r->rt.dead = p;
}

/* A start failed to initialize: later starts wait, longer each time. */
static void backoff(fn *f);
static void init_failed(rtproc *p)
{
    if (p->init_failed)
        return;
    p->init_failed = true;
    p->f->rt.init_failures++;
    backoff(p->f);
}

static void backoff(fn *f)
{
    int64_t ms = BACKOFF_FIRST_MS;
    for (int i = 1; i < f->rt.init_failures && ms < BACKOFF_MAX_MS; i++)
        ms *= 2;
    if (ms > BACKOFF_MAX_MS)
        ms = BACKOFF_MAX_MS;
    f->rt.backoff_until_ms = util_mono_ms() + ms;
}

/* p's channel ended: what it held and did not report goes back to the
 * queue's head (it never reached the process), or — the supervisor died
 * without a word — is charged a crash. */
static void proc_ended(runner_t *r, rtproc *p)
{
    fn *f = p->f;
    proc_close(r, p);
    if (!p->accounted)
        f->rt.stats.recycles[PROTO_RECYCLE_CRASH]++;
    if (p->held) {
        job *j = p->held;
        p->held = NULL;
        if (p->accounted) {
            jobq_push_front(&f->rt.queue, j);   /* it was first in line */
        } else {
            runner_deliver(r, j->token, OUT_CRASHED, 0, 0, "runner: the runtime's supervisor died", NULL, 0);
            job_free(j);
        }
    }
    proc_unlink(r, p);
}

static void proc_result(runner_t *r, rtproc *p, const char *body, uint32_t n)
{
    runner_result res;
    if (!result_get(body, n, &res) || !p->held) {
        LOG_ERROR("runner: a runtime of %s sent a bad result: stopping it", p->f->def.name);
        proc_ended(r, p);
        return;
    }
    fn *f = p->f;
    job *j = p->held;
    p->held = NULL;
    bool stays = res.token == SUP_STAYS;
    /* a result before READY is its init's failure: the backoff starts now,
     * before the freed slot brings the next event (GONE may come later) */
    if (p->state == RP_STARTING && !stays)
        init_failed(p);
    if (p->served > 0)
        f->rt.stats.warm++;
    p->served++;
    if (!stays) {
        p->state = RP_STOPPING;   /* it says why (CH_RT_GONE), then EOF */
    } else if (p->gen != f->rt.gen || p->state == RP_STOPPING) {
        f->rt.stats.recycles[PROTO_RECYCLE_REDEFINED]++;
        p->accounted = true;
        proc_close(r, p);   /* EOF: the idle supervisor stops its process */
    }
    runner_deliver(r, j->token, res.outcome, res.started_ms, res.duration_us, res.error, res.output, res.output_len);
    job_free(j);
}

static void proc_read(runner_t *r, rtproc *p)
{
    int eof = runner_chan_read(p->fd, &p->in);
    const char *body;
    uint32_t n;
    bool bad = false;
    while (p->fd >= 0 && msg_next(&p->in, &body, &n, &bad)) {
        switch ((uint8_t)body[0]) {
        case CH_RT_READY: {
            uint32_t init_us;
            if (!chan_rtready_get(body + 1, n - 1, &init_us) || p->state != RP_STARTING) {
                bad = true;
                break;
            }
            p->state = RP_READY;
            p->f->rt.stats.cold_starts++;
            p->f->rt.stats.init_us += init_us;
            p->f->rt.init_failures = 0;
            break;
        }
        case CH_RESULT:
            proc_result(r, p, body + 1, n - 1);
            break;
        case CH_RT_GONE: {
            proto_recycle why;
            if (!chan_rtgone_get(body + 1, n - 1, &why)) {
                bad = true;
                break;
            }
            p->accounted = true;
            p->f->rt.stats.recycles[why]++;
            if (why == PROTO_RECYCLE_INIT_ERROR)
                init_failed(p);
            p->state = RP_STOPPING;
            break;
        }
        default:
            bad = true;
            break;
        }
    }
    if (p->fd < 0) {   /* closed above: outdated */
        proc_ended(r, p);
        return;
    }
    if (bad)
        LOG_ERROR("runner: a runtime of %s broke the channel protocol: stopping it", p->f->def.name);
    if (bad || eof)
        proc_ended(r, p);
}

/* Moves the processes main closed (they say nothing more) to the graveyard. */
static void drop_closed(runner_t *r)
{
    for (fn *f = r->fns; f; f = f->next) {
        rtproc *next;
        for (rtproc *p = f->rt.procs; p; p = next) {
            next = p->next;
            if (p->fd < 0)
                proc_unlink(r, p);
        }
    }
}

/* --- the pool interface (runner_core.h) ------------------------------------ */

void pool_runtime_on_event(runner_t *r, void *obj, uint32_t events)
{
    rtproc *p = obj;
    if (p->fd < 0)
        return;
    if (events & EPOLLOUT)
        proc_flush(r, p);
    if (p->fd >= 0 && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        proc_read(r, p);
}

/* Processes of f's current definition still initializing. */
static int starting(const fn *f)
{
    int n = 0;
    for (const rtproc *p = f->rt.procs; p; p = p->next) n += p->state == RP_STARTING && p->gen == f->rt.gen;
    return n;
}

/* Starts queued events of f on its processes, starting processes as needed;
 * after a failed init, one start at a time until one succeeds. */
static void pump(runner_t *r, fn *f)
{
    while (f->rt.queue.n > 0 && !r->broken) {
        rtproc *idle = NULL;
        for (rtproc *p = f->rt.procs; p && !idle; p = p->next)
            if (p->state == RP_READY && p->gen == f->rt.gen && !p->held && p->fd >= 0)
                idle = p;
        if (idle) {
            proc_assign(r, idle, jobq_pop(&f->rt.queue));
            continue;
        }
        if (live_procs(f) >= proc_limit(r, f) || util_mono_ms() < f->rt.backoff_until_ms)
            break;
        if (f->rt.init_failures > 0 && starting(f))   /* after a failed init: one trial start at a time */
            break;
        job *j = jobq_pop(&f->rt.queue);
        if (proc_spawn(r, f, j) < 0) {
            /* out of fds or memory: a passing failure, not the function's
             * (as for an exec attempt that cannot start): back to the broker */
            LOG_ERROR("runner: cannot start a runtime of %s: the event goes back", f->def.name);
            runner_deliver(r, j->token, OUT_RETURNED, 0, 0, NULL, NULL, 0);
            job_free(j);
            break;
        }
    }
}

int pool_runtime_submit(runner_t *r, fn *f, const runner_job *rj)
{
    job *j = calloc(1, sizeof *j);
    if (!j)
        return -1;
    wbuf b = { 0 };
    chan_rtevent e = {
        .token = rj->token, .topic = rj->topic ? rj->topic : "", .message_id = rj->message_id ? rj->message_id : "",
        .attempt = (uint32_t)rj->attempt, .attrs = rj->attrs, .nattrs = (uint32_t)rj->nattrs,
        .payload = rj->payload, .payload_len = rj->payload_len,
    };
    if (chan_rtevent_put(&b, &e) < 0) {
        LOG_ERROR("runner: submit %s: out of memory", f->def.name);
        wbuf_free(&b);
        free(j);
        return -1;
    }
    j->token = rj->token;
    j->msg = b.p;
    j->len = b.len;
    jobq_push(&f->rt.queue, j);
    r->busy++;
    if (!r->in_dispatch)
        pump(r, f);
    return 0;
}

int64_t pool_runtime_next_deadline(const runner_t *r, int64_t now)
{
    int64_t best = -1;
    for (const fn *f = r->fns; f; f = f->next)
        if (f->kind == FN_RUNTIME && f->rt.queue.n > 0 && f->rt.backoff_until_ms > now) {
            int64_t left = f->rt.backoff_until_ms - now;
            if (best < 0 || left < best)
                best = left;
        }
    return best;
}

void pool_runtime_tick(runner_t *r, int64_t now)
{
    (void)now;
    for (fn *f = r->fns; f; f = f->next)
        if (f->kind == FN_RUNTIME)
            pump(r, f);
}

/* Fencing: busy processes are stopped (their supervisors kill what runs),
 * queued events dropped, without callbacks. */
void pool_runtime_cancel_all(runner_t *r)
{
    for (fn *f = r->fns; f; f = f->next) {
        job *j;
        while ((j = jobq_pop(&f->rt.queue)))
            job_free(j);
        for (rtproc *p = f->rt.procs; p; p = p->next)
            if (p->held) {
                job_free(p->held);
                p->held = NULL;
                p->accounted = true;
                proc_close(r, p);
            }
    }
    drop_closed(r);
}

/* The launcher died: nothing more starts; what waits comes back. */
void pool_runtime_launcher_gone(runner_t *r)
{
    for (fn *f = r->fns; f; f = f->next) {
        job *j;
        while ((j = jobq_pop(&f->rt.queue))) {
            runner_deliver(r, j->token, OUT_RETURNED, 0, 0, NULL, NULL, 0);
            job_free(j);
        }
    }
}

/* f's definition changed: idle processes of the old one go now, busy ones
 * after their event; starts stop backing off. */
void pool_runtime_fn_changed(runner_t *r, fn *f)
{
    f->rt.gen++;
    for (rtproc *p = f->rt.procs; p; p = p->next)
        if (!p->held && p->fd >= 0 && p->state != RP_STOPPING) {
            f->rt.stats.recycles[PROTO_RECYCLE_REDEFINED]++;
            p->accounted = true;
            proc_close(r, p);
        }
    f->rt.backoff_until_ms = 0;
    f->rt.init_failures = 0;
    drop_closed(r);
}

/* runner_destroy: every channel closed — an idle supervisor stops its
 * process gently, a busy one kills it. */
void pool_runtime_stop(runner_t *r)
{
    for (fn *f = r->fns; f; f = f->next)
        for (rtproc *p = f->rt.procs; p; p = p->next)
            proc_close(r, p);
}

void pool_runtime_sweep(runner_t *r)
{
    while (r->rt.dead) {
        rtproc *p = r->rt.dead;
        r->rt.dead = p->next;
        if (p->held)
            job_free(p->held);
        wbuf_free(&p->in);
        wbuf_free(&p->out);
        free(p);
    }
}

void pool_runtime_destroy(runner_t *r)
{
    for (fn *f = r->fns; f; f = f->next) {
        job *j;
        while ((j = jobq_pop(&f->rt.queue)))
            job_free(j);
        while (f->rt.procs) {
            rtproc *p = f->rt.procs;
            proc_close(r, p);
            f->rt.procs = p->next;
            p->next = r->rt.dead;
            r->rt.dead = p;
        }
    }
    pool_runtime_sweep(r);
}

void pool_runtime_take_stats(runner_t *r, runner_stats_fn *cb, void *arg)
{
    for (fn *f = r->fns; f; f = f->next) {
        if (f->kind != FN_RUNTIME)
            continue;
        runner_rtstats *st = &f->rt.stats;
        bool any = st->cold_starts || st->warm;
        for (int i = 0; i < PROTO_RECYCLE_COUNT; i++)
            any |= st->recycles[i] != 0;
        if (!any)
            continue;
        cb(arg, f->def.name, st);
        memset(st, 0, sizeof *st);
    }
}
