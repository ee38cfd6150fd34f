/* shared.h — the one file herald-bench shares with its native handler.
 *
 * herald-bench creates the file in /dev/shm for one run and names it in each
 * function's env (BENCH_SHM; a handler host sees only its function's env, and
 * BENCH_SUB tells it which subscription its function is). Every host maps it
 * in herald_init(). Layout: this header, then seen[subs * n] (one byte per
 * (subscription, event): handler runs), then lat_ns[n] when the run measures
 * latency (subscription 0 only), then ids[n][BENCH_ID_MAX] when the producer
 * records message ids (X1). Offsets are in the header, so the handler needs
 * no knowledge of the workload.
 *
 * Every counter is updated with __atomic builtins, from many processes at
 * once; the header is written once by the bench before any process maps it.
 *
 * The payload of every event starts with its sequence number (uint64, 0..n-1)
 * and a CLOCK_MONOTONIC stamp taken just before the publish call (uint64 ns),
 * as in ../shared/peers/src/harness.h; the rest is filler.
 */
#ifndef BENCH_SHARED_H
#define BENCH_SHARED_H

#include <stdint.h>

#define BENCH_MAGIC 0x3168636e65626868ull   /* "hhbench1": the file is ours and initialised */
#define BENCH_HDR 4096                      /* header bytes: seen[] starts page aligned */
#define BENCH_ID_MAX 64                     /* = HERALD_ID_MAX; handler.h does not export it */
#define BENCH_PAYLOAD_MIN 16                /* seq + stamp */

typedef struct {
    uint64_t magic;             /* BENCH_MAGIC */
    int64_t n;                  /* events published: seq 0..n-1 */
    int64_t subs;               /* subscriptions; function benchK serves subscription K */
    int64_t expected;           /* n * subs: (subscription, event) pairs to handle */
    int64_t seen_off;           /* byte offset of seen[subs * n] */
    int64_t lat_off;            /* byte offset of lat_ns[n]; 0: no latency this run */
    int64_t ids_off;            /* byte offset of ids[n][BENCH_ID_MAX]; 0: none */
    int64_t size;               /* file bytes */
    /* handler side (atomic) */
    int64_t runs;               /* handler runs, duplicates included */
    int64_t unique;             /* pairs handled at least once */
    int64_t bad;                /* runs the handler could not place (short payload, bad seq) */
    uint64_t t_first_run_ns;    /* monotonic: first handler run (set once) */
    uint64_t t_done_ns;         /* monotonic: the run that made unique reach expected */
    /* producer side */
    uint64_t t_pub_first_ns;    /* monotonic: just before the first publish */
    uint64_t t_pub_done_ns;     /* monotonic: every publish confirmed (flush returned) */
    int64_t pub_errors;         /* publishes refused or not confirmed */
    int64_t pub_ok;             /* publishes confirmed */
} bench_shm;

#endif
