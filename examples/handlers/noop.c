/* noop.c — the smallest native handler: accepts every event. The benchmark's
 * handler, and a template: build with `cc -shared -fPIC noop.c -o libnoop.so`. */
#include <herald/handler.h>

int noop(const herald_event *ev, herald_response *res)
{
    (void)ev;
    (void)res;
    return HERALD_OK;
}
