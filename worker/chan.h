/* chan.h: the runner's channels — framing and every message, one place.
 *
 * Main, the launcher, the exec supervisors and the native hosts talk over
 * socketpairs. Each message is a u32 body length (native byte order: all
 * ends are on one machine), then the body, whose first byte is its type
 * (CH_*). Bodies are built with the put_* helpers into a wbuf and read with
 * the rd_* helpers. Each message type has one struct and one encode/decode
 * pair here (chan_<msg>_put / chan_<msg>_get): the wire format of a message is
 * written down once, and both ends use it. Encoders append a whole frame to a
 * wbuf and return 0, or -1 when the buffer failed (out of memory). Decoders
 * take the body after its type byte, fill the struct (strings point into the
 * body, lists are walked with chan_strs_next) and return false when it is
 * malformed; a decoder checks the whole body, so walking its lists cannot
 * fail afterwards.
 */
#ifndef HERALD_CHAN_H
#define HERALD_CHAN_H

#include "runner.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* --- message types (the first body byte) --- */
enum {
    /* main → launcher */
    CH_L_EXEC = 'E',     /* + fd: start a supervisor with its first exec attempt */
    CH_L_HOST = 'H',     /* + fd: start a native host */
    CH_L_KILL = 'K',     /* SIGKILL a host (by the id main gave it) */
    CH_L_QUIT = 'Q',     /* stop: wait for children briefly, kill the rest, exit */
    /* launcher → main */
    CH_L_HOSTEXIT = 'X', /* a host was reaped: id + wait status */
    /* main → host */
    CH_H_JOB = 'J',
    /* host → main */
    CH_H_READY = 'Y',    /* library loaded, herald_init passed */
    CH_H_INITFAIL = 'I', /* the function is refused: reason */
    /* main → an idle supervisor: its next attempt (the CH_L_EXEC body) */
    CH_S_RUN = 'A',
    /* host / supervisor → main */
    CH_RESULT = 'R',
    /* runtime functions (runtime.c, pool_runtime.c) */
    CH_L_RUNTIME = 'U',  /* main → launcher, + fd: start a runtime supervisor */
    CH_RT_EVENT = 'V',   /* main → runtime supervisor: one event */
    CH_RT_READY = 'W',   /* runtime supervisor → main: its process asked for its first event */
    CH_RT_GONE = 'G',    /* runtime supervisor → main: it is stopping, and why (EOF follows) */
    /* supervisor / host → main: lines the handler wrote (hlog.h) */
    CH_LOG = 'L',
};

/* A supervisor's CH_RESULT token: SUP_STAYS when it waits for the next
 * CH_S_RUN on the same channel (every process of the attempt is gone and it
 * is fit for another), 0 when it exits after this result. */
#define SUP_STAYS 1

#define CHAN_MSG_MAX ((uint32_t)(80u << 20))  /* a body above this is a protocol error:
                                                 payloads are ≤ 64 MiB, outputs ≤ 6 MiB */

/* --- growable byte buffer (outgoing and incoming channel data) --- */
typedef struct {
    char *p;
    size_t len, cap;    /* bytes held / allocated */
    size_t off;         /* bytes already consumed (written out or parsed) */
    bool failed;        /* an allocation failed: the buffer's content is incomplete */
} wbuf;

static inline bool wbuf_reserve(wbuf *b, size_t n)
{
    if (b->failed)
        return false;
    if (b->off > 0 && b->off == b->len)
        b->off = b->len = 0;
    if (b->len + n <= b->cap)
        return true;
    if (b->off > 0 && b->off >= b->len / 2) {   /* compact before growing */
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + n <= b->cap)
            return true;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}
static inline void wbuf_put(wbuf *b, const void *d, size_t n)
{
    if (n && wbuf_reserve(b, n)) {
        memcpy(b->p + b->len, d, n);
        b->len += n;
    }
}
static inline void wbuf_free(wbuf *b) { free(b->p); memset(b, 0, sizeof *b); }
static inline size_t wbuf_pending(const wbuf *b) { return b->len - b->off; }
static inline void put_u8(wbuf *b, uint8_t v) { wbuf_put(b, &v, 1); }
static inline void put_u32(wbuf *b, uint32_t v) { wbuf_put(b, &v, 4); }
static inline void put_u64(wbuf *b, uint64_t v) { wbuf_put(b, &v, 8); }
static inline void put_i64(wbuf *b, int64_t v) { wbuf_put(b, &v, 8); }
/* Bytes: u32 length, the bytes, then a NUL (so a reader can hand out C strings). */
static inline void put_bytes(wbuf *b, const void *d, size_t n)
{
    put_u32(b, (uint32_t)n);
    wbuf_put(b, d, n);
    put_u8(b, 0);
}
static inline void put_str(wbuf *b, const char *s) { put_bytes(b, s ? s : "", s ? strlen(s) : 0); }
/* Starts a message; returns where its length goes, for msg_end(). */
static inline size_t msg_begin(wbuf *b, uint8_t type)
{
    size_t at = b->len;
    put_u32(b, 0);
    put_u8(b, type);
    return at;
}
/* Fills in the length. -1 if the buffer failed (the message is unusable). */
static inline int msg_end(wbuf *b, size_t at)
{
    if (b->failed)
        return -1;
    uint32_t n = (uint32_t)(b->len - at - 4);
    memcpy(b->p + at, &n, 4);
    return 0;
}
/* The next complete message in b (body pointer and length), or false. */
static inline bool msg_next(wbuf *b, const char **body, uint32_t *n, bool *bad)
{
    size_t have = b->len - b->off;
    if (have < 4)
        return false;
    uint32_t len;
    memcpy(&len, b->p + b->off, 4);
    if (len == 0 || len > CHAN_MSG_MAX) {
        *bad = true;
        return false;
    }
    if (have - 4 < len)
        return false;
    *body = b->p + b->off + 4;
    *n = len;
    b->off += 4 + (size_t)len;
    return true;
}

/* Is a whole message waiting in b? */
static inline bool msg_pending(const wbuf *b)
{
    size_t have = b->len - b->off;
    uint32_t len;
    if (have < 4) return false;
    memcpy(&len, b->p + b->off, 4);
    return have - 4 >= len;
}

/* --- reader over one message body --- */
typedef struct {
    const char *p;
    size_t n;
    bool bad;           /* read past the end or malformed: ignore the message */
} rd;

static inline const void *rd_take(rd *r, size_t n)
{
    if (r->bad || r->n < n) {
        r->bad = true;
        return NULL;
    }
    const void *p = r->p;
    r->p += n;
    r->n -= n;
    return p;
}
static inline uint8_t rd_u8(rd *r) { const void *p = rd_take(r, 1); return p ? *(const uint8_t *)p : 0; }
static inline uint32_t rd_u32(rd *r) { uint32_t v = 0; const void *p = rd_take(r, 4); if (p) memcpy(&v, p, 4); return v; }
static inline uint64_t rd_u64(rd *r) { uint64_t v = 0; const void *p = rd_take(r, 8); if (p) memcpy(&v, p, 8); return v; }
static inline int64_t rd_i64(rd *r) { int64_t v = 0; const void *p = rd_take(r, 8); if (p) memcpy(&v, p, 8); return v; }
/* Bytes written by put_bytes; NUL-terminated in place. "" on error. */
static inline const char *rd_bytes(rd *r, size_t *len)
{
    uint32_t n = rd_u32(r);
    const char *p = rd_take(r, (size_t)n + 1);
    if (!p || p[n] != '\0') {
        r->bad = true;
        if (len)
            *len = 0;
        return "";
    }
    if (len)
        *len = n;
    return p;
}
static inline const char *rd_str(rd *r) { return rd_bytes(r, NULL); }

/* --- the messages ------------------------------------------------------------ */

/* A list of strings in a decoded body (each written by put_bytes). */
typedef struct {
    uint32_t n;         /* strings left */
    rd at;
} chan_strs;

/* The next string of l, or NULL when none is left. */
static inline const char *chan_strs_next(chan_strs *l)
{
    if (l->n == 0)
        return NULL;
    l->n--;
    return rd_str(&l->at);
}

/* Takes n strings off d into l (checking every one). false if d runs short. */
static inline bool chan_strs_take(rd *d, uint32_t n, chan_strs *l)
{
    l->n = n;
    l->at = (rd){ d->p, d->n, false };
    for (uint32_t i = 0; i < n && !d->bad; i++)
        rd_str(d);
    l->at.n -= d->n;   /* the list ends where d now is */
    return !d->bad;
}

/* CH_L_EXEC (main → launcher, with the channel's fd: start a supervisor with
 * this attempt) and CH_S_RUN (main → an idle supervisor: its next attempt):
 * the same body.
 *   u64 id, u32 timeout_ms, u32 memory_mb, u32 argc, argc × str,
 *   str program, u32 nenv, nenv × bytes "NAME=value", bytes payload */
typedef struct {
    uint64_t id;                /* the attempt's: names its run directory */
    uint32_t timeout_ms, memory_mb;
    const char *program;        /* main's PATH lookup; "" to search in the supervisor */
    const void *payload; size_t payload_len;
    /* put: */
    uint32_t argc;
    char *const *argv;          /* argc entries */
    const proto_attr *fenv; uint32_t nfenv;   /* the function's environment */
    const proto_attr *vars; uint32_t nvars;   /* then the attempt's (HERALD_FUNCTION …) */
    const proto_attr *attrs; size_t nattrs;   /* then the event's, as attrs_put_env writes them */
    /* get: */
    chan_strs args;             /* argc strings */
    chan_strs env;              /* every "NAME=value" entry, in order: later ones win */
} chan_exec;

/* type: CH_L_EXEC or CH_S_RUN. */
int chan_exec_put(wbuf *b, uint8_t type, const chan_exec *m);
bool chan_exec_get(const char *body, uint32_t n, chan_exec *m);

/* CH_L_HOST (main → launcher, with the channel's fd): start a native host.
 *   u64 id, u32 timeout_ms, u32 memory_mb, u32 slot, str function,
 *   str library, str symbol, u32 nenv, nenv × bytes "NAME=value" */
typedef struct {
    uint64_t id;                /* main's name for it: CH_L_KILL, CH_L_HOSTEXIT */
    uint32_t timeout_ms, memory_mb;
    uint32_t slot;              /* its slot in the host board */
    const char *function, *library, *symbol;
    const proto_attr *fenv; uint32_t nfenv;   /* put: the function's environment */
    chan_strs env;              /* get: "NAME=value" entries */
} chan_host;

int chan_host_put(wbuf *b, const chan_host *m);
bool chan_host_get(const char *body, uint32_t n, chan_host *m);

/* CH_H_JOB (main → host): one delivery.
 *   u64 token, str topic, str message_id, u32 attempt, u32 max_attempts,
 *   u32 nattrs, nattrs × (str key, str value), bytes payload */
typedef struct {
    uint64_t token;
    const char *topic, *message_id;
    uint32_t attempt, max_attempts;
    uint32_t nattrs;
    const proto_attr *attrs;    /* put: nattrs pairs */
    chan_strs attr_strs;        /* get: key, value, key, value … (2 × nattrs) */
    const void *payload; size_t payload_len;
} chan_job;

int chan_job_put(wbuf *b, const chan_job *m);
bool chan_job_get(const char *body, uint32_t n, chan_job *m);

/* CH_L_KILL (main → launcher): SIGKILL the host main named id. u64 id */
static inline int chan_kill_put(wbuf *b, uint64_t id)
{
    size_t at = msg_begin(b, CH_L_KILL);
    put_u64(b, id);
    return msg_end(b, at);
}
static inline bool chan_kill_get(const char *body, uint32_t n, uint64_t *id)
{
    rd d = { body, n, false };
    *id = rd_u64(&d);
    return !d.bad;
}

/* CH_L_QUIT (main → launcher): stop. No body. */
static inline int chan_quit_put(wbuf *b) { return msg_end(b, msg_begin(b, CH_L_QUIT)); }

/* CH_L_HOSTEXIT (launcher → main): the launcher reaped host id.
 *   u64 id, u32 status (its wait status, or -1: the fork failed) */
typedef struct {
    uint64_t id;
    int status;
} chan_hostexit;

static inline int chan_hostexit_put(wbuf *b, const chan_hostexit *m)
{
    size_t at = msg_begin(b, CH_L_HOSTEXIT);
    put_u64(b, m->id);
    put_u32(b, (uint32_t)m->status);
    return msg_end(b, at);
}
static inline bool chan_hostexit_get(const char *body, uint32_t n, chan_hostexit *m)
{
    rd d = { body, n, false };
    m->id = rd_u64(&d);
    m->status = (int)rd_u32(&d);
    return !d.bad;
}

/* CH_H_READY (host → main): library loaded, herald_init passed. No body. */
static inline int chan_ready_put(wbuf *b) { return msg_end(b, msg_begin(b, CH_H_READY)); }

/* CH_H_INITFAIL (host → main): the function is refused. str why */
static inline int chan_initfail_put(wbuf *b, const char *why)
{
    size_t at = msg_begin(b, CH_H_INITFAIL);
    put_str(b, why);
    return msg_end(b, at);
}
/* *why: "" when malformed. */
static inline bool chan_initfail_get(const char *body, uint32_t n, const char **why)
{
    rd d = { body, n, false };
    *why = rd_str(&d);
    return !d.bad;
}

/* CH_RESULT (host / supervisor → main): how a job or an attempt ended.
 *   u64 token, u8 outcome, i64 started_ms, u32 duration_us,
 *   u8 has_error, str error, bytes output
 * Appends one for the job token (a supervisor's: SUP_STAYS or 0). 0, or -1
 * if the buffer failed. */
static inline int result_put(wbuf *b, uint64_t token, proto_outcome o, int64_t started_ms, uint32_t dur_us,
                             const char *error, const void *out, size_t outlen)
{
    size_t at = msg_begin(b, CH_RESULT);
    put_u64(b, token);
    put_u8(b, (uint8_t)o);
    put_i64(b, started_ms);
    put_u32(b, dur_us);
    put_u8(b, error != NULL);
    put_str(b, error);
    put_bytes(b, out, outlen);
    return msg_end(b, at);
}

/* Reads a CH_RESULT body (after its type byte) into res, whose strings point
 * into the body. false if it is malformed. */
static inline bool result_get(const char *body, uint32_t n, runner_result *res)
{
    rd d = { body, n, false };
    res->token = rd_u64(&d);
    uint8_t o = rd_u8(&d);
    res->outcome = (proto_outcome)o;
    res->started_ms = rd_i64(&d);
    res->duration_us = rd_u32(&d);
    bool has_err = rd_u8(&d);
    const char *err = rd_str(&d);
    res->error = has_err ? err : NULL;
    res->output = rd_bytes(&d, &res->output_len);
    return !d.bad && o < OUT_COUNT;
}

/* CH_LOG (supervisor / host → main): lines a handler wrote, cleaned and cut
 * (loglines.c), in the order written, before the CH_RESULT of the delivery
 * they belong to.
 *   str message_id ("": none — a runtime between events), u32 attempt (0: none),
 *   u32 dropped (lines the sender dropped since its last CH_LOG), u32 n, n × bytes line */
typedef struct {
    const char *message_id;
    uint32_t attempt, dropped, n;
    rd lines;                   /* get: n × bytes, checked (walk with rd_bytes) */
} chan_log;

/* Appends a CH_LOG of the n lines in `lines` (each written by put_bytes). */
static inline int chan_log_put(wbuf *b, const char *message_id, uint32_t attempt, uint32_t dropped,
                               const wbuf *lines, uint32_t n)
{
    size_t at = msg_begin(b, CH_LOG);
    put_str(b, message_id);
    put_u32(b, attempt);
    put_u32(b, dropped);
    put_u32(b, n);
    wbuf_put(b, lines->p, lines->len);
    return msg_end(b, at);
}
static inline bool chan_log_get(const char *body, uint32_t len, chan_log *m)
{
    rd d = { body, len, false };
    m->message_id = rd_str(&d);
    m->attempt = rd_u32(&d);
    m->dropped = rd_u32(&d);
    m->n = rd_u32(&d);
    m->lines = d;
    for (uint32_t i = 0; i < m->n && !d.bad; i++)
        rd_bytes(&d, NULL);
    return !d.bad && d.n == 0;
}

/* --- runtime functions -------------------------------------------------------- */

enum { RT_FORMAT_RAW = 0, RT_FORMAT_SNS = 1 };

/* CH_L_RUNTIME (main → launcher, with the channel's fd): start a runtime
 * supervisor and its process.
 *   u64 id, u32 timeout_ms, u32 memory_mb, u32 max_invocations,
 *   u32 idle_timeout_ms, u32 init_timeout_ms, u8 format, str function,
 *   str handler, str root, str region, str account, str program,
 *   u32 argc, argc × str, u32 nenv, nenv × bytes "NAME=value" */
typedef struct {
    uint64_t id;                /* names its run dir (WDIR/(id % 8)/r<id>) */
    uint32_t timeout_ms, memory_mb;
    uint32_t max_invocations;   /* 0: never recycled by count (the jitter is the supervisor's) */
    uint32_t idle_timeout_ms, init_timeout_ms;
    uint8_t format;             /* RT_FORMAT_* */
    const char *function;
    const char *handler;        /* "": _HANDLER is not set */
    const char *root;           /* LAMBDA_TASK_ROOT and the process's cwd */
    const char *region, *account;
    const char *program;        /* argv[0], resolved */
    uint32_t argc;
    char *const *argv;          /* put: argc entries */
    const proto_attr *fenv; uint32_t nfenv;   /* put: the function's environment */
    chan_strs args;             /* get: argc strings */
    chan_strs env;              /* get: "NAME=value" entries */
} chan_runtime;

int chan_runtime_put(wbuf *b, const chan_runtime *m);
bool chan_runtime_get(const char *body, uint32_t n, chan_runtime *m);

/* CH_RT_EVENT (main → runtime supervisor): one event, sent only when the
 * supervisor has reported the one before.
 *   u64 token, str topic, str message_id, u32 attempt,
 *   u32 nattrs, nattrs × (str key, str value), bytes payload */
typedef chan_job chan_rtevent;   /* the same fields; max_attempts is not sent */

int chan_rtevent_put(wbuf *b, const chan_rtevent *m);
bool chan_rtevent_get(const char *body, uint32_t n, chan_rtevent *m);

/* CH_RT_READY (runtime supervisor → main): the process asked for its first
 * event init_us after it was started. u32 init_us */
static inline int chan_rtready_put(wbuf *b, uint32_t init_us)
{
    size_t at = msg_begin(b, CH_RT_READY);
    put_u32(b, init_us);
    return msg_end(b, at);
}
static inline bool chan_rtready_get(const char *body, uint32_t n, uint32_t *init_us)
{
    rd d = { body, n, false };
    *init_us = rd_u32(&d);
    return !d.bad;
}

/* CH_RT_GONE (runtime supervisor → main): it stops, for why (a
 * proto_recycle: the reasons STATS counts). u8 why */
static inline int chan_rtgone_put(wbuf *b, proto_recycle why)
{
    size_t at = msg_begin(b, CH_RT_GONE);
    put_u8(b, (uint8_t)why);
    return msg_end(b, at);
}
static inline bool chan_rtgone_get(const char *body, uint32_t n, proto_recycle *why)
{
    rd d = { body, n, false };
    uint8_t w = rd_u8(&d);
    *why = (proto_recycle)w;
    return !d.bad && w < PROTO_RECYCLE_COUNT;
}

#endif
