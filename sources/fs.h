/* herald-source-fs's map: a watched directory announced as an S3 bucket
 * (DESIGN §12, docs/SOURCES.md).
 *
 * Read in this order:
 *   fs_main.c   flags, config, the loop: confirms, inotify, pump, snapshot, rescan
 *   fs_tree.c   the view of what was announced, the comparison of a path (or the
 *               whole tree) with it, filters, inotify watches and their events
 *   fs_state.c  the state directory: the journal of changes (each with its
 *               producer sequence, on disk before it is published), the snapshot
 *               of what the broker confirmed, the lock
 *   fs_event.c  S3's notification JSON, its key encoding, eTags (md5.c)
 *
 * One idea holds it together: a change is a record {seq, Created|Removed, key,
 * inode, size, mtime, eTag, time}. It is written to the journal (fdatasync)
 * before it is published with that seq under the source's stable producer id;
 * after a crash the records above the snapshot's watermark are published again
 * with the same seqs, and the broker answers those it stored as "already
 * stored" (DESIGN §5). Nothing is announced twice, nothing is lost.
 */
#ifndef HERALD_SOURCE_FS_H
#define HERALD_SOURCE_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "herald.h"
#include "../config/config.h"

#define FS_ETAG_LEN 32            /* an MD5 in hex */
/* Publishes in flight per source: libherald's default window, so a publish
 * never has to wait in herald_publish_async for room. */
#define FS_WINDOW 1000
/* libherald's confirm timeout for a source: a day. The client keeps re-sending
 * across broker restarts until then, in seq order; a source must never have a
 * publish given up on while later ones go through (the broker would then answer
 * the re-sent earlier seq as "already stored": a lost event). */
#define FS_CLIENT_TIMEOUT_MS (24 * 3600 * 1000)
/* A refused publish (throttled, broker-side failure) is retried with a new seq
 * after this delay, doubling up to the max. */
#define FS_RETRY_MIN_MS 200
#define FS_RETRY_MAX_MS 10000
/* Publishes in flight and no answer for this long: the connection is
 * replaced (herald_reconnect) and they go again with their seqs. A broker that
 * is down costs a fresh socket this often; one that is up but whose answers
 * stopped reaching us (a socket that stopped reconnecting) is found again. */
#define FS_STALL_MS 10000
/* The snapshot is rewritten at most this often while confirms come in. */
#define FS_SNAPSHOT_EVERY_MS 1000
/* After a watch could not be added (the inotify watch limit), the next full
 * comparison comes this soon at the latest. */
#define FS_UNWATCHED_RESCAN_MS 30000

typedef enum { FS_CREATED = 'C', FS_REMOVED = 'D' } fs_op;

/* What is known about one object key: announced (the view) or confirmed (the
 * snapshot). Chained in an fs_map bucket. */
typedef struct fs_obj {
    struct fs_obj *next;          /* bucket chain */
    char *key;                    /* path relative to the watched directory, owned */
    uint64_t ino, size;
    int64_t mtime_ns;
    char etag[FS_ETAG_LEN + 1];
    unsigned seen;                /* rescan generation that last saw it on disk */
} fs_obj;

typedef struct {
    fs_obj **b;                   /* buckets */
    size_t nb, n;                 /* bucket count (a power of 2), objects */
} fs_map;

/* One change: queued when seen, given its seq and journaled when it is about
 * to be published, dropped when the broker confirmed it. */
typedef struct fs_rec {
    struct fs_rec *next, *prev;   /* the pending queue, in the order the changes were seen */
    struct fs_source *src;        /* for the confirm callback */
    uint64_t seq;                 /* producer sequence; 0: not yet given one */
    uint64_t replaces;            /* the refused seq this one announces again; 0 */
    fs_op op;
    char *key;                    /* owned */
    uint64_t ino, size;
    int64_t mtime_ns;
    char etag[FS_ETAG_LEN + 1];   /* "" for a removal */
    int64_t time_ms;              /* Unix ms: eventTime */
    bool sent;                    /* handed to libherald on the current client */
    bool refused;                 /* the broker refused its seq: it goes again with a new one */
} fs_rec;

typedef struct fs_source {
    const cfg_source *cfg;        /* borrowed from the config */
    char producer[64];            /* stable producer id (≤ 40 chars), kept in the snapshot */
    herald_client *client;
    herald_options hopts;
    /* tree and watches (fs_tree.c) */
    fs_map view;                  /* announced or being announced */
    fs_map snap;                  /* confirmed by the broker */
    int ino_fd;                   /* inotify */
    char **wd_path;               /* wd → directory relative to the root ("" for it) */
    size_t wd_cap;
    unsigned gen;                 /* rescan generation */
    bool rescan_needed;           /* overflow, or a watch could not be added */
    bool unwatched;               /* some directory has no watch (limit hit) */
    int64_t next_rescan_ms;       /* monotonic; 0: none planned */
    dev_t state_dev; ino_t state_ino;   /* the state dir, never watched nor announced */
    /* state (fs_state.c) */
    int lock_fd;
    FILE *journal;                /* append */
    size_t journal_lines;
    bool journal_unsynced;        /* lines written since the last fdatasync */
    uint64_t next_seq;            /* the next record's seq */
    fs_rec *head, *last;          /* pending records, in the order seen */
    size_t npending, inflight;
    uint64_t last_sent_seq;       /* the highest seq handed to the current client */
    bool refusing;                /* a publish was refused: drain the in-flight ones, then go on */
    bool snap_dirty;              /* confirms since the last snapshot */
    int64_t snap_at_ms;           /* monotonic: the last snapshot */
    int64_t retry_at_ms;          /* monotonic: no publishing before (after a refusal or no broker) */
    int retry_ms;                 /* current backoff */
    bool reconnect;               /* the client must be replaced before publishing again */
    int64_t progress_ms;          /* monotonic: the last answer, or when publishes went in flight */
    /* counters, for the log */
    uint64_t announced, refused, overflows;
} fs_source;

/* ---- fs_tree.c -------------------------------------------------------- */

void fs_map_init(fs_map *m);
void fs_map_free(fs_map *m);
fs_obj *fs_map_get(const fs_map *m, const char *key);
/* Inserts or updates key's entry; NULL on no memory. */
fs_obj *fs_map_put(fs_map *m, const char *key, uint64_t ino, uint64_t size, int64_t mtime_ns, const char *etag);
void fs_map_del(fs_map *m, const char *key);
/* Applies a record to a map (created: put, removed: del). 0 or -1 (no memory). */
int fs_map_apply(fs_map *m, const fs_rec *r);

/* true: key is announced under the config's prefix, suffix and ignore globs. */
bool fs_key_wanted(const cfg_source *c, const char *key);
/* Opens inotify. 0 or -1 (logged). */
int fs_watch_open(fs_source *s);
void fs_watch_close(fs_source *s);
/* Compares the whole tree with the view and records every difference; adds
 * watches to every directory. 0 or -1 (the root is gone: logged). */
int fs_rescan(fs_source *s);
/* Reads and handles every pending inotify event. */
void fs_watch_read(fs_source *s);

/* ---- fs_state.c ------------------------------------------------------- */

/* Locks the state dir, reads the snapshot (or starts one with a new producer
 * id) and the journal's records above its watermark into the pending queue;
 * builds the view. 0 or -1 with why on stderr. */
int fs_state_open(fs_source *s);
void fs_state_close(fs_source *s);
/* Queues a new change (no seq yet) and applies it to the view. 0 or -1. */
int fs_state_record(fs_source *s, fs_op op, const char *key, uint64_t ino, uint64_t size, int64_t mtime_ns,
                    const char *etag, int64_t time_ms);
/* Gives r the next seq (a refused r: replaces = its old one) and writes its
 * journal line (made durable by fs_state_sync). 0 or -1. */
int fs_state_assign(fs_source *s, fs_rec *r);
/* r was confirmed: out of the queue, into the snapshot, freed. */
void fs_state_confirmed(fs_source *s, fs_rec *r);
/* Makes the journal's new lines durable (before anything is published). */
int fs_state_sync(fs_source *s);
/* Writes the snapshot (atomic rename) and compacts the journal. 0 or -1. */
int fs_state_snapshot(fs_source *s);
/* A change that is not announced (its event type is not wanted, or only the
 * metadata of the same content changed): straight into view and snapshot. */
void fs_state_quiet(fs_source *s, fs_op op, const char *key, uint64_t ino, uint64_t size, int64_t mtime_ns,
                    const char *etag);

/* ---- fs_event.c ------------------------------------------------------- */

/* S3's key encoding (application/x-www-form-urlencoded, '/' kept): "red
 * flower.jpg" → "red+flower.jpg". Returns a malloc'ed string or NULL. */
char *fs_key_encode(const char *key);
/* The inverse, for the state files; NULL on a malformed text. */
char *fs_key_decode(const char *enc);
/* The notification JSON of r (malloc'ed, *len set), NULL on no memory. */
char *fs_event_json(const fs_source *s, const fs_rec *r, size_t *len);
/* MD5 of the file at fd, in hex (S3's eTag of a single-part upload). 0 or -1. */
int fs_etag_fd(int fd, char out[FS_ETAG_LEN + 1]);

/* md5.c: RFC 1321. */
typedef struct {
    uint32_t a, b, c, d;
    uint64_t len;                 /* bytes so far */
    unsigned char buf[64];
} md5_ctx;
void md5_init(md5_ctx *m);
void md5_update(md5_ctx *m, const void *data, size_t n);
void md5_final(md5_ctx *m, unsigned char out[16]);

/* fs_main.c: publishes the pending records the window allows. */
void fs_pump(fs_source *s, int64_t now_ms);

#endif
