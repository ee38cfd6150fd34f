/* make_corpus: writes the libFuzzer seed corpora (make fuzz-corpus):
 *   tests/fuzz/corpus/proto/NAME          whole header frames of every type
 *   tests/fuzz/corpus/msg_TYPE/NAME       the fields of that type (fuzz_msg.c's format)
 * from our own encoders, so seeds follow the protocol when it changes. The
 * config corpus is copied from tests/configs/ by the make rule. */
#include "../../proto/proto.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void put(const char *dir, const char *name, const void *p, size_t n)
{
    char path[512];
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) { perror(path); exit(1); }
    fclose(f);
}

/* One encoded frame → the proto seed and the msg_TYPE seed. */
static void seed(const char *root, const char *name, msgpack_sbuffer *sb)
{
    char dir[400], type[64];
    const unsigned char *b = (const unsigned char *)sb->data;
    snprintf(dir, sizeof dir, "%s/proto", root);
    put(dir, name, sb->data, sb->size);
    if ((b[0] & 0xf0) != 0x90 || b[1] != 0x01 || (b[2] & 0xe0) != 0xa0) { fprintf(stderr, "%s: layout\n", name); exit(1); }
    size_t n = (b[0] & 15u) - 2, tlen = b[2] & 31u;
    size_t i;
    for (i = 0; i < tlen && i < sizeof type - 1; i++) type[i] = (char)tolower(b[3 + i]);
    type[i] = 0;
    snprintf(dir, sizeof dir, "%s/msg_%s", root, type);
    size_t off = 3 + tlen;
    unsigned char *f = malloc(sb->size - off + 1);
    f[0] = (unsigned char)n;
    memcpy(f + 1, b + off, sb->size - off);
    put(dir, name, f, sb->size - off + 1);
    free(f);
    msgpack_sbuffer_clear(sb);
}

int main(int argc, char **argv)
{
    const char *root = argc > 1 ? argv[1] : "tests/fuzz/corpus";
    mkdir(root, 0755);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    proto_attr attrs[2] = { { "kind", "png" }, { "k2", "" } };
    char *fns[2] = { "f", "g" }, *argv_exec[2] = { "sh", "x.sh" };

    proto_hello h = { "prod_1", "publisher" };
    proto_encode_hello(&sb, &h); seed(root, "hello", &sb);
    proto_hello hw = { "w-1", "worker" };
    proto_encode_hello(&sb, &hw); seed(root, "hello_worker", &sb);
    proto_welcome w = { 262144, 1024, 1000 };
    proto_encode_welcome(&sb, &w); seed(root, "welcome", &sb);
    proto_pub pubs[2] = { { 1, "t", NULL, attrs, 2, 0, NULL }, { 2, "", "f", NULL, 0, 1500, "dd-1" } };
    proto_publish p = { "prod_1", pubs, 2 };
    proto_encode_publish(&sb, &p); seed(root, "publish", &sb);
    proto_confirm_entry ce[2] = { { 1, 0, "prod_1-1" }, { 2, 5, "throttled: backlog" } };
    proto_confirm c = { ce, 2 };
    proto_encode_confirm(&sb, &c); seed(root, "confirm", &sb);
    proto_register r = { "w-1", "host", 42, 8, fns, 2 };
    proto_encode_register(&sb, &r); seed(root, "register", &sb);
    proto_register r0 = { "w-2", "host", 43, 1, NULL, 0 };
    proto_encode_register(&sb, &r0); seed(root, "register_all", &sb);
    proto_fndef fd[3] = { { .name = "f", .exec = argv_exec, .nexec = 2, .timeout_ms = 30000, .memory_mb = 128,
                            .max_attempts = 3, .env = attrs, .nenv = 1 },
                          { .name = "g", .native = true, .library = "lib.so", .symbol = "sym", .timeout_ms = 2000,
                            .memory_mb = 256, .max_attempts = 5 },
                          { .name = "r", .runtime = true, .exec = argv_exec, .nexec = 2, .timeout_ms = 3000,
                            .memory_mb = 256, .max_attempts = 3,
                            .rt = { "app.handler", PROTO_RT_SNS, 10000, 300000, 10000, 8 } } };
    proto_config cf = { 500, 1024, fd, 3 };
    proto_encode_config(&sb, &cf); seed(root, "config", &sb);
    proto_delivery dl[1] = { { 7, "f", "t", "prod_1-1", 1, 3, attrs, 1 } };
    proto_deliver d = { dl, 1 };
    proto_encode_deliver(&sb, &d); seed(root, "deliver", &sb);
    proto_result_entry re[2] = { { 7, OUT_OK, 1700000000000LL, 1234, NULL }, { 8, OUT_ERROR, 1700000000001LL, 5, "exit 3: x" } };
    proto_result rs = { re, 2 };
    proto_encode_result(&sb, &rs); seed(root, "result", &sb);
    proto_encode_heartbeat(&sb); seed(root, "heartbeat", &sb);
    proto_encode_drain(&sb); seed(root, "drain", &sb);
    /* admin args: {"limit": 10, "function": "f"} */
    const unsigned char args[] = { 0x82, 0xa5, 'l', 'i', 'm', 'i', 't', 0x0a, 0xa8, 'f', 'u', 'n', 'c', 't', 'i', 'o', 'n', 0xa1, 'f' };
    proto_encode_admin(&sb, 3, "dlq.list", args, sizeof args); seed(root, "admin", &sb);
    proto_encode_admin(&sb, 4, "stats", NULL, 0); seed(root, "admin_stats", &sb);
    const unsigned char res[] = { 0x91, 0x81, 0xa2, 'i', 'd', 0x01 };
    proto_encode_admin_reply(&sb, 3, 0, NULL, res, sizeof res); seed(root, "admin_reply", &sb);
    proto_encode_admin_reply(&sb, 3, 10, "no such dead letter", NULL, 0); seed(root, "admin_reply_err", &sb);
    proto_encode_error(&sb, 1, "malformed: bad header"); seed(root, "error", &sb);
    proto_invoke iv = { 9, "f", 5000 };
    proto_encode_invoke(&sb, &iv); seed(root, "invoke", &sb);
    proto_invoke_reply ir = { 9, 0, NULL, "inv-1" };
    proto_encode_invoke_reply(&sb, &ir); seed(root, "invoke_reply", &sb);
    proto_refusal rf[2] = { { "f", "/srv/x.sh is not an executable program" }, { "g", "library lib.so: No such file" } };
    proto_refused rd = { rf, 2 };
    proto_encode_refused(&sb, &rd); seed(root, "refused", &sb);
    proto_refused rd0 = { NULL, 0 };
    proto_encode_refused(&sb, &rd0); seed(root, "refused_none", &sb);
    proto_encode_bye(&sb); seed(root, "bye", &sb);
    proto_stats_entry se[2] = { { .function = "r", .cold_starts = 2, .init_us = 350000, .warm = 40 },
                                { .function = "f", .warm = 1 } };
    se[0].recycles[PROTO_RECYCLE_IDLE] = 1;
    se[0].recycles[PROTO_RECYCLE_MAX_INVOCATIONS] = 1;
    proto_stats ps = { se, 2 };
    proto_encode_stats(&sb, &ps); seed(root, "stats", &sb);
    msgpack_sbuffer_destroy(&sb);
    return 0;
}
