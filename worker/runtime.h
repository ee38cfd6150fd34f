/* runtime.h: a runtime function's supervisor (runtime.c; DESIGN §11).
 *
 * A runtime function's events run in long-lived processes that take them one
 * at a time through the AWS Lambda Runtime API. Each process has its own
 * supervisor, forked by the launcher on CH_L_RUNTIME, which serves the API on
 * a loopback port of its own and talks to main (pool_runtime.c) over its
 * channel (chan.h):
 *
 *   main → supervisor   CH_RT_EVENT   one event, only once the one before was reported
 *   supervisor → main   CH_RT_READY   the process asked for its first event (cold start done)
 *                       CH_RESULT     the event's outcome; token SUP_STAYS: it takes
 *                                     another, 0: it stops after this one
 *                       CH_RT_GONE    it stops, and why; EOF follows
 *
 * An event that never reached the process (it ended first, or the supervisor
 * was already stopping) gets no CH_RESULT: main sees GONE and EOF with the
 * event unreported and queues it again without counting an attempt.
 */
#ifndef HERALD_RUNTIME_H
#define HERALD_RUNTIME_H

#include "runner_int.h"

/* Body of a runtime supervisor (never returns): sock is its channel to main,
 * wdir the worker's run directory, b/n the CH_L_RUNTIME body after its type
 * byte (kept for the process's life). Called in a fresh fork of the launcher. */
__attribute__((noreturn)) void runtime_supervise(int sock, const char *wdir, const char *b, uint32_t n);

#endif
