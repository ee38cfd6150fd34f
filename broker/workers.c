/* workers.c — worker sessions on the worker endpoint.
 *
 * REGISTER creates a session (answered with CONFIG: the definitions of the
 * functions it serves); the worker answers every CONFIG with REFUSED, the
 * functions it cannot run and why, and gets no work until it has (so it is
 * never given a function it refused); RESULT ends leases; STATS adds its
 * runtime processes' counters to the functions' (never answered); HEARTBEAT
 * and every other message prove liveness; DRAIN stops new work; BYE (after
 * its last RESULT) ends the session at once. A worker silent for 3 heartbeats is
 * dead; 2 heartbeats later (longer than the worker's own kill deadline, which
 * is 3 heartbeats of silence from the broker) its leases end as `lost` and
 * follow the retry policy. A live worker's lease that outlives the broker's
 * bound (broker.h LEASE_MARGIN_MS) ends as `timeout`; its slot stays busy
 * until the late RESULT comes. A message of a type this endpoint does not
 * take is malformed, registered or not. A message from an unknown routing id (say, after a
 * broker restart) gets an ERROR, and the worker registers again; a BYE or a
 * STATS from one is dropped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"

worker_t *worker_find(broker_t *b, const void *rid, size_t len)
{
    for (list_node *n = b->workers.head.next; n != &b->workers.head; n = n->next) {
        worker_t *w = container_of(n, worker_t, link);
        if (!w->dead && w->rid_len == len && memcmp(w->rid, rid, len) == 0) return w;
    }
    return NULL;
}

bool worker_serves(const worker_t *w, const function_t *fn)
{
    return (!w->serves || w->serves[fn->index]) && !(w->refused && w->refused[fn->index]);
}

bool worker_ready(const worker_t *w)
{
    return !w->dead && !w->draining && w->configs_unanswered == 0;
}

static void refusals_free(worker_t *w)
{
    for (uint32_t i = 0; i < w->nrefusals; i++) {
        free(w->refusals[i].function);
        free(w->refusals[i].reason);
    }
    free(w->refusals);
    w->refusals = NULL;
    w->nrefusals = 0;
}

void worker_free(worker_t *w)
{
    free(w->expired);
    refusals_free(w);
    free(w->refused);
    free(w->id);
    free(w->host);
    free(w->serves);
    free(w);
}

/* w->refused from its refusals' names, against the current function table
 * (after a reload the indexes change). */
static void index_refusals(broker_t *b, worker_t *w)
{
    free(w->refused);
    w->refused = NULL;
    if (!w->nrefusals) return;
    w->refused = calloc(b->nfunctions ? b->nfunctions : 1, sizeof *w->refused);
    if (!w->refused) {   /* then it serves what it asked for; a delivery it cannot run comes back `returned` */
        LOG_ERROR("out of memory: worker %s's refused functions are not kept", w->id);
        return;
    }
    for (uint32_t i = 0; i < w->nrefusals; i++) {
        function_t *fn = broker_function(b, w->refusals[i].function);
        if (fn) w->refused[fn->index] = true;
    }
}

static bool was_refused(const worker_t *w, const char *function, const char *reason)
{
    for (uint32_t i = 0; i < w->nrefusals; i++)
        if (strcmp(w->refusals[i].function, function) == 0 && strcmp(w->refusals[i].reason, reason) == 0)
            return true;
    return false;
}

/* REFUSED: the worker's whole list replaces what we knew. */
static void worker_refused(broker_t *b, worker_t *w, const proto_refused *r)
{
    proto_refusal *rs = calloc(r->n ? r->n : 1, sizeof *rs);
    if (!rs) { LOG_ERROR("out of memory: worker %s's REFUSED is dropped", w->id); return; }
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->n; i++) {
        if (!was_refused(w, r->rs[i].function, r->rs[i].reason))
            LOG_WARN("worker %s (%s pid %u) refuses function %s: %s", w->id, w->host, w->pid, r->rs[i].function,
                     r->rs[i].reason);
        rs[n].function = strdup(r->rs[i].function);
        rs[n].reason = strdup(r->rs[i].reason);
        if (!rs[n].function || !rs[n].reason) { free(rs[n].function); free(rs[n].reason); continue; }
        n++;
    }
    refusals_free(w);
    w->refusals = rs;
    w->nrefusals = n;
    index_refusals(b, w);
    if (w->configs_unanswered) w->configs_unanswered--;
}

static void send_config(broker_t *b, worker_t *w)
{
    proto_fndef defs[b->nfunctions ? b->nfunctions : 1];
    uint32_t n = 0;
    for (size_t i = 0; i < b->nfunctions; i++) {
        if (w->serves && !w->serves[i]) continue;
        const cfg_function *c = b->functions[i].cfg;
        proto_fndef *d = &defs[n++];
        memset(d, 0, sizeof *d);
        d->name = c->name;
        d->native = c->native;
        d->exec = c->exec;
        d->nexec = (uint32_t)c->nexec;
        d->library = c->library;
        d->symbol = c->symbol;
        d->timeout_ms = (uint32_t)(c->timeout_s * 1000.0 + 0.5);
        d->memory_mb = (uint32_t)c->memory_mb;
        d->max_attempts = (uint32_t)c->max_attempts;
        d->env = (proto_attr *)c->env;   /* same layout: two char * */
        d->nenv = (uint32_t)c->nenv;
        d->runtime = c->runtime;
        d->log_output = c->log_output;
        if (c->runtime)
            d->rt = (proto_runtime){ .handler = c->rt.handler,
                                     .format = c->rt.format == RT_FORMAT_SNS ? PROTO_RT_SNS : PROTO_RT_RAW,
                                     .max_invocations = (uint32_t)c->rt.max_invocations,
                                     .idle_timeout_ms = (uint32_t)(c->rt.idle_timeout_s * 1000.0 + 0.5),
                                     .init_timeout_ms = (uint32_t)(c->rt.init_timeout_s * 1000.0 + 0.5),
                                     .concurrency = (uint32_t)c->concurrency };
    }
    proto_config pc = { .heartbeat_ms = (uint32_t)b->heartbeat_ms,
                        .max_payload = (uint64_t)b->cfg->broker.max_payload,
                        .fns = defs, .nfns = n };
    msgpack_sbuffer_clear(&b->sb);
    /* No work for it until it has said what of this it refuses. A CONFIG
     * that could not be sent is not waited for: the worker never sees it, and
     * (ROUTER_HANDOVER) may come back on the same session without registering
     * again; what it then holds is still refused per delivery (RETURNED). */
    if (proto_encode_config(&b->sb, &pc) == 0 &&
        frames_send(b->wrk_sock, w->rid, w->rid_len, &b->sb, NULL, 0, ZMQ_DONTWAIT) == 0) {
        w->configs_unanswered++;
        w->last_sent_ms = util_mono_ms();
    } else {
        LOG_WARN("cannot send CONFIG to worker %s (%s pid %u): %s", w->id, w->host, w->pid,
                 zmq_strerror(zmq_errno()));
    }
}

void workers_send_config(broker_t *b)
{
    for (list_node *n = b->workers.head.next; n != &b->workers.head; n = n->next) {
        worker_t *w = container_of(n, worker_t, link);
        index_refusals(b, w);   /* the function table was rebuilt */
        if (!w->dead) send_config(b, w);
    }
}

static void worker_register(broker_t *b, proto_frames *f, const proto_register *r)
{
    const void *rid = frames_data(f, 0);
    size_t rid_len = frames_size(f, 0);
    bool *serves = NULL;
    if (r->nfunctions) {
        serves = calloc(b->nfunctions ? b->nfunctions : 1, sizeof *serves);
        if (!serves) return;
        for (uint32_t i = 0; i < r->nfunctions; i++) {
            function_t *fn = broker_function(b, r->functions[i]);
            if (!fn) {
                char why[256];
                snprintf(why, sizeof why, "unknown function '%s': the broker's config does not define it",
                         r->functions[i]);
                reply_error(b, b->wrk_sock, f, PROTO_E_UNKNOWN_FUNCTION, why);
                free(serves);
                return;
            }
            serves[fn->index] = true;
        }
    }
    worker_t *old = worker_find(b, rid, rid_len);
    if (old) old->dead = true;   /* a re-register replaces the session; reap returns its leases */
    worker_t *w = calloc(1, sizeof *w);
    if (!w) { free(serves); return; }
    memcpy(w->rid, rid, rid_len);
    w->rid_len = rid_len;
    w->id = strdup(r->worker_id);
    w->host = strdup(r->host);
    w->pid = r->pid;
    w->slots = r->slots;
    w->serves = serves;
    w->last_seen_ms = util_mono_ms();
    list_init(&w->leases);
    list_push_back(&b->workers, &w->link);
    LOG_INFO("worker %s (%s pid %u) registered with %u slot%s", w->id, w->host, w->pid, w->slots,
             w->slots == 1 ? "" : "s");
    send_config(b, w);
}

static void add_sat(uint64_t *to, uint64_t delta)
{
    *to = *to + delta < *to ? UINT64_MAX : *to + delta;   /* a counter sticks at its top, never wraps */
}

/* STATS: the deltas of a worker's runtime processes, added to the counters
 * of the functions they name (an unknown name, say after a reload that
 * dropped it, is skipped). */
static void worker_stats(broker_t *b, const proto_stats *st)
{
    for (uint32_t i = 0; i < st->n; i++) {
        const proto_stats_entry *e = &st->es[i];
        function_t *fn = broker_function(b, e->function);
        if (!fn) continue;
        add_sat(&fn->rt.cold_starts, e->cold_starts);
        add_sat(&fn->rt.init_us, e->init_us);
        add_sat(&fn->rt.warm, e->warm);
        for (int k = 0; k < PROTO_RECYCLE_COUNT; k++) add_sat(&fn->rt.recycles[k], e->recycles[k]);
    }
}

static void worker_results(broker_t *b, worker_t *w, const proto_result *r, proto_frames *f)
{
    int64_t now = util_wall_ms();
    for (uint32_t i = 0; i < r->n; i++) {
        const proto_result_entry *e = &r->rs[i];
        delivery_t *d = lease_get(&b->leases, e->lease);
        if (!d || d->worker != w) {   /* an ended lease: ignored */
            for (uint32_t k = 0; k < w->nexpired; k++)
                if (w->expired[k] == e->lease) {   /* … its slot is free again */
                    w->expired[k] = w->expired[--w->nexpired];
                    w->busy--;
                    break;
                }
            continue;
        }
        if (d->inv && e->outcome != OUT_RETURNED) {   /* a sync invoke: its output goes back */
            invoke_finish(b, d, (proto_outcome)e->outcome, e->error, e, frames_data(f, 2 + (int)i),
                          frames_size(f, 2 + (int)i));
            continue;
        }
        switch ((proto_outcome)e->outcome) {
        case OUT_OK: delivery_succeed(b, d, e); break;
        case OUT_RETURNED: delivery_return(b, d); break;
        default: delivery_fail(b, d, (proto_outcome)e->outcome, e->error, e, now); break;
        }
    }
}

void workers_handle(broker_t *b, proto_frames *f)
{
    char err[256];
    proto_msg m;
    if (f->n < 2 || f->truncated) {
        reply_error(b, b->wrk_sock, f, PROTO_E_MALFORMED, f->truncated ? "too many frames" : "empty message");
        return;
    }
    if (proto_decode(frames_data(f, 1), frames_size(f, 1), &m, err, sizeof err) != 0) {
        reply_error(b, b->wrk_sock, f, PROTO_E_MALFORMED, err);
        return;
    }
    if ((uint32_t)f->n != 2 + m.nframes) {
        snprintf(err, sizeof err, "%s declares %u payload frames but %d came",
                 proto_type_name(m.type), m.nframes, f->n - 2);
        reply_error(b, b->wrk_sock, f, PROTO_E_MALFORMED, err);
        proto_msg_clear(&m);
        return;
    }
    if (m.type == MSG_HELLO) {
        hello_answer(b, b->wrk_sock, f, &m.u.hello);
        proto_msg_clear(&m);
        return;
    }
    if (m.type == MSG_REGISTER) {
        worker_register(b, f, &m.u.reg);
        proto_msg_clear(&m);
        return;
    }
    if (m.type == MSG_ERROR) {   /* refused, never answered (PROTOCOL.md §5) */
        b->dropped[1]++;
        proto_msg_clear(&m);
        return;
    }
    switch (m.type) {   /* what this endpoint takes; anything else is malformed here, registered or not */
    case MSG_HEARTBEAT: case MSG_RESULT: case MSG_DRAIN: case MSG_REFUSED: case MSG_STATS: case MSG_BYE: break;
    default:
        snprintf(err, sizeof err, "%s is not accepted on the worker endpoint", proto_type_name(m.type));
        reply_error(b, b->wrk_sock, f, PROTO_E_MALFORMED, err);
        proto_msg_clear(&m);
        return;
    }
    worker_t *w = worker_find(b, frames_data(f, 0), frames_size(f, 0));
    /* BYE: gone already, nothing to answer. STATS: counted only from a
     * session; its next heartbeat gets the "not registered" answer. */
    if (!w && (m.type == MSG_BYE || m.type == MSG_STATS)) {
        proto_msg_clear(&m);
        return;
    }
    if (!w) {
        reply_error(b, b->wrk_sock, f, PROTO_E_CONFLICT, "not registered: send REGISTER");
        proto_msg_clear(&m);
        return;
    }
    w->last_seen_ms = util_mono_ms();
    switch (m.type) {
    case MSG_HEARTBEAT: break;
    case MSG_RESULT:
        worker_results(b, w, &m.u.result, f);
        store_flush(&b->store);   /* the staged acks, in a few statements */
        break;
    case MSG_DRAIN: w->draining = true; break;
    case MSG_REFUSED: worker_refused(b, w, &m.u.refused); break;
    case MSG_STATS: worker_stats(b, &m.u.stats); break;
    case MSG_BYE:
        LOG_INFO("worker %s (%s pid %u) left", w->id, w->host, w->pid);
        w->dead = w->left = true;
        break;
    default:
        snprintf(err, sizeof err, "%s is not accepted on the worker endpoint", proto_type_name(m.type));
        reply_error(b, b->wrk_sock, f, PROTO_E_MALFORMED, err);
    }
    proto_msg_clear(&m);
}

/* The backstop (broker.h LEASE_MARGIN_MS): a lease past its end is a
 * `timeout` attempt, and the retry policy applies; a result for it later is
 * ignored. The worker may still be running it, so its slot stays busy until
 * that result comes (or the session ends). */
static void expire_leases(broker_t *b, worker_t *w, int64_t now)
{
    int64_t wall = util_wall_ms();
    list_node *l = w->leases.head.next;
    while (l != &w->leases.head) {
        delivery_t *d = container_of(l, delivery_t, link);
        l = l->next;
        if (now < d->lease_end_ms) continue;
        uint64_t *x = realloc(w->expired, (w->nexpired + 1) * sizeof *x);
        if (x) w->expired = x, x[w->nexpired++] = d->lease;
        const cfg_function *c = d->sub->fn->cfg;
        char why[200];
        snprintf(why, sizeof why, "timeout: no result from worker %s within the broker's bound on a lease (the "
                 "function's timeout %g s, the kill grace, a margin), so the worker does not enforce it", w->id,
                 c->timeout_s);
        LOG_WARN("worker %s (%s pid %u): lease %llu of function %s outlived its bound: ended as timeout", w->id,
                 w->host, w->pid, (unsigned long long)d->lease, d->sub->fn->name);
        delivery_fail(b, d, OUT_TIMEOUT, why, NULL, wall);
        if (x) w->busy++;   /* still taken at the worker */
    }
}

void workers_tick(broker_t *b, int64_t now)
{
    bool check = now - b->last_lease_check_ms >= LEASE_CHECK_MS;
    if (check) b->last_lease_check_ms = now;
    for (list_node *n = b->workers.head.next; n != &b->workers.head; n = n->next) {
        worker_t *w = container_of(n, worker_t, link);
        if (w->dead) continue;
        if (now - w->last_seen_ms > 3 * b->heartbeat_ms) {
            LOG_WARN("worker %s (%s pid %u) missed 3 heartbeats: dead", w->id, w->host, w->pid);
            w->dead = true;
            continue;
        }
        if (check) expire_leases(b, w, now);
        if (now - w->last_sent_ms >= b->heartbeat_ms) {
            msgpack_sbuffer_clear(&b->sb);
            proto_encode_heartbeat(&b->sb);
            if (frames_send(b->wrk_sock, w->rid, w->rid_len, &b->sb, NULL, 0, ZMQ_DONTWAIT) == 0)
                w->last_sent_ms = now;
        }
    }
}

/* Dead sessions: their leases end as `lost` once the grace has passed (the
 * worker has killed its handlers by then), then the session is freed. */
void workers_reap(broker_t *b)
{
    int64_t now = util_mono_ms(), wall = util_wall_ms();
    list_node *n = b->workers.head.next;
    while (n != &b->workers.head) {
        worker_t *w = container_of(n, worker_t, link);
        n = n->next;
        if (!w->dead) continue;
        if (w->leases.n && !w->left && now - w->last_seen_ms <= 5 * b->heartbeat_ms) continue;
        list_node *l;
        while ((l = list_first(&w->leases)) != NULL) {
            delivery_t *d = container_of(l, delivery_t, link);
            /* A worker says BYE after the results of everything it ran, so a
             * lease it still holds then was in transit (sent before it read
             * our side of its DRAIN) and never started: back, no attempt. */
            if (w->left) delivery_return(b, d);
            else delivery_fail(b, d, OUT_LOST, "worker lost: it missed 3 heartbeats", NULL, wall);
        }
        list_remove(&b->workers, &w->link);
        worker_free(w);
    }
}
