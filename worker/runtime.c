/* runtime: one runtime process's supervisor (DESIGN §11), a fork of the launcher.
 *
 * It makes the process's run directory (its HOME and TMPDIR, Lambda's /tmp,
 * kept for the process's life), serves the Runtime API on a loopback port of
 * its own (rtapi.c; a connection from anything but this process's tree is
 * refused), and starts the process in LAMBDA_TASK_ROOT with RLIMIT_DATA from
 * memory_mb and fds 0–2 only (stdin /dev/null; stdout and stderr one pipe,
 * whose last 4 KiB make the error text of a crash or an init failure, and
 * whose lines go to main as CH_LOG tagged with the event running when they
 * were read — none between events; hlog.h).
 * It is the process's child subreaper, so everything the process starts is
 * its to kill.
 *
 * States: starting (no /next yet: init_timeout runs), idle (a /next is held:
 * idle_timeout runs), busy (an event is out: timeout runs). An event from main
 * waits here until the process asks for one, so Lambda-Runtime-Deadline-Ms is
 * the real deadline. Each event gets exactly one CH_RESULT, except one that
 * never reached the process (it ended first): main queues that one again.
 * After a result the supervisor may stop instead of staying: max_invocations
 * reached (±10% jitter), or the process's RSS above memory_mb. It also stops
 * on a timeout (the whole tree is killed: the next event gets a fresh
 * process), a crash, an init failure, idle_timeout, or main closing the
 * channel; each says why (CH_RT_GONE), then the tree is killed (SIGTERM and
 * a grace when nothing is running), the run dir removed, and it exits.
 */
#define _GNU_SOURCE
#include "runtime.h"
#include "peer.h"
#include "rtapi.h"
#include "hlog.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STOP_GRACE_MS 1000   /* SIGTERM → SIGKILL when the process is stopped between events */
#define REAP_MAX_MS 5000     /* give up killing the tree after this (D-state processes) */
#define MAX_ARGS 4096
#define MAX_ENV 4096

/* --- the supervisor ------------------------------------------------------ */

typedef enum { EV_NONE, EV_WAITING, EV_RUNNING } ev_state;

typedef struct {
    chan_runtime s;
    const char **argv;          /* s.args, NULL-terminated */
    const char **fenv;          /* s.env */
    uint32_t nfenv;
    int rep;                    /* channel to main */
    int sfd;                    /* signalfd: SIGCHLD */
    int out;                    /* the process's stdout+stderr; -1 at EOF */
    rtapi_t *api;
    pid_t pid;                  /* the runtime process; 0 once it exited */
    int status;                 /* its wait status, once it exited */
    const char *wdir;
    char dir[4096];             /* its run dir */
    char arn[512];
    bool ready;                 /* it asked for an event at least once */
    bool asking;                /* a /next is held: an event goes out at once */
    int64_t spawn_us;
    int64_t idle_since_us;
    uint64_t served, limit;     /* events finished; recycle after limit (0: never) */
    /* the current event */
    ev_state ev;
    wbuf evmsg;                 /* its CH_RT_EVENT body (the strings point into it) */
    chan_rtevent e;
    proto_attr attrs[PROTO_MAX_ATTRS];   /* e's, e.nattrs */
    wbuf hattrs, sns;           /* Herald-Attributes and the SNS envelope, built in hand_out */
    char reqid[40];
    int64_t ev_start_us, ev_start_ms, ev_deadline_us;
    /* what the process wrote */
    char tail[STDERR_KEEP];
    uint64_t tailtotal;
    loglines log;               /* … as log lines for main */
    bool log_waits;             /* framed lines wait for main to take them */
    wbuf in;                    /* from main */
    bool main_gone;             /* main closed the channel */
    int stop;                   /* -1, or the proto_recycle to stop for */
    bool child_news;            /* a SIGCHLD came: look whether the process ended */
    int statm;                  /* /proc/PID/statm of the process, -1 until opened */
    uint64_t rng;               /* next_random's state, never 0 */
} sup;

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Sends the lines read so far without blocking, tagged with the event
 * running now, or with none between events. */
static void log_send(sup *s)
{
    bool running = s->ev == EV_RUNNING;
    s->log_waits = loglines_send(&s->log, s->rep, running ? s->e.message_id : "", running ? s->e.attempt : 0);
}

/* Any message to main: after the log lines that wait (they came first). */
static void send_main(sup *s, const wbuf *b)
{
    if (s->log_waits && !s->main_gone && loglines_flush(&s->log, s->rep) < 0)
        s->main_gone = true;
    s->log_waits = false;
    if (!s->main_gone && !b->failed && launcher_write_all(s->rep, b->p, b->len) < 0)
        s->main_gone = true;
}

static void say_gone(sup *s, proto_recycle why)
{
    wbuf b = { 0 };
    if (chan_rtgone_put(&b, why) == 0)
        send_main(s, &b);
    wbuf_free(&b);
}

/* The process's output tail as text ("" when it wrote nothing), at most
 * max bytes, from a line start when it can. */
static void tail_text(const sup *s, char *buf, size_t max)
{
    size_t n = s->tailtotal < STDERR_KEEP ? (size_t)s->tailtotal : STDERR_KEEP;
    if (n > max - 1)
        n = max - 1;
    size_t start = (size_t)((s->tailtotal - n) % STDERR_KEEP);
    for (size_t i = 0; i < n; i++)
        buf[i] = s->tail[(start + i) % STDERR_KEEP];
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
}

/* Empties b for the next event; a buffer grown by a large one goes back. */
static void buf_reuse(wbuf *b)
{
    if (b->cap > (1u << 20))
        wbuf_free(b);
    b->len = b->off = 0;
    b->failed = false;
}

/* Reports the current event's outcome and forgets it. */
static void finish_event(sup *s, proto_outcome o, const char *error, const void *out, size_t outlen)
{
    if (s->ev == EV_NONE)
        return;
    int64_t now = mono_us();
    loglines_end(&s->log, now);   /* what the event wrote is its, and goes before its result */
    log_send(s);
    int64_t started_ms = s->ev == EV_RUNNING ? s->ev_start_ms : util_wall_ms();
    int64_t d = s->ev == EV_RUNNING ? now - s->ev_start_us : 0;
    uint32_t dur = d < 0 ? 0 : d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
    wbuf b = { 0 };
    /* it stays unless it is stopping (decide_stay, a timeout, an init error) */
    if (result_put(&b, s->stop < 0 ? SUP_STAYS : 0, o, started_ms, dur, error, out, outlen) == 0)
        send_main(s, &b);
    wbuf_free(&b);
    memset(&s->e, 0, sizeof s->e);
    buf_reuse(&s->evmsg);
    s->ev = EV_NONE;
    s->idle_since_us = now;
}

/* "Runtime.InitError: …", "Runtime.ExitError: …": prefix, what, and the
 * process's output tail. */
static void fail_text(const sup *s, char *buf, size_t n, const char *prefix, const char *what)
{
    char tail[PROTO_ERROR_TEXT_MAX];
    size_t room = n > strlen(prefix) + strlen(what) + 8 ? n - strlen(prefix) - strlen(what) - 8 : 1;
    tail_text(s, tail, room < sizeof tail ? room : sizeof tail);
    if (tail[0])
        snprintf(buf, n, "%s: %s\n%s", prefix, what, tail);
    else
        snprintf(buf, n, "%s: %s", prefix, what);
}

/* The process's resident bytes, from its statm (kept open: one pread an event). */
static uint64_t rss_bytes(sup *s)
{
    char buf[128];
    if (s->statm < 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/statm", (int)s->pid);
        if ((s->statm = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            return 0;
    }
    ssize_t k = pread(s->statm, buf, sizeof buf - 1, 0);
    if (k <= 0)
        return 0;
    buf[k] = '\0';
    unsigned long long size, resident;
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
        return 0;
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* After an event ended by the process's own answer: does the process stay
 * for another? (max_invocations, RSS above memory_mb.) Sets s->stop if not. */
static void decide_stay(sup *s)
{
    s->served++;
    if (s->limit && s->served >= s->limit) {
        s->stop = PROTO_RECYCLE_MAX_INVOCATIONS;
    } else if (s->s.memory_mb && s->pid > 0 && rss_bytes(s) > ((uint64_t)s->s.memory_mb << 20)) {
        LOG_INFO("runtime %s: RSS above %u MB: recycling it", s->s.function, s->s.memory_mb);
        s->stop = PROTO_RECYCLE_MEMORY;
    }
}

/* --- the Runtime API's callbacks ------------------------------------------ */

static bool on_allow(void *arg, int fd)
{
    sup *s = arg;
    if (peer_in_tree(fd, getpid()))   /* the process and whatever re-parented to us */
        return true;
    LOG_WARN("runtime %s: refused a Runtime API connection from outside its process", s->s.function);
    return false;
}

static void hex(char *dst, const unsigned char *p, size_t n)
{
    static const char h[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = h[p[i] >> 4];
        dst[2 * i + 1] = h[p[i] & 15];
    }
    dst[2 * n] = '\0';
}

#define PUT_LIT(b, lit) wbuf_put(b, lit, sizeof lit - 1)

/* The SNS notification envelope Lambda gets for a topic delivery. */
static void sns_envelope(sup *s, wbuf *b)
{
    char ts[40];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
    char arn[512];
    snprintf(arn, sizeof arn, "arn:aws:sns:%s:%s:%s", s->s.region, s->s.account, s->e.topic);
    PUT_LIT(b, "{\"Records\":[{\"EventSource\":\"aws:sns\",\"EventVersion\":\"1.0\",\"EventSubscriptionArn\":");
    char sub[600];
    snprintf(sub, sizeof sub, "%s:%s", arn, s->s.function);
    attrs_json_str(b, sub, strlen(sub));
    PUT_LIT(b, ",\"Sns\":{\"Type\":\"Notification\",\"MessageId\":");
    attrs_json_str(b, s->e.message_id, strlen(s->e.message_id));
    PUT_LIT(b, ",\"TopicArn\":");
    attrs_json_str(b, arn, strlen(arn));
    PUT_LIT(b, ",\"Subject\":null,\"Message\":");
    attrs_json_str(b, s->e.payload, s->e.payload_len);
    PUT_LIT(b, ",\"Timestamp\":\"");
    wbuf_put(b, ts, strlen(ts));
    PUT_LIT(b, "\",\"SignatureVersion\":\"1\",\"Signature\":\"\",\"SigningCertUrl\":\"\",\"UnsubscribeUrl\":\"\","
                "\"MessageAttributes\":{");
    for (uint32_t i = 0; i < s->e.nattrs; i++) {
        if (i)
            put_u8(b, ',');
        attrs_json_str(b, s->attrs[i].key, strlen(s->attrs[i].key));
        PUT_LIT(b, ":{\"Type\":\"String\",\"Value\":");
        attrs_json_str(b, s->attrs[i].value, strlen(s->attrs[i].value));
        put_u8(b, '}');
    }
    PUT_LIT(b, "}}}]}");
}

/* xorshift64*: request and trace ids need to be unique, not secret, and a
 * syscall per event for them would cost more than the rest of the id. */
static uint64_t next_random(sup *s)
{
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 2685821657736338717ull;
}

/* Hands the waiting event to the process's held /next. */
static void hand_out(sup *s)
{
    unsigned char rnd[16 + 12 + 8];
    for (size_t i = 0; i < sizeof rnd; i += 8) {
        uint64_t x = next_random(s);
        memcpy(rnd + i, &x, sizeof rnd - i < 8 ? sizeof rnd - i : 8);
    }
    rnd[6] = (unsigned char)((rnd[6] & 0x0f) | 0x40);   /* a version 4 UUID */
    rnd[8] = (unsigned char)((rnd[8] & 0x3f) | 0x80);
    char h[80];
    hex(h, rnd, 16);
    snprintf(s->reqid, sizeof s->reqid, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
    char trace[128], r24[32], p16[24];
    hex(r24, rnd + 16, 12);
    hex(p16, rnd + 28, 8);
    snprintf(trace, sizeof trace, "Root=1-%08llx-%s;Parent=%s;Sampled=0",
             (unsigned long long)(util_wall_ms() / 1000), r24, p16);
    wbuf *attrs = &s->hattrs, *body = &s->sns;
    buf_reuse(attrs);
    buf_reuse(body);
    attrs_json(attrs, s->attrs, s->e.nattrs);
    put_u8(attrs, 0);
    bool sns = s->s.format == RT_FORMAT_SNS && s->e.topic[0];
    if (sns)
        sns_envelope(s, body);
    char attempt[16];
    snprintf(attempt, sizeof attempt, "%u", s->e.attempt);
    s->ev_start_us = mono_us();
    s->ev_start_ms = util_wall_ms();
    s->ev_deadline_us = s->s.timeout_ms ? s->ev_start_us + (int64_t)s->s.timeout_ms * 1000 : 0;
    if (attrs->failed || body->failed) {
        finish_event(s, OUT_ERROR, "runner: out of memory", NULL, 0);
        return;
    }
    rtapi_header hdrs[] = {
        { "Herald-Topic", s->e.topic }, { "Herald-Message-Id", s->e.message_id },
        { "Herald-Attempt", attempt }, { "Herald-Attributes", attrs->p },
    };
    rtapi_event ev = {
        .request_id = s->reqid,
        .deadline_ms = s->ev_start_ms + s->s.timeout_ms,
        .function_arn = s->arn,
        .trace_id = trace,
        .headers = hdrs, .nheaders = sizeof hdrs / sizeof hdrs[0],
        .body = sns ? body->p : s->e.payload,
        .body_len = sns ? body->len : s->e.payload_len,
    };
    loglines_end(&s->log, s->ev_start_us);   /* written before the event: not its */
    log_send(s);
    s->ev = EV_RUNNING;
    s->asking = false;
    s->tailtotal = 0;   /* a crash's text is what this event's run wrote */
    if (rtapi_offer(s->api, &ev) < 0) {
        char why[128];
        snprintf(why, sizeof why, "runner: cannot hand the event to the runtime: %s", strerror(errno));
        finish_event(s, OUT_ERROR, why, NULL, 0);
    }
}

static void became_ready(sup *s)
{
    if (s->ready)
        return;
    s->ready = true;
    int64_t d = mono_us() - s->spawn_us;
    wbuf b = { 0 };
    if (chan_rtready_put(&b, d < 0 ? 0 : d > UINT32_MAX ? UINT32_MAX : (uint32_t)d) == 0)
        send_main(s, &b);
    wbuf_free(&b);
}

static void on_next_waiting(void *arg)
{
    sup *s = arg;
    became_ready(s);
    s->asking = true;
    if (s->ev == EV_WAITING)
        hand_out(s);
}

static void on_started(void *arg, const char *id)
{
    (void)id;
    became_ready(arg);
}

static void on_response(void *arg, const char *id, const void *body, size_t len)
{
    sup *s = arg;
    if (s->ev != EV_RUNNING || strcmp(id, s->reqid))
        return;
    decide_stay(s);
    finish_event(s, OUT_OK, NULL, body, len);
}

static void on_too_large(void *arg, const char *id, uint64_t size)
{
    sup *s = arg;
    if (s->ev != EV_RUNNING || strcmp(id, s->reqid))
        return;
    char big[160];
    decide_stay(s);
    finish_event(s, OUT_OK, too_large_text(big, size), NULL, 0);
}

/* The JSON string value of key at the top level of the object in p[0..n),
 * unescaped into out (\uXXXX as UTF-8; at most cap-1 bytes). false if absent
 * or not a string. Small and forgiving: it reads what a runtime client posts. */
static bool json_field(const char *p, size_t n, const char *key, char *out, size_t cap)
{
    size_t i = 0, klen = strlen(key);
    int depth = 0;
    while (i < n) {
        char c = p[i];
        if (c == '{' || c == '[') {
            depth++;
            i++;
            continue;
        }
        if (c == '}' || c == ']') {
            depth--;
            i++;
            continue;
        }
        if (c != '"') {
            i++;
            continue;
        }
        /* a string: is it our key at depth 1, followed by ':' and a string? */
        size_t start = ++i;
        while (i < n && p[i] != '"')
            i += p[i] == '\\' ? 2 : 1;
        if (i >= n)
            return false;
        size_t end = i++;
        size_t j = i;
        while (j < n && (p[j] == ' ' || p[j] == '\t' || p[j] == '\n' || p[j] == '\r'))
            j++;
        bool is_key = j < n && p[j] == ':';
        if (!is_key || depth != 1 || end - start != klen || memcmp(p + start, key, klen))
            continue;
        j++;
        while (j < n && (p[j] == ' ' || p[j] == '\t' || p[j] == '\n' || p[j] == '\r'))
            j++;
        if (j >= n || p[j] != '"')
            return false;
        size_t o = 0;
        for (j++; j < n && p[j] != '"' && o + 4 < cap; j++) {
            if (p[j] != '\\') {
                out[o++] = p[j];
                continue;
            }
            if (++j >= n)
                break;
            switch (p[j]) {
            case 'n': out[o++] = '\n'; break;
            case 't': out[o++] = '\t'; break;
            case 'r': out[o++] = '\r'; break;
            case 'b': out[o++] = '\b'; break;
            case 'f': out[o++] = '\f'; break;
            case 'u': {
                unsigned v = 0;
                if (j + 4 >= n)
                    return false;
                for (int k = 1; k <= 4; k++) {   /* not sscanf: the body has no NUL after it */
                    char h = p[j + k];
                    int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                          : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                    if (d < 0)
                        return false;
                    v = v << 4 | (unsigned)d;
                }
                j += 4;
                if (v < 0x80) {
                    out[o++] = v ? (char)v : ' ';
                } else if (v < 0x800) {
                    out[o++] = (char)(0xc0 | v >> 6);
                    out[o++] = (char)(0x80 | (v & 0x3f));
                } else if (v >= 0xd800 && v < 0xe000) {
                    out[o++] = '?';   /* a surrogate half: not worth pairing for an error text */
                } else {
                    out[o++] = (char)(0xe0 | v >> 12);
                    out[o++] = (char)(0x80 | (v >> 6 & 0x3f));
                    out[o++] = (char)(0x80 | (v & 0x3f));
                }
                break;
            }
            default: out[o++] = p[j]; break;
            }
        }
        out[o] = '\0';
        return true;
    }
    return false;
}

/* "errorType: errorMessage" of an /error or /init/error body. */
static void error_text(const char *type_hdr, const void *body, size_t len, char *type, size_t tcap,
                       char *text, size_t cap)
{
    char msg[PROTO_ERROR_TEXT_MAX];
    if (!json_field(body, len, "errorType", type, tcap) || !type[0])
        snprintf(type, tcap, "%s", type_hdr && type_hdr[0] ? type_hdr : "Unhandled");
    if (!json_field(body, len, "errorMessage", msg, sizeof msg))
        snprintf(msg, sizeof msg, "%.*s", (int)(len < 2048 ? len : 2048), (const char *)body);
    snprintf(text, cap, "%.200s: %.3800s", type, msg);
}

static void on_error(void *arg, const char *id, const char *type_hdr, const void *body, size_t len)
{
    sup *s = arg;
    if (s->ev != EV_RUNNING || strcmp(id, s->reqid))
        return;
    char type[256], text[PROTO_ERROR_TEXT_MAX];
    error_text(type_hdr, body, len, type, sizeof type, text, sizeof text);
    decide_stay(s);
    finish_event(s, strcmp(type, "Herald.Reject") ? OUT_ERROR : OUT_REJECTED, text, NULL, 0);
}

static void on_init_error(void *arg, const char *type_hdr, const void *body, size_t len)
{
    sup *s = arg;
    char type[256], text[PROTO_ERROR_TEXT_MAX], full[PROTO_ERROR_TEXT_MAX];
    error_text(type_hdr, body, len, type, sizeof type, text, sizeof text);
    snprintf(full, sizeof full, "Runtime.InitError: %.4000s", text);
    LOG_ERROR("runtime %s: %s", s->s.function, full);
    s->stop = PROTO_RECYCLE_INIT_ERROR;
    if (s->ev != EV_NONE)
        finish_event(s, OUT_ERROR, full, NULL, 0);
}

/* --- the process ---------------------------------------------------------- */

static char *fmt2(const char *k, const char *v)
{
    size_t n = strlen(k) + strlen(v) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s=%s", k, v);
    return s;
}

/* Starts the process. 0, or -1 with why filled in. */
static int spawn_process(sup *s, char *why, size_t whylen)
{
    char port[32], mem[16];
    snprintf(port, sizeof port, "127.0.0.1:%u", (unsigned)rtapi_port(s->api));
    snprintf(mem, sizeof mem, "%u", s->s.memory_mb);
    /* The environment: PATH, LANG, TZ as the worker has them, then the
     * function's env, then ours (later entries win: the API's address and
     * the Lambda names cannot be overridden). */
    char *env[MAX_ENV + 16];
    size_t n = 0;
    static const char *const keep[] = { "PATH", "LANG", "TZ" };
    for (size_t i = 0; i < 3; i++) {
        const char *v = getenv(keep[i]);
        if (v)
            env[n++] = fmt2(keep[i], v);
    }
    for (uint32_t i = 0; i < s->nfenv; i++)
        env[n++] = strdup(s->fenv[i]);
    env[n++] = fmt2("HOME", s->dir);
    env[n++] = fmt2("TMPDIR", s->dir);
    env[n++] = fmt2("AWS_LAMBDA_RUNTIME_API", port);
    if (s->s.handler[0])
        env[n++] = fmt2("_HANDLER", s->s.handler);
    env[n++] = fmt2("LAMBDA_TASK_ROOT", s->s.root);
    env[n++] = fmt2("AWS_LAMBDA_FUNCTION_NAME", s->s.function);
    env[n++] = fmt2("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", mem);
    env[n++] = fmt2("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
    env[n++] = fmt2("AWS_REGION", s->s.region);
    /* Later entries win: drop an earlier one with the same name. */
    size_t m = 0;
    bool oom = false;
    for (size_t i = 0; i < n; i++) {
        if (!env[i]) {
            oom = true;
            continue;
        }
        size_t kl = strcspn(env[i], "=");
        bool later = false;
        for (size_t j = i + 1; j < n && !later; j++)
            later = env[j] && !strncmp(env[j], env[i], kl) && env[j][kl] == '=';
        if (later)
            free(env[i]);
        else
            env[m++] = env[i];
    }
    env[m] = NULL;
    int pout[2] = { -1, -1 }, errp[2] = { -1, -1 };
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t pid = -1;
    int e = ENOMEM;
    if (!oom && devnull >= 0 && pipe2(pout, O_CLOEXEC) == 0 && pipe2(errp, O_CLOEXEC) == 0)
        pid = fork();
    else if (!oom)
        e = errno;
    if (pid == 0) {
        /* The child: 0–2 and, until execve, the error pipe as fd 3 (close-on-exec). */
        setpgid(0, 0);
        if (dup2(devnull, 0) < 0 || dup2(pout[1], 1) < 0 || dup2(pout[1], 2) < 0 || dup2(errp[1], 3) < 0 ||
            fcntl(3, F_SETFD, FD_CLOEXEC) < 0)
            _exit(127);
        launcher_close_from(4);
        e = 0;
        if (chdir(s->s.root) < 0)
            e = errno;
        if (!e && s->s.memory_mb) {
            struct rlimit rl = { (rlim_t)s->s.memory_mb << 20, (rlim_t)s->s.memory_mb << 20 };
            if (setrlimit(RLIMIT_DATA, &rl) < 0)
                e = errno;
        }
        if (!e) {
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
            execve(s->s.program, (char *const *)s->argv, env);
            e = errno;
        }
        if (write(3, &e, sizeof e) < 0)
            _exit(127);
        _exit(127);
    }
    if (pid < 0 && !oom && devnull >= 0 && pout[0] >= 0 && errp[0] >= 0)
        e = errno;
    if (devnull >= 0)
        close(devnull);
    if (pout[1] >= 0)
        close(pout[1]);
    if (errp[1] >= 0)
        close(errp[1]);
    for (size_t i = 0; i < m; i++)
        free(env[i]);
    if (pid > 0) {   /* execve's verdict: EOF when it ran, an errno when not */
        int got = 0;
        ssize_t k;
        while ((k = read(errp[0], &got, sizeof got)) < 0 && errno == EINTR)
            ;
        if (k == (ssize_t)sizeof got) {
            waitpid(pid, NULL, 0);
            pid = -1;
            e = got;
        }
    }
    if (errp[0] >= 0)
        close(errp[0]);
    if (pid < 0) {
        if (pout[0] >= 0)
            close(pout[0]);
        snprintf(why, whylen, "Runtime.InitError: cannot run %s: %s", s->s.program, strerror(e));
        return -1;
    }
    setpgid(pid, pid);
    s->pid = pid;
    s->out = pout[0];
    set_nonblock(s->out);
    s->spawn_us = mono_us();
    return 0;
}

static void read_output(sup *s)
{
    char buf[65536];
    for (int rounds = 0; rounds < 16 && s->out >= 0; rounds++) {
        ssize_t k = read(s->out, buf, sizeof buf);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EAGAIN)
            return;
        if (k <= 0) {
            close(s->out);
            s->out = -1;
            return;
        }
        for (ssize_t i = 0; i < k; i++)
            s->tail[(s->tailtotal + (uint64_t)i) % STDERR_KEEP] = buf[i];
        s->tailtotal += (uint64_t)k;
        loglines_feed(&s->log, buf, (size_t)k, mono_us());
    }
    if (s->log.nlines || s->log.dropped)
        log_send(s);
}

/* Did the process exit? (Left a zombie: its group cannot be reused until
 * kill_tree reaps it.) */
static bool process_exited(sup *s)
{
    if (s->pid <= 0)
        return true;
    siginfo_t si = { 0 };
    if (waitid(P_PID, (id_t)s->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == s->pid) {
        s->status = si.si_code == CLD_EXITED ? W_EXITCODE(si.si_status, 0) : si.si_status;
        return true;
    }
    return false;
}

/* Reaps what the process's descendants left when they exited (orphans
 * re-parent to us); the process itself stays a zombie for process_exited. */
static void reap_orphans(sup *s)
{
    struct signalfd_siginfo ssi;
    while (read(s->sfd, &ssi, sizeof ssi) > 0)
        ;
    for (;;) {
        siginfo_t si = { 0 };
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid == 0 || si.si_pid == s->pid)
            return;
        waitpid(si.si_pid, NULL, 0);
    }
}

/* Kills the process's group and every descendant, and reaps them. */
static void kill_tree(sup *s)
{
    if (s->pid > 0) {
        kill(-s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
    if (launcher_kill_children(util_mono_ms() + REAP_MAX_MS) < 0)
        LOG_ERROR("runtime %s: processes survived SIGKILL", s->s.function);
}

/* Stops for good: says why (unless main is gone), stops the tree (with a
 * SIGTERM and a grace when graceful), removes the run dir, exits. */
__attribute__((noreturn)) static void stop(sup *s, proto_recycle why, bool graceful)
{
    say_gone(s, why);
    rtapi_destroy(&s->api);
    if (graceful && s->pid > 0 && !process_exited(s)) {
        kill(-s->pid, SIGTERM);
        int64_t end = util_mono_ms() + STOP_GRACE_MS;
        while (!process_exited(s)) {
            int64_t left = end - util_mono_ms();
            if (left <= 0)
                break;
            struct pollfd pf[2] = { { .fd = s->sfd, .events = POLLIN }, { .fd = s->out, .events = POLLIN } };
            poll(pf, s->out >= 0 ? 2 : 1, (int)(left < 50 ? left : 50));
            struct signalfd_siginfo ssi;
            while (read(s->sfd, &ssi, sizeof ssi) > 0)
                ;
            if (s->out >= 0 && pf[1].revents)
                read_output(s);
        }
    }
    kill_tree(s);
    loglines_end(&s->log, mono_us());   /* its last words */
    log_send(s);
    if (!s->main_gone)
        loglines_flush(&s->log, s->rep);
    if (exec_rmtree(s->dir) < 0)
        LOG_WARN("runtime %s: rm -r %s: %s", s->s.function, s->dir, strerror(errno));
    _exit(0);
}

/* Stops for why, the current event (waiting or running) ending as o first;
 * its result says the supervisor does not stay. */
__attribute__((noreturn)) static void fail_and_stop(sup *s, proto_recycle why, proto_outcome o, const char *text)
{
    s->stop = why;
    if (s->ev != EV_NONE)
        finish_event(s, o, text, NULL, 0);
    stop(s, why, false);
}

/* The process ended on its own. */
__attribute__((noreturn)) static void process_ended(sup *s)
{
    while (s->out >= 0) {   /* what it wrote last is the best error text */
        struct pollfd pf = { .fd = s->out, .events = POLLIN };
        if (poll(&pf, 1, 50) <= 0)
            break;
        read_output(s);
    }
    char what[64], text[PROTO_ERROR_TEXT_MAX];
    if (WIFSIGNALED(s->status))
        exec_killed_by(WTERMSIG(s->status), what);
    else
        snprintf(what, sizeof what, "exit status %d", WEXITSTATUS(s->status));
    if (!s->ready) {
        fail_text(s, text, sizeof text, "Runtime.InitError", what);
        LOG_ERROR("runtime %s: %s", s->s.function, text);
        fail_and_stop(s, PROTO_RECYCLE_INIT_ERROR, OUT_ERROR, text);
    }
    if (s->ev == EV_RUNNING) {
        fail_text(s, text, sizeof text, "Runtime.ExitError", what);
        fail_and_stop(s, PROTO_RECYCLE_CRASH, OUT_CRASHED, text);
    }
    /* An event still waiting never reached it: no result, main queues it again. */
    stop(s, PROTO_RECYCLE_CRASH, false);
}

/* Reads main's messages: an event, or EOF. */
static void read_main(sup *s)
{
    for (;;) {
        if (!wbuf_reserve(&s->in, 1 << 16)) {
            s->main_gone = true;
            return;
        }
        size_t room = s->in.cap - s->in.len;
        ssize_t k = read(s->rep, s->in.p + s->in.len, room);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EAGAIN)
            break;
        if (k <= 0) {
            s->main_gone = true;
            break;
        }
        s->in.len += (size_t)k;
        if ((size_t)k < room)
            break;   /* drained: poll says when there is more (a read less per event) */
    }
    const char *body;
    uint32_t n;
    bool bad = false;
    while (!s->main_gone && msg_next(&s->in, &body, &n, &bad)) {
        if ((uint8_t)body[0] != CH_RT_EVENT || s->ev != EV_NONE) {
            bad = true;   /* main sends one event at a time, nothing else */
            break;
        }
        /* copied: it may wait here while later reads move s->in */
        wbuf_put(&s->evmsg, body + 1, n - 1);
        if (s->evmsg.failed || !chan_rtevent_get(s->evmsg.p, n - 1, &s->e) || s->e.nattrs > PROTO_MAX_ATTRS) {
            buf_reuse(&s->evmsg);
            bad = true;
            break;
        }
        for (uint32_t i = 0; i < s->e.nattrs; i++) {
            s->attrs[i].key = (char *)chan_strs_next(&s->e.attr_strs);
            s->attrs[i].value = (char *)chan_strs_next(&s->e.attr_strs);
        }
        s->ev = EV_WAITING;
        if (s->asking)
            hand_out(s);
    }
    if (bad) {
        LOG_ERROR("runtime %s: bad message from the worker", s->s.function);
        s->main_gone = true;
    }
    if (s->in.off == s->in.len && s->in.cap > (1u << 20))
        wbuf_free(&s->in);
}

static int ms_until(int64_t at_us, int64_t now_us)
{
    int64_t left = (at_us - now_us + 999) / 1000;
    return left < 0 ? 0 : left > 60000 ? 60000 : (int)left;
}

void runtime_supervise(int rep, const char *wdir, const char *b, uint32_t n)
{
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    prctl(PR_SET_NAME, "herald-runtime");
    sup s = { .rep = rep, .out = -1, .wdir = wdir, .stop = -1, .statm = -1 };
    if (getrandom(&s.rng, sizeof s.rng, 0) != (ssize_t)sizeof s.rng || !s.rng)
        s.rng = (uint64_t)mono_us() * 0x9e3779b97f4a7c15ull | 1;
    if (!chan_runtime_get(b, n, &s.s) || !(s.argv = calloc(s.s.argc + 1, sizeof *s.argv)) ||
        !(s.fenv = calloc(s.s.nfenv + 1, sizeof *s.fenv)) || s.s.nfenv > MAX_ENV) {
        LOG_ERROR("runtime: bad start request");
        _exit(0);
    }
    for (uint32_t i = 0; i < s.s.argc; i++)
        s.argv[i] = chan_strs_next(&s.s.args);
    s.nfenv = s.s.nfenv;
    for (uint32_t i = 0; i < s.nfenv; i++)
        s.fenv[i] = chan_strs_next(&s.s.env);
    snprintf(s.arn, sizeof s.arn, "arn:aws:lambda:%s:%s:function:%s", s.s.region, s.s.account, s.s.function);
    snprintf(s.dir, sizeof s.dir, "%s/%llu/r%llu", wdir, (unsigned long long)(s.s.id % RUN_SHARDS),
             (unsigned long long)s.s.id);
    if (s.s.max_invocations) {   /* ±10%, so a pool started together is not recycled together */
        uint32_t r = 0;
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
            r = (uint32_t)getpid() * 2654435761u;
        double f = 0.9 + 0.2 * (r / 4294967296.0);
        s.limit = (uint64_t)(s.s.max_invocations * f + 0.5);
        if (s.limit < 1)
            s.limit = 1;
    }
    set_nonblock(rep);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGPIPE);
    sigprocmask(SIG_BLOCK, &set, NULL);
    sigdelset(&set, SIGPIPE);
    s.sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    rtapi_callbacks cb = {
        .allow = on_allow, .next_waiting = on_next_waiting, .started = on_started,
        .response = on_response, .too_large = on_too_large, .error = on_error, .init_error = on_init_error,
    };
    char why[PROTO_ERROR_TEXT_MAX] = "";
    if (s.sfd < 0)
        snprintf(why, sizeof why, "Runtime.InitError: signalfd: %s", strerror(errno));
    else if (mkdir(s.dir, 0700) < 0)
        snprintf(why, sizeof why, "Runtime.InitError: mkdir %.3000s: %s", s.dir, strerror(errno));
    else if (!(s.api = rtapi_new(&cb, &s)))
        snprintf(why, sizeof why, "Runtime.InitError: cannot serve the Runtime API: %s", strerror(errno));
    else
        spawn_process(&s, why, sizeof why);
    if (why[0]) {
        /* The event main sent with the start is very likely here already. */
        struct pollfd pf = { .fd = rep, .events = POLLIN };
        if (poll(&pf, 1, 100) > 0)
            read_main(&s);
        LOG_ERROR("runtime %s: %s", s.s.function, why);
        fail_and_stop(&s, PROTO_RECYCLE_INIT_ERROR, OUT_ERROR, why);
    }
    s.idle_since_us = mono_us();

    for (;;) {
        int64_t now = mono_us();
        int64_t at = 0;   /* the next deadline, 0: none */
        if (!s.ready)
            at = s.spawn_us + (int64_t)s.s.init_timeout_ms * 1000;
        else if (s.ev == EV_RUNNING)
            at = s.ev_deadline_us;
        else if (s.ev == EV_NONE && s.s.idle_timeout_ms)
            at = s.idle_since_us + (int64_t)s.s.idle_timeout_ms * 1000;
        struct pollfd pf[4] = {
            { .fd = s.sfd, .events = POLLIN },
            { .fd = rep, .events = POLLIN | (s.log_waits ? POLLOUT : 0) },
            { .fd = s.out, .events = POLLIN },
            { .fd = rtapi_fd(s.api), .events = POLLIN },
        };
        if (poll(pf, 4, at ? ms_until(at, now) : -1) < 0 && errno != EINTR)
            stop(&s, PROTO_RECYCLE_CRASH, false);
        /* In this order: what the process said before it ended counts; an
         * event that comes as it ends is not handed to it (it goes back). */
        if (pf[2].revents)
            read_output(&s);
        if (pf[0].revents) {
            reap_orphans(&s);
            s.child_news = true;
        }
        if (pf[3].revents)
            rtapi_dispatch(s.api);
        if (s.child_news && s.stop < 0 && !s.main_gone) {
            s.child_news = false;
            if (process_exited(&s))
                process_ended(&s);
        }
        if (s.log_waits && (pf[1].revents & POLLOUT))
            log_send(&s);
        if (pf[1].revents & ~POLLOUT)
            read_main(&s);
        if (s.main_gone)   /* a cancel, or the worker stopping: what runs is killed */
            stop(&s, PROTO_RECYCLE_SHUTDOWN, s.ev == EV_NONE);
        if (s.stop >= 0)
            stop(&s, (proto_recycle)s.stop, s.stop != PROTO_RECYCLE_INIT_ERROR);
        now = mono_us();
        if (!s.ready && now >= s.spawn_us + (int64_t)s.s.init_timeout_ms * 1000) {
            char what[64], text[PROTO_ERROR_TEXT_MAX];
            exec_timeout_text("init ", s.s.init_timeout_ms, what);
            fail_text(&s, text, sizeof text, "Runtime.InitError", what);
            LOG_ERROR("runtime %s: %s", s.s.function, text);
            fail_and_stop(&s, PROTO_RECYCLE_INIT_ERROR, OUT_ERROR, text);
        }
        if (s.ev == EV_RUNNING && s.ev_deadline_us && now >= s.ev_deadline_us) {
            kill_tree(&s);   /* first: the result goes out once nothing of it runs */
            char text[48];
            fail_and_stop(&s, PROTO_RECYCLE_TIMEOUT, OUT_TIMEOUT, exec_timeout_text("", s.s.timeout_ms, text));
        }
        if (s.ready && s.ev == EV_NONE && s.s.idle_timeout_ms &&
            now >= s.idle_since_us + (int64_t)s.s.idle_timeout_ms * 1000)
            stop(&s, PROTO_RECYCLE_IDLE, true);
    }
}
