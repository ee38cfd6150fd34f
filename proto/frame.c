/* frame: the only zmq_msg_t code — one multipart message in, one out.
 *
 * A proto_frames owns the parts of the last message received into it and a
 * parts array that only grows (capacity is kept across messages so a busy
 * socket stops allocating). Invariant: parts[0..n) are initialised zmq
 * messages that this struct must close; parts[n..cap) are free slots.
 *
 * A received message is always consumed whole, even past max_parts: leaving
 * parts behind would make the next receive start mid-message and read a
 * payload as a routing id.
 */
#include "proto.h"

#include <errno.h>
#include <stdlib.h>

void frames_init(proto_frames *f)
{
    f->parts = NULL;
    f->n = f->cap = 0;
    f->truncated = false;
}

void frames_close(proto_frames *f)
{
    for (int i = 0; i < f->n; i++)
        zmq_msg_close(&f->parts[i]);
    f->n = 0;
    f->truncated = false;
}

/* Room for one more part. zmq_msg_t is moved bitwise by realloc, which is what
 * zmq_msg_move does too: its content never points into the struct itself. */
static int grow(proto_frames *f)
{
    if (f->n < f->cap)
        return 0;
    int cap = f->cap ? f->cap * 2 : 8;
    zmq_msg_t *p = realloc(f->parts, (size_t)cap * sizeof *p);
    if (!p) {
        errno = ENOMEM;
        return -1;
    }
    f->parts = p;
    f->cap = cap;
    return 0;
}

int frames_recv(void *sock, proto_frames *f, int max_parts, int flags)
{
    frames_close(f);   /* a reused f drops the previous message first */
    bool more = true;
    bool failed = false;
    int saved = 0;
    for (bool first = true; more; first = false) {
        zmq_msg_t spill;
        zmq_msg_t *part = &spill;
        /* Past max_parts, or after an allocation failure, parts are read
         * into `spill` and closed: the socket stays in step either way. */
        bool keep = !failed && f->n < max_parts;
        if (keep && grow(f) < 0) {
            failed = true, saved = ENOMEM, keep = false;
        }
        if (keep)
            part = &f->parts[f->n];
        zmq_msg_init(part);
        /* Only the first part honours flags (ZMQ_DONTWAIT): once it is here,
         * the rest of the message is too, so the others cannot block. */
        int rc;
        do
            rc = zmq_msg_recv(part, sock, first ? flags : 0);
        while (rc < 0 && !first && errno == EINTR);
        if (rc < 0) {
            int e = errno;
            zmq_msg_close(part);
            frames_close(f);
            errno = e;
            return -1;
        }
        more = zmq_msg_more(part);
        if (keep)
            f->n++;
        else {
            zmq_msg_close(part);
            if (!failed)
                f->truncated = true;
        }
    }
    if (failed) {
        frames_close(f);
        errno = saved;
        return -1;
    }
    return 0;
}

int frames_send(void *sock, const void *rid, size_t rid_len, const msgpack_sbuffer *hdr,
                const proto_iov *payloads, size_t npayload, int flags)
{
    /* ROUTER and DEALER queue a multipart message atomically once its first
     * part is accepted, so only that part can meet EAGAIN or EHOSTUNREACH;
     * a later failure would mean the peer vanished mid-send, and the partial
     * message is discarded by libzmq with the pipe. */
    if (rid && zmq_send(sock, rid, rid_len, flags | ZMQ_SNDMORE) < 0)
        return -1;
    if (zmq_send(sock, hdr->data, hdr->size, flags | (npayload ? ZMQ_SNDMORE : 0)) < 0)
        return -1;
    for (size_t i = 0; i < npayload; i++) {
        int more = i + 1 < npayload ? ZMQ_SNDMORE : 0;
        if (zmq_send(sock, payloads[i].data, payloads[i].len, flags | more) < 0)
            return -1;
    }
    return 0;
}
