/* rel.h — what the reliability tests (tests/reliability/) share on top of the
 * integration harness (tests/integration/harness.h).
 *
 * Modes: HERALD_RELIABILITY=full runs each scenario at the size DESIGN and
 * docs/RELIABILITY.md quote (make test-reliability); anything else runs the
 * short version (make test). Each scenario prints one summary line
 *     RELIABILITY|test|fault|faults|confirmed|lost|duplicated|extra
 * on stderr and appends it to $HERALD_RELIABILITY_REPORT when set, which is
 * where docs/RELIABILITY.md takes its figures from.
 */
#ifndef HERALD_REL_H
#define HERALD_REL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "../integration/harness.h"

bool rel_full(void);                      /* HERALD_RELIABILITY=full */
bool rel_sanitized(void);                 /* HERALD_TEST_SANITIZE=1: RSS says nothing, loads shrink */
#define REL_PICK(shortv, fullv) (rel_full() ? (fullv) : (shortv))

long rel_now_ms(void);                    /* monotonic */
long rel_status_kb(pid_t pid, const char *field);   /* "VmRSS", "VmHWM": kB, -1 if gone */

/* Workers the broker lists in heraldctl stats (-1 when it does not answer). */
int rel_workers_connected(h_env *e);
bool rel_wait_workers(h_env *e, int n, int timeout_ms);
/* A topic's published count (heraldctl stats); LONG_MIN when missing. */
long rel_topic_published(h_env *e, const char *topic);
/* Nothing ready, delayed or in flight on topic/function. */
bool rel_sub_drained(h_env *e, const char *topic, const char *function);
bool rel_wait_drained(h_env *e, const char *topic, const char *function, int timeout_ms);
bool rel_wait_lines(const char *path, size_t n, int timeout_ms);

/* Drops the forgotten (0) entries of e->pids, so long tests can start more
 * than H_MAX_PROCS programs over their life. */
void rel_compact_pids(h_env *e);
/* Sends sig to pid and every descendant of it (found through /proc). */
void rel_signal_tree(pid_t pid, int sig);
/* Processes that descend from pid (0 if none; pid itself not counted). */
int rel_count_descendants(pid_t pid);
bool rel_pid_alive(pid_t pid);
/* The live descendants of pid into out (at most cap); returns how many. */
int rel_tree(pid_t pid, pid_t *out, int cap);            /* exists and is not a zombie */

/* A paced publisher: herald-publish --lines --timeout 60 TOPIC reading a FIFO
 * that a child of the test writes "L<i>\n" for i in [0, n) into, at most
 * `burst` lines at a time, and only as far as *gate allows (lines < *gate;
 * the test raises it). Progress is in shared memory. */
typedef struct {
    volatile int written;                 /* lines in the pipe */
    volatile int gate;                    /* the writer stops before this line */
} rel_feed_shm;
typedef struct {
    pid_t publisher, writer;
    const char *prefix;                   /* payloads are PREFIX<i>; "L" */
    int pace_us;                          /* pause after each 20 lines; 200 */
    rel_feed_shm *shm;
    int n;
    int status;                           /* the publisher's exit status once reaped, else -1 */
    char out[512], err[512];              /* the publisher's stdout (ids) and stderr */
} rel_feed;
void rel_feed_start(h_env *e, rel_feed *f, const char *topic, int n, int gate, const char *log);
/* Whether the publisher is still running (reaps it, keeping its status). */
bool rel_feed_running(rel_feed *f);
/* Waits for writer and publisher; returns the publisher's exit status. */
int rel_feed_wait(h_env *e, rel_feed *f, int timeout_ms);

/* The outcome of a stream: line i of the input was confirmed as ids[i]
 * (publisher's stdout in input order); the record file of rel_record.so
 * says who ran what. */
typedef struct {
    size_t confirmed;      /* ids printed */
    size_t lost;           /* confirmed ids never handled */
    size_t twice;          /* input lines handled under an id other than their confirmed one: stored twice */
    size_t runs;           /* handler runs recorded */
    size_t dup_runs;       /* runs beyond the first of a confirmed id */
    size_t unconfirmed;    /* runs of lines that have no confirmed id (refused or not printed) */
    const char *first_lost;
} rel_tally;
/* Input line i (0-based) of a stream was the payload PREFIX<i>. ids_path: the
 * publisher's stdout, one id per confirmed line in input order; err_path (may
 * be NULL): its stderr, whose "LINE N: why" lines (1-based) are the refused
 * lines, which have no id; record_path: rel_record's lines. pid_dup, when not
 * NULL (0-terminated): *dup_by counts the runs beyond the first made by those
 * worker pids. */
void rel_tally_stream(const char *prefix, const char *ids_path, const char *err_path, const char *record_path,
                      size_t n_lines, rel_tally *t, const pid_t *pid_dup, size_t *dup_by);

/* The summary line (see the header comment). */
void rel_report(const char *test, const char *fault, long faults, long confirmed, long lost, long duplicated,
                const char *extra);

#endif
