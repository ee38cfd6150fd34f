/* session: the worker's session with one broker (DESIGN §4, PROTOCOL.md).
 *
 * REGISTER → CONFIG (function definitions, given to the runner) → REFUSED
 * (the functions that cannot run here, and why) → DELIVER / RESULT, with
 * HEARTBEAT each way when idle; DRAIN and BYE when the worker stops. A
 * session owns its DEALER socket (and the socket's monitor), its state
 * (registered, heartbeats, the retry log), the results of the leases it was
 * given that are not sent yet, and the list of functions it refused. The
 * runner and the ZeroMQ context are the caller's, shared: nothing here is
 * global, so a worker could hold one session per broker.
 */
#ifndef HERALD_SESSION_H
#define HERALD_SESSION_H

#include "runner.h"

typedef struct session session_t;

typedef struct {
    const char *endpoint;
    const char *key, *broker_key;   /* CURVE: ours (.key), the broker's (.pub); NULL: plaintext */
    const char *id;                 /* the worker's id: the socket's routing id (< 64 bytes) */
    const char *host;               /* < 256 bytes */
    uint32_t slots;
    char **functions; uint32_t nfunctions;   /* --functions; borrowed */
    runner_t *runner;               /* borrowed: runs what the broker delivers */
    void *zctx;                     /* borrowed */
} session_opts;

/* A session, not connected yet (session_open). NULL when out of memory.
 * endpoint, the keys and functions are borrowed: they must outlive it. */
session_t *session_new(const session_opts *o);
/* Closes its socket (lingering up to 2 s: the last results must reach the
 * broker) and frees it. Call before the ZeroMQ context is terminated.
 * Idempotent; nulls *s. */
void session_destroy(session_t **s);

/* (Re)connects on a fresh socket and sends REGISTER. 0, or -1 (said on stderr). */
int session_open(session_t *s);

/* One loop turn of the worker uses these in the order below. */

/* Tells the broker we stop taking work (SIGTERM). */
void session_drain(session_t *s);
/* Says BYE if registered (after the last RESULT, on the same socket). */
void session_bye(session_t *s);
/* Nothing heard from the broker for 3 heartbeats. */
bool session_silent(const session_t *s, int64_t now);
/* Fencing after silence: kills the runner's handlers (the broker gives their
 * deliveries to someone else), drops the unsent results and registers again
 * on a fresh socket, saying so in the log (rate-limited while the broker does
 * not answer). */
void session_reconnect(session_t *s, int64_t now);
/* STATS with the runtime counters that moved, at most once a heartbeat
 * (now_or_never: now, before BYE). */
void session_stats(session_t *s, int64_t now, bool now_or_never);
/* A HEARTBEAT when nothing was sent for a heartbeat. */
void session_heartbeat(session_t *s, int64_t now);
/* The longest the caller may sleep before session_heartbeat (ms). */
long session_poll_ms(const session_t *s);
/* Fills items with what to poll for POLLIN: its socket, and its monitor if
 * any. Returns how many (1 or 2). */
int session_pollitems(const session_t *s, zmq_pollitem_t items[2]);
/* Reads and handles what the broker sent (at most 256 messages). */
void session_read(session_t *s);
/* A refused CURVE key is a configuration error: said on stderr. true when
 * the worker must exit. */
bool session_handshake_refused(session_t *s);
/* The runner's result callback (arg: the session): keeps the result for session_flush. */
void session_on_result(void *arg, const runner_result *res);
/* Sends the results kept (one RESULT per PROTO_MAX_BATCH). */
void session_flush(session_t *s);

/* Results kept and not sent yet. */
size_t session_pending(const session_t *s);
/* The broker refused our registration: the worker must exit (1). */
bool session_failed(const session_t *s);
const char *session_endpoint(const session_t *s);

#endif
