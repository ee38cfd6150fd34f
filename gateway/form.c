/* form.c — application/x-www-form-urlencoded bodies (the SNS Query protocol).
 *
 * "k1=v1&k2=v2": '+' is a space, %XX a byte (UTF-8 text arrives as its
 * bytes). Strict: a '%' without two hex digits is an error that names its
 * offset, never a guess. Values may hold any byte (a NUL too: vlen counts
 * it); keys may not hold a NUL. Empty fields ("a=1&&b=2") are skipped. A
 * key without '=' has the empty value. Every string is malloc'ed and owned by
 * the form_t until form_free.
 */
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

static int hex(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes s[0..n) (at offset base of the body) into a new string. */
static char *decode(const char *s, size_t n, size_t base, size_t *outlen, char *err, size_t errlen)
{
    char *o = malloc(n + 1);
    if (!o) { snprintf(err, errlen, "out of memory"); return NULL; }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            o[k++] = ' ';
        } else if (s[i] == '%') {
            int a = i + 1 < n ? hex(s[i + 1]) : -1, b = i + 2 < n ? hex(s[i + 2]) : -1;
            if (a < 0 || b < 0) {
                snprintf(err, errlen, "bad form encoding: '%%' at byte %zu is not followed by two hex digits",
                         base + i);
                free(o);
                return NULL;
            }
            o[k++] = (char)(a << 4 | b);
            i += 2;
        } else {
            o[k++] = s[i];
        }
    }
    o[k] = 0;
    *outlen = k;
    return o;
}

int form_parse(form_t *f, const char *body, size_t len, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    size_t i = 0;
    while (i < len) {
        const char *amp = memchr(body + i, '&', len - i);
        size_t end = amp ? (size_t)(amp - body) : len;
        if (end > i) {
            const char *eq = memchr(body + i, '=', end - i);
            size_t kend = eq ? (size_t)(eq - body) : end;
            size_t klen, vlen = 0;
            char *k = decode(body + i, kend - i, i, &klen, err, errlen);
            char *v = k ? (eq ? decode(eq + 1, end - kend - 1, kend + 1, &vlen, err, errlen) : strdup("")) : NULL;
            if (!k || !v) { free(k); free(v); goto fail; }
            if (memchr(k, 0, klen)) {
                snprintf(err, errlen, "bad form encoding: a field name at byte %zu holds a NUL byte", i);
                free(k);
                free(v);
                goto fail;
            }
            if (f->n == f->cap) {
                size_t cap = f->cap ? f->cap * 2 : 32;
                form_pair *nv = realloc(f->v, cap * sizeof *nv);
                if (!nv) { free(k); free(v); snprintf(err, errlen, "out of memory"); goto fail; }
                f->v = nv;
                f->cap = cap;
            }
            f->v[f->n++] = (form_pair){ k, v, vlen };
        }
        i = end + 1;
    }
    return 0;
fail:
    form_free(f);
    return -1;
}

const char *form_get(const form_t *f, const char *key, size_t *vlen)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->v[i].key, key) == 0) {
            if (vlen) *vlen = f->v[i].vlen;
            return f->v[i].value;
        }
    return NULL;
}

void form_free(form_t *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->v[i].key);
        free(f->v[i].value);
    }
    free(f->v);
    memset(f, 0, sizeof *f);
}

bool form_has_action(const char *body, size_t len)
{
    for (size_t i = 0; i + 7 <= len; i++)
        if ((i == 0 || body[i - 1] == '&') && memcmp(body + i, "Action=", 7) == 0) return true;
    return false;
}
