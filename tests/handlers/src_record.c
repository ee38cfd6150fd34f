/* src_record: the herald-source-fs suite's native handler
 * (tests/integration/test_source_fs.c).
 *
 * Appends one line per run to $RECORD_FILE with one write (O_APPEND, so
 * every host can share the file):
 *     MESSAGE_ID ATTEMPT event_name=VALUE bucket=VALUE PAYLOAD
 * The payload is S3 notification JSON, one line, no size cap here.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herald/handler.h"

static int fd = -1;

int herald_init(void)
{
    const char *path = getenv("RECORD_FILE");
    if (!path || !*path) return 1;
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    return fd < 0 ? 2 : 0;
}

void herald_fini(void)
{
    if (fd >= 0) close(fd);
    fd = -1;
}

static const char *attr(const herald_event *ev, const char *key)
{
    for (size_t i = 0; i < ev->nattrs; i++)
        if (strcmp(ev->attrs[i].key, key) == 0) return ev->attrs[i].value;
    return "-";
}

int record(const herald_event *ev, herald_response *res)
{
    size_t cap = ev->payload_len + 512;
    char *line = malloc(cap);
    if (!line) {
        res->set_error(res, "out of memory");
        return HERALD_RETRY;
    }
    int n = snprintf(line, cap, "%s %d event_name=%s bucket=%s ", ev->message_id, ev->attempt,
                     attr(ev, "event_name"), attr(ev, "bucket"));
    if (n < 0 || (size_t)n + ev->payload_len + 2 > cap) {
        free(line);
        res->set_error(res, "attributes too long");
        return HERALD_REJECT;
    }
    memcpy(line + n, ev->payload, ev->payload_len);
    n += (int)ev->payload_len;
    line[n++] = '\n';
    ssize_t w = write(fd, line, (size_t)n);
    free(line);
    if (w != n) {
        res->set_error(res, "cannot append to RECORD_FILE");
        return HERALD_RETRY;
    }
    return HERALD_OK;
}
