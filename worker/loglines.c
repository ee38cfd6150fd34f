/* loglines: a handler's output cut into log lines, in the process that reads
 * it (an exec or runtime supervisor, a native host), for main (hlog.h).
 *
 * State: a loglines per reader — the unfinished line, its rate bucket, the
 * lines not yet framed and the framed bytes main has not taken yet. A line
 * ends at '\n' or after HLOG_LINE_MAX bytes; each takes a token of the
 * bucket or is dropped and counted, and so is every line while
 * HLOG_PENDING_MAX bytes wait for main. The count travels in the next
 * CH_LOG, so main can say how many were cut. Sends never block (the
 * handler's pipe is drained whatever main does) until the caller flushes
 * before a message that must follow the lines (the delivery's result).
 */
#define _GNU_SOURCE
#include "hlog.h"
#include "runner_int.h"   /* launcher_write_all */

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

bool hlog_bucket_take(hlog_bucket *b, int64_t now_us)
{
    const int64_t full = (int64_t)HLOG_BURST * 1000000;
    if (b->last_us == 0) {
        b->credit = full;
    } else if (now_us > b->last_us) {
        b->credit += (now_us - b->last_us) * HLOG_RATE;
        if (b->credit > full)
            b->credit = full;
    }
    b->last_us = now_us;
    if (b->credit < 1000000)
        return false;
    b->credit -= 1000000;
    return true;
}

size_t hlog_clean(char *dst, const char *src, size_t n)
{
    if (n > 0 && src[n - 1] == '\r')
        n--;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c;
    }
    return n;
}

/* One whole line: kept (cleaned) if the rate and main's backlog allow. */
static void line(loglines *l, const char *p, size_t n, int64_t now_us)
{
    if (wbuf_pending(&l->out) + l->lines.len > HLOG_PENDING_MAX || !hlog_bucket_take(&l->bucket, now_us)) {
        l->dropped++;
        return;
    }
    size_t at = l->lines.len;
    put_u32(&l->lines, 0);
    if (!wbuf_reserve(&l->lines, n + 1)) {
        l->lines.failed = false;
        l->lines.len = at;
        l->dropped++;
        return;
    }
    uint32_t k = (uint32_t)hlog_clean(l->lines.p + l->lines.len, p, n);
    memcpy(l->lines.p + at, &k, 4);
    l->lines.len += k;
    put_u8(&l->lines, 0);
    l->nlines++;
}

void loglines_feed(loglines *l, const char *p, size_t n, int64_t now_us)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t seg = nl ? (size_t)(nl - p) : n;
        size_t room = HLOG_LINE_MAX - l->partlen;
        bool cut = nl ? seg > room : seg >= room;   /* a line of exactly the max is not cut */
        size_t take = cut ? room : seg;
        if (!cut && !nl) {   /* unfinished: wait for the rest */
            memcpy(l->part + l->partlen, p, take);
            l->partlen += take;
            return;
        }
        if (l->partlen) {
            memcpy(l->part + l->partlen, p, take);
            line(l, l->part, l->partlen + take, now_us);
            l->partlen = 0;
        } else {
            line(l, p, take, now_us);
        }
        size_t used = take + (cut ? 0 : 1);   /* the '\n' too */
        p += used;
        n -= used;
    }
}

void loglines_end(loglines *l, int64_t now_us)
{
    if (l->partlen) {
        line(l, l->part, l->partlen, now_us);
        l->partlen = 0;
    }
}

void loglines_frame(loglines *l, wbuf *b, const char *message_id, uint32_t attempt)
{
    if (l->nlines == 0 && l->dropped == 0)
        return;
    uint32_t dropped = l->dropped > UINT32_MAX ? UINT32_MAX : (uint32_t)l->dropped;
    if (b->off) {   /* msg_begin's offset must survive the appends: no compaction under it */
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    size_t before = b->len;
    if (chan_log_put(b, message_id ? message_id : "", attempt, dropped, &l->lines, l->nlines) < 0) {
        b->failed = false;   /* out of memory: these lines are lost, counted */
        b->len = before;
        l->dropped += l->nlines;
        l->nlines = 0;
        l->lines.len = l->lines.off = 0;
        return;
    }
    l->dropped = 0;
    l->nlines = 0;
    l->lines.len = l->lines.off = 0;
    if (l->lines.cap > (1u << 20))
        wbuf_free(&l->lines);
}

bool loglines_send(loglines *l, int fd, const char *message_id, uint32_t attempt)
{
    loglines_frame(l, &l->out, message_id, attempt);
    while (wbuf_pending(&l->out) > 0) {
        ssize_t k = send(fd, l->out.p + l->out.off, wbuf_pending(&l->out), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EAGAIN)
            return true;
        if (k <= 0) {   /* main is gone: nobody to tell */
            l->out.off = l->out.len;
            break;
        }
        l->out.off += (size_t)k;
    }
    l->out.len = l->out.off = 0;
    if (l->out.cap > (1u << 20))
        wbuf_free(&l->out);
    return false;
}

int loglines_flush(loglines *l, int fd)
{
    if (wbuf_pending(&l->out) == 0)
        return 0;
    int rc = launcher_write_all(fd, l->out.p + l->out.off, wbuf_pending(&l->out));
    l->out.len = l->out.off = 0;
    return rc;
}

void loglines_free(loglines *l)
{
    wbuf_free(&l->lines);
    wbuf_free(&l->out);
    l->nlines = 0;
    l->partlen = 0;
}
