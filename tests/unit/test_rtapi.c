/* test_rtapi: the Runtime API server (worker/rtapi.h), its HTTP parser
 * (worker/http.h) and the peer check (worker/peer.h).
 *
 * The rtapi tests drive a real server over loopback sockets from clients in
 * the test process: every wait is "poll the server's fd and the clients',
 * dispatch, move bytes" until a condition holds or 5 s pass, never a sleep.
 * The peer tests fork children that connect, and kill them by PID.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../worker/http.h"
#include "../../worker/peer.h"
#include "../../worker/rtapi.h"

/* --- what the callbacks saw --------------------------------------------------- */

typedef struct {
    int allow_calls, started, responses, errors, init_errors, waiting, too_large;
    bool refuse;                /* allow() answers false */
    char id[RTAPI_ID_MAX + 1];  /* of the last callback that has one */
    char *body;                 /* of the last response/error/init_error */
    size_t body_len;
    char type[128];             /* error type; "(null)" for NULL */
    uint64_t size;              /* too_large */
} seen;

static seen S;
static rtapi_t *api;

static void keep_body(const void *b, size_t n)
{
    free(S.body);
    S.body = malloc(n + 1);
    memcpy(S.body, b, n);
    S.body[n] = '\0';
    S.body_len = n;
}

static bool cb_allow(void *arg, int fd) { (void)arg; (void)fd; S.allow_calls++; return !S.refuse; }
static void cb_started(void *arg, const char *id) { (void)arg; S.started++; snprintf(S.id, sizeof S.id, "%s", id); }
static void cb_response(void *arg, const char *id, const void *b, size_t n)
{
    (void)arg;
    S.responses++;
    snprintf(S.id, sizeof S.id, "%s", id);
    keep_body(b, n);
}
static void cb_too_large(void *arg, const char *id, uint64_t size)
{
    (void)arg;
    S.too_large++;
    snprintf(S.id, sizeof S.id, "%s", id);
    S.size = size;
}
static void cb_error(void *arg, const char *id, const char *type, const void *b, size_t n)
{
    (void)arg;
    S.errors++;
    snprintf(S.id, sizeof S.id, "%s", id);
    snprintf(S.type, sizeof S.type, "%s", type ? type : "(null)");
    keep_body(b, n);
}
static void cb_init_error(void *arg, const char *type, const void *b, size_t n)
{
    (void)arg;
    S.init_errors++;
    snprintf(S.type, sizeof S.type, "%s", type ? type : "(null)");
    keep_body(b, n);
}
static void cb_waiting(void *arg) { (void)arg; S.waiting++; }

static const rtapi_callbacks CB = {
    .allow = cb_allow, .started = cb_started, .response = cb_response, .too_large = cb_too_large,
    .error = cb_error, .init_error = cb_init_error, .next_waiting = cb_waiting,
};

static void setup(void)
{
    memset(&S, 0, sizeof S);
    signal(SIGPIPE, SIG_IGN);
    api = rtapi_new(&CB, NULL);
    cr_assert_not_null(api);
    cr_assert_gt(rtapi_port(api), 0);
}

static void teardown(void)
{
    rtapi_destroy(&api);
    cr_assert_null(api);
    free(S.body);
}

/* --- a client ------------------------------------------------------------------ */

typedef struct {
    int fd;
    char *out;                  /* bytes still to send */
    size_t out_len, out_off;
    char *in;                   /* bytes received, responses not yet taken */
    size_t in_len, in_cap;
    bool eof;
} client;

#define MAXC 20
static client *clients[MAXC];

static client *cli_new(void)
{
    client *c = calloc(1, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)rtapi_port(api)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    cr_assert_eq(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0, "connect: %s", strerror(errno));
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    for (int i = 0; i < MAXC; i++)
        if (!clients[i]) { clients[i] = c; return c; }
    cr_assert_fail("too many clients");
    return NULL;
}

static void cli_send(client *c, const void *p, size_t n)
{
    c->out = realloc(c->out, c->out_len + n);
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

static void cli_sends(client *c, const char *s) { cli_send(c, s, strlen(s)); }

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One round: poll everything (up to 50 ms), dispatch, move client bytes. */
static void pump(void)
{
    struct pollfd p[MAXC + 1];
    int n = 0;
    p[n++] = (struct pollfd){ .fd = rtapi_fd(api), .events = POLLIN };
    for (int i = 0; i < MAXC; i++) {
        client *c = clients[i];
        short ev = 0;
        if (c && c->fd >= 0 && !c->eof) ev |= POLLIN;
        if (c && c->fd >= 0 && c->out_off < c->out_len) ev |= POLLOUT;
        p[n++] = (struct pollfd){ .fd = c && c->fd >= 0 ? c->fd : -1, .events = ev };
    }
    poll(p, (nfds_t)n, 50);
    rtapi_dispatch(api);
    for (int i = 0; i < MAXC; i++) {
        client *c = clients[i];
        if (!c || c->fd < 0) continue;
        while (c->out_off < c->out_len) {
            ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
            if (w <= 0) break;
            c->out_off += (size_t)w;
        }
        while (!c->eof) {
            if (c->in_cap - c->in_len < 65536) {
                c->in_cap = c->in_cap * 2 + 65536;
                c->in = realloc(c->in, c->in_cap);
            }
            ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
            if (r > 0) c->in_len += (size_t)r;
            else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) c->eof = true;
            else break;
        }
    }
}

#define WAIT(cond) do { \
        int64_t until_ = now_ms() + 5000; \
        while (!(cond)) { \
            cr_assert_lt(now_ms(), until_, "timed out waiting for %s", #cond); \
            pump(); \
        } \
    } while (0)

typedef struct {
    int status;
    char head[4096];            /* status line and header lines, NUL-terminated */
    char *body;                 /* NUL-terminated copy */
    size_t body_len;
} resp;

/* Length of the first whole response in c->in (skipping none), or 0. */
static size_t resp_ready(client *c)
{
    if (!c->in_len) return 0;
    char *e = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!e) return 0;
    size_t head = (size_t)(e - c->in) + 4;
    size_t cl = 0;
    char *h = strndup(c->in, head);
    char *p = strcasestr(h, "\r\nContent-Length: ");
    if (p) cl = strtoul(p + 18, NULL, 10);
    free(h);
    return c->in_len >= head + cl ? head + cl : 0;
}

static resp take(client *c)
{
    WAIT(resp_ready(c));
    size_t total = resp_ready(c);
    resp r = { 0 };
    char *e = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    size_t head = (size_t)(e - c->in) + 4;
    cr_assert_lt(head, sizeof r.head);
    memcpy(r.head, c->in, head);
    r.head[head] = '\0';
    cr_assert_eq(sscanf(r.head, "HTTP/1.1 %d ", &r.status), 1, "bad status line: %s", r.head);
    r.body_len = total - head;
    r.body = malloc(r.body_len + 1);
    memcpy(r.body, c->in + head, r.body_len);
    r.body[r.body_len] = '\0';
    memmove(c->in, c->in + total, c->in_len - total);
    c->in_len -= total;
    return r;
}

static void resp_free(resp *r) { free(r->body); }

static bool has_header(const resp *r, const char *line)
{
    return strstr(r->head, line) != NULL;
}

static const char *NEXT = "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n";

static void post(client *c, const char *path, const char *extra, const void *body, size_t n)
{
    char h[1024];
    snprintf(h, sizeof h, "POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %zu\r\n\r\n", path, extra, n);
    cli_sends(c, h);
    cli_send(c, body, n);
}

static void offer(const char *id, const char *body)
{
    rtapi_header hs[] = { { "Herald-Topic", "orders" }, { "Herald-Attempt", "1" } };
    rtapi_event ev = { .request_id = id, .deadline_ms = 1700000000123, .function_arn = "arn:aws:lambda:us-east-1:000000000000:function:f",
                       .trace_id = "Root=1-abc", .headers = hs, .nheaders = 2, .body = body, .body_len = strlen(body) };
    cr_assert_eq(rtapi_offer(api, &ev), 0);
}

/* A runtime that took event id on c: GET next, event offered, 200 read. */
static void start_event(client *c, const char *id, const char *body)
{
    cli_sends(c, NEXT);
    int w = S.waiting;
    WAIT(S.waiting == w + 1);
    offer(id, body);
    resp r = take(c);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, body);
    resp_free(&r);
}

TestSuite(rtapi, .init = setup, .fini = teardown, .timeout = 30);

Test(rtapi, next_held_then_offered)
{
    client *c = cli_new();
    cli_sends(c, NEXT);
    WAIT(S.waiting == 1);
    cr_assert_eq(S.started, 0);
    cr_assert_not(rtapi_busy(api));
    offer("req-1", "{\"a\":1}");
    cr_assert_eq(S.started, 1, "started is called before rtapi_offer returns");
    cr_assert_str_eq(S.id, "req-1");
    cr_assert(rtapi_busy(api));
    resp r = take(c);
    cr_assert_eq(r.status, 200);
    cr_assert(has_header(&r, "\r\nLambda-Runtime-Aws-Request-Id: req-1\r\n"), "%s", r.head);
    cr_assert(has_header(&r, "\r\nLambda-Runtime-Deadline-Ms: 1700000000123\r\n"));
    cr_assert(has_header(&r, "\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:000000000000:function:f\r\n"));
    cr_assert(has_header(&r, "\r\nLambda-Runtime-Trace-Id: Root=1-abc\r\n"));
    cr_assert(has_header(&r, "\r\nHerald-Topic: orders\r\n"));
    cr_assert(has_header(&r, "\r\nHerald-Attempt: 1\r\n"));
    cr_assert(has_header(&r, "\r\nContent-Type: application/json\r\n"));
    cr_assert_str_eq(r.body, "{\"a\":1}");
    resp_free(&r);
}

Test(rtapi, offered_then_next)
{
    offer("req-2", "payload");
    cr_assert_eq(S.started, 0);
    cr_assert_eq(rtapi_offer(api, &(rtapi_event){ .request_id = "other" }), -1, "one event at a time");
    client *c = cli_new();
    cli_sends(c, NEXT);
    resp r = take(c);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "payload");
    cr_assert_eq(S.started, 1);
    cr_assert_eq(S.waiting, 0, "an event was waiting: the runtime is not idle");
    resp_free(&r);
}

Test(rtapi, offer_refuses_bad_events)
{
    rtapi_header bad[] = { { "X-Evil", "a\r\nInjected: 1" } };
    cr_assert_eq(rtapi_offer(api, &(rtapi_event){ .request_id = "id", .headers = bad, .nheaders = 1 }), -1);
    cr_assert_eq(rtapi_offer(api, &(rtapi_event){ .request_id = "a/b" }), -1);
    cr_assert_eq(rtapi_offer(api, &(rtapi_event){ .request_id = "" }), -1);
    cr_assert_not(rtapi_busy(api));
}

Test(rtapi, response_202_and_exact_body)
{
    client *c = cli_new();
    start_event(c, "req-3", "{}");
    const char body[] = "out\0put\r\n";
    post(c, "/2018-06-01/runtime/invocation/req-3/response", "", body, sizeof body - 1);
    resp r = take(c);
    cr_assert_eq(r.status, 202);
    cr_assert_str_eq(r.body, "{\"status\":\"OK\"}\n");
    cr_assert(has_header(&r, "Content-Type: application/json"));
    cr_assert_eq(S.responses, 1);
    cr_assert_str_eq(S.id, "req-3");
    cr_assert_eq(S.body_len, sizeof body - 1);
    cr_assert_eq(memcmp(S.body, body, sizeof body - 1), 0);
    cr_assert_not(rtapi_busy(api));
    resp_free(&r);
}

Test(rtapi, second_response_is_403_invalid_state_transition)
{
    client *c = cli_new();
    start_event(c, "req-4", "{}");
    post(c, "/2018-06-01/runtime/invocation/req-4/response", "", "1", 1);
    resp r = take(c);
    cr_assert_eq(r.status, 202);
    resp_free(&r);
    post(c, "/2018-06-01/runtime/invocation/req-4/response", "", "2", 1);
    r = take(c);
    cr_assert_eq(r.status, 403);
    cr_assert_str_eq(r.body, "{\"errorMessage\":\"State transition from RuntimeResponseSentState to "
                     "InvocationResponse failed for runtime. Error: State transition is not allowed\","
                     "\"errorType\":\"InvalidStateTransition\"}\n");
    resp_free(&r);
    post(c, "/2018-06-01/runtime/invocation/req-4/error", "", "e", 1);
    r = take(c);
    cr_assert_eq(r.status, 403);
    resp_free(&r);
    cr_assert_eq(S.responses, 1);
    cr_assert_eq(S.errors, 0);
}

Test(rtapi, wrong_id_is_400_invalid_request_id)
{
    client *c = cli_new();
    post(c, "/2018-06-01/runtime/invocation/nobody/response", "", "x", 1);
    resp r = take(c);
    cr_assert_eq(r.status, 400, "no event ever started");
    resp_free(&r);
    start_event(c, "req-5", "{}");
    post(c, "/2018-06-01/runtime/invocation/req-6/response", "", "x", 1);
    r = take(c);
    cr_assert_eq(r.status, 400);
    cr_assert_str_eq(r.body, "{\"errorMessage\":\"Invalid request ID\",\"errorType\":\"InvalidRequestID\"}\n");
    resp_free(&r);
    cr_assert_eq(S.responses, 0);
    cr_assert(rtapi_busy(api), "the event still runs");
}

Test(rtapi, response_over_6mib_is_413_and_too_large)
{
    client *c = cli_new();
    start_event(c, "req-7", "{}");
    size_t n = RTAPI_BODY_MAX + 1;
    char *big = malloc(n);
    memset(big, 'x', n);
    post(c, "/2018-06-01/runtime/invocation/req-7/response", "", big, n);
    free(big);
    resp r = take(c);
    cr_assert_eq(r.status, 413);
    cr_assert_str_eq(r.body, "{\"errorMessage\":\"Exceeded maximum allowed payload size (6291456 bytes).\","
                     "\"errorType\":\"RequestEntityTooLarge\"}\n");
    cr_assert(has_header(&r, "Connection: close"));
    resp_free(&r);
    cr_assert_eq(S.too_large, 1);
    cr_assert_eq(S.size, RTAPI_BODY_MAX + 1);
    cr_assert_str_eq(S.id, "req-7");
    cr_assert_eq(S.responses, 0);
    cr_assert_not(rtapi_busy(api), "the event is over");
    /* the whole body is read and dropped, then the server closes its end */
    shutdown(c->fd, SHUT_WR);
    WAIT(c->eof);
}

Test(rtapi, response_of_exactly_6mib_chunked_is_accepted)
{
    client *c = cli_new();
    start_event(c, "req-8", "{}");
    cli_sends(c, "POST /2018-06-01/runtime/invocation/req-8/response HTTP/1.1\r\nHost: x\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n");
    size_t chunk = 1 << 20;
    char *data = malloc(chunk);
    memset(data, 'y', chunk);
    for (int i = 0; i < 6; i++) {
        cli_sends(c, "100000;ext=1\r\n");
        cli_send(c, data, chunk);
        cli_sends(c, "\r\n");
    }
    cli_sends(c, "0\r\nTrailer-Field: v\r\n\r\n");
    free(data);
    resp r = take(c);
    cr_assert_eq(r.status, 202);
    resp_free(&r);
    cr_assert_eq(S.responses, 1);
    cr_assert_eq(S.body_len, RTAPI_BODY_MAX);
    cr_assert_eq(S.body[0], 'y');
    cr_assert_eq(S.body[RTAPI_BODY_MAX - 1], 'y');
}

Test(rtapi, chunked_response_in_small_chunks)
{
    client *c = cli_new();
    start_event(c, "req-9", "{}");
    cli_sends(c, "POST /2018-06-01/runtime/invocation/req-9/response HTTP/1.1\r\nHost: x\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n");
    resp r = take(c);
    cr_assert_eq(r.status, 202);
    resp_free(&r);
    cr_assert_eq(S.responses, 1);
    cr_assert_str_eq(S.body, "hello 0123456789");
}

Test(rtapi, error_with_error_type_header)
{
    client *c = cli_new();
    start_event(c, "req-10", "{}");
    const char *b = "{\"errorMessage\":\"boom\",\"errorType\":\"ValueError\"}";
    post(c, "/2018-06-01/runtime/invocation/req-10/error", "Lambda-Runtime-Function-Error-Type: Unhandled  \r\n",
         b, strlen(b));
    resp r = take(c);
    cr_assert_eq(r.status, 202);
    cr_assert_str_eq(r.body, "{\"status\":\"OK\"}\n");
    resp_free(&r);
    cr_assert_eq(S.errors, 1);
    cr_assert_str_eq(S.id, "req-10");
    cr_assert_str_eq(S.type, "Unhandled");
    cr_assert_str_eq(S.body, b);
    cr_assert_not(rtapi_busy(api));
}

Test(rtapi, error_without_type_header)
{
    client *c = cli_new();
    start_event(c, "req-11", "{}");
    post(c, "/2018-06-01/runtime/invocation/req-11/error", "", "", 0);
    resp r = take(c);
    cr_assert_eq(r.status, 202);
    resp_free(&r);
    cr_assert_str_eq(S.type, "(null)");
    cr_assert_eq(S.body_len, 0);
}

Test(rtapi, init_error_then_next_is_403)
{
    client *c = cli_new();
    post(c, "/2018-06-01/runtime/init/error", "Lambda-Runtime-Function-Error-Type: Runtime.ImportModuleError\r\n",
         "{\"errorMessage\":\"no module\"}", 28);
    resp r = take(c);
    cr_assert_eq(r.status, 202);
    resp_free(&r);
    cr_assert_eq(S.init_errors, 1);
    cr_assert_str_eq(S.type, "Runtime.ImportModuleError");
    cr_assert_str_eq(S.body, "{\"errorMessage\":\"no module\"}");
    cli_sends(c, NEXT);
    r = take(c);
    cr_assert_eq(r.status, 403);
    cr_assert(strstr(r.body, "State transition from InitError to Ready failed"), "%s", r.body);
    resp_free(&r);
    cr_assert_eq(S.waiting, 0);
}

Test(rtapi, init_error_after_next_is_403)
{
    client *c = cli_new();
    start_event(c, "req-12", "{}");
    post(c, "/2018-06-01/runtime/init/error", "", "x", 1);
    resp r = take(c);
    cr_assert_eq(r.status, 403);
    cr_assert(strstr(r.body, "State transition from Running to InitError failed"), "%s", r.body);
    resp_free(&r);
    cr_assert_eq(S.init_errors, 0);
}

Test(rtapi, malformed_is_400_closed_and_the_server_lives_on)
{
    client *c = cli_new();
    cli_sends(c, "GET /2018-06-01/runtime/invocation/next HTTP/1.1\nHost: x\n\n");
    resp r = take(c);
    cr_assert_eq(r.status, 400);
    cr_assert_str_eq(r.body, "400 Bad Request");
    cr_assert(has_header(&r, "Connection: close"));
    resp_free(&r);
    WAIT(c->eof);
    client *d = cli_new();
    cli_sends(d, "GET /x HTTP/1.1\r\nHost: x\r\n Folded: y\r\n\r\n");
    r = take(d);
    cr_assert_eq(r.status, 400);
    resp_free(&r);
    client *e = cli_new();
    cli_sends(e, "GET / HTTP/2.0\r\nHost: x\r\n\r\n");
    r = take(e);
    cr_assert_eq(r.status, 505);
    resp_free(&r);
    client *f = cli_new();
    start_event(f, "req-13", "{}");
    cr_assert_eq(S.started, 1);
}

Test(rtapi, unknown_path_404_wrong_method_405)
{
    client *c = cli_new();
    cli_sends(c, "GET /2018-06-01/runtime/nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    resp r = take(c);
    cr_assert_eq(r.status, 404);
    cr_assert_str_eq(r.body, "404 page not found\n");
    resp_free(&r);
    cli_sends(c, "POST /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    r = take(c);
    cr_assert_eq(r.status, 405);
    cr_assert(has_header(&r, "Allow: GET"));
    resp_free(&r);
    cli_sends(c, "GET /2018-06-01/runtime/invocation/abc/response HTTP/1.1\r\nHost: x\r\n\r\n");
    r = take(c);
    cr_assert_eq(r.status, 405);
    cr_assert(has_header(&r, "Allow: POST"));
    resp_free(&r);
    cr_assert_eq(S.waiting + S.responses + S.errors + S.init_errors, 0);
}

Test(rtapi, keep_alive_runs_events_on_one_connection)
{
    client *c = cli_new();
    for (int i = 0; i < 5; i++) {
        char id[32], path[96];
        snprintf(id, sizeof id, "k-%d", i);
        start_event(c, id, "{\"n\":1}");
        snprintf(path, sizeof path, "/2018-06-01/runtime/invocation/%s/response", id);
        post(c, path, "", id, strlen(id));
        resp r = take(c);
        cr_assert_eq(r.status, 202);
        resp_free(&r);
        cr_assert_str_eq(S.body, id);
    }
    cr_assert_eq(S.allow_calls, 1, "one connection");
    cr_assert_eq(S.responses, 5);
}

Test(rtapi, pipelined_requests_in_one_write)
{
    client *c = cli_new();
    start_event(c, "p-1", "{}");
    cli_sends(c, "POST /2018-06-01/runtime/invocation/p-1/response HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"
                 "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                 "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n");
    resp r = take(c);
    cr_assert_eq(r.status, 202);
    resp_free(&r);
    r = take(c);
    cr_assert_eq(r.status, 404);
    resp_free(&r);
    WAIT(S.waiting == 2);
    offer("p-2", "second");
    r = take(c);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "second");
    resp_free(&r);
}

Test(rtapi, expect_100_continue)
{
    client *c = cli_new();
    start_event(c, "e-1", "{}");
    cli_sends(c, "POST /2018-06-01/runtime/invocation/e-1/response HTTP/1.1\r\nHost: x\r\n"
                 "Expect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    WAIT(c->in_len >= 25);
    cr_assert_eq(memcmp(c->in, "HTTP/1.1 100 Continue\r\n\r\n", 25), 0);
    memmove(c->in, c->in + 25, c->in_len - 25);
    c->in_len -= 25;
    cli_sends(c, "abc");
    resp r = take(c);
    cr_assert_eq(r.status, 202);
    resp_free(&r);
    cr_assert_str_eq(S.body, "abc");
}

Test(rtapi, http10_closes_after_the_answer)
{
    client *c = cli_new();
    cli_sends(c, "GET /2018-06-01/runtime/nothing HTTP/1.0\r\n\r\n");
    resp r = take(c);
    cr_assert_eq(r.status, 404);
    cr_assert(has_header(&r, "Connection: close"));
    resp_free(&r);
    WAIT(c->eof);
}

Test(rtapi, allow_false_closes)
{
    S.refuse = true;
    client *c = cli_new();
    cli_sends(c, NEXT);
    WAIT(c->eof);
    cr_assert_eq(S.allow_calls, 1);
    cr_assert_eq(c->in_len, 0);
    cr_assert_eq(S.waiting, 0);
}

Test(rtapi, held_next_dropped_by_its_client_keeps_the_event)
{
    client *c = cli_new();
    cli_sends(c, NEXT);
    WAIT(S.waiting == 1);
    close(c->fd);
    c->fd = -1;
    /* the server sees the hang-up: nothing to wait on but a pump or two */
    for (int i = 0; i < 3; i++) pump();
    offer("h-1", "ev");
    cr_assert_eq(S.started, 0, "no live GET next");
    client *d = cli_new();
    cli_sends(d, NEXT);
    resp r = take(d);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "ev");
    resp_free(&r);
}

Test(rtapi, drop_held_and_reset)
{
    client *c = cli_new();
    cli_sends(c, NEXT);
    WAIT(S.waiting == 1);
    rtapi_drop_held(api);
    WAIT(c->eof);
    client *d = cli_new();
    start_event(d, "r-1", "{}");
    rtapi_reset(api);
    cr_assert_not(rtapi_busy(api));
    WAIT(d->eof);
    client *e = cli_new();
    post(e, "/2018-06-01/runtime/invocation/r-1/response", "", "x", 1);
    resp r = take(e);
    cr_assert_eq(r.status, 400, "after a reset no id is current");
    resp_free(&r);
}

Test(rtapi, connections_past_the_cap_are_closed)
{
    client *c[RTAPI_CONNS_MAX + 1];
    for (int i = 0; i < RTAPI_CONNS_MAX; i++) {
        c[i] = cli_new();
        cli_sends(c[i], "GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
        resp r = take(c[i]);
        cr_assert_eq(r.status, 404);
        resp_free(&r);
    }
    c[RTAPI_CONNS_MAX] = cli_new();
    WAIT(c[RTAPI_CONNS_MAX]->eof);
    cr_assert_eq(S.allow_calls, RTAPI_CONNS_MAX);
}

/* --- the parser alone ---------------------------------------------------------- */

static int parse_status(const char *text, size_t cap)
{
    static http_req r;
    http_req_init(&r, cap);
    char *buf = strdup(text);
    http_result res = http_parse(&r, buf, strlen(buf));
    free(buf);
    return res == HTTP_ERROR ? r.status : res == HTTP_DONE ? 0 : -1;
}

Test(http, error_statuses)
{
    cr_assert_eq(parse_status("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 10), 0);
    cr_assert_eq(parse_status("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 10), 0, "empty lines first");
    cr_assert_eq(parse_status("GET / HTTP/1.1\nHost: x\r\n\r\n", 10), 400, "bare LF");
    cr_assert_eq(parse_status("GET / HTTP/1.1\r\nHost: x\rY\r\n\r\n", 10), 400, "bare CR");
    cr_assert_eq(parse_status("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 10), 400, "obs-fold");
    cr_assert_eq(parse_status("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 10), 400, "space before colon");
    cr_assert_eq(parse_status("GET / HTTP/1.1\r\nHost: x\x01\r\n\r\n", 10), 400, "control byte");
    cr_assert_eq(parse_status("GET / HTTP/1.1\r\n\r\n", 10), 400, "no Host");
    cr_assert_eq(parse_status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 10), 400, "two Hosts");
    cr_assert_eq(parse_status("GET / HTTP/1.0\r\n\r\n", 10), 0, "HTTP/1.0 needs no Host");
    cr_assert_eq(parse_status("GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 10), 400, "absolute-form");
    cr_assert_eq(parse_status("GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 10), 400);
    cr_assert_eq(parse_status("GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 10), 400);
    cr_assert_eq(parse_status("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 10), 505);
    cr_assert_eq(parse_status("GET / HTTP/1.2\r\nHost: x\r\n\r\n", 10), 505);
    cr_assert_eq(parse_status("GET / HTTQ/1.1\r\nHost: x\r\n\r\n", 10), 400);
    cr_assert_eq(parse_status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 10), 400);
    cr_assert_eq(parse_status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\nx", 10), 400);
    cr_assert_eq(parse_status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\nx", 10), 400);
    cr_assert_eq(parse_status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n", 10), 413);
    cr_assert_eq(parse_status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999999\r\n\r\n", 10), 413);
    cr_assert_eq(parse_status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789", 10), 0);
    cr_assert_eq(parse_status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n", 10), 400);
    cr_assert_eq(parse_status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 10), 501);
    cr_assert_eq(parse_status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 10), 501);
    cr_assert_eq(parse_status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 10), 400);
    cr_assert_eq(parse_status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nB\r\n", 10), 413);
    cr_assert_eq(parse_status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n6\r\n", 10), 413);
    cr_assert_eq(parse_status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZ\r\n", 10), 400);
    cr_assert_eq(parse_status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", 10), 400);
    cr_assert_eq(parse_status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", 10), 0);
    cr_assert_eq(parse_status("GET / HTTP/1.1\r\nHost: x\r\n", 10), -1, "need more");

    char *big = malloc(HTTP_HEAD_MAX + 64);
    strcpy(big, "GET / HTTP/1.1\r\nHost: x\r\nX: ");
    size_t n = strlen(big);
    memset(big + n, 'a', HTTP_HEAD_MAX);
    big[n + HTTP_HEAD_MAX] = '\0';
    cr_assert_eq(parse_status(big, 10), 431, "head over 16 KiB");
    free(big);
    char many[4096] = "GET / HTTP/1.1\r\nHost: x\r\n";
    for (int i = 0; i < HTTP_HEADERS_MAX; i++) strcat(many, "A: b\r\n");
    strcat(many, "\r\n");
    cr_assert_eq(parse_status(many, 10), 431, "101 fields");
}

Test(http, fields_keep_alive_and_pipelining)
{
    http_req r;
    char buf[] = "POST /a/b?q=1 HTTP/1.1\r\nHost: x\r\nX-One:  v 1 \t\r\nConnection: close\r\n"
                 "Content-Length: 3\r\n\r\nabcGET /next HTTP/1.1\r\n";
    http_req_init(&r, 100);
    cr_assert_eq(http_parse(&r, buf, strlen(buf)), HTTP_DONE);
    size_t n;
    const char *m = http_method(&r, &n);
    cr_assert_eq(n, 4);
    cr_assert_eq(memcmp(m, "POST", 4), 0);
    const char *p = http_path(&r, &n);
    cr_assert_eq(n, 4);
    cr_assert_eq(memcmp(p, "/a/b", 4), 0);
    const char *v = http_field_get(&r, "x-one", &n);
    cr_assert_eq(n, 3);
    cr_assert_eq(memcmp(v, "v 1", 3), 0);
    cr_assert_not(r.keep_alive);
    cr_assert_eq(r.body_len, 3);
    cr_assert_eq(memcmp(http_body(&r), "abc", 3), 0);
    cr_assert_eq(r.consumed, strlen(buf) - strlen("GET /next HTTP/1.1\r\n"));
    cr_assert_str_eq(http_field_str(&r, "X-One"), "v 1");

    char b10[] = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    http_req_init(&r, 100);
    cr_assert_eq(http_parse(&r, b10, strlen(b10)), HTTP_DONE);
    cr_assert(r.keep_alive);
    char b11[] = "GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n";
    http_req_init(&r, 100);
    cr_assert_eq(http_parse(&r, b11, strlen(b11)), HTTP_DONE);
    cr_assert(r.keep_alive);
    cr_assert(r.expect_continue);
}

Test(http, byte_by_byte_chunked_with_compaction)
{
    const char *text = "POST /r HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"
                       "3;a=b\r\nabc\r\n10 \r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\nNEXT";
    size_t total = strlen(text);
    char buf[512];
    size_t len = 0;
    http_req r;
    http_req_init(&r, 100);
    http_result res = HTTP_NEED_MORE;
    size_t fed = 0;
    while (res == HTTP_NEED_MORE && fed < total) {
        buf[len++] = text[fed++];
        res = http_parse(&r, buf, len);
        if (res == HTTP_NEED_MORE) len = http_compact(&r, buf, len);
    }
    cr_assert_eq(res, HTTP_DONE, "status %d %s", r.status, r.why ? r.why : "");
    cr_assert_eq(fed, total - 4, "done before the next request's bytes");
    cr_assert_eq(r.body_len, 19);
    cr_assert_eq(memcmp(http_body(&r), "abc0123456789abcdef", 19), 0);
    cr_assert_eq(r.consumed, len);
}

Test(http, respond_writes_a_whole_response)
{
    http_buf b = { 0 };
    cr_assert_eq(http_respond(&b, 202, "X-A: 1\r\n", "application/json", "{}", 2, true), 0);
    const char *want = "HTTP/1.1 202 Accepted\r\nX-A: 1\r\nContent-Type: application/json\r\n"
                       "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
    cr_assert_eq(http_buf_pending(&b), strlen(want));
    cr_assert_eq(memcmp(b.data + b.off, want, strlen(want)), 0);
    http_buf_consume(&b, 5);
    cr_assert_eq(http_buf_pending(&b), strlen(want) - 5);
    http_buf_free(&b);
    cr_assert(http_token_ok("Herald-Topic"));
    cr_assert_not(http_token_ok("Bad Name"));
    cr_assert(http_value_ok("a b\tc\x80"));
    cr_assert_not(http_value_ok("a\r\nb"));
}

/* --- peer_in_tree ---------------------------------------------------------------- */

static int listener(int *port)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    cr_assert_eq(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(l, 8), 0);
    getsockname(l, (struct sockaddr *)&a, &al);
    *port = ntohs(a.sin_port);
    return l;
}

static int dial(int port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) _exit(3);
    return s;
}

/* A child that connects (through a grandchild when deep) and then waits for
 * the pipe to close. Its pid; the grandchild's in *holder. */
static pid_t connecting_child(int port, bool deep, int *hold_w)
{
    int p[2], ready[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(ready, O_CLOEXEC), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(p[1]);
        close(ready[0]);
        if (deep && fork() != 0) {  /* the child waits; its child connects */
            char x;
            while (read(p[0], &x, 1) > 0) {}
            _exit(0);
        }
        int s = dial(port);
        (void)s;
        if (write(ready[1], "r", 1) != 1) _exit(4);
        char x;
        while (read(p[0], &x, 1) > 0) {}
        _exit(0);
    }
    close(p[0]);
    close(ready[1]);
    char x;
    cr_assert_eq(read(ready[0], &x, 1), 1, "the connecting process failed");
    close(ready[0]);
    *hold_w = p[1];
    return pid;
}

static void end_child(pid_t pid, int hold_w)
{
    close(hold_w);      /* both the child and any grandchild see EOF and exit */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

Test(peer, forked_child_is_in_its_own_tree, .timeout = 30)
{
    int port, l = listener(&port), hold;
    pid_t child = connecting_child(port, false, &hold);
    int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    cr_assert_geq(fd, 0);
    cr_assert(peer_in_tree(fd, child));
    cr_assert(peer_in_tree(fd, getpid()), "a child is a descendant of the test process");
    int hold2;
    pid_t other = connecting_child(port, false, &hold2);
    int fd2 = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    cr_assert_not(peer_in_tree(fd, other), "a sibling is not in the tree");
    cr_assert(peer_in_tree(fd2, other));
    cr_assert_not(peer_in_tree(fd2, child));
    close(fd);
    close(fd2);
    end_child(child, hold);
    end_child(other, hold2);
    close(l);
}

Test(peer, grandchild_is_in_the_tree, .timeout = 30)
{
    int port, l = listener(&port), hold;
    pid_t child = connecting_child(port, true, &hold);
    int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    cr_assert(peer_in_tree(fd, child));
    close(fd);
    end_child(child, hold);
    close(l);
}

Test(peer, the_test_process_is_not_in_a_childs_tree, .timeout = 30)
{
    int port, l = listener(&port), hold;
    pid_t child = connecting_child(port, false, &hold);
    int fdc = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    int s = dial(port);
    int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    cr_assert_geq(fd, 0);
    cr_assert_not(peer_in_tree(fd, child));
    cr_assert(peer_in_tree(fd, getpid()));
    cr_assert_not(peer_in_tree(fd, 0));
    close(s);
    close(fd);
    close(fdc);
    end_child(child, hold);
    close(l);
}
