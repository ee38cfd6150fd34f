/* runner_int.h: the runner's internal map, shared by every process (main's own
 * side is runner_core.h; the messages are chan.h).
 *
 * Four kinds of process take part:
 *   main      the worker; runner.c and its pools. Talks to the launcher over one socketpair,
 *             to each exec supervisor and each native host over its own.
 *   launcher  launcher.c. Forked once by runner_new(); single-threaded; forks
 *             every supervisor and host, reaps them, kills hosts on request.
 *   supervisor exec.c. Runs exec attempts one at a time, each attempt's child
 *             subreaper while it runs; main hands an idle one the next attempt.
 *   host      host.c. One per native pool slot; dlopens the function's library.
 * Every channel carries length-prefixed messages, each defined once in
 * chan.h (the framing, then one struct and one encode/decode pair per
 * type). Main creates every socketpair itself and hands the child's end to
 * the launcher with SCM_RIGHTS on the message that needs it, so fds only
 * ever flow main → launcher and results flow straight back to main.
 */
#ifndef HERALD_RUNNER_INT_H
#define HERALD_RUNNER_INT_H

#include "runner.h"
#include "chan.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define STDERR_KEEP PROTO_ERROR_TEXT_MAX       /* stderr bytes kept for the error text */
#define KILL_GRACE_MS 1000                     /* SIGTERM → SIGKILL, and main's host backstop */
#define RUN_SHARDS 8                           /* attempt dirs live in WDIR/(id % 8)/id: mkdir and
                                                  rmdir lock the parent, so one parent would
                                                  serialize every concurrent attempt */

/* --- the host board ---------------------------------------------------------
 * One shared page per runner (MAP_SHARED, mapped before the launcher is
 * forked, so every host inherits it), a slot per live native host. A host
 * writes its progress there instead of telling main with a message per job,
 * so it can send its results in batches and still, when it dies, leave main
 * the exact truth: jobs [1, done] finished (any result main has not read is
 * lost: returned), job started > done was running (crashed / timeout), later
 * ones never began (returned). Main enforces the timeout from start_ms, so a
 * host arms no timer per job. */
typedef struct {
    _Atomic uint64_t started;   /* jobs this host has begun, the running one included */
    _Atomic uint64_t done;      /* jobs it has finished */
    _Atomic int64_t start_ms;   /* CLOCK_MONOTONIC ms when job `started` began */
    char pad[64 - 3 * 8];       /* a cache line each: hosts do not share lines */
} host_slot;

/* The slots are shared between processes: their atomics must not be emulated with locks. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "the host board needs lock-free 64-bit atomics");

#define HOST_SLOTS 4096         /* live native hosts per worker, at most (256 KiB, touched lazily) */
#define HOST_HOLD_US 1000       /* a host sends its held results once the oldest is this old */
#define HOST_HOLD_BYTES (256u << 10)   /* … or once they fill this much */

/* The error text of an ok attempt whose output (size bytes) is over the cap:
 * it goes with an empty output, and the broker fails a sync invoke with it
 * (an event's output is discarded, so the event succeeds). Returns buf. */
static inline const char *too_large_text(char buf[static 160], uint64_t size)
{
    snprintf(buf, 160, PROTO_RESPONSE_TOO_LARGE ": Response payload size (%llu bytes) exceeded maximum "
             "allowed payload size (%u bytes).", (unsigned long long)size, PROTO_OUTPUT_MAX);
    return buf;
}

/* --- launcher.c: the launcher process and the process-tree helpers --- */

/* Body of the launcher (never returns). sock: its end of the main channel;
 * wdir: this worker's run directory (parent of each attempt's). */
__attribute__((noreturn)) void launcher_main(int sock, const char *wdir, host_slot *board);
/* Blocking: sends a whole buffer; -1 on error (EPIPE included, no SIGPIPE). */
int launcher_write_all(int fd, const void *p, size_t n);
/* SIGKILLs every child of the calling process (found through /proc, since
 * orphans re-parent to a subreaper), reaps them, and repeats until none is
 * left or deadline_ms (monotonic) passes. 0 when none is left. */
int launcher_kill_children(int64_t deadline_ms);
/* Sends sig to every direct child of the calling process (a /proc scan). */
void launcher_signal_children(int sig);
/* Closes every fd ≥ from. */
void launcher_close_from(int from);

/* --- exec.c: one exec attempt's supervisor --- */

/* Runs the attempt described by the CH_L_EXEC body (b, n: malloc'd, freed
 * here) and reports on the report fd, then the attempts main sends on it
 * (CH_S_RUN), one at a time, until main closes it; never returns. Called in a
 * fresh fork of the launcher. */
__attribute__((noreturn)) void exec_supervise(int report, const char *wdir, const char *b, uint32_t n);
/* Removes a directory tree without following symlinks. 0 or -1 (errno). */
int exec_rmtree(const char *path);
/* What a handler killed by sig died of, one wording for exec and native:
 * "killed by signal 11 (SIGSEGV)". Returns buf. */
const char *exec_killed_by(int sig, char buf[static 48]);
/* "timeout after 30 s", "timeout after 0.5 s" (ms: the limit), one wording
 * for every kind; prefix "init " for a runtime's start. Returns buf. */
const char *exec_timeout_text(const char *prefix, uint32_t ms, char buf[static 48]);

/* --- attrs.c: an event's attributes as an exec handler's environment --- */

/* Appends the JSON object of a[0..n) to b (no NUL): every key and value as a
 * JSON string, in order; bytes that are not UTF-8 become U+FFFD. */
void attrs_json(wbuf *b, const proto_attr *a, size_t n);
/* Appends s[0..n) as a JSON string (quotes included; NULs as \u0000, bytes
 * that are not UTF-8 as U+FFFD). */
void attrs_json_str(wbuf *b, const char *s, size_t n);
/* Appends the environment entries of a[0..n) to b (each as put_bytes,
 * "NAME=value"): HERALD_ATTRS, then HERALD_ATTR_<KEY> for every key whose
 * folded name no other key shares. Returns how many entries it appended. */
uint32_t attrs_put_env(wbuf *b, const proto_attr *a, size_t n);

/* --- host.c: a native host --- */

/* Runs a host described by the CH_L_HOST body (b, n) on sock, reporting its
 * progress in its slot of board; never returns. */
__attribute__((noreturn)) void host_main(int sock, const char *b, uint32_t n, host_slot *board);

#endif
