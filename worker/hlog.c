/* hlog: handler lines in the worker's log, main's side (hlog.h).
 *
 * Owns the --log path (fd 2 is the log: opened there at start, again on
 * SIGHUP) and the batch being written. Each line reads
 *   2026-12-07T21:05:03.123Z FUNCTION MESSAGE_ID ATTEMPT[ TAG]: text
 * ("-" for a message id or attempt there is none of: a runtime between
 * events, a function's notice), TAG "output" for log_output lines and
 * "delivery" for --verbose's. A batch (a CH_LOG, an output) is one write(2)
 * of whole lines, so lines of the worker and of its processes on the same
 * fd never interleave mid-line. Each function's lines share one rate
 * (hlog_fn): what is over it is counted with what its processes dropped and
 * said as "N lines dropped", at most once per HLOG_NOTICE_MS.
 */
#define _GNU_SOURCE
#include "hlog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static char *log_path;      /* --log FILE; NULL: fd 2 as inherited */
static wbuf batch;          /* the lines of one write */

static int open_onto_stderr(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    /* dup2's copy is not close-on-exec: the launcher and its children log here too */
    int rc = fd == STDERR_FILENO ? 0 : dup2(fd, STDERR_FILENO) < 0 ? -1 : 0;
    int e = errno;
    if (fd != STDERR_FILENO)
        close(fd);
    errno = e;
    return rc;
}

int hlog_open(const char *path)
{
    if (open_onto_stderr(path) < 0) {
        fprintf(stderr, "herald-worker: --log %s: %s\n", path, strerror(errno));
        return -1;
    }
    free(log_path);
    log_path = strdup(path);
    return 0;
}

int hlog_reopen(void)
{
    if (!log_path)
        return 0;
    if (open_onto_stderr(log_path) < 0) {
        LOG_ERROR("SIGHUP: cannot reopen the log %s: %s (still writing to the old one)", log_path, strerror(errno));
        return -1;
    }
    LOG_INFO("SIGHUP: log reopened");
    return 0;
}

/* Writes the batch, whole (the log is a file or a pipe: a short write goes on). */
static void emit(void)
{
    size_t off = 0;
    while (off < batch.len) {
        ssize_t w = write(STDERR_FILENO, batch.p + off, batch.len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;   /* nowhere to say it */
        off += (size_t)w;
    }
    batch.len = batch.off = 0;
    batch.failed = false;
    if (batch.cap > (1u << 20))
        wbuf_free(&batch);
}

/* "2026-12-07T21:05:03.123Z" */
static void stamp(char ts[32])
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, 32 - n, ".%03ldZ", now.tv_nsec / 1000000);
}

static void prefix(const char *ts, const char *function, const char *message_id, uint32_t attempt, const char *tag)
{
    char head[320], att[16] = "-";
    if (attempt)
        snprintf(att, sizeof att, "%u", attempt);
    int k = snprintf(head, sizeof head, "%s %s %s %s%s%s: ", ts, function,
                     message_id && message_id[0] ? message_id : "-", att, tag ? " " : "", tag ? tag : "");
    wbuf_put(&batch, head, k < 0 ? 0 : (size_t)k < sizeof head ? (size_t)k : sizeof head - 1);
}

/* One line (already cleaned and cut) into the batch, if the function's rate allows. */
static void add_line(hlog_fn *st, const char *ts, const char *function, const char *message_id, uint32_t attempt,
                     const char *tag, const char *p, size_t n, int64_t now_us, bool clean)
{
    if (!hlog_bucket_take(&st->bucket, now_us)) {
        st->dropped++;
        return;
    }
    prefix(ts, function, message_id, attempt, tag);
    if (clean) {
        if (!wbuf_reserve(&batch, n + 1))
            return;
        batch.len += hlog_clean(batch.p + batch.len, p, n);
    } else {
        wbuf_put(&batch, p, n);
    }
    put_u8(&batch, '\n');
}

bool hlog_chan(hlog_fn *st, const char *function, const char *body, uint32_t n)
{
    chan_log m;
    if (!chan_log_get(body, n, &m))
        return false;
    st->dropped += m.dropped;
    if (m.n == 0)
        return true;
    char ts[32];
    stamp(ts);
    int64_t now_us = util_mono_us();
    for (uint32_t i = 0; i < m.n; i++) {
        size_t len;
        const char *p = rd_bytes(&m.lines, &len);
        add_line(st, ts, function, m.message_id, m.attempt, NULL, p, len, now_us, false);
    }
    emit();
    return true;
}

void hlog_output(hlog_fn *st, const char *function, const char *message_id, uint32_t attempt,
                 const void *out, size_t len)
{
    const char *p = out;
    if (len == 0)
        return;
    char ts[32];
    stamp(ts);
    int64_t now_us = util_mono_us();
    if (p[len - 1] == '\n')
        len--;   /* the usual last newline ends the last line, it does not start one */
    while (len > 0 || p == out) {
        const char *nl = memchr(p, '\n', len);
        size_t seg = nl ? (size_t)(nl - p) : len;
        bool cut = seg > HLOG_LINE_MAX;
        size_t take = cut ? HLOG_LINE_MAX : seg;
        add_line(st, ts, function, message_id, attempt, "output", p, take, now_us, true);
        size_t used = take + (!cut && nl ? 1 : 0);
        p += used;
        len -= used;
        if (!nl && !cut)
            break;
    }
    emit();
}

void hlog_delivery(const char *function, const char *message_id, uint32_t attempt, proto_outcome o,
                   uint32_t duration_us)
{
    char ts[32], text[64];
    stamp(ts);
    prefix(ts, function, message_id, attempt, "delivery");
    int k = snprintf(text, sizeof text, "%s %.3f ms\n", proto_outcome_name(o), duration_us / 1000.0);
    wbuf_put(&batch, text, k < 0 ? 0 : (size_t)k);
    emit();
}

int64_t hlog_tick(hlog_fn *st, const char *function, int64_t now_ms)
{
    if (st->dropped == 0)
        return -1;
    int64_t due = st->told_ms ? st->told_ms + HLOG_NOTICE_MS : now_ms;
    if (now_ms < due)
        return due - now_ms;
    char ts[32], text[96];
    stamp(ts);
    prefix(ts, function, NULL, 0, NULL);
    int k = snprintf(text, sizeof text, "%llu lines dropped (over %d lines/s)\n",
                     (unsigned long long)st->dropped, HLOG_RATE);
    wbuf_put(&batch, text, k < 0 ? 0 : (size_t)k);
    emit();
    st->dropped = 0;
    st->told_ms = now_ms;
    return -1;
}
