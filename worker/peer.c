/* peer: peer_in_tree (peer.h).
 *
 * 1. The client's socket inode: the /proc/net/tcp line whose local address is
 *    our peer's and whose remote address is ours (addresses printed as the
 *    raw 32-bit words in hex, so compared with s_addr as stored; ports in
 *    host order). A client on a dual-stack IPv6 socket shows up in
 *    /proc/net/tcp6 with a v4-mapped address.
 * 2. The tree: root, then the children listed in /proc/PID/task/TID/children
 *    of each process found, breadth first; on a kernel without that file,
 *    every /proc/PID/stat's ppid.
 * 3. A process of the tree holds "socket:[INODE]" among /proc/PID/fd.
 * A process that exits during the walk is skipped; another user's fds are
 * unreadable, so its sockets are never found.
 */
#define _GNU_SOURCE
#include "peer.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Parses n (8 or 32) hex digits into n/8 words. */
static bool hex_words(const char *s, size_t n, uint32_t *w)
{
    if (strlen(s) != n) return false;
    for (size_t i = 0; i < n / 8; i++) {
        char part[9];
        memcpy(part, s + 8 * i, 8);
        part[8] = '\0';
        char *end;
        w[i] = (uint32_t)strtoul(part, &end, 16);
        if (*end) return false;
    }
    return true;
}

static bool addr_is(const char *hex, bool v6, uint32_t s_addr)
{
    uint32_t w[4];
    if (!v6) return hex_words(hex, 8, w) && w[0] == s_addr;
    return hex_words(hex, 32, w) && w[0] == 0 && w[1] == 0 && w[2] == htonl(0xffff) && w[3] == s_addr;
}

/* The inode of the socket whose local end is `local` and remote end `remote`. */
static unsigned long find_inode(const char *path, bool v6, const struct sockaddr_in *local,
                                const struct sockaddr_in *remote)
{
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    char line[512];
    unsigned long ino = 0;
    if (!fgets(line, sizeof line, f)) goto out;     /* the column titles */
    while (fgets(line, sizeof line, f)) {
        char la[33], ra[33];
        unsigned lp, rp, st;
        unsigned long inode;
        if (sscanf(line, " %*d: %32[0-9A-Fa-f]:%x %32[0-9A-Fa-f]:%x %x %*s %*s %*s %*u %*d %lu",
                   la, &lp, ra, &rp, &st, &inode) != 6)
            continue;
        if (lp == ntohs(local->sin_port) && rp == ntohs(remote->sin_port)
            && addr_is(la, v6, local->sin_addr.s_addr) && addr_is(ra, v6, remote->sin_addr.s_addr)) {
            ino = inode;
            break;
        }
    }
out:
    fclose(f);
    return ino;
}

/* True when pid has an fd whose link reads `want`. */
static bool holds(pid_t pid, const char *want)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d) return false;
    bool found = false;
    struct dirent *e;
    size_t wl = strlen(want);
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char link[64];
        ssize_t n = readlinkat(dirfd(d), e->d_name, link, sizeof link);
        found = n == (ssize_t)wl && memcmp(link, want, wl) == 0;
    }
    closedir(d);
    return found;
}

/* Appends pid's children (every thread's) to q; false when the kernel has no
 * children files (the caller falls back to ppids). */
static bool add_children(pid_t pid, pid_t *q, size_t *n)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d) return true;    /* gone */
    struct dirent *e;
    bool ok = true;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char cp[96];
        snprintf(cp, sizeof cp, "/proc/%d/task/%.20s/children", (int)pid, e->d_name);
        FILE *f = fopen(cp, "re");
        if (!f) {
            if (errno == ENOENT && access(path, F_OK) == 0 && access("/proc/self/task", F_OK) == 0) {
                char self[96];  /* our own file missing too: the kernel lacks it */
                snprintf(self, sizeof self, "/proc/self/task/%d/children", (int)gettid());
                if (access(self, F_OK) < 0) ok = false;
            }
            continue;
        }
        int c;
        while (fscanf(f, "%d", &c) == 1)
            if (*n < PEER_TREE_MAX) q[(*n)++] = (pid_t)c;
        fclose(f);
    }
    closedir(d);
    return ok;
}

/* The fallback: every process's ppid from /proc/PID/stat, then root's
 * descendants by repeated passes. Returns the count put in q (root first). */
static size_t tree_from_stat(pid_t root, pid_t *q)
{
    size_t cap = 1024, np = 0;
    pid_t (*pp)[2] = malloc(cap * sizeof *pp);
    DIR *d = opendir("/proc");
    if (!pp || !d) {
        free(pp);
        if (d) closedir(d);
        q[0] = root;
        return 1;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0) continue;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) continue;
        buf[n] = '\0';
        char *rp = strrchr(buf, ')');   /* comm may hold spaces and ')' */
        int ppid;
        if (!rp || sscanf(rp + 1, " %*c %d", &ppid) != 1) continue;
        if (np == cap) {
            pid_t (*g)[2] = realloc(pp, 2 * cap * sizeof *pp);
            if (!g) break;
            pp = g;
            cap *= 2;
        }
        pp[np][0] = (pid_t)pid;
        pp[np][1] = (pid_t)ppid;
        np++;
    }
    closedir(d);
    size_t n = 0;
    q[n++] = root;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < np && n < PEER_TREE_MAX; k++)
            if (pp[k][1] == q[i]) q[n++] = pp[k][0];
    free(pp);
    return n;
}

bool peer_in_tree(int conn_fd, pid_t root)
{
    struct sockaddr_in peer, self;
    socklen_t pl = sizeof peer, sl = sizeof self;
    if (root <= 0 || getpeername(conn_fd, (struct sockaddr *)&peer, &pl) < 0
        || getsockname(conn_fd, (struct sockaddr *)&self, &sl) < 0
        || peer.sin_family != AF_INET || self.sin_family != AF_INET)
        return false;
    unsigned long ino = find_inode("/proc/net/tcp", false, &peer, &self);
    if (!ino) ino = find_inode("/proc/net/tcp6", true, &peer, &self);
    if (!ino) return false;
    char want[48];
    snprintf(want, sizeof want, "socket:[%lu]", ino);

    pid_t *q = malloc(PEER_TREE_MAX * sizeof *q);
    if (!q) return false;
    size_t n = 1;
    q[0] = root;
    bool found = false, children_ok = true;
    for (size_t i = 0; i < n && !found; i++) {
        found = holds(q[i], want);
        if (!found && children_ok) children_ok = add_children(q[i], q, &n);
        if (!children_ok) break;
    }
    if (!found && !children_ok) {
        n = tree_from_stat(root, q);
        for (size_t i = 0; i < n && !found; i++) found = holds(q[i], want);
    }
    free(q);
    return found;
}
