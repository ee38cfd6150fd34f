/* broker.h — the map of herald-broker: every type first, then each file's
 * functions, grouped by file, in the order to read them.
 *
 * The broker is one thread running one loop (loop.c). Each turn it drains the
 * three ROUTER sockets, stages everything that must be durable into one open
 * SQLite transaction (store.c), commits it, then sends the confirms for what is
 * now on disk, then dispatches ready deliveries to workers (dispatch.c).
 *
 * Objects:
 *   message_t   one stored event held in memory (payload + attributes), shared
 *               by its deliveries through a reference count;
 *   delivery_t  one message on one subscription's queue: READY, INFLIGHT or
 *               RETRY_WAIT (DEAD deliveries live only in the database);
 *   sub_t       a subscription (topic → function) with its in-memory window of
 *               the durable queue and its counters;
 *   function_t  a function's settings and counters;
 *   worker_t    a connected worker session: slots, leases, liveness.
 */
#ifndef HERALD_BROKER_H
#define HERALD_BROKER_H

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "../config/config.h"
#include "../proto/proto.h"
#include "../sched/cron.h"

/* Deliveries of one subscription held in memory, at most. The rest of its
 * queue stays in SQLite and is read back in order as the window drains, so
 * memory does not grow with the backlog. */
#define SUB_WINDOW 8192
/* Deliveries of one subscription whose rows are in `delayed` (retry backoff,
 * --delay, paced replays) held in memory: about this many at most, the
 * earliest; the rest are read back by visible time as these wake. */
#define DELAYED_WINDOW 8192
/* … and at most about this many payload bytes in each of those two windows
 * (at least one delivery): with large payloads the count alone would let a
 * backlog of 256 KiB events take 2 GiB per subscription. */
#define WINDOW_BYTES (16 << 20)
/* Messages taken from one socket per loop turn before the others get a go. */
#define DRAIN_CAP 256
/* store_restart_wal(): a WAL of this many frames (4 KiB each) is written from
 * its start again once the checkpointer has copied all but WAL_RESTART_SLACK. */
#define WAL_RESTART_FRAMES 1024
#define WAL_RESTART_SLACK 128
/* In a turn that is still reading PUBLISH messages after this many µs, the
 * workers are served (results in, committed deliveries out) in between. */
#define SERVICE_US 500
/* Message rows collected per GC pass once no delivery needs them (store_gc):
 * enough to keep up with ~200k events/s at GC_EVERY_MS, small enough that one
 * pass never holds the loop for long. */
#define GC_BATCH 8192
#define GC_EVERY_MS 20
/* When the smallest needed id stays (a subscription no worker serves, a long
 * delay, a backlog) and the ids above it span more than this, store_gc sweeps
 * them for unneeded rows, so one stuck delivery does not keep every message
 * published after it; a sweep pass that finds nothing rests this many passes. */
#define GC_SWEEP_SPAN 65536
#define GC_SWEEP_REST 50
/* A turn that staged only acks, retries and dead letters may leave its
 * transaction open this long: losing those in a crash only means a delivery
 * runs again (at-least-once), and it saves an fsync per result batch. */
#define ACK_COMMIT_MS 50
/* --dedup-id: a second publish with the same topic and id within this window
 * is answered with the first one's message id and not stored (DESIGN §5). */
#define DEDUP_WINDOW_MS (5 * 60 * 1000)
/* Producer high-water marks and remembered refusals older than this are
 * pruned: far beyond any client's re-send horizon (its timeout_ms). */
#define PRODUCER_TTL_MS (60 * 60 * 1000)
#define PRUNE_EVERY_MS 10000
/* Dead letters a replay or purge handles per loop turn (admin.c): tens of
 * milliseconds of work, so heartbeats and publishes go on meanwhile. */
#define DLQ_CHUNK 2000
/* The broker's backstop on a lease (SQS's visibility timeout): a worker owns
 * the deadline and kills a handler at the function's timeout, SIGKILL coming
 * LEASE_KILL_GRACE_MS after SIGTERM (DESIGN §4); a worker that heartbeats but
 * never does must not keep a delivery forever. A lease ends as `timeout` once
 *   n × (timeout + LEASE_KILL_GRACE_MS [+ init_timeout for a runtime]) + LEASE_MARGIN_MS + 3 heartbeats
 * have passed since its dispatch, n being the deliveries the worker held with
 * it (a worker may queue them for fewer hosts, each starting its clock only
 * when it starts). The margin covers a RESULT in transit and a busy loop. */
#define LEASE_KILL_GRACE_MS 1000
#define LEASE_MARGIN_MS 5000
/* Leases are checked against their backstop this often (ms). */
#define LEASE_CHECK_MS 250

typedef struct list_node { struct list_node *prev, *next; } list_node;
typedef struct { list_node head; size_t n; } list_t;
struct row_key { int64_t sub, msg; };   /* a delivery's row: (subscription id, message id) */

typedef struct function function_t;
typedef struct dlq_job dlq_job;
typedef struct sub sub_t;
typedef struct worker worker_t;
typedef struct broker broker_t;

typedef struct message {
    int64_t id;                 /* messages.id (ours, never reused: meta.next_msg_id) */
    int refs;                   /* deliveries in memory that point here */
    char mid[PROTO_ID_MAX + 1]; /* message id "PRODUCER-SEQ" */
    char *topic;                /* "" for an async invoke */
    proto_attr *attrs; uint32_t nattrs;   /* in the same allocation as the message */
    void *payload; size_t payload_len;    /* malloc'ed copy, or a zmq_msg_t's data */
    zmq_msg_t zmsg;             /* the received frame when zmsg_owned (no copy) */
    bool zmsg_owned;
} message_t;

typedef enum { DELIVERY_READY, DELIVERY_INFLIGHT, DELIVERY_RETRY_WAIT } delivery_state;

struct invocation;

typedef struct delivery {
    list_node link;             /* in sub->ready (b->invoke_queue for a sync invoke), or worker->leases */
    struct invocation *inv;     /* a sync invoke (not stored, not retried); NULL otherwise */
    message_t *msg;
    sub_t *sub;
    delivery_state state;
    bool in_delayed;            /* its row is in `delayed` (else in `queue`) */
    uint32_t attempts;          /* failed attempts so far (since the last replay) */
    bool has_history;           /* `failures` rows exist for it (a replay): dropped on success */
    int64_t visible_ms;         /* wall ms: when a RETRY_WAIT delivery becomes ready */
    uint64_t lease;             /* current lease id when INFLIGHT */
    int64_t lease_end_ms;       /* monotonic: the broker's backstop on that lease (LEASE_MARGIN_MS) */
    worker_t *worker;           /* holder when INFLIGHT */
    size_t heap_pos;            /* index in the timer heap when RETRY_WAIT */
    uint64_t txn;               /* its row was written by this transaction (store.txn_no): a
                                   publish, a replay, a retry's move to `delayed`; 0: read
                                   from disk */
} delivery_t;

/* Handler durations of one function (hist.c): bucket i counts [2^i, 2^(i+1)) µs. */
typedef struct {
    uint32_t n[64];             /* samples per bucket */
    uint32_t lo[64], hi[64];    /* µs: the least and greatest sample of each bucket (valid where n > 0) */
} hist_t;

struct function {
    char *name;
    const cfg_function *cfg;    /* owned by broker->cfg */
    int index;                  /* position in broker->functions */
    int running;                /* leases out now, for cfg->concurrency */
    /* counters since start */
    uint64_t invocations, errors, timeouts, rejected, crashed, lost;
    uint64_t duration_total_us;
    hist_t hist;                /* handler durations (hist.c) */
    struct {                    /* a runtime function's processes, summed from the workers' STATS */
        uint64_t cold_starts;   /* processes started */
        uint64_t init_us;       /* their init durations, summed */
        uint64_t warm;          /* invocations served by an already initialized process */
        uint64_t recycles[PROTO_RECYCLE_COUNT];   /* processes stopped, by proto_recycle */
    } rt;
};

struct sub {
    int64_t id;                 /* subs.id in the database */
    char *topic;                /* "" for a function's own (async invoke) queue */
    function_t *fn;
    const cfg_subscription *cfg;   /* filter; NULL for an async-invoke queue */
    list_t ready;               /* READY deliveries in memory, FIFO by message id */
    int64_t cursor;             /* highest message id read into memory from `queue` */
    bool caught_up;             /* every `queue` row past cursor is in memory */
    /* counts of rows (database truth, kept in memory) */
    /* its `delayed` rows in memory (queue.c): every row whose key
     * (visible_ms, msg) is at or below the cursor — all of them when dall —
     * and no other. (0, 0): none read yet (keys are positive). */
    int64_t dcursor_ms, dcursor_msg;
    bool dall;
    int64_t dmem;               /* deliveries in memory whose row is in `delayed` */
    int64_t dbytes;             /* … and their payload bytes */
    int64_t dtrim_mem, dtrim_bytes;   /* the next trim waits until dmem or dbytes passes these */
    struct {                    /* a paced replay's tally (dead_replay, while it runs) */
        int64_t n, bytes;       /* deliveries it made for the window */
        bool full;              /* the window filled: this row (ms, msg) on stays on disk */
        int64_t ms, msg;
    } replay;
    int64_t ready_bytes;        /* payload bytes of the READY deliveries in `ready` */
    int64_t queued;             /* rows in `queue` (ready + inflight ones) */
    int64_t delayed;            /* rows in `delayed` */
    int64_t dead;
    int64_t inflight;
    uint64_t succeeded, failed; /* since start */
};

typedef struct {
    char *name;
    sub_t **subs; size_t nsubs;
    uint64_t published;         /* confirmed publishes since start */
    uint64_t turn, turn_published;   /* of them, counted in turn `turn` (undone if its commit fails) */
} topic_t;

struct worker {
    list_node link;             /* in broker->workers */
    unsigned char rid[256]; size_t rid_len;   /* ZeroMQ routing id */
    char *id, *host;
    uint32_t pid, slots, busy;
    bool *serves;               /* by function index; NULL: serves all */
    proto_refusal *refusals; uint32_t nrefusals;   /* its last REFUSED, by name (owned copies) */
    bool *refused;              /* by function index, from refusals; NULL: none refused */
    uint32_t configs_unanswered;/* CONFIGs sent and not yet answered by REFUSED: no work meanwhile */
    bool draining;              /* DRAIN received: no new work */
    bool dead;                  /* to be freed at the end of the turn */
    bool left;                  /* it said BYE: no grace before its leases end */
    int64_t last_seen_ms;       /* monotonic */
    int64_t last_sent_ms;       /* monotonic, for heartbeats */
    list_t leases;              /* INFLIGHT deliveries it holds */
    uint64_t *expired; uint32_t nexpired;   /* leases the backstop ended: each keeps its slot
                                               busy until a (late, ignored) RESULT for it */
};

/* One PUBLISH message's answers, sent after the commit. */
typedef struct pending_confirm {
    struct pending_confirm *next;
    void *sock;                 /* where it came from: publish, or admin (async invokes) */
    unsigned char rid[256]; size_t rid_len;
    proto_confirm_entry *entries; uint32_t n;
    char *text;                 /* storage of entries' texts */
} pending_confirm;

/* Rows staged during one PUBLISH or RESULT message and written together by
 * store_flush() with multi-row statements: SQLite's cost is largely per
 * statement, not per row. */
#define STAGE_ROWS 64           /* rows per multi-row statement */
typedef struct {
    int64_t id, created_ms;
    char mid[PROTO_ID_MAX + 1];
    const char *topic;          /* borrowed until the flush */
    size_t attrs_off, attrs_len;/* in stage_attrs */
    const void *payload;        /* borrowed until the flush */
    size_t len;
} staged_msg;
typedef struct { int64_t sub, msg; } staged_row;

/* Prepared statements, one per write or read the loop does. */
typedef struct {
    sqlite3 *db;                /* the loop's connection (wal_autocheckpoint off) */
    bool in_txn;
    uint64_t txn_no;            /* numbers transactions: the open one, or the last */
    int64_t txn_started_ms;     /* monotonic: when the open transaction began */
    sqlite3_stmt *begin, *commit, *rollback;
    sqlite3_stmt *ins_msg, *ins_queue, *ins_delayed, *del_queue, *del_delayed;
    sqlite3_stmt *upd_producer, *get_producer, *set_meta;
    sqlite3_stmt *load_window, *load_delayed, *min_queue, *min_delayed, *gc_msgs;
    sqlite3_stmt *sweep_queue, *sweep_delayed, *next_msg;
    sqlite3_stmt *upd_delayed, *ins_dead, *ins_failure;
    sqlite3_stmt *get_refusal, *ins_refusal, *del_refusal, *get_dedup, *ins_dedup, *prune[3], *del_failures;
    sqlite3_stmt *del_queue_range;
    int64_t next_msg_id;        /* ids are ours so they are never reused */
    bool next_id_dirty;         /* write meta.next_msg_id in this transaction (one that
                                   collects message rows: until then the rows hold it) */
    int64_t gc_floor;           /* message ids below it are already collected */
    int64_t gc_floor_committed; /* … as of the last commit (a rollback goes back to it) */
    int64_t gc_sweep;           /* the sweep above a held floor: next id to look at */
    int gc_rest;                /* GC passes the sweep still waits (it found nothing to delete) */
    int64_t *sub_ids; size_t nsub_ids;   /* every row of `subs`, for store_gc */
    staged_msg *smsg; size_t nsmsg;      /* staged message inserts (PROTO_MAX_BATCH at most) */
    staged_row *sq; size_t nsq, sq_cap;  /* staged queue inserts */
    staged_row *sa; size_t nsa, sa_cap;  /* staged acks: queue deletes */
    msgpack_sbuffer stage_attrs;         /* the staged messages' attribute blobs */
    sqlite3_stmt *ins_msg_n[STAGE_ROWS + 1], *ins_queue_n[STAGE_ROWS + 1];
    bool failed;                         /* a staged write failed: the turn must not commit */
    char why[160];                       /* SQLite's words for the last failed statement */
    char failure[192];                   /* what a rolled-back turn tells those it refuses */
    char *path;
    bool checkpoint_stop;       /* checkpoint thread */
    uint64_t wal_mark;          /* the checkpointer's last pass: WAL cycle << 32 | frames it
                                   had copied (atomic) */
    uint32_t wal_cycle;         /* WAL restarts (and truncates) seen by the loop (atomic) */
    int wal_now;                /* frames in the WAL after the loop's last commit */
    bool wal_restarting;        /* the loop copied the rest: the next write starts the WAL over */
    pthread_t checkpointer;
    bool checkpointer_started;
} store_t;

typedef struct {
    uint8_t key[32];            /* binary public key; first, so the sort and bsearch compare it */
    char *file;                 /* the .pub it came from, for logs */
} auth_key;

typedef struct {
    bool on;                    /* security.curve */
    bool probing;               /* the start-up self-test: its refusal is not logged */
    char public_key[41], secret_key[41];   /* the broker's, Z85 */
    void *zap;                  /* REP on inproc://zeromq.zap.01, polled by the loop */
    auth_key *keys[3]; size_t nkeys[3];        /* allowed keys per role, sorted by key */
    uint8_t (*logged)[33]; size_t nlogged;     /* (role, key) refusals already logged */
} auth_t;

typedef struct { uint64_t key; void *val; } lease_slot;
typedef struct { lease_slot *slots; size_t cap, n; } lease_map;

/* A schedule (schedule.c): its row's state, and what the open transaction
 * staged for it (applied after the commit). Times are UTC seconds; 0: none. */
typedef struct {
    const cfg_schedule *cfg;    /* owned by broker->cfg */
    cron_t expr;
    tz_t *tz;                   /* NULL: UTC */
    int64_t id;                 /* schedules.id: its producer is "sched_ID" */
    char producer[32];
    int64_t done;               /* every slot at or before it is settled */
    int64_t next, last;         /* the next slot, the last fired */
    uint64_t fired;
    bool staged;
    int64_t s_done, s_next, s_last;
    uint64_t s_fired;
    bool refused;               /* its last firing was refused (throttled): again at retry_at */
    int64_t retry_at;
} schedule_t;

struct broker {
    herald_config *cfg;
    store_t store;
    void *zctx;
    void *pub_sock, *wrk_sock, *adm_sock;
    auth_t auth;
    function_t *functions; size_t nfunctions;
    topic_t *topics; size_t ntopics;
    sub_t **subs; size_t nsubs;          /* every subscription, fixed order */
    list_t workers;
    lease_map leases;                    /* lease id → delivery_t* */
    list_t invoke_queue;                 /* sync invokes waiting for a worker slot, FIFO */
    list_t invocations;                  /* every live sync invoke, for its deadline */
    uint64_t invoke_seq;                 /* message ids of sync invokes */
    uint64_t next_lease;
    delivery_t **timers; size_t ntimers, timers_cap;   /* min-heap by visible_ms */
    struct row_key *reload_skip; size_t nreload_skip;
                                         /* after a rollback: in-flight rows the windows must
                                            not read again (sorted; freed once caught up) */
    pending_confirm *confirms, **confirms_tail;
    uint64_t turn;                       /* numbers the loop's commit points */
    struct pending_reply *admin_pending; /* dead-letter reads, answered after the commit */
    dlq_job *dlq_jobs;                   /* replays and purges in progress, a chunk per turn (FIFO) */
    size_t dispatch_rr;                  /* fairness: first sub to serve */
    size_t worker_rr;                    /* fairness: first worker to serve */
    int64_t heartbeat_ms;
    int64_t started_ms;                  /* wall */
    int64_t last_gc_ms, last_prune_ms, last_disk_ms;   /* monotonic */
    int64_t last_lease_check_ms;         /* monotonic: leases checked against their backstop */
    bool disk_alarm;                     /* free space below disk_min_free: refuse publishes */
    int64_t disk_free;                   /* bytes free on data_dir at the last check */
    int64_t backlog;                     /* deliveries stored (queue + delayed) */
    uint64_t dropped[3];                 /* messages refused as malformed, per endpoint (logged at stop) */
    uint64_t refused_auth[3];
    sqlite3 *dlq_db;                     /* read-only connection for dead-letter reads */
    msgpack_sbuffer sb;                  /* scratch for headers */
    proto_frames in;                     /* scratch for received messages */
    schedule_t *schedules; size_t nschedules;
    bool sched_dirty;                    /* the open transaction wrote schedule rows: commit it */
    int64_t sched_offset_s;              /* HERALD_TEST_CLOCK_OFFSET */
    sqlite3_stmt *sched_get, *sched_new, *sched_upd, *sched_del;
    volatile sig_atomic_t *stop, *reload;
};

/* --- list.c: intrusive doubly linked lists --- */
void list_init(list_t *l);
void list_push_back(list_t *l, list_node *n);
void list_remove(list_t *l, list_node *n);
list_node *list_pop_front(list_t *l);
#define list_first(l) ((l)->n ? (l)->head.next : NULL)
#define container_of(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))

/* --- leases.c: lease id → delivery --- */
int lease_put(lease_map *m, uint64_t key, void *val);
void *lease_get(const lease_map *m, uint64_t key);
void *lease_del(lease_map *m, uint64_t key);
void lease_map_free(lease_map *m);

/* --- lock.c: one broker per data_dir --- */
/* Creates data_dir and takes its lock (DATA_DIR/herald.lock) for the life of
 * the process: the fd; -2 with why when another broker holds it (naming its
 * pid); -1 with why when the directory or file cannot be made. The kernel
 * drops the lock when the process ends, however it ends. */
int lock_data_dir(const char *data_dir, char *why, size_t len);

/* --- store.c: SQLite — schema, statements, transactions, recovery --- */
/* mkdir -p, mode 0700 for what it creates. 0 or -1 (errno). */
int store_mkdir(const char *dir);
int store_open(store_t *s, const char *data_dir, cfg_durability durability);
void store_close(store_t *s);
/* Between transactions: lets the WAL be written from its start again (see store.c). */
void store_restart_wal(store_t *s);
int store_begin(store_t *s);             /* BEGIN IMMEDIATE unless already open */
int store_commit(store_t *s);            /* 0, or -1 after rolling back */
/* Returns the subscription's database id, creating its row. */
int64_t store_sub_id(store_t *s, const char *topic, const char *function);
int store_insert_message(store_t *s, const char *mid, const char *topic,
                         const void *attrs, size_t attrs_len,
                         const void *payload, size_t len, int64_t now_ms, int64_t *id);
int store_insert_queue(store_t *s, int64_t sub, int64_t msg, int64_t attempts);
int store_insert_delayed(store_t *s, int64_t sub, int64_t msg, int64_t visible_ms,
                         int64_t attempts);
int store_delete_delivery(store_t *s, const delivery_t *d);
/* Staged writes (see STAGE_ROWS): pointers must stay valid until store_flush(),
 * which the PUBLISH and RESULT handlers call before they return. */
int store_stage_message(store_t *s, const char *mid, const char *topic, const void *attrs, size_t attrs_len,
                        const void *payload, size_t len, int64_t now_ms, int64_t *id);
int store_stage_queue(store_t *s, int64_t sub, int64_t msg);
int store_stage_ack(store_t *s, int64_t sub, int64_t msg);
int store_flush(store_t *s);   /* 0, or -1 and s->failed: the turn rolls back */
int store_producer_get(store_t *s, const char *producer, uint64_t *seq);
int store_producer_set(store_t *s, const char *producer, uint64_t seq);
int store_counts(store_t *s, broker_t *b);
/* 1 and status/text filled when (producer, seq) was refused before; 0 if not. */
int store_refusal_get(store_t *s, const char *producer, uint64_t seq, uint32_t *status, char *text, size_t n);
int store_refusal_set(store_t *s, const char *producer, uint64_t seq, uint32_t status, const char *text);
/* A throttled seq re-sent and now stored: its refusal is forgotten in the same transaction. */
int store_refusal_clear(store_t *s, const char *producer, uint64_t seq);
/* 1 and mid filled when (topic, id) was published within DEDUP_WINDOW_MS. */
int store_dedup_get(store_t *s, const char *topic, const char *id, int64_t now_ms, char *mid, size_t n);
int store_dedup_set(store_t *s, const char *topic, const char *id, const char *mid, int64_t now_ms);
int store_prune(store_t *s, int64_t now_ms);   /* fills sub counts at start */
/* The counts of one subscription from the tables (one added on SIGHUP may
 * have rows from an earlier life), added to the backlog. */
int store_count_sub(store_t *s, broker_t *b, sub_t *sub);
int store_gc(store_t *s, broker_t *b);
/* msgpack-encoded attributes ⇄ proto_attr */
int attrs_pack(msgpack_sbuffer *sb, const proto_attr *a, uint32_t n);
/* A stored attributes blob back into attrs[] (≤ PROTO_MAX_ATTRS), the strings
 * copied into strs. Returns how many; entries of the wrong type are skipped. */
typedef char attr_strs[PROTO_MAX_ATTRS][2][PROTO_ATTR_VALUE_MAX + 1];
uint32_t attrs_unpack(const void *blob, int len, proto_attr *attrs, attr_strs *strs);

/* --- message.c: in-memory messages --- */
message_t *message_new(int64_t id, const char *mid, const char *topic,
                       const proto_attr *attrs, uint32_t nattrs);
void message_unref(message_t **m);

/* --- delivery.c: the state machine (see the diagram there) --- */
delivery_t *delivery_new(broker_t *b, sub_t *sub, message_t *m, uint32_t attempts);
/* A row's attempts column: -1 marks a replayed delivery (0 attempts since the
 * replay, failure history kept) — no extra column on the hot path. */
#define ATTEMPTS_REPLAYED (-1)
delivery_t *delivery_from_row(broker_t *b, sub_t *sub, message_t *m, int64_t attempts_column);
void delivery_dispatch(broker_t *b, delivery_t *d, worker_t *w);   /* READY → INFLIGHT */
void delivery_succeed(broker_t *b, delivery_t *d, const proto_result_entry *r);
void delivery_fail(broker_t *b, delivery_t *d, proto_outcome o, const char *error,
                   const proto_result_entry *r, int64_t now_ms);
void delivery_return(broker_t *b, delivery_t *d);   /* INFLIGHT → READY, no attempt counted */
void delivery_wake(broker_t *b, delivery_t *d);     /* RETRY_WAIT → READY */
void delivery_free(broker_t *b, delivery_t *d);
void delivery_release(broker_t *b, delivery_t *d);  /* ends a lease, state untouched */
/* One attempt of fn ended in o: its counters (and duration, if r). */
void count_attempt(function_t *fn, proto_outcome o, const proto_result_entry *r);
/* Backoff in ms before attempt n+1 after n failures; rnd in [0,1). Pure. */
int64_t backoff_ms(const cfg_backoff *p, uint32_t failures, double rnd);

/* --- queue.c: the bounded in-memory window of each subscription --- */
void queue_refill(broker_t *b, sub_t *s);
bool queue_take_new(const sub_t *s, size_t len);   /* may a just-published delivery go to memory? */
/* A READY delivery into / out of its subscription's window (keeps ready_bytes). */
void window_push(sub_t *s, delivery_t *d);
void window_remove(sub_t *s, delivery_t *d);
/* The delayed windows (retries, --delay, paced replays): d, whose row is in
 * `delayed` and which waits (RETRY_WAIT), goes to the timer heap when its key
 * is within its subscription's window, else it is freed and its row waits on
 * disk; counted: d is in sub->dmem already (a delayed delivery retried). */
void queue_delay(broker_t *b, delivery_t *d, bool counted);
bool queue_delay_takes(const sub_t *s, int64_t visible_ms);   /* would a new one be kept? */
/* Rows of s from key (ms, msg) on were left on disk (a paced replay that
 * filled the window): none at or past it stays in memory. */
void queue_delay_cut(broker_t *b, sub_t *s, int64_t ms, int64_t msg);
/* Reads further into `delayed` when the window has room (between transactions;
 * at start it reads the first window). */
void queue_refill_delayed(broker_t *b, sub_t *s);
/* After transaction txn was rolled back: memory forgets what it stored. */
void queue_rollback(broker_t *b, uint64_t txn);

/* --- publish.c: PUBLISH handling (stage, fan-out) --- */
void publish_handle(broker_t *b, proto_frames *f);
/* A decoded PUBLISH from sock (publish, or admin for async invokes): stores
 * its entries and stages the CONFIRM, sent on sock after the commit. */
void publish_take(broker_t *b, void *sock, proto_frames *f, const proto_msg *m);
/* A PUBLISH refused whole: one CONFIRM entry per seq with status and text,
 * queued behind the turn's other confirms. Nothing recorded. */
void publish_refuse(broker_t *b, void *sock, proto_frames *f, const uint64_t *seqs, uint32_t n, uint32_t status,
                    const char *text);
bool filter_match(const cfg_subscription *s, const proto_attr *attrs, uint32_t n);
void confirms_send(broker_t *b, bool committed);
/* An event the broker makes itself (a schedule's slot), stored like a publish
 * of producer at seq — to topic, or to function's own queue when topic is
 * NULL — in the open transaction, with seq as the producer's mark. The
 * caller knows it was not stored before. PROTO_OK, or the refusal with why. */
uint32_t publish_local(broker_t *b, const char *producer, uint64_t seq, const char *topic, const char *function,
                       const proto_attr *attrs, uint32_t nattrs, const void *payload, size_t len, char *why,
                       size_t whylen);

/* --- workers.c: worker sessions, results, runtime stats, liveness --- */
void workers_handle(broker_t *b, proto_frames *f);
void workers_tick(broker_t *b, int64_t now);
void workers_reap(broker_t *b);   /* frees dead sessions at the end of a turn */
worker_t *worker_find(broker_t *b, const void *rid, size_t len);
void workers_send_config(broker_t *b);   /* after a reload */
/* Does w take fn's deliveries: asked for it, and did not refuse it? */
bool worker_serves(const worker_t *w, const function_t *fn);
/* May w be given work now: alive, not draining, its last CONFIG answered? */
bool worker_ready(const worker_t *w);
void worker_free(worker_t *w);   /* its fields and itself (not its leases) */

/* --- dispatch.c: the one place that hands READY work to workers --- */
void dispatch_pump(broker_t *b, bool mid_turn);

/* --- invoke.c: synchronous invokes (INVOKE → a worker → INVOKE_REPLY), never stored --- */
typedef struct invocation {
    list_node link;             /* in b->invocations */
    unsigned char rid[256]; size_t rid_len;   /* who asked */
    void *sock;                 /* on which endpoint */
    uint64_t req;
    int64_t deadline_ms;        /* monotonic: queueing + run */
    bool answered;              /* a timeout was answered: the late result is dropped */
    delivery_t *d;
} invocation;
void invoke_handle(broker_t *b, void *sock, proto_frames *f, const proto_msg *m);
/* The end of a sync invoke's attempt: answers the caller, counts, frees. */
void invoke_finish(broker_t *b, delivery_t *d, proto_outcome o, const char *error,
                   const proto_result_entry *r, const void *out, size_t out_len);
void invoke_tick(broker_t *b, int64_t now);   /* deadlines */
void invoke_teardown(broker_t *b);

/* --- timers.c: RETRY_WAIT deliveries by visible_ms --- */
void timers_add(broker_t *b, delivery_t *d);
void timers_remove(broker_t *b, delivery_t *d);
void timers_drop_txn(broker_t *b, uint64_t txn);   /* frees those whose row txn wrote */
int64_t timers_run(broker_t *b, int64_t now_wall);   /* returns ms until the next, or -1 */

/* --- deadletter.c: dlq replay / purge (all or nothing, in the turn's transaction) --- */
typedef struct {
    const int64_t *ids; size_t nids;    /* when nids > 0: exactly these */
    bool all;                           /* else, when set, all, filtered; neither: none */
    const char *function, *topic;       /* filters of all (NULL: any) */
    int64_t failed_before_ms;           /* purge: failed before this wall time (0: any age) */
    int64_t after_id, max_id;           /* ids in (after_id, max_id] only … */
    int limit;                          /* … at most this many rows per call */
} dead_select;
typedef struct {
    int64_t count;                      /* replayed / purged (or would be, dry run) */
    int64_t skipped;                    /* replay: left in place (subscription gone) */
    char why[2048];                     /* one line per skipped dead letter */
} dead_result;
/* One chunk of a replay or purge: at most sel->limit rows, all or none of
 * them in the turn's transaction; res adds up over the chunks; *last is the
 * last id looked at, *more whether rows may remain. A replay with a rate
 * makes the i-th (res->count) visible at now_ms + i/rate. */
int dead_replay(broker_t *b, const dead_select *sel, double rate, int64_t now_ms, bool dry_run, dead_result *res,
                int64_t *last, bool *more, char *err, size_t n);
int dead_purge(broker_t *b, const dead_select *sel, bool dry_run, dead_result *res, int64_t *last, bool *more,
               char *err, size_t n);

/* --- hist.c: duration histograms and their percentiles --- */
void hist_add(hist_t *h, uint32_t us);
/* The q-quantile (0 < q <= 1) in ms; 0 when there is no sample. */
double hist_percentile_ms(const hist_t *h, double q);

/* --- admin.c: the admin endpoint --- */
void admin_handle(broker_t *b, proto_frames *f);
void admin_flush(broker_t *b, bool committed);   /* after the commit */
void admin_jobs_run(broker_t *b);   /* the next chunk of the oldest replay/purge, in the turn's transaction */
void admin_teardown(broker_t *b);

/* --- setup.c: from config to functions/topics/subs, at start and on SIGHUP --- */
int broker_setup(broker_t *b, herald_config *cfg);
int broker_reload(broker_t *b);   /* SIGHUP: 0, or -1 with the running config kept (logged) */
void broker_teardown(broker_t *b);
function_t *broker_function(broker_t *b, const char *name);
topic_t *broker_topic(broker_t *b, const char *name);

/* --- schedule.c: schedules (DESIGN §12), fired in the loop's transaction --- */
int schedules_open(broker_t *b);     /* its table and statements */
int schedules_start(broker_t *b);    /* at start: rows matched with b->cfg, missed slots by catch_up */
int schedules_reload(broker_t *b, const herald_config *cfg);   /* SIGHUP: added, removed, changed */
int64_t schedules_run(broker_t *b);  /* fires what is due; ms until the next slot, or -1 */
void schedules_committed(broker_t *b, bool committed);         /* after the turn's commit */
void schedules_pack(broker_t *b, msgpack_packer *pk);          /* heraldctl schedules */
void schedules_close(broker_t *b);

/* --- auth.c: CURVE and the ZAP handler (role 0 publish, 1 worker, 2 admin) --- */
int auth_open(broker_t *b, const cfg_security *sec, char *err, size_t len);   /* binds ZAP first */
int auth_server(broker_t *b, void *sock, int role);   /* a ROUTER speaks CURVE for its role */
int auth_load(broker_t *b, const cfg_security *sec, char *err, size_t len);  /* the .pub dirs (SIGHUP) */
void auth_handle(broker_t *b);                      /* one ZAP request */
int auth_selftest(broker_t *b, const char *publish_endpoint, char *err, size_t len);
/* Where the self-test connects for a bind on endpoint: '*' (every interface)
 * becomes the loopback, which a client can connect to. */
void auth_selftest_endpoint(const char *endpoint, char *out, size_t len);
void auth_close(broker_t *b);

/* --- loop.c --- */
int loop_run(broker_t *b);
void reply_error(broker_t *b, void *sock, proto_frames *f, uint32_t status, const char *text);
/* refuse.c: a request refused whole — its own reply type with its correlation
 * (seqs, req) when that can be read, else ERROR (PROTOCOL.md §5). */
void refuse(broker_t *b, void *sock, proto_frames *f, uint32_t status, const char *text);
/* refuse.c: WELCOME, or ERROR 1 when the HELLO's role is not this endpoint's. */
void hello_answer(broker_t *b, void *sock, proto_frames *f, const proto_hello *h);
void send_welcome(broker_t *b, void *sock, proto_frames *f);

#endif
