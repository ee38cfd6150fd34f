/* ctl.h — heraldctl's map: the admin client, JSON/table output, commands. */
#ifndef HERALD_CTL_H
#define HERALD_CTL_H

#include <stdio.h>

#include "../proto/proto.h"

/* --- json.c --- */
void json_print(FILE *out, const msgpack_object *o);
void json_string(FILE *out, const char *s, size_t n);
const msgpack_object *mp_get(const msgpack_object *map, const char *key);
void mp_text(const msgpack_object *o, char *buf, size_t n);

/* --- admin.c: one request/reply on the admin endpoint --- */
typedef struct {
    void *zctx, *sock;
    void *mon;                  /* the socket's monitor: a refused key or connection fails fast */
    bool connected;             /* a connect succeeded (a retry after it is a reconnect, not a refusal) */
    int handshake_drops;        /* handshakes dropped without a reason, in a row */
    bool handshaken;            /* a handshake succeeded: a refused reconnect is no longer final */
    int64_t refused_since_ms;   /* monotonic: first connect retry with no connect since; 0: none */
    const char *endpoint;
    int timeout_ms;
    proto_frames in;
    proto_msg reply;            /* valid after admin_call() returned 0 */
    bool have_reply;
    uint64_t next_req;          /* request ids of this client */
    char error[512];            /* why admin_call() failed */
} admin_client;

/* key_file/broker_key_file: CURVE (both or neither; see keys_pick). */
int admin_open(admin_client *a, const char *endpoint, int timeout_ms, const char *key_file,
               const char *broker_key_file);
/* Sends command with packed msgpack args (NULL: {}) and waits for its reply.
 * 0: a->reply.u.admin_reply holds it (status may be an error).
 * -1: unreachable / timeout, a->error says so. */
int admin_call(admin_client *a, const char *command, const void *args, size_t args_len);
/* The same for a request that may take long (dlq replay/purge): waited for
 * while the broker answers a ping within the timeout. */
int admin_call_long(admin_client *a, const char *command, const void *args, size_t args_len);
/* INVOKE: runs function once; waits up to wait_ms for the reply. 0: the
 * reply is in a->reply.u.invoke_reply and *out its output (borrowed until the
 * next call). -1: a->error says why (unreachable, no answer). */
int admin_invoke(admin_client *a, const char *function, const void *payload, size_t len,
                 uint32_t timeout_ms, int wait_ms, const void **out, size_t *out_len);
void admin_close(admin_client *a);

#endif
