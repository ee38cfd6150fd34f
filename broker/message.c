/* message.c — an event held in memory while deliveries of it are in memory.
 *
 * One allocation holds the struct, the attribute array and its strings. The
 * payload is either the received ZeroMQ frame itself (moved in: no copy on
 * the publish path) or a malloc'ed copy of the blob read back from SQLite.
 * Deliveries share a message through refs; the last unref frees it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"

message_t *message_new(int64_t id, const char *mid, const char *topic,
                       const proto_attr *attrs, uint32_t nattrs)
{
    size_t tl = strlen(topic) + 1, extra = tl + nattrs * sizeof(proto_attr);
    for (uint32_t i = 0; i < nattrs; i++)
        extra += strlen(attrs[i].key) + strlen(attrs[i].value) + 2;
    message_t *m = calloc(1, sizeof *m + extra);
    if (!m) return NULL;
    m->id = id;
    size_t ml = strnlen(mid, PROTO_ID_MAX);
    memcpy(m->mid, mid, ml);
    m->mid[ml] = 0;
    m->attrs = (proto_attr *)(m + 1);
    m->nattrs = nattrs;
    char *p = (char *)(m->attrs + nattrs);
    for (uint32_t i = 0; i < nattrs; i++) {
        size_t kl = strlen(attrs[i].key) + 1, vl = strlen(attrs[i].value) + 1;
        m->attrs[i].key = memcpy(p, attrs[i].key, kl); p += kl;
        m->attrs[i].value = memcpy(p, attrs[i].value, vl); p += vl;
    }
    m->topic = memcpy(p, topic, tl);
    return m;
}

void message_unref(message_t **mp)
{
    message_t *m = *mp;
    *mp = NULL;
    if (!m || --m->refs > 0) return;
    if (m->zmsg_owned) zmq_msg_close(&m->zmsg);
    else free(m->payload);
    free(m);
}
