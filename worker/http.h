/* http: a small, strict, incremental HTTP/1.1 request parser and a response
 * writer, for the Runtime API server (rtapi.c). No library, no allocation.
 *
 * The caller owns one input buffer per connection and appends what it reads;
 * http_parse() is called again with the same (possibly moved or grown) buffer
 * and picks up where it stopped: the parser keeps offsets, never pointers,
 * between calls. A chunked body is de-chunked in place (its data bytes are
 * moved down over the chunk framing), so a complete request's body is always
 * one contiguous run of the caller's buffer: zero copies for Content-Length
 * bodies, one memmove for chunked ones.
 *
 * Decisions (RFC 9112 leaves them to the server):
 * - Lines end in CRLF only: a bare LF or a bare CR is a 400 (clients all send
 *   CRLF; one framing rule leaves no room for disagreement). Empty lines before
 *   the request line are skipped (RFC 9112 §2.2).
 * - obs-fold (a header line starting with SP or HTAB) is a 400; so is white
 *   space between a field name and its colon, and a control byte in a value.
 * - Request target: origin-form only ("/..."); HTTP/1.1 needs one Host field.
 * - Content-Length: one field, digits only (a repeated field is a 400 even if
 *   equal). Transfer-Encoding: exactly "chunked" (any other coding is a 501);
 *   with Content-Length, or in an HTTP/1.0 request, a 400. Chunk extensions and
 *   trailer fields are read and dropped.
 * - Keep-alive: HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with
 *   "Connection: keep-alive". An error always closes.
 * - "Expect: 100-continue" is reported (expect_continue); the server answers
 *   100 Continue when it wants the body, or the final status at once.
 */
#ifndef HERALD_HTTP_H
#define HERALD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_HEAD_MAX (16u << 10)   /* request line + header fields; more is a 431 */
#define HTTP_HEADERS_MAX 100        /* header fields per request; more is a 431 */
#define HTTP_LINE_MAX 1024          /* a chunk-size line (with extensions); longer is a 400 */

typedef enum {
    HTTP_NEED_MORE = 0,     /* feed more bytes (the same buffer, appended to) */
    HTTP_DONE = 1,          /* a whole request: see http_req; consumed bytes are its own */
    HTTP_ERROR = -1,        /* answer status (400, 413, 431, 501, 505) and close */
} http_result;

typedef struct {
    uint32_t name_off, name_len;    /* offsets into the buffer */
    uint32_t value_off, value_len;  /* OWS trimmed */
} http_field;

typedef struct {
    /* Valid once head_done (DONE, or NEED_MORE/ERROR after the head): */
    bool head_done;
    int minor;                  /* HTTP/1.minor: 0 or 1 */
    bool keep_alive;            /* the connection may carry another request */
    bool chunked;               /* Transfer-Encoding: chunked */
    bool expect_continue;       /* Expect: 100-continue */
    bool has_length;            /* Content-Length given */
    uint64_t content_length;    /* declared bytes; saturates past the cap */
    size_t body_len;            /* body bytes so far (all of them at DONE) */
    size_t consumed;            /* DONE: bytes of this request at the buffer's start */
    int status;                 /* ERROR: the status to answer */
    const char *why;            /* ERROR: a short phrase for logs */

    /* Internal: */
    size_t body_cap;            /* body bytes allowed; more is a 413 */
    const char *base;           /* the buffer of the last call (for the accessors) */
    size_t start;               /* offset of the request line (after skipped CRLFs) */
    size_t scan;                /* head: where the search for CRLFCRLF resumes */
    size_t head_len;            /* offset just past the head's final CRLF */
    size_t pos;                 /* chunked: next raw byte to parse */
    int cstate;                 /* chunked: the framing state */
    uint64_t chunk_left;        /* chunked: data bytes left in this chunk */
    size_t line_len;            /* chunked: bytes of the current size/trailer line */
    size_t trailer_bytes;       /* chunked: bytes of the trailer section */
    uint32_t method_off, method_len;    /* the method token */
    uint32_t target_off, target_len;    /* the request target, query included */
    uint32_t path_len;          /* target up to '?' */
    uint32_t nfields;           /* fields[] in use */
    http_field fields[HTTP_HEADERS_MAX];    /* in arrival order */
} http_req;

/* Resets r for a new request whose body may hold at most body_cap (< 2^60) bytes. */
void http_req_init(http_req *r, size_t body_cap);

/* Parses buf[0..len): the bytes of one connection not yet consumed, the
 * request starting at buf[0]. Between NEED_MORE calls the caller only appends
 * (and may move the buffer; http_compact may shorten it). Writes into buf
 * (chunked bodies are de-chunked in place). */
http_result http_parse(http_req *r, char *buf, size_t len);

/* After NEED_MORE on a chunked body: drops the framing bytes already parsed
 * from the buffer (moves the unparsed tail down); returns the new length.
 * Any other state: returns len unchanged. */
size_t http_compact(http_req *r, char *buf, size_t len);

/* Accessors, valid after head_done until the buffer moves or changes. The
 * strings are not NUL-terminated (lengths given). */
const char *http_method(const http_req *r, size_t *len);
const char *http_path(const http_req *r, size_t *len);     /* target without ?query */
const char *http_body(const http_req *r);                   /* body_len bytes */
/* The value of the first field named name (case-insensitive), or NULL. */
const char *http_field_get(const http_req *r, const char *name, size_t *len);
/* The same value NUL-terminated in place: writes over the byte after it (the
 * head's CR or white space). Only after DONE (the head is not parsed again). */
const char *http_field_str(http_req *r, const char *name);

/* True when s is a token (a field name), or may be a field value (HTAB, SP,
 * VCHAR, obs-text: no CR, LF, NUL or other control). For writers. */
bool http_token_ok(const char *s);
bool http_value_ok(const char *s);

/* A growable output buffer: bytes [off, len) are still to be written. */
typedef struct {
    char *data;
    size_t off, len, cap;
} http_buf;

int http_buf_append(http_buf *b, const void *p, size_t n);      /* 0 or -1 (ENOMEM) */
int http_buf_printf(http_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void http_buf_consume(http_buf *b, size_t n);                    /* n written from off */
static inline size_t http_buf_pending(const http_buf *b) { return b->len - b->off; }
void http_buf_free(http_buf *b);

/* The reason phrase of a status ("Bad Request"), "" for one we never send. */
const char *http_reason(int status);

/* Appends a whole response: status line, the header lines in extra (each
 * "Name: value\r\n", may be NULL), Content-Type when content_type is not NULL,
 * Content-Length, "Connection: close" when close, then the body. 0 or -1. */
int http_respond(http_buf *out, int status, const char *extra, const char *content_type,
                 const void *body, size_t len, bool close);

#endif
