/* native: the runner's test handler library (tests/unit/test_runner.c).
 *
 * One symbol, `handle`, whose behaviour the payload picks, so one library
 * covers every case: "boom" segfaults, "sleep" never returns (main kills the
 * host at the deadline), "block-alarm" blocks SIGALRM first (which must make
 * no difference: no alarm is involved), "retry" / "retry-plain" / "reject" return those codes (with and
 * without set_error), "exit" calls _exit(3), "pid" outputs the host's pid,
 * "env:NAME" outputs the host's $NAME, "pattern:N" outputs N bytes, byte i
 * being (i * 31 + i / 256) mod 256 (as tests/handlers/ctl_pattern.sh); anything
 * else is echoed as the output.
 * The environment steers the library itself: NATIVE_INIT_FAIL makes
 * herald_init fail; NATIVE_PID_FILE receives the host's pid before a "sleep".
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herald/handler.h"

int herald_init(void)
{
    return getenv("NATIVE_INIT_FAIL") ? 7 : 0;
}

void herald_fini(void)
{
}

static int is(const herald_event *ev, const char *s)
{
    return ev->payload_len == strlen(s) && memcmp(ev->payload, s, ev->payload_len) == 0;
}

int handle(const herald_event *ev, herald_response *res)
{
    char buf[64];
    if (is(ev, "boom")) {
        volatile int *p = NULL;
        *p = 1;
    }
    if (is(ev, "sleep") || is(ev, "block-alarm")) {
        if (is(ev, "block-alarm")) {
            sigset_t s;
            sigemptyset(&s);
            sigaddset(&s, SIGALRM);
            sigprocmask(SIG_BLOCK, &s, NULL);
        }
        const char *pf = getenv("NATIVE_PID_FILE");
        if (pf) {
            char tmp[4096];
            snprintf(tmp, sizeof tmp, "%s.tmp", pf);
            FILE *f = fopen(tmp, "w");
            if (f) {
                fprintf(f, "%d\n", (int)getpid());
                fclose(f);
                rename(tmp, pf);
            }
        }
        for (;;)
            pause();
    }
    if (is(ev, "retry")) {
        res->set_error(res, "asked to retry");
        return HERALD_RETRY;
    }
    if (is(ev, "retry-plain"))
        return HERALD_RETRY;
    if (is(ev, "reject"))
        return HERALD_REJECT;
    if (is(ev, "exit"))
        _exit(3);
    if (is(ev, "pid")) {
        int n = snprintf(buf, sizeof buf, "%d", (int)getpid());
        res->set_output(res, buf, (size_t)n);
        return HERALD_OK;
    }
    if (ev->payload_len > 4 && memcmp(ev->payload, "env:", 4) == 0) {
        char name[64];
        size_t n = ev->payload_len - 4 < sizeof name - 1 ? ev->payload_len - 4 : sizeof name - 1;
        memcpy(name, (const char *)ev->payload + 4, n);
        name[n] = '\0';
        const char *v = getenv(name);
        res->set_output(res, v ? v : "", v ? strlen(v) : 0);
        return HERALD_OK;
    }
    if (ev->payload_len > 8 && memcmp(ev->payload, "pattern:", 8) == 0) {
        char num[24];
        size_t n = ev->payload_len - 8 < sizeof num - 1 ? ev->payload_len - 8 : sizeof num - 1;
        memcpy(num, (const char *)ev->payload + 8, n);
        num[n] = '\0';
        size_t len = strtoul(num, NULL, 10);
        unsigned char *p = malloc(len ? len : 1);
        if (!p)
            return HERALD_RETRY;
        for (size_t i = 0; i < len; i++)
            p[i] = (unsigned char)((i * 31 + (i >> 8)) & 255);
        res->set_output(res, p, len);
        free(p);
        return HERALD_OK;
    }
    res->set_output(res, ev->payload, ev->payload_len);
    return HERALD_OK;
}
