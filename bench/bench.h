/* bench.h — the map of herald-bench, the benchmark of docs/PERFORMANCE.md.
 *
 * herald-bench runs the standard workloads of ../shared/peers/README.md (W1
 * queue, W2 fan-out, W3 latency) and herald's own (B1 backlog, X1 exec, X2
 * and X3 warm runtimes, X2e X2's handler as exec) against real herald
 * processes: for every run a fresh temp dir with a config on ipc://
 * endpoints, its own bin/herald-broker and bin/herald-worker processes
 * (stopped by PID), a producer process publishing with libherald, and a
 * handler that leaves evidence of every run: the native handler
 * (bench_handler.c) counts every (subscription, event) pair in a shared file
 * (shared.h); the exec and runtime handlers (x1_handler.sh, x2_handler.py,
 * x2e_handler.py, x3_handler.js) append the message id to a log, matched
 * against the ids the producer got confirmed.
 * It prints one markdown table: the median of RUNS runs per row.
 *
 * Files, in reading order:
 *   shared.h         the file shared with the handler; the payload layout
 *   main.c           options, the plan of rows, machine note, medians, table
 *   workload.c       one run of one workload: start, publish, wait, check
 *   procs.c          processes (start/stop by PID, heraldctl), config, /proc CPU
 *   exitstats.c      per-process CPU of exited processes (Linux taskstats), X1
 *   bench_handler.c  the native handler (a separate .so)
 *   x1_handler.sh, x2_handler.py, x2e_handler.py, x3_handler.js
 *                    the exec and runtime handlers
 */
#ifndef BENCH_H
#define BENCH_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shared.h"

/* --- the environment every run needs (main.c) ----------------------------- */
typedef struct {
    const char *root;           /* herald checkout: bin/, build/bench/, bench/ */
    const char *tmp_parent;     /* where run dirs go (must be a real disk for fsync) */
    char broker[512], worker[512], ctl[512];   /* bin/ programs */
    char handler_so[512];       /* build/bench/libbench_handler.so */
    char python[512], node[512];   /* the interpreters `python3` and `node` on PATH resolve to
                                      (a version manager's shim resolved away); "" if absent */
    const char *attach;         /* --attach: shell command run during each measured
                                   window, with BROKER_PID, WORKER_PIDS, RUN_TAG, RUN_DIR set;
                                   SIGINT at the end (perf record, perf stat, strace) */
    const char *wrap_broker;    /* --wrap-broker: words put before the broker's argv
                                   (valgrind --tool=callgrind …) */
    bool verbose;               /* progress and raw lines on stderr */
    bool keep;                  /* keep run dirs (debugging) */
} bench_env;

extern volatile sig_atomic_t bench_interrupted;   /* SIGINT/SIGTERM: abort, clean up */

/* --- workload definitions (workload.c) ------------------------------------ */
typedef enum { KIND_QUEUE, KIND_LATENCY, KIND_BACKLOG, KIND_EXEC, KIND_RUNTIME } wl_kind;
typedef enum { LANG_SH, LANG_PYTHON, LANG_NODE } wl_lang;   /* an exec or runtime handler's */

typedef struct {
    const char *name;           /* "W1" … "X1" */
    wl_kind kind;
    const char *durability;     /* "fsync" | "os" */
    int64_t n;                  /* events published */
    int subs;                   /* subscriptions of the one topic */
    int workers;                /* herald-worker processes (consumers) */
    int inflight;               /* --concurrency of each worker: deliveries in flight */
    int payload;                /* bytes per event */
    double rate;                /* events/s, absolute schedule; 0: unpaced */
    int window;                 /* async publishes in flight (libherald window) */
    double timeout_s;           /* a run that takes longer fails */
    wl_lang lang;               /* KIND_EXEC, KIND_RUNTIME: the handler's language */
    const char *handler;        /* exec: the script, under the root; runtime: _HANDLER */
} workload;

/* CPU seconds of one run, by process class (from /proc; X1 also exitstats) */
typedef struct {
    double broker;              /* herald-broker, all threads */
    double worker;              /* herald-worker processes, all threads */
    double launcher;            /* their launcher processes (self only) */
    double hosts;               /* native handler hosts (herald-host) */
    double exec;                /* exited exec supervisors + handlers (launcher's reaped children) */
    double supervisors;         /* X1: exec's share of the supervisors (forks of the launcher);
                                   runtime rows: the runtime supervisors (herald-runtime) */
    double handlers;            /* X1: exec's share of the handler processes (exec'd scripts);
                                   runtime rows: the runtime processes (python3, node) */
    double handlers_own;        /* exec: the handler processes' own tick-sampled CPU from their exit
                                   records (no share of other work; misses each exit's last part) */
    long nsupervisors, nhandlers;   /* exited processes counted by exitstats */
    bool split;                 /* supervisors/handlers measured (exitstats worked) */
    bool exec_by_difference;    /* X1: exec is the machine's busy time less every other
                                   process measured (the /proc sum came out lower) */
    double producer;            /* the publishing process (rusage) */
} cpu_split;

typedef struct {
    bool ok;                    /* nothing missing, no duplicate, no error, broker state clean */
    char why[256];              /* first reason it is not ok */
    int64_t missing, dup, bad;  /* pairs never handled / extra runs / unplaceable runs */
    int64_t pub_errors;
    double pub_rate;            /* events/s: N / (first publish → all confirmed) */
    double e2e_rate;            /* deliveries/s: N·subs / (first publish → last new pair handled) */
    double achieved_rate;       /* W3: events/s published */
    double steady_rate;         /* runtime rows: events/s over the second half of the events
                                   (line n/2 of the id log seen → line n), past the cold starts */
    double p50_us, p99_us, p999_us, max_us;   /* W3 publish → handler */
    cpu_split cpu;
    /* runtime rows: `heraldctl stats` of the function after the run */
    int64_t cold_starts;        /* runtime processes started (spawn → first /next) */
    double init_ms;             /* their mean init time: spawn → first /next */
    int64_t warm;               /* events to a process that had served one before */
    /* B1 */
    double rss_mib, hwm_mib;    /* broker VmRSS / VmHWM after the publish phase */
    double rss_restart_mib;     /* broker VmRSS once ready after the restart */
    double db_mib;              /* data_dir bytes incl. WAL after the publish phase */
    double stop_s;              /* SIGTERM → broker exited */
    double ready_s;             /* exec → `heraldctl stats` answered */
    double drain_rate;          /* events/s: workers started → last event handled */
    double broker_pub_cpu;      /* B1: broker CPU s of the publish phase (drain: cpu.broker − it) */
    double wall_s;              /* the whole run, setup included */
} result;

/* Runs one workload once; fills r. 0 when the run completed (r->ok says
 * whether it was correct), -1 when it could not run at all (r->why). */
int workload_run(const bench_env *e, const workload *w, int run, result *r);

/* --- processes, config, /proc (procs.c) ----------------------------------- */
typedef struct {
    char dir[256];              /* the run's temp dir */
    char cfg[300];              /* dir/herald.cfg */
    char pub_ep[300], wrk_ep[300], adm_ep[300];   /* ipc://dir/… */
    char adm_path[300];         /* the admin socket file: exists once bound */
    char data_dir[300];
} run_paths;

typedef enum { FNK_NATIVE, FNK_EXEC, FNK_RUNTIME } fn_kind;

typedef struct {
    const char *name;           /* function name */
    fn_kind kind;
    const char *argv[3];        /* exec: argv; runtime: command; NULL-terminated, absolute */
    const char *library, *symbol;   /* native: absolute */
    const char *handler;        /* runtime: _HANDLER */
    const char *env_k[3], *env_v[3];   /* function env, NULL-terminated */
} fn_def;

uint64_t mono_ns(void);
double since_s(uint64_t t0_ns);
void sleep_ms(int ms);

/* mkdtemp under e->tmp_parent, fills every path. 0 or -1. */
int paths_new(const bench_env *e, run_paths *p);
/* rm -rf p->dir (unless keep). */
void paths_remove(const run_paths *p, bool keep);
/* Writes p->cfg: one topic "bench" subscribing every function. 0 or -1. */
int config_write(const run_paths *p, const char *durability, const fn_def *fns, int nfns);

/* fork + exec argv with stdout/stderr appended to log; the child gets its own
 * process group so a terminal's Ctrl-C reaches only the bench. pid or -1. */
pid_t proc_start(char *const argv[], const char *log);
/* Signals pid, waits up to timeout_s, then SIGKILL (by PID). Fills took_s
 * (may be NULL); returns the wait status, or -1 if pid was not our child. */
int proc_stop(pid_t pid, int sig, double timeout_s, double *took_s);
/* 1 if pid (our child) has exited (and reaps it), 0 if running. */
int proc_exited(pid_t pid);

/* Runs `heraldctl -c cfg --timeout T args…`, its stdout into out. Exit status
 * (0: answered), -1 if it could not run or overran T plus a second. */
int ctl_run(const bench_env *e, const run_paths *p, double timeout_s, const char *const args[],
            char *out, size_t cap);
/* Starts the broker on p->cfg; waits until `heraldctl stats` answers. pid or
 * -1. *ready_s: exec → first answer. */
pid_t broker_start(const bench_env *e, const run_paths *p, const char *log, double timeout_s,
                   double *ready_s);
/* Starts a worker serving fns (comma list) with `inflight` slots. pid or -1. */
pid_t worker_start(const bench_env *e, const run_paths *p, const char *fns, int inflight,
                   const char *log);
/* Waits until every pid in pids is listed by `heraldctl workers`. 0 or -1. */
int workers_wait(const bench_env *e, const run_paths *p, const pid_t *pids, int n, double timeout_s);

/* The value of the first "key":<integer> after position `from` in a JSON text;
 * -1 if absent. */
int64_t json_int(const char *json, const char *from, const char *key);
/* The same for any JSON number; -1 if absent. */
double json_num(const char *json, const char *from, const char *key);

/* /proc: CPU ticks of a process tree, by class (see cpu_split). */
typedef struct {
    int64_t worker, launcher, hosts, exec, other;   /* clock ticks */
    int64_t rtsup, rtproc;      /* runtime supervisors (herald-runtime), their processes (part of exec) */
    pid_t launchers[8]; int nlaunchers;              /* launcher pids found */
} tree_ticks;
/* Sums, over roots and every live descendant: self ticks by class, plus
 * reaped children's ticks (cutime+cstime) under the class of their parent's
 * children ("exec" for a launcher's). 0 or -1. */
int proc_tree_ticks(const pid_t *roots, int nroots, tree_ticks *t);
int64_t proc_self_ticks(pid_t pid);          /* utime+stime of pid, or -1 */
int64_t proc_busy_ticks(void);               /* the machine's non-idle ticks, all CPUs (/proc/stat) */
double proc_status_mib(pid_t pid, const char *field);   /* "VmRSS:" etc., MiB, or -1 */
int64_t dir_bytes(const char *dir);          /* regular files' sizes, not recursive */
double ticks_s(int64_t ticks);

/* --- exited-process accounting (exitstats.c) ------------------------------ */
typedef struct exitstats exitstats;
/* Registers a taskstats listener for every CPU. NULL when the kernel or our
 * privileges do not allow it (the reason in why). */
exitstats *exitstats_open(char *why, size_t cap);
int exitstats_fd(const exitstats *x);
/* Reads every pending exit record without blocking. */
void exitstats_drain(exitstats *x);
/* Tick-sampled CPU of exited processes whose parent was one of the launchers
 * (supervisors) and of their descendants (handlers), in seconds, up to their
 * exit record (a proportion, not a total: see exitstats.c); -1 if records
 * were lost. */
int exitstats_split(exitstats *x, const pid_t *launchers, int n, double *sup_s, long *nsup,
                    double *handler_s, long *nhandler);
void exitstats_close(exitstats **x);

#endif
