/* proto: herald's wire messages, their strict msgpack codec, and frame I/O.
 *
 * The only code every program links. A message on the wire is one header frame
 * (a msgpack array [version, type, fields…]) followed by as many raw payload
 * frames as the header says (PROTOCOL.md lists every message). Payload frames
 * are never re-encoded.
 *
 * Decoding is strict: proto_decode() pre-scans the header frame (every declared
 * length and count against the bytes left, a nesting cap, no trailing bytes)
 * before msgpack_unpack, then checks every field's type and range. Decoded
 * strings are NUL-terminated copies in the message's own arena, so a proto_msg
 * owns everything it points to (except payload frames, which stay in the
 * caller's proto_frames).
 *
 * Encoders append one header frame to a msgpack_sbuffer; they are pure
 * functions (no sockets). frame.c holds the only zmq_msg_t code.
 */
#ifndef HERALD_PROTO_H
#define HERALD_PROTO_H

#include <sys/socket.h>   /* before msgpack.h pulls it in: see MSG_CONFIRM below */
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1
#define PROTO_MAX_DEPTH 8           /* nesting cap of a header frame; ours need 4 */
#define PROTO_MAX_ATTRS 16          /* attributes per event (DESIGN §1) */
#define PROTO_NAME_MAX 128          /* topic and function names */
#define PROTO_ID_MAX 63             /* message ids, dedup ids */
#define PROTO_ATTR_KEY_MAX 128      /* attribute key bytes */
#define PROTO_ATTR_VALUE_MAX 1024   /* attribute value bytes */
#define PROTO_MAX_BATCH 1024        /* entries (and so payload frames) in one message */
#define PROTO_MAX_FRAMES (PROTO_MAX_BATCH + 1)   /* header + payloads */
#define PROTO_OUTPUT_MAX (6u << 20) /* handler output cap: stdout / set_output */
/* Lambda's error type, and the start of the RESULT error text of an ok
 * attempt whose output was over PROTO_OUTPUT_MAX (PROTOCOL.md RESULT) */
#define PROTO_RESPONSE_TOO_LARGE "Function.ResponseSizeTooLarge"
#define PROTO_ERROR_TEXT_MAX 4096   /* error text kept per failed attempt */
/* Added with codec.c: */
#define PROTO_PRODUCER_MAX 40       /* producer ids: [0-9A-Za-z_], no '-' since ids are "PRODUCER-SEQ" */
#define PROTO_STR_MAX (64u << 10)   /* any string in a header frame */
/* error texts on the wire (RESULT error, CONFIRM/ERROR text, ADMIN_REPLY error):
 * the kept text plus room for a prefix such as "exit 3: "; longer is refused, never cut */
#define PROTO_ERROR_WIRE_MAX (PROTO_ERROR_TEXT_MAX + 256)
#define PROTO_FRAME_MAX ((64u << 20) + (64u << 10))   /* header frames above this are refused unread */

/* glibc's <sys/socket.h> (included by msgpack.h) already declares an enum
 * constant MSG_CONFIRM, a send(2) flag. Ours is really HERALD_MSG_CONFIRM; the
 * macro makes MSG_CONFIRM name it in every file that includes this header. */
#undef MSG_CONFIRM
#define MSG_CONFIRM HERALD_MSG_CONFIRM

/* Message types. The wire carries the name string (PROTOCOL.md). */
typedef enum {
    MSG_HELLO,          /* client → broker, any endpoint: who I am */
    MSG_WELCOME,        /* broker → client: limits */
    MSG_PUBLISH,        /* publisher → broker: batch of events (+1 payload frame each) */
    MSG_CONFIRM,        /* broker → publisher: one status per event */
    MSG_REGISTER,       /* worker → broker: identity, slots, functions served */
    MSG_CONFIG,         /* broker → worker: definitions of the functions it serves */
    MSG_DELIVER,        /* broker → worker: batch of leased deliveries (+1 payload frame each) */
    MSG_RESULT,         /* worker → broker: batch of attempt results (+1 output frame each) */
    MSG_HEARTBEAT,      /* either way on the worker endpoint; carries nothing */
    MSG_DRAIN,          /* worker → broker: send no new work (SIGTERM) */
    MSG_ADMIN,          /* admin client → broker: command + argument map */
    MSG_ADMIN_REPLY,    /* broker → admin client: status + result object */
    MSG_ERROR,          /* broker → any client: a request was refused (code, text) */
    MSG_INVOKE,         /* client → broker (publish or admin endpoint): run a function now (+1 payload) */
    MSG_INVOKE_REPLY,   /* broker → client: its status, error and output (+1 output frame) */
    MSG_REFUSED,        /* worker → broker: the functions of its CONFIG it cannot run, and why */
    MSG_BYE,            /* worker → broker: leaving (after its last RESULT) */
    MSG_STATS,          /* worker → broker: runtime counters (cold starts, …) since its last STATS */
    MSG_TYPE_COUNT
} msg_type;

/* Status codes of CONFIRM entries, ADMIN_REPLY and ERROR. 0 is success. */
typedef enum {
    PROTO_OK = 0,
    PROTO_E_MALFORMED = 1,      /* undecodable, wrong version, unknown type, bad fields */
    PROTO_E_TOO_LARGE = 2,      /* payload above max_payload */
    PROTO_E_UNKNOWN_TOPIC = 3,
    PROTO_E_UNKNOWN_FUNCTION = 4,
    PROTO_E_THROTTLED = 5,      /* backlog above max_backlog, or disk alarm */
    PROTO_E_INTERNAL = 6,       /* the commit failed: nothing stored */
    PROTO_E_NO_WORKER = 7,      /* invoke: no connected worker serves the function */
    PROTO_E_HANDLER = 8,        /* invoke: the handler failed */
    PROTO_E_TIMEOUT = 9,
    PROTO_E_NOT_FOUND = 10,     /* admin: no such object (dead letter id, …) */
    PROTO_E_CONFLICT = 11,      /* admin: refused because of state (e.g. subscription gone) */
    PROTO_E_BUSY = 12,          /* invoke: no worker slot became free in time (nothing ran) */
    PROTO_STATUS_COUNT
} proto_status;

/* The class of an attempt's end (DESIGN §4), plus RETURNED: handed back unstarted. */
typedef enum {
    OUT_OK, OUT_ERROR, OUT_REJECTED, OUT_TIMEOUT, OUT_CRASHED, OUT_LOST, OUT_RETURNED,
    OUT_COUNT
} proto_outcome;

typedef struct { char *key, *value; } proto_attr;

/* --- fields of each message (strings point into the message's arena) --- */

typedef struct {
    char *client_id;            /* producer id / worker id / admin name, [0-9A-Za-z_-]{1,63} */
    char *role;                 /* "publisher", "worker", "admin" */
} proto_hello;

typedef struct {
    uint64_t max_payload;       /* bytes */
    uint32_t max_batch;         /* entries per message */
    uint32_t heartbeat_ms;
} proto_welcome;

typedef struct {
    uint64_t seq;               /* producer sequence, 1-based, increasing */
    char *topic;                /* topic name; "" with function set = async invoke */
    char *function;             /* NULL unless topic is "" (async invoke) */
    proto_attr *attrs; uint32_t nattrs;
    uint32_t delay_ms;          /* ≤ 900000 */
    char *dedup_id;             /* NULL: none */
} proto_pub;                    /* payload: the i-th payload frame */

typedef struct {
    char *producer;             /* producer id */
    proto_pub *pubs; uint32_t npubs;
} proto_publish;

typedef struct {
    uint64_t seq;
    uint32_t status;            /* proto_status */
    char *text;                 /* message id when OK, else the reason */
} proto_confirm_entry;

typedef struct { proto_confirm_entry *entries; uint32_t n; } proto_confirm;

typedef struct {
    char *worker_id;
    char *host;
    uint32_t pid;
    uint32_t slots;             /* concurrency: deliveries it may hold */
    char **functions; uint32_t nfunctions;   /* 0: every function */
} proto_register;

/* A runtime function's /next body (DESIGN §11): the payload, or SNS's envelope. */
#define PROTO_RT_RAW 0
#define PROTO_RT_SNS 1
#define PROTO_RT_HANDLER_MAX 128    /* _HANDLER bytes */

/* The settings of a runtime function beyond exec's (CONFIG's 10th element). */
typedef struct {
    char *handler;              /* → _HANDLER; NULL: none */
    uint8_t format;             /* PROTO_RT_RAW, PROTO_RT_SNS */
    uint32_t max_invocations;   /* events per process, then recycled; 0: never */
    uint32_t idle_timeout_ms;   /* ≥ 1: an idle process is stopped after this */
    uint32_t init_timeout_ms;   /* ≥ 1: start to first /next, at most */
    uint32_t concurrency;       /* the function's; 0: unlimited */
} proto_runtime;

/* One function definition. Its kind is exec (neither flag), native or
 * runtime; never both flags. */
typedef struct {
    char *name;
    bool native;
    bool runtime;
    char **exec; uint32_t nexec;             /* argv (exec's, or the runtime's command) when !native */
    char *library, *symbol;                  /* when native */
    uint32_t timeout_ms;
    uint32_t memory_mb;
    uint32_t max_attempts;
    proto_attr *env; uint32_t nenv;
    proto_runtime rt;                        /* when runtime (the wire's 10th element) */
    bool log_output;                         /* a successful attempt's output goes to the
                                                worker's log (the wire's 11th element) */
} proto_fndef;

typedef struct {
    uint32_t heartbeat_ms;
    uint64_t max_payload;
    proto_fndef *fns; uint32_t nfns;
} proto_config;

/* One function a worker refuses: it cannot load or find its handler. */
typedef struct {
    char *function;             /* a function name of its CONFIG */
    char *reason;               /* one line, ≤ PROTO_ERROR_WIRE_MAX bytes */
} proto_refusal;

/* The complete list of functions a worker refuses (replaces any earlier one). */
typedef struct { proto_refusal *rs; uint32_t n; } proto_refused;

/* Why a worker stopped a runtime process (STATS recycles). The wire carries
 * the name (proto_recycle_name); a decoder refuses any other. */
typedef enum {
    PROTO_RECYCLE_MAX_INVOCATIONS,   /* "max_invocations": served its count of events */
    PROTO_RECYCLE_IDLE,              /* "idle": idle past idle_timeout */
    PROTO_RECYCLE_MEMORY,            /* "memory": over memory_mb */
    PROTO_RECYCLE_TIMEOUT,           /* "timeout": an event ran past the function's timeout */
    PROTO_RECYCLE_CRASH,             /* "crash": it exited or was killed on its own */
    PROTO_RECYCLE_INIT_ERROR,        /* "init_error": /init/error, an exit or init_timeout before its first /next */
    PROTO_RECYCLE_REDEFINED,         /* "redefined": a CONFIG changed the function */
    PROTO_RECYCLE_SHUTDOWN,          /* "shutdown": the worker is stopping */
    PROTO_RECYCLE_COUNT
} proto_recycle;

/* One function's runtime counters: deltas since the worker's previous STATS. */
typedef struct {
    char *function;             /* a name */
    uint64_t cold_starts;       /* processes started */
    uint64_t init_us;           /* sum of their init durations (start to first /next) */
    uint64_t warm;              /* invocations served by an already initialized process */
    uint64_t recycles[PROTO_RECYCLE_COUNT];   /* processes stopped, by reason */
} proto_stats_entry;

/* STATS: at most PROTO_MAX_BATCH entries; a worker with more sends several. */
typedef struct { proto_stats_entry *es; uint32_t n; } proto_stats;

typedef struct {
    uint64_t lease;             /* lease id; the result must carry it */
    char *function, *topic, *message_id;
    uint32_t attempt, max_attempts;
    proto_attr *attrs; uint32_t nattrs;
} proto_delivery;               /* payload: the i-th payload frame */

typedef struct { proto_delivery *ds; uint32_t n; } proto_deliver;

typedef struct {
    uint64_t lease;
    uint32_t outcome;           /* proto_outcome */
    int64_t started_ms;         /* Unix ms */
    uint32_t duration_us;
    char *error;                /* NULL when OK */
} proto_result_entry;           /* output: the i-th payload frame (may be empty) */

typedef struct { proto_result_entry *rs; uint32_t n; } proto_result;

typedef struct {
    uint64_t req;               /* request id, echoed in the reply */
    char *command;              /* "stats", "dlq.list", … */
    msgpack_object args;        /* a map; lives in the message's zone */
} proto_admin;

typedef struct {
    uint64_t req;
    uint32_t status;
    char *error;                /* NULL when OK */
    msgpack_object result;      /* lives in the message's zone */
} proto_admin_reply;

typedef struct {
    uint32_t status;
    char *text;
} proto_error;

typedef struct {
    uint64_t req;               /* request id, echoed in the reply */
    char *function;
    uint32_t timeout_ms;        /* queueing + run; 0: the function's timeout + 5 s */
} proto_invoke;                 /* payload: the one payload frame */

typedef struct {
    uint64_t req;
    uint32_t status;            /* OK, HANDLER, NO_WORKER, UNKNOWN_FUNCTION, TIMEOUT, … */
    char *error;                /* NULL when OK */
    char *message_id;           /* the id the handler saw ("" if it never ran) */
} proto_invoke_reply;           /* output: the one payload frame (empty unless OK) */

typedef struct proto_msg {
    msg_type type;
    uint32_t nframes;           /* payload frames that must follow the header */
    union {
        proto_hello hello;
        proto_welcome welcome;
        proto_publish publish;
        proto_confirm confirm;
        proto_register reg;
        proto_config config;
        proto_deliver deliver;
        proto_result result;
        proto_admin admin;
        proto_admin_reply admin_reply;
        proto_error error;
        proto_invoke invoke;
        proto_invoke_reply invoke_reply;
        proto_refused refused;
        proto_stats stats;
    } u;
    /* private: */
    msgpack_unpacked up;        /* owns the zone that admin args/results live in */
    char *arena;                /* strings and arrays of the decoded fields */
    size_t arena_cap, arena_used;
} proto_msg;

/* Decodes one header frame. 0: *m is filled (release it with proto_msg_clear).
 * -1: the frame is refused; err holds one line saying why, and *m needs no clear.
 * The caller checks that exactly m->nframes payload frames followed. */
int proto_decode(const void *frame, size_t len, proto_msg *m, char *err, size_t errlen);
void proto_msg_clear(proto_msg *m);

/* The correlation of a request refused as a whole (malformed, a wrong frame
 * count): what its refusal carries so that the client can match it
 * (PROTOCOL.md §5). Filled from a header frame that proto_decode refused,
 * when enough of it reads: [1, "PUBLISH", any, [[seq, …], …]] with every
 * entry's seq a uint ≥ 1, or [1, "ADMIN" | "INVOKE", req, …]. */
typedef struct {
    msg_type type;              /* MSG_PUBLISH, MSG_ADMIN or MSG_INVOKE */
    uint64_t req;               /* ADMIN, INVOKE: the request id */
    uint64_t seqs[PROTO_MAX_BATCH]; uint32_t nseqs;   /* PUBLISH: each entry's seq, in order */
} proto_ref;
/* 0: *r holds the correlation; -1: the frame has none that can be trusted. */
int proto_peek_ref(const void *frame, size_t len, proto_ref *r);

/* The pre-scan alone: 0 when the bytes are exactly one well-formed msgpack
 * object within the depth cap, whose declared sizes fit in the bytes. */
int proto_prescan(const void *frame, size_t len, char *err, size_t errlen);

const char *proto_type_name(msg_type t);
const char *proto_status_name(proto_status s);      /* "throttled", "unknown topic", … */
const char *proto_outcome_name(proto_outcome o);     /* "ok", "error", "rejected", … */
int proto_outcome_parse(const char *s);              /* -1 if unknown */
const char *proto_recycle_name(proto_recycle r);     /* "max_invocations", "idle", … */
int proto_recycle_parse(const char *s);              /* -1 if unknown */
bool proto_valid_name(const char *s);                /* [A-Za-z0-9_.-]{1,128} */
bool proto_valid_id(const char *s);                  /* [0-9A-Za-z_-]{1,63} */
bool proto_valid_producer(const char *s);            /* [0-9A-Za-z_]{1,40} */
bool proto_valid_attr_key(const char *s);            /* a name: [A-Za-z0-9_.-]{1,128} */
/* The same checks on counted bytes (a msgpack str); a NUL byte is invalid. */
bool proto_valid_name_len(const char *s, size_t len);
bool proto_valid_id_len(const char *s, size_t len);

/* Encoders: each writes one complete header frame into sb (which it does not
 * reset). 0 or -1 (out of memory). */
int proto_encode_hello(msgpack_sbuffer *sb, const proto_hello *h);
int proto_encode_welcome(msgpack_sbuffer *sb, const proto_welcome *w);
int proto_encode_publish(msgpack_sbuffer *sb, const proto_publish *p);
int proto_encode_confirm(msgpack_sbuffer *sb, const proto_confirm *c);
int proto_encode_register(msgpack_sbuffer *sb, const proto_register *r);
int proto_encode_config(msgpack_sbuffer *sb, const proto_config *c);
int proto_encode_deliver(msgpack_sbuffer *sb, const proto_deliver *d);
int proto_encode_result(msgpack_sbuffer *sb, const proto_result *r);
int proto_encode_heartbeat(msgpack_sbuffer *sb);
int proto_encode_drain(msgpack_sbuffer *sb);
int proto_encode_refused(msgpack_sbuffer *sb, const proto_refused *r);
int proto_encode_bye(msgpack_sbuffer *sb);
/* Writes only the non-zero recycle counts. */
int proto_encode_stats(msgpack_sbuffer *sb, const proto_stats *s);
/* args: NULL for an empty map, else a packed msgpack map (args_len bytes). */
int proto_encode_admin(msgpack_sbuffer *sb, uint64_t req, const char *command,
                       const void *args, size_t args_len);
/* result: a packed msgpack object (result_len bytes), or NULL for nil. */
int proto_encode_admin_reply(msgpack_sbuffer *sb, uint64_t req, uint32_t status,
                             const char *error, const void *result, size_t result_len);
int proto_encode_error(msgpack_sbuffer *sb, uint32_t status, const char *text);
int proto_encode_invoke(msgpack_sbuffer *sb, const proto_invoke *i);
int proto_encode_invoke_reply(msgpack_sbuffer *sb, const proto_invoke_reply *r);

/* --- frames (frame.c): the only zmq_msg_t code --- */

#include <zmq.h>

/* One received multipart message. On a ROUTER socket part 0 is the peer's
 * routing id; the header is then part 1. */
typedef struct {
    zmq_msg_t *parts;
    int n, cap;
    bool truncated;             /* more parts arrived than max_parts: the rest were dropped */
} proto_frames;

void frames_init(proto_frames *f);
void frames_close(proto_frames *f);  /* closes every part; f stays usable */
/* Receives one whole multipart message (every part, even past max_parts, so the
 * socket stays in step). 0, or -1 with errno (EAGAIN with ZMQ_DONTWAIT). */
int frames_recv(void *sock, proto_frames *f, int max_parts, int flags);
static inline const void *frames_data(proto_frames *f, int i) { return zmq_msg_data(&f->parts[i]); }
static inline size_t frames_size(proto_frames *f, int i) { return zmq_msg_size(&f->parts[i]); }

/* Sends [routing id], header, then npayload parts. payloads may be NULL when
 * npayload is 0; a payload with data NULL and len 0 is an empty frame.
 * 0 or -1 with errno. */
typedef struct { const void *data; size_t len; } proto_iov;
int frames_send(void *sock, const void *rid, size_t rid_len, const msgpack_sbuffer *hdr,
                const proto_iov *payloads, size_t npayload, int flags);

/* --- small shared utilities (util.c) --- */

int64_t util_mono_ms(void);          /* CLOCK_MONOTONIC */
int64_t util_mono_us(void);
int64_t util_wall_ms(void);          /* Unix ms */
/* Logs "PROGRAM: LEVEL: file:line: message\n" to stderr in one write(2);
 * PROGRAM is util_set_program's name, "herald" until it is called. */
void util_log(const char *level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void util_set_program(const char *name);
#define LOG_ERROR(...) util_log("error", __FILE__, __LINE__, __VA_ARGS__)
#define LOG_WARN(...)  util_log("warn", __FILE__, __LINE__, __VA_ARGS__)
#define LOG_INFO(...)  util_log("info", __FILE__, __LINE__, __VA_ARGS__)
extern int util_verbose;             /* 1: LOG_DEBUG prints, and every line has its file:line */
#define LOG_DEBUG(...) do { if (util_verbose) util_log("debug", __FILE__, __LINE__, __VA_ARGS__); } while (0)
/* Fills buf with n random bytes from getrandom(). */
void util_random(void *buf, size_t n);
/* The length of the valid UTF-8 sequence at p (n bytes left): 1-4, or 0 when
 * it is not one (overlongs, surrogates and past U+10FFFF are not). */
size_t util_utf8_len(const unsigned char *p, size_t n);

/* --- endpoints (endpoint.c) --- */

/* Checks a ZeroMQ endpoint as herald uses them: tcp://HOST:PORT (PORT 1–65535;
 * HOST a name, an IPv4 address, [IPv6], or '*' when bind) or ipc://PATH.
 * 0, or -1 with why: a phrase that follows the quoted endpoint in a message
 * ("has port 99999, outside 1 to 65535"). */
int endpoint_check(const char *endpoint, bool bind, char *why, size_t len);

/* --- CURVE key files (keys.c) --- */

/* Reads `field = "Z85"` (public-key / secret-key) of a certificate file. 0 or -1 (err). */
int keys_read(const char *path, const char *field, char out[41], char *err, size_t errlen);
/* Fills unset key paths from HERALD_KEY / HERALD_BROKER_KEY. -1 (err) when only
 * one of the two is given: a usage error. Both NULL: plaintext. */
int keys_pick(const char **key_file, const char **broker_key_file, char *err, size_t errlen);
/* Makes a client socket speak CURVE with these keys (NULL key_file: nothing). 0 or -1. */
int keys_client(void *sock, const char *key_file, const char *broker_key_file, char *err, size_t errlen);
/* Writes NAME.key (0600) and NAME.pub; never overwrites. 0 or -1 (err). */
int keys_generate(const char *name, char *err, size_t errlen);

#endif
