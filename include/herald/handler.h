/* herald native handler ABI.
 *
 * A native handler is a C function in a shared library that a herald worker
 * loads in a supervised host process. This header depends on nothing but the C
 * standard library, so a handler builds with `cc -shared -fPIC h.c -o h.so`.
 *
 * A host runs one delivery at a time: handlers need not be thread-safe. A host
 * lives for many deliveries: a handler may cache (a connection, say) but must
 * not rely on state left by an earlier event.
 *
 * Optional exports: `int herald_init(void)` runs once after dlopen (non-zero:
 * the worker refuses the function); `void herald_fini(void)` runs before exit.
 *
 * Logging: herald_log(res, fmt, ...) writes a line to the worker's log,
 * prefixed with the time, the function, the message id and the attempt
 * (Lambda's CloudWatch Logs). A host's lines are rate-limited (past the rate
 * they are dropped and counted, never waited for).
 */
#ifndef HERALD_HANDLER_H
#define HERALD_HANDLER_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct { const char *key, *value; } herald_handler_attr;

typedef struct {
    const char *function, *topic, *message_id; /* topic "" for a direct invoke */
    int attempt, max_attempts;                 /* attempt is 1-based */
    int64_t deadline_ms;                       /* Unix ms; the host is killed then */
    const herald_handler_attr *attrs; size_t nattrs;
    const void *payload; size_t payload_len;
} herald_event;

typedef struct herald_response herald_response;
struct herald_response {                       /* filled by the worker */
    /* The result returned to a synchronous invoke (copied; at most 6 MiB). */
    void (*set_output)(herald_response *r, const void *data, size_t len);
    /* The error text recorded for a failed attempt (copied; last 4 KiB kept). */
    void (*set_error)(herald_response *r, const char *message);
    void *worker_private;
    /* One log line (or several, at '\n'); herald_log is the way to call it.
     * NULL in a worker older than herald_log: then nothing is logged. */
    void (*log)(herald_response *r, const char *line);
};

enum { HERALD_OK = 0, HERALD_RETRY = 1, HERALD_REJECT = 2 };

typedef int herald_handler_fn(const herald_event *ev, herald_response *res);

#define HERALD_LOG_MAX 2048   /* bytes of one herald_log line; the rest is cut */

/* printf-style: a line to the worker's log, tagged with this delivery. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static inline void herald_log(herald_response *res, const char *fmt, ...)
{
    char line[HERALD_LOG_MAX];
    va_list ap;
    if (!res || !res->log || !fmt)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    res->log(res, line);
}

#ifdef __cplusplus
}
#endif
#endif
