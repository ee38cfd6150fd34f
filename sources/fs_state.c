/* fs_state.c: the source's state directory (state_dir, docs/SOURCES.md).
 *
 *   lock      flock()ed for the process's life: one source process per state
 *   snapshot  what the broker confirmed: producer id, next seq, the watermark W
 *             (every record at or below W is settled) and one line per object
 *             (inode, size, mtime, eTag, key). Replaced whole: written to
 *             snapshot.tmp, fsync'ed, renamed, directory fsync'ed.
 *   journal   one line per change, appended and fdatasync'ed BEFORE the change
 *             is published: seq, the refused seq it replaces (or 0), C|D, time,
 *             inode, size, mtime, eTag, key. Compacted (rewritten with the
 *             pending records only) after a snapshot once it has grown.
 *
 * Start: the snapshot, then the journal's records above W that no later
 * record replaces become the pending queue, published again with their own
 * seqs (the broker answers those it stored as "already stored"). Keys are
 * stored URL-encoded (fs_event.c), so a file name holding a tab or newline
 * cannot break a line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs.h"
#include "../proto/proto.h"

#define SNAP_MAGIC "herald-source-fs snapshot 1"
#define JOURNAL_SLACK 1024   /* compaction when the journal holds this many lines beyond twice the pending */

static char *state_path(const fs_source *s, const char *name)
{
    static char buf[4][4096];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", s->cfg->state_dir, name);
    return p;
}

static int mkdirs(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0700) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(tmp, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* "fs_" + the source name folded to [A-Za-z0-9_] (16 at most) + "_" + 16
 * random [0-9A-Za-z]: stable for the state's life, new with a new state (a
 * wiped state must not reuse seqs the broker already holds for the old id). */
static void make_producer(fs_source *s)
{
    static const char digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    size_t n = (size_t)snprintf(s->producer, sizeof s->producer, "fs_");
    for (const char *p = s->cfg->name; *p && n < 19; p++)
        s->producer[n++] = (char)(strchr(digits, *p) && *p ? *p : '_');
    s->producer[n++] = '_';
    unsigned char r[16];
    util_random(r, sizeof r);
    for (int i = 0; i < 16; i++) s->producer[n++] = digits[r[i] % 62];
    s->producer[n] = '\0';
}

static void free_rec(fs_rec *r)
{
    if (!r) return;
    free(r->key);
    free(r);
}

/* One journal line into a record; NULL if malformed (a torn last line). */
static fs_rec *parse_rec(char *line)
{
    unsigned long long seq, rep, ino, size;
    long long tms, mt;
    char op, etag[64];
    int at = 0;
    if (sscanf(line, "%llu %llu %c %lld %llu %llu %lld %63s %n", &seq, &rep, &op, &tms, &ino, &size, &mt, etag,
               &at) != 8 || !at || (op != FS_CREATED && op != FS_REMOVED) || seq == 0)
        return NULL;
    line[strcspn(line, "\n")] = '\0';
    fs_rec *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->key = fs_key_decode(line + at);
    if (!r->key) {
        free(r);
        return NULL;
    }
    r->seq = seq;
    r->replaces = rep;
    r->op = (fs_op)op;
    r->time_ms = tms;
    r->ino = ino;
    r->size = size;
    r->mtime_ns = mt;
    if (op == FS_CREATED && strlen(etag) == FS_ETAG_LEN) memcpy(r->etag, etag, FS_ETAG_LEN + 1);
    return r;
}

static int write_rec(FILE *f, const fs_rec *r)
{
    char *key = fs_key_encode(r->key);
    if (!key) return -1;
    int n = fprintf(f, "%llu %llu %c %lld %llu %llu %lld %s %s\n", (unsigned long long)r->seq,
                    (unsigned long long)r->replaces, (char)r->op, (long long)r->time_ms, (unsigned long long)r->ino,
                    (unsigned long long)r->size, (long long)r->mtime_ns, r->etag[0] ? r->etag : "-", key);
    free(key);
    return n < 0 ? -1 : 0;
}

static int read_snapshot(fs_source *s, uint64_t *watermark)
{
    const char *path = state_path(s, "snapshot");
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno != ENOENT) {
            fprintf(stderr, "herald-source-fs: %s: %s\n", path, strerror(errno));
            return -1;
        }
        make_producer(s);
        s->next_seq = 1;
        *watermark = 0;
        return 1;   /* new */
    }
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    unsigned long long next = 0, wm = 0;
    while (getline(&line, &cap, f) > 0) {
        lineno++;
        line[strcspn(line, "\n")] = '\0';
        unsigned long long ino, size;
        long long mt;
        char etag[64], prod[64];
        int at = 0;
        if (lineno == 1) {
            if (strcmp(line, SNAP_MAGIC) != 0) goto bad;
        } else if (sscanf(line, "producer %63s", prod) == 1) {
            if (!proto_valid_producer(prod)) goto bad;
            snprintf(s->producer, sizeof s->producer, "%s", prod);
        } else if (sscanf(line, "next_seq %llu", &next) == 1 || sscanf(line, "watermark %llu", &wm) == 1) {
        } else if (sscanf(line, "O %llu %llu %lld %63s %n", &ino, &size, &mt, etag, &at) == 4 && at) {
            char *k = fs_key_decode(line + at);
            if (!k) goto bad;
            fs_obj *o = fs_map_put(&s->snap, k, ino, size, mt, strlen(etag) == FS_ETAG_LEN ? etag : "");
            free(k);
            if (!o) goto bad;
        } else {
            goto bad;
        }
    }
    if (!s->producer[0] || !next) {
        lineno = 0;
        goto bad;
    }
    s->next_seq = next;
    *watermark = wm;
    goto done;
bad:
    fprintf(stderr, "herald-source-fs: %s:%d: not a snapshot line this program wrote; move the state dir "
            "aside to start over (every file is then announced again)\n", path, lineno);
    rc = -1;
done:
    free(line);
    fclose(f);
    return rc;
}

static void append(fs_source *s, fs_rec *r)
{
    r->src = s;
    r->next = NULL;
    r->prev = s->last;
    if (s->last) s->last->next = r;
    else s->head = r;
    s->last = r;
    s->npending++;
}

static void unlink_rec(fs_source *s, fs_rec *r)
{
    if (r->prev) r->prev->next = r->next;
    else s->head = r->next;
    if (r->next) r->next->prev = r->prev;
    else s->last = r->prev;
    s->npending--;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int by_seq(const void *a, const void *b)
{
    uint64_t x = (*(fs_rec *const *)a)->seq, y = (*(fs_rec *const *)b)->seq;
    return x < y ? -1 : x > y;
}

/* The journal's records above the watermark, minus the ones a later record
 * replaces, in seq order, into the pending queue (lines are in seq order but
 * after a refusal: a replacement is queued where its change was seen). */
static int read_journal(fs_source *s, uint64_t watermark)
{
    FILE *f = fopen(state_path(s, "journal"), "re");
    if (!f) return errno == ENOENT ? 0 : -1;
    fs_rec **v = NULL;
    size_t n = 0, cap = 0, lcap = 0;
    char *line = NULL;
    int rc = 0;
    while (getline(&line, &lcap, f) > 0) {
        if (!strchr(line, '\n')) break;   /* torn by a crash: never synced, never published */
        fs_rec *r = parse_rec(line);
        if (!r) {
            LOG_WARN("source %s: skipped a malformed journal line", s->cfg->name);
            continue;
        }
        if (r->seq >= s->next_seq) s->next_seq = r->seq + 1;
        if (r->seq <= watermark) {   /* settled */
            free_rec(r);
            continue;
        }
        if (n == cap) {
            fs_rec **nv = realloc(v, (cap = cap ? cap * 2 : 256) * sizeof *v);
            if (!nv) {
                free_rec(r);
                rc = -1;
                break;
            }
            v = nv;
        }
        v[n++] = r;
    }
    free(line);
    fclose(f);
    if (n) qsort(v, n, sizeof *v, by_seq);
    /* drop the replaced: their refusal was answered by the later record */
    uint64_t *rep = n ? malloc(n * sizeof *rep) : NULL;
    size_t nrep = 0;
    for (size_t i = 0; rep && i < n; i++)
        if (v[i]->replaces) rep[nrep++] = v[i]->replaces;
    if (nrep) qsort(rep, nrep, sizeof *rep, cmp_u64);
    uint64_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        bool dup = v[i]->seq == prev;
        prev = v[i]->seq;
        if (rc < 0 || dup || (nrep && bsearch(&v[i]->seq, rep, nrep, sizeof *rep, cmp_u64))) {
            free_rec(v[i]);
            continue;
        }
        append(s, v[i]);
    }
    free(rep);
    free(v);
    return rc;
}

/* Rewrites the journal with the pending records only. */
static int compact(fs_source *s)
{
    const char *tmp = state_path(s, "journal.tmp"), *path = state_path(s, "journal");
    FILE *f = fopen(tmp, "we");
    if (!f) return -1;
    size_t n = 0;
    for (fs_rec *r = s->head; r; r = r->next)
        if (r->seq && !r->refused) {
            if (write_rec(f, r) < 0) break;
            n++;
        }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        fclose(f);
        return -1;
    }
    fclose(f);
    if (rename(tmp, path) != 0) return -1;
    fsync_dir(s->cfg->state_dir);
    if (s->journal) fclose(s->journal);
    s->journal = fopen(path, "ae");
    if (!s->journal) return -1;
    s->journal_lines = n;
    s->journal_unsynced = false;
    return 0;
}

int fs_state_open(fs_source *s)
{
    const char *dir = s->cfg->state_dir;
    fs_map_init(&s->view);
    fs_map_init(&s->snap);
    if (mkdirs(dir) < 0) {
        fprintf(stderr, "herald-source-fs: source %s: cannot create state_dir %s: %s\n", s->cfg->name, dir,
                strerror(errno));
        return -1;
    }
    struct stat st;
    if (stat(dir, &st) == 0) s->state_dev = st.st_dev, s->state_ino = st.st_ino;
    s->lock_fd = open(state_path(s, "lock"), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0 || flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        fprintf(stderr, "herald-source-fs: source %s: %s: %s\n", s->cfg->name, state_path(s, "lock"),
                errno == EWOULDBLOCK ? "another herald-source-fs runs this source" : strerror(errno));
        return -1;
    }
    uint64_t wm;
    int rc = read_snapshot(s, &wm);
    if (rc < 0) return -1;
    if (rc == 1 && fs_state_snapshot(s) < 0) {   /* the new producer id is durable before any publish */
        fprintf(stderr, "herald-source-fs: source %s: cannot write %s: %s\n", s->cfg->name,
                state_path(s, "snapshot"), strerror(errno));
        return -1;
    }
    if (read_journal(s, wm) < 0) {
        fprintf(stderr, "herald-source-fs: source %s: %s: %s\n", s->cfg->name, state_path(s, "journal"),
                strerror(errno));
        return -1;
    }
    /* the view: what was confirmed, then what is on its way, in seq order */
    for (size_t i = 0; i < s->snap.nb; i++)
        for (fs_obj *o = s->snap.b[i]; o; o = o->next)
            if (!fs_map_put(&s->view, o->key, o->ino, o->size, o->mtime_ns, o->etag)) return -1;
    for (fs_rec *r = s->head; r; r = r->next)
        if (fs_map_apply(&s->view, r) < 0) return -1;
    if (compact(s) < 0) {
        fprintf(stderr, "herald-source-fs: source %s: cannot write %s: %s\n", s->cfg->name,
                state_path(s, "journal"), strerror(errno));
        return -1;
    }
    if (s->npending)
        LOG_INFO("source %s: %zu change(s) from the journal go to the broker again (seq %llu and up)",
                 s->cfg->name, s->npending, (unsigned long long)s->head->seq);
    return 0;
}

void fs_state_close(fs_source *s)
{
    if (s->journal) fclose(s->journal);
    s->journal = NULL;
    for (fs_rec *r = s->head, *n; r; r = n) {
        n = r->next;
        free_rec(r);
    }
    s->head = s->last = NULL;
    fs_map_free(&s->view);
    fs_map_free(&s->snap);
    if (s->lock_fd >= 0) close(s->lock_fd);
    s->lock_fd = -1;
}

int fs_state_record(fs_source *s, fs_op op, const char *key, uint64_t ino, uint64_t size, int64_t mtime_ns,
                    const char *etag, int64_t time_ms)
{
    fs_rec *r = calloc(1, sizeof *r);
    if (!r || !(r->key = strdup(key))) {
        free(r);
        return -1;
    }
    r->op = op;
    r->ino = ino;
    r->size = size;
    r->mtime_ns = mtime_ns;
    if (op == FS_CREATED && etag) snprintf(r->etag, sizeof r->etag, "%s", etag);
    r->time_ms = time_ms;
    append(s, r);
    return fs_map_apply(&s->view, r);
}

int fs_state_assign(fs_source *s, fs_rec *r)
{
    uint64_t old = r->seq;
    r->seq = s->next_seq;
    r->replaces = old;   /* 0 for a first one; else a refused seq, or one never sent on this client */
    if (write_rec(s->journal, r) < 0) {
        r->seq = old;
        return -1;
    }
    s->next_seq++;
    r->refused = false;
    s->journal_lines++;
    s->journal_unsynced = true;
    return 0;
}

void fs_state_confirmed(fs_source *s, fs_rec *r)
{
    unlink_rec(s, r);
    fs_map_apply(&s->snap, r);
    s->snap_dirty = true;
    free_rec(r);
}

int fs_state_sync(fs_source *s)
{
    if (!s->journal_unsynced) return 0;
    /* must be before any publish of these lines: after a crash, a published
     * record that is not in the journal would go out again with a new seq */
    if (fflush(s->journal) != 0 || fdatasync(fileno(s->journal)) != 0) {
        LOG_ERROR("source %s: journal: %s", s->cfg->name, strerror(errno));
        return -1;
    }
    s->journal_unsynced = false;
    return 0;
}

int fs_state_snapshot(fs_source *s)
{
    const char *tmp = state_path(s, "snapshot.tmp"), *path = state_path(s, "snapshot");
    FILE *f = fopen(tmp, "we");
    if (!f) return -1;
    /* the watermark: below the first record that has a seq and waits for its
     * answer. A refused one, or one without a seq yet, is not in the journal's
     * future: after a crash the start's rescan finds its change again. */
    uint64_t wm = s->next_seq - 1;
    for (fs_rec *r = s->head; r; r = r->next)
        if (r->seq && !r->refused) {
            wm = r->seq - 1;
            break;
        }
    fprintf(f, SNAP_MAGIC "\nproducer %s\nnext_seq %llu\nwatermark %llu\n", s->producer,
            (unsigned long long)s->next_seq, (unsigned long long)wm);
    int rc = 0;
    for (size_t i = 0; i < s->snap.nb && rc == 0; i++)
        for (fs_obj *o = s->snap.b[i]; o && rc == 0; o = o->next) {
            char *key = fs_key_encode(o->key);
            if (!key || fprintf(f, "O %llu %llu %lld %s %s\n", (unsigned long long)o->ino,
                                (unsigned long long)o->size, (long long)o->mtime_ns, o->etag[0] ? o->etag : "-",
                                key) < 0)
                rc = -1;
            free(key);
        }
    if (rc < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        fclose(f);
        return -1;
    }
    fclose(f);
    if (rename(tmp, path) != 0) return -1;
    fsync_dir(s->cfg->state_dir);
    s->snap_dirty = false;
    s->snap_at_ms = util_mono_ms();
    /* the lines at or below the new watermark are dead weight now */
    if (s->journal && s->journal_lines > 2 * s->npending + JOURNAL_SLACK && fs_state_sync(s) == 0) return compact(s);
    return 0;
}

void fs_state_quiet(fs_source *s, fs_op op, const char *key, uint64_t ino, uint64_t size, int64_t mtime_ns,
                    const char *etag)
{
    fs_rec r = { .op = op, .key = (char *)key, .ino = ino, .size = size, .mtime_ns = mtime_ns };
    if (etag) snprintf(r.etag, sizeof r.etag, "%s", etag);
    fs_map_apply(&s->view, &r);
    fs_map_apply(&s->snap, &r);
    s->snap_dirty = true;
}
