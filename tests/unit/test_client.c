/* Unit tests of libherald (the publisher/ sources) against a fake broker.
 *
 * The fake broker is a ROUTER on an ipc:// endpoint in the test's temp dir,
 * run in a thread with the real proto codec. It answers HELLO with WELCOME
 * (optionally late or never), confirms each PUBLISH with "id-<seq>" (or
 * THROTTLED / ERROR for chosen ones, or holds confirms back), and records
 * what it saw; the test thread asserts on that record under its mutex.
 */
#include "herald.h"
#include "../../proto/proto.h"
#include "../../publisher/client.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FB_MAX_HELD 65536

typedef struct {
    /* set before fb_start */
    char endpoint[256];
    uint64_t max_payload;
    uint32_t max_batch;
    int welcome_delay_ms;           /* -1: never answer HELLO */
    bool withhold;                  /* hold confirms back... */
    int release_ms;                 /* ...and release them all once no PUBLISH came for release_ms (-1: never)... */
    uint32_t release_at;            /* ...and at least this many are held (a full window: the client
                                       can send no more; 0: any), or... */
    volatile uint64_t release_total;   /* ...at once when this many entries have come in all (0: never) */
    uint64_t throttle_seq;          /* answer THROTTLED for this seq (0: none) */
    bool error_publish;             /* answer every PUBLISH with ERROR */
    /* observed (under mu) */
    pthread_mutex_t mu;
    int hellos;
    char hello_id[64], hello_role[32];
    bool publish_before_hello;
    bool producer_mismatch;
    bool frames_mismatch;
    int publishes;                  /* PUBLISH messages */
    uint64_t entries;               /* PUBLISH entries */
    uint64_t last_seq;
    bool seq_order_broken;          /* an entry's seq was not last_seq + 1 */
    uint32_t max_entries;           /* most entries in one PUBLISH */
    uint64_t confirmed;             /* entries answered */
    uint64_t max_unconfirmed;       /* most entries received but unanswered at once */
    char first_topic[160], first_function[160];
    size_t first_len;
    /* thread */
    volatile bool stop;
    volatile bool ready;
    bool bind_failed;
    void *ctx;
    pthread_t th;
} fake_broker;

static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/herald-test-client-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
    char p[128];
    snprintf(p, sizeof p, "%s/pub.sock", tmpdir);
    unlink(p);
    rmdir(tmpdir);
}

static void fb_send(void *r, const void *rid, size_t rid_len, msgpack_sbuffer *sb)
{
    frames_send(r, rid, rid_len, sb, NULL, 0, 0);
    sb->size = 0;
}

static void fb_confirm(fake_broker *fb, void *r, const void *rid, size_t rid_len, const uint64_t *seqs,
                       uint32_t n)
{
    if (n == 0) return;
    proto_confirm_entry *es = calloc(n, sizeof *es);
    char (*ids)[32] = calloc(n, sizeof *ids);
    for (uint32_t i = 0; i < n; i++) {
        es[i].seq = seqs[i];
        if (seqs[i] == fb->throttle_seq) {
            es[i].status = PROTO_E_THROTTLED;
            es[i].text = "backlog above max_backlog";
        } else {
            snprintf(ids[i], sizeof ids[i], "id-%llu", (unsigned long long)seqs[i]);
            es[i].text = ids[i];
        }
    }
    proto_confirm c = { .entries = es, .n = n };
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    proto_encode_confirm(&sb, &c);
    fb_send(r, rid, rid_len, &sb);
    msgpack_sbuffer_destroy(&sb);
    pthread_mutex_lock(&fb->mu);
    fb->confirmed += n;
    pthread_mutex_unlock(&fb->mu);
    free(es);
    free(ids);
}

static void *fb_main(void *arg)
{
    fake_broker *fb = arg;
    void *r = zmq_socket(fb->ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(r, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(r, fb->endpoint) < 0) fb->bind_failed = true;
    fb->ready = true;
    proto_frames f;
    frames_init(&f);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char rid[256];
    size_t rid_len = 0;
    int64_t welcome_at = -1, next_release = util_mono_ms() + fb->release_ms;
    uint64_t *held = calloc(FB_MAX_HELD, sizeof *held);
    uint32_t nheld = 0;
    while (!fb->stop) {
        zmq_pollitem_t it = { r, 0, ZMQ_POLLIN, 0 };
        zmq_poll(&it, 1, 5);
        int64_t now = util_mono_ms();
        if (welcome_at >= 0 && now >= welcome_at) {
            proto_welcome w = { .max_payload = fb->max_payload, .max_batch = fb->max_batch, .heartbeat_ms = 1000 };
            proto_encode_welcome(&sb, &w);
            fb_send(r, rid, rid_len, &sb);
            welcome_at = -1;
        }
        /* held back until the window is full (or the last entry is in): a slow
         * client under load never sees a release before it has filled it */
        uint64_t total = fb->release_total;
        if (fb->withhold && fb->release_ms > 0 && nheld > 0 &&
            ((nheld >= fb->release_at && now >= next_release) || (total && fb->entries >= total))) {
            fb_confirm(fb, r, rid, rid_len, held, nheld);
            nheld = 0;
        }
        while (frames_recv(r, &f, PROTO_MAX_FRAMES + 1, ZMQ_DONTWAIT) == 0) {
            proto_msg m;
            char err[256];
            if (f.n < 2 || proto_decode(frames_data(&f, 1), frames_size(&f, 1), &m, err, sizeof err) < 0)
                continue;
            rid_len = frames_size(&f, 0) < sizeof rid ? frames_size(&f, 0) : sizeof rid;
            memcpy(rid, frames_data(&f, 0), rid_len);
            pthread_mutex_lock(&fb->mu);
            if (m.type == MSG_HELLO) {
                fb->hellos++;
                snprintf(fb->hello_id, sizeof fb->hello_id, "%s", m.u.hello.client_id);
                snprintf(fb->hello_role, sizeof fb->hello_role, "%s", m.u.hello.role);
                if (fb->welcome_delay_ms >= 0) welcome_at = now + fb->welcome_delay_ms;
            } else if (m.type == MSG_PUBLISH) {
                const proto_publish *p = &m.u.publish;
                if (fb->hellos == 0) fb->publish_before_hello = true;
                if (strcmp(p->producer, fb->hello_id) != 0) fb->producer_mismatch = true;
                if ((uint32_t)f.n != p->npubs + 2) fb->frames_mismatch = true;
                fb->publishes++;
                if (p->npubs > fb->max_entries) fb->max_entries = p->npubs;
                for (uint32_t i = 0; i < p->npubs; i++) {
                    if (fb->entries == 0) {
                        snprintf(fb->first_topic, sizeof fb->first_topic, "%s", p->pubs[i].topic);
                        snprintf(fb->first_function, sizeof fb->first_function, "%s",
                                 p->pubs[i].function ? p->pubs[i].function : "(null)");
                        fb->first_len = frames_size(&f, 2 + (int)i);
                    }
                    if (p->pubs[i].seq != fb->last_seq + 1) fb->seq_order_broken = true;
                    fb->last_seq = p->pubs[i].seq;
                    fb->entries++;
                }
                uint64_t out = fb->entries - fb->confirmed;
                if (out > fb->max_unconfirmed) fb->max_unconfirmed = out;
            }
            pthread_mutex_unlock(&fb->mu);
            if (m.type == MSG_INVOKE && f.n == 3) {
                /* "resize" answers "out:" + payload; anything else fails like a handler */
                bool ok = strcmp(m.u.invoke.function, "resize") == 0;
                char out[256];
                size_t in_len = frames_size(&f, 2) < 200 ? frames_size(&f, 2) : 200;
                memcpy(out, "out:", 4);
                memcpy(out + 4, frames_data(&f, 2), in_len);   /* binary: no printf */
                int n = (int)(4 + in_len);
                proto_invoke_reply ir = { .req = m.u.invoke.req, .status = ok ? PROTO_OK : PROTO_E_HANDLER,
                                          .error = ok ? NULL : "exit status 3", .message_id = "i1-1" };
                proto_iov iov = { out, ok ? (size_t)n : 0 };
                proto_encode_invoke_reply(&sb, &ir);
                frames_send(r, rid, rid_len, &sb, &iov, 1, 0);
                sb.size = 0;
            }
            if (m.type == MSG_PUBLISH) {
                const proto_publish *p = &m.u.publish;
                if (fb->error_publish) {
                    proto_encode_error(&sb, PROTO_E_MALFORMED, "bad batch");
                    fb_send(r, rid, rid_len, &sb);
                    pthread_mutex_lock(&fb->mu);
                    fb->confirmed += p->npubs;
                    pthread_mutex_unlock(&fb->mu);
                } else if (fb->withhold) {
                    for (uint32_t i = 0; i < p->npubs && nheld < FB_MAX_HELD; i++) held[nheld++] = p->pubs[i].seq;
                    next_release = now + fb->release_ms;
                } else {
                    uint64_t seqs[PROTO_MAX_BATCH];
                    for (uint32_t i = 0; i < p->npubs; i++) seqs[i] = p->pubs[i].seq;
                    fb_confirm(fb, r, rid, rid_len, seqs, p->npubs);
                }
            }
            proto_msg_clear(&m);
        }
    }
    free(held);
    frames_close(&f);
    free(f.parts);
    msgpack_sbuffer_destroy(&sb);
    zmq_close(r);
    return NULL;
}

/* Defaults: welcome at once, 256 KiB payloads, batches of 100, confirm at once. */
static void fb_init(fake_broker *fb, void *ctx)
{
    memset(fb, 0, sizeof *fb);
    snprintf(fb->endpoint, sizeof fb->endpoint, "ipc://%s/pub.sock", tmpdir);
    fb->max_payload = 256 * 1024;
    fb->max_batch = 100;
    fb->release_ms = -1;
    fb->ctx = ctx;
    pthread_mutex_init(&fb->mu, NULL);
}

static void fb_start(fake_broker *fb)
{
    cr_assert_eq(pthread_create(&fb->th, NULL, fb_main, fb), 0);
    while (!fb->ready) usleep(1000);
    cr_assert(!fb->bind_failed, "fake broker cannot bind %s", fb->endpoint);
}

static void fb_stop(fake_broker *fb)
{
    fb->stop = true;
    pthread_join(fb->th, NULL);
}

static herald_client *connect_to(const char *endpoint, int timeout_ms, int window)
{
    herald_options o = { .endpoint = endpoint, .timeout_ms = timeout_ms, .window = window };
    herald_client *c = herald_connect(&o);
    cr_assert_not_null(c, "herald_connect: %s", herald_last_error(NULL));
    return c;
}

/* Callback record: arg is the publish's index. */
typedef struct {
    int n;
    int out_of_order;
    int status[20000];
    char id[20000][HERALD_ID_MAX];
} confirms;

static confirms *rec;

static void record(void *arg, int status, const char *id)
{
    int i = (int)(intptr_t)arg;
    if (i != rec->n) rec->out_of_order++;
    if (i >= 0 && i < 20000) {
        rec->status[i] = status;
        snprintf(rec->id[i], HERALD_ID_MAX, "%s", id ? id : "(null)");
    }
    rec->n++;
}

static void *ctx;

static void setup(void)
{
    make_tmpdir();
    ctx = zmq_ctx_new();
    rec = calloc(1, sizeof *rec);
}

static void teardown(void)
{
    free(rec);
    zmq_ctx_term(ctx);
    remove_tmpdir();
}

TestSuite(client, .init = setup, .fini = teardown, .timeout = 30);

Test(client, hello_then_welcome_awaited)
{
    fake_broker fb;
    fb_init(&fb, ctx);
    fb.welcome_delay_ms = 300;
    fb_start(&fb);
    herald_client *c = connect_to(fb.endpoint, 5000, 0);
    int64_t t0 = util_mono_ms();
    char id[HERALD_ID_MAX];
    int rc = herald_publish(c, "orders", "x", 1, NULL, id);
    int64_t took = util_mono_ms() - t0;
    cr_assert_eq(rc, 0, "publish: %s (%s)", herald_strerror(rc), herald_last_error(c));
    cr_assert_str_eq(id, "id-1");
    cr_assert_geq(took, 250, "publish did not wait for WELCOME (%lld ms)", (long long)took);
    herald_close(&c);
    cr_assert_null(c);
    fb_stop(&fb);
    cr_assert_eq(fb.hellos, 1);
    cr_assert_str_eq(fb.hello_role, "publisher");
    cr_assert_eq(strlen(fb.hello_id), 20);
    cr_assert_eq(strspn(fb.hello_id, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"), 20);
    cr_assert(!fb.publish_before_hello);
    cr_assert(!fb.producer_mismatch);
    cr_assert_str_eq(fb.first_topic, "orders");
    cr_assert_eq(fb.first_len, 1);
}

Test(client, no_welcome_is_unreachable)
{
    fake_broker fb;
    fb_init(&fb, ctx);
    fb.welcome_delay_ms = -1;
    fb_start(&fb);
    herald_client *c = connect_to(fb.endpoint, 400, 0);
    int rc = herald_publish(c, "orders", "x", 1, NULL, NULL);
    cr_assert_eq(rc, HERALD_E_UNREACHABLE, "got %s", herald_strerror(rc));
    cr_assert(strstr(herald_last_error(c), "unreachable: no answer within 0.4 s"), "%s", herald_last_error(c));
    herald_close(&c);
    fb_stop(&fb);
    cr_assert_eq(fb.hellos, 1, "HELLO was not sent");
    cr_assert_eq(fb.publishes, 0);
}

Test(client, ten_thousand_async_in_batches)
{
    int n = getenv("HC_TEST_PUBLISHES") ? atoi(getenv("HC_TEST_PUBLISHES")) : 10000;
    fake_broker fb;
    fb_init(&fb, ctx);
    fb_start(&fb);
    herald_client *c = connect_to(fb.endpoint, 10000, 0);
    char payload[256];
    memset(payload, 'p', sizeof payload);
    herald_attr a[] = { { "kind", "test" } };
    herald_publish_opts po = { .attrs = a, .nattrs = 1 };
    /* The first publish waits for WELCOME: keep that out of the rate. */
    cr_assert_eq(herald_publish_async(c, "bench", payload, sizeof payload, &po, record, (void *)(intptr_t)0), 0);
    int64_t t0 = util_mono_us();
    for (int i = 1; i < n; i++) {
        int rc = herald_publish_async(c, "bench", payload, sizeof payload, &po, record, (void *)(intptr_t)i);
        cr_assert_eq(rc, 0, "publish_async %d: %s (%s)", i, herald_strerror(rc), herald_last_error(c));
    }
    int rc = herald_flush(c, 10000);
    int64_t us = util_mono_us() - t0;
    cr_assert_eq(rc, 0, "flush: %s (%s)", herald_strerror(rc), herald_last_error(c));
    cr_log_info("%d publishes pipelined in %.1f ms: %.0f/s", n - 1, us / 1000.0, (n - 1) / (us / 1e6));
    if (getenv("HC_TEST_PUBLISHES"))
        fprintf(stderr, "rate: %d publishes in %.1f ms: %.0f/s\n", n - 1, us / 1000.0, (n - 1) / (us / 1e6));
    cr_assert_eq(rec->n, n);
    cr_assert_eq(rec->out_of_order, 0);
    for (int i = 0; i < n && i < 20000; i++) {
        char want[32];
        snprintf(want, sizeof want, "id-%d", i + 1);
        cr_assert_eq(rec->status[i], 0);
        cr_assert_str_eq(rec->id[i], want);
    }
    herald_close(&c);
    fb_stop(&fb);
    cr_assert_eq(fb.entries, (uint64_t)n);
    cr_assert(!fb.seq_order_broken, "seqs not increasing by one");
    cr_assert(!fb.frames_mismatch, "payload frames do not match entries");
    cr_assert(!fb.producer_mismatch);
    cr_assert_leq(fb.max_entries, 100, "batch above max_batch: %u", fb.max_entries);
    cr_assert_lt(fb.publishes, n / 2, "not batched: %d messages for %d publishes", fb.publishes, n);
    cr_assert_eq(fb.hellos, 1);
}

Test(client, throttled_entry_maps_to_throttled)
{
    fake_broker fb;
    fb_init(&fb, ctx);
    fb.throttle_seq = 2;
    fb_start(&fb);
    herald_client *c = connect_to(fb.endpoint, 5000, 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(herald_publish_async(c, "t", "abc", 3, NULL, record, (void *)(intptr_t)i), 0);
    cr_assert_eq(herald_flush(c, 5000), 0);
    cr_assert_eq(rec->n, 3);
    cr_assert_eq(rec->status[0], 0);
    cr_assert_eq(rec->status[1], HERALD_E_THROTTLED);
    cr_assert_eq(rec->status[2], 0);
    cr_assert_str_eq(rec->id[2], "id-3");
    cr_assert_str_eq(herald_last_error(c), "backlog above max_backlog");
    herald_close(&c);
    fb_stop(&fb);
}

Test(client, error_reply_refuses_the_batch)
{
    fake_broker fb;
    fb_init(&fb, ctx);
    fb.error_publish = true;
    fb_start(&fb);
    herald_client *c = connect_to(fb.endpoint, 5000, 0);
    int rc = herald_publish(c, "t", "abc", 3, NULL, NULL);
    cr_assert_eq(rc, HERALD_E_REFUSED, "got %s", herald_strerror(rc));
    cr_assert_str_eq(herald_last_error(c), "bad batch");
    herald_close(&c);
    fb_stop(&fb);
}

Test(client, oversized_payload_refused_locally)
{
    fake_broker fb;
    fb_init(&fb, ctx);
    fb.max_payload = 1000;
    fb_start(&fb);
    herald_client *c = connect_to(fb.endpoint, 5000, 0);
    static char big[1001];
    int rc = herald_publish_async(c, "t", big, 1001, NULL, record, (void *)(intptr_t)0);
    cr_assert_eq(rc, HERALD_E_TOO_LARGE, "got %s", herald_strerror(rc));
    cr_assert_str_eq(herald_last_error(c), "payload of 1001 bytes is larger than the broker's max_payload (1000 bytes)");
    char id[HERALD_ID_MAX];
    cr_assert_eq(herald_publish(c, "t", big, 1000, NULL, id), 0);
    cr_assert_str_eq(id, "id-1", "the refused publish used a sequence: %s", id);
    herald_close(&c);
    fb_stop(&fb);
    cr_assert_eq(rec->n, 0, "a callback ran for the refused publish");
    cr_assert_eq(fb.entries, 1, "the oversized payload was sent");
    cr_assert_eq(fb.first_len, 1000);
}

Test(client, invalid_arguments_refused_locally)
{
    fake_broker fb;
    fb_init(&fb, ctx);
    fb_start(&fb);
    herald_client *c = connect_to(fb.endpoint, 5000, 0);
    struct { const char *topic; herald_publish_opts o; const char *why; } bad[] = {
        { "no spaces", { 0 }, "invalid topic name" },
        { "", { 0 }, "invalid topic name" },
        { "t", { .attrs = (herald_attr[]){ { "", "v" } }, .nattrs = 1 }, "empty key" },
        { "t", { .attrs = (herald_attr[]){ { "k", "1" }, { "k", "2" } }, .nattrs = 2 }, "given twice" },
        { "t", { .attrs = (herald_attr[]){ { "k", NULL } }, .nattrs = 1 }, "no value" },
        { "t", { .attrs = (herald_attr[17]){ { "a", "" } }, .nattrs = 17 }, "at most 16" },
        { "t", { .delay = 901 }, "outside 0-900" },
        { "t", { .delay = -1 }, "outside 0-900" },
        { "t", { .dedup_id = "has space" }, "invalid dedup id" },
        /* keys are names (DESIGN §4): anything else would fold into another's env var */
        { "t", { .attrs = (herald_attr[]){ { "has space", "v" } }, .nattrs = 1 }, "invalid attribute key \"has space\"" },
        { "t", { .attrs = (herald_attr[]){ { "\xc3\xa9", "v" } }, .nattrs = 1 }, "invalid attribute key" },
        { "t", { .attrs = (herald_attr[]){ { "a/b", "v" } }, .nattrs = 1 }, "A-Z a-z 0-9 _ . -" },
        { "t", { .attrs = (herald_attr[]){ { "ok", "v" }, { "k\n", "v" } }, .nattrs = 2 }, "invalid attribute key" },
    };
    char longname[130], longval[1100];
    memset(longname, 'a', 129), longname[129] = '\0';
    memset(longval, 'v', 1025), longval[1025] = '\0';
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = herald_publish_async(c, bad[i].topic, "x", 1, &bad[i].o, record, NULL);
        cr_assert_eq(rc, HERALD_E_INVALID, "case %zu: %s", i, herald_strerror(rc));
        cr_assert(strstr(herald_last_error(c), bad[i].why), "case %zu: %s", i, herald_last_error(c));
    }
    cr_assert_eq(herald_publish_async(c, longname, "x", 1, NULL, record, NULL), HERALD_E_INVALID);
    herald_attr lk[] = { { longname, "v" } }, lv[] = { { "k", longval } };
    herald_publish_opts olk = { .attrs = lk, .nattrs = 1 }, olv = { .attrs = lv, .nattrs = 1 };
    cr_assert_eq(herald_publish_async(c, "t", "x", 1, &olk, record, NULL), HERALD_E_INVALID);
    cr_assert_eq(herald_publish_async(c, "t", "x", 1, &olv, record, NULL), HERALD_E_INVALID);
    cr_assert_eq(herald_publish_async(c, "t", NULL, 5, NULL, record, NULL), HERALD_E_INVALID);
    /* The limits themselves are fine. */
    longname[128] = '\0';
    longval[1024] = '\0';
    herald_attr ok[] = { { longname, longval }, { "A.b-c_9", "any \"value\"\n\x01 \xc3\xa9" } };
    herald_publish_opts ook = { .attrs = ok, .nattrs = 2, .delay = 900, .dedup_id = "abc_-9" };
    cr_assert_eq(herald_publish(c, longname, "x", 1, &ook, NULL), 0, "%s", herald_last_error(c));
    herald_close(&c);
    fb_stop(&fb);
    cr_assert_eq(rec->n, 0);
    cr_assert_eq(fb.entries, 1, "an invalid publish was sent");
}

Test(client, nothing_bound_is_unreachable)
{
    char ep[128];
    snprintf(ep, sizeof ep, "ipc://%s/nothing.sock", tmpdir);
    herald_client *c = connect_to(ep, 500, 0);
    int64_t t0 = util_mono_ms();
    char id[HERALD_ID_MAX] = "junk";
    int rc = herald_publish(c, "t", "x", 1, NULL, id);
    int64_t took = util_mono_ms() - t0;
    cr_assert_eq(rc, HERALD_E_UNREACHABLE, "got %s", herald_strerror(rc));
    cr_assert_str_eq(id, "");
    cr_assert_geq(took, 450);
    cr_assert_leq(took, 2000, "took %lld ms", (long long)took);
    char want[256];
    snprintf(want, sizeof want, "broker %s unreachable: no answer within 0.5 s", ep);
    cr_assert_str_eq(herald_last_error(c), want);
    cr_assert_eq(herald_flush(c, 100), 0, "nothing was accepted, so nothing to flush");
    herald_close(&c);
}

Test(client, window_respected)
{
    fake_broker fb;
    fb_init(&fb, ctx);
    fb.withhold = true;
    fb.release_ms = 150;
    fb.release_at = 10;
    fb.release_total = 35;
    fb_start(&fb);
    herald_client *c = connect_to(fb.endpoint, 5000, 10);
    for (int i = 0; i < 35; i++) {
        int rc = herald_publish_async(c, "t", "x", 1, NULL, record, (void *)(intptr_t)i);
        cr_assert_eq(rc, 0, "%d: %s (%s)", i, herald_strerror(rc), herald_last_error(c));
    }
    cr_assert_eq(herald_flush(c, 5000), 0, "%s", herald_last_error(c));
    cr_assert_eq(rec->n, 35);
    cr_assert_eq(rec->out_of_order, 0);
    herald_close(&c);
    fb_stop(&fb);
    cr_assert_eq(fb.entries, 35);
    cr_assert_leq(fb.max_unconfirmed, 10, "%llu unconfirmed at once with a window of 10",
                  (unsigned long long)fb.max_unconfirmed);
    cr_assert_eq(fb.max_unconfirmed, 10, "the window was never filled");
}

/* The window is bounded in bytes too: 2 MiB publishes with a window of
 * 1,000 have at most HC_WINDOW_BYTES (64 MiB) unconfirmed; a publish as
 * large as the bound itself still goes, alone. */
Test(client, window_bounded_in_payload_bytes_too, .timeout = 60)
{
    fake_broker fb;
    fb_init(&fb, ctx);
    fb.max_payload = HC_WINDOW_BYTES;
    fb.withhold = true;
    fb.release_ms = 100;
    size_t each = 2u << 20, n = HC_WINDOW_BYTES / each + 8;
    fb.release_at = (uint32_t)(HC_WINDOW_BYTES / each);
    fb.release_total = n;
    fb_start(&fb);
    herald_client *c = connect_to(fb.endpoint, 10000, 1000);
    char *p = calloc(1, HC_WINDOW_BYTES);
    for (size_t i = 0; i < n; i++) {
        int rc = herald_publish_async(c, "t", p, each, NULL, record, (void *)(intptr_t)i);
        cr_assert_eq(rc, 0, "%zu: %s (%s)", i, herald_strerror(rc), herald_last_error(c));
    }
    cr_assert_eq(herald_flush(c, 20000), 0, "%s", herald_last_error(c));
    uint64_t most = fb.max_unconfirmed;
    fb.release_total = n + 1;
    int rc = herald_publish_async(c, "t", p, HC_WINDOW_BYTES, NULL, record, (void *)(intptr_t)n);
    cr_assert_eq(rc, 0, "a publish the size of the byte bound: %s (%s)", herald_strerror(rc), herald_last_error(c));
    cr_assert_eq(herald_flush(c, 20000), 0, "%s", herald_last_error(c));
    cr_assert_eq(rec->n, (int)n + 1);
    herald_close(&c);
    fb_stop(&fb);
    free(p);
    cr_assert_eq(fb.entries, n + 1);
    cr_assert_eq(most, HC_WINDOW_BYTES / each, "%llu publishes of 2 MiB unconfirmed at once",
                 (unsigned long long)most);
}

Test(client, full_window_times_out)
{
    fake_broker fb;
    fb_init(&fb, ctx);
    fb.withhold = true;   /* and never releases */
    fb_start(&fb);
    herald_client *c = connect_to(fb.endpoint, 400, 5);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(herald_publish_async(c, "t", "x", 1, NULL, record, (void *)(intptr_t)i), 0);
    int64_t t0 = util_mono_ms();
    int rc = herald_publish_async(c, "t", "x", 1, NULL, record, (void *)(intptr_t)5);
    int64_t took = util_mono_ms() - t0;
    cr_assert_eq(rc, HERALD_E_TIMEOUT, "got %s", herald_strerror(rc));
    cr_assert_geq(took, 300);
    cr_assert_leq(took, 1500);
    cr_assert_geq(rec->n, 1, "room was made without giving up on the oldest");
    /* The rest expire within the same millisecond or so. */
    int before = rec->n;
    cr_assert_eq(herald_flush(c, 1000), before == 5 ? 0 : HERALD_E_TIMEOUT);
    cr_assert_eq(rec->n, 5, "the 5 in flight were not given up on");
    for (int i = 0; i < 5; i++) cr_assert_eq(rec->status[i], HERALD_E_TIMEOUT);
    herald_close(&c);
    fb_stop(&fb);
    cr_assert_eq(fb.entries, 5);
}

Test(client, reconnect_resends_unconfirmed)
{
    fake_broker fb1, fb2;
    fb_init(&fb1, ctx);
    fb1.withhold = true;
    fb_start(&fb1);
    /* A long client timeout: what is tested is the re-send after a restart,
     * not how soon a slow (sanitized, loaded) restart counts as unreachable. */
    herald_client *c = connect_to(fb1.endpoint, 30000, 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(herald_publish_async(c, "t", "x", 1, NULL, record, (void *)(intptr_t)i), 0);
    cr_assert_eq(herald_flush(c, 300), HERALD_E_TIMEOUT, "nothing is confirmed yet");
    pthread_mutex_lock(&fb1.mu);
    uint64_t got = fb1.entries;
    pthread_mutex_unlock(&fb1.mu);
    cr_assert_eq(got, 3);
    fb_stop(&fb1);   /* the broker dies without confirming */

    fb_init(&fb2, ctx);
    fb_start(&fb2);
    int rc = herald_flush(c, 20000);
    cr_assert_eq(rc, 0, "flush after restart: %s (%s)", herald_strerror(rc), herald_last_error(c));
    cr_assert_eq(rec->n, 3);
    for (int i = 0; i < 3; i++) {
        char want[16];
        snprintf(want, sizeof want, "id-%d", i + 1);
        cr_assert_eq(rec->status[i], 0);
        cr_assert_str_eq(rec->id[i], want);
    }
    herald_close(&c);
    fb_stop(&fb2);
    cr_assert_eq(fb2.hellos, 1, "no HELLO on the new connection");
    cr_assert(!fb2.publish_before_hello);
    cr_assert_str_eq(fb2.hello_id, fb1.hello_id, "the producer id changed");
    cr_assert_eq(fb2.entries, 3);
    cr_assert(!fb2.seq_order_broken, "not re-sent with the original seqs");
}

Test(client, invoke)
{
    fake_broker fb;
    fb_init(&fb, ctx);
    fb_start(&fb);
    herald_client *c = connect_to(fb.endpoint, 5000, 0);
    void *out = (void *)1;
    size_t outlen = 7;
    int rc = herald_invoke(c, "resize", "x\0y", 3, 1000, &out, &outlen);
    cr_assert_eq(rc, 0, "%s", herald_last_error(c));
    cr_assert_eq(outlen, 7);
    cr_assert_eq(memcmp(out, "out:x\0y", 7), 0, "the output must come back byte for byte");
    free(out);
    out = (void *)1;
    rc = herald_invoke(c, "broken", "x", 1, 1000, &out, &outlen);
    cr_assert_eq(rc, HERALD_E_HANDLER);
    cr_assert_null(out);
    cr_assert_eq(outlen, 0);
    cr_assert_str_eq(herald_last_error(c), "exit status 3");
    cr_assert_eq(herald_invoke(c, "bad name", "x", 1, 1000, &out, &outlen), HERALD_E_INVALID);
    char id[HERALD_ID_MAX];
    cr_assert_eq(herald_invoke_async(c, "bad name", "x", 1, id), HERALD_E_INVALID);
    rc = herald_invoke_async(c, "resize", "abcd", 4, id);
    cr_assert_eq(rc, 0, "%s", herald_last_error(c));
    cr_assert_str_eq(id, "id-1");
    herald_close(&c);
    fb_stop(&fb);
    cr_assert_str_eq(fb.first_topic, "");
    cr_assert_str_eq(fb.first_function, "resize");
    cr_assert_eq(fb.first_len, 4);
}

Test(client, strerror_and_last_error)
{
    for (int s = 0; s >= HERALD_E_BUSY; s--) {
        const char *m = herald_strerror(s);
        cr_assert(m && *m && strcmp(m, "unknown status") != 0, "status %d has no phrase", s);
    }
    cr_assert_str_eq(herald_strerror(-99), "unknown status");
    herald_options o = { .endpoint = "nonsense://x", .timeout_ms = 100 };
    herald_client *c = herald_connect(&o);
    cr_assert_null(c);
    cr_assert(strstr(herald_last_error(NULL), "nonsense://x"), "%s", herald_last_error(NULL));
    herald_options k = { .key_file = "/nonexistent.key" };
    cr_assert_null(herald_connect(&k));
    cr_assert(strstr(herald_last_error(NULL), "broker_key_file"), "%s", herald_last_error(NULL));
    char ep[128];
    snprintf(ep, sizeof ep, "ipc://%s/x.sock", tmpdir);
    c = connect_to(ep, 100, 0);
    cr_assert_str_eq(herald_last_error(c), "");
    herald_close(&c);
}

Test(client, outbox_out_of_order_and_wrap)
{
    hc_outbox ob;
    cr_assert_eq(hc_outbox_init(&ob, 4), 0);
    hc_entry *b[4];
    for (int round = 0; round < 3; round++) {   /* seqs wrap the 4-slot ring */
        for (int i = 0; i < 4; i++)
            cr_assert_not_null(hc_outbox_push(&ob, "t", NULL, NULL, 0, NULL, 0, "ab", 2, NULL, NULL, 0));
        cr_assert_null(hc_outbox_push(&ob, "t", NULL, NULL, 0, NULL, 0, "x", 1, NULL, NULL, 0), "window of 4 overrun");
        cr_assert_eq(hc_outbox_collect(&ob, 3, b), 3);
        hc_outbox_mark_sent(&ob, b, 3);
        cr_assert_eq(hc_outbox_collect(&ob, 3, b), 1);
        hc_outbox_mark_sent(&ob, b, 1);
        cr_assert_eq(ob.batches_out, 2);
        uint64_t s0 = ob.head;
        hc_done d;
        cr_assert(hc_outbox_take(&ob, s0 + 3, &d));   /* the second batch, first */
        cr_assert_eq(ob.batches_out, 1);
        cr_assert_eq(ob.head, s0, "head moved past unconfirmed entries");
        cr_assert(hc_outbox_take(&ob, s0 + 1, &d));
        cr_assert(!hc_outbox_take(&ob, s0 + 1, &d), "a duplicate confirm was taken twice");
        cr_assert_eq(ob.head, s0);
        cr_assert(hc_outbox_take(&ob, s0, &d));
        cr_assert_eq(ob.head, s0 + 2);
        cr_assert_eq(hc_outbox_find(&ob, s0 + 2)->len, 2);
        cr_assert(hc_outbox_take(&ob, s0 + 2, &d));
        cr_assert_eq(ob.batches_out, 0);
        cr_assert_eq(hc_outbox_live(&ob), 0);
    }
    /* A reconnect makes every live entry unsent again, in order. */
    for (int i = 0; i < 3; i++) hc_outbox_push(&ob, "t", NULL, NULL, 0, NULL, 0, "ab", 2, NULL, NULL, 0);
    cr_assert_eq(hc_outbox_collect(&ob, 8, b), 3);
    hc_outbox_mark_sent(&ob, b, 3);
    hc_done d;
    hc_outbox_take(&ob, ob.head + 1, &d);
    hc_outbox_unsend_all(&ob);
    cr_assert_eq(ob.batches_out, 0);
    cr_assert_eq(hc_outbox_collect(&ob, 8, b), 2);
    cr_assert_eq(b[1]->seq, b[0]->seq + 2);
    hc_outbox_free(&ob);
}

static herald_client *reentrant_client;

static void publish_again(void *arg, int status, const char *id)
{
    record(arg, status, id);
    if ((intptr_t)arg < 50)   /* each confirm publishes the next: callbacks may publish */
        herald_publish_async(reentrant_client, "t", "x", 1, NULL, publish_again, (void *)((intptr_t)arg + 1));
}

Test(client, callback_may_publish)
{
    fake_broker fb;
    fb_init(&fb, ctx);
    fb_start(&fb);
    reentrant_client = connect_to(fb.endpoint, 5000, 4);
    cr_assert_eq(herald_publish_async(reentrant_client, "t", "x", 1, NULL, publish_again, (void *)(intptr_t)0), 0);
    cr_assert_eq(herald_flush(reentrant_client, 5000), 0, "%s", herald_last_error(reentrant_client));
    cr_assert_eq(rec->n, 51);
    cr_assert_eq(rec->out_of_order, 0);
    cr_assert_str_eq(rec->id[50], "id-51");
    herald_close(&reentrant_client);
    fb_stop(&fb);
}

/* A stable producer id and explicit sequences (what an event source uses to
 * re-send after its own restart with the same (producer, seq)). */
Test(client, producer_id_and_explicit_seq)
{
    fake_broker fb;
    fb_init(&fb, ctx);
    fb_start(&fb);
    herald_options o = { .endpoint = fb.endpoint, .timeout_ms = 5000, .window = 4, .producer_id = "fs_photos_1" };
    herald_client *c = herald_connect(&o);
    cr_assert_not_null(c, "herald_connect: %s", herald_last_error(NULL));
    char id[HERALD_ID_MAX];
    herald_publish_opts po = { .seq = 5 };
    cr_assert_eq(herald_publish(c, "t", "a", 1, &po, id), 0, "%s", herald_last_error(c));
    cr_assert_str_eq(id, "id-5");
    po.seq = 9;   /* a gap: 6-8 are never used */
    cr_assert_eq(herald_publish(c, "t", "b", 1, &po, id), 0, "%s", herald_last_error(c));
    cr_assert_str_eq(id, "id-9");
    cr_assert_eq(herald_publish(c, "t", "c", 1, NULL, id), 0, "%s", herald_last_error(c));
    cr_assert_str_eq(id, "id-10", "seq 0 is the one after the last: %s", id);
    /* far above the oldest in flight (more than the window of 4): waits, then goes */
    for (int i = 0; i < 3; i++) {
        herald_publish_opts pa = { .seq = 20 + (unsigned)i };
        cr_assert_eq(herald_publish_async(c, "t", "x", 1, &pa, record, (void *)(intptr_t)i), 0);
    }
    herald_publish_opts pa = { .seq = 1000 };
    cr_assert_eq(herald_publish_async(c, "t", "x", 1, &pa, record, (void *)(intptr_t)3), 0, "%s", herald_last_error(c));
    cr_assert_eq(herald_flush(c, 5000), 0);
    cr_assert_eq(rec->n, 4);
    cr_assert_str_eq(rec->id[2], "id-22");
    cr_assert_str_eq(rec->id[3], "id-1000");
    /* a seq not above the last one used is refused locally */
    po.seq = 1000;
    cr_assert_eq(herald_publish(c, "t", "d", 1, &po, id), HERALD_E_INVALID);
    cr_assert(strstr(herald_last_error(c), "not above"), "%s", herald_last_error(c));
    herald_close(&c);
    fb_stop(&fb);
    cr_assert_str_eq(fb.hello_id, "fs_photos_1");
    cr_assert(!fb.producer_mismatch);
}

Test(client, explicit_seq_needs_a_producer_id)
{
    fake_broker fb;
    fb_init(&fb, ctx);
    fb_start(&fb);
    herald_client *c = connect_to(fb.endpoint, 5000, 0);
    herald_publish_opts po = { .seq = 7 };
    cr_assert_eq(herald_publish(c, "t", "a", 1, &po, NULL), HERALD_E_INVALID);
    cr_assert(strstr(herald_last_error(c), "producer_id"), "%s", herald_last_error(c));
    herald_close(&c);
    fb_stop(&fb);
    herald_options o = { .endpoint = fb.endpoint, .producer_id = "has-dash" };
    cr_assert_null(herald_connect(&o));
    cr_assert(strstr(herald_last_error(NULL), "producer_id 'has-dash'"), "%s", herald_last_error(NULL));
}

Test(client, outbox_skip_to)
{
    hc_outbox ob;
    cr_assert_eq(hc_outbox_init(&ob, 4), 0);
    cr_assert(hc_outbox_skip_to(&ob, 50), "an empty outbox starts over anywhere above");
    hc_entry *e = hc_outbox_push(&ob, "t", NULL, NULL, 0, NULL, 0, "ab", 2, NULL, NULL, 0);
    cr_assert_eq(e->seq, 50);
    cr_assert(!hc_outbox_skip_to(&ob, 50), "not above the last");
    cr_assert(!hc_outbox_skip_to(&ob, 54), "would span more than 4 seqs");
    cr_assert(hc_outbox_skip_to(&ob, 53));
    e = hc_outbox_push(&ob, "t", NULL, NULL, 0, NULL, 0, "ab", 2, NULL, NULL, 0);
    cr_assert_eq(e->seq, 53);
    hc_entry *b[4];
    cr_assert_eq(hc_outbox_collect(&ob, 4, b), 2, "the gap is not sent");
    hc_outbox_mark_sent(&ob, b, 2);
    hc_done d;
    cr_assert(hc_outbox_take(&ob, 50, &d));
    cr_assert_eq(ob.head, 53, "head skips the gap");
    cr_assert(hc_outbox_take(&ob, 53, &d));
    cr_assert_eq(hc_outbox_live(&ob), 0);
    hc_outbox_free(&ob);
}

Test(client, reconnect_sends_every_unconfirmed_publish_again)
{
    fake_broker fb;
    fb_init(&fb, ctx);
    fb.withhold = true;
    fb.release_ms = 600000;
    fb.release_total = 6;   /* the 3 first sends and the 3 re-sends: then every confirm goes out */
    fb_start(&fb);
    herald_options o = { .endpoint = fb.endpoint, .timeout_ms = 20000, .producer_id = "src_1" };
    herald_client *c = herald_connect(&o);
    cr_assert_not_null(c);
    for (int i = 0; i < 3; i++) {
        herald_publish_opts po = { .seq = 10 + (unsigned)i };
        cr_assert_eq(herald_publish_async(c, "t", "x", 1, &po, record, (void *)(intptr_t)i), 0);
    }
    cr_assert_eq(herald_flush(c, 300), HERALD_E_TIMEOUT, "nothing is confirmed yet");
    cr_assert_eq(herald_reconnect(c), 0, "%s", herald_last_error(c));
    cr_assert_eq(herald_flush(c, 10000), 0, "%s", herald_last_error(c));
    cr_assert_eq(rec->n, 3, "each publish once");
    cr_assert_str_eq(rec->id[0], "id-10");
    cr_assert_str_eq(rec->id[2], "id-12");
    herald_close(&c);
    fb_stop(&fb);
    cr_assert_eq(fb.hellos, 2, "a fresh connection says HELLO again");
    cr_assert_eq(fb.entries, 6, "every unconfirmed publish went again");
    cr_assert(!fb.publish_before_hello);
}
