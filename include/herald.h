/* libherald: the C client of a herald broker (publish, invoke).
 *
 * Link with `pkg-config --cflags --libs herald`. A client is not thread-safe:
 * use one per thread. Confirm callbacks run in the calling thread, inside
 * herald_publish_async, herald_flush and herald_close.
 *
 * Every int function returns 0 or a negative HERALD_E… status; herald_strerror
 * names it and herald_last_error gives the broker's own words when it sent any.
 */
#ifndef HERALD_H
#define HERALD_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct herald_client herald_client;           /* opaque */
typedef struct { const char *key, *value; } herald_attr;

typedef struct {
    const char *endpoint;          /* NULL: $HERALD_BROKER, else tcp://127.0.0.1:7710 */
    int timeout_ms;                /* confirm timeout; 0: 10000 */
    int window;                    /* async publishes in flight; 0: 1000 (a new one also waits
                                      while 64 MiB of payload or more is in flight) */
    const char *key_file, *broker_key_file;   /* CURVE; NULL: plaintext */
    const char *producer_id;       /* NULL: a random one per client. Else [0-9A-Za-z_]{1,40}, kept
                                      across restarts by an app that numbers its own publishes
                                      (herald_publish_opts.seq), so that a re-send after its own
                                      crash is answered "already stored" (DESIGN §5) */
} herald_options;

typedef struct {
    const herald_attr *attrs; size_t nattrs;   /* at most 16 */
    const char *dedup_id;          /* NULL: none (retries are covered by the producer sequence) */
    double delay;                  /* seconds, 0 – 900 */
    unsigned long long seq;        /* 0: the client's next sequence. Else this publish's producer
                                      sequence: needs options.producer_id and must be above every
                                      sequence this client used; gaps are allowed. The broker
                                      answers a seq at or below its high-water mark for the
                                      producer as already stored (with that seq's message id) */
} herald_publish_opts;

#define HERALD_ID_MAX 64
/* herald's version: what every program prints for --version, and lib/herald.pc's. */
#define HERALD_VERSION "0.1"

enum {
    HERALD_E_UNREACHABLE = -1,     /* no answer from the broker within timeout_ms */
    HERALD_E_TIMEOUT     = -2,     /* connected, but the confirm/answer did not come in time */
    HERALD_E_INVALID     = -3,     /* bad argument: name, attribute, delay, … */
    HERALD_E_TOO_LARGE   = -4,     /* payload above the broker's max_payload */
    HERALD_E_UNKNOWN     = -5,     /* unknown topic or function */
    HERALD_E_THROTTLED   = -6,     /* broker backlog or disk alarm: try later */
    HERALD_E_REFUSED     = -7,     /* the broker refused the request (see herald_last_error) */
    HERALD_E_HANDLER     = -8,     /* invoke: the handler failed (see herald_last_error) */
    HERALD_E_NO_WORKER   = -9,     /* invoke: no connected worker serves the function */
    HERALD_E_NOMEM       = -10,
    HERALD_E_INTERNAL    = -11,    /* broker-side failure (storage); nothing was stored */
    HERALD_E_BUSY        = -12,    /* invoke: no worker slot became free in time; nothing ran */
};

/* message_id: the broker's id when status is 0, else "" (never NULL). */
typedef void herald_confirm_fn(void *arg, int status, const char *message_id);

herald_client *herald_connect(const herald_options *opts);   /* NULL opts: defaults */
void herald_close(herald_client **c);                        /* flushes, then frees; nulls *c */
int  herald_publish(herald_client *c, const char *topic, const void *payload, size_t len,
                    const herald_publish_opts *opts, char message_id[HERALD_ID_MAX]);
int  herald_publish_async(herald_client *c, const char *topic, const void *payload, size_t len,
                          const herald_publish_opts *opts, herald_confirm_fn *cb, void *arg);
int  herald_flush(herald_client *c, int timeout_ms);         /* every pending confirm in; <= 0: timeout_ms of c */
/* Drops the connection and opens a fresh one; every unconfirmed publish goes
 * again with its own seq (the broker answers those it stored as already
 * stored). For a long-lived producer that heard nothing for too long. */
int  herald_reconnect(herald_client *c);
int  herald_invoke(herald_client *c, const char *function, const void *payload, size_t len,
                   int timeout_ms, void **output, size_t *output_len);   /* caller frees output */
int  herald_invoke_async(herald_client *c, const char *function, const void *payload, size_t len,
                         char message_id[HERALD_ID_MAX]);
const char *herald_strerror(int status);                     /* status: 0 or a negative HERALD_E… */
const char *herald_last_error(const herald_client *c);       /* the broker's words, if any; "" if none */
/* herald_last_error(NULL): why the calling thread's latest herald_connect
 * returned NULL (bad endpoint, unreadable or invalid key files). */

#ifdef __cplusplus
}
#endif
#endif
