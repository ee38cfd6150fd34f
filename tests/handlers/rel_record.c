/* rel_record: the reliability suite's native handler (tests/reliability/).
 *
 * Appends one line per run to $RECORD_FILE (O_APPEND, one write, so every
 * host of every worker can share the file):
 *     MESSAGE_ID PAYLOAD WORKER_PID ATTEMPT
 * WORKER_PID is the herald-worker the host belongs to (host → launcher →
 * worker), so a test can tell which worker ran what — e.g. the duplicate runs
 * a frozen worker caused. $SLEEP_US, when set, makes every run take that long
 * (so that deliveries are in flight when a fault lands). A payload "boom"
 * segfaults the host (a poison event). Only lines up to 1 KiB are recorded.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "herald/handler.h"

static int fd = -1;
static long worker_pid;
static long sleep_us;

/* The parent pid of pid, from /proc/PID/stat (0 when unknown). */
static long parent_of(long pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0) return 0;
    ssize_t n = read(f, buf, sizeof buf - 1);
    close(f);
    if (n <= 0) return 0;
    buf[n] = 0;
    const char *p = strrchr(buf, ')');   /* the name may hold spaces */
    long ppid = 0;
    if (p && sscanf(p + 1, " %*c %ld", &ppid) != 1) ppid = 0;
    return ppid;
}

int herald_init(void)
{
    const char *path = getenv("RECORD_FILE");
    if (!path || !*path) return 1;
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return 2;
    worker_pid = parent_of((long)getppid());
    const char *s = getenv("SLEEP_US");
    sleep_us = s ? atol(s) : 0;
    return 0;
}

void herald_fini(void)
{
    if (fd >= 0) close(fd);
    fd = -1;
}

int record(const herald_event *ev, herald_response *res)
{
    if (ev->payload_len == 4 && memcmp(ev->payload, "boom", 4) == 0) {
        volatile int *p = NULL;
        *p = 1;
    }
    if (sleep_us > 0) {
        struct timespec ts = { sleep_us / 1000000, (sleep_us % 1000000) * 1000 };
        nanosleep(&ts, NULL);
    }
    char line[1200];
    size_t plen = ev->payload_len < 1024 ? ev->payload_len : 1024;
    int n = snprintf(line, sizeof line, "%s %.*s %ld %d\n", ev->message_id, (int)plen, (const char *)ev->payload,
                     worker_pid, ev->attempt);
    if (n < 0 || (size_t)n >= sizeof line) n = (int)sizeof line - 1;
    if (write(fd, line, (size_t)n) != n) {
        res->set_error(res, "cannot append to RECORD_FILE");
        return HERALD_RETRY;
    }
    return HERALD_OK;
}
