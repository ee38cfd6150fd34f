/* http: the request parser and response writer of http.h.
 *
 * A request is parsed in two phases. The head is searched for its final CRLF
 * CRLF (resuming where the last call stopped, checking on the way that every
 * CR is followed by LF and every LF preceded by CR), then parsed in one pass
 * once it is all there. The body is then either counted (Content-Length) or
 * run through the chunked framing machine below, which moves data bytes down
 * to follow the head as they arrive. The parser holds offsets only, so the
 * caller may move or grow its buffer between calls.
 */
#define _GNU_SOURCE
#include "http.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Framing states of a chunked body. */
enum {
    CS_SIZE0,       /* a chunk-size line, no digit yet */
    CS_SIZE,        /* in the hex digits */
    CS_BWS,         /* white space after the digits: ';' or CR next */
    CS_EXT,         /* chunk extensions, until CR */
    CS_SIZE_LF,     /* the LF of a chunk-size line */
    CS_DATA,        /* chunk_left data bytes */
    CS_DATA_CR,     /* the CRLF after chunk data */
    CS_DATA_LF,
    CS_TRAILER0,    /* start of a trailer field line, or the final CRLF */
    CS_TNAME,       /* a trailer field's name */
    CS_TVALUE,      /* its value, until CR */
    CS_TRAILER_LF,
    CS_END_LF,      /* the LF that ends the message */
};

/* RFC 9110 tchar: the bytes of a token (methods, field names). */
static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-value bytes: VCHAR, obs-text, SP, HTAB */
static bool is_value_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

bool http_token_ok(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s)) return false;
    return true;
}

bool http_value_ok(const char *s)
{
    for (; *s; s++)
        if (!is_value_byte((unsigned char)*s)) return false;
    return true;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static http_result fail(http_req *r, int status, const char *why)
{
    r->status = status;
    r->why = why;
    return HTTP_ERROR;
}

void http_req_init(http_req *r, size_t body_cap)
{
    assert(body_cap < ((uint64_t)1 << 60));   /* size arithmetic never overflows */
    memset(r, 0, offsetof(http_req, fields));
    r->body_cap = body_cap;
}

static bool name_is(const char *buf, const http_field *f, const char *name)
{
    size_t n = strlen(name);
    return f->name_len == n && strncasecmp(buf + f->name_off, name, n) == 0;
}

static bool value_is(const char *v, size_t n, const char *word)
{
    return n == strlen(word) && strncasecmp(v, word, n) == 0;
}

/* Connection: a comma-separated list of tokens; close and keep-alive count. */
static void connection_tokens(http_req *r, const char *v, size_t n)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        size_t s = i;
        while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t') i++;
        if (value_is(v + s, i - s, "close"))
            r->keep_alive = false;
        else if (value_is(v + s, i - s, "keep-alive") && r->minor == 0)
            r->keep_alive = true;
    }
}

/* The fields that frame the message or the connection; the rest are kept
 * for http_field_get only. */
static http_result head_semantics(http_req *r, const char *buf)
{
    int hosts = 0;
    bool te = false, te_chunked = false;
    r->keep_alive = r->minor == 1;
    for (uint32_t i = 0; i < r->nfields; i++) {
        const http_field *f = &r->fields[i];
        const char *v = buf + f->value_off;
        size_t n = f->value_len;
        if (name_is(buf, f, "content-length")) {
            if (r->has_length) return fail(r, 400, "repeated Content-Length");
            if (n == 0) return fail(r, 400, "empty Content-Length");
            uint64_t len = 0;
            for (size_t k = 0; k < n; k++) {
                if (v[k] < '0' || v[k] > '9') return fail(r, 400, "Content-Length not digits");
                if (len <= r->body_cap)   /* saturates just past the cap: no overflow */
                    len = len * 10 + (uint64_t)(v[k] - '0');
            }
            r->has_length = true;
            r->content_length = len;
        } else if (name_is(buf, f, "transfer-encoding")) {
            if (te) return fail(r, 400, "repeated Transfer-Encoding");
            te = true;
            te_chunked = value_is(v, n, "chunked");
        } else if (name_is(buf, f, "connection")) {
            connection_tokens(r, v, n);
        } else if (name_is(buf, f, "expect")) {
            if (value_is(v, n, "100-continue") && r->minor == 1)
                r->expect_continue = true;
        } else if (name_is(buf, f, "host")) {
            hosts++;
        }
    }
    if (te && r->minor == 0) return fail(r, 400, "Transfer-Encoding in HTTP/1.0");
    if (te && r->has_length) return fail(r, 400, "both Transfer-Encoding and Content-Length");
    if (te && !te_chunked) return fail(r, 501, "transfer coding other than chunked");
    if (r->minor == 1 && hosts != 1) return fail(r, 400, "HTTP/1.1 without exactly one Host");
    r->chunked = te;
    r->head_done = true;
    if (r->has_length && r->content_length > r->body_cap)
        return fail(r, 413, "Content-Length over the cap");
    return HTTP_DONE;
}

/* The request line: METHOD SP origin-form SP HTTP/1.x CRLF. */
static http_result request_line(http_req *r, const char *buf, size_t *pp)
{
    size_t p = r->start;
    while (is_tchar((unsigned char)buf[p])) p++;
    if (p == r->start || buf[p] != ' ') return fail(r, 400, "bad method");
    r->method_off = (uint32_t)r->start;
    r->method_len = (uint32_t)(p - r->start);
    size_t t = ++p;
    while ((unsigned char)buf[p] > 0x20 && (unsigned char)buf[p] < 0x7f) p++;
    if (p == t || buf[p] != ' ') return fail(r, 400, "bad request target");
    if (buf[t] != '/') return fail(r, 400, "request target not in origin-form");
    r->target_off = (uint32_t)t;
    r->target_len = (uint32_t)(p - t);
    const char *q = memchr(buf + t, '?', r->target_len);
    r->path_len = q ? (uint32_t)(q - (buf + t)) : r->target_len;
    p++;
    /* "HTTP/" DIGIT "." DIGIT CRLF: the head ends in CRLFCRLF, so the
     * bytes up to the first CR are all there to look at */
    const char *v = buf + p;
    const char *cr = memchr(v, '\r', r->head_len - p);
    if (!cr || cr - v != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.'
        || v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9')
        return fail(r, 400, "bad HTTP version");
    if (v[5] != '1' || v[7] > '1') return fail(r, 505, "HTTP version not supported");
    r->minor = v[7] - '0';
    *pp = p + 10;
    return HTTP_DONE;
}

/* The whole head is in buf[start, head_len) and framed by CRLFs only. */
static http_result parse_fields(http_req *r, const char *buf)
{
    size_t p;
    http_result res = request_line(r, buf, &p);
    if (res != HTTP_DONE) return res;
    while (buf[p] != '\r') {
        if (buf[p] == ' ' || buf[p] == '\t') return fail(r, 400, "obs-fold");
        size_t n = p;
        while (is_tchar((unsigned char)buf[p])) p++;
        if (p == n || buf[p] != ':') return fail(r, 400, "bad field name");
        if (r->nfields == HTTP_HEADERS_MAX) return fail(r, 431, "too many header fields");
        http_field *f = &r->fields[r->nfields++];
        f->name_off = (uint32_t)n;
        f->name_len = (uint32_t)(p - n);
        p++;
        while (buf[p] == ' ' || buf[p] == '\t') p++;
        size_t vs = p;
        while (buf[p] != '\r') {
            if (!is_value_byte((unsigned char)buf[p])) return fail(r, 400, "control byte in a field value");
            p++;
        }
        size_t ve = p;
        while (ve > vs && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t')) ve--;
        f->value_off = (uint32_t)vs;
        f->value_len = (uint32_t)(ve - vs);
        p += 2;
    }
    return head_semantics(r, buf);
}

/* Finds the head's end; DONE when head_len is set. */
static http_result find_head(http_req *r, const char *buf, size_t len)
{
    while (r->scan == r->start && len - r->start >= 1 && buf[r->start] == '\r') {
        if (len - r->start < 2) return HTTP_NEED_MORE;
        if (buf[r->start + 1] != '\n') return fail(r, 400, "bare CR");
        r->start += 2;
        r->scan = r->start;
        if (r->start > HTTP_HEAD_MAX) return fail(r, 400, "too many empty lines");
    }
    size_t i = r->scan;
    for (; i < len; i++) {
        if (i - r->start >= HTTP_HEAD_MAX) return fail(r, 431, "request head too large");
        char c = buf[i];
        if (c == '\r') {
            if (i + 1 == len) break;
            if (buf[i + 1] != '\n') return fail(r, 400, "bare CR");
        } else if (c == '\n') {
            if (i == r->start || buf[i - 1] != '\r') return fail(r, 400, "bare LF");
            if (i - r->start >= 3 && buf[i - 2] == '\n') {
                r->head_len = i + 1;
                return HTTP_DONE;
            }
        } else if (c == '\0') {
            return fail(r, 400, "NUL in the head");
        }
    }
    r->scan = i;
    return HTTP_NEED_MORE;
}

static http_result chunked_body(http_req *r, char *buf, size_t len)
{
    while (r->pos < len) {
        if (r->cstate == CS_DATA) {
            size_t n = len - r->pos;
            if (n > r->chunk_left) n = (size_t)r->chunk_left;
            memmove(buf + r->head_len + r->body_len, buf + r->pos, n);
            r->body_len += n;
            r->pos += n;
            r->chunk_left -= n;
            if (r->chunk_left == 0) r->cstate = CS_DATA_CR;
            continue;
        }
        unsigned char c = (unsigned char)buf[r->pos++];
        switch (r->cstate) {
        case CS_SIZE0:
        case CS_SIZE: {
            int h = hexval(c);
            if (h >= 0) {
                r->chunk_left = r->chunk_left * 16 + (uint64_t)h;
                r->cstate = CS_SIZE;
                /* body_cap < 2^60 (http_req_init): the next digit cannot overflow */
                if (r->chunk_left > r->body_cap - r->body_len) {
                    r->content_length = r->body_len + r->chunk_left;
                    return fail(r, 413, "chunked body over the cap");
                }
            } else if (r->cstate == CS_SIZE0) {
                return fail(r, 400, "bad chunk size");
            } else if (c == ';') {
                r->cstate = CS_EXT;
            } else if (c == ' ' || c == '\t') {
                r->cstate = CS_BWS;
            } else if (c == '\r') {
                r->cstate = CS_SIZE_LF;
            } else {
                return fail(r, 400, "bad chunk size");
            }
            break;
        }
        case CS_BWS:
            if (c == ';') r->cstate = CS_EXT;
            else if (c == '\r') r->cstate = CS_SIZE_LF;
            else if (c != ' ' && c != '\t') return fail(r, 400, "bad chunk extension");
            break;
        case CS_EXT:
            if (c == '\r') r->cstate = CS_SIZE_LF;
            else if (!is_value_byte(c)) return fail(r, 400, "bad chunk extension");
            break;
        case CS_SIZE_LF:
            if (c != '\n') return fail(r, 400, "bare CR in chunk framing");
            r->line_len = 0;
            r->cstate = r->chunk_left ? CS_DATA : CS_TRAILER0;
            continue;
        case CS_DATA_CR:
            if (c != '\r') return fail(r, 400, "chunk data longer than its size");
            r->cstate = CS_DATA_LF;
            break;
        case CS_DATA_LF:
            if (c != '\n') return fail(r, 400, "bare CR in chunk framing");
            r->cstate = CS_SIZE0;
            r->line_len = 0;
            continue;
        case CS_TRAILER0:
            if (c == '\r') r->cstate = CS_END_LF;
            else if (is_tchar(c)) r->cstate = CS_TNAME;
            else return fail(r, 400, "bad trailer field");
            break;
        case CS_TNAME:
            if (c == ':') r->cstate = CS_TVALUE;
            else if (!is_tchar(c)) return fail(r, 400, "bad trailer field");
            break;
        case CS_TVALUE:
            if (c == '\r') r->cstate = CS_TRAILER_LF;
            else if (!is_value_byte(c)) return fail(r, 400, "bad trailer field");
            break;
        case CS_TRAILER_LF:
            if (c != '\n') return fail(r, 400, "bare CR in trailer");
            r->cstate = CS_TRAILER0;
            break;
        case CS_END_LF:
            if (c != '\n') return fail(r, 400, "bare CR at the end of the body");
            r->consumed = r->pos;
            return HTTP_DONE;
        default:
            return fail(r, 400, "chunk framing");
        }
        if (r->cstate >= CS_TRAILER0) {
            if (++r->trailer_bytes > HTTP_HEAD_MAX) return fail(r, 431, "trailer section too large");
        } else if (++r->line_len > HTTP_LINE_MAX) {
            return fail(r, 400, "chunk-size line too long");
        }
    }
    return HTTP_NEED_MORE;
}

http_result http_parse(http_req *r, char *buf, size_t len)
{
    r->base = buf;
    if (!r->head_done) {
        http_result res = find_head(r, buf, len);
        if (res != HTTP_DONE) return res;
        res = parse_fields(r, buf);
        if (res != HTTP_DONE) return res;
        r->pos = r->head_len;
        r->cstate = CS_SIZE0;
    }
    if (r->chunked) return chunked_body(r, buf, len);
    uint64_t need = r->has_length ? r->content_length : 0;
    size_t have = len - r->head_len;
    if (have >= need) {
        r->body_len = (size_t)need;
        r->consumed = r->head_len + (size_t)need;
        return HTTP_DONE;
    }
    r->body_len = have;
    return HTTP_NEED_MORE;
}

size_t http_compact(http_req *r, char *buf, size_t len)
{
    if (!r->head_done || !r->chunked || r->pos > len) return len;
    size_t to = r->head_len + r->body_len;
    if (to == r->pos) return len;
    memmove(buf + to, buf + r->pos, len - r->pos);
    len -= r->pos - to;
    r->pos = to;
    return len;
}

const char *http_method(const http_req *r, size_t *len)
{
    *len = r->method_len;
    return r->base + r->method_off;
}

const char *http_path(const http_req *r, size_t *len)
{
    *len = r->path_len;
    return r->base + r->target_off;
}

const char *http_body(const http_req *r)
{
    return r->base + r->head_len;
}

const char *http_field_get(const http_req *r, const char *name, size_t *len)
{
    for (uint32_t i = 0; i < r->nfields; i++) {
        if (name_is(r->base, &r->fields[i], name)) {
            *len = r->fields[i].value_len;
            return r->base + r->fields[i].value_off;
        }
    }
    return NULL;
}

const char *http_field_str(http_req *r, const char *name)
{
    size_t n;
    const char *v = http_field_get(r, name, &n);
    if (!v) return NULL;
    ((char *)v)[n] = '\0';  /* the CR or OWS after the value: head bytes parsed already */
    return v;
}

/* --- output --------------------------------------------------------------- */

static int reserve(http_buf *b, size_t n)
{
    if (b->off == b->len) b->off = b->len = 0;
    if (b->cap - b->len >= n) return 0;
    if (b->off) {   /* slide the unwritten bytes down before growing */
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= n) return 0;
    }
    size_t cap = b->cap ? b->cap : 1024;
    while (cap - b->len < n) {
        if (cap > SIZE_MAX / 2) { errno = ENOMEM; return -1; }
        cap *= 2;
    }
    char *d = realloc(b->data, cap);
    if (!d) return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

int http_buf_append(http_buf *b, const void *p, size_t n)
{
    if (reserve(b, n) < 0) return -1;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int http_buf_printf(http_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(b, (size_t)n + 1) < 0) return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void http_buf_consume(http_buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len) b->off = b->len = 0;
}

void http_buf_free(http_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

const char *http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Request Entity Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "";
    }
}

int http_respond(http_buf *out, int status, const char *extra, const char *content_type,
                 const void *body, size_t len, bool close)
{
    if (http_buf_printf(out, "HTTP/1.1 %d %s\r\n%s", status, http_reason(status), extra ? extra : "") < 0)
        return -1;
    if (content_type && http_buf_printf(out, "Content-Type: %s\r\n", content_type) < 0)
        return -1;
    if (http_buf_printf(out, "Content-Length: %zu\r\n%s\r\n", len, close ? "Connection: close\r\n" : "") < 0)
        return -1;
    return http_buf_append(out, body, len);
}
