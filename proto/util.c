/* util: clocks, logging and randomness shared by every herald program.
 *
 * State: the program name printed in front of every log line and the
 * util_verbose switch, both set once at start-up before any thread exists.
 * util_verbose also adds each line's source file:line.
 * util_log formats the whole line first and emits it with a single write(2),
 * so lines from several threads or processes sharing stderr never interleave
 * mid-line. Nothing here allocates.
 */
#include "proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096   /* longer messages are cut; a log line is not data */

int util_verbose = 0;
static char program[64] = "herald";

static int64_t clock_us(clockid_t id)
{
    struct timespec ts;
    /* Cannot fail for these two clocks with a valid pointer. */
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t util_mono_ms(void) { return clock_us(CLOCK_MONOTONIC) / 1000; }
int64_t util_mono_us(void) { return clock_us(CLOCK_MONOTONIC); }
int64_t util_wall_ms(void) { return clock_us(CLOCK_REALTIME) / 1000; }

void util_set_program(const char *name)
{
    /* Copied: callers pass argv[0]-derived buffers that may not outlive us. */
    snprintf(program, sizeof program, "%s", name && *name ? name : "herald");
}

void util_log(const char *level, const char *file, int line, const char *fmt, ...)
{
    int saved = errno;   /* callers log between a failure and their own errno use */
    char buf[LOG_LINE_MAX];
    /* The source location is for whoever debugs (--verbose), not for a user
     * reading an error: "herald-broker: error: what", one line. */
    int n = util_verbose ? snprintf(buf, sizeof buf, "%s: %s: %s:%d: ", program, level, file, line)
                         : snprintf(buf, sizeof buf, "%s: %s: ", program, level);
    if (n < 0 || (size_t)n >= sizeof buf)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof buf - 2)
        len = sizeof buf - 2;   /* cut, keeping room for the newline */
    buf[len++] = '\n';
    /* One write so the line stays whole; a short write to stderr is not worth a retry loop. */
    ssize_t w = write(STDERR_FILENO, buf, len);
    (void)w;
    errno = saved;
}

size_t util_utf8_len(const unsigned char *p, size_t n)
{
    if (n == 0) return 0;
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;   /* the range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;         /* overlong */
        if (c == 0xED) hi = 0x9F;         /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;         /* overlong */
        if (c == 0xF4) hi = 0x8F;         /* past U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return len;
}

void util_random(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            /* Only ENOSYS (kernel < 3.17) gets here: no safe randomness, no safe ids. */
            LOG_ERROR("getrandom: %s", strerror(errno));
            abort();
        }
        p += r;
        n -= (size_t)r;   /* large requests may come back partial */
    }
}
