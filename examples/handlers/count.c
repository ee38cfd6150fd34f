/* count.c — a native handler that counts the events its host has seen and, when
 * the function's env sets COUNT_FILE, appends each message id to that file (one
 * write per event, O_APPEND, so several hosts can share it). Its output is the
 * host's count. Shows herald_init/herald_fini and per-host caching. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <herald/handler.h>

static int fd = -1;
static unsigned long seen;

int herald_init(void)
{
    const char *path = getenv("COUNT_FILE");
    if (path && *path) {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) return 1;   /* the worker refuses the function and says so */
    }
    return 0;
}

void herald_fini(void)
{
    if (fd >= 0) close(fd);
    fd = -1;
}

int count(const herald_event *ev, herald_response *res)
{
    char line[128];
    seen++;
    if (fd >= 0) {
        int n = snprintf(line, sizeof line, "%s\n", ev->message_id);
        if (write(fd, line, (size_t)n) != n) {
            res->set_error(res, "cannot append to COUNT_FILE");
            return HERALD_RETRY;
        }
    }
    int n = snprintf(line, sizeof line, "%lu", seen);
    res->set_output(res, line, (size_t)n);
    return HERALD_OK;
}
