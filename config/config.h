/* config: the loader of herald's libconfig files (DESIGN §3), shared by every
 * program.
 *
 * config_load() reads a whole file, checks every group it knows (broker,
 * security, functions, topics, schedules, worker, gateway) — names, types, ranges,
 * uniqueness, references — and reports each problem as "FILE:LINE: what is
 * wrong". It never silently falls back to a default for a present but wrong
 * value, and it re-scans the file text for integer literals beyond int32
 * without an L suffix (libconfig 1.5 truncates them silently).
 *
 * A herald_config owns all its strings; relative paths (data_dir, keys) are
 * already resolved against the config file's directory. exec and runtime
 * program paths and native libraries are NOT resolved here: the worker
 * resolves them against its --root.
 */
#ifndef HERALD_CONFIG_H
#define HERALD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { JITTER_FULL, JITTER_EQUAL, JITTER_NONE } cfg_jitter;
typedef enum { DURABILITY_FSYNC, DURABILITY_OS } cfg_durability;
/* What a runtime's /next body is (DESIGN §11): the payload as published, or
 * for topic deliveries SNS's {"Records":[…]} envelope. */
typedef enum { RT_FORMAT_RAW, RT_FORMAT_SNS } cfg_rt_format;

typedef struct { char *key, *value; } cfg_pair;

/* Where a setting was written, for messages about it found later (check
 * --root): file as shown in messages (owned by the config), line ≥ 1; a
 * setting that was absent has file NULL. */
typedef struct { const char *file; int line; } cfg_loc;

typedef struct {
    double initial_s;           /* default 1.0; > 0 */
    double max_s;               /* default 300.0; ≥ initial */
    double multiplier;          /* default 2.0; ≥ 1 */
    cfg_jitter jitter;          /* default full */
} cfg_backoff;

/* The settings of a runtime function (DESIGN §11) other than its command,
 * which is cfg_function.exec (the program to start, as for exec). */
typedef struct {
    char *handler;              /* → _HANDLER; NULL: not set. 1–128 bytes of ASCII 0x21–0x7e */
    cfg_rt_format format;       /* default raw */
    int max_invocations;        /* events per process before it is recycled; 0 (default): no limit; ≤ 1e9 */
    double idle_timeout_s;      /* an idle process is stopped after this; default 300, (0, 86400] */
    double init_timeout_s;      /* from start to its first /next; default 10, (0, 900] */
} cfg_runtime;

typedef struct {
    char *name;                 /* [A-Za-z0-9_.-]{1,128} */
    bool native;                /* the kind: native, runtime, or neither (exec); never both */
    bool runtime;
    char **exec; size_t nexec;  /* argv, ≥ 1 element, when !native: exec, or runtime.command */
    char *library, *symbol;     /* when native */
    cfg_runtime rt;             /* when runtime */
    double timeout_s;           /* default 30, (0, 900] */
    int memory_mb;              /* default 128, 16–10240 */
    int concurrency;            /* 0 = unlimited (default), else 1–100000 */
    int max_attempts;           /* default 3, 1–100 */
    cfg_backoff backoff;
    cfg_pair *env; size_t nenv; /* env names [A-Za-z_][A-Za-z0-9_]*, not HERALD_* */
    int line;                   /* line of its group in the file, for messages */
    cfg_loc exec_at, library_at, symbol_at;   /* where exec (or runtime.command), native.library,
                                                 native.symbol are */
} cfg_function;

typedef struct {
    char *key;
    char **values; size_t nvalues;   /* ≥ 1 */
} cfg_filter;

typedef struct {
    char *function;             /* names a defined function */
    cfg_filter *filters; size_t nfilters;   /* all must match (AND); 0 = all events */
    int line;
} cfg_subscription;

typedef struct {
    char *name;
    cfg_subscription *subs; size_t nsubs;   /* a function at most once per topic */
    int line;
} cfg_topic;

typedef struct {
    char *publish_endpoint;     /* default tcp://127.0.0.1:7710 */
    char *worker_endpoint;      /* default tcp://127.0.0.1:7711 */
    char *admin_endpoint;       /* default tcp://127.0.0.1:7712 */
    char *data_dir;             /* default "var/herald", resolved */
    cfg_durability durability;  /* default fsync */
    int64_t max_payload;        /* default 262144, 1 KiB – 64 MiB */
    int64_t max_backlog;        /* default 10000000, ≥ 1 */
    int64_t disk_min_free;      /* default 268435456, ≥ 0 */
    double heartbeat_s;         /* default 1.0, 0.1 – 60 */
} cfg_broker;

typedef struct {
    bool present;               /* the group was in the file */
    bool curve;
    char *secret_key;           /* resolved paths */
    char *publishers, *workers, *admins;
    cfg_loc secret_key_at, publishers_at, workers_at, admins_at;
} cfg_security;

typedef struct {
    bool present;
    char *broker;               /* default tcp://127.0.0.1:7711 */
    char *key, *broker_key;     /* resolved paths, NULL if absent */
    int concurrency;            /* 0: not set */
    char **functions; size_t nfunctions;
    char *root, *run_dir;       /* NULL if absent; resolved */
    cfg_loc key_at, broker_key_at;
} cfg_worker;

typedef struct {
    bool present;
    char *listen;               /* default 127.0.0.1:7780 */
    char *broker;               /* default tcp://127.0.0.1:7710 */
    char *admin;                /* default tcp://127.0.0.1:7712 */
    char *region;               /* default us-east-1 */
    char *account;              /* default 000000000000 */
    char *key, *broker_key;     /* resolved, NULL if absent */
    cfg_loc key_at, broker_key_at;
    bool console_write;         /* the console may replay and purge dead letters; default false */
} cfg_gateway;

/* What a schedule does with slots missed while the broker was down (DESIGN §12). */
typedef enum { CATCH_UP_LATEST, CATCH_UP_NONE, CATCH_UP_ALL } cfg_catch_up;

/* A schedule (DESIGN §12): exactly one of cron, rate, at — kept as spec, in
 * EventBridge's wrapped form ("cron(0 2 * * ? *)", "rate(5 minutes)",
 * "at(2026-12-24T18:00:00)"), already checked by sched/cron.h — and exactly
 * one target. */
typedef struct {
    char *name;                 /* [A-Za-z0-9_.-]{1,64} */
    char *spec;
    char *timezone;             /* a zone of the system's tzdata; default "UTC" */
    char *topic, *function;     /* exactly one: a publish, or an Event invoke */
    char *payload;              /* NULL: EventBridge's "Scheduled Event" JSON */
    cfg_pair *attrs; size_t nattrs;   /* at most 16, keys [A-Za-z0-9_.-]{1,128} */
    cfg_catch_up catch_up;      /* default latest */
    double starting_deadline_s; /* a missed slot older than this is skipped; 0 (default): no limit */
    int line;
} cfg_schedule;

typedef struct herald_config {
    char *path;                 /* the file it was read from */
    cfg_broker broker;
    cfg_security security;
    cfg_function *functions; size_t nfunctions;
    cfg_topic *topics; size_t ntopics;
    cfg_schedule *schedules; size_t nschedules;
    cfg_worker worker;
    cfg_gateway gateway;
    char **files; size_t nfiles;   /* the names cfg_loc.file points at */
} herald_config;

/* Reads and checks FILE. Returns a config, or NULL after writing every problem
 * found, one "FILE:LINE: what" line each, to errs (a FILE*-like sink: errors
 * are appended to *errbuf, a malloc'ed NUL-terminated string the caller frees;
 * errbuf may be NULL to print to stderr instead). *errbuf must be NULL or a
 * malloc'ed string; a successful load leaves it untouched. Lines are sorted
 * by file (the main file first) and line. */
herald_config *config_load(const char *path, char **errbuf);

/* The same, from a text in libconfig syntax; name stands for the file name in
 * messages (NULL: "<string>") and base_dir resolves relative paths and
 * @include names (NULL: paths are kept as written, relative to the current
 * directory) (for tests). */
herald_config *config_load_string(const char *text, const char *name, const char *base_dir,
                                  char **errbuf);

/* What the running programs would find (heraldctl check --root): every exec
 * program and runtime command (a path with '/' resolved against root, a bare name looked up in
 * PATH — the function's env PATH, else ours — and executable), every exec
 * argument that names a file under root by the rule of config/probe.c, every
 * native library (an ELF shared object of this machine defining its symbol
 * as a function: read, never loaded) and, where CURVE is in use, every key
 * file and key directory (readable, well formed, secret keys not open to
 * group or others). root must be an absolute directory. Writes each problem
 * as "FILE:LINE: what" to *errbuf (appending; NULL: stderr) and returns how
 * many it found. */
size_t config_probe(const herald_config *c, const char *root, char **errbuf);

/* Frees c and everything it owns, and nulls *c; NULL or *c NULL is a no-op.
 * libconfig.h declares its own config_destroy(config_t *) and one program
 * cannot hold two functions of that name, so ours is the symbol
 * herald_config_destroy under the name callers use. A file that includes
 * <libconfig.h> too (only config/ should) includes it before this header and
 * calls libconfig's as (config_destroy)(&cf). */
#define config_destroy(c) herald_config_destroy(c)
void config_destroy(herald_config **c);

const cfg_function *config_function(const herald_config *c, const char *name);
const cfg_topic *config_topic(const herald_config *c, const char *name);
/* Static names for logs and messages: "full", "equal", "none"; "fsync", "os"; */
const char *config_jitter_name(cfg_jitter j);
const char *config_durability_name(cfg_durability d);
/* "raw", "sns". */
const char *config_rt_format_name(cfg_rt_format f);
/* "latest", "none", "all". */
const char *config_catch_up_name(cfg_catch_up c);

#endif
