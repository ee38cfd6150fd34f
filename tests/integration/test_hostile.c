/* test_hostile.c — hostile input on the broker's three endpoints (DESIGN §6 and
 * §7, PROTOCOL.md §2 and §5), through the real broker.
 *
 * The test talks to each ROUTER endpoint with a raw DEALER and writes the frames
 * itself: garbage, truncated and lying msgpack, wrong versions and types, wrong
 * frame counts, too many frames, empty messages, frames over the endpoint's
 * ZMQ_MAXMSGSIZE. Every refused message must get [1, "ERROR", 1, text] where a
 * reply is possible (or, for a PUBLISH, ADMIN or INVOKE whose seqs / req still
 * read, its own reply type with status 1), an oversized frame must cost only its own connection, and
 * the broker must keep serving (a real publish is confirmed, `heraldctl stats`
 * answers) with a flat RSS. libherald must refuse an oversized payload itself.
 *
 * The broker runs with max_payload = 1024, so the caps are small:
 *   publish endpoint  max_payload + 64 KiB                   (broker/main.c, DESIGN §7)
 *   worker endpoint   max(max_payload, 6 MiB) + 64 KiB
 *   admin endpoint    max(max_payload, 1 MiB) + 64 KiB       (1 MiB: the largest admin request)
 * Every wait is a zmq_poll with a deadline; nothing sleeps for luck.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "herald.h"
#include "../../proto/proto.h"
#include "harness.h"

#define MAX_PAYLOAD 1024
#define HEADROOM (64 * 1024)
#define PUB_CAP ((size_t)MAX_PAYLOAD + HEADROOM)
#define WRK_CAP (((size_t)6 << 20) + HEADROOM)
#define ADM_CAP (((size_t)1 << 20) + HEADROOM)
#define REPLY_MS 5000      /* an answer later than this counts as missing */
#define SILENCE_MS 500     /* how long we listen for a reply that must not come */

static h_env env;
static pid_t broker_pid;
static int broker_exit = -1;   /* its exit status (128+signal) once it is gone */
static void *ctx;

#define MAX_SOCKS 64
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
    if (ctx) zmq_ctx_term(ctx);   /* every socket has linger 0: this does not wait */
    ctx = NULL;
    h_teardown(&env);
}

TestSuite(hostile, .init = setup, .fini = teardown, .timeout = 60);

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* ---- the broker ---------------------------------------------------------- */

static void start_broker(void)
{
    h_config_broker(&env, "os", "max_payload = 1024;",
                    "functions = ( { name = \"f\"; native = { library = \"examples/handlers/libnoop.so\";"
                    " symbol = \"noop\"; }; } );\n"
                    "topics = ( { name = \"t\"; } );\n");   /* no subscription: counted, nothing stored */
    broker_pid = h_broker(&env);
    broker_exit = -1;
}

/* Whether the broker has exited (reaped here once; its status kept). */
static bool broker_dead(void)
{
    if (broker_exit < 0 && broker_pid > 0) broker_exit = h_wait_exit(broker_pid, 0);
    return broker_exit >= 0;
}

/* "" while the broker runs, else why it is gone (for assertion messages). */
static const char *broker_state(void)
{
    static char buf[200];
    if (!broker_dead()) return "";
    snprintf(buf, sizeof buf, " [the broker exited with status %d: see %s]", broker_exit,
             h_path(&env, "broker.err"));
    return buf;
}

static long vmrss_kb(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *s = h_read(path, NULL);
    cr_assert_not_null(s, "cannot read %s", path);
    char *p = strstr(s, "VmRSS:");
    cr_assert_not_null(p, "no VmRSS in %s", path);
    long kb = strtol(p + 6, NULL, 10);
    free(s);
    return kb;
}

/* The topic's `published` counter from `heraldctl --broker ADM stats --json`. */
static long published(const char *topic)
{
    char *st = h_stats(&env);
    cr_assert_not_null(st, "heraldctl stats did not answer%s", broker_state());
    char key[200];
    snprintf(key, sizeof key, "{\"name\":\"%s\",\"published\":", topic);
    char *p = strstr(st, key);
    cr_assert_not_null(p, "stats has no topic %s: %s", topic, st);
    long v = strtol(p + strlen(key), NULL, 10);
    free(st);
    return v;
}

/* The broker still serves: a normal publish through bin/herald-publish is
 * confirmed (one id printed, exit 0) and counted, and heraldctl stats answers. */
static void assert_alive(const char *after)
{
    cr_assert_str_empty(broker_state(), "after %s:%s", after, broker_state());
    long before = published("t");
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "bin/herald-publish", "--broker", env.pub, "t", "still-alive", NULL);
    cr_assert_eq(rc, 0, "after %s: herald-publish exited %d: %s%s", after, rc, err ? err : "", broker_state());
    cr_assert(out && strlen(out) > 1 && strchr(out, '\n') == out + strlen(out) - 1,
              "after %s: herald-publish printed %s", after, out ? out : "(nothing)");
    free(out);
    free(err);
    long now = published("t");
    cr_assert_eq(now, before + 1, "after %s: published went from %ld to %ld, expected +1", after, before, now);
}

/* ---- raw sockets ----------------------------------------------------------- */

static void *track(void *s)
{
    cr_assert_not_null(s, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    for (int i = 0; i < MAX_SOCKS; i++)
        if (!socks[i]) { socks[i] = s; return s; }
    cr_assert_fail("too many sockets");
    return NULL;
}

static void sock_close(void *s)
{
    for (int i = 0; i < MAX_SOCKS; i++)
        if (socks[i] == s) socks[i] = NULL;
    zmq_close(s);
}

static void *dealer_socket(void)
{
    void *s = track(zmq_socket(ctx, ZMQ_DEALER));
    int zero = 0, tmo = REPLY_MS;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
    return s;
}

static void *dealer(const char *ep)
{
    void *s = dealer_socket();
    cr_assert_eq(zmq_connect(s, ep), 0, "connect %s: %s", ep, zmq_strerror(zmq_errno()));
    return s;
}

typedef struct { const void *p; size_t n; } fr;

static void send_frames(void *s, const fr *f, int n)
{
    for (int i = 0; i < n; i++) {
        int rc = zmq_send(s, f[i].p, f[i].n, i + 1 < n ? ZMQ_SNDMORE : 0);
        cr_assert(rc >= 0, "sending frame %d of %d: %s", i, n, zmq_strerror(zmq_errno()));
    }
}

static void send1(void *s, const void *p, size_t n)
{
    fr f = { p, n };
    send_frames(s, &f, 1);
}

static void send_sb(void *s, const msgpack_sbuffer *sb) { send1(s, sb->data, sb->size); }

/* One reply: got (something came before the deadline), how many frames, and
 * its header decoded with proto_decode (ok) or why not (err). */
typedef struct {
    bool got, ok;
    int nframes;
    proto_msg m;
    char err[256];
} reply;

/* Waits in slices, so that a broker that died ends the wait at once. */
static reply get_reply(void *s, int ms)
{
    reply r;
    memset(&r, 0, sizeof r);
    long end = now_ms() + ms;
    zmq_pollitem_t it = { s, 0, ZMQ_POLLIN, 0 };
    for (;;) {
        long left = end - now_ms();
        if (left > 100) left = 100;
        it.revents = 0;
        int rc = zmq_poll(&it, 1, left > 0 ? left : 0);
        if (rc < 0 && zmq_errno() == EINTR) continue;
        cr_assert(rc >= 0, "zmq_poll: %s", zmq_strerror(zmq_errno()));
        if (rc > 0 || now_ms() >= end) break;
        if (broker_dead()) break;   /* nothing will come */
    }
    if (!(it.revents & ZMQ_POLLIN)) return r;
    proto_frames f;
    frames_init(&f);
    cr_assert_eq(frames_recv(s, &f, 64, ZMQ_DONTWAIT), 0, "receive: %s", zmq_strerror(zmq_errno()));
    r.got = true;
    r.nframes = f.n;
    r.ok = proto_decode(frames_data(&f, 0), frames_size(&f, 0), &r.m, r.err, sizeof r.err) == 0;
    frames_close(&f);
    free(f.parts);
    return r;
}

/* A reply that is not ERROR malformed is a soft failure (cr_expect): the
 * connection stays in step (one reply per message), so the round goes on and
 * reports every deviation, not only the first. With `lenient` (the RSS test,
 * which measures memory, not replies) deviations are only counted. No reply at
 * all is fatal: the broker stalled or died. */
static bool lenient;
static int deviations;

static void expect_malformed(void *s, const char *ep, const char *what)
{
    reply r = get_reply(s, REPLY_MS);
    cr_assert(r.got, "%s endpoint, %s: no reply (waited up to %d ms), expected ERROR malformed%s", ep, what, REPLY_MS,
              broker_state());
    char got[400];
    bool good = r.ok && r.m.type == MSG_ERROR && r.m.u.error.status == PROTO_E_MALFORMED && r.nframes == 1 &&
                r.m.u.error.text && r.m.u.error.text[0];
    /* a request whose seqs / req still read is refused in its own reply
     * type, so the client can match it (PROTOCOL.md §5) */
    if (r.ok && r.m.type == MSG_CONFIRM && r.nframes == 1 && r.m.u.confirm.n) {
        good = true;
        for (uint32_t i = 0; i < r.m.u.confirm.n; i++)
            good = good && r.m.u.confirm.entries[i].status == PROTO_E_MALFORMED && r.m.u.confirm.entries[i].text[0];
    }
    if (r.ok && r.m.type == MSG_ADMIN_REPLY)
        good = r.nframes == 1 && r.m.u.admin_reply.status == PROTO_E_MALFORMED && r.m.u.admin_reply.error;
    if (r.ok && r.m.type == MSG_INVOKE_REPLY)
        good = r.nframes == 2 && r.m.u.invoke_reply.status == PROTO_E_MALFORMED && r.m.u.invoke_reply.error;
    if (!r.ok)
        snprintf(got, sizeof got, "an undecodable reply (%s)", r.err);
    else if (r.m.type == MSG_ERROR)
        snprintf(got, sizeof got, "ERROR status %u (%s) \"%s\" in %d frame(s)", r.m.u.error.status,
                 proto_status_name(r.m.u.error.status), r.m.u.error.text, r.nframes);
    else
        snprintf(got, sizeof got, "%s", proto_type_name(r.m.type));
    if (!good) {
        deviations++;
        if (!lenient)
            cr_expect(good, "%s endpoint, %s: got %s, expected ERROR status 1 (malformed) with a text", ep, what,
                      got);
        else if (deviations <= 3)
            cr_log_warn("%s endpoint, %s: got %s, expected ERROR malformed", ep, what, got);
    }
    if (r.ok) proto_msg_clear(&r.m);
}

static void encode_hello(msgpack_sbuffer *sb, const char *id, const char *role)
{
    msgpack_sbuffer_clear(sb);
    proto_hello h = { .client_id = (char *)id, .role = (char *)role };
    cr_assert_eq(proto_encode_hello(sb, &h), 0);
}

/* HELLO → WELCOME on s (also proves that s is in step: the next reply is ours). */
static void expect_welcome(void *s, const char *ep, const char *what)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    /* the role this endpoint serves (PROTOCOL.md HELLO) */
    encode_hello(&sb, "hostile_probe", strcmp(ep, "worker") == 0 ? "worker" : "publisher");
    send_sb(s, &sb);
    msgpack_sbuffer_destroy(&sb);
    reply r = get_reply(s, REPLY_MS);
    cr_assert(r.got, "%s endpoint, %s: no WELCOME within %d ms%s", ep, what, REPLY_MS, broker_state());
    cr_assert(r.ok, "%s endpoint, %s: the reply does not decode: %s", ep, what, r.err);
    cr_assert_eq(r.m.type, MSG_WELCOME, "%s endpoint, %s: got %s (%s), expected WELCOME", ep, what,
                 proto_type_name(r.m.type), r.m.type == MSG_ERROR ? r.m.u.error.text : "");
    cr_assert_eq(r.m.u.welcome.max_payload, MAX_PAYLOAD, "%s endpoint: WELCOME max_payload %llu", ep,
                 (unsigned long long)r.m.u.welcome.max_payload);
    proto_msg_clear(&r.m);
}

/* A PUBLISH header of n entries (seqs seq0…, every one on topic), valid as such. */
static void encode_publish(msgpack_sbuffer *sb, const char *producer, uint32_t n, uint64_t seq0,
                           const char *const *topics)
{
    proto_pub pubs[8];
    cr_assert(n <= 8);
    proto_attr attr = { .key = "k", .value = "v" };
    for (uint32_t i = 0; i < n; i++) {
        memset(&pubs[i], 0, sizeof pubs[i]);
        pubs[i].seq = seq0 + i;
        pubs[i].topic = (char *)topics[i];
        pubs[i].attrs = &attr;
        pubs[i].nattrs = 1;
        pubs[i].dedup_id = i == 0 ? "dedup_1" : NULL;
    }
    proto_publish p = { .producer = (char *)producer, .pubs = pubs, .npubs = n };
    msgpack_sbuffer_clear(sb);
    cr_assert_eq(proto_encode_publish(sb, &p), 0);
}

static const char *const T8[8] = { "t", "t", "t", "t", "t", "t", "t", "t" };

/* ---- the hostile round ------------------------------------------------------ */

typedef struct {
    const char *name, *ep;
    size_t cap;         /* its ZMQ_MAXMSGSIZE */
} endpoint;

static endpoint E[3];

static void endpoints(void)
{
    E[0] = (endpoint){ "publish", env.pub, PUB_CAP };
    E[1] = (endpoint){ "worker", env.wrk, WRK_CAP };
    E[2] = (endpoint){ "admin", env.adm, ADM_CAP };
}

static uint64_t rng;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Frames that lie about their size: 4 GiB strings and bins, 2^32-element
 * arrays and maps, in a handful of bytes; nesting past the cap; trailing
 * bytes; the byte 0xc1. Each is one whole header frame. */
#define HB(...) { (const unsigned char[]){ __VA_ARGS__ }, sizeof((const unsigned char[]){ __VA_ARGS__ }) }
static const struct { const unsigned char *p; size_t n; } lies[] = {
    /* [1, "HELLO", str32 of 4 GiB …] */
    HB(0x94, 0x01, 0xa5, 'H', 'E', 'L', 'L', 'O', 0xdb, 0xff, 0xff, 0xff, 0xff, 'a', 'b', 'c'),
    /* [1, "HELLO", bin32 of 4 GiB …] */
    HB(0x94, 0x01, 0xa5, 'H', 'E', 'L', 'L', 'O', 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00),
    /* a bare str32 / bin32 / ext32 / str16 claiming more than is there */
    HB(0xdb, 0xff, 0xff, 0xff, 0xff, 'A'),
    HB(0xc6, 0xff, 0xff, 0xff, 0xf0, 'A', 'B'),
    HB(0xc9, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00),
    HB(0xda, 0xff, 0xff, 'A'),
    /* array32 / map32 of 2^32-1 elements */
    HB(0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01, 0x01),
    HB(0xdf, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01),
    /* [1, "HELLO", …] as an array32 of 2^31-1 elements */
    HB(0xdd, 0x7f, 0xff, 0xff, 0xff, 0x01, 0xa5, 'H', 'E', 'L', 'L', 'O'),
    /* [1, "PUBLISH", "p1", array32 of 2^32-1 entries] */
    HB(0x94, 0x01, 0xa7, 'P', 'U', 'B', 'L', 'I', 'S', 'H', 0xa2, 'p', '1', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x96, 0x01),
    /* [1, "PUBLISH", "p1", array16 of 65535 entries] */
    HB(0x94, 0x01, 0xa7, 'P', 'U', 'B', 'L', 'I', 'S', 'H', 0xa2, 'p', '1', 0xdc, 0xff, 0xff, 0x96),
    /* [1, "ADMIN", 1, "stats", map32 of 2^32-1 pairs] */
    HB(0x95, 0x01, 0xa5, 'A', 'D', 'M', 'I', 'N', 0x01, 0xa5, 's', 't', 'a', 't', 's', 0xdf, 0xff, 0xff, 0xff, 0xff),
    /* [1, "REGISTER", "w", "h", 1, 1, array32 of 2^32-1 functions] */
    HB(0x97, 0x01, 0xa8, 'R', 'E', 'G', 'I', 'S', 'T', 'E', 'R', 0xa1, 'w', 0xa1, 'h', 0x01, 0x01,
       0xdd, 0xff, 0xff, 0xff, 0xff),
    /* nested 9 deep (the cap is 8) */
    HB(0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x01),
    /* [1, "HELLO", "x", "publisher"] + one trailing byte */
    HB(0x94, 0x01, 0xa5, 'H', 'E', 'L', 'L', 'O', 0xa1, 'x', 0xa9, 'p', 'u', 'b', 'l', 'i', 's', 'h', 'e', 'r', 0x00),
    /* two objects */
    HB(0x01, 0x01),
    /* the never-used byte 0xc1 */
    HB(0x92, 0x01, 0xc1),
    HB(0xc1),
};

typedef enum { V_INT, V_STR, V_NIL, V_FLOAT, V_NEG } vkind;

/* [version, type, fields…] with arbitrary elements, written by hand. */
static void pack_head(msgpack_sbuffer *sb, size_t n, vkind vk, uint64_t v, const char *type, size_t type_len)
{
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, n);
    switch (vk) {
    case V_INT: msgpack_pack_uint64(&pk, v); break;
    case V_NEG: msgpack_pack_int64(&pk, -(int64_t)v); break;
    case V_STR: msgpack_pack_str(&pk, 1); msgpack_pack_str_body(&pk, "1", 1); break;
    case V_NIL: msgpack_pack_nil(&pk); break;
    case V_FLOAT: msgpack_pack_double(&pk, (double)v); break;
    }
    if (n < 2) return;
    if (type) {
        msgpack_pack_str(&pk, type_len);
        msgpack_pack_str_body(&pk, type, type_len);
    } else {
        msgpack_pack_uint32(&pk, 7);
    }
}

static void pack_strs(msgpack_sbuffer *sb, int n, ...)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        const char *s = va_arg(ap, const char *);
        msgpack_pack_str(&pk, strlen(s));
        msgpack_pack_str_body(&pk, s, strlen(s));
    }
    va_end(ap);
}

/* Every kind of bad message on one endpoint, one at a time, each answered by
 * ERROR malformed; then the same connection still gets WELCOME for a HELLO.
 * Returns how many bad messages were sent. */
static int hostile_round(const endpoint *ep, unsigned round, int nrandom)
{
    char what[160];
    int n = 0;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    void *s = dealer(ep->ep);
    expect_welcome(s, ep->name, "HELLO before the round");

    /* 1. random bytes as the header frame (alone, then with payload frames) */
    rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)round << 32) ^ (uint64_t)(ep - E);
    unsigned char buf[512];
    for (int i = 0; i < nrandom; i++) {
        size_t len = 1 + rnd() % sizeof buf;
        for (size_t k = 0; k < len; k++) buf[k] = (unsigned char)rnd();
        if (i % 3 == 2) {
            fr f[3] = { { buf, len }, { "p", 1 }, { "", 0 } };
            send_frames(s, f, 1 + (int)(rnd() % 3));
        } else {
            send1(s, buf, len);
        }
        snprintf(what, sizeof what, "random header #%d (%zu bytes, first 0x%02x)", i, len, buf[0]);
        expect_malformed(s, ep->name, what);
        n++;
    }

    /* 2. truncated msgpack: every strict prefix of valid headers */
    msgpack_sbuffer *heads[4];
    const char *head_names[4] = { "PUBLISH", "HELLO", "ADMIN", "REGISTER" };
    msgpack_sbuffer hs[4];
    for (int h = 0; h < 4; h++) { msgpack_sbuffer_init(&hs[h]); heads[h] = &hs[h]; }
    encode_publish(heads[0], "hostile_p", 2, 1, T8);
    encode_hello(heads[1], "hostile_h", "publisher");
    cr_assert_eq(proto_encode_admin(heads[2], 7, "stats", NULL, 0), 0);
    const char *fns[1] = { "f" };
    proto_register reg = { .worker_id = "hostile_w", .host = "h", .pid = 1, .slots = 1,
                           .functions = (char **)fns, .nfunctions = 1 };
    cr_assert_eq(proto_encode_register(heads[3], &reg), 0);
    for (int h = 0; h < 4; h++) {
        for (size_t len = 1; len < heads[h]->size; len++) {
            if (h == 0) {   /* a PUBLISH header cut short, followed by its two payloads */
                fr f[3] = { { heads[h]->data, len }, { "one", 3 }, { "two", 3 } };
                send_frames(s, f, 3);
                snprintf(what, sizeof what, "%s header cut to %zu of %zu bytes, + 2 payloads", head_names[h],
                         len, heads[h]->size);
                expect_malformed(s, ep->name, what);
                n++;
            }
            send1(s, heads[h]->data, len);
            snprintf(what, sizeof what, "%s header cut to %zu of %zu bytes", head_names[h], len, heads[h]->size);
            expect_malformed(s, ep->name, what);
            n++;
        }
    }

    /* 3. declared lengths and counts far beyond the bytes */
    for (size_t i = 0; i < sizeof lies / sizeof *lies; i++) {
        send1(s, lies[i].p, lies[i].n);
        snprintf(what, sizeof what, "lying frame #%zu (%zu bytes, first 0x%02x)", i, lies[i].n, lies[i].p[0]);
        expect_malformed(s, ep->name, what);
        n++;
    }
    /* deep nesting, 300 levels */
    memset(buf, 0x91, 300);
    buf[300] = 0x01;
    send1(s, buf, 301);
    expect_malformed(s, ep->name, "arrays nested 300 deep");
    n++;

    /* 4. wrong version, 5. unknown type, and other bad shapes */
    static const struct { vkind vk; uint64_t v; } versions[] = {
        { V_INT, 2 }, { V_INT, 0 }, { V_INT, 256 }, { V_INT, UINT64_MAX }, { V_NEG, 1 },
        { V_STR, 0 }, { V_NIL, 0 }, { V_FLOAT, 1 },
    };
    for (size_t i = 0; i < sizeof versions / sizeof *versions; i++) {
        pack_head(&sb, 4, versions[i].vk, versions[i].v, "HELLO", 5);
        pack_strs(&sb, 2, "x", "publisher");
        send_sb(s, &sb);
        snprintf(what, sizeof what, "HELLO with bad version #%zu", i);
        expect_malformed(s, ep->name, what);
        n++;
    }
    static const struct { const char *t; size_t n; size_t elems; } types[] = {
        { "NOPE", 4, 2 }, { "NOPE", 4, 4 }, { "hello", 5, 4 }, { "HELLO\0", 6, 4 }, { "", 0, 4 },
        { NULL, 0, 4 },                                           /* type is an integer */
        { "HELLO", 5, 2 }, { "HELLO", 5, 3 }, { "HELLO", 5, 5 },  /* wrong element counts */
        { "PUBLISH", 7, 2 }, { "ADMIN", 5, 2 }, { "REGISTER", 8, 2 },
    };
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        pack_head(&sb, types[i].elems, V_INT, 1, types[i].t, types[i].n);
        static const char *const fill[] = { "x", "publisher", "extra" };
        for (size_t k = 2; k < types[i].elems; k++) pack_strs(&sb, 1, fill[k - 2]);
        send_sb(s, &sb);
        snprintf(what, sizeof what, "unknown type / bad shape #%zu", i);
        expect_malformed(s, ep->name, what);
        n++;
    }
    static const unsigned char shapes[][3] = { { 0x05 }, { 0x91, 0x01 }, { 0x90 }, { 0x80 }, { 0xa1, 'x' }, { 0xc0 } };
    static const size_t shape_len[] = { 1, 2, 1, 1, 2, 1 };
    for (size_t i = 0; i < sizeof shape_len / sizeof *shape_len; i++) {
        send1(s, shapes[i], shape_len[i]);
        snprintf(what, sizeof what, "not a [version, type, …] array #%zu", i);
        expect_malformed(s, ep->name, what);
        n++;
    }

    /* 6. frame counts that do not match the header */
    static const struct { uint32_t entries; int payloads; } counts[] = {
        { 1, 2 }, { 1, 0 }, { 2, 1 }, { 3, 10 }, { 8, 7 }, { 1, 1024 },
    };
    for (size_t i = 0; i < sizeof counts / sizeof *counts; i++) {
        encode_publish(&sb, "hostile_c", counts[i].entries, 100 + 10 * i, T8);
        fr *f = calloc((size_t)counts[i].payloads + 1, sizeof *f);
        f[0] = (fr){ sb.data, sb.size };
        for (int k = 1; k <= counts[i].payloads; k++) f[k] = (fr){ "payload", 7 };
        send_frames(s, f, counts[i].payloads + 1);
        free(f);
        snprintf(what, sizeof what, "PUBLISH of %u entries with %d payload frames", counts[i].entries,
                 counts[i].payloads);
        expect_malformed(s, ep->name, what);
        n++;
    }
    /* messages that take no payload frame, with one */
    encode_hello(&sb, "hostile_x", "publisher");
    {
        fr f[2] = { { sb.data, sb.size }, { "extra", 5 } };
        send_frames(s, f, 2);
        expect_malformed(s, ep->name, "HELLO + 1 payload frame (HELLO takes none)");
        n++;
    }
    msgpack_sbuffer_clear(&sb);
    cr_assert_eq(proto_encode_admin(&sb, 9, "stats", NULL, 0), 0);
    {
        fr f[2] = { { sb.data, sb.size }, { "extra", 5 } };
        send_frames(s, f, 2);
        expect_malformed(s, ep->name, "ADMIN + 1 payload frame (ADMIN takes none)");
        n++;
    }
    proto_result_entry re = { .lease = 1, .outcome = OUT_OK, .started_ms = 1, .duration_us = 1 };
    proto_result res = { .rs = &re, .n = 1 };
    msgpack_sbuffer_clear(&sb);
    cr_assert_eq(proto_encode_result(&sb, &res), 0);
    for (int k = 0; k <= 2; k += 2) {
        fr f[3] = { { sb.data, sb.size }, { "out", 3 }, { "out", 3 } };
        send_frames(s, f, 1 + k);
        snprintf(what, sizeof what, "RESULT of 1 entry with %d output frames", k);
        expect_malformed(s, ep->name, what);
        n++;
    }

    /* 7. too many frames: 2000 (and 1026: one past the 1024 payload cap) */
    static const int many[] = { 2000, 1026 };
    for (size_t i = 0; i < sizeof many / sizeof *many; i++) {
        encode_publish(&sb, "hostile_m", 1, 1000 + i, T8);
        fr *f = calloc((size_t)many[i], sizeof *f);
        f[0] = (fr){ sb.data, sb.size };
        for (int k = 1; k < many[i]; k++) f[k] = (fr){ "p", 1 };
        send_frames(s, f, many[i]);
        free(f);
        snprintf(what, sizeof what, "a message of %d frames", many[i]);
        expect_malformed(s, ep->name, what);
        n++;
    }

    /* 8. an empty message (a DEALER cannot send zero frames: one empty frame),
     * and an empty header before payloads */
    send1(s, "", 0);
    expect_malformed(s, ep->name, "an empty message");
    n++;
    {
        fr f[2] = { { "", 0 }, { "payload", 7 } };
        send_frames(s, f, 2);
        expect_malformed(s, ep->name, "an empty header + 1 payload frame");
        n++;
    }

    /* the same connection is still in step and served */
    expect_welcome(s, ep->name, "HELLO after the round");
    sock_close(s);
    for (int h = 0; h < 4; h++) msgpack_sbuffer_destroy(&hs[h]);
    msgpack_sbuffer_destroy(&sb);
    return n;
}

/* ---- oversized frames -------------------------------------------------------- */

/* Waits for a monitor event of kind ev on the monitor PAIR socket. */
static bool wait_event(void *mon, int ev, int ms)
{
    long end = now_ms() + ms;
    for (;;) {
        long left = end - now_ms();
        if (left < 0) return false;
        zmq_pollitem_t it = { mon, 0, ZMQ_POLLIN, 0 };
        int rc = zmq_poll(&it, 1, left);
        if (rc < 0 && zmq_errno() == EINTR) continue;
        if (rc <= 0) return false;
        zmq_msg_t a, b;
        zmq_msg_init(&a);
        zmq_msg_init(&b);
        cr_assert(zmq_msg_recv(&a, mon, 0) >= 0);
        cr_assert(zmq_msg_more(&a));
        cr_assert(zmq_msg_recv(&b, mon, 0) >= 0);
        uint16_t got;
        memcpy(&got, zmq_msg_data(&a), sizeof got);
        zmq_msg_close(&a);
        zmq_msg_close(&b);
        if (got == ev) return true;
    }
}

/* One frame of cap + 1 bytes (as the header, or as a payload after a valid
 * PUBLISH header) on its own connection: libzmq closes that connection and no
 * reply comes; a bystander connection on the same endpoint is still served. */
static void oversized(const endpoint *ep, bool as_payload, int silence_ms)
{
    static int mon_seq;
    char what[160];
    snprintf(what, sizeof what, "a frame of %zu bytes (cap + 1) as the %s", ep->cap + 1,
             as_payload ? "payload of a PUBLISH" : "header");
    void *bystander = dealer(ep->ep);
    expect_welcome(bystander, ep->name, "bystander before");

    void *s = dealer_socket();
    char mon_ep[64];
    snprintf(mon_ep, sizeof mon_ep, "inproc://hostile-monitor-%d", mon_seq++);
    cr_assert_eq(zmq_socket_monitor(s, mon_ep, ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED), 0);
    void *mon = track(zmq_socket(ctx, ZMQ_PAIR));
    int zero = 0;
    zmq_setsockopt(mon, ZMQ_LINGER, &zero, sizeof zero);
    cr_assert_eq(zmq_connect(mon, mon_ep), 0);
    cr_assert_eq(zmq_connect(s, ep->ep), 0);
    cr_assert(wait_event(mon, ZMQ_EVENT_CONNECTED, REPLY_MS), "%s endpoint: never connected", ep->name);
    expect_welcome(s, ep->name, "before the oversized frame");

    size_t big = ep->cap + 1;
    char *buf = malloc(big);
    cr_assert_not_null(buf);
    memset(buf, 'x', big);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (as_payload) {
        encode_publish(&sb, "hostile_big", 1, 1, T8);
        fr f[2] = { { sb.data, sb.size }, { buf, big } };
        send_frames(s, f, 2);
    } else {
        send1(s, buf, big);
    }
    free(buf);
    msgpack_sbuffer_destroy(&sb);

    cr_assert(wait_event(mon, ZMQ_EVENT_DISCONNECTED, REPLY_MS),
              "%s endpoint, %s: the broker did not close the connection within %d ms%s", ep->name, what,
              REPLY_MS, broker_state());
    reply r = get_reply(s, silence_ms);
    cr_assert(!r.got, "%s endpoint, %s: a reply came (%s) on a connection libzmq should have closed", ep->name,
              what, r.ok ? proto_type_name(r.m.type) : r.err);
    expect_welcome(bystander, ep->name, "bystander after the oversized frame");
    sock_close(s);
    sock_close(mon);
    sock_close(bystander);
}

/* ---- the tests -------------------------------------------------------------------- */

static void garbage_on(int i)
{
    start_broker();
    endpoints();
    int n = hostile_round(&E[i], 1, 24);
    assert_alive(E[i].name);
    /* and once more, on a broker that has already seen all of it */
    n += hostile_round(&E[i], 2, 24);
    assert_alive(E[i].name);
    cr_log_info("%s endpoint: %d bad messages, %d replies were not ERROR malformed", E[i].name, n, deviations);
}

Test(hostile, garbage_on_the_publish_endpoint_gets_error_malformed_and_the_broker_keeps_serving)
{
    garbage_on(0);
}

Test(hostile, garbage_on_the_worker_endpoint_gets_error_malformed_and_the_broker_keeps_serving)
{
    garbage_on(1);
}

Test(hostile, garbage_on_the_admin_endpoint_gets_error_malformed_and_the_broker_keeps_serving)
{
    garbage_on(2);
}

Test(hostile, a_frame_over_the_endpoint_cap_closes_only_that_connection)
{
    start_broker();
    endpoints();
    for (int i = 0; i < 3; i++) {
        oversized(&E[i], false, SILENCE_MS);
        oversized(&E[i], true, SILENCE_MS);
        assert_alive(E[i].name);
    }
    /* At the publish cap exactly the frame passes libzmq, and the broker
     * refuses the event itself: a CONFIRM entry "payload too large". */
    void *s = dealer(env.pub);
    expect_welcome(s, "publish", "before a payload of exactly the cap");
    char *buf = malloc(PUB_CAP);
    memset(buf, 'x', PUB_CAP);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    encode_publish(&sb, "hostile_cap", 1, 1, T8);
    fr f[2] = { { sb.data, sb.size }, { buf, PUB_CAP } };
    send_frames(s, f, 2);
    reply r = get_reply(s, REPLY_MS);
    cr_assert(r.got && r.ok, "no decodable reply to a payload of exactly the cap%s", broker_state());
    cr_assert_eq(r.m.type, MSG_CONFIRM, "got %s, expected CONFIRM", proto_type_name(r.m.type));
    cr_assert_eq(r.m.u.confirm.n, 1);
    cr_assert_eq(r.m.u.confirm.entries[0].status, PROTO_E_TOO_LARGE, "status %u: %s",
                 r.m.u.confirm.entries[0].status, r.m.u.confirm.entries[0].text);
    proto_msg_clear(&r.m);
    free(buf);
    msgpack_sbuffer_destroy(&sb);
    expect_welcome(s, "publish", "after a payload of exactly the cap");
    sock_close(s);
    assert_alive("a payload of exactly the publish cap");
}

Test(hostile, broker_rss_does_not_grow_over_ten_hostile_rounds)
{
    if (getenv("HERALD_TEST_SANITIZE"))
        cr_skip_test("RSS says nothing under AddressSanitizer, which keeps freed memory in quarantine");
    start_broker();
    endpoints();
    long rss[11] = { 0 };
    long t0 = now_ms();
    lenient = true;   /* replies are the other tests' business: here, memory */
    for (unsigned round = 1; round <= 10; round++) {
        for (int i = 0; i < 3; i++) {
            hostile_round(&E[i], 100 + round, 300);
            oversized(&E[i], round % 2 == 0, 50);
        }
        assert_alive("a whole hostile round");
        rss[round] = vmrss_kb(broker_pid);
        cr_log_info("round %2u: broker VmRSS %ld kB (%ld ms so far)", round, rss[round], now_ms() - t0);
    }
    fprintf(stderr, "hostile: broker VmRSS by round (kB):");
    for (int i = 1; i <= 10; i++) fprintf(stderr, " %ld", rss[i]);
    fprintf(stderr, "; round 10 - round 2 = %+ld kB; %d replies were not ERROR malformed\n", rss[10] - rss[2],
            deviations);
    cr_assert(rss[10] <= rss[2] + 2048, "the broker's RSS grew from %ld kB (round 2) to %ld kB (round 10)",
              rss[2], rss[10]);
}

Test(hostile, libherald_refuses_an_oversized_payload_before_sending_it)
{
    start_broker();
    herald_options o = { .endpoint = env.pub, .timeout_ms = 5000 };
    herald_client *c = herald_connect(&o);
    cr_assert_not_null(c, "herald_connect: %s", herald_last_error(NULL));
    char id[HERALD_ID_MAX];
    size_t huge = PUB_CAP + 1;
    char *buf = malloc(huge);
    memset(buf, 'x', huge);

    long p0 = published("t");
    int rc = herald_publish(c, "t", buf, MAX_PAYLOAD, NULL, id);   /* exactly max_payload: fine */
    cr_assert_eq(rc, 0, "a payload of max_payload bytes: %s: %s", herald_strerror(rc), herald_last_error(c));
    cr_assert_eq(published("t"), p0 + 1);

    /* "Before sending": with the broker stopped nothing can answer, so a
     * publish that went out would wait timeout_ms (5 s) for its confirm and
     * end in a timeout; a local refusal is immediate. The second size is over
     * the socket cap too, where a sent frame would cost the connection. */
    cr_assert_eq(kill(broker_pid, SIGSTOP), 0);
    long t = now_ms();
    int rc1 = herald_publish(c, "t", buf, MAX_PAYLOAD + 1, NULL, id);
    char why1[512];
    snprintf(why1, sizeof why1, "%s", herald_last_error(c));
    int rc2 = herald_publish(c, "t", buf, huge, NULL, id);
    char why2[512];
    snprintf(why2, sizeof why2, "%s", herald_last_error(c));
    t = now_ms() - t;
    kill(broker_pid, SIGCONT);
    cr_assert_eq(rc1, HERALD_E_TOO_LARGE, "max_payload + 1 bytes: got %d (%s): %s", rc1, herald_strerror(rc1), why1);
    cr_assert(strstr(why1, "max_payload") && strstr(why1, "1024"), "unclear error: \"%s\"", why1);
    cr_assert_eq(rc2, HERALD_E_TOO_LARGE, "%zu bytes: got %d (%s): %s", huge, rc2, herald_strerror(rc2), why2);
    cr_assert(strstr(why2, "max_payload"), "unclear error: \"%s\"", why2);
    cr_assert_lt(t, 2000, "refusing took %ld ms with the broker stopped: the payloads were sent", t);
    cr_assert_eq(published("t"), p0 + 1, "a refused payload was counted as published");

    rc = herald_publish(c, "t", "after", 5, NULL, id);   /* the client is still fine */
    cr_assert_eq(rc, 0, "%s: %s", herald_strerror(rc), herald_last_error(c));
    cr_assert_eq(published("t"), p0 + 2);
    herald_close(&c);
    free(buf);
}

static reply publish_raw(void *s, const char *producer, uint32_t n, uint64_t seq0, const char *const *topics)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    encode_publish(&sb, producer, n, seq0, topics);
    fr f[9] = { { sb.data, sb.size } };
    for (uint32_t i = 0; i < n; i++) f[1 + i] = (fr){ "body", 4 };
    send_frames(s, f, 1 + (int)n);
    msgpack_sbuffer_destroy(&sb);
    return get_reply(s, REPLY_MS);
}

Test(hostile, unknown_topic_is_a_confirm_entry_and_an_invalid_topic_name_is_an_error)
{
    start_broker();
    void *s = dealer(env.pub);
    expect_welcome(s, "publish", "HELLO");
    long p0 = published("t");

    const char *unknown[1] = { "nope" };
    reply r = publish_raw(s, "hostile_u", 1, 1, unknown);
    cr_assert(r.got && r.ok, "no decodable reply to a PUBLISH to an unknown topic%s", broker_state());
    cr_assert_eq(r.m.type, MSG_CONFIRM, "unknown topic: got %s (%s), expected CONFIRM", proto_type_name(r.m.type),
                 r.m.type == MSG_ERROR ? r.m.u.error.text : "");
    cr_assert_eq(r.m.u.confirm.n, 1);
    cr_assert_eq(r.m.u.confirm.entries[0].seq, 1);
    cr_assert_eq(r.m.u.confirm.entries[0].status, PROTO_E_UNKNOWN_TOPIC, "status %u: %s",
                 r.m.u.confirm.entries[0].status, r.m.u.confirm.entries[0].text);
    cr_assert(strstr(r.m.u.confirm.entries[0].text, "nope"), "reason does not name the topic: %s",
              r.m.u.confirm.entries[0].text);
    proto_msg_clear(&r.m);

    /* invalid names: the whole PUBLISH is malformed */
    char long_name[130];
    memset(long_name, 'a', 129);
    long_name[129] = 0;
    const char *bad[] = { "bad topic!", "a/b", "t\n", long_name, "é" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *one[1] = { bad[i] };
        r = publish_raw(s, "hostile_u", 1, 10 + i, one);
        cr_assert(r.got && r.ok, "no decodable reply to invalid topic #%zu%s", i, broker_state());
        /* refused whole, answered with its seq (PROTOCOL.md §5) */
        cr_assert_eq(r.m.type, MSG_CONFIRM, "invalid topic #%zu: got %s, expected CONFIRM", i, proto_type_name(r.m.type));
        cr_assert_eq(r.m.u.confirm.n, 1);
        cr_assert_eq(r.m.u.confirm.entries[0].seq, 10 + i);
        cr_assert_eq(r.m.u.confirm.entries[0].status, PROTO_E_MALFORMED, "invalid topic #%zu: status %u: %s", i,
                     r.m.u.confirm.entries[0].status, r.m.u.confirm.entries[0].text);
        proto_msg_clear(&r.m);
    }
    /* topic "" without a function (an async invoke needs one) */
    const char *empty[1] = { "" };
    r = publish_raw(s, "hostile_u", 1, 20, empty);
    cr_assert(r.got && r.ok && r.m.type == MSG_CONFIRM && r.m.u.confirm.entries[0].seq == 20 &&
              r.m.u.confirm.entries[0].status == PROTO_E_MALFORMED,
              "topic \"\" without a function: expected CONFIRM seq 20 malformed");
    proto_msg_clear(&r.m);
    cr_assert_eq(published("t"), p0, "refused publishes were counted");

    /* a batch with one known and one unknown topic: each entry answered on its own */
    const char *mixed[2] = { "t", "nope" };
    r = publish_raw(s, "hostile_u", 2, 30, mixed);
    cr_assert(r.got && r.ok && r.m.type == MSG_CONFIRM, "mixed batch: expected CONFIRM%s", broker_state());
    cr_assert_eq(r.m.u.confirm.n, 2);
    cr_assert_eq(r.m.u.confirm.entries[0].seq, 30);
    cr_assert_eq(r.m.u.confirm.entries[0].status, PROTO_OK, "%s", r.m.u.confirm.entries[0].text);
    cr_assert_str_eq(r.m.u.confirm.entries[0].text, "hostile_u-30");
    cr_assert_eq(r.m.u.confirm.entries[1].seq, 31);
    cr_assert_eq(r.m.u.confirm.entries[1].status, PROTO_E_UNKNOWN_TOPIC, "%s", r.m.u.confirm.entries[1].text);
    proto_msg_clear(&r.m);
    cr_assert_eq(published("t"), p0 + 1);
    sock_close(s);
    assert_alive("unknown and invalid topics");
}

/* PROTOCOL.md §2 Attributes: keys are names ([A-Za-z0-9_.-]{1,128}), so a raw
 * client cannot store one that libherald would refuse: the PUBLISH is
 * malformed (status 1 naming the entry and the key, in a CONFIRM entry per
 * seq), nothing of it is
 * stored, and the broker keeps serving. */
Test(hostile, an_attribute_key_outside_the_name_rule_is_an_error_and_nothing_is_stored)
{
    start_broker();
    void *s = dealer(env.pub);
    expect_welcome(s, "publish", "HELLO");
    long p0 = published("t");
    const char *bad[] = { "has space", "\xc3\xa9", "a/b", "k\n", "x=y" };
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        proto_attr attrs[2] = { { .key = "ok", .value = "v" }, { .key = (char *)bad[i], .value = "v" } };
        proto_pub pubs[2] = { { .seq = 10 + 2 * i, .topic = "t" },
                              { .seq = 11 + 2 * i, .topic = "t", .attrs = attrs, .nattrs = 2 } };
        proto_publish p = { .producer = "hostile_k", .pubs = pubs, .npubs = 2 };
        msgpack_sbuffer_clear(&sb);
        cr_assert_eq(proto_encode_publish(&sb, &p), 0);
        fr f[3] = { { sb.data, sb.size }, { "a", 1 }, { "b", 1 } };
        send_frames(s, f, 3);
        reply r = get_reply(s, REPLY_MS);
        cr_assert(r.got && r.ok, "no decodable reply to attribute key #%zu%s", i, broker_state());
        /* refused whole: both seqs answered, status 1, the reason naming the entry */
        cr_assert_eq(r.m.type, MSG_CONFIRM, "attribute key #%zu: got %s, expected CONFIRM", i, proto_type_name(r.m.type));
        cr_assert_eq(r.m.u.confirm.n, 2);
        for (int k = 0; k < 2; k++) {
            const proto_confirm_entry *e = &r.m.u.confirm.entries[k];
            cr_assert_eq(e->seq, 10 + 2 * i + (size_t)k);
            cr_assert_eq(e->status, PROTO_E_MALFORMED, "key #%zu: status %u: %s", i, e->status, e->text);
            cr_assert(strstr(e->text, "entry 1") && strstr(e->text, "attribute 1 key"),
                      "key #%zu: the error does not say which: %s", i, e->text);
        }
        proto_msg_clear(&r.m);
    }
    msgpack_sbuffer_destroy(&sb);
    cr_assert_eq(published("t"), p0, "a PUBLISH with a bad attribute key was stored in part");
    sock_close(s);
    assert_alive("attribute keys outside the name rule");
}

/* PROTOCOL.md §5: a refused message that was itself an ERROR (or, where the
 * endpoint does not take it, a HEARTBEAT) is dropped, never answered — two
 * peers must not bounce ERRORs at each other. The next reply on the same
 * connection is the WELCOME to the HELLO sent after it. */
/* Sends one message, then HELLO: the first reply must be the WELCOME. When
 * something answered the message instead, that is a soft failure, and the
 * WELCOME is read too so the connection stays in step. */
static void expect_unanswered(void *s, const char *ep, const char *what, const msgpack_sbuffer *msg)
{
    send_sb(s, msg);
    msgpack_sbuffer hello;
    msgpack_sbuffer_init(&hello);
    encode_hello(&hello, "hostile_probe", strcmp(ep, "worker") == 0 ? "worker" : "publisher");
    send_sb(s, &hello);
    msgpack_sbuffer_destroy(&hello);
    reply r = get_reply(s, REPLY_MS);
    cr_assert(r.got && r.ok, "%s endpoint, %s: no decodable reply to the HELLO after it%s", ep, what,
              broker_state());
    bool answered = r.m.type != MSG_WELCOME;
    cr_expect(!answered, "%s endpoint: %s was answered with %s %u \"%s\"; PROTOCOL.md §5: it must be dropped", ep,
              what, proto_type_name(r.m.type), r.m.type == MSG_ERROR ? r.m.u.error.status : 0,
              r.m.type == MSG_ERROR ? r.m.u.error.text : "");
    proto_msg_clear(&r.m);
    if (answered) {
        r = get_reply(s, REPLY_MS);
        cr_assert(r.got && r.ok && r.m.type == MSG_WELCOME, "%s endpoint: no WELCOME after the answer to %s", ep,
                  what);
        proto_msg_clear(&r.m);
    }
}

Test(hostile, an_error_or_a_stray_heartbeat_is_dropped_not_answered)
{
    start_broker();
    endpoints();
    msgpack_sbuffer err, hb;
    msgpack_sbuffer_init(&err);
    msgpack_sbuffer_init(&hb);
    cr_assert_eq(proto_encode_error(&err, PROTO_E_MALFORMED, "you sent garbage"), 0);
    cr_assert_eq(proto_encode_heartbeat(&hb), 0);
    for (int i = 0; i < 3; i++) {
        void *s = dealer(E[i].ep);
        expect_welcome(s, E[i].name, "HELLO");
        expect_unanswered(s, E[i].name, "an ERROR", &err);
        /* the worker endpoint takes HEARTBEAT; from a peer that never
         * registered it answers "not registered" (PROTOCOL.md §6) */
        if (i != 1) expect_unanswered(s, E[i].name, "a HEARTBEAT", &hb);
        sock_close(s);
    }
    msgpack_sbuffer_destroy(&err);
    msgpack_sbuffer_destroy(&hb);
    assert_alive("ERROR and HEARTBEAT messages");
}

/* A worker that says BYE while a delivery is still on its way to it never
 * started that delivery (it reports everything it ran before BYE): the
 * delivery goes back to the queue without counting an attempt, so with
 * max_attempts = 1 it is still run, by the next worker, and not dead-lettered. */
Test(hostile, a_delivery_in_transit_to_a_worker_that_says_bye_is_returned_without_an_attempt)
{
    char text[2048];   /* heartbeats of 10 s: the raw worker need not send any */
    snprintf(text, sizeof text,
             "broker = { publish_endpoint = \"%s\"; worker_endpoint = \"%s\"; admin_endpoint = \"%s\";\n"
             "  data_dir = \"%s/data\"; durability = \"os\"; heartbeat = 10.0; };\n"
             "functions = ( { name = \"g\"; max_attempts = 1;\n"
             "  native = { library = \"examples/handlers/libcount.so\"; symbol = \"count\"; };\n"
             "  env = { COUNT_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"g\"; } ); } );\n",
             env.pub, env.wrk, env.adm, env.dir, h_path(&env, "seen.txt"));
    h_write(env.cfg, text);
    broker_pid = h_broker(&env);
    broker_exit = -1;

    void *s = dealer_socket();
    zmq_setsockopt(s, ZMQ_ROUTING_ID, "rawworker", 9);
    cr_assert_eq(zmq_connect(s, env.wrk), 0);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    proto_register reg = { .worker_id = "rawworker", .host = "h", .pid = 1, .slots = 1 };
    cr_assert_eq(proto_encode_register(&sb, &reg), 0);
    send_sb(s, &sb);
    reply r = get_reply(s, REPLY_MS);
    cr_assert(r.got && r.ok && r.m.type == MSG_CONFIG, "no CONFIG after REGISTER%s", broker_state());
    proto_msg_clear(&r.m);
    msgpack_sbuffer_clear(&sb);
    proto_refused none = { 0 };
    cr_assert_eq(proto_encode_refused(&sb, &none), 0);
    send_sb(s, &sb);

    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "bin/herald-publish", "--broker", env.pub, "t", "in-transit", NULL);
    cr_assert_eq(rc, 0, "herald-publish: %s", err);
    free(out);
    free(err);
    do {   /* heartbeats may come first */
        r = get_reply(s, REPLY_MS);
        cr_assert(r.got && r.ok, "no DELIVER for the raw worker%s", broker_state());
        if (r.m.type != MSG_DELIVER) proto_msg_clear(&r.m);
    } while (r.m.type != MSG_DELIVER);
    proto_msg_clear(&r.m);

    /* as a draining worker whose last read came before this DELIVER */
    msgpack_sbuffer_clear(&sb);
    cr_assert_eq(proto_encode_bye(&sb), 0);
    send_sb(s, &sb);
    msgpack_sbuffer_destroy(&sb);

    h_worker(&env, NULL, 1);
    h_wait_lines(h_path(&env, "seen.txt"), 1, 30000);
    char *st = h_stats(&env);
    cr_assert_not_null(st);
    cr_assert(strstr(st, "\"dead\":0"), "the delivery in transit was dead-lettered: %s", st);
    free(st);
}
