/* attrs: an event's attributes as an exec handler's environment (DESIGN §4).
 *
 * HERALD_ATTRS holds every attribute as one JSON object, keys and values
 * exactly as published, in their order; HERALD_ATTR_<KEY> holds each value
 * under its key upper-cased, anything but [A-Z0-9_] made '_'. Keys are names
 * ([A-Za-z0-9_.-]), so folding can make two keys one variable ("region" and
 * "REGION", "x-y" and "x_y"): neither is "the" one, so every key whose
 * variable another key shares is left out of HERALD_ATTR_* and is in
 * HERALD_ATTRS only. Pure functions over a wbuf; main calls them for each
 * exec attempt (pool_exec.c, through chan_exec_put). Values never hold a NUL (the wire
 * refuses it); bytes that are not UTF-8 (possible only in events stored
 * before keys were checked, or in values) become U+FFFD in the JSON, since
 * JSON cannot carry them; the HERALD_ATTR_ variable keeps the raw bytes.
 */
#include "runner_int.h"

#define ENV_PREFIX "HERALD_ATTR_"

void attrs_json_str(wbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    put_u8(b, '"');
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c >= 0x80) {
            size_t l = util_utf8_len(p + i, n - i);
            if (l) {
                wbuf_put(b, p + i, l);
                i += l;
            } else {
                wbuf_put(b, "\\ufffd", 6);
                i++;
            }
            continue;
        }
        i++;
        switch (c) {
        case '"': wbuf_put(b, "\\\"", 2); break;
        case '\\': wbuf_put(b, "\\\\", 2); break;
        case '\b': wbuf_put(b, "\\b", 2); break;
        case '\f': wbuf_put(b, "\\f", 2); break;
        case '\n': wbuf_put(b, "\\n", 2); break;
        case '\r': wbuf_put(b, "\\r", 2); break;
        case '\t': wbuf_put(b, "\\t", 2); break;
        default:
            if (c < 0x20) {
                char u[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
                wbuf_put(b, u, 6);
            } else {
                put_u8(b, c);
            }
        }
    }
    put_u8(b, '"');
}

void attrs_json(wbuf *b, const proto_attr *a, size_t n)
{
    put_u8(b, '{');
    for (size_t i = 0; i < n; i++) {
        if (i)
            put_u8(b, ',');
        attrs_json_str(b, a[i].key, strlen(a[i].key));
        put_u8(b, ':');
        attrs_json_str(b, a[i].value, strlen(a[i].value));
    }
    put_u8(b, '}');
}

static char fold(char c)
{
    if (c >= 'a' && c <= 'z')
        return (char)(c - 'a' + 'A');
    if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')
        return c;
    return '_';
}

/* Do keys x and y make the same HERALD_ATTR_ name? */
static bool fold_equal(const char *x, const char *y)
{
    for (; *x && *y; x++, y++)
        if (fold(*x) != fold(*y))
            return false;
    return *x == *y;
}

uint32_t attrs_put_env(wbuf *b, const proto_attr *a, size_t n)
{
    /* HERALD_ATTRS: the length goes first, so the JSON is written in place
     * and its length filled in after. */
    size_t at = b->len;
    put_u32(b, 0);
    wbuf_put(b, "HERALD_ATTRS=", 13);
    attrs_json(b, a, n);
    put_u8(b, 0);
    if (!b->failed) {
        uint32_t len = (uint32_t)(b->len - at - 4 - 1);
        memcpy(b->p + at, &len, 4);
    }
    uint32_t count = 1;
    /* Quadratic, but an event has at most 16 attributes. */
    for (size_t i = 0; i < n; i++) {
        bool alone = true;
        for (size_t j = 0; j < n && alone; j++)
            alone = j == i || !fold_equal(a[i].key, a[j].key);
        if (!alone)
            continue;
        size_t kl = strlen(a[i].key), vl = strlen(a[i].value);
        put_u32(b, (uint32_t)(sizeof ENV_PREFIX - 1 + kl + 1 + vl));
        wbuf_put(b, ENV_PREFIX, sizeof ENV_PREFIX - 1);
        for (size_t k = 0; k < kl; k++)
            put_u8(b, (uint8_t)fold(a[i].key[k]));
        put_u8(b, '=');
        wbuf_put(b, a[i].value, vl);
        put_u8(b, 0);
        count++;
    }
    return count;
}
