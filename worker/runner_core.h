/* runner_core.h: the worker (main) side of the runner, shared by its files.
 *
 *   runner.c     the public API, the launcher channel, the dispatch loop
 *   fndef.c      function definitions: copied, compared, resolved, refused
 *   rundir.c     the run directory: this worker's, its shards, stale ones
 *   pool_exec.c  exec functions: one supervisor per running attempt ("attempts")
 *   pool_host.c  native functions: pools of hosts with their job queues
 *   pool_runtime.c runtime functions: one supervisor per long-lived process
 *
 * A pool is one kind of handler. The dispatch loop knows a pool only through
 * the pool_<kind>_* functions below: every object a pool puts in the epoll
 * set starts with an `int kind` (OBJ_*), and runner_dispatch() hands its
 * events to that pool's on_event; then each pool's tick, in a fixed order,
 * and its sweep. A new kind is a new pool file, an OBJ_ and FN_ constant, a
 * struct in `struct runner` and `struct fn` for its state, and one line in
 * each place runner.c and fndef.c call the pools (grep pool_exec_).
 * Nothing here is seen by the launcher, supervisors or hosts (runner_int.h).
 */
#ifndef HERALD_RUNNER_CORE_H
#define HERALD_RUNNER_CORE_H

#include "runner_int.h"
#include "hlog.h"

/* What an epoll event's data.ptr points to: the first member says which. */
enum { OBJ_LAUNCHER = 1, OBJ_ATTEMPT, OBJ_HOST, OBJ_RUNTIME };

/* Which pool runs a function (from its definition). */
typedef enum { FN_EXEC, FN_NATIVE, FN_RUNTIME } fn_kind;

typedef struct fn fn;
typedef struct host host;
typedef struct attempt attempt;
typedef struct rtproc rtproc;

/* Which delivery a job is, for the lines main logs about it (hlog.c):
 * log_output's and --verbose's. */
typedef struct {
    fn *f;
    char message_id[PROTO_ID_MAX + 1];
    uint32_t attempt;
} jobctx;

/* Fills c for j of f (a message id longer than an id is cut: it is a log line). */
static inline void jobctx_set(jobctx *c, fn *f, const runner_job *j)
{
    c->f = f;
    snprintf(c->message_id, sizeof c->message_id, "%s", j->message_id ? j->message_id : "");
    c->attempt = j->attempt > 0 ? (uint32_t)j->attempt : 0;
}

/* A queued job: a native one's CH_H_JOB frame until written into a host, then
 * its place in that host's order; a runtime event's CH_RT_EVENT frame. */
typedef struct job job;
struct job {
    job *next;
    uint64_t token;
    jobctx ctx;
    char *msg;              /* encoded CH_H_JOB frame; NULL once written to a host */
    size_t len;
};

typedef struct { job *head, *tail; size_t n; } jobq;

static inline void jobq_push(jobq *q, job *j)
{
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    q->n++;
}

/* Puts j back at the head of q (it was first in line). */
static inline void jobq_push_front(jobq *q, job *j)
{
    j->next = q->head;
    q->head = j;
    if (!q->tail)
        q->tail = j;
    q->n++;
}

static inline job *jobq_pop(jobq *q)
{
    job *j = q->head;
    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        q->n--;
    }
    return j;
}

static inline void job_free(job *j)
{
    if (j) {
        free(j->msg);
        free(j);
    }
}

struct fn {
    fn *next;
    proto_fndef def;        /* deep copy, exec/library paths as given */
    fn_kind kind;           /* from def.native / def.runtime */
    char *path;             /* root-resolved: native's library, exec's program (absolute) */
    bool refused;           /* its handler cannot start (a host's start failed …) */
    hlog_fn log;            /* its handler lines' rate and drops (hlog.c) */
    struct {                /* FN_EXEC and FN_RUNTIME (pool_exec.c, pool_runtime.c) */
        char **argv;        /* with root-resolved paths, NULL-terminated */
    } exec;
    struct {                /* FN_RUNTIME (pool_runtime.c); kept across a redefinition */
        unsigned gen;       /* bumped by a changed redefinition; older processes retire */
        jobq queue;         /* events waiting for a process */
        rtproc *procs;
        int init_failures;  /* starts in a row that did not initialize */
        int64_t backoff_until_ms;   /* monotonic: no start before */
        runner_rtstats stats;       /* since runner_take_stats */
    } rt;
    struct {                /* FN_NATIVE (pool_host.c); kept across a redefinition */
        unsigned gen;       /* bumped by a changed redefinition; older hosts retire */
        jobq queue;         /* jobs waiting for a host */
        host *hosts;
        int nhosts;         /* current-generation hosts starting or ready */
        int nstarting;
    } native;
};

typedef struct { uint64_t at; int fd; } fdslot;

struct runner {
    int kind;               /* OBJ_LAUNCHER */
    /* the launcher and its channel (runner.c) */
    pid_t launcher;
    int lsock, epfd;
    bool lout_armed;
    bool broken;            /* the launcher is gone: no new processes */
    wbuf lout, lin;
    uint64_t lq_total, lsent_total;   /* stream bytes queued / sent to the launcher */
    fdslot *fdq;            /* fds to pass, in stream order, with their message's offset */
    size_t nfdq, capfdq;
    char *root, *wdir;
    fn *fns;                /* fndef.c */
    uint64_t next_id;       /* names hosts and attempts */
    size_t busy;
    bool in_dispatch;
    runner_result_fn *cb;
    void *cbarg;
    struct {                /* pool_exec.c */
        attempt *running;   /* supervisors running an attempt */
        attempt *idle;      /* supervisors waiting for one, the latest idled first */
        attempt *dead;      /* ended this dispatch, freed at its end */
        int idle_ms;
    } exec;
    struct {                /* pool_runtime.c */
        int slots;          /* the worker's: processes per function, at most */
        rtproc *dead;       /* ended this dispatch, freed at its end */
    } rt;
    struct {                /* pool_host.c */
        int max_hosts;
        bool unflushed;     /* jobs queued into hosts' buffers, not yet sent */
        host *dead;         /* ended this dispatch, freed at its end */
        host_slot *board;   /* HOST_SLOTS slots, shared with the hosts */
        bool *slot_used;
        uint32_t slot_hint; /* where the search for a free slot starts */
    } native;
};

/* --- runner.c: shared by the pools ---------------------------------------- */

/* Reports a finished job (c: which delivery, for the log) to the caller's
 * callback (one fewer busy). */
void runner_deliver(runner_t *r, const jobctx *c, uint64_t token, proto_outcome o, int64_t started_ms,
                    uint32_t dur_us, const char *error, const void *out, size_t outlen);
/* Queues a message to the launcher (b: a whole frame) with an fd to pass
 * (ours to close once sent), or -1. 0, or -1 (nothing was queued). */
int runner_lsend(runner_t *r, const wbuf *b, int fd);
/* Asks the launcher to SIGKILL host id (logged when it cannot). */
void runner_lsend_kill(runner_t *r, uint64_t host_id);
/* Sends what fd takes of out without blocking; when the other end is gone,
 * drops the rest (its EOF, or the launcher, tells the caller what happened). */
void runner_chan_send(int fd, wbuf *out);
/* Reads fd until EAGAIN into in. 1 at EOF (or a read error), else 0. */
int runner_chan_read(int fd, wbuf *in);
void runner_set_nonblock(int fd);
/* Asks epoll for EPOLLOUT on fd (obj's) or stops asking; *armed tracks it. */
void runner_epoll_out(runner_t *r, int fd, void *obj, bool *armed, bool want);

/* --- fndef.c ---------------------------------------------------------------- */

fn *fndef_find(runner_t *r, const char *name);
/* Frees f's definition and f (its pools' state is theirs to free first). */
void fndef_free(fn *f);

/* --- rundir.c --------------------------------------------------------------- */

/* "a/b", malloc'd, or NULL. */
char *rundir_join(const char *a, const char *b);
/* Makes this runner's worker directory, with its RUN_SHARDS shards, in
 * run_dir (NULL: $TMPDIR/herald-runs; relative: to cwd), after removing the
 * ones of dead workers. The path (malloc'd), or NULL (logged). */
char *rundir_create(const char *run_dir, const char *cwd);

/* --- the pools ---------------------------------------------------------------
 * Each kind K has (pool_K.c):
 *   pool_K_submit(r, f, j)        queue or start one job of f; 0 or -1
 *   pool_K_on_event(r, obj, ev)   epoll events ev for obj (an OBJ_ of K)
 *   pool_K_next_deadline(r, now)  ms until it needs a tick, -1: none
 *   pool_K_tick(r, now)           deadlines, starts, flushes (once per dispatch)
 *   pool_K_cancel_all(r)          drop every job without a callback, kill what runs
 *   pool_K_sweep(r)               free what ended during this dispatch
 *   pool_K_stop(r)                runner_destroy: let idle processes go by EOF
 *   pool_K_destroy(r)             runner_destroy, the launcher gone: free it all
 */
int pool_exec_submit(runner_t *r, fn *f, const runner_job *j);
void pool_exec_on_event(runner_t *r, void *obj, uint32_t events);
int64_t pool_exec_next_deadline(const runner_t *r, int64_t now);
void pool_exec_tick(runner_t *r, int64_t now);
void pool_exec_cancel_all(runner_t *r);
void pool_exec_sweep(runner_t *r);
void pool_exec_stop(runner_t *r);
void pool_exec_destroy(runner_t *r);

int pool_host_submit(runner_t *r, fn *f, const runner_job *j);
void pool_host_on_event(runner_t *r, void *obj, uint32_t events);
int64_t pool_host_next_deadline(const runner_t *r, int64_t now);
void pool_host_tick(runner_t *r, int64_t now);
void pool_host_cancel_all(runner_t *r);
void pool_host_sweep(runner_t *r);
void pool_host_stop(runner_t *r);
void pool_host_destroy(runner_t *r);
/* Native only: the board, made before the launcher is forked (it inherits
 * it): its memfd (the caller passes it on and closes it), or -1 (logged). */
int pool_host_init(runner_t *r, int max_hosts);
/* The launcher reaped host id (CH_L_HOSTEXIT). */
void pool_host_exited(runner_t *r, uint64_t id, int status);
/* The launcher died: every native job comes back OUT_RETURNED. */
void pool_host_launcher_gone(runner_t *r);
/* f's definition changed: its hosts finish what they hold, then go. */
void pool_host_fn_changed(runner_t *r, fn *f);

void pool_runtime_on_event(runner_t *r, void *obj, uint32_t events);
int pool_runtime_submit(runner_t *r, fn *f, const runner_job *j);
int64_t pool_runtime_next_deadline(const runner_t *r, int64_t now);
void pool_runtime_tick(runner_t *r, int64_t now);
void pool_runtime_cancel_all(runner_t *r);
void pool_runtime_sweep(runner_t *r);
void pool_runtime_stop(runner_t *r);
void pool_runtime_destroy(runner_t *r);
/* The launcher died: queued events come back OUT_RETURNED. */
void pool_runtime_launcher_gone(runner_t *r);
/* f's definition changed: its idle processes go now, busy ones after their event. */
void pool_runtime_fn_changed(runner_t *r, fn *f);
/* runner_take_stats: each runtime function's counters since the last call. */
void pool_runtime_take_stats(runner_t *r, runner_stats_fn *cb, void *arg);

#endif
