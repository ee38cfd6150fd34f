/* libFuzzer target for the header-frame decoder.
 *
 * Build and run (30 s):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
 *       tests/fuzz/fuzz_proto.c proto/[a-z]*.c -lmsgpackc -lzmq -o /tmp/fuzz_proto
 *   /tmp/fuzz_proto -max_total_time=30 -max_len=4096
 *
 * Beyond "no crash, no leak": the pre-scan must accept whatever the decoder
 * accepts, and an accepted frame must survive decode → encode → decode with
 * the second encoding byte-identical to the first (the codec is a bijection
 * on what it accepts, up to msgpack's choice of integer widths).
 */
#include "../../proto/proto.h"

#include <stdlib.h>
#include <string.h>

static int encode(msgpack_sbuffer *sb, const proto_msg *m)
{
    msgpack_sbuffer o;
    msgpack_packer p;
    int rc;
    switch (m->type) {
    case MSG_HELLO: return proto_encode_hello(sb, &m->u.hello);
    case MSG_WELCOME: return proto_encode_welcome(sb, &m->u.welcome);
    case MSG_PUBLISH: return proto_encode_publish(sb, &m->u.publish);
    case MSG_CONFIRM: return proto_encode_confirm(sb, &m->u.confirm);
    case MSG_REGISTER: return proto_encode_register(sb, &m->u.reg);
    case MSG_CONFIG: return proto_encode_config(sb, &m->u.config);
    case MSG_DELIVER: return proto_encode_deliver(sb, &m->u.deliver);
    case MSG_RESULT: return proto_encode_result(sb, &m->u.result);
    case MSG_HEARTBEAT: return proto_encode_heartbeat(sb);
    case MSG_DRAIN: return proto_encode_drain(sb);
    case MSG_ERROR: return proto_encode_error(sb, m->u.error.status, m->u.error.text);
    case MSG_INVOKE: return proto_encode_invoke(sb, &m->u.invoke);
    case MSG_INVOKE_REPLY: return proto_encode_invoke_reply(sb, &m->u.invoke_reply);
    case MSG_REFUSED: return proto_encode_refused(sb, &m->u.refused);
    case MSG_BYE: return proto_encode_bye(sb);
    case MSG_STATS: return proto_encode_stats(sb, &m->u.stats);
    case MSG_ADMIN:
    case MSG_ADMIN_REPLY:
        msgpack_sbuffer_init(&o);
        msgpack_packer_init(&p, &o, msgpack_sbuffer_write);
        if (m->type == MSG_ADMIN) {
            msgpack_pack_object(&p, m->u.admin.args);
            rc = proto_encode_admin(sb, m->u.admin.req, m->u.admin.command, o.data, o.size);
        } else {
            msgpack_pack_object(&p, m->u.admin_reply.result);
            rc = proto_encode_admin_reply(sb, m->u.admin_reply.req, m->u.admin_reply.status,
                                          m->u.admin_reply.error, o.data, o.size);
        }
        msgpack_sbuffer_destroy(&o);
        return rc;
    default:
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    proto_msg m;
    if (proto_decode(data, size, &m, err, sizeof err) < 0) {
        if (!err[0])
            abort();   /* every refusal says why */
        return 0;
    }
    if (proto_prescan(data, size, err, sizeof err) < 0)
        abort();

    msgpack_sbuffer a, b;
    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);
    if (encode(&a, &m) < 0)
        abort();
    proto_msg m2;
    if (proto_decode(a.data, a.size, &m2, err, sizeof err) < 0)
        abort();   /* our own encoding of an accepted message was refused */
    if (m2.type != m.type || m2.nframes != m.nframes)
        abort();
    if (encode(&b, &m2) < 0 || a.size != b.size || memcmp(a.data, b.data, a.size) != 0)
        abort();
    proto_msg_clear(&m2);
    proto_msg_clear(&m);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
    return 0;
}
