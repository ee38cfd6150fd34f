/* names: the wire names of message types, statuses, outcomes and runtime
 * recycle reasons, and the validators for names and ids.
 *
 * The tables here are the single place where an enum meets its wire or log
 * spelling; codec.c parses with them and logs print with them. Every table is
 * indexed by its enum, so adding an enum value without a name fails the
 * static checks below at compile time.
 *
 * Validators take counted bytes because decoded msgpack strings are not
 * NUL-terminated and may contain NUL bytes, which no name or id allows.
 */
#include "proto.h"

#include <string.h>

static const char *const type_names[] = {
    [MSG_HELLO] = "HELLO",         [MSG_WELCOME] = "WELCOME",
    [MSG_PUBLISH] = "PUBLISH",     [MSG_CONFIRM] = "CONFIRM",
    [MSG_REGISTER] = "REGISTER",   [MSG_CONFIG] = "CONFIG",
    [MSG_DELIVER] = "DELIVER",     [MSG_RESULT] = "RESULT",
    [MSG_HEARTBEAT] = "HEARTBEAT", [MSG_DRAIN] = "DRAIN",
    [MSG_ADMIN] = "ADMIN",         [MSG_ADMIN_REPLY] = "ADMIN_REPLY",
    [MSG_ERROR] = "ERROR",
    [MSG_INVOKE] = "INVOKE",       [MSG_INVOKE_REPLY] = "INVOKE_REPLY",
    [MSG_REFUSED] = "REFUSED",     [MSG_BYE] = "BYE",
    [MSG_STATS] = "STATS",
};
_Static_assert(sizeof type_names / sizeof *type_names == MSG_TYPE_COUNT, "a msg_type has no name");

static const char *const status_names[] = {
    [PROTO_OK] = "ok",
    [PROTO_E_MALFORMED] = "malformed request",
    [PROTO_E_TOO_LARGE] = "payload too large",
    [PROTO_E_UNKNOWN_TOPIC] = "unknown topic",
    [PROTO_E_UNKNOWN_FUNCTION] = "unknown function",
    [PROTO_E_THROTTLED] = "throttled",
    [PROTO_E_INTERNAL] = "internal error",
    [PROTO_E_NO_WORKER] = "no worker serves the function",
    [PROTO_E_HANDLER] = "handler failed",
    [PROTO_E_TIMEOUT] = "timeout",
    [PROTO_E_NOT_FOUND] = "not found",
    [PROTO_E_CONFLICT] = "conflict",
    [PROTO_E_BUSY] = "no worker slot became free in time",
};
_Static_assert(sizeof status_names / sizeof *status_names == PROTO_STATUS_COUNT, "a status has no name");

/* Also the wire spelling of RESULT outcomes, so the order is the protocol's. */
static const char *const outcome_names[] = {
    [OUT_OK] = "ok",           [OUT_ERROR] = "error",   [OUT_REJECTED] = "rejected",
    [OUT_TIMEOUT] = "timeout", [OUT_CRASHED] = "crashed", [OUT_LOST] = "lost",
    [OUT_RETURNED] = "returned",
};
_Static_assert(sizeof outcome_names / sizeof *outcome_names == OUT_COUNT, "an outcome has no name");

/* The wire spelling of STATS recycle reasons. */
static const char *const recycle_names[] = {
    [PROTO_RECYCLE_MAX_INVOCATIONS] = "max_invocations", [PROTO_RECYCLE_IDLE] = "idle",
    [PROTO_RECYCLE_MEMORY] = "memory",                   [PROTO_RECYCLE_TIMEOUT] = "timeout",
    [PROTO_RECYCLE_CRASH] = "crash",                     [PROTO_RECYCLE_INIT_ERROR] = "init_error",
    [PROTO_RECYCLE_REDEFINED] = "redefined",             [PROTO_RECYCLE_SHUTDOWN] = "shutdown",
};
_Static_assert(sizeof recycle_names / sizeof *recycle_names == PROTO_RECYCLE_COUNT, "a recycle reason has no name");

const char *proto_type_name(msg_type t)
{
    /* Compared as unsigned: an enum read from a corrupt struct may be negative. */
    return (unsigned)t < MSG_TYPE_COUNT ? type_names[t] : "UNKNOWN";
}

const char *proto_status_name(proto_status s)
{
    return (unsigned)s < PROTO_STATUS_COUNT ? status_names[s] : "unknown status";
}

const char *proto_outcome_name(proto_outcome o)
{
    return (unsigned)o < OUT_COUNT ? outcome_names[o] : "unknown";
}

int proto_outcome_parse(const char *s)
{
    if (!s)
        return -1;
    for (int i = 0; i < OUT_COUNT; i++)
        if (strcmp(s, outcome_names[i]) == 0)
            return i;
    return -1;
}

const char *proto_recycle_name(proto_recycle r)
{
    return (unsigned)r < PROTO_RECYCLE_COUNT ? recycle_names[r] : "unknown";
}

int proto_recycle_parse(const char *s)
{
    if (!s)
        return -1;
    for (int i = 0; i < PROTO_RECYCLE_COUNT; i++)
        if (strcmp(s, recycle_names[i]) == 0)
            return i;
    return -1;
}

static bool is_alnum(unsigned char c)
{
    /* Not isalnum(): the locale must not widen what the wire accepts. */
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

bool proto_valid_name_len(const char *s, size_t len)
{
    if (!s || len < 1 || len > PROTO_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_alnum(c) && c != '_' && c != '.' && c != '-')
            return false;
    }
    return true;
}

bool proto_valid_id_len(const char *s, size_t len)
{
    if (!s || len < 1 || len > PROTO_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_alnum(c) && c != '_' && c != '-')
            return false;
    }
    return true;
}

bool proto_valid_name(const char *s)
{
    /* strnlen bound: a longer string is invalid whatever follows. */
    return s && proto_valid_name_len(s, strnlen(s, PROTO_NAME_MAX + 1));
}

bool proto_valid_id(const char *s)
{
    return s && proto_valid_id_len(s, strnlen(s, PROTO_ID_MAX + 1));
}

bool proto_valid_attr_key(const char *s)
{
    /* The name rule (DESIGN §4): a key outside it could fold into another
     * key's HERALD_ATTR_ variable, or not be an environment name at all. */
    return proto_valid_name(s);
}

bool proto_valid_producer(const char *s)
{
    if (!s)
        return false;
    size_t len = strnlen(s, PROTO_PRODUCER_MAX + 1);
    /* No '-': the broker builds message ids as PRODUCER-SEQ and splits at the last '-'. */
    if (len > PROTO_PRODUCER_MAX || !proto_valid_id_len(s, len) || memchr(s, '-', len))
        return false;
    return true;
}
