/* libFuzzer target for the Runtime API's HTTP parser, worker/http.c
 * (make fuzz: build/fuzz/fuzz_http).
 *
 * Input: byte 0 picks the body cap (0..4080 bytes, so 413s happen), byte 1
 * seeds the sizes of the pieces fed, the rest is a connection's bytes. The
 * bytes are parsed twice, as the server does (append, parse, compact; after
 * each whole request drop its bytes and parse the next): once all at once and
 * once in small pieces. Both runs must see the same requests (result, status,
 * method, path, body) in the same order; every offset the parser reports must
 * stay inside the buffer. Nothing may crash, leak or read past the buffer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../worker/http.h"

#define MAX_REQS 64

typedef struct {
    int result;                 /* http_result */
    int status;
    uint64_t hash;              /* method, path and body */
} outcome;

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

/* Parses data like rtapi's connection loop; piece sizes from seed (0: all at once). */
static size_t run(const uint8_t *data, size_t size, size_t cap, unsigned seed, outcome *out)
{
    char *buf = malloc(size + 1);
    size_t len = 0, fed = 0, n = 0;
    http_req *r = malloc(sizeof *r);
    if (!buf || !r) abort();
    http_req_init(r, cap);
    int res = HTTP_NEED_MORE;
    while (n < MAX_REQS) {
        res = http_parse(r, buf, len);
        if (res == HTTP_NEED_MORE) {
            if (r->head_done && r->body_len > cap) abort();
            len = http_compact(r, buf, len);
            if (fed == size) break;
            size_t piece = seed ? 1 + (seed = seed * 1103515245u + 12345u) % 7 : size - fed;
            if (piece > size - fed) piece = size - fed;
            memcpy(buf + len, data + fed, piece);
            len += piece;
            fed += piece;
            continue;
        }
        outcome *o = &out[n++];
        o->result = res;
        o->status = res == HTTP_ERROR ? r->status : 0;
        o->hash = 14695981039346656037ull;
        if (res == HTTP_ERROR) {
            if (r->status != 400 && r->status != 413 && r->status != 431 && r->status != 501
                && r->status != 505)
                abort();
            if (!r->why) abort();
            break;
        }
        if (r->consumed > len || r->body_len > cap) abort();
        size_t ml, pl;
        const char *m = http_method(r, &ml);
        const char *p = http_path(r, &pl);
        if (m < buf || m + ml > buf + len || p < buf || p + pl > buf + len || !pl || *p != '/') abort();
        if (http_body(r) + r->body_len > buf + r->consumed) abort();
        o->hash = fnv(fnv(fnv(o->hash, m, ml), p, pl), http_body(r), r->body_len);
        size_t fl;
        const char *h = http_field_get(r, "host", &fl);
        if (h && (h < buf || h + fl > buf + len)) abort();
        memmove(buf, buf + r->consumed, len - r->consumed);
        len -= r->consumed;
        http_req_init(r, cap);
    }
    free(r);
    free(buf);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > (64u << 10)) return 0;
    size_t cap = (size_t)data[0] * 16;
    unsigned seed = data[1] | 1u;
    static outcome a[MAX_REQS], b[MAX_REQS];
    size_t na = run(data + 2, size - 2, cap, 0, a);
    size_t nb = run(data + 2, size - 2, cap, seed, b);
    if (na != nb) abort();
    for (size_t i = 0; i < na; i++)
        if (a[i].result != b[i].result || a[i].status != b[i].status || a[i].hash != b[i].hash) abort();
    return 0;
}
