/* loop.c — the broker's one loop. Each turn, in this order:
 *   1. run due timers: retry wake-ups, worker heartbeats and liveness, a
 *      SIGHUP's reload, schedules' due slots; the next deadline becomes the
 *      poll timeout; (after the drain, the periodic
 *      chores: message GC, pruning, the disk alarm check)
 *   2. poll the three sockets;
 *   3. drain each socket up to DRAIN_CAP messages; handlers stage work into
 *      the open transaction and stage answers, they never send confirms;
 *      a long run of PUBLISH messages is interrupted every SERVICE_US to take
 *      the workers' results and refill their slots with what earlier turns
 *      committed, so workers are not left idle while the turn goes on;
 *   4. commit → send the confirms for what is now on disk (or errors if the
 *      commit failed) → dispatch → free dead worker sessions.
 * Never confirm what is not on disk; never dispatch what is not on disk.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

#include "broker.h"

void reply_error(broker_t *b, void *sock, proto_frames *f, uint32_t status, const char *text)
{
    int ep = sock == b->pub_sock ? 0 : sock == b->wrk_sock ? 1 : 2;
    /* only what was malformed: "not registered" (after a restart) and an
     * unknown function are answers to well-formed messages */
    if (status == PROTO_E_MALFORMED) b->dropped[ep]++;
    if (f->n < 1) return;
    msgpack_sbuffer_clear(&b->sb);
    if (proto_encode_error(&b->sb, status, text) == 0)
        frames_send(sock, frames_data(f, 0), frames_size(f, 0), &b->sb, NULL, 0, ZMQ_DONTWAIT);
    LOG_DEBUG("refused a message: %s", text);
}

/* Every endpoint answers HELLO with the limits a client must respect. */
void send_welcome(broker_t *b, void *sock, proto_frames *f)
{
    proto_welcome w = {
        .max_payload = (uint64_t)b->cfg->broker.max_payload,
        .max_batch = PROTO_MAX_BATCH,
        .heartbeat_ms = (uint32_t)b->heartbeat_ms,
    };
    msgpack_sbuffer_clear(&b->sb);
    if (proto_encode_welcome(&b->sb, &w) == 0)
        frames_send(sock, frames_data(f, 0), frames_size(f, 0), &b->sb, NULL, 0, ZMQ_DONTWAIT);
}

/* The disk alarm (like RabbitMQ's): below disk_min_free bytes free in the
 * data dir, publishes are refused "throttled" — SQLite in WAL mode cannot
 * free space by itself once the disk is truly full. Checked once a second. */
static void check_disk(broker_t *b)
{
    struct statvfs v;
    if (statvfs(b->cfg->broker.data_dir, &v) != 0) return;
    b->disk_free = (int64_t)v.f_bavail * (int64_t)v.f_frsize;
    bool alarm = b->disk_free < b->cfg->broker.disk_min_free;
    if (alarm != b->disk_alarm)
        LOG_WARN(alarm ? "disk alarm: %lld bytes free in %s, below disk_min_free (%lld): refusing publishes"
                       : "disk alarm cleared: %lld bytes free in %s (disk_min_free %lld): publishing again",
                 (long long)b->disk_free, b->cfg->broker.data_dir, (long long)b->cfg->broker.disk_min_free);
    b->disk_alarm = alarm;
}

static int drain(broker_t *b, void *sock, void (*handle)(broker_t *, proto_frames *), bool service);

/* Mid-turn: results in (they free slots and stage acks), committed
 * deliveries out. */
static void service_workers(broker_t *b)
{
    drain(b, b->wrk_sock, workers_handle, false);
    dispatch_pump(b, true);
}

/* Takes up to DRAIN_CAP messages from one socket. Returns how many. With
 * service, the workers are served every SERVICE_US in between. */
static int drain(broker_t *b, void *sock, void (*handle)(broker_t *, proto_frames *), bool service)
{
    int k = 0;
    int64_t served = service ? util_mono_us() : 0;
    for (; k < DRAIN_CAP; k++) {
        if (frames_recv(sock, &b->in, PROTO_MAX_FRAMES + 1, ZMQ_DONTWAIT) != 0) {
            if (zmq_errno() != EAGAIN && zmq_errno() != EINTR)
                LOG_WARN("receive: %s", zmq_strerror(zmq_errno()));
            break;
        }
        handle(b, &b->in);
        frames_close(&b->in);
        if (service && util_mono_us() - served >= SERVICE_US) {
            service_workers(b);
            served = util_mono_us();
        }
    }
    return k;
}

int loop_run(broker_t *b)
{
    zmq_pollitem_t items[4] = {
        { b->pub_sock, 0, ZMQ_POLLIN, 0 },
        { b->wrk_sock, 0, ZMQ_POLLIN, 0 },
        { b->adm_sock, 0, ZMQ_POLLIN, 0 },
        { b->auth.zap, 0, ZMQ_POLLIN, 0 },   /* CURVE handshakes wait on this one */
    };
    int nitems = b->auth.zap ? 4 : 3;
    bool busy = false;
    check_disk(b);
    while (!*b->stop) {
        /* 1. timers */
        int64_t now = util_mono_ms();
        int64_t next = timers_run(b, util_wall_ms());
        workers_tick(b, now);
        invoke_tick(b, now);
        long timeout = b->heartbeat_ms / 2;
        if (b->store.in_txn && timeout > ACK_COMMIT_MS) timeout = ACK_COMMIT_MS;
        if (next >= 0 && next < timeout) timeout = (long)next;
        if (busy) timeout = 0;
        /* between transactions: a reload may write `subs` rows, which must
         * not be rolled back with a turn that fails while their ids live on */
        if (*b->reload && !b->store.in_txn) {
            *b->reload = 0;
            broker_reload(b);
        }
        int64_t slot = schedules_run(b);   /* due slots become events in this turn's transaction */
        if (slot >= 0 && slot < timeout) timeout = (long)slot;
        if (b->sched_dirty) timeout = 0;   /* what fired is committed this turn, not after a wait */
        /* 2. poll */
        if (zmq_poll(items, nitems, timeout) < 0 && zmq_errno() != EINTR) {
            LOG_ERROR("poll: %s", zmq_strerror(zmq_errno()));
            return -1;
        }
        /* 3. drain the sockets the poll found readable (results first: they
         * free slots). Trying the others too cost a failed receive each, and
         * libzmq's fork check, on every turn — at low rates most of the
         * broker's time. A socket that gave DRAIN_CAP may hold more: then
         * the next poll does not wait. */
        int most = 0;
        if (items[1].revents & ZMQ_POLLIN) { int n = drain(b, b->wrk_sock, workers_handle, false); if (n > most) most = n; }
        if (items[0].revents & ZMQ_POLLIN) { int n = drain(b, b->pub_sock, publish_handle, true); if (n > most) most = n; }
        if (items[2].revents & ZMQ_POLLIN) { int n = drain(b, b->adm_sock, admin_handle, false); if (n > most) most = n; }
        busy = most >= DRAIN_CAP || b->dlq_jobs != NULL;
        for (int k = 0; b->auth.zap && k < DRAIN_CAP && (items[3].revents & ZMQ_POLLIN); k++) {
            int ev = 0;
            size_t evlen = sizeof ev;
            zmq_getsockopt(b->auth.zap, ZMQ_EVENTS, &ev, &evlen);
            if (!(ev & ZMQ_POLLIN)) break;
            auth_handle(b);
        }
        if (now - b->last_gc_ms >= GC_EVERY_MS) {
            b->last_gc_ms = now;
            store_gc(&b->store, b);
        }
        if (now - b->last_prune_ms >= PRUNE_EVERY_MS) {
            b->last_prune_ms = now;
            store_prune(&b->store, util_wall_ms());
        }
        if (now - b->last_disk_ms >= 1000) {
            b->last_disk_ms = now;
            check_disk(b);
        }
        /* 4. commit → confirms → dispatch → reap. A turn with answers to
         * send commits now (never confirm what is not on disk); one with only
         * acks may wait for ACK_COMMIT_MS to share an fsync with later turns. */
        admin_jobs_run(b);
        bool must = b->confirms != NULL || b->admin_pending != NULL || b->dlq_jobs != NULL || b->sched_dirty ||
                    (b->store.in_txn && util_mono_ms() - b->store.txn_started_ms >= ACK_COMMIT_MS);
        uint64_t txn = b->store.txn_no;
        bool committed = !must || store_commit(&b->store) == 0;
        if (!committed) {
            LOG_ERROR("commit failed: this turn's publishes are refused, queues reloaded");
            queue_rollback(b, txn);   /* rows of acks lost with the turn come back (at-least-once) */
        }
        confirms_send(b, committed);
        admin_flush(b, committed);
        schedules_committed(b, committed);
        dispatch_pump(b, false);
        workers_reap(b);
        store_restart_wal(&b->store);
    }
    bool ok = store_commit(&b->store) == 0;
    if (!ok) LOG_ERROR("final commit failed");
    confirms_send(b, ok);
    admin_flush(b, ok);
    schedules_committed(b, ok);
    return 0;
}
