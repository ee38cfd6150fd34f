/* fs_tree.c: the watched tree against the view of what was announced.
 *
 * Every change goes through one comparison, check_key(): lstat the path now
 * and compare it with the view — a regular file that is new or whose inode,
 * size or mtime differ is Created (its eTag read then), a key in the view
 * that is no longer a regular file is Removed. inotify events only say which
 * paths to compare, and a full rescan compares all of them, so the two can
 * never disagree and an event that arrives late or twice is harmless.
 *
 * inotify: IN_CLOSE_WRITE and IN_MOVED_TO for files (a file being written is
 * not announced until it is closed), IN_DELETE and IN_MOVED_FROM for
 * removals, IN_CREATE/IN_MOVED_TO of a directory to watch it and scan it at
 * once (mkdir -p a/b/c && touch a/b/c/f before the watch on a/ existed is
 * found by that scan), IN_Q_OVERFLOW and a full watch table (ENOSPC) for a
 * rescan. State: the view, the wd → directory table, the inotify fd.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs.h"
#include "../proto/proto.h"

#define FILE_EVENTS (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE | IN_DELETE_SELF | \
                     IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)

/* ---- the map ------------------------------------------------------------ */

static size_t hash(const char *k)
{
    size_t h = 1469598103934665603ULL;
    for (; *k; k++) h = (h ^ (unsigned char)*k) * 1099511628211ULL;
    return h;
}

void fs_map_init(fs_map *m)
{
    m->nb = 0;
    m->n = 0;
    m->b = NULL;
}

void fs_map_free(fs_map *m)
{
    for (size_t i = 0; i < m->nb; i++)
        for (fs_obj *o = m->b[i], *n; o; o = n) {
            n = o->next;
            free(o->key);
            free(o);
        }
    free(m->b);
    fs_map_init(m);
}

fs_obj *fs_map_get(const fs_map *m, const char *key)
{
    if (!m->nb) return NULL;
    for (fs_obj *o = m->b[hash(key) & (m->nb - 1)]; o; o = o->next)
        if (strcmp(o->key, key) == 0) return o;
    return NULL;
}

static int grow(fs_map *m)
{
    size_t nb = m->nb ? m->nb * 2 : 1024;
    fs_obj **b = calloc(nb, sizeof *b);
    if (!b) return -1;
    for (size_t i = 0; i < m->nb; i++)
        for (fs_obj *o = m->b[i], *n; o; o = n) {
            n = o->next;
            size_t h = hash(o->key) & (nb - 1);
            o->next = b[h];
            b[h] = o;
        }
    free(m->b);
    m->b = b;
    m->nb = nb;
    return 0;
}

fs_obj *fs_map_put(fs_map *m, const char *key, uint64_t ino, uint64_t size, int64_t mtime_ns, const char *etag)
{
    fs_obj *o = fs_map_get(m, key);
    if (!o) {
        if (m->n >= m->nb && grow(m) < 0) return NULL;
        o = calloc(1, sizeof *o);
        if (!o || !(o->key = strdup(key))) {
            free(o);
            return NULL;
        }
        size_t h = hash(key) & (m->nb - 1);
        o->next = m->b[h];
        m->b[h] = o;
        m->n++;
    }
    o->ino = ino;
    o->size = size;
    o->mtime_ns = mtime_ns;
    snprintf(o->etag, sizeof o->etag, "%s", etag ? etag : "");
    return o;
}

void fs_map_del(fs_map *m, const char *key)
{
    if (!m->nb) return;
    for (fs_obj **p = &m->b[hash(key) & (m->nb - 1)]; *p; p = &(*p)->next)
        if (strcmp((*p)->key, key) == 0) {
            fs_obj *o = *p;
            *p = o->next;
            free(o->key);
            free(o);
            m->n--;
            return;
        }
}

int fs_map_apply(fs_map *m, const fs_rec *r)
{
    if (r->op == FS_REMOVED) {
        fs_map_del(m, r->key);
        return 0;
    }
    return fs_map_put(m, r->key, r->ino, r->size, r->mtime_ns, r->etag) ? 0 : -1;
}

/* ---- filters -------------------------------------------------------------- */

static bool ignored(const cfg_source *c, const char *key)
{
    const char *base = strrchr(key, '/');
    base = base ? base + 1 : key;
    for (size_t i = 0; i < c->nignore; i++) {
        const char *g = c->ignore[i];
        if (strchr(g, '/') ? fnmatch(g, key, FNM_PATHNAME) == 0 : fnmatch(g, base, 0) == 0) return true;
    }
    return false;
}

bool fs_key_wanted(const cfg_source *c, const char *key)
{
    size_t n = strlen(key), ns = strlen(c->suffix);
    return strncmp(key, c->prefix, strlen(c->prefix)) == 0 && n >= ns && strcmp(key + n - ns, c->suffix) == 0 &&
           !ignored(c, key);
}

/* ---- one path ------------------------------------------------------------- */

/* a/b (or whichever is not empty); false when it does not fit (then out is
 * cut, and a path that long cannot be opened anyway). */
static bool join(char *out, size_t size, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), sep = la && lb;
    if (la + sep + lb >= size) {
        out[0] = '\0';
        return false;
    }
    memcpy(out, a, la);
    if (sep) out[la] = '/';
    memcpy(out + la + sep, b, lb + 1);
    return true;
}

/* The eTag of the file at path and the fstat that describes what was read:
 * taken before and after the read, and the same both times (else a writer
 * was at work: tried again, then left to its own close event or a rescan).
 * 0, or -1 (gone, not a regular file, or never still). */
static int read_etag(const char *path, struct stat *st, char etag[FS_ETAG_LEN + 1])
{
    for (int attempt = 0; attempt < 3; attempt++) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0) return -1;
        struct stat after;
        int rc = fstat(fd, st) == 0 && S_ISREG(st->st_mode) && fs_etag_fd(fd, etag) == 0 && fstat(fd, &after) == 0
                     ? 0 : -1;
        close(fd);
        if (rc < 0) return -1;
        if (after.st_size == st->st_size && after.st_mtim.tv_sec == st->st_mtim.tv_sec &&
            after.st_mtim.tv_nsec == st->st_mtim.tv_nsec)
            return 0;
    }
    return -1;
}

/* Announces key as created, with its eTag. A file that vanished meanwhile is
 * left to its own removal event. The same content under new metadata (a
 * touch, or a rewrite with the same bytes) is not a new object version: the
 * view learns the new inode/mtime and nothing is published, so a (key, eTag)
 * is announced once however often its file is rewritten. */
static void created(fs_source *s, const char *key)
{
    char path[PATH_MAX + 1], etag[FS_ETAG_LEN + 1];
    struct stat st;
    if (!join(path, sizeof path, s->cfg->path, key) || read_etag(path, &st, etag) < 0) return;
    int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    const fs_obj *o = fs_map_get(&s->view, key);
    if (!(s->cfg->events & SOURCE_EV_CREATED) || (o && strcmp(o->etag, etag) == 0)) {
        fs_state_quiet(s, FS_CREATED, key, st.st_ino, (uint64_t)st.st_size, mt, etag);
        return;
    }
    if (fs_state_record(s, FS_CREATED, key, st.st_ino, (uint64_t)st.st_size, mt, etag, util_wall_ms()) < 0)
        LOG_ERROR("source %s: cannot queue %s: %s", s->cfg->name, key, strerror(errno));
}

static void removed(fs_source *s, const char *key)
{
    if (!(s->cfg->events & SOURCE_EV_REMOVED)) {
        fs_state_quiet(s, FS_REMOVED, key, 0, 0, 0, NULL);
        return;
    }
    if (fs_state_record(s, FS_REMOVED, key, 0, 0, 0, NULL, util_wall_ms()) < 0)
        LOG_ERROR("source %s: cannot journal %s: %s", s->cfg->name, key, strerror(errno));
}

/* Compares one key with the view and records the difference. */
static void check_key(fs_source *s, const char *key)
{
    char path[PATH_MAX + 1];
    join(path, sizeof path, s->cfg->path, key);
    struct stat st;
    bool file = lstat(path, &st) == 0 && S_ISREG(st.st_mode) && fs_key_wanted(s->cfg, key);
    fs_obj *o = fs_map_get(&s->view, key);
    if (file) {
        int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        if (!o || o->ino != st.st_ino || o->size != (uint64_t)st.st_size || o->mtime_ns != mt) created(s, key);
        if ((o = fs_map_get(&s->view, key))) o->seen = s->gen;
    } else if (o) {
        removed(s, key);
    }
}

/* ---- watches -------------------------------------------------------------- */

static void wd_set(fs_source *s, int wd, const char *rel)
{
    if ((size_t)wd >= s->wd_cap) {
        size_t cap = s->wd_cap ? s->wd_cap : 256;
        while (cap <= (size_t)wd) cap *= 2;
        char **p = realloc(s->wd_path, cap * sizeof *p);
        if (!p) return;
        memset(p + s->wd_cap, 0, (cap - s->wd_cap) * sizeof *p);
        s->wd_path = p;
        s->wd_cap = cap;
    }
    free(s->wd_path[wd]);
    s->wd_path[wd] = strdup(rel);
}

static void watch_dir(fs_source *s, const char *rel)
{
    char path[PATH_MAX + 1];
    join(path, sizeof path, s->cfg->path, rel);
    int wd = inotify_add_watch(s->ino_fd, path, FILE_EVENTS);
    if (wd >= 0) {
        wd_set(s, wd, rel);
    } else if (errno == ENOSPC) {
        if (!s->unwatched)
            LOG_WARN("source %s: no inotify watch for %s: the watch limit is reached "
                     "(/proc/sys/fs/inotify/max_user_watches); changes there are found by rescans", s->cfg->name,
                     path);
        s->unwatched = true;
        int64_t soon = util_mono_ms() + FS_UNWATCHED_RESCAN_MS;
        if (!s->next_rescan_ms || s->next_rescan_ms > soon) s->next_rescan_ms = soon;
    }
}

/* Watches rel and everything under it, and compares every file with the view. */
static void scan_dir(fs_source *s, const char *rel, bool watch)
{
    char path[PATH_MAX + 1];
    join(path, sizeof path, s->cfg->path, rel);
    if (watch) watch_dir(s, rel);
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char key[PATH_MAX + 1];
        join(key, sizeof key, rel, e->d_name);
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
        if (S_ISDIR(st.st_mode)) {
            if (s->cfg->recursive && !(st.st_dev == s->state_dev && st.st_ino == s->state_ino) &&
                !ignored(s->cfg, key))
                scan_dir(s, key, watch);
        } else {
            check_key(s, key);
        }
    }
    closedir(d);
}

int fs_watch_open(fs_source *s)
{
    s->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (s->ino_fd < 0) {
        LOG_ERROR("source %s: inotify: %s", s->cfg->name, strerror(errno));
        return -1;
    }
    return 0;
}

void fs_watch_close(fs_source *s)
{
    if (s->ino_fd >= 0) close(s->ino_fd);
    s->ino_fd = -1;
    for (size_t i = 0; i < s->wd_cap; i++) free(s->wd_path[i]);
    free(s->wd_path);
    s->wd_path = NULL;
    s->wd_cap = 0;
}

/* Keys of the view under dir ("" : all) not seen in generation gen, copied. */
static char **unseen(fs_source *s, const char *dir, bool all, size_t *n)
{
    size_t cap = 64, k = 0, dl = strlen(dir);
    char **v = malloc(cap * sizeof *v);
    for (size_t i = 0; v && i < s->view.nb; i++)
        for (fs_obj *o = s->view.b[i]; o && v; o = o->next) {
            if (!all && o->seen == s->gen) continue;
            if (dl && (strncmp(o->key, dir, dl) != 0 || o->key[dl] != '/')) continue;
            if (k == cap) {
                char **p = realloc(v, (cap *= 2) * sizeof *v);
                if (!p) break;
                v = p;
            }
            v[k++] = strdup(o->key);
        }
    *n = k;
    return v;
}

static void check_keys(fs_source *s, char **keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (keys[i]) check_key(s, keys[i]);
        free(keys[i]);
    }
    free(keys);
}

int fs_rescan(fs_source *s)
{
    struct stat st;
    if (stat(s->cfg->path, &st) < 0 || !S_ISDIR(st.st_mode)) {
        LOG_ERROR("source %s: %s is not a directory any more: %s", s->cfg->name, s->cfg->path,
                  errno ? strerror(errno) : "");
        return -1;
    }
    s->gen++;
    s->rescan_needed = false;
    s->unwatched = false;
    scan_dir(s, "", true);
    size_t n;
    char **gone = unseen(s, "", false, &n);   /* in the view, not met on disk */
    check_keys(s, gone, n);
    return 0;
}

/* A directory left (deleted or moved away): its watches go, and every key
 * the view has under it is compared (removed, unless it came back). */
static void dir_gone(fs_source *s, const char *rel)
{
    size_t dl = strlen(rel);
    for (size_t wd = 0; wd < s->wd_cap; wd++) {
        const char *p = s->wd_path[wd];
        if (p && strncmp(p, rel, dl) == 0 && (p[dl] == '/' || p[dl] == '\0')) {
            inotify_rm_watch(s->ino_fd, (int)wd);
            free(s->wd_path[wd]);
            s->wd_path[wd] = NULL;
        }
    }
    size_t n;
    char **keys = unseen(s, rel, true, &n);
    check_keys(s, keys, n);
}

static void handle(fs_source *s, const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW) {
        s->overflows++;
        s->rescan_needed = true;
        LOG_WARN("source %s: the kernel's event queue overflowed: comparing the whole tree", s->cfg->name);
        return;
    }
    if (ev->wd < 0 || (size_t)ev->wd >= s->wd_cap || !s->wd_path[ev->wd]) return;
    if (ev->mask & IN_IGNORED) {   /* the watch is gone (its directory was removed) */
        free(s->wd_path[ev->wd]);
        s->wd_path[ev->wd] = NULL;
        return;
    }
    if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) return;   /* its parent's event handles it */
    if (!ev->len) return;
    char key[PATH_MAX + 1];
    join(key, sizeof key, s->wd_path[ev->wd], ev->name);
    if (ev->mask & IN_ISDIR) {
        if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
            dir_gone(s, key);
        } else if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) && s->cfg->recursive && !ignored(s->cfg, key)) {
            struct stat st;
            char path[PATH_MAX + 1];
            join(path, sizeof path, s->cfg->path, key);
            if (lstat(path, &st) == 0 && !(st.st_dev == s->state_dev && st.st_ino == s->state_ino))
                scan_dir(s, key, true);   /* files made before the watch existed are found here */
        }
        return;
    }
    /* IN_CREATE of a file: not yet (it is announced when closed after writing,
     * or by IN_MOVED_TO); a hard link or mknod shows up in a rescan. */
    if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE)) check_key(s, key);
}

void fs_watch_read(fs_source *s)
{
    char buf[65536] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (int round = 0; round < 64; round++) {   /* bounded: the loop has confirms to read too */
        ssize_t n = read(s->ino_fd, buf, sizeof buf);
        if (n <= 0) return;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            handle(s, ev);
            p += sizeof *ev + ev->len;
        }
    }
}
