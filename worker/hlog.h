/* hlog.h: handler logs (README "Handler logs") — what a handler writes to
 * stderr, and what it logs with herald_log(), as lines of the worker's log.
 *
 * Two halves, one per side of the runner's channels:
 *   loglines.c  in the handler's supervisor (exec.c, runtime.c) or host
 *               (host.c): cuts the bytes into lines (at '\n', or every
 *               HLOG_LINE_MAX bytes), drops lines past a per-process rate
 *               (counted) and frames the rest as CH_LOG messages, tagged
 *               with the delivery they belong to, to main. Nothing blocks
 *               the handler: a send main does not take now waits in a
 *               buffer, and lines past HLOG_PENDING_MAX are dropped too.
 *   hlog.c      in main: the function's rate (a flood from many processes
 *               of one function is still cut), the prefix (time, function,
 *               message id, attempt), one write per batch to the log (fd 2:
 *               --log FILE is put there, reopened on SIGHUP), and once a
 *               second per function "N lines dropped".
 * A handler that writes nothing costs nothing here: no message, no syscall.
 */
#ifndef HERALD_HLOG_H
#define HERALD_HLOG_H

#include "chan.h"

#define HLOG_LINE_MAX 2048          /* bytes of a line: a longer one is cut into lines this long */
#define HLOG_RATE 1000              /* lines per second: per function (main), per handler process */
#define HLOG_BURST 2000             /* lines at once above the rate (a start-up banner, a traceback) */
#define HLOG_PENDING_MAX (4u << 20) /* bytes a process holds for main before it drops lines */
#define HLOG_NOTICE_MS 1000         /* "N lines dropped" at most this often per function */

/* A token bucket: HLOG_RATE lines a second, HLOG_BURST at once. */
typedef struct {
    int64_t credit;             /* lines × 1e6 (µs of the rate) */
    int64_t last_us;            /* monotonic; 0: never used (full) */
} hlog_bucket;

/* Takes one line's token. false: over the rate. */
bool hlog_bucket_take(hlog_bucket *b, int64_t now_us);

/* Copies n bytes of a line, control characters (but tab) as '?', so that a
 * line stays one line of the log and writes no terminal escapes; a trailing
 * '\r' (CRLF) goes. Returns the bytes written to dst (≤ n). */
size_t hlog_clean(char *dst, const char *src, size_t n);

/* --- loglines.c: the handler's side ---------------------------------------- */

typedef struct {
    char part[HLOG_LINE_MAX];   /* an unfinished line */
    size_t partlen;
    hlog_bucket bucket;
    wbuf lines;                 /* cleaned lines not yet framed (put_bytes each) */
    uint32_t nlines;
    uint64_t dropped;           /* lines dropped since the last CH_LOG */
    wbuf out;                   /* framed CH_LOG bytes main has not taken yet */
} loglines;

/* Cuts p[0..n) into lines (an unfinished one waits for the rest). */
void loglines_feed(loglines *l, const char *p, size_t n, int64_t now_us);
/* The unfinished line, if any, as a line (its writer is done, or the
 * delivery it belongs to is). */
void loglines_end(loglines *l, int64_t now_us);
/* Appends the lines collected (and the count dropped) to b as one CH_LOG of
 * message_id ("": none) and attempt (0: none). Nothing when there is nothing. */
void loglines_frame(loglines *l, wbuf *b, const char *message_id, uint32_t attempt);
/* Frames what is collected into l->out and sends what fd takes without
 * blocking. true while bytes wait for fd (poll it for POLLOUT). */
bool loglines_send(loglines *l, int fd, const char *message_id, uint32_t attempt);
/* Blocking: sends what waits in l->out — before any other message on fd,
 * which must follow the lines. -1: fd is gone. */
int loglines_flush(loglines *l, int fd);
void loglines_free(loglines *l);

/* --- hlog.c: main's side ----------------------------------------------------- */

/* A function's log state in main (runner_core.h's struct fn). */
typedef struct {
    hlog_bucket bucket;
    uint64_t dropped;           /* lines dropped (here and by its processes), not yet told */
    int64_t told_ms;            /* monotonic: the last "N lines dropped" */
} hlog_fn;

/* hlog_open, hlog_reopen (--log FILE, SIGHUP): in runner.h, for main.c. */

/* A CH_LOG body (after its type byte) from a process of function `function`:
 * writes its lines within the function's rate. false when malformed. */
bool hlog_chan(hlog_fn *st, const char *function, const char *body, uint32_t n);
/* A successful attempt's output (log_output), as lines tagged "output". */
void hlog_output(hlog_fn *st, const char *function, const char *message_id, uint32_t attempt,
                 const void *out, size_t len);
/* --verbose: one line for a delivery's end. */
void hlog_delivery(const char *function, const char *message_id, uint32_t attempt, proto_outcome o,
                   uint32_t duration_us);
/* Says "N lines dropped" for st if due. The ms until it next is, or -1. */
int64_t hlog_tick(hlog_fn *st, const char *function, int64_t now_ms);

#endif
