/* harness.h — what integration tests use to run the real programs.
 *
 * Each test gets its own temp dir with ipc:// endpoints inside it (tests never
 * collide on ports), writes its config there, and starts bin/ programs as
 * children, each in its own process group. h_teardown() kills those groups by
 * PID (SIGTERM, then SIGKILL) and removes the dir. Waiting is always "until a
 * condition holds or a deadline passes" — never a bare sleep.
 */
#ifndef HERALD_TEST_HARNESS_H
#define HERALD_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define H_MAX_PROCS 32

typedef struct {
    char dir[256];              /* the test's temp dir */
    char root[512];             /* the checkout: $HERALD_ROOT or cwd */
    char pub[300], wrk[300], adm[300];   /* endpoints */
    char cfg[300];              /* path of the config written by h_config */
    pid_t pids[H_MAX_PROCS]; int npids;
    bool curve;                 /* HERALD_TEST_CURVE=1: the same tests with CURVE on every endpoint */
} h_env;

/* With HERALD_TEST_CURVE=1 in the environment, h_setup also makes a broker key
 * and one client key allowed in every role, exports HERALD_KEY and
 * HERALD_BROKER_KEY (so every program the test starts speaks CURVE), and the
 * config writers add the security group: the scenarios run unchanged. */
void h_setup(h_env *e);
void h_teardown(h_env *e);

/* Writes DIR/herald.cfg: the broker group (these endpoints, data_dir DIR/data,
 * the given durability) followed by body (functions, topics). */
void h_config(h_env *e, const char *durability, const char *body);
/* The same, with extra_broker settings (e.g. "max_payload = 1024;") written
 * inside the broker group; NULL or "" adds none (then it is h_config). */
void h_config_broker(h_env *e, const char *durability, const char *extra_broker, const char *body);

/* Starts a program of bin/ (or any path) with argv (NULL-terminated after the
 * program name), stdout/stderr to DIR/<log>.out and .err. Returns its pid. */
pid_t h_start(h_env *e, const char *log, const char *prog, ...);
pid_t h_broker(h_env *e);                       /* bin/herald-broker -c cfg, waits until it answers */
pid_t h_worker(h_env *e, const char *functions, int concurrency);   /* functions may be NULL */
void h_kill(h_env *e, pid_t pid, int sig);      /* sends sig and, for a stop, waits for the exit */
int h_wait_exit(pid_t pid, int timeout_ms);     /* exit status, 128+sig, or -1 on timeout */

/* Runs a program to its end, stdin from in_path (or /dev/null), stdout and
 * stderr captured (malloc'ed, caller frees; may be NULL). Returns the exit code. */
int h_run(h_env *e, const char *in_path, char **out, char **err, const char *prog, ...);

/* Polls cond(arg) every few ms until it is true or timeout_ms passes. */
bool h_wait(bool (*cond)(void *arg), void *arg, int timeout_ms);

/* Reads a whole file (NULL if missing). */
char *h_read(const char *path, size_t *len);
void h_write(const char *path, const char *text);
size_t h_count_lines(const char *path);
/* Lines of a file as a sorted, de-duplicated array; returns the count. */
size_t h_lines_sorted(const char *path, char ***lines, size_t *total);
void h_free_lines(char **lines, size_t n);
char *h_path(h_env *e, const char *name);   /* DIR/name, static buffer rotated 8 ways */
/* Shared by the suites (they had each their own copy). */
void h_write_lines(const char *path, int n, const char *fmt);   /* fmt takes the line number (int) */
/* Asserts: at least n lines; fails only when no new line came for timeout_ms. */
void h_wait_lines(const char *path, size_t n, int timeout_ms);
/* A subscription's stats counter: waits until it equals want, or asserts it
 * now; a failure prints the whole stats answer. */
void h_wait_sub(h_env *e, const char *topic, const char *function, const char *key, long want, int timeout_ms);
void h_assert_sub(h_env *e, const char *topic, const char *function, const char *key, long want);
/* heraldctl stats --json, as text (caller frees). */
char *h_stats(h_env *e);

/* Sends sig to pid and waits up to timeout_ms for it to exit; returns its
 * exit status (128+sig when killed), or -1 if it is still running. An exited
 * program is forgotten (teardown leaves it alone) and what remains of its
 * process group is killed. */
int h_signal_exit(h_env *e, pid_t pid, int sig, int timeout_ms);

/* The integer value of the first "key": after the first occurrence of anchor
 * in a JSON text (e.g. anchor "{\"topic\":\"t\",\"function\":\"f\"", key
 * "dead"); LONG_MIN when either is missing. Good for the stats and dlq JSON,
 * whose keys come in a fixed order. */
long h_json_num(const char *json, const char *anchor, const char *key);
/* A subscription's counter (ready, delayed, inflight, dead, succeeded, failed)
 * and a function's (invocations, errors, timeouts, rejected, crashed, lost)
 * from heraldctl stats --json; LONG_MIN when the broker or the row is missing. */
long h_sub_stat(h_env *e, const char *topic, const char *function, const char *key);
long h_fn_stat(h_env *e, const char *function, const char *key);
/* heraldctl --broker ADMIN ARGS... (NULL-terminated): its stdout (caller
 * frees), or NULL when it exits non-zero. */
char *h_ctl(h_env *e, ...);

/* bin/herald-gateway -c e->cfg (log "gateway"), whose config listens on
 * 127.0.0.1:0: waits until it says where it listens, and writes its base URL
 * "http://127.0.0.1:PORT" into url. Returns its pid. */
pid_t h_gateway(h_env *e, char *url, size_t url_len);
/* /usr/bin/curl -s -S ARGS… (NULL-terminated, at most 14): the HTTP status, or
 * -1 when curl failed (its words on stderr); *body the response body (caller
 * frees; body may be NULL). */
int h_curl(h_env *e, char **body, ...);

#endif
