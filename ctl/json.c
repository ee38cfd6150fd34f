/* json.c — prints a msgpack object as JSON (heraldctl's --json output).
 * Strings are escaped per RFC 8259 (bytes that are not UTF-8 become U+FFFD); binary becomes a base64 string; map keys
 * that are not strings are printed as strings of their JSON text. */
#include <stdio.h>
#include <string.h>

#include "ctl.h"

void json_string(FILE *out, const char *s, size_t n)
{
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {   /* valid UTF-8 as it is; a stray byte (a text cut mid-character) as U+FFFD */
            size_t k = util_utf8_len((const unsigned char *)s + i, n - i);
            if (k) fwrite(s + i, 1, k, out), i += k - 1;
            else fputs("\\ufffd", out);
            continue;
        }
        switch (c) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        default:
            if (c < 0x20) fprintf(out, "\\u%04x", c);
            else fputc(c, out);
        }
    }
    fputc('"', out);
}

static void base64(FILE *out, const unsigned char *p, size_t n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    fputc('"', out);
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        fputc(t[v >> 18 & 63], out);
        fputc(t[v >> 12 & 63], out);
        fputc(i + 1 < n ? t[v >> 6 & 63] : '=', out);
        fputc(i + 2 < n ? t[v & 63] : '=', out);
    }
    fputc('"', out);
}

void json_print(FILE *out, const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: fputs("null", out); break;
    case MSGPACK_OBJECT_BOOLEAN: fputs(o->via.boolean ? "true" : "false", out); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: fprintf(out, "%llu", (unsigned long long)o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: fprintf(out, "%lld", (long long)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: fprintf(out, "%.6g", o->via.f64); break;
    case MSGPACK_OBJECT_STR: json_string(out, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: base64(out, (const unsigned char *)o->via.bin.ptr, o->via.bin.size); break;
    case MSGPACK_OBJECT_ARRAY:
        fputc('[', out);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i) fputc(',', out);
            json_print(out, &o->via.array.ptr[i]);
        }
        fputc(']', out);
        break;
    case MSGPACK_OBJECT_MAP:
        fputc('{', out);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (i) fputc(',', out);
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (k->type == MSGPACK_OBJECT_STR) json_print(out, k);
            else { fputc('"', out); fputs("?", out); fputc('"', out); }
            fputc(':', out);
            json_print(out, &o->via.map.ptr[i].val);
        }
        fputc('}', out);
        break;
    default: fputs("null", out);
    }
}

const msgpack_object *mp_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl && memcmp(k->via.str.ptr, key, kl) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

/* A field as text for tables: strings as is, numbers formatted. */
void mp_text(const msgpack_object *o, char *buf, size_t n)
{
    if (!o) { snprintf(buf, n, "-"); return; }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: snprintf(buf, n, "-"); break;
    case MSGPACK_OBJECT_STR: snprintf(buf, n, "%.*s", (int)o->via.str.size, o->via.str.ptr); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: snprintf(buf, n, "%llu", (unsigned long long)o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: snprintf(buf, n, "%lld", (long long)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: snprintf(buf, n, "%.3f", o->via.f64); break;
    case MSGPACK_OBJECT_ARRAY: {
        size_t used = 0;
        buf[0] = 0;
        for (uint32_t i = 0; i < o->via.array.size && used + 1 < n; i++) {
            char item[128];
            mp_text(&o->via.array.ptr[i], item, sizeof item);
            used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? "," : "", item);
        }
        break;
    }
    default: snprintf(buf, n, "?");
    }
}
