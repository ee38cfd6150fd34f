/* rtapi: the Runtime API server of one runtime process (rtapi.h).
 *
 * It owns the listening socket, up to RTAPI_CONNS_MAX connections (each an
 * input buffer, a parser and an output buffer), the offered event and the
 * protocol state; nothing else changes them. Every descriptor sits in one
 * epoll set (rtapi_fd). A connection is READ (parsing requests, one response
 * in flight at most, so pipelined answers stay in order and output stays
 * bounded), HELD (a GET next waiting for an event; only its hang-up is
 * watched), CLOSING (its last response is flushed, then the write side is shut
 * and the input read and dropped until the client closes: a lingering close,
 * so a 413 is not lost to a reset) or DEAD (closed, freed at the end of the
 * entry point, never inside a callback that might still point at it).
 *
 * What follows AWS (checked against aws-lambda-runtime-interface-emulator,
 * internal/lambda/rapi: router.go, middleware.go, the handler and rendering packages):
 * - GET next: 200, body = the event, Lambda-Runtime-Aws-Request-Id,
 *   -Deadline-Ms, -Invoked-Function-Arn, -Trace-Id headers; held until an
 *   event comes. After init/error it is a 403 InvalidStateTransition.
 * - POST invocation/{id}/response and /error, POST init/error: 202
 *   {"status":"OK"} (Go's encoder ends JSON bodies with "\n"; so do we).
 * - An {id} that is not the current one: 400
 *   {"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"}
 *   (AwsRequestIDValidator runs before the state machine).
 * - A second /response or /error for the current id: 403 InvalidStateTransition,
 *   "State transition from RuntimeResponseSentState to InvocationResponse failed
 *   for runtime. Error: State transition is not allowed" (the emulator's state
 *   machine; the same shape for every refused transition, init/error after
 *   the first GET next included).
 * - A /response body past the cap: 413 {"errorMessage":"Exceeded maximum
 *   allowed payload size (N bytes).","errorType":"RequestEntityTooLarge"}, and
 *   the event is over. The emulator's N is 6 MiB + 100; ours is RTAPI_BODY_MAX
 *   (6 MiB, herald's output cap), so an accepted response always fits.
 * - Unknown path: 404 "404 page not found\n" (text/plain, Go's NotFound);
 *   wrong method: 405 with Allow and no body (chi's default).
 * Ours, where AWS has no answer to copy: framing errors are answered by
 * http.c's status (400, 413 before routing, 431, 501, 505) with "CODE Reason"
 * as text/plain, as Go's server does, and close the connection; a body past
 * the cap on another route is a 413 with no callback; a GET next while an
 * event runs is held (the emulator's Running state accepts it and waits);
 * Lambda-Runtime-Function-Response-Mode is not looked at (streamed responses
 * arrive chunked and are taken whole).
 */
#define _GNU_SOURCE
#include "rtapi.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../proto/proto.h"
#include "http.h"

_Static_assert(RTAPI_BODY_MAX == PROTO_OUTPUT_MAX, "a /response is an invoke output");

#define IN_READ (64u << 10)     /* bytes asked of one recv */
#define IN_MIN (16u << 10)      /* first input buffer; an idle one shrinks back to it */
/* an input buffer never needs more: a head, a body at the cap, an unparsed
 * chunk line or trailer section, one read */
#define IN_MAX (2 * HTTP_HEAD_MAX + RTAPI_BODY_MAX + IN_READ)
#define READS_PER_TURN 16       /* recv calls per connection per dispatch: fairness */
#define DISCARD_MAX (64u << 20) /* a lingering close reads at most this much, then closes */
#define EVENTS_PER_TURN 32      /* epoll events taken per dispatch */

#define API_PREFIX "/2018-06-01/runtime/"
#define ERROR_TYPE_HEADER "Lambda-Runtime-Function-Error-Type"

typedef enum { C_READ, C_HELD, C_CLOSING, C_DEAD } conn_state;

/* AWS's runtime states: the names appear in 403 bodies. */
typedef enum { RT_STARTED, RT_READY, RT_RUNNING, RT_RESPONSE_SENT, RT_INIT_ERROR } rt_state;

typedef struct conn {
    struct conn *next;          /* api->conns */
    int fd;                     /* -1 once DEAD */
    conn_state state;
    bool eof;                   /* the client shut its write side */
    bool wr_shut;               /* CLOSING: our write side is shut */
    bool held_close;            /* HELD: the GET asked to close after its answer */
    bool continue_sent;         /* 100 Continue sent for the current request */
    uint32_t events;            /* epoll interest now */
    uint64_t held_seq;          /* HELD: order of arrival, oldest served first */
    uint64_t discarded;         /* CLOSING: bytes dropped */
    char *in;                   /* unconsumed input, the current request at in[0] */
    size_t in_len, in_cap;
    http_buf out;               /* responses not yet written */
    http_req req;               /* parser state of the request at in[0] */
} conn;

struct rtapi {
    rtapi_callbacks cb;
    void *arg;
    int lfd;                    /* listening socket */
    int ep;                     /* epoll: lfd, wake and every connection */
    int wake;                   /* eventfd: buffered requests to parse (after a hand-out) */
    int port;
    conn *conns;
    int nconns;                 /* not DEAD */
    int depth;                  /* entry points active: DEAD conns are freed at 0 */
    uint64_t held_seq;
    rt_state state;
    bool pending;               /* an event is offered, not handed out */
    bool running;               /* cur_id is handed out and not finished */
    char cur_id[RTAPI_ID_MAX + 1];  /* the last id handed out; "" before any */
    char ev_id[RTAPI_ID_MAX + 1];   /* pending: its id */
    http_buf ev_head;           /* pending: its header lines */
    char *ev_body;              /* pending: its body (malloc'd) */
    size_t ev_body_len;
};

static const char *rt_name(rt_state s)
{
    switch (s) {
    case RT_STARTED: return "Started";
    case RT_READY: return "Ready";
    case RT_RUNNING: return "Running";
    case RT_RESPONSE_SENT: return "RuntimeResponseSentState";
    case RT_INIT_ERROR: return "InitError";
    }
    return "?";
}

/* --- connections ------------------------------------------------------------ */

static void conn_close(rtapi_t *api, conn *c)
{
    if (c->state == C_DEAD) return;
    close(c->fd);   /* leaves the epoll set with it */
    c->fd = -1;
    c->state = C_DEAD;
    api->nconns--;
}

/* Frees DEAD connections, only when no entry point is running. */
static void reap(rtapi_t *api)
{
    if (api->depth) return;
    for (conn **pp = &api->conns; *pp;) {
        conn *c = *pp;
        if (c->state != C_DEAD) { pp = &c->next; continue; }
        *pp = c->next;
        free(c->in);
        http_buf_free(&c->out);
        free(c);
    }
}

static void conn_update(rtapi_t *api, conn *c)
{
    if (c->state == C_DEAD) return;
    bool out = http_buf_pending(&c->out) > 0;
    uint32_t ev = 0;
    switch (c->state) {
    case C_READ: ev = out ? EPOLLOUT : (c->eof ? 0 : EPOLLIN); break;
    case C_HELD: ev = EPOLLRDHUP | (out ? EPOLLOUT : 0); break;
    case C_CLOSING: ev = (out ? EPOLLOUT : 0) | (c->eof ? 0 : EPOLLIN); break;
    case C_DEAD: return;
    }
    if (ev == c->events) return;
    struct epoll_event e = { .events = ev, .data.ptr = c };
    if (epoll_ctl(api->ep, EPOLL_CTL_MOD, c->fd, &e) < 0) {
        LOG_WARN("runtime API: epoll_ctl: %s", strerror(errno));
        conn_close(api, c);
        return;
    }
    c->events = ev;
}

/* Writes what it can. A CLOSING connection whose output is all out gets its
 * write side shut (and is closed if the client has gone already). */
static void conn_flush(rtapi_t *api, conn *c)
{
    while (c->state != C_DEAD && http_buf_pending(&c->out)) {
        ssize_t n = send(c->fd, c->out.data + c->out.off, http_buf_pending(&c->out),
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) { http_buf_consume(&c->out, (size_t)n); continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        conn_close(api, c);     /* the client is gone */
        return;
    }
    if (c->state == C_CLOSING && !c->wr_shut) {
        shutdown(c->fd, SHUT_WR);
        c->wr_shut = true;
        if (c->eof) conn_close(api, c);
    }
}

/* Queues a response; close: it is the connection's last. */
static void respond(rtapi_t *api, conn *c, int status, const char *extra, const char *type,
                    const void *body, size_t len, bool close)
{
    if (http_respond(&c->out, status, extra, type, body, len, close) < 0) {
        LOG_ERROR("runtime API: out of memory for a response");
        conn_close(api, c);
        return;
    }
    if (close) c->state = C_CLOSING;
}

static void respond_json(rtapi_t *api, conn *c, int status, const char *json, bool close)
{
    respond(api, c, status, NULL, "application/json", json, strlen(json), close);
}

/* AWS's error body: {"errorMessage":...,"errorType":...}. Our messages are
 * plain ASCII with nothing to escape. */
static void respond_error(rtapi_t *api, conn *c, int status, const char *type, const char *msg, bool close)
{
    char body[512];
    snprintf(body, sizeof body, "{\"errorMessage\":\"%s\",\"errorType\":\"%s\"}\n", msg, type);
    respond_json(api, c, status, body, close);
}

static void respond_transition(rtapi_t *api, conn *c, const char *to, bool close)
{
    char msg[256];
    snprintf(msg, sizeof msg, "State transition from %s to %s failed for runtime. "
             "Error: State transition is not allowed", rt_name(api->state), to);
    respond_error(api, c, 403, "InvalidStateTransition", msg, close);
}

/* --- the event -------------------------------------------------------------- */

static void event_clear(rtapi_t *api)
{
    api->pending = false;
    api->ev_id[0] = '\0';
    http_buf_free(&api->ev_head);
    free(api->ev_body);
    api->ev_body = NULL;
    api->ev_body_len = 0;
}

/* Answers the held GET next on c with the pending event. */
static void hand_out(rtapi_t *api, conn *c)
{
    bool close = c->held_close;
    c->state = C_READ;
    if (http_respond(&c->out, 200, api->ev_head.data, "application/json",
                     api->ev_body, api->ev_body_len, close) < 0) {
        LOG_ERROR("runtime API: out of memory for an event");
        conn_close(api, c);     /* the supervisor's timeout ends the event */
    } else if (close) {
        c->state = C_CLOSING;
    }
    memcpy(api->cur_id, api->ev_id, sizeof api->cur_id);
    event_clear(api);
    api->running = true;
    api->state = RT_RUNNING;
    conn_flush(api, c);
    conn_update(api, c);
    if (c->state == C_READ && c->in_len) {    /* requests sent behind the GET */
        uint64_t one = 1;
        if (write(api->wake, &one, sizeof one) < 0 && errno != EAGAIN)
            LOG_WARN("runtime API: eventfd: %s", strerror(errno));
    }
    char id[RTAPI_ID_MAX + 1];
    memcpy(id, api->cur_id, sizeof id);
    if (api->cb.started) api->cb.started(api->arg, id);
}

static conn *oldest_held(rtapi_t *api)
{
    conn *best = NULL;
    for (conn *c = api->conns; c; c = c->next)
        if (c->state == C_HELD && (!best || c->held_seq < best->held_seq)) best = c;
    return best;
}

/* --- requests ----------------------------------------------------------------- */

typedef enum { R_NONE, R_NEXT, R_RESPONSE, R_ERROR, R_INIT_ERROR } route_kind;

/* Maps a path to its route; for the per-invocation ones, *id and *idlen. */
static route_kind route(const char *p, size_t n, const char **id, size_t *idlen)
{
    static const char pre[] = API_PREFIX;
    size_t pl = sizeof pre - 1;
    if (n < pl || memcmp(p, pre, pl) != 0) return R_NONE;
    p += pl;
    n -= pl;
    if (n == 15 && memcmp(p, "invocation/next", 15) == 0) return R_NEXT;
    if (n == 10 && memcmp(p, "init/error", 10) == 0) return R_INIT_ERROR;
    if (n < 11 || memcmp(p, "invocation/", 11) != 0) return R_NONE;
    p += 11;
    n -= 11;
    const char *slash = memchr(p, '/', n);
    if (!slash || slash == p) return R_NONE;
    *id = p;
    *idlen = (size_t)(slash - p);
    size_t rest = n - *idlen;
    if (rest == 9 && memcmp(slash, "/response", 9) == 0) return R_RESPONSE;
    if (rest == 6 && memcmp(slash, "/error", 6) == 0) return R_ERROR;
    return R_NONE;
}

static void on_next(rtapi_t *api, conn *c, bool close)
{
    if (api->state == RT_INIT_ERROR) {
        respond_transition(api, c, "Ready", close);
        return;
    }
    c->state = C_HELD;
    c->held_close = close;
    c->held_seq = ++api->held_seq;
    if (api->pending) {
        hand_out(api, c);
    } else if (!api->running) {
        api->state = RT_READY;
        if (api->cb.next_waiting) api->cb.next_waiting(api->arg);
    }
}

/* /response and /error; over: the body passed the cap (and was not kept). */
static void on_result(rtapi_t *api, conn *c, route_kind k, const char *id, size_t idlen,
                      bool close, bool over)
{
    if (!api->cur_id[0] || idlen != strlen(api->cur_id) || memcmp(id, api->cur_id, idlen) != 0) {
        respond_error(api, c, 400, "InvalidRequestID", "Invalid request ID", close);
        return;
    }
    if (!api->running) {
        respond_transition(api, c, k == R_RESPONSE ? "InvocationResponse" : "InvocationErrorResponse", close);
        return;
    }
    if (over && k == R_ERROR) {     /* not AWS's case: refused, the event runs on */
        char msg[96];
        snprintf(msg, sizeof msg, "Exceeded maximum allowed payload size (%u bytes).", RTAPI_BODY_MAX);
        respond_error(api, c, 413, "RequestEntityTooLarge", msg, close);
        return;
    }
    char cid[RTAPI_ID_MAX + 1];     /* a hand-out inside the callback rewrites cur_id */
    memcpy(cid, api->cur_id, sizeof cid);
    api->running = false;
    api->state = RT_RESPONSE_SENT;
    if (over) {
        char msg[96];
        snprintf(msg, sizeof msg, "Exceeded maximum allowed payload size (%u bytes).", RTAPI_BODY_MAX);
        respond_error(api, c, 413, "RequestEntityTooLarge", msg, close);
        if (api->cb.too_large) api->cb.too_large(api->arg, cid, c->req.content_length);
        return;
    }
    respond_json(api, c, 202, "{\"status\":\"OK\"}\n", close);
    if (k == R_RESPONSE) {
        if (api->cb.response) api->cb.response(api->arg, cid, http_body(&c->req), c->req.body_len);
    } else if (api->cb.error) {
        api->cb.error(api->arg, cid, http_field_str(&c->req, ERROR_TYPE_HEADER),
                      http_body(&c->req), c->req.body_len);
    }
}

static void on_init_error(rtapi_t *api, conn *c, bool close, bool over)
{
    if (api->state != RT_STARTED) {
        respond_transition(api, c, "InitError", close);
        return;
    }
    if (over) {
        char msg[96];
        snprintf(msg, sizeof msg, "Exceeded maximum allowed payload size (%u bytes).", RTAPI_BODY_MAX);
        respond_error(api, c, 413, "RequestEntityTooLarge", msg, close);
        return;
    }
    api->state = RT_INIT_ERROR;
    respond_json(api, c, 202, "{\"status\":\"OK\"}\n", close);
    if (api->cb.init_error)
        api->cb.init_error(api->arg, http_field_str(&c->req, ERROR_TYPE_HEADER),
                           http_body(&c->req), c->req.body_len);
}

/* One request whose head is parsed; over: its body passed the cap. */
static void handle_request(rtapi_t *api, conn *c, bool over)
{
    size_t mlen, plen, idlen = 0;
    const char *m = http_method(&c->req, &mlen);
    const char *p = http_path(&c->req, &plen);
    const char *id = NULL;
    bool close = over || !c->req.keep_alive;
    route_kind k = route(p, plen, &id, &idlen);
    if (k == R_NONE) {
        static const char nf[] = "404 page not found\n";
        respond(api, c, 404, NULL, "text/plain; charset=utf-8", nf, sizeof nf - 1, close);
        return;
    }
    const char *want = k == R_NEXT ? "GET" : "POST";
    if (mlen != strlen(want) || memcmp(m, want, mlen) != 0) {
        respond(api, c, 405, k == R_NEXT ? "Allow: GET\r\n" : "Allow: POST\r\n", NULL, "", 0, close);
        return;
    }
    switch (k) {
    case R_NEXT:
        if (over) {
            char msg[96];
            snprintf(msg, sizeof msg, "Exceeded maximum allowed payload size (%u bytes).", RTAPI_BODY_MAX);
            respond_error(api, c, 413, "RequestEntityTooLarge", msg, close);
        } else {
            on_next(api, c, close);
        }
        break;
    case R_RESPONSE:
    case R_ERROR: on_result(api, c, k, id, idlen, close, over); break;
    case R_INIT_ERROR: on_init_error(api, c, close, over); break;
    case R_NONE: break;
    }
}

/* A request the parser refused: its status, and the connection's end. */
static void handle_bad(rtapi_t *api, conn *c)
{
    LOG_DEBUG("runtime API: request refused: %d (%s)", c->req.status, c->req.why);
    if (c->req.status == 413 && c->req.head_done) {
        handle_request(api, c, true);
    } else {
        char body[64];
        int n = snprintf(body, sizeof body, "%d %s", c->req.status, http_reason(c->req.status));
        respond(api, c, c->req.status, NULL, "text/plain; charset=utf-8", body, (size_t)n, true);
    }
    c->in_len = 0;      /* the rest is dropped by the lingering close */
    if (c->state == C_READ || c->state == C_HELD) c->state = C_CLOSING;
}

/* Drops a finished request's bytes; gives back a big buffer once idle. */
static void consume(conn *c, size_t n)
{
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
    if (c->in_cap > IN_MIN && c->in_len <= IN_MIN / 2) {
        char *s = realloc(c->in, IN_MIN);
        if (s) { c->in = s; c->in_cap = IN_MIN; }
    }
    http_req_init(&c->req, RTAPI_BODY_MAX);
    c->continue_sent = false;
}

/* Parses and answers the buffered requests, one at a time while the last
 * answer is all written (so answers stay in order and output stays bounded). */
static void conn_process(rtapi_t *api, conn *c)
{
    while (c->state == C_READ && !http_buf_pending(&c->out)) {
        http_result res = http_parse(&c->req, c->in, c->in_len);
        if (res == HTTP_NEED_MORE) {
            c->in_len = http_compact(&c->req, c->in, c->in_len);
            if (c->req.head_done && c->req.expect_continue && !c->continue_sent) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                c->continue_sent = true;
                if (http_buf_append(&c->out, cont, sizeof cont - 1) < 0) conn_close(api, c);
                conn_flush(api, c);
            }
            if (c->in_len == c->in_cap && c->in_cap >= IN_MAX) {
                c->req.status = 400;   /* cannot happen: the parser's limits come first */
                c->req.why = "input buffer full";
                handle_bad(api, c);
            }
            break;
        }
        if (res == HTTP_ERROR) {
            handle_bad(api, c);
            break;
        }
        handle_request(api, c, false);
        if (c->state == C_DEAD) return;
        consume(c, c->req.consumed);
        conn_flush(api, c);
    }
    /* a client that shut its side gets the answers to what it sent (once the
     * output drains this runs again), then the connection closes */
    if (c->state == C_READ && c->eof && !http_buf_pending(&c->out)) {
        conn_close(api, c);
    } else if (c->state == C_HELD && c->eof) {
        conn_close(api, c);
    }
    conn_flush(api, c);
}

static void conn_read(rtapi_t *api, conn *c)
{
    for (int i = 0; i < READS_PER_TURN && c->state == C_READ && !c->eof; i++) {
        if (c->in_cap - c->in_len < IN_READ / 4 && c->in_cap < IN_MAX) {
            size_t cap = c->in_cap ? c->in_cap * 2 : IN_MIN;
            if (cap > IN_MAX) cap = IN_MAX;
            char *s = realloc(c->in, cap);
            if (!s) { LOG_ERROR("runtime API: out of memory for input"); conn_close(api, c); return; }
            c->in = s;
            c->in_cap = cap;
        }
        size_t room = c->in_cap - c->in_len;
        if (room > IN_READ) room = IN_READ;
        if (!room) break;
        ssize_t n = recv(c->fd, c->in + c->in_len, room, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0) { conn_close(api, c); return; }
        if (n == 0) c->eof = true;
        else c->in_len += (size_t)n;
        conn_process(api, c);
        if ((size_t)n < room) break;
    }
}

/* CLOSING: reads and drops until the client closes. */
static void conn_discard(rtapi_t *api, conn *c)
{
    char sink[16384];
    for (int i = 0; i < READS_PER_TURN && c->state == C_CLOSING; i++) {
        ssize_t n = recv(c->fd, sink, sizeof sink, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            c->eof = true;
            if (!http_buf_pending(&c->out) || n < 0) conn_close(api, c);
            return;
        }
        c->discarded += (uint64_t)n;
        if (c->discarded > DISCARD_MAX) conn_close(api, c);
    }
}

static void conn_event(rtapi_t *api, conn *c, uint32_t ev)
{
    if (c->state == C_DEAD) return;
    if (ev & EPOLLERR) { conn_close(api, c); return; }
    if (c->state == C_HELD) {
        if (ev & (EPOLLRDHUP | EPOLLHUP)) conn_close(api, c);
        else if (ev & EPOLLOUT) conn_flush(api, c);
        conn_update(api, c);
        return;
    }
    if (ev & EPOLLOUT) {
        conn_flush(api, c);
        if (c->state == C_READ && !http_buf_pending(&c->out)) conn_process(api, c);
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) {
        if (c->state == C_READ) conn_read(api, c);
        else if (c->state == C_CLOSING) conn_discard(api, c);
    }
    conn_update(api, c);
}

static void accept_all(rtapi_t *api)
{
    for (int i = 0; i < RTAPI_CONNS_MAX; i++) {
        int fd = accept4(api->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                LOG_WARN("runtime API: accept: %s", strerror(errno));
            return;
        }
        if (api->nconns >= RTAPI_CONNS_MAX) {
            LOG_WARN("runtime API: a connection past %d refused", RTAPI_CONNS_MAX);
            close(fd);
            continue;
        }
        if (api->cb.allow && !api->cb.allow(api->arg, fd)) {
            close(fd);
            continue;
        }
        int one = 1;    /* each answer is one write: nothing to coalesce */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *c = calloc(1, sizeof *c);
        struct epoll_event e = { .events = EPOLLIN, .data.ptr = c };
        if (!c || epoll_ctl(api->ep, EPOLL_CTL_ADD, fd, &e) < 0) {
            LOG_ERROR("runtime API: cannot take a connection: %s", strerror(errno));
            free(c);
            close(fd);
            continue;
        }
        c->fd = fd;
        c->state = C_READ;
        c->events = EPOLLIN;
        http_req_init(&c->req, RTAPI_BODY_MAX);
        c->next = api->conns;
        api->conns = c;
        api->nconns++;
    }
}

/* --- public ------------------------------------------------------------------- */

rtapi_t *rtapi_new(const rtapi_callbacks *cb, void *arg)
{
    rtapi_t *api = calloc(1, sizeof *api);
    if (!api) return NULL;
    api->cb = *cb;
    api->arg = arg;
    api->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (api->lfd < 0) goto fail_api;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    if (bind(api->lfd, (struct sockaddr *)&a, sizeof a) < 0
        || listen(api->lfd, RTAPI_CONNS_MAX) < 0
        || getsockname(api->lfd, (struct sockaddr *)&a, &alen) < 0)
        goto fail_lfd;
    api->port = ntohs(a.sin_port);
    api->ep = epoll_create1(EPOLL_CLOEXEC);
    if (api->ep < 0) goto fail_lfd;
    api->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (api->wake < 0) goto fail_ep;
    struct epoll_event el = { .events = EPOLLIN, .data.ptr = &api->lfd };
    struct epoll_event ew = { .events = EPOLLIN, .data.ptr = &api->wake };
    if (epoll_ctl(api->ep, EPOLL_CTL_ADD, api->lfd, &el) < 0
        || epoll_ctl(api->ep, EPOLL_CTL_ADD, api->wake, &ew) < 0)
        goto fail_wake;
    api->state = RT_STARTED;
    return api;

fail_wake:
    close(api->wake);
fail_ep:
    close(api->ep);
fail_lfd:
    LOG_ERROR("runtime API: cannot listen on 127.0.0.1: %s", strerror(errno));
    close(api->lfd);
fail_api:
    free(api);
    return NULL;
}

static void close_all(rtapi_t *api, bool held_only)
{
    for (conn *c = api->conns; c; c = c->next)
        if (!held_only || c->state == C_HELD) conn_close(api, c);
}

void rtapi_destroy(rtapi_t **pp)
{
    rtapi_t *api = *pp;
    if (!api) return;
    close_all(api, false);
    api->depth = 0;
    reap(api);
    event_clear(api);
    close(api->wake);
    close(api->ep);
    close(api->lfd);
    free(api);
    *pp = NULL;
}

int rtapi_port(const rtapi_t *api) { return api->port; }
int rtapi_fd(const rtapi_t *api) { return api->ep; }
bool rtapi_busy(const rtapi_t *api) { return api->pending || api->running; }

void rtapi_dispatch(rtapi_t *api)
{
    struct epoll_event evs[EVENTS_PER_TURN];
    api->depth++;
    int n = epoll_wait(api->ep, evs, EVENTS_PER_TURN, 0);
    for (int i = 0; i < n; i++) {
        void *p = evs[i].data.ptr;
        if (p == &api->lfd) {
            accept_all(api);
        } else if (p == &api->wake) {
            uint64_t v;
            if (read(api->wake, &v, sizeof v) < 0 && errno != EAGAIN)
                LOG_WARN("runtime API: eventfd: %s", strerror(errno));
            for (conn *c = api->conns; c; c = c->next) {
                if (c->state == C_READ && c->in_len) {
                    conn_process(api, c);
                    conn_update(api, c);
                }
            }
        } else {
            conn_event(api, p, evs[i].events);
        }
    }
    api->depth--;
    reap(api);
}

static bool id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > RTAPI_ID_MAX) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')
              || strchr("._~-", *s)))
            return false;
    return true;
}

int rtapi_offer(rtapi_t *api, const rtapi_event *ev)
{
    if (api->pending || api->running) { errno = EBUSY; return -1; }
    if (!ev->request_id || !id_ok(ev->request_id)
        || (ev->function_arn && !http_value_ok(ev->function_arn))
        || (ev->trace_id && !http_value_ok(ev->trace_id))) {
        errno = EINVAL;
        return -1;
    }
    for (size_t i = 0; i < ev->nheaders; i++) {
        if (!http_token_ok(ev->headers[i].name) || !http_value_ok(ev->headers[i].value)) {
            errno = EINVAL;
            return -1;
        }
    }
    http_buf *h = &api->ev_head;
    int r = http_buf_printf(h, "Lambda-Runtime-Aws-Request-Id: %s\r\nLambda-Runtime-Deadline-Ms: %lld\r\n",
                            ev->request_id, (long long)ev->deadline_ms);
    if (r == 0 && ev->function_arn)
        r = http_buf_printf(h, "Lambda-Runtime-Invoked-Function-Arn: %s\r\n", ev->function_arn);
    if (r == 0 && ev->trace_id && *ev->trace_id)
        r = http_buf_printf(h, "Lambda-Runtime-Trace-Id: %s\r\n", ev->trace_id);
    for (size_t i = 0; r == 0 && i < ev->nheaders; i++)
        r = http_buf_printf(h, "%s: %s\r\n", ev->headers[i].name, ev->headers[i].value);
    api->ev_body = malloc(ev->body_len ? ev->body_len : 1);
    if (r < 0 || !api->ev_body) {
        event_clear(api);
        errno = ENOMEM;
        return -1;
    }
    if (ev->body_len) memcpy(api->ev_body, ev->body, ev->body_len);
    api->ev_body_len = ev->body_len;
    snprintf(api->ev_id, sizeof api->ev_id, "%s", ev->request_id);
    api->pending = true;
    conn *c = oldest_held(api);
    if (c) {
        api->depth++;
        hand_out(api, c);
        api->depth--;
        reap(api);
    }
    return 0;
}

void rtapi_drop_held(rtapi_t *api)
{
    close_all(api, true);
    reap(api);
}

void rtapi_reset(rtapi_t *api)
{
    close_all(api, false);
    event_clear(api);
    api->running = false;
    api->cur_id[0] = '\0';
    api->state = RT_STARTED;
    reap(api);
}
