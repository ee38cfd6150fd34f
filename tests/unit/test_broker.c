/* test_broker.c — unit tests of the broker's pure parts: backoff, the lease
 * map, subscription filters, the timer heap and intrusive lists. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>

#include "../../broker/broker.h"

Test(broker, backoff_grows_by_the_multiplier_up_to_max_without_jitter)
{
    cfg_backoff p = { .initial_s = 0.5, .max_s = 3.0, .multiplier = 2.0, .jitter = JITTER_NONE };
    cr_assert_eq(backoff_ms(&p, 1, 0.7), 500);
    cr_assert_eq(backoff_ms(&p, 2, 0.7), 1000);
    cr_assert_eq(backoff_ms(&p, 3, 0.7), 2000);
    cr_assert_eq(backoff_ms(&p, 4, 0.7), 3000);
    cr_assert_eq(backoff_ms(&p, 40, 0.7), 3000);
}

Test(broker, backoff_full_jitter_scales_the_whole_delay_equal_jitter_half)
{
    cfg_backoff p = { .initial_s = 1.0, .max_s = 300.0, .multiplier = 2.0, .jitter = JITTER_FULL };
    cr_assert_eq(backoff_ms(&p, 3, 0.0), 0);
    cr_assert_eq(backoff_ms(&p, 3, 0.5), 2000);
    p.jitter = JITTER_EQUAL;
    cr_assert_eq(backoff_ms(&p, 3, 0.0), 2000);
    cr_assert_eq(backoff_ms(&p, 3, 0.5), 3000);
}

Test(broker, lease_map_put_get_delete_survives_growth_and_probe_runs)
{
    lease_map m = { 0 };
    static int vals[20000];
    for (uint64_t k = 1; k <= 20000; k++) cr_assert_eq(lease_put(&m, k * 7919, &vals[k - 1]), 0);
    cr_assert_eq(m.n, 20000);
    for (uint64_t k = 1; k <= 20000; k += 2) cr_assert_eq(lease_del(&m, k * 7919), &vals[k - 1]);
    for (uint64_t k = 1; k <= 20000; k++) {
        void *v = lease_get(&m, k * 7919);
        if (k % 2) cr_assert_null(v, "deleted key %lu still found", (unsigned long)k);
        else cr_assert_eq(v, &vals[k - 1], "key %lu lost after deletions", (unsigned long)k);
    }
    cr_assert_null(lease_get(&m, 0));
    cr_assert_null(lease_del(&m, 12345));
    cr_assert_eq(m.n, 10000);
    lease_map_free(&m);
}

Test(broker, filter_matches_when_every_key_has_one_of_its_values)
{
    char *png[] = { "image/png", "image/jpeg" }, *eu[] = { "eu" };
    cfg_filter f[2] = { { "content_type", png, 2 }, { "region", eu, 1 } };
    cfg_subscription s = { .function = "thumb", .filters = f, .nfilters = 2 };
    proto_attr a[] = { { "region", "eu" }, { "content_type", "image/jpeg" } };
    cr_assert(filter_match(&s, a, 2));
    cr_assert_not(filter_match(&s, a, 1), "a missing key must not match");
    proto_attr b[] = { { "region", "us" }, { "content_type", "image/jpeg" } };
    cr_assert_not(filter_match(&s, b, 2));
    cr_assert(filter_match(NULL, b, 0), "no filter matches everything");
    cfg_subscription none = { .function = "x" };
    cr_assert(filter_match(&none, NULL, 0));
}

/* The CURVE self-test connects to the publish endpoint: a bind on every
 * interface ('*') is reached on the loopback, others as they are. */
Test(broker, curve_self_test_reaches_a_bind_on_every_interface_through_the_loopback)
{
    char ep[256];
    auth_selftest_endpoint("tcp://*:7710", ep, sizeof ep);
    cr_assert_str_eq(ep, "tcp://127.0.0.1:7710");
    auth_selftest_endpoint("tcp://10.0.0.1:7710", ep, sizeof ep);
    cr_assert_str_eq(ep, "tcp://10.0.0.1:7710");
    auth_selftest_endpoint("ipc:///run/herald/pub.sock", ep, sizeof ep);
    cr_assert_str_eq(ep, "ipc:///run/herald/pub.sock");
}

Test(broker, timers_wake_deliveries_in_visible_order)
{
    broker_t b;
    memset(&b, 0, sizeof b);
    function_t fn = { .name = "f" };
    sub_t s = { .fn = &fn };
    list_init(&s.ready);
    delivery_t d[50];
    memset(d, 0, sizeof d);
    message_t m = { .payload_len = 1 };
    for (int i = 0; i < 50; i++) {
        d[i].sub = &s;
        d[i].msg = &m;
        d[i].state = DELIVERY_RETRY_WAIT;
        d[i].visible_ms = (i * 37) % 50;   /* a permutation of 0..49 */
        d[i].link.prev = d[i].link.next = &d[i].link;
        timers_add(&b, &d[i]);
    }
    timers_remove(&b, &d[3]);              /* visible 11: removed, never woken */
    cr_assert_eq(timers_run(&b, 9), 10 - 9, "next timer is at 10");
    cr_assert_eq(s.ready.n, 10);
    cr_assert_eq(timers_run(&b, 100), -1);
    cr_assert_eq(s.ready.n, 49);
    int64_t last = -1;
    for (list_node *n = s.ready.head.next; n != &s.ready.head; n = n->next) {
        delivery_t *x = container_of(n, delivery_t, link);
        cr_assert(x->visible_ms > last, "woken out of order");
        cr_assert_neq(x->visible_ms, 11);
        last = x->visible_ms;
    }
    free(b.timers);
}

/* A broker with one subscription ("t" → "f") and a ROUTER worker socket on
 * inproc, to drive the real dispatch code; workers are DEALERs attached to it. */
typedef struct {
    void *ctx, *router;
    broker_t b;
    cfg_function fcfg;
    function_t fn;
    sub_t s;
    sub_t *subs[1];
    char dir[64];               /* sfx_open: the store's temp dir */
} dispatch_fx;

static void dfx_init(dispatch_fx *x, const char *endpoint)
{
    memset(x, 0, sizeof *x);
    x->ctx = zmq_ctx_new();
    x->router = zmq_socket(x->ctx, ZMQ_ROUTER);
    cr_assert_eq(zmq_bind(x->router, endpoint), 0);
    x->b.wrk_sock = x->router;
    msgpack_sbuffer_init(&x->b.sb);
    list_init(&x->b.workers);
    list_init(&x->b.invoke_queue);
    x->fcfg = (cfg_function){ .name = "f", .max_attempts = 3 };
    x->fn = (function_t){ .name = "f", .cfg = &x->fcfg };
    x->s = (sub_t){ .id = 1, .topic = "t", .fn = &x->fn, .caught_up = true, .dall = true };
    list_init(&x->s.ready);
    x->subs[0] = &x->s;
    x->b.subs = x->subs;
    x->b.nsubs = 1;
}

/* Connects a DEALER named rid and registers worker w (slots) for it. */
static void *dfx_worker(dispatch_fx *x, const char *endpoint, worker_t *w, const char *rid, uint32_t slots)
{
    void *d = zmq_socket(x->ctx, ZMQ_DEALER);
    cr_assert_eq(zmq_setsockopt(d, ZMQ_ROUTING_ID, rid, strlen(rid)), 0);
    cr_assert_eq(zmq_connect(d, endpoint), 0);
    zmq_send(d, "hi", 2, 0);   /* the ROUTER learns the routing id */
    char buf[8];
    cr_assert_eq(zmq_recv(x->router, buf, sizeof buf, 0), (int)strlen(rid));
    cr_assert_eq(zmq_recv(x->router, buf, sizeof buf, 0), 2);
    memset(w, 0, sizeof *w);
    w->slots = slots;
    w->rid_len = strlen(rid);
    memcpy(w->rid, rid, w->rid_len);
    list_init(&w->leases);
    list_push_back(&x->b.workers, &w->link);
    return d;
}

/* A READY delivery of a new message "p-N" (payload "x") at the queue's tail. */
static delivery_t *dfx_delivery(dispatch_fx *x, int n)
{
    char mid[16];
    snprintf(mid, sizeof mid, "p-%d", n);
    message_t *m = message_new(n, mid, "t", NULL, 0);
    m->payload = strdup("x");
    m->payload_len = 1;
    delivery_t *d = delivery_new(&x->b, &x->s, m, 0);
    list_push_back(&x->s.ready, &d->link);
    return d;
}

static void dfx_fini(dispatch_fx *x, worker_t *ws, int nw)
{
    for (int i = 0; i < nw; i++)
        while (ws[i].leases.n) {
            delivery_t *d = container_of(list_first(&ws[i].leases), delivery_t, link);
            list_remove(&ws[i].leases, &d->link);
            delivery_free(&x->b, d);   /* the last reference frees the message and its payload */
        }
    free(x->b.leases.slots);
    msgpack_sbuffer_destroy(&x->b.sb);
    zmq_close(x->router);
}

/* The same over a real store in a fresh temp dir, the subscription bound to
 * its row ("t" → "f"), nothing of `delayed` read yet. */
static void sfx_open(dispatch_fx *x, const char *endpoint)
{
    dfx_init(x, endpoint);
    snprintf(x->dir, sizeof x->dir, "/tmp/herald-test-store-XXXXXX");
    cr_assert(mkdtemp(x->dir));
    cr_assert_eq(store_open(&x->b.store, x->dir, DURABILITY_OS), 0);
    x->s.id = store_sub_id(&x->b.store, "t", "f");
    cr_assert_geq(x->s.id, 0);
    x->s.dall = false;
}

static void sfx_close(dispatch_fx *x, worker_t *ws, int nw)
{
    free(x->b.timers);
    x->b.timers = NULL;
    dfx_fini(x, ws, nw);
    zmq_ctx_term(x->ctx);
    store_close(&x->b.store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", x->dir);
    cr_assert_eq(system(cmd), 0);
}

/* Message "p-N" with this payload, written in the open transaction; its id. */
static int64_t sfx_message(dispatch_fx *x, int n, const void *payload, size_t len)
{
    char mid[32];
    snprintf(mid, sizeof mid, "p-%d", n);
    int64_t id;
    cr_assert_eq(store_stage_message(&x->b.store, mid, "t", NULL, 0, payload, len, 0, &id), 0);
    cr_assert_eq(store_flush(&x->b.store), 0);
    return id;
}

/* The next DELIVER on dealer (0 if none waits): its entry count, and the
 * first entry's lease and message id. */
static uint32_t delivered(void *dealer, int wait_ms, uint64_t *first_lease, char first_mid[16])
{
    zmq_pollitem_t it = { dealer, 0, ZMQ_POLLIN, 0 };
    if (zmq_poll(&it, 1, wait_ms) <= 0) return 0;
    proto_frames f;
    memset(&f, 0, sizeof f);
    if (frames_recv(dealer, &f, PROTO_MAX_FRAMES + 1, ZMQ_DONTWAIT) != 0) return 0;
    proto_msg m;
    char err[256];
    cr_assert_eq(proto_decode(frames_data(&f, 0), frames_size(&f, 0), &m, err, sizeof err), 0, "%s", err);
    cr_assert_eq(m.type, MSG_DELIVER);
    uint32_t n = m.u.deliver.n;
    *first_lease = m.u.deliver.ds[0].lease;
    snprintf(first_mid, 16, "%s", m.u.deliver.ds[0].message_id);
    proto_msg_clear(&m);
    frames_close(&f);
    free(f.parts);
    return n;
}

/* Mid-turn dispatch (between PUBLISH messages of a long turn) sends only what
 * earlier transactions committed: a delivery published in the open
 * transaction stays queued until the commit, then goes out. Drives the real
 * dispatch code over an inproc ROUTER/DEALER pair and decodes what arrives. */
Test(broker, dispatch_mid_turn_sends_only_committed_deliveries)
{
    dispatch_fx x;
    const char *ep = "inproc://dispatch-test";
    dfx_init(&x, ep);
    worker_t w;
    void *dealer = dfx_worker(&x, ep, &w, "w1", 10);
    for (int i = 0; i < 4; i++)
        dfx_delivery(&x, i + 1)->txn = i < 2 ? 4 : 5;   /* two committed, two of the open transaction */
    x.b.store.in_txn = true;
    x.b.store.txn_no = 5;
    uint64_t lease = 0, l2 = 0;
    char mid[16];
    dispatch_pump(&x.b, true);
    cr_assert_eq(delivered(dealer, 1000, &lease, mid), 2, "only the committed two go out mid-turn");
    cr_assert_str_eq(mid, "p-1");
    cr_assert_eq(x.s.ready.n, 2);
    cr_assert_eq(w.busy, 2);
    dispatch_pump(&x.b, true);
    cr_assert_eq(delivered(dealer, 0, &l2, mid), 0, "nothing more before the commit");

    x.b.store.in_txn = false;   /* committed */
    dispatch_pump(&x.b, false);
    cr_assert_eq(delivered(dealer, 1000, &l2, mid), 2);
    cr_assert_str_eq(mid, "p-3");
    cr_assert_gt(l2, lease);
    cr_assert_eq(x.s.ready.n, 0);
    cr_assert_eq(w.busy, 4);

    zmq_close(dealer);
    dfx_fini(&x, &w, 1);
    zmq_ctx_term(x.ctx);
}

/* Under a steady moderate load (here ~2,000 small commits/s, W3's pace) the
 * WAL is written from its start again, over and over, long before the
 * checkpointer's 64 MiB truncate: store_restart_wal() between transactions.
 * The WAL hook's frame count after each commit shows it: it climbs past
 * WAL_RESTART_FRAMES and falls back. (Flat out, the loop would rather let the
 * WAL grow than stop to copy what the checkpointer has not: see store.c.) */
Test(broker, wal_restarts_under_steady_writes, .timeout = 60)
{
    char dir[] = "/tmp/herald-test-wal-XXXXXX";
    cr_assert(mkdtemp(dir));
    store_t s;
    cr_assert_eq(store_open(&s, dir, DURABILITY_OS), 0);
    char payload[256];
    memset(payload, 'x', sizeof payload);
    int restarts = 0, peak = 0, highest = 0;
    int64_t end = util_mono_ms() + 20000;
    for (int64_t seq = 1; restarts < 3 && util_mono_ms() < end; seq++) {
        char mid[32];
        snprintf(mid, sizeof mid, "p-%lld", (long long)seq);
        int64_t id;
        cr_assert_eq(store_begin(&s), 0);
        cr_assert_eq(store_stage_message(&s, mid, "t", NULL, 0, payload, sizeof payload, 0, &id), 0);
        cr_assert_eq(store_commit(&s), 0);
        if (s.wal_now > peak) peak = s.wal_now;
        if (peak >= WAL_RESTART_FRAMES && s.wal_now < peak / 2) {
            restarts++;
            if (peak > highest) highest = peak;
            peak = s.wal_now;
        }
        store_restart_wal(&s);
        struct timespec pace = { 0, 500000 };
        nanosleep(&pace, NULL);
    }
    store_close(&s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
    cr_assert_geq(restarts, 3, "the WAL restarted %d times", restarts);
    cr_assert_lt(highest, 16384, "the WAL reached %d frames before starting over", highest);
}

/* At a low rate (one delivery per turn) the work goes round every worker,
 * not always to the first one with a free slot: a worker that is frozen or
 * cut off then holds work like the others, and its leases come back `lost`. */
Test(broker, dispatch_spreads_low_rate_work_over_every_worker)
{
    dispatch_fx x;
    const char *ep = "inproc://spread-test";
    dfx_init(&x, ep);
    worker_t w[3];
    void *dealers[3];
    const char *rids[] = { "w1", "w2", "w3" };
    for (int i = 0; i < 3; i++) dealers[i] = dfx_worker(&x, ep, &w[i], rids[i], 8);
    for (int i = 0; i < 6; i++) {   /* six turns, one new delivery each */
        dfx_delivery(&x, i + 1);
        dispatch_pump(&x.b, false);
    }
    for (int i = 0; i < 3; i++)
        cr_assert_eq(w[i].busy, 2, "worker %d holds %u of the 6", i + 1, w[i].busy);
    for (int i = 0; i < 3; i++) zmq_close(dealers[i]);
    dfx_fini(&x, w, 3);
    zmq_ctx_term(x.ctx);
}

/* After a failed commit (transaction 7 rolled back) memory forgets what that
 * transaction stored and reads the windows again from the table — but keeps
 * the delayed deliveries that had woken into a window (their rows are in
 * `delayed`, which is read only at start), does not read again the rows of
 * deliveries in flight, and reads again the `delayed` rows memory lost with
 * the turn. A real store holds `queue` rows 1–4 (2 is in flight) and a
 * `delayed` row 5 that nothing in memory holds (acked in the lost turn). */
Test(broker, rollback_forgets_the_failed_transaction_keeps_woken_delayed)
{
    dispatch_fx x;
    sfx_open(&x, "inproc://rollback-test");
    cr_assert_eq(store_begin(&x.b.store), 0);
    for (int i = 1; i <= 5; i++) {
        char mid[16];
        snprintf(mid, sizeof mid, "p-%d", i);
        int64_t id;
        cr_assert_eq(store_stage_message(&x.b.store, mid, "t", NULL, 0, "x", 1, 0, &id), 0);
        if (i <= 4) cr_assert_eq(store_stage_queue(&x.b.store, x.s.id, id), 0);
    }
    cr_assert_eq(store_flush(&x.b.store), 0);
    cr_assert_eq(store_insert_delayed(&x.b.store, x.s.id, 5, 5, 1), 0);
    cr_assert_eq(store_commit(&x.b.store), 0);

    worker_t w;
    void *dealer = dfx_worker(&x, "inproc://rollback-test", &w, "w1", 8);
    delivery_t *flying = dfx_delivery(&x, 2);
    delivery_dispatch(&x.b, flying, &w);                     /* row 2, in flight */
    delivery_t *woken = dfx_delivery(&x, 10);
    woken->in_delayed = true;                                 /* kept */
    dfx_delivery(&x, 11)->txn = 7;                            /* published by the failed txn */
    delivery_t *d12 = dfx_delivery(&x, 12);
    d12->in_delayed = true;
    d12->txn = 7;                                             /* a delayed publish of it, woken */
    /* waiting: visible 1, 10, 2, 11, 12, 3, 4; those at 10 and 11 were written by
     * the failed txn (a replay, a retry's move) — a heap where removing one by
     * one from the end would skip one */
    static const int64_t vis[] = { 1, 10, 2, 11, 12, 3, 4 };
    for (int i = 0; i < 7; i++) {
        delivery_t *d = dfx_delivery(&x, 20 + i);
        list_remove(&x.s.ready, &d->link);
        d->in_delayed = true;
        d->state = DELIVERY_RETRY_WAIT;
        d->visible_ms = vis[i];
        d->txn = vis[i] == 10 || vis[i] == 11 ? 7 : 3;
        timers_add(&x.b, d);
    }
    x.s.cursor = 4;
    x.s.caught_up = true;
    x.s.dall = true;   /* the delayed window held every `delayed` row */
    x.s.dmem = 9;      /* woken 10 and 12, and the 7 waiting */
    queue_rollback(&x.b, 7);
    cr_assert_eq(x.s.ready.n, 1);
    cr_assert_eq(container_of(list_first(&x.s.ready), delivery_t, link), woken);
    cr_assert_eq(x.b.ntimers, 6, "%zu waiting", x.b.ntimers);
    int64_t last = -1;
    bool row5 = false;
    for (int i = 0; i < 6; i++) {   /* in visible order, none of the failed txn's, row 5 back */
        delivery_t *d = x.b.timers[0];
        timers_remove(&x.b, d);
        cr_assert_neq(d->txn, 7);
        cr_assert_geq(d->visible_ms, last);
        last = d->visible_ms;
        row5 = row5 || d->msg->id == 5;
        delivery_free(&x.b, d);
    }
    cr_assert(row5, "the delayed row lost with the turn is read again");
    cr_assert_eq(x.s.queued, 4, "counted again from the table (in flight included)");
    cr_assert_eq(x.s.delayed, 1);

    queue_refill(&x.b, &x.s);
    int64_t got[8];
    int n = 0;
    for (list_node *ln = x.s.ready.head.next; ln != &x.s.ready.head && n < 8; ln = ln->next)
        got[n++] = container_of(ln, delivery_t, link)->msg->id;
    cr_assert_eq(n, 4, "%d in the window", n);
    cr_assert_eq(got[0], 10);
    cr_assert_eq(got[1], 1);
    cr_assert_eq(got[2], 3, "row 2 is in flight: not read again");
    cr_assert_eq(got[3], 4);
    cr_assert(x.s.caught_up);
    queue_refill(&x.b, &x.s);
    cr_assert_null(x.b.reload_skip, "dropped once every window has read past it");

    list_node *ln;
    while ((ln = list_pop_front(&x.s.ready)) != NULL) delivery_free(&x.b, container_of(ln, delivery_t, link));
    zmq_close(dealer);
    sfx_close(&x, &w, 1);
}

/* Wakes every waiting delivery (they are due: now is far ahead), frees them
 * after noting their keys; returns how many. */
static int wake_all(dispatch_fx *x, int64_t *last_ms, unsigned char *seen, int64_t nseen)
{
    int n = 0;
    timers_run(&x->b, INT64_MAX);
    list_node *ln;
    while ((ln = list_pop_front(&x->s.ready)) != NULL) {
        delivery_t *d = container_of(ln, delivery_t, link);
        cr_assert_geq(d->visible_ms, *last_ms, "woken out of time order: %lld after %lld",
                     (long long)d->visible_ms, (long long)*last_ms);
        *last_ms = d->visible_ms;
        cr_assert(d->msg->id > 0 && d->msg->id < nseen);
        cr_assert_eq(seen[d->msg->id], 0, "row %lld woke twice", (long long)d->msg->id);
        seen[d->msg->id] = 1;
        delivery_free(&x->b, d);
        n++;
    }
    return n;
}

/* A message row and its `delayed` row at visible_ms, committed. */
static int64_t delayed_row(dispatch_fx *x, int64_t visible_ms)
{
    static int k;
    char mid[32];
    snprintf(mid, sizeof mid, "d-%d", ++k);
    int64_t id;
    cr_assert_eq(store_begin(&x->b.store), 0);
    cr_assert_eq(store_stage_message(&x->b.store, mid, "t", NULL, 0, "x", 1, 0, &id), 0);
    cr_assert_eq(store_flush(&x->b.store), 0);
    cr_assert_eq(store_insert_delayed(&x->b.store, x->s.id, id, visible_ms, 1), 0);
    cr_assert_eq(store_commit(&x->b.store), 0);
    return id;
}

/* A RETRY_WAIT delivery of row id at visible_ms, handed to queue_delay. */
static void delay_in_memory(dispatch_fx *x, int64_t id, int64_t visible_ms)
{
    message_t *m = message_new(id, "d", "t", NULL, 0);
    m->payload = strdup("x");
    m->payload_len = 1;
    delivery_t *d = delivery_new(&x->b, &x->s, m, 1);
    d->in_delayed = true;
    d->state = DELIVERY_RETRY_WAIT;
    d->visible_ms = visible_ms;
    queue_delay(&x->b, d, false);
}

/* `delayed` rows (retries in backoff, --delay) are held in memory only as a
 * window of the earliest ~DELAYED_WINDOW per subscription: read from the
 * table in time order as they wake, trimmed from the latest end when new
 * early ones push it past its size; a delivery delayed past the window waits
 * on disk. Every row wakes exactly once, in time order. */
Test(broker, delayed_window_holds_the_earliest_rows_and_reads_the_rest_in_time_order, .timeout = 60)
{
    dispatch_fx x;
    sfx_open(&x, "inproc://delayed-test");
    const int n = 3 * DELAYED_WINDOW + 100;
    cr_assert_eq(store_begin(&x.b.store), 0);
    for (int i = 1; i <= n; i++) {   /* distinct times, not in id order */
        int64_t id = sfx_message(&x, i, "x", 1);
        cr_assert_eq(store_insert_delayed(&x.b.store, x.s.id, id, 100000 + 10 * (((int64_t)i * 7919) % n), 0), 0);
    }
    cr_assert_eq(store_commit(&x.b.store), 0);

    queue_refill_delayed(&x.b, &x.s);
    cr_assert_eq(x.b.ntimers, DELAYED_WINDOW, "%zu in memory", x.b.ntimers);
    cr_assert_eq(x.s.dmem, DELAYED_WINDOW);
    cr_assert(!x.s.dall);
    cr_assert_eq(x.s.dcursor_ms, 100000 + 10 * (DELAYED_WINDOW - 1), "the window is the earliest rows");

    /* an early retry: kept, and the window, now too big, lets its latest go */
    int64_t early = delayed_row(&x, 100005);
    delay_in_memory(&x, early, 100005);
    cr_assert_eq(x.s.dmem, DELAYED_WINDOW * 3 / 4, "trimmed to %lld", (long long)x.s.dmem);
    cr_assert_eq(x.b.ntimers, (size_t)x.s.dmem);
    int64_t top = 0;
    for (size_t i = 0; i < x.b.ntimers; i++)
        if (x.b.timers[i]->visible_ms > top) top = x.b.timers[i]->visible_ms;
    cr_assert_eq(x.s.dcursor_ms, top, "the cursor came down to the latest held");
    /* a retry past the window: its row waits on disk */
    int64_t late = delayed_row(&x, 100000 + 10 * (n + 5));
    size_t before = x.b.ntimers;
    delay_in_memory(&x, late, 100000 + 10 * (n + 5));
    cr_assert_eq(x.b.ntimers, before, "a delivery past the window stayed in memory");
    cr_assert_eq(x.s.dmem, (int64_t)before);
    /* a new delayed publish past the window is not even made */
    cr_assert(!queue_delay_takes(&x.s, x.s.dcursor_ms));
    cr_assert(queue_delay_takes(&x.s, x.s.dcursor_ms - 1));

    unsigned char *seen = calloc((size_t)n + 3, 1);
    int64_t last = 0;
    int woken = 0, rounds = 0;
    while (x.b.ntimers || !x.s.dall) {
        cr_assert_leq(x.b.ntimers, DELAYED_WINDOW, "%zu in memory", x.b.ntimers);
        woken += wake_all(&x, &last, seen, n + 3);
        queue_refill_delayed(&x.b, &x.s);
        cr_assert_lt(++rounds, 100);
    }
    cr_assert_eq(woken, n + 2, "%d of %d rows woke", woken, n + 2);
    cr_assert_eq(x.s.dmem, 0);
    free(seen);
    sfx_close(&x, NULL, 0);
}

/* Large payloads: each window (ready, delayed) holds at most about
 * WINDOW_BYTES of them, whatever their count, and still hands out every row
 * once, in order; a single payload larger than the bound still gets in. */
Test(broker, windows_hold_at_most_window_bytes_of_payload, .timeout = 60)
{
    dispatch_fx x;
    sfx_open(&x, "inproc://bytes-test");
    x.s.caught_up = false;
    x.s.dall = false;
    const size_t big = 1 << 20;
    const int n = 40;   /* 40 MiB per window: 2.5 times the bound */
    char *payload = calloc(1, big);
    cr_assert_eq(store_begin(&x.b.store), 0);
    for (int i = 1; i <= 2 * n; i++) {
        int64_t id = sfx_message(&x, i, payload, big);
        if (i <= n) cr_assert_eq(store_stage_queue(&x.b.store, x.s.id, id), 0);
        else cr_assert_eq(store_insert_delayed(&x.b.store, x.s.id, id, 1000 + i, 0), 0);
    }
    cr_assert_eq(store_commit(&x.b.store), 0);
    free(payload);

    /* ready: read 16 at a time, handed out in id order */
    int64_t next = 1;
    for (int rounds = 0; !x.s.caught_up || x.s.ready.n; rounds++) {
        cr_assert_lt(rounds, 100);
        queue_refill(&x.b, &x.s);
        cr_assert_leq(x.s.ready_bytes, WINDOW_BYTES, "%lld bytes in the ready window", (long long)x.s.ready_bytes);
        list_node *ln;
        while ((ln = list_first(&x.s.ready)) != NULL) {
            delivery_t *d = container_of(ln, delivery_t, link);
            cr_assert_eq(d->msg->id, next, "row %lld handed out, expected %lld", (long long)d->msg->id,
                         (long long)next);
            next++;
            window_remove(&x.s, d);
            delivery_free(&x.b, d);
        }
        cr_assert_eq(x.s.ready_bytes, 0);
    }
    cr_assert_eq(next, n + 1, "%lld rows of %d", (long long)next - 1, n);
    /* a publish joins a caught-up window only while it has room, but an empty
     * window takes one of any size */
    cr_assert(queue_take_new(&x.s, 64 << 20));
    cr_assert(queue_take_new(&x.s, WINDOW_BYTES));
    x.s.ready_bytes = WINDOW_BYTES - 10;
    x.s.ready.n = 1;   /* pretend one is there */
    cr_assert(queue_take_new(&x.s, 10));
    cr_assert(!queue_take_new(&x.s, 11));
    x.s.ready_bytes = 0;
    x.s.ready.n = 0;

    /* delayed: the same bound, rows wake once in time order */
    int64_t last = 0;
    unsigned char seen[2 * 40 + 2] = { 0 };
    int woken = 0;
    for (int rounds = 0; x.b.ntimers || !x.s.dall; rounds++) {
        cr_assert_lt(rounds, 100);
        queue_refill_delayed(&x.b, &x.s);
        cr_assert_leq(x.s.dbytes, WINDOW_BYTES, "%lld bytes in the delayed window", (long long)x.s.dbytes);
        woken += wake_all(&x, &last, seen, 2 * n + 2);
        cr_assert_eq(x.s.dbytes, 0);
    }
    cr_assert_eq(woken, n, "%d of %d delayed rows woke", woken, n);
    sfx_close(&x, NULL, 0);
}

/* The delayed window's invariant, checked against the table: memory holds
 * exactly the rows at or below the cursor (all rows when dall), once each. */
static void check_window(dispatch_fx *x, const char *when)
{
    sub_t *s = &x->s;
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(x->b.store.db,
                                    "SELECT count(*) FROM delayed WHERE sub=?1 AND (visible_ms, msg) <= (?2, ?3)", -1,
                                    &st, NULL), SQLITE_OK);
    sqlite3_bind_int64(st, 1, s->id);
    sqlite3_bind_int64(st, 2, s->dall ? INT64_MAX : s->dcursor_ms);
    sqlite3_bind_int64(st, 3, s->dall ? INT64_MAX : s->dcursor_msg);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    int64_t rows = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    int64_t mem = 0;
    const delivery_t *held[3 * DELAYED_WINDOW];
    size_t nh = 0;
    for (size_t i = 0; i < x->b.ntimers; i++) held[nh++] = x->b.timers[i];
    for (list_node *ln = s->ready.head.next; ln != &s->ready.head; ln = ln->next)
        if (container_of(ln, delivery_t, link)->in_delayed) held[nh++] = container_of(ln, delivery_t, link);
    for (list_node *wn = x->b.workers.head.next; wn != &x->b.workers.head; wn = wn->next) {
        worker_t *w = container_of(wn, worker_t, link);
        for (list_node *ln = w->leases.head.next; ln != &w->leases.head; ln = ln->next)
            if (container_of(ln, delivery_t, link)->in_delayed) held[nh++] = container_of(ln, delivery_t, link);
    }
    for (size_t i = 0; i < nh; i++) {
        const delivery_t *d = held[i];
        cr_assert(s->dall || d->visible_ms < s->dcursor_ms ||
                      (d->visible_ms == s->dcursor_ms && d->msg->id <= s->dcursor_msg),
                  "%s: row %lld is in memory above the cursor", when, (long long)d->msg->id);
        for (size_t j = 0; j < i; j++)
            cr_assert_neq(held[j]->msg->id, d->msg->id, "%s: row %lld is in memory twice", when,
                          (long long)d->msg->id);
        mem++;
    }
    cr_assert_eq(mem, s->dmem, "%s: dmem %lld, %lld in memory", when, (long long)s->dmem, (long long)mem);
    cr_assert_eq(rows, mem, "%s: %lld rows at or below the cursor, %lld in memory", when, (long long)rows,
                 (long long)mem);
}

/* The window while some of its deliveries are woken and some run, with many
 * rows sharing each time: early retries push it past its size (the trim
 * must keep those), rows finish, the window is read further; a refill waits
 * while a transaction is open. The table and memory agree at every step. */
Test(broker, delayed_window_trims_around_woken_and_running_and_ties, .timeout = 60)
{
    dispatch_fx x;
    sfx_open(&x, "inproc://dties-test");
    worker_t w;
    void *dealer = dfx_worker(&x, "inproc://dties-test", &w, "w1", 100000);
    const int n = 2 * DELAYED_WINDOW + 50;
    cr_assert_eq(store_begin(&x.b.store), 0);
    for (int i = 1; i <= n; i++) {   /* ten times only: ~1,640 rows each */
        int64_t id = sfx_message(&x, i, "x", 1);
        cr_assert_eq(store_insert_delayed(&x.b.store, x.s.id, id, 1000 + i % 10, 0), 0);
    }
    /* a refill with a transaction open reads nothing (its rows may yet go) */
    queue_refill_delayed(&x.b, &x.s);
    cr_assert_eq(x.s.dmem, 0, "read %lld rows with a transaction open", (long long)x.s.dmem);
    cr_assert_eq(store_commit(&x.b.store), 0);
    queue_refill_delayed(&x.b, &x.s);
    check_window(&x, "first read");
    cr_assert_eq(x.s.dmem, DELAYED_WINDOW);

    /* wake nearly the whole window; a third of those run */
    timers_run(&x.b, 1004);
    size_t woken = x.s.ready.n, k = 0;
    cr_assert_gt(woken, DELAYED_WINDOW * 3 / 4);
    for (list_node *ln = x.s.ready.head.next; ln != &x.s.ready.head && k < woken / 3; k++) {
        delivery_t *d = container_of(ln, delivery_t, link);
        ln = ln->next;
        delivery_dispatch(&x.b, d, &w);
    }
    check_window(&x, "woken and running");
    /* early retries (before the cursor, and before the woken ones): kept; the
     * trims can only let the few latest waiting rows go */
    for (int i = 0; i < DELAYED_WINDOW / 2; i++) {
        int64_t id = delayed_row(&x, 1000);
        delay_in_memory(&x, id, 1000);
        if (i % 512 == 0) check_window(&x, "during the retries");
    }
    check_window(&x, "after the trims");
    cr_assert_leq(x.s.dmem, 2 * DELAYED_WINDOW, "%lld in memory", (long long)x.s.dmem);

    /* everything ends: rows deleted as they succeed, the window read on */
    int64_t done = 0;
    for (int rounds = 0; x.s.dmem || !x.s.dall; rounds++) {
        cr_assert_lt(rounds, 200);
        timers_run(&x.b, INT64_MAX);
        list_node *ln;
        while ((ln = list_pop_front(&w.leases)) != NULL) {
            delivery_t *d = container_of(ln, delivery_t, link);
            list_push_back(&x.s.ready, &d->link);   /* back, to end like the others */
            w.busy--;
        }
        cr_assert_eq(store_begin(&x.b.store), 0);
        while ((ln = list_pop_front(&x.s.ready)) != NULL) {
            delivery_t *d = container_of(ln, delivery_t, link);
            cr_assert_eq(store_delete_delivery(&x.b.store, d), 0);
            delivery_free(&x.b, d);
            done++;
        }
        cr_assert_eq(store_commit(&x.b.store), 0);
        x.s.ready_bytes = 0;
        queue_refill_delayed(&x.b, &x.s);
        check_window(&x, "reading on");
    }
    cr_assert_eq(done, n + DELAYED_WINDOW / 2, "%lld of %d rows ended", (long long)done, n + DELAYED_WINDOW / 2);
    free(x.b.leases.slots);
    x.b.leases.slots = NULL;
    zmq_close(dealer);
    sfx_close(&x, &w, 1);
}

/* A delayed delivery fails again in a turn whose commit fails: its row keeps
 * the old time while memory had the new one. The rollback must put memory
 * back in line with the row, so a later trim cannot leave the row under the
 * cursor and out of memory (it would wait for a restart). */
Test(broker, delayed_retry_rolled_back_with_its_turn_is_not_lost, .timeout = 60)
{
    dispatch_fx x;
    sfx_open(&x, "inproc://dretry-test");
    worker_t w;
    void *dealer = dfx_worker(&x, "inproc://dretry-test", &w, "w1", 8);
    const int n = DELAYED_WINDOW + 100;
    cr_assert_eq(store_begin(&x.b.store), 0);
    for (int i = 0; i < n; i++) {
        int64_t id = sfx_message(&x, i, "x", 1);
        cr_assert_eq(store_insert_delayed(&x.b.store, x.s.id, id, 100000 + 10 * i, 0), 0);
    }
    cr_assert_eq(store_commit(&x.b.store), 0);
    queue_refill_delayed(&x.b, &x.s);
    check_window(&x, "first read");

    /* the earliest wakes, runs, fails: its retry's time is early in the window */
    timers_run(&x.b, 100000);
    cr_assert_eq(x.s.ready.n, 1);
    delivery_t *d = container_of(list_first(&x.s.ready), delivery_t, link);
    delivery_dispatch(&x.b, d, &w);
    cr_assert_eq(store_begin(&x.b.store), 0);
    int64_t retry_at = x.s.dcursor_ms - 5;
    delivery_fail(&x.b, d, OUT_ERROR, "boom", NULL, retry_at);
    /* … and the turn's commit fails */
    uint64_t txn = x.b.store.txn_no;
    x.b.store.failed = true;
    cr_assert_neq(store_commit(&x.b.store), 0);
    queue_rollback(&x.b, txn);
    check_window(&x, "after the rollback");

    /* early retries push the window past its size: the trim lets the latest go */
    for (int i = 0; i < DELAYED_WINDOW / 4 + 10; i++) {   /* distinct times, all early */
        int64_t id = delayed_row(&x, 100002 + 10 * i);
        delay_in_memory(&x, id, 100002 + 10 * i);
    }
    check_window(&x, "after the trim");

    unsigned char *seen = calloc((size_t)n + DELAYED_WINDOW, 1);
    int64_t last = 0;
    int woken = 0;
    for (int rounds = 0; x.b.ntimers || !x.s.dall; rounds++) {
        cr_assert_lt(rounds, 100);
        last = 0;   /* early retries interleave with later reads: order is checked elsewhere */
        woken += wake_all(&x, &last, seen, n + DELAYED_WINDOW);
        queue_refill_delayed(&x.b, &x.s);
    }
    cr_assert_eq(woken, n + DELAYED_WINDOW / 4 + 10, "%d rows woke", woken);
    free(seen);
    zmq_close(dealer);
    sfx_close(&x, &w, 1);
}

/* dlq replay --rate of more dead letters than the delayed window: it makes
 * deliveries for one window at most (the rest are read from the table as
 * they come due), and every replayed row still wakes once, in order. */
Test(broker, paced_replay_fills_one_delayed_window_at_most, .timeout = 60)
{
    dispatch_fx x;
    sfx_open(&x, "inproc://replay-test");
    x.s.dall = true;   /* no delayed row yet: the window holds them all */
    const int n = 2 * DELAYED_WINDOW + 10;
    char sql[256];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < %d)"
             " INSERT INTO dead(msg, sub, mid, topic, function, attempts, outcome, error, failed_ms, payload)"
             " SELECT i, %lld, 'd-' || i, 't', 'f', 3, 'error', 'boom', 0, 'x' FROM k",
             n, (long long)x.s.id);
    cr_assert_eq(sqlite3_exec(x.b.store.db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(x.b.store.db));
    x.s.dead = n;
    dead_select all = { .all = true, .max_id = INT64_MAX, .limit = DLQ_CHUNK };
    dead_result res = { 0 };
    char err[256] = "";
    int64_t now = util_wall_ms(), last_id = 0;
    int64_t made = 0;
    for (bool more = true; more; all.after_id = last_id) {   /* a chunk per turn, as the loop runs it */
        cr_assert_eq(dead_replay(&x.b, &all, 1000.0, now, false, &res, &last_id, &more, err, sizeof err), 0, "%s",
                     err);
        cr_assert_eq(store_commit(&x.b.store), 0);
        made += x.s.replay.n;
    }
    cr_assert_eq(res.count, n);
    x.s.replay.n = made;
    cr_assert_leq(x.s.replay.n, DELAYED_WINDOW, "the replay made %lld deliveries", (long long)x.s.replay.n);
    cr_assert_leq(x.s.dmem, DELAYED_WINDOW);
    check_window(&x, "after the replay");

    unsigned char *seen = calloc((size_t)4 * n, 1);
    int64_t last = 0;
    int woken = 0;
    for (int rounds = 0; x.b.ntimers || !x.s.dall; rounds++) {
        cr_assert_lt(rounds, 100);
        woken += wake_all(&x, &last, seen, 4 * n);
        /* they ran: their rows (all those under the cursor) go */
        snprintf(sql, sizeof sql, "DELETE FROM delayed WHERE sub = %lld AND (visible_ms, msg) <= (%lld, %lld)",
                 (long long)x.s.id, (long long)(x.s.dall ? INT64_MAX : x.s.dcursor_ms),
                 (long long)(x.s.dall ? INT64_MAX : x.s.dcursor_msg));
        cr_assert_eq(sqlite3_exec(x.b.store.db, sql, NULL, NULL, NULL), SQLITE_OK);
        queue_refill_delayed(&x.b, &x.s);
        check_window(&x, "reading on");
    }
    cr_assert_eq(woken, n, "%d of %d replayed rows woke", woken, n);
    free(seen);
    sfx_close(&x, NULL, 0);
}

static int64_t count_rows(dispatch_fx *x, const char *sql)
{
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(x->b.store.db, sql, -1, &st, NULL), SQLITE_OK, "%s", sql);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* One delivery that stays (a subscription no worker serves) must not keep
 * every message published after it: the collector sweeps past it and keeps
 * exactly the messages some `queue` or `delayed` row needs. */
Test(broker, message_collection_sweeps_past_a_delivery_that_stays, .timeout = 60)
{
    dispatch_fx x;
    sfx_open(&x, "inproc://sweep-test");
    store_t *s = &x.b.store;
    int64_t stuck = store_sub_id(s, "idle", "f"), busy = store_sub_id(s, "t", "f");
    const int n = GC_SWEEP_SPAN + 3 * GC_BATCH + 77;
    cr_assert_eq(store_begin(s), 0);
    for (int i = 1; i <= n; i++) {
        int64_t id = sfx_message(&x, i, "x", 1);
        if (i == 1) cr_assert_eq(store_stage_queue(s, stuck, id), 0);
        else if (i % 1000 == 0) cr_assert_eq(store_stage_queue(s, busy, id), 0);   /* still queued */
        cr_assert_eq(store_flush(s), 0);
        if (i == n / 2 + 1) cr_assert_eq(store_insert_delayed(s, busy, id, 5, 1), 0);   /* a retry */
    }
    cr_assert_eq(store_commit(s), 0);
    const int64_t needed = 1 + n / 1000 + 1;
    for (int pass = 0; pass < 2000 && count_rows(&x, "SELECT count(*) FROM messages") > needed; pass++) {
        cr_assert_eq(store_gc(s, &x.b), 0);
        cr_assert_eq(store_commit(s), 0);
    }
    cr_assert_eq(count_rows(&x, "SELECT count(*) FROM messages"), needed, "%lld messages kept, %lld needed",
                 (long long)count_rows(&x, "SELECT count(*) FROM messages"), (long long)needed);
    cr_assert_eq(count_rows(&x, "SELECT count(*) FROM queue q LEFT JOIN messages m ON m.id = q.msg"
                                " WHERE m.id IS NULL"), 0, "a queued delivery lost its message");
    cr_assert_eq(count_rows(&x, "SELECT count(*) FROM delayed d LEFT JOIN messages m ON m.id = d.msg"
                                " WHERE m.id IS NULL"), 0, "a delayed delivery lost its message");
    /* the stuck delivery goes: the floor moves up past it */
    cr_assert_eq(sqlite3_exec(s->db, "DELETE FROM queue WHERE msg = 1", NULL, NULL, NULL), SQLITE_OK);
    for (int pass = 0; pass < 100 && count_rows(&x, "SELECT count(*) FROM messages") > needed - 1; pass++) {
        cr_assert_eq(store_gc(s, &x.b), 0);
        cr_assert_eq(store_commit(s), 0);
    }
    cr_assert_eq(count_rows(&x, "SELECT count(*) FROM messages WHERE id = 1"), 0);
    cr_assert_eq(count_rows(&x, "SELECT count(*) FROM messages"), needed - 1);
    sfx_close(&x, NULL, 0);
}

/* A paced replay queued behind another job runs late: its visible times
 * would lie in the past, below a retry that already woke. When the replay
 * fills the window and cuts it there, the woken retry must not end up above
 * the cursor (a refill would read its row again: two copies, run twice). */
Test(broker, paced_replay_that_runs_late_never_cuts_below_a_woken_delivery, .timeout = 60)
{
    dispatch_fx x;
    sfx_open(&x, "inproc://rcut-test");
    x.s.dall = true;
    int64_t now = util_wall_ms();
    int64_t retry = delayed_row(&x, now - 1000);   /* due a second ago */
    x.s.delayed = 1;
    delay_in_memory(&x, retry, now - 1000);
    timers_run(&x.b, now);
    cr_assert_eq(x.s.ready.n, 1, "the retry woke");
    char sql[512];
    snprintf(sql, sizeof sql,   /* three 10 MiB dead letters: the second fills the window */
             "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 3)"
             " INSERT INTO dead(msg, sub, mid, topic, function, attempts, outcome, error, failed_ms, payload)"
             " SELECT i, %lld, 'big-' || i, 't', 'f', 3, 'error', 'boom', 0, zeroblob(10485760) FROM k",
             (long long)x.s.id);
    cr_assert_eq(sqlite3_exec(x.b.store.db, sql, NULL, NULL, NULL), SQLITE_OK);
    x.s.dead = 3;
    dead_select all = { .all = true, .max_id = INT64_MAX, .limit = DLQ_CHUNK };
    dead_result res = { 0 };
    char err[256] = "";
    int64_t last_id = 0;
    bool more = false;
    /* asked for a minute ago, --rate 1 */
    cr_assert_eq(dead_replay(&x.b, &all, 1.0, now - 60000, false, &res, &last_id, &more, err, sizeof err), 0, "%s",
                 err);
    cr_assert_eq(store_commit(&x.b.store), 0);
    cr_assert_eq(res.count, 3);
    check_window(&x, "after the replay");
    /* the replayed ones run and go; the woken retry stays READY */
    for (int round = 0; round < 4; round++) {
        timers_run(&x.b, INT64_MAX);
        list_node *ln = x.s.ready.head.next;
        while (ln != &x.s.ready.head) {
            delivery_t *d = container_of(ln, delivery_t, link);
            ln = ln->next;
            if (d->msg->id == retry) continue;
            snprintf(sql, sizeof sql, "DELETE FROM delayed WHERE msg = %lld", (long long)d->msg->id);
            cr_assert_eq(sqlite3_exec(x.b.store.db, sql, NULL, NULL, NULL), SQLITE_OK);
            window_remove(&x.s, d);
            delivery_free(&x.b, d);
        }
        queue_refill_delayed(&x.b, &x.s);
        check_window(&x, "reading on");
    }
    list_node *ln;
    while ((ln = list_pop_front(&x.s.ready)) != NULL) delivery_free(&x.b, container_of(ln, delivery_t, link));
    sfx_close(&x, NULL, 0);
}

/* Makes the sweep's read of `queue` fail part way (as an I/O error would). */
static int interrupt_sweep(void *arg)
{
    store_t *s = arg;
    return s->sweep_queue && sqlite3_stmt_busy(s->sweep_queue);
}

/* A read that fails while the collector looks for the messages still needed
 * must make it delete nothing, not what it did not get to see. */
Test(broker, message_collection_deletes_nothing_when_its_read_fails, .timeout = 60)
{
    dispatch_fx x;
    sfx_open(&x, "inproc://sweeperr-test");
    store_t *s = &x.b.store;
    int64_t stuck = store_sub_id(s, "idle", "f"), busy = store_sub_id(s, "t", "f");
    const int n = GC_SWEEP_SPAN + 2 * GC_BATCH;
    cr_assert_eq(store_begin(s), 0);
    for (int i = 1; i <= n; i++) {
        int64_t id = sfx_message(&x, i, "x", 1);
        if (i == 1) cr_assert_eq(store_stage_queue(s, stuck, id), 0);
        else if (i % 10 == 0) cr_assert_eq(store_stage_queue(s, busy, id), 0);
        cr_assert_eq(store_flush(s), 0);
    }
    cr_assert_eq(store_commit(s), 0);
    sqlite3_progress_handler(s->db, 1, interrupt_sweep, s);
    for (int pass = 0; pass < 5; pass++) {
        store_gc(s, &x.b);
        store_commit(s);
    }
    sqlite3_progress_handler(s->db, 0, NULL, NULL);
    int64_t lost = count_rows(&x, "SELECT count(*) FROM queue q LEFT JOIN messages m ON m.id = q.msg WHERE m.id IS NULL");
    cr_assert_eq(lost, 0, "%lld queued deliveries lost their message", (long long)lost);
    sfx_close(&x, NULL, 0);
}

/* dlq purge in chunks, as the loop runs it: a selection of exactly two chunks
 * takes a third, empty call to see the end; dead letters that came after the
 * request (ids past max_id) are not part of it; a dry run counts the same
 * and deletes nothing. */
Test(broker, dlq_purge_chunks_cover_the_request_and_nothing_after_it, .timeout = 60)
{
    dispatch_fx x;
    sfx_open(&x, "inproc://chunks-test");
    char sql[512];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < %d)"
             " INSERT INTO dead(id, msg, sub, mid, topic, function, attempts, outcome, error, failed_ms, payload)"
             " SELECT i, i, %lld, 'd-' || i, 't', 'f', 3, 'error', 'boom', 0, 'x' FROM k",
             2 * DLQ_CHUNK + 50, (long long)x.s.id);
    cr_assert_eq(sqlite3_exec(x.b.store.db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(x.b.store.db));
    x.s.dead = 2 * DLQ_CHUNK + 50;
    char err[256] = "";
    for (int dry = 1; dry >= 0; dry--) {
        /* asked for when the largest id was 2 * DLQ_CHUNK; 50 more came since */
        dead_select sel = { .all = true, .max_id = 2 * DLQ_CHUNK, .limit = DLQ_CHUNK };
        dead_result res = { 0 };
        int64_t last = 0;
        int calls = 0;
        for (bool more = true; more; sel.after_id = last, calls++) {
            cr_assert_eq(dead_purge(&x.b, &sel, dry, &res, &last, &more, err, sizeof err), 0, "%s", err);
            cr_assert_eq(store_commit(&x.b.store), 0);
        }
        cr_assert_eq(res.count, 2 * DLQ_CHUNK, "%s: %lld purged", dry ? "dry run" : "purge", (long long)res.count);
        cr_assert_eq(calls, 3, "%d calls for two full chunks", calls);
        cr_assert_eq(count_rows(&x, "SELECT count(*) FROM dead"), dry ? 2 * DLQ_CHUNK + 50 : 50);
    }
    cr_assert_eq(count_rows(&x, "SELECT min(id) FROM dead"), 2 * DLQ_CHUNK + 1, "a later dead letter went");
    cr_assert_eq(x.s.dead, 50);
    sfx_close(&x, NULL, 0);
}
