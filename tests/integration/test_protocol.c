/* test_protocol.c — what a client written from proto/PROTOCOL.md alone relies
 * on, checked through raw ZeroMQ sockets (no libherald) against the real
 * broker: admin arguments are strict and "all" is never implied; a request
 * refused whole comes back with its seq / req; a re-sent throttled publish is
 * tried again while a too-large one stays refused; the broker bounds a lease
 * that a worker never ends; HELLO's role, wrong-endpoint types and the INVOKE
 * check order.
 *
 * The test plays every peer itself: a DEALER per endpoint, frames written
 * with proto/'s encoders or by hand, replies read with proto_decode. Every
 * wait is a poll with a deadline.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "../../proto/proto.h"
#include "harness.h"

#define REPLY_MS 5000

static h_env env;
static void *ctx;
#define MAX_SOCKS 16
static void *socks[MAX_SOCKS];

static void setup(void)
{
    h_setup(&env);
    ctx = zmq_ctx_new();
    cr_assert_not_null(ctx);
}

static void teardown(void)
{
    for (int i = 0; i < MAX_SOCKS; i++)
        if (socks[i]) { zmq_close(socks[i]); socks[i] = NULL; }
    if (ctx) zmq_ctx_term(ctx);
    ctx = NULL;
    h_teardown(&env);
}

TestSuite(protocol, .init = setup, .fini = teardown, .timeout = 90);

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* A broker with topic t → function f (no real worker: the test is one), a
 * 1 s timeout and quick retries. */
static void start_broker(const char *extra_broker)
{
    h_config_broker(&env, "os", extra_broker,
                    "functions = ( { name = \"f\"; native = { library = \"examples/handlers/libnoop.so\";"
                    " symbol = \"noop\"; }; timeout = 1.0; max_attempts = 3;"
                    " backoff = { initial = 0.1; max = 0.1; jitter = \"none\"; }; } );\n"
                    "topics = ( { name = \"t\"; subscriptions = ( { function = \"f\"; } ); } );\n");
    h_broker(&env);
}

/* ---- raw sockets ---------------------------------------------------------- */

static void *dealer(const char *ep, const char *routing_id)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    cr_assert_not_null(s);
    for (int i = 0; i < MAX_SOCKS; i++)
        if (!socks[i]) { socks[i] = s; break; }
    int zero = 0, tmo = REPLY_MS;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
    if (routing_id) zmq_setsockopt(s, ZMQ_ROUTING_ID, routing_id, strlen(routing_id));
    cr_assert_eq(zmq_connect(s, ep), 0, "connect %s: %s", ep, zmq_strerror(zmq_errno()));
    return s;
}

/* Sends a header frame and n payload frames. */
static void send_msg(void *s, const msgpack_sbuffer *hdr, int n, const char *const *payloads, const size_t *lens)
{
    cr_assert(zmq_send(s, hdr->data, hdr->size, n ? ZMQ_SNDMORE : 0) >= 0, "send: %s", zmq_strerror(zmq_errno()));
    for (int i = 0; i < n; i++)
        cr_assert(zmq_send(s, payloads[i], lens ? lens[i] : strlen(payloads[i]), i + 1 < n ? ZMQ_SNDMORE : 0) >= 0);
}

typedef struct {
    bool got;
    int nframes;
    proto_msg m;
    char err[256];
} reply;

/* The next message on s within ms (got false: none), decoded (asserted). */
static reply recv_msg(void *s, int ms)
{
    reply r;
    memset(&r, 0, sizeof r);
    zmq_pollitem_t it = { s, 0, ZMQ_POLLIN, 0 };
    long end = now_ms() + ms;
    for (;;) {
        long left = end - now_ms();
        int rc = zmq_poll(&it, 1, left > 0 ? left : 0);
        if (rc < 0 && zmq_errno() == EINTR) continue;
        break;
    }
    if (!(it.revents & ZMQ_POLLIN)) return r;
    proto_frames f;
    frames_init(&f);
    cr_assert_eq(frames_recv(s, &f, 64, ZMQ_DONTWAIT), 0);
    r.got = true;
    r.nframes = f.n;
    cr_assert_eq(proto_decode(frames_data(&f, 0), frames_size(&f, 0), &r.m, r.err, sizeof r.err), 0,
                 "the broker's reply does not decode: %s", r.err);
    frames_close(&f);
    free(f.parts);
    return r;
}

static reply expect(void *s, msg_type t, const char *what)
{
    reply r = recv_msg(s, REPLY_MS);
    cr_assert(r.got, "%s: no reply within %d ms", what, REPLY_MS);
    cr_assert_eq(r.m.type, t, "%s: got %s (%s), expected %s", what, proto_type_name(r.m.type),
                 r.m.type == MSG_ERROR ? r.m.u.error.text : "", proto_type_name(t));
    return r;
}

static void hello(void *s, const char *id, const char *role)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    proto_hello h = { .client_id = (char *)id, .role = (char *)role };
    cr_assert_eq(proto_encode_hello(&sb, &h), 0);
    send_msg(s, &sb, 0, NULL, NULL);
    msgpack_sbuffer_destroy(&sb);
}

/* One PUBLISH entry on topic t, payload p (len bytes). */
static void publish(void *s, const char *producer, uint64_t seq, const char *p, size_t len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    proto_pub e = { .seq = seq, .topic = "t" };
    proto_publish pm = { .producer = (char *)producer, .pubs = &e, .npubs = 1 };
    cr_assert_eq(proto_encode_publish(&sb, &pm), 0);
    send_msg(s, &sb, 1, &p, &len);
    msgpack_sbuffer_destroy(&sb);
}

/* The one CONFIRM entry for seq: its status, its text into text. */
static uint32_t confirm_of(void *s, uint64_t seq, char *text, size_t n)
{
    reply r = expect(s, MSG_CONFIRM, "publish");
    cr_assert_eq(r.m.u.confirm.n, 1);
    cr_assert_eq(r.m.u.confirm.entries[0].seq, seq, "CONFIRM for seq %llu, expected %llu",
                 (unsigned long long)r.m.u.confirm.entries[0].seq, (unsigned long long)seq);
    uint32_t st = r.m.u.confirm.entries[0].status;
    if (text) snprintf(text, n, "%s", r.m.u.confirm.entries[0].text);
    proto_msg_clear(&r.m);
    return st;
}

/* ADMIN command with args (a packed map, or NULL for {}); the ADMIN_REPLY. */
static uint64_t next_req = 100;
static reply admin(void *s, const char *command, const msgpack_sbuffer *args)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    uint64_t req = ++next_req;
    cr_assert_eq(proto_encode_admin(&sb, req, command, args ? args->data : NULL, args ? args->size : 0), 0);
    send_msg(s, &sb, 0, NULL, NULL);
    msgpack_sbuffer_destroy(&sb);
    reply r = expect(s, MSG_ADMIN_REPLY, command);
    cr_assert_eq(r.m.u.admin_reply.req, req);
    return r;
}

static const msgpack_object *get(const msgpack_object *map, const char *key)
{
    if (map->type != MSGPACK_OBJECT_MAP) return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

/* A counter of stats: functions[f].KEY (fn) or subscriptions[t→f].KEY. */
static long stat(void *adm, bool fn, const char *key)
{
    reply r = admin(adm, "stats", NULL);
    cr_assert_eq(r.m.u.admin_reply.status, 0, "stats: %s", r.m.u.admin_reply.error);
    cr_assert_null(r.m.u.admin_reply.error, "a success reply carries error nil");
    const msgpack_object *arr = get(&r.m.u.admin_reply.result, fn ? "functions" : "subscriptions");
    cr_assert(arr && arr->type == MSGPACK_OBJECT_ARRAY);
    long v = -1;
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        const msgpack_object *n = get(&arr->via.array.ptr[i], fn ? "name" : "function"), *x = get(&arr->via.array.ptr[i], key);
        if (n && n->type == MSGPACK_OBJECT_STR && n->via.str.size == 1 && n->via.str.ptr[0] == 'f' && x)
            v = x->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (long)x->via.u64 : 0;
    }
    proto_msg_clear(&r.m);
    cr_assert_geq(v, 0, "stats has no %s for f", key);
    return v;
}

/* ---- a raw worker ---------------------------------------------------------- */

static void wsend(void *w, msgpack_sbuffer *sb)
{
    send_msg(w, sb, 0, NULL, NULL);
    msgpack_sbuffer_clear(sb);
}

/* REGISTER (1 slot, function f) → CONFIG → REFUSED []: ready for work. */
static void *worker_up(const char *id)
{
    void *w = dealer(env.wrk, id);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char *fns[1] = { "f" };
    proto_register rg = { .worker_id = (char *)id, .host = "test", .pid = 1, .slots = 1, .functions = fns,
                          .nfunctions = 1 };
    cr_assert_eq(proto_encode_register(&sb, &rg), 0);
    wsend(w, &sb);
    reply r = expect(w, MSG_CONFIG, "REGISTER");
    proto_msg_clear(&r.m);
    proto_refused none = { 0 };
    cr_assert_eq(proto_encode_refused(&sb, &none), 0);
    wsend(w, &sb);
    msgpack_sbuffer_destroy(&sb);
    return w;
}

/* Waits for a DELIVER, heartbeating meanwhile (a live worker); skips
 * HEARTBEATs. Returns its lease and attempt; false when none came in ms. */
static bool next_delivery(void *w, int ms, uint64_t *lease, uint32_t *attempt)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    long end = now_ms() + ms;
    bool got = false;
    while (!got && now_ms() < end) {
        cr_assert_eq(proto_encode_heartbeat(&sb), 0);
        wsend(w, &sb);
        reply r = recv_msg(w, 100);
        if (!r.got) continue;
        if (r.m.type == MSG_DELIVER) {
            *lease = r.m.u.deliver.ds[0].lease;
            *attempt = r.m.u.deliver.ds[0].attempt;
            got = true;
        }
        proto_msg_clear(&r.m);
    }
    msgpack_sbuffer_destroy(&sb);
    return got;
}

static void result(void *w, uint64_t lease, proto_outcome o)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    proto_result_entry e = { .lease = lease, .outcome = o, .started_ms = 1, .duration_us = 10,
                             .error = o == OUT_OK ? NULL : "no" };
    proto_result rs = { .rs = &e, .n = 1 };
    cr_assert_eq(proto_encode_result(&sb, &rs), 0);
    const char *out = "";
    size_t zero = 0;
    send_msg(w, &sb, 1, &out, &zero);
    msgpack_sbuffer_destroy(&sb);
}

/* Heartbeats w until stat(adm, fn, key) == want, or asserts after ms. */
static void wait_stat(void *adm, void *w, bool fn, const char *key, long want, int ms)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    long end = now_ms() + ms, v = -1;
    while ((v = stat(adm, fn, key)) != want && now_ms() < end) {
        if (w) {
            cr_assert_eq(proto_encode_heartbeat(&sb), 0);
            wsend(w, &sb);
            reply r = recv_msg(w, 100);   /* HEARTBEATs, or nothing */
            if (r.got) {
                cr_assert_neq(r.m.type, MSG_DELIVER, "a DELIVER while waiting for %s = %ld", key, want);
                proto_msg_clear(&r.m);
            }
        } else {
            zmq_poll(NULL, 0, 50);
        }
    }
    msgpack_sbuffer_destroy(&sb);
    cr_assert_eq(v, want, "%s of f is %ld, expected %ld", key, v, want);
}

/* ---- 1. admin arguments ------------------------------------------------------ */

static void args_map(msgpack_sbuffer *sb, int n, ...)
{
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (size_t)n);
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        const char *k = va_arg(ap, const char *), *kind = va_arg(ap, const char *);
        msgpack_pack_str_with_body(&pk, k, strlen(k));
        if (strcmp(kind, "true") == 0) msgpack_pack_true(&pk);
        else if (strcmp(kind, "emptyids") == 0) msgpack_pack_array(&pk, 0);
        else if (strcmp(kind, "int") == 0) msgpack_pack_int(&pk, 5);
        else msgpack_pack_str_with_body(&pk, kind, strlen(kind));
    }
    va_end(ap);
}

static void expect_refused(void *adm, const char *command, const msgpack_sbuffer *args, const char *names)
{
    reply r = admin(adm, command, args);
    cr_assert_eq(r.m.u.admin_reply.status, PROTO_E_MALFORMED, "%s: status %u, expected 1 (malformed)", command,
                 r.m.u.admin_reply.status);
    cr_assert(r.m.u.admin_reply.error && strstr(r.m.u.admin_reply.error, names), "%s: error \"%s\" does not name %s",
              command, r.m.u.admin_reply.error ? r.m.u.admin_reply.error : "(nil)", names);
    proto_msg_clear(&r.m);
}

Test(protocol, dlq_replay_or_purge_without_ids_or_all_is_refused_and_unknown_or_mistyped_arguments_are_named)
{
    start_broker(NULL);
    /* one dead letter: delivered to our worker, rejected */
    void *pub = dealer(env.pub, NULL), *adm = dealer(env.adm, NULL), *w = worker_up("w_dlq");
    publish(pub, "p_dlq", 1, "x", 1);
    cr_assert_eq(confirm_of(pub, 1, NULL, 0), 0);
    uint64_t lease;
    uint32_t attempt;
    cr_assert(next_delivery(w, REPLY_MS, &lease, &attempt));
    result(w, lease, OUT_REJECTED);
    wait_stat(adm, NULL, false, "dead", 1, REPLY_MS);

    msgpack_sbuffer a;
    msgpack_sbuffer_init(&a);
    expect_refused(adm, "dlq.replay", NULL, "all: true");
    expect_refused(adm, "dlq.purge", NULL, "all: true");
    args_map(&a, 1, "ids", "emptyids");
    expect_refused(adm, "dlq.purge", &a, "all: true");
    args_map(&a, 2, "all", "true", "dryrun", "true");    /* a misspelt dry_run */
    expect_refused(adm, "dlq.purge", &a, "'dryrun'");
    args_map(&a, 1, "all", "yes");
    expect_refused(adm, "dlq.purge", &a, "'all'");
    args_map(&a, 2, "all", "true", "older_than", "1h");
    expect_refused(adm, "dlq.purge", &a, "'older_than'");
    args_map(&a, 2, "all", "true", "older_than", "int");   /* a purge option, not a replay one */
    expect_refused(adm, "dlq.replay", &a, "'older_than'");
    args_map(&a, 1, "limit", "5");
    expect_refused(adm, "dlq.list", &a, "'limit'");
    args_map(&a, 1, "verbose", "true");
    expect_refused(adm, "stats", &a, "'verbose'");
    expect_refused(adm, "schedules", &a, "'verbose'");
    wait_stat(adm, NULL, false, "dead", 1, 0);   /* nothing of that touched it */

    args_map(&a, 2, "all", "true", "dry_run", "true");   /* spelt right: counts, changes nothing */
    reply r = admin(adm, "dlq.purge", &a);
    cr_assert_eq(r.m.u.admin_reply.status, 0, "%s", r.m.u.admin_reply.error);
    const msgpack_object *count = get(&r.m.u.admin_reply.result, "count");
    cr_assert(count && count->via.u64 == 1);
    proto_msg_clear(&r.m);
    wait_stat(adm, NULL, false, "dead", 1, 0);
    args_map(&a, 1, "all", "true");
    r = admin(adm, "dlq.purge", &a);
    cr_assert_eq(r.m.u.admin_reply.status, 0, "%s", r.m.u.admin_reply.error);
    proto_msg_clear(&r.m);
    wait_stat(adm, NULL, false, "dead", 0, REPLY_MS);
    msgpack_sbuffer_destroy(&a);
}

/* ---- 2. refusals carry their correlation ------------------------------------- */

Test(protocol, a_request_refused_whole_is_answered_with_its_seq_or_req_in_its_own_reply_type)
{
    start_broker(NULL);
    void *pub = dealer(env.pub, NULL), *adm = dealer(env.adm, NULL);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);

    /* a good publish, then at once a malformed one (bad topic name): the
     * refusal names seq 8 and does not overtake seq 7's confirm */
    publish(pub, "p_ref", 7, "ok", 2);
    proto_pub bad = { .seq = 8, .topic = "not a name!" };
    proto_publish pm = { .producer = "p_ref", .pubs = &bad, .npubs = 1 };
    cr_assert_eq(proto_encode_publish(&sb, &pm), 0);
    const char *p1 = "x";
    send_msg(pub, &sb, 1, &p1, NULL);
    char text[256];
    cr_assert_eq(confirm_of(pub, 7, NULL, 0), 0);
    cr_assert_eq(confirm_of(pub, 8, text, sizeof text), PROTO_E_MALFORMED);
    cr_assert(strstr(text, "topic"), "the refusal says why: %s", text);

    /* two entries, one payload frame: both seqs refused */
    msgpack_sbuffer_clear(&sb);
    proto_pub two[2] = { { .seq = 9, .topic = "t" }, { .seq = 10, .topic = "t" } };
    pm = (proto_publish){ .producer = "p_ref", .pubs = two, .npubs = 2 };
    cr_assert_eq(proto_encode_publish(&sb, &pm), 0);
    send_msg(pub, &sb, 1, &p1, NULL);
    reply r = expect(pub, MSG_CONFIRM, "PUBLISH with a frame missing");
    cr_assert_eq(r.m.u.confirm.n, 2);
    cr_assert(r.m.u.confirm.entries[0].seq == 9 && r.m.u.confirm.entries[1].seq == 10);
    cr_assert(r.m.u.confirm.entries[0].status == PROTO_E_MALFORMED && r.m.u.confirm.entries[1].status == PROTO_E_MALFORMED);
    proto_msg_clear(&r.m);

    /* INVOKE without its payload frame, on both endpoints that take it */
    void *eps[2] = { pub, adm };
    for (int i = 0; i < 2; i++) {
        msgpack_sbuffer_clear(&sb);
        proto_invoke in = { .req = 42 + (uint64_t)i, .function = "f" };
        cr_assert_eq(proto_encode_invoke(&sb, &in), 0);
        send_msg(eps[i], &sb, 0, NULL, NULL);
        r = expect(eps[i], MSG_INVOKE_REPLY, "INVOKE without its payload frame");
        cr_assert_eq(r.m.u.invoke_reply.req, 42 + (uint64_t)i);
        cr_assert_eq(r.m.u.invoke_reply.status, PROTO_E_MALFORMED);
        cr_assert_eq(r.nframes, 2);
        proto_msg_clear(&r.m);
    }

    /* ADMIN whose args are not a map */
    msgpack_sbuffer_clear(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_str_with_body(&pk, "ADMIN", 5);
    msgpack_pack_uint64(&pk, 77);
    msgpack_pack_str_with_body(&pk, "stats", 5);
    msgpack_pack_array(&pk, 0);
    send_msg(adm, &sb, 0, NULL, NULL);
    r = expect(adm, MSG_ADMIN_REPLY, "ADMIN with args []");
    cr_assert_eq(r.m.u.admin_reply.req, 77);
    cr_assert_eq(r.m.u.admin_reply.status, PROTO_E_MALFORMED);
    proto_msg_clear(&r.m);

    /* without a readable correlation it is still ERROR */
    send_msg(adm, &(msgpack_sbuffer){ .data = "\x93\x01\xa5" "ADMIN" "\xc0", .size = 8 }, 0, NULL, NULL);
    r = expect(adm, MSG_ERROR, "ADMIN with req nil");
    cr_assert_eq(r.m.u.error.status, PROTO_E_MALFORMED);
    proto_msg_clear(&r.m);
    msgpack_sbuffer_destroy(&sb);
}

/* ---- 3. re-sent refused publishes --------------------------------------------- */

Test(protocol, a_resent_throttled_seq_is_stored_once_the_backlog_drained_while_a_too_large_one_stays_refused)
{
    start_broker("max_backlog = 1; max_payload = 1024;");
    void *pub = dealer(env.pub, NULL), *adm = dealer(env.adm, NULL);
    char text[256], big[2000];
    memset(big, 'x', sizeof big);
    publish(pub, "p_thr", 1, "one", 3);
    cr_assert_eq(confirm_of(pub, 1, text, sizeof text), 0, "%s", text);
    publish(pub, "p_thr", 2, "two", 3);
    cr_assert_eq(confirm_of(pub, 2, text, sizeof text), PROTO_E_THROTTLED, "seq 2: %s", text);
    publish(pub, "p_thr", 3, big, sizeof big);
    cr_assert_eq(confirm_of(pub, 3, text, sizeof text), PROTO_E_TOO_LARGE, "seq 3: %s", text);

    /* the backlog drains: our worker takes seq 1 and succeeds */
    void *w = worker_up("w_thr");
    uint64_t lease;
    uint32_t attempt;
    cr_assert(next_delivery(w, REPLY_MS, &lease, &attempt));
    result(w, lease, OUT_OK);
    wait_stat(adm, w, false, "succeeded", 1, REPLY_MS);

    /* the same seq 2 again: stored now, with its own id; a re-send of it
     * after that is "already stored" with the same id */
    publish(pub, "p_thr", 2, "two", 3);
    cr_assert_eq(confirm_of(pub, 2, text, sizeof text), 0, "re-sent throttled seq 2: %s", text);
    cr_assert_str_eq(text, "p_thr-2");
    cr_assert(next_delivery(w, REPLY_MS, &lease, &attempt), "seq 2 is stored and delivered");
    publish(pub, "p_thr", 2, "two", 3);
    cr_assert_eq(confirm_of(pub, 2, text, sizeof text), 0);
    cr_assert_str_eq(text, "p_thr-2");
    /* too large cannot change: still refused */
    publish(pub, "p_thr", 3, big, sizeof big);
    cr_assert_eq(confirm_of(pub, 3, text, sizeof text), PROTO_E_TOO_LARGE, "re-sent seq 3: %s", text);
    result(w, lease, OUT_OK);
    wait_stat(adm, w, false, "succeeded", 2, REPLY_MS);
}

/* ---- 4. the broker bounds a lease ---------------------------------------------- */

Test(protocol, a_worker_that_heartbeats_but_never_answers_loses_the_lease_as_timeout_and_its_late_result_is_ignored)
{
    start_broker(NULL);
    void *pub = dealer(env.pub, NULL), *adm = dealer(env.adm, NULL), *w = worker_up("w_stuck");
    publish(pub, "p_stuck", 1, "x", 1);
    cr_assert_eq(confirm_of(pub, 1, NULL, 0), 0);
    uint64_t l1, l2;
    uint32_t a1, a2;
    cr_assert(next_delivery(w, REPLY_MS, &l1, &a1));
    cr_assert_eq(a1, 1);
    /* timeout 1 s + 1 s kill grace + 5 s margin + 3 heartbeats of 0.5 s */
    wait_stat(adm, w, true, "timeouts", 1, 20000);
    cr_assert_eq(stat(adm, false, "inflight"), 0);
    /* the late result is ignored (no success), and frees the worker's slot:
     * the retry comes to it as attempt 2 under a new lease */
    result(w, l1, OUT_OK);
    cr_assert(next_delivery(w, REPLY_MS, &l2, &a2), "the retry after the backstop");
    cr_assert_eq(a2, 2);
    cr_assert_neq(l2, l1);
    cr_assert_eq(stat(adm, false, "succeeded"), 0, "a result for an ended lease counted");
    result(w, l2, OUT_OK);
    wait_stat(adm, w, false, "succeeded", 1, REPLY_MS);
}

/* ---- 5. HELLO, wrong endpoints, INVOKE's order ---------------------------------- */

Test(protocol, hello_role_must_be_the_endpoints_and_a_type_an_endpoint_does_not_take_is_error_malformed)
{
    start_broker(NULL);
    void *pub = dealer(env.pub, NULL), *wrk = dealer(env.wrk, NULL), *adm = dealer(env.adm, NULL);
    hello(pub, "c1", "worker");
    reply r = expect(pub, MSG_ERROR, "HELLO worker on the publish endpoint");
    cr_assert_eq(r.m.u.error.status, PROTO_E_MALFORMED);
    cr_assert(strstr(r.m.u.error.text, "role"), "%s", r.m.u.error.text);
    proto_msg_clear(&r.m);
    hello(adm, "c1", "worker");
    r = expect(adm, MSG_ERROR, "HELLO worker on the admin endpoint");
    proto_msg_clear(&r.m);
    hello(pub, "c1", "publisher");
    r = expect(pub, MSG_WELCOME, "HELLO publisher on the publish endpoint");
    proto_msg_clear(&r.m);
    hello(adm, "c1", "publisher");   /* libherald's async invokes */
    r = expect(adm, MSG_WELCOME, "HELLO publisher on the admin endpoint");
    proto_msg_clear(&r.m);
    hello(wrk, "w1", "worker");
    r = expect(wrk, MSG_WELCOME, "HELLO worker on the worker endpoint");
    proto_msg_clear(&r.m);

    /* a PUBLISH on the worker endpoint from a peer that never registered:
     * malformed there, not "not registered" */
    publish(wrk, "p_w", 1, "x", 1);
    r = expect(wrk, MSG_ERROR, "PUBLISH on the worker endpoint");
    cr_assert_eq(r.m.u.error.status, PROTO_E_MALFORMED, "status %u: %s", r.m.u.error.status, r.m.u.error.text);
    proto_msg_clear(&r.m);

    /* INVOKE: too large before "no worker" (none is connected) */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    proto_invoke in = { .req = 5, .function = "f" };
    cr_assert_eq(proto_encode_invoke(&sb, &in), 0);
    size_t len = 300 * 1024;   /* above the default max_payload, 256 KiB */
    char *big = calloc(1, len);
    const char *p = big;
    send_msg(pub, &sb, 1, &p, &len);
    free(big);
    r = expect(pub, MSG_INVOKE_REPLY, "an oversized INVOKE with no worker");
    cr_assert_eq(r.m.u.invoke_reply.status, PROTO_E_TOO_LARGE, "status %u: %s", r.m.u.invoke_reply.status,
                 r.m.u.invoke_reply.error);
    proto_msg_clear(&r.m);
    msgpack_sbuffer_destroy(&sb);
}
