/* native_log: test_logs.c's native handler. herald_log()s a line naming
 * the payload and its message id, and a second line with an embedded
 * newline (two lines of the log); "flood" logs 100,000 lines (most are
 * dropped, counted, and the handler is not held up). Outputs "ok". */
#include <string.h>

#include "herald/handler.h"

int handle(const herald_event *ev, herald_response *res)
{
    if (ev->payload_len == 5 && memcmp(ev->payload, "flood", 5) == 0) {
        for (int i = 0; i < 100000; i++)
            herald_log(res, "flood line %d", i);
    } else {
        herald_log(res, "native says %.*s (%s)", (int)ev->payload_len, (const char *)ev->payload, ev->message_id);
        herald_log(res, "two\nlines");
    }
    res->set_output(res, "ok", 2);
    return HERALD_OK;
}
