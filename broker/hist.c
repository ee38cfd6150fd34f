/* hist.c — a function's handler durations as a log2 histogram, and the
 * percentiles stats reports from it (p50_ms, p99_ms).
 *
 * Bucket i counts durations of [2^i, 2^(i+1)) µs (bucket 0: 0 and 1 µs), so
 * adding is a few shifts and the memory is fixed. A bucket's edges are no
 * answer (a steady 131 ms handler is not "131.072" nor "65.536"): each bucket
 * also keeps the least and greatest duration it saw, and a percentile is
 * interpolated between those two by its rank within the bucket. So a bucket
 * of equal durations reports them exactly, and a spread is placed evenly
 * between its real ends; the error is bounded by the spread inside one
 * bucket, never more than a factor of 2. Pure functions on the hist_t given;
 * unit-tested in tests/unit/test_hist.c.
 */
#include <math.h>

#include "broker.h"

void hist_add(hist_t *h, uint32_t us)
{
    int bucket = 0;
    for (uint32_t v = us; v > 1 && bucket < 63; v >>= 1) bucket++;
    if (!h->n[bucket] || us < h->lo[bucket]) h->lo[bucket] = us;
    if (!h->n[bucket] || us > h->hi[bucket]) h->hi[bucket] = us;
    h->n[bucket]++;
}

double hist_percentile_ms(const hist_t *h, double q)
{
    uint64_t total = 0;
    for (int i = 0; i < 64; i++) total += h->n[i];
    if (!total) return 0;
    /* the rank of the q-quantile, 1-based (nearest rank) */
    uint64_t want = (uint64_t)ceil(q * (double)total), before = 0;
    if (want == 0) want = 1;
    if (want > total) want = total;
    for (int i = 0; i < 64; i++) {
        if (before + h->n[i] < want) {
            before += h->n[i];
            continue;
        }
        /* the k-th of n samples in [lo, hi], taken as evenly spread */
        uint64_t k = want - before, n = h->n[i];
        double lo = h->lo[i], hi = h->hi[i];
        double us = n > 1 ? lo + (hi - lo) * (double)(k - 1) / (double)(n - 1) : lo;
        return us / 1000.0;
    }
    return 0;
}
