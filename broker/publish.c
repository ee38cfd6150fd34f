/* publish.c — PUBLISH on the publish endpoint: checks each event, stores it
 * once with one delivery row per matching subscription (fan-out), and stages
 * its answer. Answers are sent by confirms_send() only after the turn's commit:
 * confirming before the commit would let a crash lose a confirmed event.
 *
 * Message ids are "PRODUCER-SEQ". A publish whose seq is at or below the
 * producer's recorded high-water mark was answered before (the client re-sent
 * it after a reconnect): it gets the same answer — its refusal if it was
 * refused (remembered in `refusals`), else its id — and is not stored again.
 * `throttled` is the exception: it is not final, so a re-sent throttled seq
 * is taken again as if new, and once stored its refusal is forgotten in the
 * same transaction (a later re-send then gets its id).
 * A --dedup-id seen on the same topic within 5 minutes gets the first
 * event's id and is not stored again.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"

bool filter_match(const cfg_subscription *s, const proto_attr *attrs, uint32_t n)
{
    if (!s) return true;
    for (size_t i = 0; i < s->nfilters; i++) {
        const cfg_filter *f = &s->filters[i];
        const char *v = NULL;
        for (uint32_t k = 0; k < n && !v; k++)
            if (strcmp(attrs[k].key, f->key) == 0) v = attrs[k].value;
        if (!v) return false;
        bool any = false;
        for (size_t j = 0; j < f->nvalues && !any; j++) any = strcmp(f->values[j], v) == 0;
        if (!any) return false;
    }
    return true;
}

/* A publish stored (or matching nothing): counted, and undone with its turn
 * if the commit fails (confirms_send). */
static void count_published(broker_t *b, topic_t *t)
{
    if (!t) return;
    if (t->turn != b->turn) t->turn = b->turn, t->turn_published = 0;
    t->published++;
    t->turn_published++;
}

static pending_confirm *confirm_new(void *sock, const void *rid, size_t rid_len, uint32_t n)
{
    /* texts: a message id (≤ 63) or a reason (≤ 191) per entry */
    /* malloc, not calloc: every entry is written before it is sent */
    pending_confirm *c = malloc(sizeof *c + n * sizeof(proto_confirm_entry) + (size_t)n * 192);
    if (!c) return NULL;
    c->next = NULL;
    c->sock = sock;
    memcpy(c->rid, rid, rid_len);
    c->rid_len = rid_len;
    c->entries = (proto_confirm_entry *)(c + 1);
    c->text = (char *)(c->entries + n);
    c->n = n;
    for (uint32_t i = 0; i < n; i++) c->entries[i].text = c->text + (size_t)i * 192;
    return c;
}

/* "PRODUCER-SEQ" without printf (it was a tenth of the broker's time). */
static size_t make_mid(char *out, const char *producer, uint64_t seq)
{
    size_t n = strlen(producer);   /* ≤ PROTO_PRODUCER_MAX: checked by the decoder */
    memcpy(out, producer, n);
    out[n++] = '-';
    char digits[20];
    int k = 0;
    do { digits[k++] = (char)('0' + seq % 10); seq /= 10; } while (seq);
    while (k) out[n++] = digits[--k];
    out[n] = 0;
    return n;
}

/* An OK entry: its text is the message id. */
static void answer_id(proto_confirm_entry *e, uint64_t seq, const char *mid, size_t len)
{
    e->seq = seq;
    e->status = PROTO_OK;
    memcpy(e->text, mid, len + 1);
}

static void answer(proto_confirm_entry *e, uint64_t seq, uint32_t status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void answer(proto_confirm_entry *e, uint64_t seq, uint32_t status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    e->seq = seq;
    e->status = status;
    vsnprintf(e->text, 192, fmt, ap);
    va_end(ap);
}

/* Stores one event; its payload frame is moved into the in-memory message
 * when any delivery of it stays in memory. The staged row points into that
 * message (a small payload lives inside it) until store_flush: *held gets a
 * reference the caller drops after the flush, since a delivery made here may
 * leave memory at once (a delayed window's trim) and free the message. */
static uint32_t store_event(broker_t *b, const proto_pub *p, const char *mid,
                            zmq_msg_t *frame, char *why, size_t whylen, message_t **held)
{
    *held = NULL;
    sub_t *targets[256];
    size_t nt = 0;
    topic_t *t = NULL;
    if (p->topic[0]) {
        t = broker_topic(b, p->topic);
        if (!t) { snprintf(why, whylen, "unknown topic '%s'", p->topic); return PROTO_E_UNKNOWN_TOPIC; }
        for (size_t i = 0; i < t->nsubs && nt < 256; i++)
            if (filter_match(t->subs[i]->cfg, p->attrs, p->nattrs)) targets[nt++] = t->subs[i];
    } else {
        function_t *fn = broker_function(b, p->function);
        if (!fn) { snprintf(why, whylen, "unknown function '%s'", p->function); return PROTO_E_UNKNOWN_FUNCTION; }
        for (size_t i = 0; i < b->nsubs; i++)
            if (b->subs[i]->fn == fn && !b->subs[i]->topic[0]) targets[nt++] = b->subs[i];
    }
    size_t len = zmq_msg_size(frame);
    if ((int64_t)len > b->cfg->broker.max_payload) {
        snprintf(why, whylen, "payload of %zu bytes is larger than max_payload (%lld bytes)",
                 len, (long long)b->cfg->broker.max_payload);
        return PROTO_E_TOO_LARGE;
    }
    if (b->disk_alarm) {
        snprintf(why, whylen, "throttled: disk alarm: %lld bytes free in data_dir, below disk_min_free (%lld)",
                 (long long)b->disk_free, (long long)b->cfg->broker.disk_min_free);
        return PROTO_E_THROTTLED;
    }
    if (b->backlog + (int64_t)nt > b->cfg->broker.max_backlog) {
        snprintf(why, whylen, "throttled: the backlog is at max_backlog (%lld deliveries)",
                 (long long)b->cfg->broker.max_backlog);
        return PROTO_E_THROTTLED;
    }
    if (nt == 0) {   /* matched no subscription: counted, not stored */
        count_published(b, t);
        return PROTO_OK;
    }

    store_t *s = &b->store;
    if (store_begin(s) != 0) goto internal;
    msgpack_sbuffer_clear(&b->sb);
    if (p->nattrs && attrs_pack(&b->sb, p->attrs, p->nattrs) != 0) goto internal;
    int64_t now = util_wall_ms();
    bool delayed = p->delay_ms > 0;
    /* Does any delivery stay in memory? Then the frame moves into the
     * message first, and the row is written from where the payload now is
     * (a small frame's bytes live inside the zmq_msg_t itself). */
    int64_t visible = now + p->delay_ms;
    bool keep = false;
    for (size_t i = 0; i < nt && !keep; i++)
        keep = delayed ? queue_delay_takes(targets[i], visible) : queue_take_new(targets[i], len);
    message_t *m = NULL;
    if (keep) {
        m = message_new(0, mid, p->topic, p->attrs, p->nattrs);
        if (!m) goto internal;
        m->refs = 1;   /* ours until the row is written (*held) */
        zmq_msg_init(&m->zmsg);
        zmq_msg_move(&m->zmsg, frame);
        m->zmsg_owned = true;
        m->payload = zmq_msg_data(&m->zmsg);
        m->payload_len = len;
    }
    int64_t id;
    if (store_stage_message(s, mid, p->topic, b->sb.data, p->nattrs ? b->sb.size : 0,
                            m ? m->payload : zmq_msg_data(frame), len, now, &id) != 0)
        goto internal_free;
    if (m) m->id = id;
    for (size_t i = 0; i < nt; i++) {
        sub_t *sub = targets[i];
        int rc = delayed ? store_insert_delayed(s, sub->id, id, visible, 0)
                         : store_stage_queue(s, sub->id, id);
        if (rc != 0) goto internal_free;
        b->backlog++;
        if (delayed) sub->delayed++;
        else sub->queued++;
        if (delayed && !queue_delay_takes(sub, visible)) continue;   /* a refill reads it */
        if (!delayed && !queue_take_new(sub, len)) { sub->caught_up = false; continue; }
        delivery_t *d = delivery_new(b, sub, m, 0);
        if (!d) goto internal_free;
        d->txn = s->txn_no;
        if (delayed) {
            d->in_delayed = true;
            d->state = DELIVERY_RETRY_WAIT;
            d->visible_ms = visible;
            queue_delay(b, d, false);
        } else {
            window_push(sub, d);
            sub->cursor = id;
        }
    }
    *held = m;
    count_published(b, t);
    return PROTO_OK;
internal_free:
    s->failed = true;   /* part of this event may be staged: the turn must not commit */
    *held = m;
internal:
    snprintf(why, whylen, "storage failed: %s", sqlite3_errmsg(s->db));
    return PROTO_E_INTERNAL;
}

void publish_handle(broker_t *b, proto_frames *f)
{
    char err[256];
    proto_msg m;
    /* part 0: routing id, part 1: header, then the payloads. A PUBLISH or
     * INVOKE refused whole is answered with its seqs / req where they read. */
    if (f->n < 2 || f->truncated) {
        refuse(b, b->pub_sock, f, PROTO_E_MALFORMED,
               f->truncated ? "too many frames in one message" : "empty message");
        return;
    }
    if (proto_decode(frames_data(f, 1), frames_size(f, 1), &m, err, sizeof err) != 0) {
        refuse(b, b->pub_sock, f, PROTO_E_MALFORMED, err);
        return;
    }
    if ((uint32_t)f->n != 2 + m.nframes) {   /* every type: HELLO takes none, INVOKE one, PUBLISH one per entry */
        snprintf(err, sizeof err, "%s declares %u payload frames but %d came", proto_type_name(m.type),
                 m.nframes, f->n - 2);
        refuse(b, b->pub_sock, f, PROTO_E_MALFORMED, err);
        proto_msg_clear(&m);
        return;
    }
    if (m.type == MSG_ERROR || m.type == MSG_HEARTBEAT) {   /* refused, never answered (PROTOCOL.md §5) */
        b->dropped[0]++;
        proto_msg_clear(&m);
        return;
    }
    if (m.type == MSG_HELLO) {
        hello_answer(b, b->pub_sock, f, &m.u.hello);
        proto_msg_clear(&m);
        return;
    }
    if (m.type == MSG_INVOKE) {
        invoke_handle(b, b->pub_sock, f, &m);
        proto_msg_clear(&m);
        return;
    }
    if (m.type != MSG_PUBLISH) {
        snprintf(err, sizeof err, "%s is not accepted on the publish endpoint", proto_type_name(m.type));
        reply_error(b, b->pub_sock, f, PROTO_E_MALFORMED, err);
        proto_msg_clear(&m);
        return;
    }
    publish_take(b, b->pub_sock, f, &m);
    proto_msg_clear(&m);
}

void publish_refuse(broker_t *b, void *sock, proto_frames *f, const uint64_t *seqs, uint32_t n, uint32_t status,
                    const char *text)
{
    pending_confirm *c = confirm_new(sock, frames_data(f, 0), frames_size(f, 0), n);
    if (!c) return;   /* no reply: the client re-sends, and is refused again */
    for (uint32_t i = 0; i < n; i++) answer(&c->entries[i], seqs[i], status, "%s", text);
    *b->confirms_tail = c;
    b->confirms_tail = &c->next;
}

void publish_take(broker_t *b, void *sock, proto_frames *f, const proto_msg *m)
{
    const proto_publish *p = &m->u.publish;
    pending_confirm *c = confirm_new(sock, frames_data(f, 0), frames_size(f, 0), p->npubs);
    if (!c) return;   /* no reply: the client re-sends */

    uint64_t hw = 0;
    if (store_producer_get(&b->store, p->producer, &hw) != 0) hw = 0;
    uint64_t top = hw;
    message_t *held[PROTO_MAX_BATCH];   /* what the staged rows point into */
    uint32_t nheld = 0;
    for (uint32_t i = 0; i < p->npubs; i++) {
        const proto_pub *e = &p->pubs[i];
        char mid[PROTO_ID_MAX + 1], why[160];
        size_t mid_len = make_mid(mid, p->producer, e->seq);
        uint32_t st;
        bool again = false;   /* a re-sent seq that was throttled: tried again */
        if (e->seq <= hw) {
            /* a re-send (the client reconnected): refused before → the same
             * refusal, except `throttled`, which is not final: that seq is
             * taken again as if new (stored now, it keeps its message id);
             * otherwise stored before → the same id, not stored twice */
            if (store_refusal_get(&b->store, p->producer, e->seq, &st, why, sizeof why) != 1) {
                answer_id(&c->entries[i], e->seq, mid, mid_len);
                continue;
            }
            if (st != PROTO_E_THROTTLED) {
                answer(&c->entries[i], e->seq, st, "%s", why);
                continue;
            }
            again = true;
        }
        char key[PROTO_NAME_MAX + 8], first[PROTO_ID_MAX + 1];
        int64_t now = util_wall_ms();
        if (e->dedup_id) {
            snprintf(key, sizeof key, "%s%s", e->topic[0] ? "" : "fn:", e->topic[0] ? e->topic : e->function);
            if (store_dedup_get(&b->store, key, e->dedup_id, now, first, sizeof first) == 1) {
                answer(&c->entries[i], e->seq, PROTO_OK, "%s", first);
                if (again) store_refusal_clear(&b->store, p->producer, e->seq);
                if (e->seq > top) top = e->seq;
                continue;
            }
        }
        message_t *kept;
        st = store_event(b, e, mid, &f->parts[2 + i], why, sizeof why, &kept);
        if (kept) held[nheld++] = kept;
        if (st == PROTO_OK) {
            answer_id(&c->entries[i], e->seq, mid, mid_len);
            if (e->dedup_id) store_dedup_set(&b->store, key, e->dedup_id, mid, now);
            if (again) store_refusal_clear(&b->store, p->producer, e->seq);
        } else {
            answer(&c->entries[i], e->seq, st, "%s", why);
            store_refusal_set(&b->store, p->producer, e->seq, st, why);
        }
        if (e->seq > top) top = e->seq;
    }
    /* the staged rows point into this message's frames and arena, and into
     * the messages held: written now */
    store_flush(&b->store);
    for (uint32_t i = 0; i < nheld; i++) message_unref(&held[i]);   /* freed if no delivery kept it */
    /* one high-water write per PUBLISH, in the same transaction as its events */
    if (top > hw && (store_begin(&b->store) != 0 || store_producer_set(&b->store, p->producer, top) != 0))
        LOG_ERROR("recording producer %s: %s", p->producer, sqlite3_errmsg(b->store.db));
    *b->confirms_tail = c;
    b->confirms_tail = &c->next;
}

uint32_t publish_local(broker_t *b, const char *producer, uint64_t seq, const char *topic, const char *function,
                       const proto_attr *attrs, uint32_t nattrs, const void *payload, size_t len, char *why,
                       size_t whylen)
{
    char mid[PROTO_ID_MAX + 1];
    make_mid(mid, producer, seq);
    proto_pub p = { .seq = seq, .topic = (char *)(topic ? topic : ""), .function = (char *)function,
                    .attrs = (proto_attr *)attrs, .nattrs = nattrs };
    zmq_msg_t frame;
    if (zmq_msg_init_size(&frame, len) != 0) {
        snprintf(why, whylen, "out of memory");
        return PROTO_E_INTERNAL;
    }
    memcpy(zmq_msg_data(&frame), payload, len);
    message_t *kept;
    uint32_t st = store_event(b, &p, mid, &frame, why, whylen, &kept);
    store_flush(&b->store);   /* the staged row points into frame or kept */
    message_unref(&kept);
    zmq_msg_close(&frame);
    if (st == PROTO_OK && (store_begin(&b->store) != 0 || store_producer_set(&b->store, producer, seq) != 0)) {
        b->store.failed = true;
        snprintf(why, whylen, "storage failed: %s", sqlite3_errmsg(b->store.db));
        return PROTO_E_INTERNAL;
    }
    return st;
}

/* After the commit: every staged answer goes out. If the commit failed,
 * nothing of the turn is on disk, so every OK becomes an internal error. */
void confirms_send(broker_t *b, bool committed)
{
    pending_confirm *c = b->confirms, *next;
    if (!committed)   /* what this turn counted was refused after all */
        for (size_t i = 0; i < b->ntopics; i++)
            if (b->topics[i].turn == b->turn) b->topics[i].published -= b->topics[i].turn_published;
    b->turn++;
    for (; c; c = next) {
        next = c->next;
        if (!committed)
            for (uint32_t i = 0; i < c->n; i++)
                if (c->entries[i].status == PROTO_OK) {
                    c->entries[i].status = PROTO_E_INTERNAL;
                    snprintf(c->entries[i].text, 192, "%s", b->store.failure);
                }
        proto_confirm pc = { .entries = c->entries, .n = c->n };
        msgpack_sbuffer_clear(&b->sb);
        if (proto_encode_confirm(&b->sb, &pc) == 0)
            frames_send(c->sock, c->rid, c->rid_len, &b->sb, NULL, 0, ZMQ_DONTWAIT);
        free(c);
    }
    b->confirms = NULL;
    b->confirms_tail = &b->confirms;
}
