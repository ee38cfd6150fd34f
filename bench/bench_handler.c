/* bench_handler.c — herald-bench's native handler: a no-op plus bookkeeping.
 *
 * herald_init() maps the run's shared file (env BENCH_SHM, see shared.h) and
 * reads its subscription index (env BENCH_SUB). bench_handle() counts the
 * (subscription, event) pair in seen[], stamps the publish → handler latency
 * of subscription 0 when the run measures it, and returns HERALD_OK, which
 * the worker reports as the ack. The work per event is a few atomic adds on
 * a shared page, so the figures measure herald, not the handler.
 *
 * Built on include/herald/handler.h alone: build/bench/libbench_handler.so.
 */
#define _GNU_SOURCE
#include <herald/handler.h>

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shared.h"

static bench_shm *S;        /* the mapped file; NULL before init */
static size_t S_len;        /* its mapped bytes */
static uint8_t *seen;       /* seen[sub * n + seq] */
static uint64_t *lat;       /* lat_ns[seq], or NULL */
static int64_t sub;         /* this host's subscription index */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int herald_init(void)
{
    const char *path = getenv("BENCH_SHM"), *s = getenv("BENCH_SUB");
    if (!path || !s)
        return 1;
    sub = strtol(s, NULL, 10);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return 1;
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < BENCH_HDR) {
        close(fd);
        return 1;
    }
    void *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED)
        return 1;
    S = base;
    S_len = (size_t)st.st_size;
    if (S->magic != BENCH_MAGIC || S->size != (int64_t)S_len || sub < 0 || sub >= S->subs) {
        munmap(base, S_len);
        S = NULL;
        return 1;
    }
    seen = (uint8_t *)base + S->seen_off;
    lat = S->lat_off ? (uint64_t *)((char *)base + S->lat_off) : NULL;
    return 0;
}

void herald_fini(void)
{
    if (S)
        munmap(S, S_len);
    S = NULL;
}

int bench_handle(const herald_event *ev, herald_response *res)
{
    (void)res;
    uint64_t now = mono_ns();
    uint64_t seq, stamp;
    if (ev->payload_len < BENCH_PAYLOAD_MIN) {
        __atomic_fetch_add(&S->bad, 1, __ATOMIC_RELAXED);
        return HERALD_OK;
    }
    memcpy(&seq, ev->payload, 8);
    memcpy(&stamp, (const char *)ev->payload + 8, 8);
    if (seq >= (uint64_t)S->n) {
        __atomic_fetch_add(&S->bad, 1, __ATOMIC_RELAXED);
        return HERALD_OK;
    }
    uint64_t zero = 0;
    __atomic_compare_exchange_n(&S->t_first_run_ns, &zero, now, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    uint8_t before = __atomic_fetch_add(&seen[sub * S->n + (int64_t)seq], 1, __ATOMIC_RELAXED);
    if (lat && sub == 0 && before == 0)
        lat[seq] = now - stamp;
    __atomic_fetch_add(&S->runs, 1, __ATOMIC_RELAXED);
    /* the last new pair stamps the end: duplicates cannot end a run early */
    if (before == 0 && __atomic_add_fetch(&S->unique, 1, __ATOMIC_ACQ_REL) == S->expected)
        __atomic_store_n(&S->t_done_ns, mono_ns(), __ATOMIC_RELEASE);
    return HERALD_OK;
}
