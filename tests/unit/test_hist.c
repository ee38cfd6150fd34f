/* test_hist.c — the duration histogram behind stats' p50_ms / p99_ms. */
#include <criterion/criterion.h>
#include <math.h>

#include "../../broker/broker.h"

static double pct(const hist_t *h, double q) { return hist_percentile_ms(h, q); }

Test(hist, an_empty_histogram_reports_0)
{
    hist_t h = { 0 };
    cr_assert_eq(pct(&h, 0.5), 0.0);
    cr_assert_eq(pct(&h, 0.99), 0.0);
}

Test(hist, a_constant_duration_is_reported_as_it_is_not_as_a_bucket_edge)
{
    hist_t h = { 0 };
    for (int i = 0; i < 100; i++) hist_add(&h, 131000);   /* 131 ms: bucket [131.072, 262.144) ms would say 131.072 */
    cr_assert_float_eq(pct(&h, 0.5), 131.0, 1e-9, "p50 of 100 × 131 ms: %g", pct(&h, 0.5));
    cr_assert_float_eq(pct(&h, 0.99), 131.0, 1e-9, "p99 of 100 × 131 ms: %g", pct(&h, 0.99));
    hist_t one = { 0 };
    hist_add(&one, 3);
    cr_assert_float_eq(pct(&one, 0.5), 0.003, 1e-12, "one sample of 3 µs: %g", pct(&one, 0.5));
}

Test(hist, a_spread_is_interpolated_within_its_bucket)
{
    hist_t h = { 0 };
    for (uint32_t ms = 1; ms <= 1000; ms++) hist_add(&h, ms * 1000);   /* 1 … 1000 ms, evenly */
    double p50 = pct(&h, 0.5), p99 = pct(&h, 0.99);
    cr_assert(fabs(p50 - 500) <= 25, "p50 of 1…1000 ms: %g (want about 500)", p50);
    cr_assert(fabs(p99 - 990) <= 25, "p99 of 1…1000 ms: %g (want about 990)", p99);
    /* two groups: the median falls in the lower one, the p99 in the upper */
    hist_t g = { 0 };
    for (int i = 0; i < 90; i++) hist_add(&g, 20000);
    for (int i = 0; i < 10; i++) hist_add(&g, 700000);
    cr_assert_float_eq(pct(&g, 0.5), 20.0, 1e-9, "p50: %g", pct(&g, 0.5));
    cr_assert_float_eq(pct(&g, 0.99), 700.0, 1e-9, "p99: %g", pct(&g, 0.99));
}
