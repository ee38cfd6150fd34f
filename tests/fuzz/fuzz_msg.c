/* libFuzzer target for one message type's decoder: built once per type with
 * -DFUZZ_TYPE='"PUBLISH"' (make fuzz: build/fuzz/fuzz_msg_publish, …).
 *
 * The input is the fields: its first byte says how many (0–15), the rest are
 * their msgpack bytes, and the target writes the header [1, FUZZ_TYPE, …]
 * around them, so every input reaches that type's field checks instead of
 * dying at the version or type. Then the same invariants as fuzz_proto.c
 * (whose body this reuses): a refusal says why, an accepted frame passes the
 * pre-scan and survives decode → encode → decode byte-identical.
 * Seeds: tests/fuzz/corpus/msg_TYPE/ (make fuzz-corpus writes them).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef FUZZ_TYPE
#error "build with -DFUZZ_TYPE='\"NAME\"'"
#endif

#define LLVMFuzzerTestOneInput fuzz_whole_frame
#include "fuzz_proto.c"
#undef LLVMFuzzerTestOneInput

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 20)) return 0;
    size_t tlen = strlen(FUZZ_TYPE);
    size_t n = data[0] & 15u;
    uint8_t *frame = malloc(size + tlen + 8);
    if (!frame) return 0;
    size_t k = 0;
    frame[k++] = (uint8_t)(0x90 | (n + 2));   /* fixarray: version, type, n fields */
    frame[k++] = 0x01;                        /* PROTO_VERSION */
    frame[k++] = (uint8_t)(0xa0 | tlen);      /* fixstr: the type name (< 32 bytes) */
    memcpy(frame + k, FUZZ_TYPE, tlen);
    k += tlen;
    memcpy(frame + k, data + 1, size - 1);
    k += size - 1;
    fuzz_whole_frame(frame, k);
    free(frame);
    return 0;
}
