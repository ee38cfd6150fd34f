/* pool_exec: exec functions (DESIGN §4 "exec"), main's side.
 *
 * Owns one `attempt` per exec supervisor: the main end of its channel, busy
 * with one attempt (r->exec.running) or idle waiting for the next
 * (r->exec.idle, the latest idled first: a supervisor runs attempts one after
 * another, and one idle for idle_ms is closed), and the ones that ended this
 * dispatch (freed at its end). An attempt goes to an idle supervisor
 * (CH_S_RUN) or, when none is left, to a new one the launcher starts
 * (CH_L_EXEC with the channel's other end). Closing a channel is how main
 * cancels: a busy supervisor kills its attempt's tree, an idle one exits.
 * The supervisor itself is exec.c. The dispatch loop reaches this file
 * through the pool_exec_* functions (runner_core.h).
 */
#define _GNU_SOURCE
#include "runner_core.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* An exec supervisor, busy with an attempt or idle. */
struct attempt {
    int kind;               /* OBJ_ATTEMPT */
    attempt *prev, *next;   /* in runner->exec.running or runner->exec.idle; next: the graveyard once dead */
    uint64_t token;         /* of the attempt it runs (busy) */
    jobctx ctx;             /* … and which delivery that is */
    int fd;                 /* main's end of the supervisor's channel */
    bool dead, idle;
    bool out_armed;         /* EPOLLOUT requested */
    int64_t idle_since_ms;  /* monotonic */
    wbuf in, out;           /* out: a CH_S_RUN being written */
};

static attempt **attempt_list(runner_t *r, const attempt *a)
{
    return a->idle ? &r->exec.idle : &r->exec.running;
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
    a->next = r->exec.dead;
    r->exec.dead = a;
}

static void attempt_flush(runner_t *r, attempt *a)
{
    runner_chan_send(a->fd, &a->out);
    if (wbuf_pending(&a->out) == 0 && a->out.cap > (1u << 20))
        wbuf_free(&a->out);   /* after a large payload */
    runner_epoll_out(r, a->fd, a, &a->out_armed, wbuf_pending(&a->out) > 0);
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
    int eof = runner_chan_read(a->fd, &a->in);
    if (a->idle) {   /* it says nothing while idle: EOF (it died) or garbage ends it */
        if (eof || wbuf_pending(&a->in) > 0)
            attempt_end(r, a);
        return;
    }
    const char *body;
    uint32_t n;
    bool bad = false;
    fn *f = a->ctx.f;
    while (msg_next(&a->in, &body, &n, &bad)) {
        if ((uint8_t)body[0] == CH_LOG) {   /* the handler's stderr, before its result */
            if (!hlog_chan(&f->log, f->def.name, body + 1, n - 1)) {
                bad = true;
                break;
            }
            continue;
        }
        if ((uint8_t)body[0] != CH_RESULT) {
            bad = true;
            break;
        }
        runner_result res;
        bool ok = result_get(body + 1, n - 1, &res);
        uint64_t token = a->token;
        jobctx ctx = a->ctx;   /* the callback may hand a its next attempt */
        /* Before the callback (it may submit): idle, or gone. */
        if (ok && res.token == SUP_STAYS && !eof && wbuf_pending(&a->in) == 0)
            attempt_idle(r, a);
        else
            attempt_end(r, a);
        if (!ok)
            runner_deliver(r, &ctx, token, OUT_CRASHED, 0, 0, "runner: malformed result from supervisor", NULL, 0);
        else
            runner_deliver(r, &ctx, token, res.outcome, res.started_ms, res.duration_us, res.error, res.output,
                           res.output_len);
        attempt_shrink(a);
        return;
    }
    if (eof || bad) {
        uint64_t token = a->token;
        jobctx ctx = a->ctx;
        attempt_end(r, a);
        runner_deliver(r, &ctx, token, OUT_CRASHED, 0, 0, "runner: supervisor died without a result", NULL, 0);
    }
}

/* Closes the supervisors idle for idle_ms. The list is short: at most the
 * most attempts that ran at once. */
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
static bool submit_to_idle(runner_t *r, attempt *a, wbuf *b, uint64_t token, const jobctx *ctx)
{
    ssize_t n = send(a->fd, b->p, b->len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        attempt_end(r, a);
        return false;
    }
    attempt_unlink(r, a);
    a->idle = false;
    a->token = token;
    a->ctx = *ctx;
    wbuf_free(&a->out);   /* empty: it was idle */
    a->out = *b;          /* its buffer, not a copy of the payload */
    a->out.off = n > 0 ? (size_t)n : 0;
    *b = (wbuf){ 0 };
    attempt_push(r, a);
    r->busy++;
    attempt_flush(r, a);
    return true;
}

/* --- the pool's interface (runner_core.h) ------------------------------------ */

int pool_exec_submit(runner_t *r, fn *f, const runner_job *j)
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
                    .program = f->path, .payload = j->payload, .payload_len = j->payload_len,
                    .argc = f->def.nexec, .argv = f->exec.argv, .fenv = f->def.env, .nfenv = f->def.nenv,
                    .vars = vars, .nvars = 5, .attrs = j->attrs, .nattrs = j->nattrs };
    /* CH_S_RUN to an idle supervisor, else CH_L_EXEC to the launcher: encoded
     * once, again only when an idle one turned out dead after all. */
    jobctx ctx;
    jobctx_set(&ctx, f, j);
    wbuf b = { 0 };
    uint8_t type = 0;
    for (;;) {
        attempt *a = r->exec.idle;
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
        if (submit_to_idle(r, a, &b, j->token, &ctx))
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
    a->ctx = ctx;
    a->fd = sv[0];
    runner_set_nonblock(sv[0]);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = a };
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, sv[0], &ev) < 0) {
        LOG_ERROR("runner: submit %s: cannot queue the attempt", f->def.name);
        goto fail;
    }
    if (runner_lsend(r, &b, sv[1]) < 0) {
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

void pool_exec_on_event(runner_t *r, void *obj, uint32_t events)
{
    attempt *a = obj;
    if (!a->dead && (events & EPOLLOUT))
        attempt_flush(r, a);
    if (!a->dead && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        attempt_read(r, a);
}

/* The next idle supervisor to close. */
int64_t pool_exec_next_deadline(const runner_t *r, int64_t now)
{
    int64_t best = -1;
    for (const attempt *a = r->exec.idle; a; a = a->next) {
        int64_t left = a->idle_since_ms + r->exec.idle_ms - now;
        if (left < 0)
            left = 0;
        if (best < 0 || left < best)
            best = left;
    }
    return best;
}

/* Closes the supervisors idle for idle_ms. The list is short: at most the
 * most attempts that ran at once. */
void pool_exec_tick(runner_t *r, int64_t now)
{
    attempt *next;
    for (attempt *a = r->exec.idle; a; a = next) {
        next = a->next;
        if (now - a->idle_since_ms >= r->exec.idle_ms)
            attempt_end(r, a);
    }
}

void pool_exec_cancel_all(runner_t *r)
{
    while (r->exec.running)
        attempt_end(r, r->exec.running);   /* EOF on its channel: the supervisor kills its tree */
}

void pool_exec_sweep(runner_t *r)
{
    while (r->exec.dead) {
        attempt *a = r->exec.dead;
        r->exec.dead = a->next;
        wbuf_free(&a->in);
        wbuf_free(&a->out);
        free(a);
    }
}

void pool_exec_stop(runner_t *r)
{
    while (r->exec.idle)
        attempt_end(r, r->exec.idle);   /* EOF: it removes its parked dir and exits */
}

/* After pool_exec_cancel_all and pool_exec_stop: every attempt has ended. */
void pool_exec_destroy(runner_t *r)
{
    pool_exec_sweep(r);
}
