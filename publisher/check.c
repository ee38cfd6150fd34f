/* check: what libherald refuses before anything is sent, and how the broker's
 * statuses read to an app.
 *
 * The rules are DESIGN §1, §4 and §5 (names, at most 16 attributes whose keys
 * are names too, delay 0–900 s, dedup ids); checking them here gives the caller a precise message at once,
 * instead of a whole batch coming back refused. The size limit needs the
 * broker's WELCOME and lives in client.c. Pure functions, no state.
 */
#include "client.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define SHOWN 64   /* bytes of a bad name quoted back in an error */

int hc_check_publish(const char *topic, const char *function, const void *payload, size_t len,
                     const herald_publish_opts *o, uint32_t *delay_ms, char *err, size_t errlen)
{
    *delay_ms = 0;
    if (topic && !proto_valid_name(topic)) {
        snprintf(err, errlen, "invalid topic name \"%.*s\": names are 1-128 characters of A-Z a-z 0-9 _ . -",
                 SHOWN, topic);
        return HERALD_E_INVALID;
    }
    if (!topic && (!function || !proto_valid_name(function))) {
        snprintf(err, errlen, "invalid function name \"%.*s\": names are 1-128 characters of A-Z a-z 0-9 _ . -",
                 SHOWN, function ? function : "");
        return HERALD_E_INVALID;
    }
    if (!payload && len) {
        snprintf(err, errlen, "payload is NULL but its length is %zu", len);
        return HERALD_E_INVALID;
    }
    if (!o) return 0;
    if (o->nattrs > PROTO_MAX_ATTRS) {
        snprintf(err, errlen, "%zu attributes: at most %d are allowed", o->nattrs, PROTO_MAX_ATTRS);
        return HERALD_E_INVALID;
    }
    if (o->nattrs && !o->attrs) {
        snprintf(err, errlen, "attrs is NULL but nattrs is %zu", o->nattrs);
        return HERALD_E_INVALID;
    }
    for (size_t i = 0; i < o->nattrs; i++) {
        const char *k = o->attrs[i].key, *v = o->attrs[i].value;
        if (!k || !*k) {
            snprintf(err, errlen, "attribute %zu has an empty key", i + 1);
            return HERALD_E_INVALID;
        }
        if (strlen(k) > PROTO_ATTR_KEY_MAX) {
            snprintf(err, errlen, "attribute key \"%.*s...\" is longer than %d bytes", SHOWN, k,
                     PROTO_ATTR_KEY_MAX);
            return HERALD_E_INVALID;
        }
        if (!proto_valid_attr_key(k)) {
            snprintf(err, errlen, "invalid attribute key \"%.*s\": keys are 1-128 characters of A-Z a-z 0-9 _ . -",
                     SHOWN, k);
            return HERALD_E_INVALID;
        }
        if (!v) {
            snprintf(err, errlen, "attribute \"%s\" has no value (NULL)", k);
            return HERALD_E_INVALID;
        }
        if (strlen(v) > PROTO_ATTR_VALUE_MAX) {
            snprintf(err, errlen, "value of attribute \"%s\" is %zu bytes: at most %d are allowed", k,
                     strlen(v), PROTO_ATTR_VALUE_MAX);
            return HERALD_E_INVALID;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(o->attrs[j].key, k) == 0) {
                snprintf(err, errlen, "attribute \"%s\" is given twice", k);
                return HERALD_E_INVALID;
            }
    }
    if (!isfinite(o->delay) || o->delay < 0 || o->delay > 900) {
        snprintf(err, errlen, "delay of %g s is outside 0-900 s", o->delay);
        return HERALD_E_INVALID;
    }
    *delay_ms = (uint32_t)(o->delay * 1000.0 + 0.5);   /* no llround: apps link no libm */
    if (o->dedup_id && !proto_valid_id(o->dedup_id)) {
        snprintf(err, errlen, "invalid dedup id \"%.*s\": ids are 1-63 characters of A-Z a-z 0-9 _ -",
                 SHOWN, o->dedup_id);
        return HERALD_E_INVALID;
    }
    return 0;
}

int hc_status_from_proto(uint32_t status)
{
    switch (status) {
    case PROTO_OK: return 0;
    case PROTO_E_TOO_LARGE: return HERALD_E_TOO_LARGE;
    case PROTO_E_UNKNOWN_TOPIC:
    case PROTO_E_UNKNOWN_FUNCTION: return HERALD_E_UNKNOWN;
    case PROTO_E_THROTTLED: return HERALD_E_THROTTLED;
    case PROTO_E_INTERNAL: return HERALD_E_INTERNAL;
    /* Not answers to a publish today; named for the invoke replies to come. */
    case PROTO_E_NO_WORKER: return HERALD_E_NO_WORKER;
    case PROTO_E_HANDLER: return HERALD_E_HANDLER;
    case PROTO_E_TIMEOUT: return HERALD_E_TIMEOUT;
    case PROTO_E_BUSY: return HERALD_E_BUSY;
    default: return HERALD_E_REFUSED;   /* malformed, and whatever a newer broker says */
    }
}
