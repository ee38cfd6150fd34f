/* libherald's internal map: the client's state, then each file's functions.
 *
 * Read in this order:
 *   client.c   the public API of herald.h and the one wait loop (turn()) that
 *              every blocking call runs: send, expire, poll, dispatch
 *   outbox.c   the unconfirmed publishes: a ring indexed by producer sequence,
 *              which batch each was sent in, how many batches are in flight
 *   session.c  the DEALER socket and its monitor: HELLO, sending batches,
 *              WELCOME/CONFIRM/ERROR in, CURVE keys, a fresh socket after a
 *              disconnect (and then every unconfirmed publish again)
 *   check.c    local validation (names, attributes, delay, dedup id) and the
 *              proto_status → HERALD_E_… mapping
 *
 * Every non-static symbol starts with hc_: apps and the unit-test binary link
 * libherald.a next to other modules, so short names like queue_push collide.
 */
#ifndef HERALD_CLIENT_H
#define HERALD_CLIENT_H

#include "herald.h"
#include "../proto/proto.h"

#include <stdbool.h>
#include <stdint.h>

#define HC_DEFAULT_ENDPOINT "tcp://127.0.0.1:7710"   /* DESIGN §2 */
#define HC_DEFAULT_TIMEOUT_MS 10000
#define HC_DEFAULT_WINDOW 1000
/* The window is bounded in payload bytes too: a new publish waits while
 * this much or more is unconfirmed (so in flight stays below it plus one
 * max_payload). 1,000 publishes of 256 KiB would be 256 MiB copied here, and
 * as much queued in the broker's socket for this client while it lags. 64 MiB
 * kept the pace of 200 KiB publishes (`--lines`, fsync) and halved the
 * broker's peak RSS (255 → 127–165 MB); 32 MiB was slower. */
#define HC_WINDOW_BYTES ((size_t)64 << 20)
/* Entries per PUBLISH even when the broker allows more: with the default window
 * four batches are in flight, and a bigger one only delays its first confirm. */
#define HC_BATCH_MAX 256
/* Inbound frame cap: invoke outputs are up to 6 MiB (PROTO_OUTPUT_MAX), plus
 * headroom for the header frame (DESIGN §7). */
#define HC_MAX_MSG_SIZE ((int64_t)PROTO_OUTPUT_MAX + 65536)
/* ZMTP heartbeats, so a broker host that vanishes without a FIN still ends
 * the connection (and so triggers the re-send); libzmq answers them itself. */
#define HC_ZMTP_HEARTBEAT_MS 2000
#define HC_ZMTP_HEARTBEAT_TIMEOUT_MS 6000
#define HC_PRODUCER_LEN 20         /* [0-9A-Za-z]{20}: ~119 random bits */
/* A connect refused for this long (libzmq retries every 100 ms), with no
 * connect in between, is "connection refused" at once instead of after the
 * timeout: long enough that a burst of clients overflowing the listen backlog
 * of an ipc:// socket (a refusal too) gets in on a retry. */
#define HC_REFUSED_MS 1000
/* Handshakes dropped without a reason, in a row, before any WELCOME, that
 * make "CURVE on one side only": one alone is also a broker killed in the
 * middle of ours (libzmq retries every 100 ms, so three take about 0.3 s). */
#define HC_HANDSHAKE_DROPS 3
#define HC_ERROR_MAX 512

/* ---- outbox.c --------------------------------------------------------- */

typedef struct {
    uint64_t seq;                  /* producer sequence; 0: the slot is free */
    int64_t submitted_ms;          /* monotonic; given up on at + timeout_ms */
    uint64_t batch;                /* serial of the batch it was last sent in; 0: unsent */
    herald_confirm_fn *cb;         /* may be NULL */
    void *arg;
    proto_pub pub;                 /* strings and attrs point into mem */
    const void *payload;           /* into mem */
    size_t len;                    /* payload bytes */
    char *mem;                     /* one allocation owning everything above */
} hc_entry;

/* Sequences in [head, tail) have a slot (free once confirmed); [next_send,
 * tail) were not sent since the last (re)connect. tail - head <= cap, so the
 * entry of seq s lives at ring[s % cap]. */
typedef struct {
    hc_entry *ring;                /* cap slots */
    uint32_t cap;                  /* = the window */
    size_t bytes;                  /* payload bytes of the live entries */
    uint64_t head;                 /* oldest seq still holding a live slot (or = tail) */
    uint64_t tail;                 /* next seq to assign; starts at 1 */
    uint64_t next_send;            /* first seq not yet sent on this socket */
    uint32_t *batch_left;          /* unconfirmed entries of batch serial s at [s % bcap] */
    uint32_t bcap;                 /* cap + 1: in-flight batches span at most cap serials */
    uint64_t batch_serial;         /* last serial handed out */
    uint32_t batches_out;          /* batches with unconfirmed entries */
} hc_outbox;

/* What a finished entry leaves for its callback (state is updated first, so
 * a callback may publish again). */
typedef struct {
    herald_confirm_fn *cb;
    void *arg;
    uint64_t seq;
} hc_done;

int hc_outbox_init(hc_outbox *ob, uint32_t cap);       /* 0 or -1 (ENOMEM) */
void hc_outbox_free(hc_outbox *ob);                    /* drops entries, no callbacks */
static inline uint32_t hc_outbox_live(const hc_outbox *ob) { return (uint32_t)(ob->tail - ob->head); }
static inline uint32_t hc_outbox_unsent(const hc_outbox *ob) { return (uint32_t)(ob->tail - ob->next_send); }
static inline bool hc_outbox_full(const hc_outbox *ob)
{
    return hc_outbox_live(ob) >= ob->cap || ob->bytes >= HC_WINDOW_BYTES;
}
/* Copies everything; the new entry gets seq = tail. NULL: full or no memory. */
hc_entry *hc_outbox_push(hc_outbox *ob, const char *topic, const char *function,
                         const herald_attr *attrs, size_t nattrs, const char *dedup_id,
                         uint32_t delay_ms, const void *payload, size_t len,
                         herald_confirm_fn *cb, void *arg, int64_t now_ms);
hc_entry *hc_outbox_find(hc_outbox *ob, uint64_t seq);   /* NULL: not live */
hc_entry *hc_outbox_oldest(hc_outbox *ob);               /* NULL: empty */
/* The next push gets seq (> every seq pushed so far) instead of tail; the
 * seqs skipped are never used. false: seq is not above them, or live entries
 * would span more than cap seqs (wait until the outbox is empty). */
bool hc_outbox_skip_to(hc_outbox *ob, uint64_t seq);
/* Removes a live entry (frees its copy) and fills *d. false: seq not live. */
bool hc_outbox_take(hc_outbox *ob, uint64_t seq, hc_done *d);
/* Up to max unsent entries, in seq order, into out; marks nothing. */
uint32_t hc_outbox_collect(hc_outbox *ob, uint32_t max, hc_entry **out);
/* The n collected entries went out as one batch. */
void hc_outbox_mark_sent(hc_outbox *ob, hc_entry **es, uint32_t n);
/* Serial of the oldest batch still in flight; 0: none. */
uint64_t hc_outbox_oldest_batch(hc_outbox *ob);
/* New socket: nothing is in flight any more, every live entry is unsent. */
void hc_outbox_unsend_all(hc_outbox *ob);

/* ---- the client (client.c) -------------------------------------------- */

struct herald_client {
    char *endpoint;                /* owned */
    int timeout_ms;                /* confirm timeout, > 0 */
    char producer[PROTO_PRODUCER_MAX + 1];   /* random, or herald_options.producer_id */
    bool own_producer;             /* producer_id was given: explicit seqs are allowed */
    void *ctx;                     /* own zmq context: a client is one thread's */
    void *sock;                    /* DEALER to the publish endpoint */
    void *mon;                     /* PAIR reading sock's monitor events */
    unsigned generation;           /* sockets opened so far; names the monitor endpoint */
    bool handshaken;               /* the current socket completed a ZMTP handshake */
    bool welcomed;                 /* a WELCOME ever arrived: the limits below are real */
    bool hello_pending;            /* HELLO sent on this socket, no WELCOME since */
    uint64_t max_payload;          /* bytes, from WELCOME */
    uint32_t max_batch;            /* entries per PUBLISH, from WELCOME, capped */
    int fatal;                     /* 0, or the status everything now fails with */
    hc_outbox ob;
    msgpack_sbuffer sb;            /* header frame scratch, reused */
    proto_frames in;               /* receive scratch, reused */
    proto_pub *pubs;               /* batch scratch, PROTO_MAX_BATCH each */
    proto_iov *iov;
    hc_entry **batch;
    bool curve;                    /* the keys below are set */
    char curve_public[41], curve_secret[41], curve_server[41];   /* Z85 */
    char handshake_note[160];      /* why the last handshake failed; "" */
    bool connected;                /* the current socket connected once (a later retry is a reconnect) */
    int handshake_drops;           /* handshakes dropped without a reason since the last that succeeded */
    int64_t refused_since_ms;      /* monotonic: first connect retry with no connect since; 0: none */
    char no_broker[200];           /* before any WELCOME: why no broker can answer (connection refused,
                                      handshake dropped); "" — await_welcome fails at once on it */
    unsigned expired;              /* entries given up on, ever */
    int expired_status;            /* status of the latest one given up on */
    bool closing;                  /* herald_close runs: no new publishes */
    char fatal_error[HC_ERROR_MAX];/* why fatal was set */
    /* the one synchronous invoke in progress (herald_invoke) */
    uint64_t inv_req;              /* its request id; 0: none waiting */
    uint64_t inv_seq;              /* request ids of this client (a client is one thread's) */
    bool inv_done;                 /* its INVOKE_REPLY arrived */
    uint32_t inv_status;           /* proto_status of the reply */
    void *inv_out; size_t inv_out_len;   /* malloc'ed output (OK) */
    char inv_error[HC_ERROR_MAX];  /* the reply's error text */
    char last_error[HC_ERROR_MAX]; /* "" when none */
};

/* printf into c->last_error. */
void hc_set_error(herald_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The client cannot go on (HELLO or CURVE key refused): every call and every
 * unconfirmed publish now fails with status, and last_error says why. */
void hc_set_fatal(herald_client *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- session.c -------------------------------------------------------- */

/* Reads the CURVE certificates into c (curve = true). 0, or -1 with why in err. */
int hc_session_load_keys(herald_client *c, const char *key_file, const char *broker_key_file,
                         char *err, size_t errlen);
/* A new DEALER + monitor, connected (lazily), HELLO queued. 0 or -1 (last_error). */
int hc_session_open(herald_client *c);
void hc_session_close(herald_client *c);
/* A fresh socket, HELLO, and every unconfirmed publish again with its seq
 * (after a dropped connection, or herald_reconnect). 0 or a status. */
int hc_session_reopen(herald_client *c);
/* Sends unsent entries as batches: all of them when force, else only while
 * fewer than 2 batches are in flight or a full batch is waiting. 0 or a status. */
int hc_session_pump(herald_client *c, bool force);
/* Waits up to timeout_ms (0: not at all) for the socket or the monitor, then
 * handles everything that arrived: limits, confirms (callbacks run here),
 * errors, reconnects. 0 or a status. */
int hc_session_poll(herald_client *c, int64_t timeout_ms);

/* ---- check.c ---------------------------------------------------------- */

/* Checks one publish (topic, or function with topic NULL) against DESIGN §1
 * and §5; the delay comes back in ms. 0 or HERALD_E_INVALID with why in err. */
int hc_check_publish(const char *topic, const char *function, const void *payload, size_t len,
                     const herald_publish_opts *o, uint32_t *delay_ms, char *err, size_t errlen);
int hc_status_from_proto(uint32_t status);               /* 0 or HERALD_E_… */

#endif
