/* runner_int.h: the runner's internal map (runner.c, launcher.c, exec.c, host.c).
 *
 * Four kinds of process take part:
 *   main      the worker; runner.c. Talks to the launcher over one socketpair,
 *             to each exec supervisor and each native host over its own.
 *   launcher  launcher.c. Forked once by runner_new(); single-threaded; forks
 *             every supervisor and host, reaps them, kills hosts on request.
 *   supervisor exec.c. Runs exec attempts one at a time, each attempt's child
 *             subreaper while it runs; main hands an idle one the next attempt.
 *   host      host.c. One per native pool slot; dlopens the function's library.
 * Every channel carries length-prefixed messages: u32 body length (native
 * byte order: all ends are on one machine), then the body, whose first byte is
 * the message type. Main creates every socketpair itself and hands the child's
 * end to the launcher with SCM_RIGHTS on the message that needs it, so fds only
 * ever flow main → launcher and results flow straight back to main.
 */
#ifndef HERALD_RUNNER_INT_H
#define HERALD_RUNNER_INT_H

#include "runner.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

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
};

/* A supervisor's CH_RESULT token: SUP_STAYS when it waits for the next
 * CH_S_RUN on the same channel (every process of the attempt is gone and it
 * is fit for another), 0 when it exits after this result. */
#define SUP_STAYS 1

#define CHAN_MSG_MAX ((uint32_t)(80u << 20))  /* a body above this is a protocol error:
                                                 payloads are ≤ 64 MiB, outputs ≤ 6 MiB */
#define STDERR_KEEP PROTO_ERROR_TEXT_MAX       /* stderr bytes kept for the error text */
#define KILL_GRACE_MS 1000                     /* SIGTERM → SIGKILL, and main's host backstop */
#define RUN_SHARDS 8                           /* attempt dirs live in WDIR/(id % 8)/id: mkdir and
                                                  rmdir lock the parent, so one parent would
                                                  serialize every concurrent attempt */

/* --- the host board ---------------------------------------------------------
 * One shared page per runner (MAP_SHARED, mapped before the launcher is
 * forked, so every host inherits it), a slot per live native host. A host
 * writes its progress there instead of telling main with a message per job,
 * so it can send its results in batches and still, when it dies, leave main
 * the exact truth: jobs [1, done] finished (any result main has not read is
 * lost: returned), job started > done was running (crashed / timeout), later
 * ones never began (returned). Main enforces the timeout from start_ms, so a
 * host arms no timer per job. */
typedef struct {
    _Atomic uint64_t started;   /* jobs this host has begun, the running one included */
    _Atomic uint64_t done;      /* jobs it has finished */
    _Atomic int64_t start_ms;   /* CLOCK_MONOTONIC ms when job `started` began */
    char pad[64 - 3 * 8];       /* a cache line each: hosts do not share lines */
} host_slot;

/* The slots are shared between processes: their atomics must not be emulated with locks. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "the host board needs lock-free 64-bit atomics");

#define HOST_SLOTS 4096         /* live native hosts per worker, at most (256 KiB, touched lazily) */
#define HOST_HOLD_US 1000       /* a host sends its held results once the oldest is this old */
#define HOST_HOLD_BYTES (256u << 10)   /* … or once they fill this much */

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

/* --- CH_RESULT, written by hosts and supervisors, read by main --- */

/* Appends a CH_RESULT for the job token (0 from a supervisor: main knows
 * its attempt). 0, or -1 if the buffer failed. */
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

/* The error text of an ok attempt whose output (size bytes) is over the cap:
 * it goes with an empty output, and the broker fails a sync invoke with it
 * (an event's output is discarded, so the event succeeds). Returns buf. */
static inline const char *too_large_text(char buf[static 160], uint64_t size)
{
    snprintf(buf, 160, PROTO_RESPONSE_TOO_LARGE ": Response payload size (%llu bytes) exceeded maximum "
             "allowed payload size (%u bytes).", (unsigned long long)size, PROTO_OUTPUT_MAX);
    return buf;
}

/* --- launcher.c: the launcher process and the process-tree helpers --- */

/* Body of the launcher (never returns). sock: its end of the main channel;
 * wdir: this worker's run directory (parent of each attempt's). */
__attribute__((noreturn)) void launcher_main(int sock, const char *wdir, host_slot *board);
/* Blocking: sends a whole buffer; -1 on error (EPIPE included, no SIGPIPE). */
int launcher_write_all(int fd, const void *p, size_t n);
/* SIGKILLs every child of the calling process (found through /proc, since
 * orphans re-parent to a subreaper), reaps them, and repeats until none is
 * left or deadline_ms (monotonic) passes. 0 when none is left. */
int launcher_kill_children(int64_t deadline_ms);
/* Sends sig to every direct child of the calling process (a /proc scan). */
void launcher_signal_children(int sig);
/* Closes every fd ≥ from. */
void launcher_close_from(int from);

/* --- exec.c: one exec attempt's supervisor --- */

/* Runs the attempt described by the CH_L_EXEC body (b, n: malloc'd, freed
 * here) and reports on the report fd, then the attempts main sends on it
 * (CH_S_RUN), one at a time, until main closes it; never returns. Called in a
 * fresh fork of the launcher. */
__attribute__((noreturn)) void exec_supervise(int report, const char *wdir, const char *b, uint32_t n);
/* Removes a directory tree without following symlinks. 0 or -1 (errno). */
int exec_rmtree(const char *path);
/* What a handler killed by sig died of, one wording for exec and native:
 * "killed by signal 11 (SIGSEGV)". Returns buf. */
const char *exec_killed_by(int sig, char buf[static 48]);

/* --- attrs.c: an event's attributes as an exec handler's environment --- */

/* Appends the JSON object of a[0..n) to b (no NUL): every key and value as a
 * JSON string, in order; bytes that are not UTF-8 become U+FFFD. */
void attrs_json(wbuf *b, const proto_attr *a, size_t n);
/* Appends the environment entries of a[0..n) to b (each as put_bytes,
 * "NAME=value"): HERALD_ATTRS, then HERALD_ATTR_<KEY> for every key whose
 * folded name no other key shares. Returns how many entries it appended. */
uint32_t attrs_put_env(wbuf *b, const proto_attr *a, size_t n);

/* --- host.c: a native host --- */

/* Runs a host described by the CH_L_HOST body (b, n) on sock, reporting its
 * progress in its slot of board; never returns. */
__attribute__((noreturn)) void host_main(int sock, const char *b, uint32_t n, host_slot *board);

#endif
