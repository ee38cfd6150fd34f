/* lock.c — one broker per data_dir (DESIGN §3).
 *
 * Two brokers on one database would each hold their own view of the queues
 * and hand the same deliveries out twice, so the broker locks DATA_DIR/
 * herald.lock before it opens the database and keeps the lock for its life.
 * The lock is an open-file-description lock (fcntl F_OFD_SETLK): the kernel
 * drops it when the process ends, however it ends, so a SIGKILLed broker never
 * leaves a stale lock behind. The file holds the holder's pid, for the message
 * a second broker prints; it is never removed (unlinking a lock file lets two
 * processes lock two different files of the same name).
 *
 * Readers that only read the database (heraldctl dlq list/show --db) do not
 * take this lock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"

/* A holder writes its pid just after it takes the lock: a reader that finds
 * the file still empty looks again for at most this long. */
#define PID_WAIT_MS 1000

/* The pid written in the lock file, or 0 when there is none yet. */
static long holder_pid(int fd)
{
    for (int waited = 0;; waited += 10) {
        char buf[32];
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        if (n > 0) {
            buf[n] = '\0';
            char *end;
            long pid = strtol(buf, &end, 10);
            if (end != buf && pid > 0) return pid;
        }
        if (waited >= PID_WAIT_MS) return 0;
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
}

int lock_data_dir(const char *data_dir, char *why, size_t len)
{
    if (store_mkdir(data_dir) != 0) {
        snprintf(why, len, "data_dir %s: cannot create: %s", data_dir, strerror(errno));
        return -1;
    }
    char path[4200];
    if (snprintf(path, sizeof path, "%s/herald.lock", data_dir) >= (int)sizeof path) {
        snprintf(why, len, "data_dir %s: path too long", data_dir);
        return -1;
    }
    /* CLOEXEC: nothing the broker might start inherits the lock */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(why, len, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
    if (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
        int e = errno;
        if (e == EAGAIN || e == EACCES) {
            long pid = holder_pid(fd);
            if (pid > 0)
                snprintf(why, len, "data_dir %s is in use by another broker (pid %ld): one broker per data_dir",
                         data_dir, pid);
            else
                snprintf(why, len, "data_dir %s is in use by another broker (its pid is not in %s yet): "
                         "one broker per data_dir", data_dir, path);
        } else {
            snprintf(why, len, "%s: cannot lock: %s", path, strerror(e));
        }
        close(fd);
        return e == EAGAIN || e == EACCES ? -2 : -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        snprintf(why, len, "%s: cannot write our pid: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}
