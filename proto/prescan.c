/* prescan: walks a header frame's msgpack bytes before msgpack-c sees them.
 *
 * Why: msgpack_unpack allocates whatever a header claims before checking
 * that the bytes exist, so a 15-byte frame declaring a 2^32-element array
 * asks for gigabytes. The scan proves, with no allocation, that the frame is
 * exactly one object, within PROTO_MAX_DEPTH, whose declared lengths fit in
 * the bytes that follow and whose declared element counts could each be at
 * least one byte. After it, what msgpack-c allocates is bounded by the frame
 * length.
 *
 * Invariant of the walk: `pending` (elements still owed by every open
 * container) never exceeds the bytes left, because every element takes at
 * least one byte and elements of different containers do not overlap.
 */
#include "proto.h"

#include <stdio.h>

static int scan_fail(char *err, size_t errlen, const char *why, size_t pos)
{
    if (err && errlen)
        snprintf(err, errlen, "bad msgpack at byte %zu: %s", pos, why);
    return -1;
}

/* Big-endian read of n (1, 2 or 4) bytes; the caller checked they exist. */
static uint64_t be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

int proto_prescan(const void *frame, size_t len, char *err, size_t errlen)
{
    const unsigned char *b = frame;
    if (len == 0 || !b)
        return scan_fail(err, errlen, "empty frame", 0);
    if (len > PROTO_FRAME_MAX)
        return scan_fail(err, errlen, "frame too large", 0);

    /* left[d]: elements still to read in the container open at depth d;
     * depth 0 is a virtual container holding the single top-level object. */
    uint64_t left[PROTO_MAX_DEPTH + 1];
    int depth = 0;
    left[0] = 1;
    uint64_t pending = 1;
    size_t pos = 0;

    while (depth >= 0) {
        if (left[depth] == 0) {
            depth--;
            continue;
        }
        if (pos >= len)
            return scan_fail(err, errlen, "truncated", pos);
        size_t at = pos;
        unsigned c = b[pos++];
        left[depth]--;
        pending--;

        uint64_t skip = 0;      /* payload bytes after the header */
        uint64_t items = 0;     /* elements of a container (2 per map pair) */
        bool container = false;
        int lenbytes = 0;       /* size of the length/count field that follows */

        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
            /* fixint, nil, bool: the byte is the whole object */
        } else if (c >= 0x80 && c <= 0x8f) {
            container = true, items = 2ull * (c & 0x0f);
        } else if (c >= 0x90 && c <= 0x9f) {
            container = true, items = c & 0x0f;
        } else if (c >= 0xa0 && c <= 0xbf) {
            skip = c & 0x1f;
        } else {
            switch (c) {
            case 0xc4: case 0xd9: lenbytes = 1; break;            /* bin8, str8 */
            case 0xc5: case 0xda: lenbytes = 2; break;            /* bin16, str16 */
            case 0xc6: case 0xdb: lenbytes = 4; break;            /* bin32, str32 */
            case 0xc7: lenbytes = 1; skip = 1; break;             /* ext8: + type byte */
            case 0xc8: lenbytes = 2; skip = 1; break;
            case 0xc9: lenbytes = 4; skip = 1; break;
            case 0xca: skip = 4; break;                           /* float32 */
            case 0xcb: skip = 8; break;                           /* float64 */
            case 0xcc: case 0xd0: skip = 1; break;                /* (u)int8 */
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;                           /* fixext1: type + 1 */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc: container = true, lenbytes = 2; break;     /* array16 */
            case 0xdd: container = true, lenbytes = 4; break;     /* array32 */
            case 0xde: container = true, lenbytes = 2; break;     /* map16 */
            case 0xdf: container = true, lenbytes = 4; break;     /* map32 */
            default:
                return scan_fail(err, errlen, "invalid type byte 0xc1", at);
            }
        }

        if (lenbytes) {
            if ((size_t)lenbytes > len - pos)
                return scan_fail(err, errlen, "truncated length", at);
            uint64_t n = be(b + pos, lenbytes);
            pos += (size_t)lenbytes;
            if (!container)
                skip += n;
            else
                items = (c == 0xde || c == 0xdf) ? 2 * n : n;
        }

        if (container) {
            if (depth + 1 > PROTO_MAX_DEPTH)
                return scan_fail(err, errlen, "nested too deep", at);
            pending += items;
            if (pending > len - pos)
                return scan_fail(err, errlen, "element count exceeds the bytes left", at);
            left[++depth] = items;
        } else {
            if (skip > len - pos)
                return scan_fail(err, errlen, "length exceeds the bytes left", at);
            pos += (size_t)skip;
        }
    }
    if (pos != len)
        return scan_fail(err, errlen, "trailing bytes", pos);
    return 0;
}
