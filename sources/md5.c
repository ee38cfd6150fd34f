/* md5.c: MD5 (RFC 1321), for S3-style eTags of a file's content. Written
 * from the RFC; not for security (S3 uses it as a content fingerprint, and
 * so do we). State: none beyond the caller's md5_ctx; the constant table is
 * computed once from its definition, floor(|sin(i + 1)| * 2^32).
 */
#include <math.h>
#include <string.h>

#include "fs.h"

static uint32_t K[64];
static const unsigned S[64] = {
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
    5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
};

static uint32_t rotl(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32 - n));
}

static void block(md5_ctx *m, const unsigned char *p)
{
    uint32_t w[16];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
               (uint32_t)p[4 * i + 3] << 24;
    uint32_t a = m->a, b = m->b, c = m->c, d = m->d;
    for (unsigned i = 0; i < 64; i++) {
        uint32_t f;
        unsigned g;
        if (i < 16) f = (b & c) | (~b & d), g = i;
        else if (i < 32) f = (d & b) | (~d & c), g = (5 * i + 1) % 16;
        else if (i < 48) f = b ^ c ^ d, g = (3 * i + 5) % 16;
        else f = c ^ (b | ~d), g = (7 * i) % 16;
        f += a + K[i] + w[g];
        a = d;
        d = c;
        c = b;
        b += rotl(f, S[i]);
    }
    m->a += a;
    m->b += b;
    m->c += c;
    m->d += d;
}

void md5_init(md5_ctx *m)
{
    if (!K[0])
        for (int i = 0; i < 64; i++) K[i] = (uint32_t)floor(fabs(sin(i + 1.0)) * 4294967296.0);
    m->a = 0x67452301;
    m->b = 0xefcdab89;
    m->c = 0x98badcfe;
    m->d = 0x10325476;
    m->len = 0;
}

void md5_update(md5_ctx *m, const void *data, size_t n)
{
    const unsigned char *p = data;
    size_t have = (size_t)(m->len % 64);
    m->len += n;
    if (have) {
        size_t take = 64 - have < n ? 64 - have : n;
        memcpy(m->buf + have, p, take);
        p += take;
        n -= take;
        if (have + take < 64) return;
        block(m, m->buf);
    }
    for (; n >= 64; p += 64, n -= 64) block(m, p);
    memcpy(m->buf, p, n);
}

void md5_final(md5_ctx *m, unsigned char out[16])
{
    uint64_t bits = m->len * 8;
    unsigned char pad[72] = { 0x80 };
    size_t have = (size_t)(m->len % 64);
    size_t padlen = have < 56 ? 56 - have : 120 - have;
    md5_update(m, pad, padlen);
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)(bits >> (8 * i));
    md5_update(m, lenb, 8);
    uint32_t v[4] = { m->a, m->b, m->c, m->d };
    for (int i = 0; i < 16; i++) out[i] = (unsigned char)(v[i / 4] >> (8 * (i % 4)));
}
