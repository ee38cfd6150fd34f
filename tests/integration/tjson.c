/* tjson.c — a small JSON parser for the integration tests: heraldctl's
 * --json output and handlers' outputs are parsed for real, so every object's
 * key set and every value's type can be checked, not just substrings. */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tjson.h"


static void j_ws(const char **p)
{
    while (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r') (*p)++;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static bool j_hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(p[k]);
        if (h < 0) return false;
        v = v << 4 | (unsigned)h;
    }
    *out = v;
    return true;
}

/* A JSON string at *p (at its opening quote), decoded to bytes (UTF-8). */
static char *j_string(const char **p, size_t *len)
{
    if (**p != '"') return NULL;
    (*p)++;
    size_t cap = 64, n = 0;
    char *o = malloc(cap);
    for (;;) {
        if (n + 8 >= cap) o = realloc(o, cap *= 2);
        unsigned char c = (unsigned char)**p;
        if (c == 0 || c < 0x20) { free(o); return NULL; }   /* raw control characters are not JSON */
        (*p)++;
        if (c == '"') break;
        if (c != '\\') { o[n++] = (char)c; continue; }
        char e = *(*p)++;
        switch (e) {
        case '"': o[n++] = '"'; break;
        case '\\': o[n++] = '\\'; break;
        case '/': o[n++] = '/'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'n': o[n++] = '\n'; break;
        case 'r': o[n++] = '\r'; break;
        case 't': o[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (!j_hex4(*p, &cp)) { free(o); return NULL; }
            *p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && (*p)[0] == '\\' && (*p)[1] == 'u') {
                unsigned lo;
                if (!j_hex4(*p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF) { free(o); return NULL; }
                *p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp < 0x80) o[n++] = (char)cp;
            else if (cp < 0x800) { o[n++] = (char)(0xC0 | cp >> 6); o[n++] = (char)(0x80 | (cp & 63)); }
            else if (cp < 0x10000) {
                o[n++] = (char)(0xE0 | cp >> 12); o[n++] = (char)(0x80 | (cp >> 6 & 63)); o[n++] = (char)(0x80 | (cp & 63));
            } else {
                o[n++] = (char)(0xF0 | cp >> 18); o[n++] = (char)(0x80 | (cp >> 12 & 63));
                o[n++] = (char)(0x80 | (cp >> 6 & 63)); o[n++] = (char)(0x80 | (cp & 63));
            }
            break;
        }
        default: free(o); return NULL;
        }
    }
    o[n] = 0;
    *len = n;
    return o;
}

static j_val *j_value(const char **p, int depth)
{
    if (depth > 64) return NULL;
    j_ws(p);
    j_val *v = calloc(1, sizeof *v);
    char c = **p;
    if (c == '{' || c == '[') {
        bool obj = c == '{';
        v->t = obj ? J_OBJ : J_ARR;
        (*p)++;
        j_ws(p);
        if (**p == (obj ? '}' : ']')) { (*p)++; return v; }
        for (;;) {
            v->items = realloc(v->items, (v->n + 1) * sizeof *v->items);
            if (obj) {
                v->keys = realloc(v->keys, (v->n + 1) * sizeof *v->keys);
                j_ws(p);
                size_t kl;
                char *k = j_string(p, &kl);
                if (!k) return NULL;
                v->keys[v->n] = k;
                j_ws(p);
                if (**p != ':') return NULL;
                (*p)++;
            }
            j_val *item = j_value(p, depth + 1);
            if (!item) return NULL;
            v->items[v->n++] = item;
            j_ws(p);
            if (**p == ',') { (*p)++; continue; }
            if (**p == (obj ? '}' : ']')) { (*p)++; return v; }
            return NULL;
        }
    }
    if (c == '"') {
        v->t = J_STR;
        v->s = j_string(p, &v->slen);
        return v->s ? v : NULL;
    }
    if (strncmp(*p, "true", 4) == 0) { v->t = J_BOOL; v->b = true; *p += 4; return v; }
    if (strncmp(*p, "false", 5) == 0) { v->t = J_BOOL; *p += 5; return v; }
    if (strncmp(*p, "null", 4) == 0) { v->t = J_NULL; *p += 4; return v; }
    if (c == '-' || (c >= '0' && c <= '9')) {
        const char *start = *p;
        char *end;
        v->t = J_NUM;
        v->num = strtod(start, &end);
        if (end == start) return NULL;
        v->is_int = strcspn(start, ".eE") >= (size_t)(end - start);
        if (v->is_int) v->i = strtoll(start, NULL, 10);
        *p = end;
        return v;
    }
    return NULL;
}

/* Parses a whole JSON text (one value, whitespace around it); NULL if it is not JSON. */
j_val *j_parse(const char *text)
{
    if (!text) return NULL;
    const char *p = text;
    j_val *v = j_value(&p, 0);
    if (!v) return NULL;
    j_ws(&p);
    return *p ? NULL : v;
}

const j_val *j_get(const j_val *o, const char *key)
{
    if (!o || o->t != J_OBJ) return NULL;
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->keys[i], key) == 0) return o->items[i];
    return NULL;
}

const j_val *j_at(const j_val *a, size_t i)
{
    return a && a->t == J_ARR && i < a->n ? a->items[i] : NULL;
}

size_t j_len(const j_val *a)
{
    cr_assert(a && a->t == J_ARR, "not a JSON array");
    return a->n;
}

long long j_int(const j_val *o, const char *key)
{
    const j_val *v = j_get(o, key);
    cr_assert(v && v->t == J_NUM && v->is_int, "\"%s\" is missing or not an integer", key);
    return v->i;
}

double j_num(const j_val *o, const char *key)
{
    const j_val *v = j_get(o, key);
    cr_assert(v && v->t == J_NUM, "\"%s\" is missing or not a number", key);
    return v->num;
}

const char *j_str(const j_val *o, const char *key)
{
    const j_val *v = j_get(o, key);
    cr_assert(v && v->t == J_STR, "\"%s\" is missing or not a string", key);
    return v->s;
}

/* The object of array a whose k1 is v1 (and k2 is v2 when k2 is given). */
const j_val *j_find(const j_val *a, const char *k1, const char *v1, const char *k2, const char *v2)
{
    for (size_t i = 0; a && a->t == J_ARR && i < a->n; i++) {
        const j_val *x = j_get(a->items[i], k1), *y = k2 ? j_get(a->items[i], k2) : NULL;
        if (x && x->t == J_STR && strcmp(x->s, v1) == 0 && (!k2 || (y && y->t == J_STR && strcmp(y->s, v2) == 0)))
            return a->items[i];
    }
    return NULL;
}

static bool type_ok(const j_val *v, char t)
{
    switch (t) {
    case 'i': return v->t == J_NUM && v->is_int;
    case 'n': return v->t == J_NUM;
    case 's': return v->t == J_STR;
    case 'z': return v->t == J_STR || v->t == J_NULL;
    case 'a': return v->t == J_ARR;
    case 'b': return v->t == J_BOOL;
    case 'o': return v->t == J_OBJ;
    default: return false;
    }
}

/* o is an object with exactly the keys of spec ("name:s,count:i,..."; types:
 * i integer, n number, s string, z string or null, a array, o object, b boolean), each
 * once, of its type, and no other key. */
void assert_keys(const j_val *o, const char *spec, const char *where)
{
    cr_assert(o && o->t == J_OBJ, "%s: not a JSON object", where);
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", spec);
    size_t want = 0;
    char *save = NULL;
    for (char *k = strtok_r(buf, ",", &save); k; k = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(k, ':');
        cr_assert_not_null(colon, "bad spec %s", spec);
        *colon = 0;
        want++;
        size_t seen = 0;
        const j_val *v = NULL;
        for (size_t i = 0; i < o->n; i++)
            if (strcmp(o->keys[i], k) == 0) { seen++; v = o->items[i]; }
        cr_assert_eq(seen, 1, "%s: key \"%s\" appears %zu times (expected once)", where, k, seen);
        cr_assert(type_ok(v, colon[1]), "%s: \"%s\" has the wrong type (expected '%c')", where, k, colon[1]);
    }
    if (o->n != want) {
        char extra[1024] = "";
        for (size_t i = 0; i < o->n; i++) {
            char pat[300];
            snprintf(pat, sizeof pat, "%s:", o->keys[i]);
            bool listed = strncmp(spec, pat, strlen(pat)) == 0;
            char pat2[302];
            snprintf(pat2, sizeof pat2, ",%s", pat);
            listed = listed || strstr(spec, pat2);
            if (!listed) snprintf(extra + strlen(extra), sizeof extra - strlen(extra), " \"%s\"", o->keys[i]);
        }
        cr_assert_fail("%s: %zu keys, expected %zu; undocumented:%s", where, o->n, want, extra);
    }
}
