/* rtapi: the AWS Lambda Runtime API (2018-06-01) of one runtime process,
 * served over HTTP/1.1 on 127.0.0.1 (DESIGN §11).
 *
 * The supervisor of a runtime process makes one rtapi_t, puts
 * "127.0.0.1:<rtapi_port()>" in AWS_LAMBDA_RUNTIME_API, polls rtapi_fd() with
 * its other descriptors and calls rtapi_dispatch() when it is readable. It
 * hands events in one at a time with rtapi_offer(); what the runtime does with
 * them comes back through the callbacks, each called at most once per event.
 * Single-threaded; nothing here blocks, and a slow reader only fills its own
 * connection's output buffer.
 *
 * Protocol state (AWS's names, used in its 403 messages):
 *   Started --GET next--> Ready (held) --offer--> Running
 *   Running --response/error--> RuntimeResponseSentState --GET next--> Ready/Running
 *   Started --init/error--> InitError (every GET next then answers 403)
 * The "current" request id is the last one handed out by GET next.
 */
#ifndef HERALD_RTAPI_H
#define HERALD_RTAPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rtapi rtapi_t;

#define RTAPI_BODY_MAX (6u << 20)   /* request bodies: a /response past it is a 413 (= PROTO_OUTPUT_MAX) */
#define RTAPI_ID_MAX 128            /* request id bytes */
#define RTAPI_CONNS_MAX 16          /* open connections; more are closed when accepted */

typedef struct {
    const char *name;           /* an HTTP token */
    const char *value;          /* printable bytes (no CR, LF or other control) */
} rtapi_header;

/* One event. rtapi_offer copies all of it. */
typedef struct {
    const char *request_id;     /* Lambda-Runtime-Aws-Request-Id: [A-Za-z0-9._~-], 1..RTAPI_ID_MAX */
    int64_t deadline_ms;        /* Lambda-Runtime-Deadline-Ms: Unix ms */
    const char *function_arn;   /* Lambda-Runtime-Invoked-Function-Arn */
    const char *trace_id;       /* Lambda-Runtime-Trace-Id; NULL or "": not sent */
    const rtapi_header *headers; /* more headers (Herald-Topic, ...) */
    size_t nheaders;
    const void *body;           /* the GET next response body */
    size_t body_len;
} rtapi_event;

/* Called from rtapi_dispatch (started also from rtapi_offer). Strings and
 * bodies are borrowed for the call. A callback may call rtapi_offer,
 * rtapi_drop_held and rtapi_reset, never rtapi_destroy. Any may be NULL
 * (allow NULL admits every connection: tests only). */
typedef struct {
    /* Every accepted connection: false closes it at once (the supervisor checks
     * that the peer is one of the runtime's processes: peer_in_tree). */
    bool (*allow)(void *arg, int conn_fd);
    /* GET next handed out the current event. */
    void (*started)(void *arg, const char *request_id);
    /* The first valid /response of the running event (answered 202); the event is over. */
    void (*response)(void *arg, const char *request_id, const void *body, size_t len);
    /* A /response of the running event with a body over RTAPI_BODY_MAX
     * (answered 413 with AWS's body); the event is over. size: the declared
     * Content-Length, or for a chunked body the bytes seen when it passed the cap. */
    void (*too_large)(void *arg, const char *request_id, uint64_t size);
    /* /error of the running event (answered 202); error_type: the
     * Lambda-Runtime-Function-Error-Type header or NULL. The event is over. */
    void (*error)(void *arg, const char *request_id, const char *error_type,
                  const void *body, size_t len);
    /* /runtime/init/error before any GET next (answered 202). */
    void (*init_error)(void *arg, const char *error_type, const void *body, size_t len);
    /* A GET next arrived and no event waits: the runtime is initialised and idle. */
    void (*next_waiting)(void *arg);
} rtapi_callbacks;

/* Listens on 127.0.0.1, a port the kernel picks. cb is copied. NULL on
 * failure (logged). */
rtapi_t *rtapi_new(const rtapi_callbacks *cb, void *arg);

/* Closes every connection and the listener; frees *api and sets it NULL. */
void rtapi_destroy(rtapi_t **api);

/* The listening port (host order). */
int rtapi_port(const rtapi_t *api);

/* An epoll descriptor: readable when rtapi_dispatch has work. */
int rtapi_fd(const rtapi_t *api);

/* Accepts, reads, answers, writes what is ready; never blocks. */
void rtapi_dispatch(rtapi_t *api);

/* Hands one event to the runtime: at once to a held GET next (calling started
 * before it returns), else when the next GET next comes. 0, or -1 when an
 * event is already offered and unfinished (EBUSY), the event is invalid
 * (EINVAL: id, header names or values), or memory runs out. */
int rtapi_offer(rtapi_t *api, const rtapi_event *ev);

/* True while an event is offered and not finished. */
bool rtapi_busy(const rtapi_t *api);

/* Closes the connections holding a GET next (shutdown). */
void rtapi_drop_held(rtapi_t *api);

/* Forgets the event (no callback) and closes every connection: back to Started,
 * for a new runtime process behind the same port. */
void rtapi_reset(rtapi_t *api);

#endif
