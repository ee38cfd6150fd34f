/* runner: runs handler attempts for the worker, isolated in child processes.
 *
 * runner_new() forks, before any ZeroMQ thread exists, one single-threaded
 * launcher process; every handler process is created by it (a process with
 * ZeroMQ threads must not fork except straight into exec).
 *
 * - exec functions: a supervisor process runs each attempt (as the attempt's
 *   child subreaper): it gives it a fresh run directory, runs the command with
 *   the payload on stdin and the DESIGN §4 environment, enforces the timeout on
 *   the whole tree (setsid'd descendants too), caps stdout (6 MiB) and keeps the
 *   last 4 KiB of stderr, kills what is left, takes the run directory off the
 *   attempt's path and reports. It then waits for the next attempt; one idle
 *   for idle_ms exits.
 * - native functions: a pool of host processes per function (about one per
 *   CPU), each with the library dlopen'ed once, running one delivery at a time.
 *   A host that crashes or overruns its deadline is killed and replaced; its
 *   current delivery ends `crashed` / `timeout`, the ones it had not started come
 *   back as OUT_RETURNED.
 *
 * The worker's loop polls one descriptor, runner_fd(), and calls
 * runner_dispatch() when it is readable or when runner_next_timeout_ms() has
 * passed. Results come back through a callback. Nothing here touches ZeroMQ.
 */
#ifndef HERALD_RUNNER_H
#define HERALD_RUNNER_H

#include "../proto/proto.h"

typedef struct runner runner_t;

/* Jobs written ahead into one native host: hides the hop between the worker
 * and its host (the host reads a run of them with one read), and bounds the
 * jobs a crash hands back unstarted (OUT_RETURNED). */
#define RUNNER_HOST_PIPELINE 16

typedef struct {
    const char *root;           /* resolves relative exec paths (with '/') and libraries; NULL: cwd */
    const char *run_dir;        /* parent of the per-attempt run dirs; NULL: $TMPDIR/herald-runs */
    int hosts;                  /* native hosts per function; 0: the number of CPUs */
    const char *launcher;       /* the herald-launcher program; NULL (or not executable): the
                                   launcher is a fork of this process (heavier forks after it) */
    int idle_ms;                /* an exec supervisor idle this long exits; 0: RUNNER_IDLE_MS */
    int slots;                  /* the worker's concurrency: a runtime function runs at most
                                   min(slots, its concurrency) processes; 0: the number of CPUs */
} runner_opts;

/* Exec supervisors run attempts one after another; one left without work
 * this long (ms) exits (and removes its parked run directory). */
#define RUNNER_IDLE_MS 10000

typedef struct {
    uint64_t token;             /* the caller's id (the lease), echoed in the result */
    const char *function;       /* a function given to runner_define() */
    const char *topic;          /* "" for a direct invoke */
    const char *message_id;
    int attempt, max_attempts;
    const proto_attr *attrs; size_t nattrs;
    const void *payload; size_t payload_len;
} runner_job;

typedef struct {
    uint64_t token;
    proto_outcome outcome;      /* OUT_OK … OUT_CRASHED, or OUT_RETURNED (never started) */
    int64_t started_ms;         /* Unix ms when the handler started (0 if never) */
    uint32_t duration_us;
    const char *error;          /* NULL when OK (but an OK output over the cap: then it says so, and
                                   the output is empty); borrowed for the callback's duration */
    const void *output; size_t output_len;   /* borrowed for the callback's duration */
} runner_result;

typedef void runner_result_fn(void *arg, const runner_result *res);

/* Forks the launcher (and execs o->launcher in it, if given). Call before
 * creating any ZeroMQ context. NULL on failure (logged). Removes stale run
 * directories left by dead workers. */
runner_t *runner_new(const runner_opts *o);

/* Kills every handler and host, stops the launcher, reaps everything, frees.
 * Idempotent; nulls *r. Pending jobs are dropped without a callback. */
void runner_destroy(runner_t **r);

/* Adds or replaces a function definition (copied). A native function's hosts
 * start lazily, on its first job. 0, or -1 with the reason logged (a missing
 * library, herald_init() failing, …), in which case the function is refused. */
int runner_define(runner_t *r, const proto_fndef *fn);
/* The same, and when refused the reason (one line, no function name) in why. */
int runner_define_why(runner_t *r, const proto_fndef *fn, char *why, size_t why_len);

/* Queues one attempt; everything is copied. 0; -1 if the function is
 * unknown/refused; -2 if the runner is broken (its launcher died: nothing can
 * start any more); -3 if this attempt could not be queued for want of a
 * resource (memory, fds): a passing failure, not the function's. No callback
 * comes for a job that was not queued. */
int runner_submit(runner_t *r, const runner_job *j);

/* The one descriptor the caller polls for POLLIN. */
int runner_fd(const runner_t *r);

/* Milliseconds until the runner next needs runner_dispatch() for a deadline
 * (a host's, or closing an idle exec supervisor); -1 when none. */
int runner_next_timeout_ms(const runner_t *r);

/* Does whatever is ready (never blocks): reads results, reaps, enforces
 * deadlines, replaces dead hosts, starts queued jobs. Calls cb once per
 * finished job. */
void runner_dispatch(runner_t *r, runner_result_fn *cb, void *arg);

/* Fencing: kills every running handler and drops every queued job, without
 * callbacks (the broker treats them as lost). Hosts are replaced lazily. */
void runner_cancel_all(runner_t *r);

/* The launcher died: no handler can start any more (the worker should go). */
bool runner_broken(const runner_t *r);

/* Jobs submitted and not yet reported. */
size_t runner_busy(const runner_t *r);

/* A runtime function's counters (DESIGN §11), since the last runner_take_stats. */
typedef struct {
    uint64_t cold_starts;       /* processes that initialized */
    uint64_t init_us;           /* their init durations, summed */
    uint64_t warm;              /* events served by an already initialized process */
    uint64_t recycles[PROTO_RECYCLE_COUNT];   /* processes stopped, by reason */
} runner_rtstats;

typedef void runner_stats_fn(void *arg, const char *function, const runner_rtstats *st);

/* Calls cb for each runtime function with a counter that moved since the
 * last call, and zeroes them. */
void runner_take_stats(runner_t *r, runner_stats_fn *cb, void *arg);

/* --- the worker's log (hlog.c; handler lines: hlog.h) --- */

/* --log FILE: opened (O_APPEND, created 0644) onto fd 2, where every log
 * line of the worker and of the processes it starts goes. 0, or -1 (said). */
int hlog_open(const char *path);
/* SIGHUP: opens the --log file again (after logrotate renamed it). 0, or -1
 * (said; the old file stays). Without --log, nothing. */
int hlog_reopen(void);

#endif
