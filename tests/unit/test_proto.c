/* Unit tests of proto/: codec round trips, every rejection rule of the
 * decoder, the pre-scan on hostile byte streams, frames over inproc sockets,
 * and the small utilities.
 *
 * Rejection tests check the reason in err, not only the -1, so a frame
 * refused for some other (wrong) reason fails the test; each limit is tested
 * at its boundary from both sides. Helpers are static and prefixed tp_ since
 * every module's unit tests link into one Criterion binary.
 */
#include <criterion/criterion.h>
#include <criterion/redirect.h>

#include <stdlib.h>
#include <string.h>

#include "../../proto/proto.h"

/* ---------------------------------------------------------------- helpers */

static msgpack_sbuffer tp_sb;
static msgpack_packer tp_pk;
static char tp_err[256];

static void tp_setup(void)
{
    msgpack_sbuffer_init(&tp_sb);
    msgpack_packer_init(&tp_pk, &tp_sb, msgpack_sbuffer_write);
    tp_err[0] = '\0';
}

static void tp_teardown(void)
{
    msgpack_sbuffer_destroy(&tp_sb);
}

TestSuite(proto, .init = tp_setup, .fini = tp_teardown, .timeout = 30);

static void tp_str(const char *s, size_t n)
{
    msgpack_pack_str(&tp_pk, n);
    msgpack_pack_str_body(&tp_pk, s, n);
}
#define TP_STR(lit) tp_str((lit), strlen(lit))

static void tp_head(const char *type, size_t nfields)
{
    msgpack_pack_array(&tp_pk, 2 + nfields);
    msgpack_pack_uint64(&tp_pk, 1);
    TP_STR(type);
}

/* Decodes the sbuffer; the message must be refused with `needle` in err. */
static void tp_reject_buf(const void *buf, size_t len, const char *needle)
{
    proto_msg m;
    memset(&m, 0xa5, sizeof m);
    int rc = proto_decode(buf, len, &m, tp_err, sizeof tp_err);
    cr_assert_eq(rc, -1, "accepted, expected refusal with \"%s\"", needle);
    cr_assert(strstr(tp_err, needle), "err \"%s\" lacks \"%s\"", tp_err, needle);
    cr_assert_null(m.arena, "a refused message must own nothing");
    proto_msg_clear(&m);   /* allowed, and harmless, after a refusal */
}
static void tp_reject(const char *needle) { tp_reject_buf(tp_sb.data, tp_sb.size, needle); }

static void tp_accept(proto_msg *m)
{
    int rc = proto_decode(tp_sb.data, tp_sb.size, m, tp_err, sizeof tp_err);
    cr_assert_eq(rc, 0, "refused: %s", tp_err);
}

static char *tp_repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    cr_assert_not_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* A valid one-entry publish, fields overridable before encoding. */
static proto_attr tp_attrs[32];
static proto_pub tp_pub;
static proto_publish tp_publish;
static void tp_default_publish(void)
{
    tp_attrs[0] = (proto_attr){"region", "eu"};
    tp_pub = (proto_pub){.seq = 7, .topic = "orders.created", .attrs = tp_attrs, .nattrs = 1,
                         .delay_ms = 0, .dedup_id = NULL, .function = NULL};
    tp_publish = (proto_publish){.producer = "shop_1", .pubs = &tp_pub, .npubs = 1};
}
static void tp_encode_publish(void)
{
    cr_assert_eq(proto_encode_publish(&tp_sb, &tp_publish), 0);
}

/* Every encoder's output is re-encoded from its decoding: byte-identical. */
static void tp_reencode_same(const proto_msg *m)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = -1;
    switch (m->type) {
    case MSG_HELLO: rc = proto_encode_hello(&sb, &m->u.hello); break;
    case MSG_WELCOME: rc = proto_encode_welcome(&sb, &m->u.welcome); break;
    case MSG_PUBLISH: rc = proto_encode_publish(&sb, &m->u.publish); break;
    case MSG_CONFIRM: rc = proto_encode_confirm(&sb, &m->u.confirm); break;
    case MSG_REGISTER: rc = proto_encode_register(&sb, &m->u.reg); break;
    case MSG_CONFIG: rc = proto_encode_config(&sb, &m->u.config); break;
    case MSG_DELIVER: rc = proto_encode_deliver(&sb, &m->u.deliver); break;
    case MSG_RESULT: rc = proto_encode_result(&sb, &m->u.result); break;
    case MSG_HEARTBEAT: rc = proto_encode_heartbeat(&sb); break;
    case MSG_DRAIN: rc = proto_encode_drain(&sb); break;
    case MSG_ERROR: rc = proto_encode_error(&sb, m->u.error.status, m->u.error.text); break;
    case MSG_INVOKE: rc = proto_encode_invoke(&sb, &m->u.invoke); break;
    case MSG_INVOKE_REPLY: rc = proto_encode_invoke_reply(&sb, &m->u.invoke_reply); break;
    case MSG_REFUSED: rc = proto_encode_refused(&sb, &m->u.refused); break;
    case MSG_BYE: rc = proto_encode_bye(&sb); break;
    case MSG_STATS: rc = proto_encode_stats(&sb, &m->u.stats); break;
    case MSG_ADMIN:
    case MSG_ADMIN_REPLY: {
        /* Re-pack the kept object: proves it survived in the message's zone/arena. */
        msgpack_sbuffer o;
        msgpack_sbuffer_init(&o);
        msgpack_packer p;
        msgpack_packer_init(&p, &o, msgpack_sbuffer_write);
        if (m->type == MSG_ADMIN) {
            msgpack_pack_object(&p, m->u.admin.args);
            rc = proto_encode_admin(&sb, m->u.admin.req, m->u.admin.command, o.data, o.size);
        } else {
            msgpack_pack_object(&p, m->u.admin_reply.result);
            rc = proto_encode_admin_reply(&sb, m->u.admin_reply.req, m->u.admin_reply.status,
                                          m->u.admin_reply.error, o.data, o.size);
        }
        msgpack_sbuffer_destroy(&o);
        break;
    }
    default: cr_assert_fail("no encoder");
    }
    cr_assert_eq(rc, 0);
    cr_assert_eq(sb.size, tp_sb.size, "re-encoding changed the size");
    cr_assert_eq(memcmp(sb.data, tp_sb.data, sb.size), 0, "re-encoding changed the bytes");
    msgpack_sbuffer_destroy(&sb);
}

/* Every proper prefix of a valid frame is refused, by the pre-scan first. */
static void tp_all_prefixes_fail(void)
{
    for (size_t k = 0; k < tp_sb.size; k++) {
        /* A heap copy of exactly k bytes, so ASan sees any read past the end. */
        char *p = malloc(k ? k : 1);
        memcpy(p, tp_sb.data, k);
        cr_assert_eq(proto_prescan(p, k, tp_err, sizeof tp_err), -1, "prefix %zu passed prescan", k);
        proto_msg m;
        cr_assert_eq(proto_decode(p, k, &m, tp_err, sizeof tp_err), -1, "prefix %zu decoded", k);
        free(p);
    }
    cr_assert_eq(proto_prescan(tp_sb.data, tp_sb.size, tp_err, sizeof tp_err), 0, "%s", tp_err);
}

/* ------------------------------------------------------- round trips */

Test(proto, roundtrip_hello)
{
    proto_hello h = {"worker-1_a", "worker"};
    cr_assert_eq(proto_encode_hello(&tp_sb, &h), 0);
    proto_msg m;
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_HELLO);
    cr_assert_eq(m.nframes, 0);
    cr_assert_str_eq(m.u.hello.client_id, "worker-1_a");
    cr_assert_str_eq(m.u.hello.role, "worker");
    tp_reencode_same(&m);
    tp_all_prefixes_fail();
    proto_msg_clear(&m);
    proto_msg_clear(&m);   /* idempotent */
}

Test(proto, roundtrip_welcome)
{
    proto_welcome w = {.max_payload = 5ull << 32, .max_batch = 1024, .heartbeat_ms = 2500};
    cr_assert_eq(proto_encode_welcome(&tp_sb, &w), 0);
    proto_msg m;
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_WELCOME);
    cr_assert_eq(m.u.welcome.max_payload, 5ull << 32);
    cr_assert_eq(m.u.welcome.max_batch, 1024);
    cr_assert_eq(m.u.welcome.heartbeat_ms, 2500);
    tp_reencode_same(&m);
    tp_all_prefixes_fail();
    proto_msg_clear(&m);
}

Test(proto, roundtrip_publish)
{
    proto_attr a[PROTO_MAX_ATTRS];
    char keys[PROTO_MAX_ATTRS][16];
    for (int i = 0; i < PROTO_MAX_ATTRS; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        a[i] = (proto_attr){keys[i], i == 3 ? "" : "v"};
    }
    proto_pub pubs[3] = {
        {.seq = 1, .topic = "orders.created", .attrs = a, .nattrs = PROTO_MAX_ATTRS,
         .delay_ms = 900000, .dedup_id = "order-42"},
        {.seq = UINT64_MAX, .topic = "", .function = "resize_image", .attrs = NULL, .nattrs = 0},
        {.seq = 3, .topic = "t", .attrs = a + 1, .nattrs = 1},
    };
    proto_publish p = {.producer = "shop_1", .pubs = pubs, .npubs = 3};
    cr_assert_eq(proto_encode_publish(&tp_sb, &p), 0);
    proto_msg m;
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_PUBLISH);
    cr_assert_eq(m.nframes, 3);
    const proto_publish *d = &m.u.publish;
    cr_assert_str_eq(d->producer, "shop_1");
    cr_assert_eq(d->npubs, 3);
    cr_assert_eq((uintptr_t)d->pubs % _Alignof(proto_pub), 0, "pubs misaligned");
    cr_assert_eq(d->pubs[0].seq, 1);
    cr_assert_str_eq(d->pubs[0].topic, "orders.created");
    cr_assert_null(d->pubs[0].function);
    cr_assert_eq(d->pubs[0].delay_ms, 900000);
    cr_assert_str_eq(d->pubs[0].dedup_id, "order-42");
    cr_assert_eq(d->pubs[0].nattrs, PROTO_MAX_ATTRS);
    cr_assert_eq((uintptr_t)d->pubs[0].attrs % _Alignof(proto_attr), 0, "attrs misaligned");
    for (int i = 0; i < PROTO_MAX_ATTRS; i++) {
        cr_assert_str_eq(d->pubs[0].attrs[i].key, keys[i]);
        cr_assert_str_eq(d->pubs[0].attrs[i].value, i == 3 ? "" : "v");
    }
    cr_assert_eq(d->pubs[1].seq, UINT64_MAX);
    cr_assert_str_eq(d->pubs[1].topic, "");
    cr_assert_str_eq(d->pubs[1].function, "resize_image");
    cr_assert_null(d->pubs[1].dedup_id);
    cr_assert_eq(d->pubs[1].nattrs, 0);
    cr_assert_str_eq(d->pubs[2].attrs[0].key, "k1");
    /* Everything lives in the arena, and the arena was sized exactly. */
    cr_assert((char *)d->producer >= m.arena && (char *)d->producer < m.arena + m.arena_cap);
    cr_assert_eq(m.arena_used, m.arena_cap);
    tp_reencode_same(&m);
    tp_all_prefixes_fail();
    proto_msg_clear(&m);
}

Test(proto, roundtrip_confirm)
{
    char *longtext = tp_repeat('x', PROTO_ERROR_WIRE_MAX);
    proto_confirm_entry e[3] = {{1, PROTO_OK, "shop_1-1"}, {2, PROTO_E_THROTTLED, "throttled"},
                                {3, PROTO_E_CONFLICT, longtext}};
    proto_confirm c = {e, 3};
    cr_assert_eq(proto_encode_confirm(&tp_sb, &c), 0);
    proto_msg m;
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_CONFIRM);
    cr_assert_eq(m.nframes, 0);
    cr_assert_eq(m.u.confirm.n, 3);
    cr_assert_eq(m.u.confirm.entries[1].seq, 2);
    cr_assert_eq(m.u.confirm.entries[1].status, PROTO_E_THROTTLED);
    cr_assert_str_eq(m.u.confirm.entries[0].text, "shop_1-1");
    cr_assert_str_eq(m.u.confirm.entries[2].text, longtext);
    tp_reencode_same(&m);
    proto_msg_clear(&m);
    free(longtext);
}

Test(proto, roundtrip_register)
{
    char *fns[] = {"resize_image", "a.b-c_d"};
    proto_register r = {.worker_id = "w-1", .host = "host.example:with spaces", .pid = UINT32_MAX,
                        .slots = 1000000, .functions = fns, .nfunctions = 2};
    cr_assert_eq(proto_encode_register(&tp_sb, &r), 0);
    proto_msg m;
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_REGISTER);
    cr_assert_str_eq(m.u.reg.worker_id, "w-1");
    cr_assert_str_eq(m.u.reg.host, "host.example:with spaces");
    cr_assert_eq(m.u.reg.pid, UINT32_MAX);
    cr_assert_eq(m.u.reg.slots, 1000000);
    cr_assert_eq(m.u.reg.nfunctions, 2);
    cr_assert_str_eq(m.u.reg.functions[1], "a.b-c_d");
    tp_reencode_same(&m);
    tp_all_prefixes_fail();
    proto_msg_clear(&m);

    /* zero functions: "every function" */
    tp_teardown(), tp_setup();
    r.nfunctions = 0;
    cr_assert_eq(proto_encode_register(&tp_sb, &r), 0);
    tp_accept(&m);
    cr_assert_eq(m.u.reg.nfunctions, 0);
    proto_msg_clear(&m);
}

Test(proto, roundtrip_config)
{
    char *argv[] = {"/usr/bin/python3", "-c", ""};
    proto_attr env[] = {{"PATH", "/usr/bin"}, {"EMPTY", ""}};
    char *boot[] = {"python3", "bootstrap.py"};
    proto_fndef fns[4] = {
        {.name = "resize", .native = false, .exec = argv, .nexec = 3, .timeout_ms = 30000,
         .memory_mb = 256, .max_attempts = 5, .env = env, .nenv = 2},
        {.name = "fast.one", .native = true, .library = "/opt/h/libx.so", .symbol = "handle",
         .timeout_ms = 1, .memory_mb = 0, .max_attempts = 1},
        {.name = "warm", .runtime = true, .exec = boot, .nexec = 2, .timeout_ms = 3000, .memory_mb = 512,
         .max_attempts = 2, .env = env, .nenv = 1,
         .rt = {.handler = "app.handler", .format = PROTO_RT_SNS, .max_invocations = 1000000000,
                .idle_timeout_ms = 86400000, .init_timeout_ms = 900000, .concurrency = 8}},
        {.name = "warm2", .runtime = true, .exec = boot, .nexec = 1,
         .rt = {.handler = NULL, .format = PROTO_RT_RAW, .max_invocations = 0, .idle_timeout_ms = 1,
                .init_timeout_ms = UINT32_MAX, .concurrency = 0}},
    };
    proto_config c = {.heartbeat_ms = 1000, .max_payload = 6u << 20, .fns = fns, .nfns = 4};
    cr_assert_eq(proto_encode_config(&tp_sb, &c), 0);
    proto_msg m;
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_CONFIG);
    const proto_config *d = &m.u.config;
    cr_assert_eq(d->heartbeat_ms, 1000);
    cr_assert_eq(d->max_payload, 6u << 20);
    cr_assert_eq(d->nfns, 4);
    cr_assert_str_eq(d->fns[0].name, "resize");
    cr_assert_not(d->fns[0].native);
    cr_assert_not(d->fns[0].runtime);
    cr_assert_not(d->fns[1].runtime);
    cr_assert_eq(d->fns[0].nexec, 3);
    cr_assert_str_eq(d->fns[0].exec[0], "/usr/bin/python3");
    cr_assert_str_eq(d->fns[0].exec[2], "");
    cr_assert_null(d->fns[0].library);
    cr_assert_null(d->fns[0].symbol);
    cr_assert_eq(d->fns[0].timeout_ms, 30000);
    cr_assert_eq(d->fns[0].memory_mb, 256);
    cr_assert_eq(d->fns[0].max_attempts, 5);
    cr_assert_eq(d->fns[0].nenv, 2);
    cr_assert_str_eq(d->fns[0].env[0].key, "PATH");
    cr_assert_str_eq(d->fns[0].env[1].value, "");
    cr_assert(d->fns[1].native);
    cr_assert_eq(d->fns[1].nexec, 0);
    cr_assert_str_eq(d->fns[1].library, "/opt/h/libx.so");
    cr_assert_str_eq(d->fns[1].symbol, "handle");
    cr_assert_eq(d->fns[1].nenv, 0);
    const proto_fndef *w = &d->fns[2];
    cr_assert(w->runtime);
    cr_assert_not(w->native);
    cr_assert_eq(w->nexec, 2);
    cr_assert_str_eq(w->exec[1], "bootstrap.py");
    cr_assert_null(w->library);
    cr_assert_eq(w->timeout_ms, 3000);
    cr_assert_eq(w->nenv, 1);
    cr_assert_str_eq(w->rt.handler, "app.handler");
    cr_assert_eq(w->rt.format, PROTO_RT_SNS);
    cr_assert_eq(w->rt.max_invocations, 1000000000);
    cr_assert_eq(w->rt.idle_timeout_ms, 86400000);
    cr_assert_eq(w->rt.init_timeout_ms, 900000);
    cr_assert_eq(w->rt.concurrency, 8);
    w = &d->fns[3];
    cr_assert(w->runtime);
    cr_assert_null(w->rt.handler);
    cr_assert_eq(w->rt.format, PROTO_RT_RAW);
    cr_assert_eq(w->rt.max_invocations, 0);
    cr_assert_eq(w->rt.idle_timeout_ms, 1);
    cr_assert_eq(w->rt.init_timeout_ms, UINT32_MAX);
    cr_assert_eq(w->rt.concurrency, 0);
    tp_reencode_same(&m);
    tp_all_prefixes_fail();
    proto_msg_clear(&m);
}

Test(proto, roundtrip_deliver)
{
    proto_attr a[] = {{"k", "v"}};
    proto_delivery ds[2] = {
        {.lease = 99, .function = "resize", .topic = "images.new", .message_id = "shop_1-18446744073709551615",
         .attempt = 2, .max_attempts = 5, .attrs = a, .nattrs = 1},
        {.lease = 100, .function = "resize", .topic = "", .message_id = "p-1", .attempt = 1,
         .max_attempts = 1},
    };
    proto_deliver d = {ds, 2};
    cr_assert_eq(proto_encode_deliver(&tp_sb, &d), 0);
    proto_msg m;
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_DELIVER);
    cr_assert_eq(m.nframes, 2);
    cr_assert_eq(m.u.deliver.n, 2);
    cr_assert_eq(m.u.deliver.ds[0].lease, 99);
    cr_assert_str_eq(m.u.deliver.ds[0].function, "resize");
    cr_assert_str_eq(m.u.deliver.ds[0].topic, "images.new");
    cr_assert_str_eq(m.u.deliver.ds[0].message_id, "shop_1-18446744073709551615");
    cr_assert_eq(m.u.deliver.ds[0].attempt, 2);
    cr_assert_eq(m.u.deliver.ds[0].max_attempts, 5);
    cr_assert_str_eq(m.u.deliver.ds[0].attrs[0].value, "v");
    cr_assert_str_eq(m.u.deliver.ds[1].topic, "");
    tp_reencode_same(&m);
    tp_all_prefixes_fail();
    proto_msg_clear(&m);
}

Test(proto, roundtrip_result)
{
    char *longerr = tp_repeat('e', PROTO_ERROR_WIRE_MAX);
    proto_result_entry rs[3] = {
        {.lease = 1, .outcome = OUT_OK, .started_ms = 1700000000000, .duration_us = 12, .error = NULL},
        {.lease = 2, .outcome = OUT_RETURNED, .started_ms = -5, .duration_us = UINT32_MAX, .error = "x"},
        {.lease = 3, .outcome = OUT_CRASHED, .started_ms = INT64_MIN, .error = longerr},
    };
    proto_result r = {rs, 3};
    cr_assert_eq(proto_encode_result(&tp_sb, &r), 0);
    proto_msg m;
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_RESULT);
    cr_assert_eq(m.nframes, 3);
    cr_assert_eq(m.u.result.rs[0].outcome, OUT_OK);
    cr_assert_eq(m.u.result.rs[0].started_ms, 1700000000000);
    cr_assert_null(m.u.result.rs[0].error);
    cr_assert_eq(m.u.result.rs[1].outcome, OUT_RETURNED);
    cr_assert_eq(m.u.result.rs[1].started_ms, -5);
    cr_assert_eq(m.u.result.rs[1].duration_us, UINT32_MAX);
    cr_assert_str_eq(m.u.result.rs[1].error, "x");
    cr_assert_eq(m.u.result.rs[2].started_ms, INT64_MIN);
    cr_assert_str_eq(m.u.result.rs[2].error, longerr);
    tp_reencode_same(&m);
    proto_msg_clear(&m);
    free(longerr);
}

Test(proto, roundtrip_heartbeat_drain)
{
    proto_msg m;
    cr_assert_eq(proto_encode_heartbeat(&tp_sb), 0);
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_HEARTBEAT);
    cr_assert_null(m.arena);
    tp_reencode_same(&m);
    tp_all_prefixes_fail();
    proto_msg_clear(&m);
    tp_teardown(), tp_setup();
    cr_assert_eq(proto_encode_drain(&tp_sb), 0);
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_DRAIN);
    tp_reencode_same(&m);
    proto_msg_clear(&m);
}

Test(proto, roundtrip_refused_and_bye)
{
    proto_msg m;
    proto_refusal rs[2] = { { "notify", "/srv/h/notify.sh is not an executable program" }, { "audit", "" } };
    cr_assert_eq(proto_encode_refused(&tp_sb, &(proto_refused){ rs, 2 }), 0);
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_REFUSED);
    cr_assert_eq(m.nframes, 0);
    cr_assert_eq(m.u.refused.n, 2);
    cr_assert_str_eq(m.u.refused.rs[0].function, "notify");
    cr_assert_str_eq(m.u.refused.rs[0].reason, rs[0].reason);
    cr_assert_str_eq(m.u.refused.rs[1].reason, "");
    tp_reencode_same(&m);
    tp_all_prefixes_fail();
    proto_msg_clear(&m);
    /* sent even when the worker refuses nothing */
    tp_teardown(), tp_setup();
    cr_assert_eq(proto_encode_refused(&tp_sb, &(proto_refused){ NULL, 0 }), 0);
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_REFUSED);
    cr_assert_eq(m.u.refused.n, 0);
    tp_reencode_same(&m);
    proto_msg_clear(&m);
    tp_teardown(), tp_setup();
    cr_assert_eq(proto_encode_bye(&tp_sb), 0);
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_BYE);
    cr_assert_null(m.arena);
    tp_reencode_same(&m);
    tp_all_prefixes_fail();
    proto_msg_clear(&m);
}

Test(proto, refused_fields_are_checked)
{
    /* an entry is [function, reason]: a name and a string */
    tp_head("REFUSED", 1);
    msgpack_pack_array(&tp_pk, 1);
    msgpack_pack_array(&tp_pk, 2);
    TP_STR("bad name!");
    TP_STR("x");
    tp_reject("REFUSED entry 0: function: invalid name");
    tp_sb.size = 0;
    tp_head("REFUSED", 1);
    msgpack_pack_array(&tp_pk, 1);
    msgpack_pack_array(&tp_pk, 3);
    TP_STR("f");
    TP_STR("x");
    TP_STR("y");
    tp_reject("REFUSED entry 0: 3 elements, want 2..2");
    tp_sb.size = 0;
    tp_head("REFUSED", 1);
    msgpack_pack_array(&tp_pk, 1);
    msgpack_pack_array(&tp_pk, 2);
    TP_STR("f");
    msgpack_pack_nil(&tp_pk);
    tp_reject("REFUSED entry 0: reason: not a string");
    tp_sb.size = 0;
    char *longwhy = tp_repeat('w', PROTO_ERROR_WIRE_MAX + 1);
    tp_head("REFUSED", 1);
    msgpack_pack_array(&tp_pk, 1);
    msgpack_pack_array(&tp_pk, 2);
    TP_STR("f");
    TP_STR(longwhy);
    tp_reject("REFUSED entry 0: reason: length");
    free(longwhy);
    tp_sb.size = 0;
    tp_head("REFUSED", 1);
    msgpack_pack_map(&tp_pk, 0);
    tp_reject("REFUSED entries: not an array");
    tp_sb.size = 0;
    tp_head("REFUSED", 1);
    msgpack_pack_array(&tp_pk, PROTO_MAX_BATCH + 1);
    for (int i = 0; i < PROTO_MAX_BATCH + 1; i++) {
        msgpack_pack_array(&tp_pk, 2);
        TP_STR("f");
        TP_STR("");
    }
    tp_reject("REFUSED entries: 1025 elements, want 0..1024");
    tp_sb.size = 0;
    tp_head("BYE", 1);
    msgpack_pack_nil(&tp_pk);
    tp_reject("BYE: 3 elements, want 2");
}

Test(proto, roundtrip_admin_args_outlive_frame)
{
    msgpack_sbuffer args;
    msgpack_sbuffer_init(&args);
    msgpack_packer p;
    msgpack_packer_init(&p, &args, msgpack_sbuffer_write);
    msgpack_pack_map(&p, 2);
    msgpack_pack_str(&p, 2), msgpack_pack_str_body(&p, "id", 2);
    msgpack_pack_str(&p, 8), msgpack_pack_str_body(&p, "shop_1-9", 8);
    msgpack_pack_str(&p, 5), msgpack_pack_str_body(&p, "limit", 5);
    msgpack_pack_int(&p, 50);
    cr_assert_eq(proto_encode_admin(&tp_sb, 77, "dlq.list", args.data, args.size), 0);
    msgpack_sbuffer_destroy(&args);

    /* Decode from a heap copy that is scribbled over and freed before the
     * args are read: ASan or the compare catches any pointer into it. */
    char *copy = malloc(tp_sb.size);
    memcpy(copy, tp_sb.data, tp_sb.size);
    proto_msg m;
    cr_assert_eq(proto_decode(copy, tp_sb.size, &m, tp_err, sizeof tp_err), 0, "%s", tp_err);
    memset(copy, 'Z', tp_sb.size);
    free(copy);
    cr_assert_eq(m.type, MSG_ADMIN);
    cr_assert_eq(m.u.admin.req, 77);
    cr_assert_str_eq(m.u.admin.command, "dlq.list");
    cr_assert_eq(m.u.admin.args.type, MSGPACK_OBJECT_MAP);
    cr_assert_eq(m.u.admin.args.via.map.size, 2);
    msgpack_object_kv *kv = m.u.admin.args.via.map.ptr;
    cr_assert_eq(kv[0].val.type, MSGPACK_OBJECT_STR);
    cr_assert_eq(memcmp(kv[0].key.via.str.ptr, "id", 2), 0);
    cr_assert_eq(memcmp(kv[0].val.via.str.ptr, "shop_1-9", 8), 0);
    cr_assert_eq(kv[1].val.via.u64, 50);
    tp_reencode_same(&m);
    proto_msg_clear(&m);

    /* NULL args: an empty map */
    tp_teardown(), tp_setup();
    cr_assert_eq(proto_encode_admin(&tp_sb, 1, "stats", NULL, 0), 0);
    tp_accept(&m);
    cr_assert_eq(m.u.admin.args.type, MSGPACK_OBJECT_MAP);
    cr_assert_eq(m.u.admin.args.via.map.size, 0);
    tp_all_prefixes_fail();
    proto_msg_clear(&m);
}

Test(proto, roundtrip_admin_reply)
{
    msgpack_sbuffer res;
    msgpack_sbuffer_init(&res);
    msgpack_packer p;
    msgpack_packer_init(&p, &res, msgpack_sbuffer_write);
    msgpack_pack_array(&p, 3);
    msgpack_pack_str(&p, 3), msgpack_pack_str_body(&p, "abc", 3);
    msgpack_pack_bin(&p, 2), msgpack_pack_bin_body(&p, "\0\1", 2);
    msgpack_pack_double(&p, 1.5);
    cr_assert_eq(proto_encode_admin_reply(&tp_sb, 5, PROTO_E_NOT_FOUND, "no such id", res.data, res.size), 0);
    msgpack_sbuffer_destroy(&res);
    char *copy = malloc(tp_sb.size);
    memcpy(copy, tp_sb.data, tp_sb.size);
    proto_msg m;
    cr_assert_eq(proto_decode(copy, tp_sb.size, &m, tp_err, sizeof tp_err), 0, "%s", tp_err);
    memset(copy, 'Z', tp_sb.size);
    free(copy);
    cr_assert_eq(m.type, MSG_ADMIN_REPLY);
    cr_assert_eq(m.u.admin_reply.req, 5);
    cr_assert_eq(m.u.admin_reply.status, PROTO_E_NOT_FOUND);
    cr_assert_str_eq(m.u.admin_reply.error, "no such id");
    const msgpack_object *r = &m.u.admin_reply.result;
    cr_assert_eq(r->type, MSGPACK_OBJECT_ARRAY);
    cr_assert_eq(memcmp(r->via.array.ptr[0].via.str.ptr, "abc", 3), 0);
    cr_assert_eq(memcmp(r->via.array.ptr[1].via.bin.ptr, "\0\1", 2), 0);
    cr_assert_float_eq(r->via.array.ptr[2].via.f64, 1.5, 0);
    tp_reencode_same(&m);
    proto_msg_clear(&m);

    /* NULL result: nil; NULL error: nil */
    tp_teardown(), tp_setup();
    cr_assert_eq(proto_encode_admin_reply(&tp_sb, 6, PROTO_OK, NULL, NULL, 0), 0);
    tp_accept(&m);
    cr_assert_eq(m.u.admin_reply.result.type, MSGPACK_OBJECT_NIL);
    cr_assert_null(m.u.admin_reply.error);
    tp_all_prefixes_fail();
    proto_msg_clear(&m);
}

Test(proto, roundtrip_error)
{
    cr_assert_eq(proto_encode_error(&tp_sb, PROTO_E_MALFORMED, "PUBLISH entry 3: topic: invalid name"), 0);
    proto_msg m;
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_ERROR);
    cr_assert_eq(m.u.error.status, PROTO_E_MALFORMED);
    cr_assert_str_eq(m.u.error.text, "PUBLISH entry 3: topic: invalid name");
    tp_reencode_same(&m);
    tp_all_prefixes_fail();
    proto_msg_clear(&m);
}

Test(proto, roundtrip_invoke_and_reply)
{
    proto_invoke in = { .req = 42, .function = "thumb.v2", .timeout_ms = 35000 };
    cr_assert_eq(proto_encode_invoke(&tp_sb, &in), 0);
    proto_msg m;
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_INVOKE);
    cr_assert_eq(m.nframes, 1, "an invoke carries its payload frame");
    cr_assert_eq(m.u.invoke.req, 42);
    cr_assert_str_eq(m.u.invoke.function, "thumb.v2");
    cr_assert_eq(m.u.invoke.timeout_ms, 35000);
    tp_reencode_same(&m);
    tp_all_prefixes_fail();
    proto_msg_clear(&m);

    msgpack_sbuffer_clear(&tp_sb);
    proto_invoke_reply r = { .req = 42, .status = PROTO_E_HANDLER, .error = "exit status 3", .message_id = "i1-7" };
    cr_assert_eq(proto_encode_invoke_reply(&tp_sb, &r), 0);
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_INVOKE_REPLY);
    cr_assert_eq(m.nframes, 1);
    cr_assert_eq(m.u.invoke_reply.status, PROTO_E_HANDLER);
    cr_assert_str_eq(m.u.invoke_reply.error, "exit status 3");
    cr_assert_str_eq(m.u.invoke_reply.message_id, "i1-7");
    tp_reencode_same(&m);
    proto_msg_clear(&m);
}

Test(proto, reject_invoke_fields)
{
    tp_head("INVOKE", 3);
    msgpack_pack_uint64(&tp_pk, 1);
    TP_STR("bad name");
    msgpack_pack_uint32(&tp_pk, 0);
    tp_reject("function");
    msgpack_sbuffer_clear(&tp_sb);
    tp_head("INVOKE", 3);
    msgpack_pack_uint64(&tp_pk, 1);
    TP_STR("f");
    msgpack_pack_uint64(&tp_pk, 3600ull * 1000 + 1);   /* above an hour */
    tp_reject("timeout_ms");
    msgpack_sbuffer_clear(&tp_sb);
    tp_head("INVOKE_REPLY", 4);
    msgpack_pack_uint64(&tp_pk, 1);
    msgpack_pack_uint32(&tp_pk, PROTO_STATUS_COUNT);
    msgpack_pack_nil(&tp_pk);
    TP_STR("x");
    tp_reject("status");
}

Test(proto, encoder_layout_is_exact)
{
    /* [1, "HEARTBEAT"] and [1,"ERROR",2,"x"], byte for byte */
    static const unsigned char hb[] = {0x92, 0x01, 0xa9, 'H', 'E', 'A', 'R', 'T', 'B', 'E', 'A', 'T'};
    cr_assert_eq(proto_encode_heartbeat(&tp_sb), 0);
    cr_assert_eq(tp_sb.size, sizeof hb);
    cr_assert_eq(memcmp(tp_sb.data, hb, sizeof hb), 0);
    static const unsigned char er[] = {0x94, 0x01, 0xa5, 'E', 'R', 'R', 'O', 'R', 0x02, 0xa1, 'x'};
    tp_sb.size = 0;
    cr_assert_eq(proto_encode_error(&tp_sb, 2, "x"), 0);
    cr_assert_eq(tp_sb.size, sizeof er);
    cr_assert_eq(memcmp(tp_sb.data, er, sizeof er), 0);
    /* encoders append, they do not reset */
    cr_assert_eq(proto_encode_heartbeat(&tp_sb), 0);
    cr_assert_eq(tp_sb.size, sizeof er + sizeof hb);
}

/* ------------------------------------------------ framing-level refusals */

Test(proto, reject_random_bytes)
{
    srand(12345);
    unsigned char buf[64];
    int refused = 0;
    for (int i = 0; i < 20000; i++) {
        size_t n = 1 + (size_t)rand() % sizeof buf;
        for (size_t k = 0; k < n; k++)
            buf[k] = (unsigned char)rand();
        proto_msg m;
        if (proto_decode(buf, n, &m, tp_err, sizeof tp_err) < 0) {
            cr_assert(tp_err[0], "refusal without a reason");
            refused++;
        } else
            proto_msg_clear(&m);
    }
    cr_assert_eq(refused, 20000);
}

Test(proto, reject_empty_and_oversized_frames)
{
    tp_reject_buf("", 0, "empty");
    size_t big = PROTO_FRAME_MAX + 1;
    char *p = calloc(1, big);
    cr_assert_not_null(p);
    tp_reject_buf(p, big, "too large");
    cr_assert_eq(proto_prescan(p, big, tp_err, sizeof tp_err), -1);
    free(p);
}

Test(proto, reject_huge_declared_lengths)
{
    /* [1, "HELLO", <str32 of 4 GiB - 1>, ...] in 20 bytes */
    unsigned char s32[] = {0x94, 0x01, 0xa5, 'H', 'E', 'L', 'L', 'O', 0xdb, 0xff, 0xff, 0xff, 0xff, 'a', 'b'};
    tp_reject_buf(s32, sizeof s32, "length exceeds");
    unsigned char b32[] = {0xc6, 0xff, 0xff, 0xff, 0xff, 0};
    tp_reject_buf(b32, sizeof b32, "length exceeds");
    unsigned char e32[] = {0xc9, 0x7f, 0xff, 0xff, 0xff, 1, 0};
    tp_reject_buf(e32, sizeof e32, "length exceeds");
    unsigned char a32[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0};
    tp_reject_buf(a32, sizeof a32, "element count");
    /* a map of N pairs needs 2N bytes: 3 pairs with 5 bytes left */
    unsigned char m3[] = {0x83, 0x01, 0x02, 0x03, 0x04, 0x05};
    tp_reject_buf(m3, sizeof m3, "element count");
    /* each container alone fits, together they do not: [[nil x4], <missing>] */
    unsigned char nest[] = {0x92, 0x94, 0xc0, 0xc0, 0xc0, 0xc0};
    tp_reject_buf(nest, sizeof nest, "element count");
    /* truncated length field */
    unsigned char tl[] = {0xda, 0x00};
    tp_reject_buf(tl, sizeof tl, "truncated length");
    unsigned char c1[] = {0xc1};
    tp_reject_buf(c1, sizeof c1, "0xc1");
}

/* Each fixed-size or length-prefixed format: exact length passes, one byte short fails. */
Test(proto, prescan_exact_sizes_per_format)
{
    static const struct { unsigned char b[24]; size_t n; } ok[] = {
        {{0xc4, 2, 'a', 'b'}, 4},                         /* bin8 */
        {{0xc5, 0, 2, 'a', 'b'}, 5},                      /* bin16 */
        {{0xc6, 0, 0, 0, 2, 'a', 'b'}, 7},                /* bin32 */
        {{0xc7, 2, 9, 'a', 'b'}, 5},                      /* ext8: len, type, data */
        {{0xc8, 0, 2, 9, 'a', 'b'}, 6},                   /* ext16 */
        {{0xc9, 0, 0, 0, 2, 9, 'a', 'b'}, 8},             /* ext32 */
        {{0xca, 1, 2, 3, 4}, 5},                          /* float32 */
        {{0xcb, 1, 2, 3, 4, 5, 6, 7, 8}, 9},              /* float64 */
        {{0xcc, 1}, 2}, {{0xcd, 1, 2}, 3}, {{0xce, 1, 2, 3, 4}, 5}, {{0xcf, 1, 2, 3, 4, 5, 6, 7, 8}, 9},
        {{0xd0, 1}, 2}, {{0xd1, 1, 2}, 3}, {{0xd2, 1, 2, 3, 4}, 5}, {{0xd3, 1, 2, 3, 4, 5, 6, 7, 8}, 9},
        {{0xd4, 9, 1}, 3}, {{0xd5, 9, 1, 2}, 4}, {{0xd6, 9, 1, 2, 3, 4}, 6},
        {{0xd7, 9, 1, 2, 3, 4, 5, 6, 7, 8}, 10},
        {{0xd8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, 18},
        {{0xd9, 2, 'a', 'b'}, 4}, {{0xda, 0, 2, 'a', 'b'}, 5}, {{0xdb, 0, 0, 0, 2, 'a', 'b'}, 7},
        {{0xdc, 0, 2, 0xc0, 0xc0}, 5}, {{0xdd, 0, 0, 0, 2, 0xc0, 0xc0}, 7},
        {{0xde, 0, 1, 0xc0, 0xc0}, 5}, {{0xdf, 0, 0, 0, 1, 0xc0, 0xc0}, 7},
        {{0xa2, 'a', 'b'}, 3}, {{0x92, 0xc0, 0xc0}, 3}, {{0x81, 0xc0, 0xc0}, 3},
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        cr_assert_eq(proto_prescan(ok[i].b, ok[i].n, tp_err, sizeof tp_err), 0,
                     "format 0x%02x: %s", ok[i].b[0], tp_err);
        cr_assert_eq(proto_prescan(ok[i].b, ok[i].n - 1, tp_err, sizeof tp_err), -1,
                     "format 0x%02x one byte short passed", ok[i].b[0]);
        unsigned char more[32];
        memcpy(more, ok[i].b, ok[i].n);
        more[ok[i].n] = 0xc0;
        cr_assert_eq(proto_prescan(more, ok[i].n + 1, tp_err, sizeof tp_err), -1,
                     "format 0x%02x one byte long passed", ok[i].b[0]);
    }
}

Test(proto, reject_depth_bomb)
{
    /* PROTO_MAX_DEPTH nested arrays are fine for the pre-scan, one more is not */
    unsigned char ok[PROTO_MAX_DEPTH + 1];
    memset(ok, 0x91, PROTO_MAX_DEPTH);
    ok[PROTO_MAX_DEPTH] = 0xc0;
    cr_assert_eq(proto_prescan(ok, sizeof ok, tp_err, sizeof tp_err), 0, "%s", tp_err);
    unsigned char deep[PROTO_MAX_DEPTH + 2];
    memset(deep, 0x91, PROTO_MAX_DEPTH + 1);
    deep[PROTO_MAX_DEPTH + 1] = 0xc0;
    tp_reject_buf(deep, sizeof deep, "too deep");
    size_t n = 1 << 20;
    unsigned char *bomb = malloc(n);
    memset(bomb, 0x91, n - 1);
    bomb[n - 1] = 0xc0;
    tp_reject_buf(bomb, n, "too deep");
    memset(bomb, 0x81, n);   /* maps nest through their keys too */
    tp_reject_buf(bomb, n, "too deep");
    free(bomb);
}

Test(proto, reject_trailing_bytes)
{
    cr_assert_eq(proto_encode_heartbeat(&tp_sb), 0);
    msgpack_pack_nil(&tp_pk);
    tp_reject("trailing");
    cr_assert_eq(proto_prescan(tp_sb.data, tp_sb.size, tp_err, sizeof tp_err), -1);
    /* two whole messages in one frame */
    tp_sb.size = 0;
    proto_encode_heartbeat(&tp_sb);
    proto_encode_heartbeat(&tp_sb);
    tp_reject("trailing");
}

Test(proto, reject_version_type_and_shape)
{
    unsigned char v2[] = {0x92, 0x02, 0xa5, 'D', 'R', 'A', 'I', 'N'};
    tp_reject_buf(v2, sizeof v2, "version");
    unsigned char v0[] = {0x92, 0x00, 0xa5, 'D', 'R', 'A', 'I', 'N'};
    tp_reject_buf(v0, sizeof v0, "version");
    unsigned char vneg[] = {0x92, 0xff, 0xa5, 'D', 'R', 'A', 'I', 'N'};
    tp_reject_buf(vneg, sizeof vneg, "version");
    unsigned char vstr[] = {0x92, 0xa1, '1', 0xa5, 'D', 'R', 'A', 'I', 'N'};
    tp_reject_buf(vstr, sizeof vstr, "version");
    unsigned char ok[] = {0x92, 0x01, 0xa5, 'D', 'R', 'A', 'I', 'N'};
    proto_msg m;
    cr_assert_eq(proto_decode(ok, sizeof ok, &m, tp_err, sizeof tp_err), 0, "%s", tp_err);
    proto_msg_clear(&m);
    unsigned char unk[] = {0x92, 0x01, 0xa5, 'D', 'R', 'A', 'I', 'M'};
    tp_reject_buf(unk, sizeof unk, "unknown message type \"DRAIM\"");
    unsigned char lower[] = {0x92, 0x01, 0xa5, 'd', 'r', 'a', 'i', 'n'};
    tp_reject_buf(lower, sizeof lower, "unknown message type");
    unsigned char prefix[] = {0x92, 0x01, 0xa4, 'D', 'R', 'A', 'I'};
    tp_reject_buf(prefix, sizeof prefix, "unknown message type");
    unsigned char itype[] = {0x92, 0x01, 0x09};
    tp_reject_buf(itype, sizeof itype, "unknown message type");
    unsigned char notarr[] = {0x81, 0x01, 0x02};
    tp_reject_buf(notarr, sizeof notarr, "not an array");
    unsigned char short1[] = {0x91, 0x01};
    tp_reject_buf(short1, sizeof short1, "not an array");
    /* one element too many, one too few */
    unsigned char extra[] = {0x93, 0x01, 0xa5, 'D', 'R', 'A', 'I', 'N', 0xc0};
    tp_reject_buf(extra, sizeof extra, "DRAIN: 3 elements, want 2");
    tp_head("HELLO", 1);
    TP_STR("x");
    tp_reject("HELLO: 3 elements, want 4");
}

/* ------------------------------------------------------ field refusals */

Test(proto, reject_hello_fields)
{
    tp_head("HELLO", 2), TP_STR("a-b"), TP_STR("root");
    tp_reject("HELLO role: not \"publisher\"");
    tp_sb.size = 0;
    tp_head("HELLO", 2), TP_STR("a b"), TP_STR("worker");
    tp_reject("HELLO client_id: invalid id");
    tp_sb.size = 0;
    char *id64 = tp_repeat('a', 64);
    tp_head("HELLO", 2), TP_STR(id64), TP_STR("worker");
    tp_reject("client_id: length 64 out of range 1..63");
    tp_sb.size = 0;
    id64[63] = '\0';   /* 63 is the limit */
    tp_head("HELLO", 2), TP_STR(id64), TP_STR("admin");
    proto_msg m;
    tp_accept(&m);
    proto_msg_clear(&m);
    free(id64);
    tp_sb.size = 0;
    tp_head("HELLO", 2), msgpack_pack_int(&tp_pk, 5), TP_STR("worker");
    tp_reject("client_id: not a string");
}

Test(proto, reject_nul_in_strings)
{
    tp_head("HELLO", 2), tp_str("ab\0c", 4), TP_STR("worker");
    tp_reject("client_id: contains a NUL byte");
    tp_sb.size = 0;
    tp_head("ERROR", 2), msgpack_pack_int(&tp_pk, 1), tp_str("bad\0", 4);
    tp_reject("ERROR text: contains a NUL byte");
    tp_sb.size = 0;
    /* attribute value */
    tp_head("PUBLISH", 2), TP_STR("p");
    msgpack_pack_array(&tp_pk, 1);
    msgpack_pack_array(&tp_pk, 6);
    msgpack_pack_int(&tp_pk, 1), TP_STR("t");
    msgpack_pack_map(&tp_pk, 1), TP_STR("k"), tp_str("v\0", 2);
    msgpack_pack_int(&tp_pk, 0), msgpack_pack_nil(&tp_pk), msgpack_pack_nil(&tp_pk);
    tp_reject("PUBLISH entry 0: attrs attribute 0 value: contains a NUL byte");
    /* in an opaque admin argument too */
    tp_sb.size = 0;
    tp_head("ADMIN", 3), msgpack_pack_int(&tp_pk, 1), TP_STR("stats");
    msgpack_pack_map(&tp_pk, 1), TP_STR("k");
    msgpack_pack_array(&tp_pk, 1), tp_str("\0", 1);
    tp_reject("args: string contains a NUL byte");
}

Test(proto, reject_publish_names)
{
    proto_msg m;
    tp_default_publish();
    tp_encode_publish();
    tp_accept(&m);
    proto_msg_clear(&m);

    const char *bad_topics[] = {"a b", "a/b", "é", "x\n"};
    for (size_t i = 0; i < sizeof bad_topics / sizeof *bad_topics; i++) {
        tp_sb.size = 0;
        tp_default_publish();
        tp_pub.topic = (char *)bad_topics[i];
        tp_encode_publish();
        tp_reject("PUBLISH entry 0: topic: invalid name");
    }
    char *n129 = tp_repeat('t', 129);
    tp_sb.size = 0, tp_default_publish(), tp_pub.topic = n129, tp_encode_publish();
    tp_reject("topic: length 129");
    n129[128] = '\0';
    tp_sb.size = 0, tp_default_publish(), tp_pub.topic = n129, tp_encode_publish();
    tp_accept(&m), proto_msg_clear(&m);
    free(n129);

    tp_sb.size = 0, tp_default_publish(), tp_publish.producer = "shop-1", tp_encode_publish();
    tp_reject("PUBLISH producer: invalid producer id");
    char *p41 = tp_repeat('p', 41);
    tp_sb.size = 0, tp_default_publish(), tp_publish.producer = p41, tp_encode_publish();
    tp_reject("producer: length 41");
    p41[40] = '\0';
    tp_sb.size = 0, tp_default_publish(), tp_publish.producer = p41, tp_encode_publish();
    tp_accept(&m), proto_msg_clear(&m);
    free(p41);

    tp_sb.size = 0, tp_default_publish(), tp_pub.dedup_id = "a.b", tp_encode_publish();
    tp_reject("dedup_id: invalid id");
    tp_sb.size = 0, tp_default_publish(), tp_pub.dedup_id = "", tp_encode_publish();
    tp_reject("dedup_id: length 0");
}

Test(proto, reject_publish_topic_function_rules)
{
    proto_msg m;
    tp_default_publish(), tp_pub.topic = "", tp_encode_publish();
    tp_reject("PUBLISH entry 0: function: required when topic is \"\"");
    tp_sb.size = 0, tp_default_publish(), tp_pub.function = "f", tp_encode_publish();
    tp_reject("PUBLISH entry 0: function: must be nil when topic is set");
    tp_sb.size = 0, tp_default_publish(), tp_pub.topic = "", tp_pub.function = "bad name";
    tp_encode_publish();
    tp_reject("function: invalid name");
    tp_sb.size = 0, tp_default_publish(), tp_pub.topic = "", tp_pub.function = "f.x";
    tp_encode_publish();
    tp_accept(&m);
    cr_assert_str_eq(m.u.publish.pubs[0].function, "f.x");
    proto_msg_clear(&m);
}

Test(proto, reject_publish_ranges)
{
    proto_msg m;
    tp_default_publish(), tp_pub.seq = 0, tp_encode_publish();
    tp_reject("seq: 0 out of range");
    tp_sb.size = 0, tp_default_publish(), tp_pub.delay_ms = 900001, tp_encode_publish();
    tp_reject("delay_ms: 900001 out of range");
    tp_sb.size = 0, tp_default_publish(), tp_pub.delay_ms = 900000, tp_encode_publish();
    tp_accept(&m), proto_msg_clear(&m);

    /* batch size: 0 and PROTO_MAX_BATCH + 1 refused, PROTO_MAX_BATCH fine */
    static proto_pub many[PROTO_MAX_BATCH + 1];
    for (int i = 0; i <= PROTO_MAX_BATCH; i++)
        many[i] = (proto_pub){.seq = (uint64_t)i + 1, .topic = "t"};
    proto_publish p = {.producer = "p", .pubs = many, .npubs = 0};
    tp_sb.size = 0, proto_encode_publish(&tp_sb, &p);
    tp_reject("entries: 0 elements");
    p.npubs = PROTO_MAX_BATCH + 1;
    tp_sb.size = 0, proto_encode_publish(&tp_sb, &p);
    tp_reject("entries: 1025 elements");
    p.npubs = PROTO_MAX_BATCH;
    tp_sb.size = 0, proto_encode_publish(&tp_sb, &p);
    tp_accept(&m);
    cr_assert_eq(m.nframes, PROTO_MAX_BATCH);
    cr_assert_eq(m.u.publish.pubs[PROTO_MAX_BATCH - 1].seq, PROTO_MAX_BATCH);
    proto_msg_clear(&m);

    /* wrong element types */
    tp_sb.size = 0;
    tp_head("PUBLISH", 2), TP_STR("p"), msgpack_pack_array(&tp_pk, 1);
    msgpack_pack_array(&tp_pk, 6), TP_STR("1"), TP_STR("t"), msgpack_pack_map(&tp_pk, 0);
    msgpack_pack_int(&tp_pk, 0), msgpack_pack_nil(&tp_pk), msgpack_pack_nil(&tp_pk);
    tp_reject("entry 0: seq: not an unsigned integer");
    tp_sb.size = 0;
    tp_head("PUBLISH", 2), TP_STR("p"), msgpack_pack_array(&tp_pk, 1);
    msgpack_pack_array(&tp_pk, 6), msgpack_pack_int(&tp_pk, 1), TP_STR("t"), msgpack_pack_map(&tp_pk, 0);
    msgpack_pack_int(&tp_pk, -1), msgpack_pack_nil(&tp_pk), msgpack_pack_nil(&tp_pk);
    tp_reject("delay_ms: not an unsigned integer");
    tp_sb.size = 0;
    tp_head("PUBLISH", 2), TP_STR("p"), msgpack_pack_array(&tp_pk, 1);
    msgpack_pack_array(&tp_pk, 5), msgpack_pack_int(&tp_pk, 1), TP_STR("t"), msgpack_pack_map(&tp_pk, 0);
    msgpack_pack_int(&tp_pk, 0), msgpack_pack_nil(&tp_pk);
    tp_reject("PUBLISH entry 0: 5 elements, want 6..6");
    tp_sb.size = 0;
    tp_head("PUBLISH", 2), TP_STR("p"), msgpack_pack_map(&tp_pk, 0);
    tp_reject("PUBLISH entries: not an array");
}

Test(proto, reject_attrs)
{
    proto_msg m;
    char keys[PROTO_MAX_ATTRS + 1][16];
    for (int i = 0; i <= PROTO_MAX_ATTRS; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        tp_attrs[i] = (proto_attr){keys[i], "v"};
    }
    tp_default_publish(), tp_pub.nattrs = PROTO_MAX_ATTRS + 1, tp_encode_publish();
    tp_reject("attrs: 17 entries, at most 16");
    tp_sb.size = 0, tp_default_publish();
    for (int i = 0; i < PROTO_MAX_ATTRS; i++)
        tp_attrs[i] = (proto_attr){keys[i], "v"};
    tp_pub.nattrs = PROTO_MAX_ATTRS, tp_encode_publish();
    tp_accept(&m), proto_msg_clear(&m);

    tp_sb.size = 0, tp_default_publish();
    tp_attrs[1] = (proto_attr){"region", "us"};
    tp_pub.nattrs = 2, tp_encode_publish();
    tp_reject("attrs: duplicate key \"region\"");

    tp_sb.size = 0, tp_default_publish();
    tp_attrs[0] = (proto_attr){"", "v"}, tp_encode_publish();
    tp_reject("attrs attribute 0 key: length 0");

    char *k = tp_repeat('k', PROTO_ATTR_KEY_MAX + 1);
    char *v = tp_repeat('v', PROTO_ATTR_VALUE_MAX + 1);
    tp_sb.size = 0, tp_default_publish();
    tp_attrs[0] = (proto_attr){k, "v"}, tp_encode_publish();
    tp_reject("key: length 129");
    tp_sb.size = 0, tp_default_publish();
    tp_attrs[0] = (proto_attr){"k", v}, tp_encode_publish();
    tp_reject("value: length 1025");
    k[PROTO_ATTR_KEY_MAX] = v[PROTO_ATTR_VALUE_MAX] = '\0';
    tp_sb.size = 0, tp_default_publish();
    tp_attrs[0] = (proto_attr){k, v}, tp_encode_publish();
    tp_accept(&m);
    cr_assert_eq(strlen(m.u.publish.pubs[0].attrs[0].key), PROTO_ATTR_KEY_MAX);
    cr_assert_eq(strlen(m.u.publish.pubs[0].attrs[0].value), PROTO_ATTR_VALUE_MAX);
    proto_msg_clear(&m);
    free(k), free(v);

    /* non-string key and value */
    tp_sb.size = 0;
    tp_head("DELIVER", 1), msgpack_pack_array(&tp_pk, 1), msgpack_pack_array(&tp_pk, 7);
    msgpack_pack_int(&tp_pk, 1), TP_STR("f"), TP_STR("t"), TP_STR("p-1");
    msgpack_pack_int(&tp_pk, 1), msgpack_pack_int(&tp_pk, 1);
    msgpack_pack_map(&tp_pk, 1), msgpack_pack_int(&tp_pk, 1), TP_STR("v");
    tp_reject("DELIVER entry 0: attrs attribute 0 key: not a string");
}

Test(proto, reject_register_fields)
{
    char *fns[2] = {"ok", "bad/name"};
    proto_register r = {.worker_id = "w1", .host = "h", .pid = 1, .slots = 1, .functions = fns, .nfunctions = 2};
    proto_encode_register(&tp_sb, &r);
    tp_reject("REGISTER function 1: invalid name");
    r.nfunctions = 1;
    r.slots = 0;
    tp_sb.size = 0, proto_encode_register(&tp_sb, &r);
    tp_reject("slots: 0 out of range 1..1000000");
    r.slots = 1000001;
    tp_sb.size = 0, proto_encode_register(&tp_sb, &r);
    tp_reject("slots: 1000001 out of range");
    r.slots = 4, r.host = "";
    tp_sb.size = 0, proto_encode_register(&tp_sb, &r);
    tp_reject("host: length 0 out of range 1..255");
    char *h = tp_repeat('h', 256);
    r.host = h;
    tp_sb.size = 0, proto_encode_register(&tp_sb, &r);
    tp_reject("host: length 256");
    free(h);
    /* pid above uint32 */
    tp_sb.size = 0;
    tp_head("REGISTER", 5), TP_STR("w"), TP_STR("h"), msgpack_pack_uint64(&tp_pk, 1ull << 32);
    msgpack_pack_int(&tp_pk, 1), msgpack_pack_array(&tp_pk, 0);
    tp_reject("pid: 4294967296 out of range");
    /* 1025 functions */
    tp_sb.size = 0;
    tp_head("REGISTER", 5), TP_STR("w"), TP_STR("h"), msgpack_pack_int(&tp_pk, 1);
    msgpack_pack_int(&tp_pk, 1), msgpack_pack_array(&tp_pk, 1025);
    for (int i = 0; i < 1025; i++)
        TP_STR("f");
    tp_reject("functions: 1025 elements");
}

Test(proto, reject_config_fields)
{
    char *argv[] = {"/bin/true"};
    proto_fndef f = {.name = "f", .native = false, .exec = argv, .nexec = 0};
    proto_config c = {.heartbeat_ms = 1, .max_payload = 1, .fns = &f, .nfns = 1};
    proto_encode_config(&tp_sb, &c);
    tp_reject("CONFIG fn 0: exec: 0 elements, want 1..1024");
    /* native with no symbol; exec with a library: hand-packed, the encoder cannot */
    tp_sb.size = 0;
    tp_head("CONFIG", 3), msgpack_pack_int(&tp_pk, 1), msgpack_pack_int(&tp_pk, 1);
    msgpack_pack_array(&tp_pk, 1), msgpack_pack_array(&tp_pk, 9);
    TP_STR("f"), TP_STR("native"), msgpack_pack_array(&tp_pk, 0), TP_STR("/lib.so");
    msgpack_pack_nil(&tp_pk), msgpack_pack_int(&tp_pk, 1), msgpack_pack_int(&tp_pk, 1);
    msgpack_pack_int(&tp_pk, 1), msgpack_pack_map(&tp_pk, 0);
    tp_reject("CONFIG fn 0: symbol: not a string");
    tp_sb.size = 0;
    tp_head("CONFIG", 3), msgpack_pack_int(&tp_pk, 1), msgpack_pack_int(&tp_pk, 1);
    msgpack_pack_array(&tp_pk, 1), msgpack_pack_array(&tp_pk, 9);
    TP_STR("f"), TP_STR("exec"), msgpack_pack_array(&tp_pk, 1), TP_STR("/bin/x"), TP_STR("/lib.so");
    msgpack_pack_nil(&tp_pk), msgpack_pack_int(&tp_pk, 1), msgpack_pack_int(&tp_pk, 1);
    msgpack_pack_int(&tp_pk, 1), msgpack_pack_map(&tp_pk, 0);
    tp_reject("CONFIG fn 0: library: must be nil for exec");
    tp_sb.size = 0;
    tp_head("CONFIG", 3), msgpack_pack_int(&tp_pk, 1), msgpack_pack_int(&tp_pk, 1);
    msgpack_pack_array(&tp_pk, 1), msgpack_pack_array(&tp_pk, 9);
    TP_STR("f"), TP_STR("wasm"), msgpack_pack_array(&tp_pk, 0), msgpack_pack_nil(&tp_pk);
    msgpack_pack_nil(&tp_pk), msgpack_pack_int(&tp_pk, 1), msgpack_pack_int(&tp_pk, 1);
    msgpack_pack_int(&tp_pk, 1), msgpack_pack_map(&tp_pk, 0);
    tp_reject("kind: not \"exec\", \"native\" or \"runtime\"");
    /* env: '=' in a key, duplicates */
    proto_attr env[2] = {{"A=B", "1"}, {"A", "2"}};
    f.nexec = 1, f.env = env, f.nenv = 1;
    tp_sb.size = 0, proto_encode_config(&tp_sb, &c);
    tp_reject("env variable 0 key: contains '='");
    env[0].key = "A", f.nenv = 2;
    tp_sb.size = 0, proto_encode_config(&tp_sb, &c);
    tp_reject("env: duplicate key \"A\"");
    /* a string above 64 KiB */
    char *big = tp_repeat('a', PROTO_STR_MAX + 1);
    char *argv2[] = {"/bin/x", big};
    f.exec = argv2, f.nexec = 2, f.nenv = 0;
    tp_sb.size = 0, proto_encode_config(&tp_sb, &c);
    tp_reject("exec 1: length 65537 out of range 0..65536");
    free(big);
}

/* The 11th element tp_config_fn writes (log_output); a 12th is nil. */
static void (*tp_eleventh)(void);

/* One CONFIG fn element of n (8–12) elements, hand-packed: [name, kind,
 * exec…, env] (8: no env), from 10 on the tenth written by `tenth`, an 11th by
 * tp_eleventh (nil when unset), a 12th nil. */
static void tp_config_fn(const char *kind, int n, void (*tenth)(void))
{
    tp_sb.size = 0;
    tp_head("CONFIG", 3), msgpack_pack_int(&tp_pk, 1), msgpack_pack_int(&tp_pk, 1);
    msgpack_pack_array(&tp_pk, 1), msgpack_pack_array(&tp_pk, (size_t)n);
    TP_STR("f"), tp_str(kind, strlen(kind));
    bool native = strcmp(kind, "native") == 0;
    msgpack_pack_array(&tp_pk, native ? 0 : 1);
    if (!native)
        TP_STR("/bin/x");
    if (native)
        TP_STR("/lib.so"), TP_STR("sym");
    else
        msgpack_pack_nil(&tp_pk), msgpack_pack_nil(&tp_pk);
    msgpack_pack_int(&tp_pk, 1000), msgpack_pack_int(&tp_pk, 128), msgpack_pack_int(&tp_pk, 3);
    if (n >= 9)
        msgpack_pack_map(&tp_pk, 0);
    if (n >= 10)
        tenth();
    if (n >= 11) {
        if (tp_eleventh)
            tp_eleventh();
        else
            msgpack_pack_nil(&tp_pk);
    }
    if (n == 12)
        msgpack_pack_nil(&tp_pk);
}

static void tp_nil(void) { msgpack_pack_nil(&tp_pk); }
static void tp_empty_array(void) { msgpack_pack_array(&tp_pk, 0); }
/* the runtime settings with one field replaced: tp_rt_bad names which */
static int tp_rt_bad;
static void tp_rt(void)
{
    msgpack_pack_array(&tp_pk, tp_rt_bad == 9 ? 5 : 6);
    if (tp_rt_bad == 0) msgpack_pack_int(&tp_pk, 1);
    else if (tp_rt_bad == 10) TP_STR("");
    else TP_STR("app.handler");
    if (tp_rt_bad == 1) TP_STR("json");
    else TP_STR("sns");
    if (tp_rt_bad == 2) msgpack_pack_int(&tp_pk, -1);
    else msgpack_pack_uint64(&tp_pk, 10);
    if (tp_rt_bad == 3) msgpack_pack_int(&tp_pk, 0);
    else msgpack_pack_uint64(&tp_pk, 300000);
    if (tp_rt_bad == 4) msgpack_pack_uint64(&tp_pk, 1ull << 32);
    else msgpack_pack_uint64(&tp_pk, 10000);
    if (tp_rt_bad == 9) return;
    if (tp_rt_bad == 5) msgpack_pack_double(&tp_pk, 1.0);
    else msgpack_pack_uint64(&tp_pk, 4);
}

Test(proto, config_runtime_element_and_older_peers)
{
    proto_msg m;
    /* 9 elements: a peer from before runtimes; exec and native decode as before */
    tp_config_fn("exec", 9, NULL);
    tp_accept(&m);
    cr_assert_not(m.u.config.fns[0].runtime);
    cr_assert_not(m.u.config.fns[0].native);
    cr_assert_eq(m.u.config.fns[0].rt.idle_timeout_ms, 0);
    proto_msg_clear(&m);
    tp_config_fn("native", 9, NULL);
    tp_accept(&m);
    cr_assert(m.u.config.fns[0].native);
    proto_msg_clear(&m);
    /* 10 with nil: what we write for exec and native */
    tp_config_fn("exec", 10, tp_nil);
    tp_accept(&m);
    tp_reencode_same(&m);
    proto_msg_clear(&m);
    tp_config_fn("native", 10, tp_nil);
    tp_accept(&m);
    tp_reencode_same(&m);
    proto_msg_clear(&m);
    tp_rt_bad = -1;
    tp_config_fn("runtime", 10, tp_rt);
    tp_accept(&m);
    cr_assert(m.u.config.fns[0].runtime);
    cr_assert_str_eq(m.u.config.fns[0].exec[0], "/bin/x");
    cr_assert_str_eq(m.u.config.fns[0].rt.handler, "app.handler");
    cr_assert_eq(m.u.config.fns[0].rt.format, PROTO_RT_SNS);
    cr_assert_eq(m.u.config.fns[0].rt.concurrency, 4);
    tp_reencode_same(&m);
    proto_msg_clear(&m);

    tp_config_fn("runtime", 9, NULL);
    tp_reject("CONFIG fn 0: runtime: missing: kind \"runtime\" needs its settings as a 10th element");
    tp_config_fn("runtime", 10, tp_nil);
    tp_reject("CONFIG fn 0: runtime: not an array");
    tp_config_fn("exec", 10, tp_empty_array);
    tp_reject("CONFIG fn 0: runtime: must be nil for exec");
    tp_config_fn("native", 10, tp_rt);
    tp_reject("CONFIG fn 0: runtime: must be nil for native");
    tp_config_fn("exec", 8, NULL);
    tp_reject("CONFIG fn 0: 8 elements, want 9..11");
    tp_config_fn("exec", 12, tp_nil);
    tp_reject("CONFIG fn 0: 12 elements, want 9..11");
    static const struct { int bad; const char *why; } cases[] = {
        { 0, "CONFIG fn 0: runtime.handler: not a string or nil" },
        { 10, "CONFIG fn 0: runtime.handler: length 0 out of range 1..128" },
        { 1, "CONFIG fn 0: runtime.format: not \"raw\" or \"sns\"" },
        { 2, "CONFIG fn 0: runtime.max_invocations: not an unsigned integer" },
        { 3, "CONFIG fn 0: runtime.idle_timeout_ms: 0 out of range 1..4294967295" },
        { 4, "CONFIG fn 0: runtime.init_timeout_ms: 4294967296 out of range 1..4294967295" },
        { 5, "CONFIG fn 0: runtime.concurrency: not an unsigned integer" },
        { 9, "CONFIG fn 0: runtime: 5 elements, want 6..6" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tp_rt_bad = cases[i].bad;
        tp_config_fn("runtime", 10, tp_rt);
        tp_reject(cases[i].why);
    }
    /* a runtime has a program, and no library */
    tp_rt_bad = -1;
    for (int k = 0; k < 2; k++) {
        tp_sb.size = 0;
        tp_head("CONFIG", 3), msgpack_pack_int(&tp_pk, 1), msgpack_pack_int(&tp_pk, 1);
        msgpack_pack_array(&tp_pk, 1), msgpack_pack_array(&tp_pk, 10);
        TP_STR("f"), TP_STR("runtime");
        if (k == 0)
            msgpack_pack_array(&tp_pk, 0), msgpack_pack_nil(&tp_pk);
        else
            msgpack_pack_array(&tp_pk, 1), TP_STR("/bin/x"), TP_STR("/lib.so");
        msgpack_pack_nil(&tp_pk), msgpack_pack_int(&tp_pk, 1), msgpack_pack_int(&tp_pk, 1);
        msgpack_pack_int(&tp_pk, 1), msgpack_pack_map(&tp_pk, 0), tp_rt();
        tp_reject(k == 0 ? "CONFIG fn 0: exec: 0 elements, want 1..1024" : "CONFIG fn 0: library: must be nil for runtime");
    }
}

Test(proto, config_encoder_writes_the_layout_of_the_kind)
{
    /* runtime wins over a stray native flag; a stray library is not written */
    char *argv[] = {"boot"};
    proto_fndef f = {.name = "f", .native = true, .runtime = true, .exec = argv, .nexec = 1,
                     .library = "/lib.so", .symbol = "s", .rt = {.format = 7, .idle_timeout_ms = 1,
                                                                 .init_timeout_ms = 1}};
    proto_config c = {.fns = &f, .nfns = 1};
    cr_assert_eq(proto_encode_config(&tp_sb, &c), 0);
    proto_msg m;
    tp_accept(&m);
    cr_assert(m.u.config.fns[0].runtime);
    cr_assert_not(m.u.config.fns[0].native);
    cr_assert_null(m.u.config.fns[0].library);
    cr_assert_eq(m.u.config.fns[0].rt.format, PROTO_RT_RAW);
    proto_msg_clear(&m);
}

Test(proto, roundtrip_stats)
{
    proto_stats_entry es[3] = {
        {.function = "resize", .cold_starts = 3, .init_us = 1234567, .warm = 99},
        {.function = "b.2", .cold_starts = 0, .init_us = 0, .warm = UINT64_MAX},
        {.function = "idle-one"},
    };
    es[0].recycles[PROTO_RECYCLE_IDLE] = 2;
    es[0].recycles[PROTO_RECYCLE_SHUTDOWN] = 1;
    for (int k = 0; k < PROTO_RECYCLE_COUNT; k++)
        es[1].recycles[k] = (uint64_t)k + 1;
    proto_stats st = {.es = es, .n = 3};
    cr_assert_eq(proto_encode_stats(&tp_sb, &st), 0);
    proto_msg m;
    tp_accept(&m);
    cr_assert_eq(m.type, MSG_STATS);
    cr_assert_eq(m.nframes, 0);
    const proto_stats *d = &m.u.stats;
    cr_assert_eq(d->n, 3);
    cr_assert_str_eq(d->es[0].function, "resize");
    cr_assert_eq(d->es[0].cold_starts, 3);
    cr_assert_eq(d->es[0].init_us, 1234567);
    cr_assert_eq(d->es[0].warm, 99);
    for (int k = 0; k < PROTO_RECYCLE_COUNT; k++) {
        cr_assert_eq(d->es[0].recycles[k], k == PROTO_RECYCLE_IDLE ? 2u : k == PROTO_RECYCLE_SHUTDOWN ? 1u : 0u);
        cr_assert_eq(d->es[1].recycles[k], (uint64_t)k + 1);
        cr_assert_eq(d->es[2].recycles[k], 0);
    }
    cr_assert_eq(d->es[1].warm, UINT64_MAX);
    tp_reencode_same(&m);
    tp_all_prefixes_fail();
    proto_msg_clear(&m);
    /* an empty STATS is a message too */
    proto_stats none = {0};
    tp_sb.size = 0;
    cr_assert_eq(proto_encode_stats(&tp_sb, &none), 0);
    tp_accept(&m);
    cr_assert_eq(m.u.stats.n, 0);
    tp_reencode_same(&m);
    proto_msg_clear(&m);
    /* the names are the wire's */
    static const char *const names[] = {"max_invocations", "idle", "memory", "timeout", "crash", "init_error",
                                        "redefined", "shutdown"};
    for (int k = 0; k < PROTO_RECYCLE_COUNT; k++) {
        cr_assert_str_eq(proto_recycle_name((proto_recycle)k), names[k]);
        cr_assert_eq(proto_recycle_parse(names[k]), k);
    }
    cr_assert_eq(proto_recycle_parse("oom"), -1);
    cr_assert_str_eq(proto_type_name(MSG_STATS), "STATS");
}

/* [1, "STATS", [[fn, 1, 2, 3, recycles]]] with recycles written by the caller after this. */
static void tp_stats_head(const char *fn)
{
    tp_sb.size = 0;
    tp_head("STATS", 1), msgpack_pack_array(&tp_pk, 1), msgpack_pack_array(&tp_pk, 5);
    tp_str(fn, strlen(fn)), msgpack_pack_int(&tp_pk, 1), msgpack_pack_int(&tp_pk, 2), msgpack_pack_int(&tp_pk, 3);
}

Test(proto, reject_stats_fields)
{
    tp_stats_head("bad name"), msgpack_pack_map(&tp_pk, 0);
    tp_reject("STATS entry 0: function: invalid name");
    tp_stats_head("f"), msgpack_pack_map(&tp_pk, 1), TP_STR("oom"), msgpack_pack_int(&tp_pk, 1);
    tp_reject("STATS entry 0: recycles reason 0: unknown reason \"oom\"");
    tp_stats_head("f"), msgpack_pack_map(&tp_pk, 1), TP_STR("a b"), msgpack_pack_int(&tp_pk, 1);
    tp_reject("STATS entry 0: recycles reason 0: unknown reason");
    tp_stats_head("f"), msgpack_pack_map(&tp_pk, 1), msgpack_pack_int(&tp_pk, 1), msgpack_pack_int(&tp_pk, 1);
    tp_reject("STATS entry 0: recycles reason 0: not a string");
    tp_stats_head("f"), msgpack_pack_map(&tp_pk, 2), TP_STR("idle"), msgpack_pack_int(&tp_pk, 1);
    TP_STR("idle"), msgpack_pack_int(&tp_pk, 2);
    tp_reject("STATS entry 0: recycles: duplicate reason \"idle\"");
    tp_stats_head("f"), msgpack_pack_map(&tp_pk, 1), TP_STR("crash"), msgpack_pack_int(&tp_pk, -1);
    tp_reject("STATS entry 0: recycles crash: not an unsigned integer");
    tp_stats_head("f"), msgpack_pack_map(&tp_pk, 9);
    for (int i = 0; i < 9; i++)
        TP_STR("idle"), msgpack_pack_int(&tp_pk, 1);
    tp_reject("STATS entry 0: recycles: 9 entries, at most 8");
    tp_stats_head("f"), msgpack_pack_array(&tp_pk, 0);
    tp_reject("STATS entry 0: recycles: not a map");
    /* counters are unsigned, of any width */
    tp_sb.size = 0;
    tp_head("STATS", 1), msgpack_pack_array(&tp_pk, 1), msgpack_pack_array(&tp_pk, 5);
    TP_STR("f"), msgpack_pack_int(&tp_pk, -3);
    msgpack_pack_int(&tp_pk, 2), msgpack_pack_int(&tp_pk, 3), msgpack_pack_map(&tp_pk, 0);
    tp_reject("STATS entry 0: cold_starts: not an unsigned integer");
    tp_sb.size = 0;
    tp_head("STATS", 1), msgpack_pack_array(&tp_pk, 1), msgpack_pack_array(&tp_pk, 4);
    TP_STR("f"), msgpack_pack_int(&tp_pk, 1), msgpack_pack_int(&tp_pk, 2), msgpack_pack_int(&tp_pk, 3);
    tp_reject("STATS entry 0: 4 elements, want 5..5");
    tp_sb.size = 0;
    tp_head("STATS", 1), msgpack_pack_array(&tp_pk, 1025);
    for (int i = 0; i < 1025; i++)
        msgpack_pack_nil(&tp_pk);
    tp_reject("STATS entries: 1025 elements, want 0..1024");
    tp_sb.size = 0;
    tp_head("STATS", 2), msgpack_pack_array(&tp_pk, 0), msgpack_pack_nil(&tp_pk);
    tp_reject("STATS: 4 elements, want 3");
}

Test(proto, reject_deliver_result_fields)
{
    proto_delivery d = {.lease = 1, .function = "f", .topic = "t", .message_id = "bad id", .attempt = 1, .max_attempts = 1};
    proto_deliver dv = {&d, 1};
    proto_encode_deliver(&tp_sb, &dv);
    tp_reject("DELIVER entry 0: message_id: invalid id");
    d.message_id = "p-1", d.function = "";
    tp_sb.size = 0, proto_encode_deliver(&tp_sb, &dv);
    tp_reject("DELIVER entry 0: function: length 0");

    proto_result_entry r = {.lease = 1, .outcome = OUT_OK};
    proto_result rs = {&r, 1};
    char *big = tp_repeat('e', PROTO_ERROR_WIRE_MAX + 1);
    r.error = big;
    tp_sb.size = 0, proto_encode_result(&tp_sb, &rs);
    tp_reject("RESULT entry 0: error: length 4353");
    free(big);
    tp_sb.size = 0;
    tp_head("RESULT", 1), msgpack_pack_array(&tp_pk, 1), msgpack_pack_array(&tp_pk, 5);
    msgpack_pack_int(&tp_pk, 1), TP_STR("okay"), msgpack_pack_int(&tp_pk, 0);
    msgpack_pack_int(&tp_pk, 0), msgpack_pack_nil(&tp_pk);
    tp_reject("outcome: unknown outcome");
    tp_sb.size = 0;
    tp_head("RESULT", 1), msgpack_pack_array(&tp_pk, 1), msgpack_pack_array(&tp_pk, 5);
    msgpack_pack_int(&tp_pk, 1), TP_STR("ok"), msgpack_pack_uint64(&tp_pk, (uint64_t)INT64_MAX + 1);
    msgpack_pack_int(&tp_pk, 0), msgpack_pack_nil(&tp_pk);
    tp_reject("started_ms: not a 64-bit integer");
    tp_sb.size = 0;
    tp_head("RESULT", 1), msgpack_pack_array(&tp_pk, 1), msgpack_pack_array(&tp_pk, 5);
    msgpack_pack_int(&tp_pk, 1), TP_STR("ok"), msgpack_pack_double(&tp_pk, 1.0);
    msgpack_pack_int(&tp_pk, 0), msgpack_pack_nil(&tp_pk);
    tp_reject("started_ms: not a 64-bit integer");
    tp_sb.size = 0;
    tp_head("RESULT", 1), msgpack_pack_array(&tp_pk, 0);
    tp_reject("RESULT entries: 0 elements");
}

Test(proto, reject_status_and_admin_fields)
{
    proto_encode_error(&tp_sb, PROTO_STATUS_COUNT, "x");
    char want[64];
    snprintf(want, sizeof want, "ERROR status: %d out of range 0..%d", PROTO_STATUS_COUNT, PROTO_STATUS_COUNT - 1);
    tp_reject(want);
    proto_confirm_entry e = {1, PROTO_STATUS_COUNT, "x"};
    proto_confirm c = {&e, 1};
    tp_sb.size = 0, proto_encode_confirm(&tp_sb, &c);
    snprintf(want, sizeof want, "CONFIRM entry 0: status: %d out of range", PROTO_STATUS_COUNT);
    tp_reject(want);
    tp_sb.size = 0, proto_encode_admin_reply(&tp_sb, 1, 99, NULL, NULL, 0);
    tp_reject("ADMIN_REPLY status: 99 out of range");

    tp_sb.size = 0, proto_encode_admin(&tp_sb, 1, "Stats", NULL, 0);
    tp_reject("ADMIN command: invalid command");
    tp_sb.size = 0, proto_encode_admin(&tp_sb, 1, "", NULL, 0);
    tp_reject("ADMIN command: length 0");
    char *cmd = tp_repeat('a', 65);
    tp_sb.size = 0, proto_encode_admin(&tp_sb, 1, cmd, NULL, 0);
    tp_reject("ADMIN command: length 65");
    cmd[64] = '\0';
    proto_msg m;
    tp_sb.size = 0, proto_encode_admin(&tp_sb, 1, cmd, NULL, 0);
    tp_accept(&m), proto_msg_clear(&m);
    free(cmd);
    unsigned char arr[] = {0x90};
    tp_sb.size = 0, proto_encode_admin(&tp_sb, 1, "stats", arr, 1);
    tp_reject("ADMIN args: not a map");
    unsigned char ikey[] = {0x81, 0x01, 0x02};
    tp_sb.size = 0, proto_encode_admin(&tp_sb, 1, "stats", ikey, sizeof ikey);
    tp_reject("ADMIN args: key 0 is not a string");
}

Test(proto, err_may_be_null)
{
    unsigned char junk[] = {0xc1};
    proto_msg m;
    cr_assert_eq(proto_decode(junk, 1, &m, NULL, 0), -1);
    cr_assert_eq(proto_prescan(junk, 1, NULL, 0), -1);
    proto_encode_hello(&tp_sb, &(proto_hello){"x y", "worker"});
    cr_assert_eq(proto_decode(tp_sb.data, tp_sb.size, &m, NULL, 0), -1);
    char tiny[4];
    cr_assert_eq(proto_decode(tp_sb.data, tp_sb.size, &m, tiny, sizeof tiny), -1);
    cr_assert_eq(strlen(tiny), 3, "err must stay NUL-terminated within errlen");
}

/* ------------------------------------------------------------ prescan */

Test(proto, prescan_accepts_every_msgpack_type)
{
    msgpack_pack_array(&tp_pk, 20);
    msgpack_pack_nil(&tp_pk), msgpack_pack_true(&tp_pk), msgpack_pack_false(&tp_pk);
    msgpack_pack_int64(&tp_pk, -1), msgpack_pack_int64(&tp_pk, -200), msgpack_pack_int64(&tp_pk, INT64_MIN);
    msgpack_pack_uint64(&tp_pk, 200), msgpack_pack_uint64(&tp_pk, 70000), msgpack_pack_uint64(&tp_pk, UINT64_MAX);
    msgpack_pack_float(&tp_pk, 1.0f), msgpack_pack_double(&tp_pk, 2.0);
    char *s = tp_repeat('s', 70000);
    tp_str(s, 40), tp_str(s, 300), tp_str(s, 70000);
    free(s);
    msgpack_pack_bin(&tp_pk, 3), msgpack_pack_bin_body(&tp_pk, "abc", 3);
    msgpack_pack_ext(&tp_pk, 1, 5), msgpack_pack_ext_body(&tp_pk, "12345", 1);
    msgpack_pack_ext(&tp_pk, 16, 6), msgpack_pack_ext_body(&tp_pk, "0123456789abcdef", 16);
    msgpack_pack_ext(&tp_pk, 20, 7), msgpack_pack_ext_body(&tp_pk, "0123456789abcdefghij", 20);
    msgpack_pack_map(&tp_pk, 16);
    for (int i = 0; i < 16; i++)
        msgpack_pack_int(&tp_pk, i), msgpack_pack_nil(&tp_pk);
    msgpack_pack_array(&tp_pk, 0);
    cr_assert_eq(proto_prescan(tp_sb.data, tp_sb.size, tp_err, sizeof tp_err), 0, "%s", tp_err);
    /* and msgpack-c agrees with what the scan let through */
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&up, tp_sb.data, tp_sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    cr_assert_eq(off, tp_sb.size);
    msgpack_unpacked_destroy(&up);
    tp_all_prefixes_fail();
    /* a well-formed object that is not a message: the decoder refuses it */
    tp_reject("unsupported protocol version");
}

Test(proto, prescan_each_message)
{
    int (*const enc[])(msgpack_sbuffer *) = {proto_encode_heartbeat, proto_encode_drain, proto_encode_bye};
    for (size_t i = 0; i < 3; i++) {
        tp_sb.size = 0;
        enc[i](&tp_sb);
        cr_assert_eq(proto_prescan(tp_sb.data, tp_sb.size, tp_err, sizeof tp_err), 0);
    }
    tp_sb.size = 0, tp_default_publish(), tp_encode_publish();
    cr_assert_eq(proto_prescan(tp_sb.data, tp_sb.size, tp_err, sizeof tp_err), 0);
    tp_sb.size = 0, proto_encode_hello(&tp_sb, &(proto_hello){"a", "admin"});
    cr_assert_eq(proto_prescan(tp_sb.data, tp_sb.size, tp_err, sizeof tp_err), 0);
    tp_sb.size = 0, proto_encode_welcome(&tp_sb, &(proto_welcome){1, 1, 1});
    cr_assert_eq(proto_prescan(tp_sb.data, tp_sb.size, tp_err, sizeof tp_err), 0);
    tp_sb.size = 0, proto_encode_error(&tp_sb, 1, "x");
    cr_assert_eq(proto_prescan(tp_sb.data, tp_sb.size, tp_err, sizeof tp_err), 0);
    /* the other types' prescans run in their round-trip tests (tp_all_prefixes_fail) */
}

/* A success reply carries error nil (PROTOCOL.md ADMIN_REPLY, INVOKE_REPLY):
 * a decoder refuses status 0 with an error text, and takes a failure's. */
Test(proto, a_success_reply_with_an_error_text_is_malformed)
{
    proto_msg m;
    tp_sb.size = 0;
    cr_assert_eq(proto_encode_admin_reply(&tp_sb, 1, 0, "oops", NULL, 0), 0);
    cr_assert_eq(proto_decode(tp_sb.data, tp_sb.size, &m, tp_err, sizeof tp_err), -1);
    cr_assert(strstr(tp_err, "error"), "%s", tp_err);
    tp_sb.size = 0;
    cr_assert_eq(proto_encode_admin_reply(&tp_sb, 1, PROTO_E_NOT_FOUND, "no such", NULL, 0), 0);
    cr_assert_eq(proto_decode(tp_sb.data, tp_sb.size, &m, tp_err, sizeof tp_err), 0, "%s", tp_err);
    proto_msg_clear(&m);
    tp_sb.size = 0;
    cr_assert_eq(proto_encode_invoke_reply(&tp_sb, &(proto_invoke_reply){ .req = 1, .status = 0, .error = "x",
                                                                           .message_id = "" }), 0);
    cr_assert_eq(proto_decode(tp_sb.data, tp_sb.size, &m, tp_err, sizeof tp_err), -1);
}

/* The correlation of a refused request is read from what proto_decode refuses. */
Test(proto, peek_ref_reads_the_seqs_or_req_of_a_malformed_request)
{
    proto_ref r;
    tp_sb.size = 0;
    proto_pub e[2] = { { .seq = 4, .topic = "bad name" }, { .seq = 9, .topic = "t" } };
    cr_assert_eq(proto_encode_publish(&tp_sb, &(proto_publish){ .producer = "p", .pubs = e, .npubs = 2 }), 0);
    cr_assert_eq(proto_peek_ref(tp_sb.data, tp_sb.size, &r), 0);
    cr_assert(r.type == MSG_PUBLISH && r.nseqs == 2 && r.seqs[0] == 4 && r.seqs[1] == 9);
    tp_sb.size = 0;
    cr_assert_eq(proto_encode_admin(&tp_sb, 77, "stats", NULL, 0), 0);
    cr_assert_eq(proto_peek_ref(tp_sb.data, tp_sb.size, &r), 0);
    cr_assert(r.type == MSG_ADMIN && r.req == 77);
    tp_sb.size = 0;
    cr_assert_eq(proto_encode_hello(&tp_sb, &(proto_hello){ "a", "admin" }), 0);
    cr_assert_eq(proto_peek_ref(tp_sb.data, tp_sb.size, &r), -1);
    cr_assert_eq(proto_peek_ref("\x93\x01\xa5" "ADMIN" "\xc0", 8, &r), -1);   /* req nil */
    cr_assert_eq(proto_peek_ref("\x92\x01", 2, &r), -1);                       /* truncated */
}

/* ------------------------------------------------------------- names */

Test(proto, names_and_validators)
{
    cr_assert_str_eq(proto_type_name(MSG_ADMIN_REPLY), "ADMIN_REPLY");
    cr_assert_str_eq(proto_type_name(MSG_CONFIRM), "CONFIRM");
    cr_assert_str_eq(proto_type_name((msg_type)99), "UNKNOWN");
    cr_assert_str_eq(proto_status_name(PROTO_E_THROTTLED), "throttled");
    cr_assert_str_eq(proto_status_name(PROTO_E_NO_WORKER), "no worker serves the function");
    cr_assert_str_eq(proto_status_name(PROTO_E_CONFLICT), "conflict");
    for (int o = 0; o < OUT_COUNT; o++)
        cr_assert_eq(proto_outcome_parse(proto_outcome_name((proto_outcome)o)), o);
    cr_assert_str_eq(proto_outcome_name(OUT_RETURNED), "returned");
    cr_assert_eq(proto_outcome_parse("OK"), -1);
    cr_assert_eq(proto_outcome_parse(NULL), -1);
    cr_assert(proto_valid_name("a.B-c_9"));
    cr_assert_not(proto_valid_name(""));
    cr_assert_not(proto_valid_name("a:b"));
    cr_assert(proto_valid_id("shop_1-42"));
    cr_assert_not(proto_valid_id("a.b"));
    char *s = tp_repeat('a', 128);
    cr_assert(proto_valid_name(s));
    cr_assert_not(proto_valid_id(s));
    s[63] = '\0';
    cr_assert(proto_valid_id(s));
    free(s);
    cr_assert(proto_valid_producer("shop_1"));
    cr_assert_not(proto_valid_producer("shop-1"));
    cr_assert_not(proto_valid_name_len("ab\0", 3));
}

/* ------------------------------------------------------------ frames */

Test(proto, frames_roundtrip_and_truncation)
{
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    void *dealer = zmq_socket(ctx, ZMQ_DEALER);
    cr_assert_eq(zmq_setsockopt(dealer, ZMQ_ROUTING_ID, "pub-1", 5), 0);
    cr_assert_eq(zmq_bind(router, "inproc://tp-frames"), 0);
    cr_assert_eq(zmq_connect(dealer, "inproc://tp-frames"), 0);

    proto_frames f;
    frames_init(&f);
    cr_assert_eq(frames_recv(router, &f, 16, ZMQ_DONTWAIT), -1);
    cr_assert_eq(errno, EAGAIN);
    cr_assert_eq(f.n, 0);

    proto_encode_heartbeat(&tp_sb);
    char big[5000];
    memset(big, 'b', sizeof big);
    proto_iov pl[3] = {{"one", 3}, {NULL, 0}, {big, sizeof big}};
    cr_assert_eq(frames_send(dealer, NULL, 0, &tp_sb, pl, 3, 0), 0);
    cr_assert_eq(frames_recv(router, &f, 16, 0), 0);
    cr_assert_eq(f.n, 5);
    cr_assert_not(f.truncated);
    cr_assert_eq(frames_size(&f, 0), 5);
    cr_assert_eq(memcmp(frames_data(&f, 0), "pub-1", 5), 0);
    cr_assert_eq(frames_size(&f, 1), tp_sb.size);
    cr_assert_eq(memcmp(frames_data(&f, 1), tp_sb.data, tp_sb.size), 0);
    cr_assert_eq(memcmp(frames_data(&f, 2), "one", 3), 0);
    cr_assert_eq(frames_size(&f, 3), 0);
    cr_assert_eq(frames_size(&f, 4), sizeof big);
    cr_assert_eq(memcmp(frames_data(&f, 4), big, sizeof big), 0);

    /* reply through the router with the routing id; DEALER sees no id part */
    cr_assert_eq(frames_send(router, "pub-1", 5, &tp_sb, NULL, 0, ZMQ_DONTWAIT), 0);
    cr_assert_eq(frames_recv(dealer, &f, 16, 0), 0);
    cr_assert_eq(f.n, 1);
    cr_assert_eq(frames_size(&f, 0), tp_sb.size);

    /* more parts than max_parts: kept 2, the rest drained, the next message intact */
    proto_iov many[20];
    for (int i = 0; i < 20; i++)
        many[i] = (proto_iov){"x", 1};
    cr_assert_eq(frames_send(dealer, NULL, 0, &tp_sb, many, 20, 0), 0);
    cr_assert_eq(frames_send(dealer, NULL, 0, &tp_sb, pl, 1, 0), 0);
    cr_assert_eq(frames_recv(router, &f, 2, 0), 0);
    cr_assert_eq(f.n, 2);
    cr_assert(f.truncated);
    cr_assert_eq(frames_size(&f, 1), tp_sb.size);
    cr_assert_eq(frames_recv(router, &f, 2000, 0), 0);
    cr_assert_not(f.truncated);
    cr_assert_eq(f.n, 3);
    cr_assert_eq(memcmp(frames_data(&f, 0), "pub-1", 5), 0);
    cr_assert_eq(memcmp(frames_data(&f, 2), "one", 3), 0);

    /* growth past the initial capacity keeps every part readable */
    cr_assert_eq(frames_send(dealer, NULL, 0, &tp_sb, many, 20, 0), 0);
    cr_assert_eq(frames_recv(router, &f, 100, 0), 0);
    cr_assert_eq(f.n, 22);
    for (int i = 2; i < 22; i++)
        cr_assert_eq(*(const char *)frames_data(&f, i), 'x');
    int cap = f.cap;
    frames_close(&f);
    cr_assert_eq(f.n, 0);
    cr_assert_eq(f.cap, cap, "close keeps the capacity");
    frames_close(&f);
    free(f.parts);
    zmq_close(dealer);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

/* ------------------------------------------------------------- util */

/* A user reads "program: level: what"; the source location is for --verbose. */
Test(proto, util_log_format_has_the_source_location_only_when_verbose, .init = cr_redirect_stderr)
{
    util_set_program("herald-broker");
    util_log("warn", "broker/loop.c", 42, "lost %d peers", 3);
    util_verbose = 1;
    util_log("warn", "broker/loop.c", 42, "lost %d peers", 3);
    util_set_program(NULL);
    LOG_INFO("x");
    util_verbose = 0;
    fflush(stderr);
    char expect[256];
    snprintf(expect, sizeof expect, "herald-broker: warn: lost 3 peers\n"
             "herald-broker: warn: broker/loop.c:42: lost 3 peers\nherald: info: %s:%d: x\n",
             __FILE__, __LINE__ - 6);
    cr_assert_stderr_eq_str(expect);
}

Test(proto, util_clocks_and_random)
{
    int64_t a = util_mono_us(), b = util_mono_us();
    cr_assert_geq(b, a);
    cr_assert_gt(util_wall_ms(), 1600000000000LL);
    int64_t m = util_mono_ms();
    cr_assert(m >= a / 1000 && m <= util_mono_us() / 1000 + 1);
    unsigned char r1[64] = {0}, r2[64] = {0}, zero[64] = {0};
    util_random(r1, sizeof r1);
    util_random(r2, sizeof r2);
    cr_assert_neq(memcmp(r1, zero, sizeof r1), 0);
    cr_assert_neq(memcmp(r1, r2, sizeof r1), 0);
    /* Not provable here: the retry on a partial read (current kernels do not
     * cut urandom reads short without a signal). */
    size_t n = 1u << 20;
    unsigned char *big = calloc(1, n);
    cr_assert_not_null(big);
    util_random(big, n);
    cr_assert_neq(memcmp(big + n - 64, zero, 64), 0, "the tail of a large request was filled");
    free(big);
}

static void tp_true(void) { msgpack_pack_true(&tp_pk); }

/* log_output, the 11th element: a bool, absent (9 or 10 elements) false; a
 * sender writes it only when true, so a worker from before it takes every
 * CONFIG that does not use it. */
Test(proto, config_log_output_element)
{
    proto_msg m;
    tp_eleventh = tp_true;
    tp_config_fn("exec", 11, tp_nil);
    tp_accept(&m);
    cr_assert(m.u.config.fns[0].log_output);
    tp_reencode_same(&m);
    proto_msg_clear(&m);
    tp_rt_bad = -1;
    tp_config_fn("runtime", 11, tp_rt);
    tp_accept(&m);
    cr_assert(m.u.config.fns[0].log_output && m.u.config.fns[0].runtime);
    tp_reencode_same(&m);
    proto_msg_clear(&m);
    tp_eleventh = NULL;
    tp_config_fn("native", 10, tp_nil);
    tp_accept(&m);
    cr_assert_not(m.u.config.fns[0].log_output);
    tp_reencode_same(&m);   /* 10 elements again: nothing for an older worker to refuse */
    proto_msg_clear(&m);
    tp_config_fn("exec", 11, tp_nil);
    tp_reject("CONFIG fn 0: log_output: not a bool");
}
