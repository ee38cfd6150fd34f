/* test_broker.c — unit tests of the broker's pure parts: backoff, the lease
 * map, subscription filters, the timer heap and intrusive lists. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../../broker/broker.h"

Test(broker, backoff_grows_by_the_multiplier_up_to_max_without_jitter)
{
    cfg_backoff p = { .initial_s = 0.5, .max_s = 3.0, .multiplier = 2.0, .jitter = JITTER_NONE };
    cr_assert_eq(backoff_ms(&p, 1, 0.7), 500);
    cr_assert_eq(backoff_ms(&p, 2, 0.7), 1000);
    cr_assert_eq(backoff_ms(&p, 3, 0.7), 2000);
    cr_assert_eq(backoff_ms(&p, 4, 0.7), 3000);
    cr_assert_eq(backoff_ms(&p, 40, 0.7), 3000);
}

Test(broker, backoff_full_jitter_scales_the_whole_delay_equal_jitter_half)
{
    cfg_backoff p = { .initial_s = 1.0, .max_s = 300.0, .multiplier = 2.0, .jitter = JITTER_FULL };
    cr_assert_eq(backoff_ms(&p, 3, 0.0), 0);
    cr_assert_eq(backoff_ms(&p, 3, 0.5), 2000);
    p.jitter = JITTER_EQUAL;
    cr_assert_eq(backoff_ms(&p, 3, 0.0), 2000);
    cr_assert_eq(backoff_ms(&p, 3, 0.5), 3000);
}

Test(broker, lease_map_put_get_delete_survives_growth_and_probe_runs)
{
    lease_map m = { 0 };
    static int vals[20000];
    for (uint64_t k = 1; k <= 20000; k++) cr_assert_eq(lease_put(&m, k * 7919, &vals[k - 1]), 0);
    cr_assert_eq(m.n, 20000);
    for (uint64_t k = 1; k <= 20000; k += 2) cr_assert_eq(lease_del(&m, k * 7919), &vals[k - 1]);
    for (uint64_t k = 1; k <= 20000; k++) {
        void *v = lease_get(&m, k * 7919);
        if (k % 2) cr_assert_null(v, "deleted key %lu still found", (unsigned long)k);
        else cr_assert_eq(v, &vals[k - 1], "key %lu lost after deletions", (unsigned long)k);
    }
    cr_assert_null(lease_get(&m, 0));
    cr_assert_null(lease_del(&m, 12345));
    cr_assert_eq(m.n, 10000);
    lease_map_free(&m);
}

Test(broker, filter_matches_when_every_key_has_one_of_its_values)
{
    char *png[] = { "image/png", "image/jpeg" }, *eu[] = { "eu" };
    cfg_filter f[2] = { { "content_type", png, 2 }, { "region", eu, 1 } };
    cfg_subscription s = { .function = "thumb", .filters = f, .nfilters = 2 };
    proto_attr a[] = { { "region", "eu" }, { "content_type", "image/jpeg" } };
    cr_assert(filter_match(&s, a, 2));
    cr_assert_not(filter_match(&s, a, 1), "a missing key must not match");
    proto_attr b[] = { { "region", "us" }, { "content_type", "image/jpeg" } };
    cr_assert_not(filter_match(&s, b, 2));
    cr_assert(filter_match(NULL, b, 0), "no filter matches everything");
    cfg_subscription none = { .function = "x" };
    cr_assert(filter_match(&none, NULL, 0));
}

Test(broker, timers_wake_deliveries_in_visible_order)
{
    broker_t b;
    memset(&b, 0, sizeof b);
    function_t fn = { .name = "f" };
    sub_t s = { .fn = &fn };
    list_init(&s.ready);
    delivery_t d[50];
    memset(d, 0, sizeof d);
    for (int i = 0; i < 50; i++) {
        d[i].sub = &s;
        d[i].state = DELIVERY_RETRY_WAIT;
        d[i].visible_ms = (i * 37) % 50;   /* a permutation of 0..49 */
        d[i].link.prev = d[i].link.next = &d[i].link;
        timers_add(&b, &d[i]);
    }
    timers_remove(&b, &d[3]);              /* visible 11: removed, never woken */
    cr_assert_eq(timers_run(&b, 9), 10 - 9, "next timer is at 10");
    cr_assert_eq(s.ready.n, 10);
    cr_assert_eq(timers_run(&b, 100), -1);
    cr_assert_eq(s.ready.n, 49);
    int64_t last = -1;
    for (list_node *n = s.ready.head.next; n != &s.ready.head; n = n->next) {
        delivery_t *x = container_of(n, delivery_t, link);
        cr_assert(x->visible_ms > last, "woken out of order");
        cr_assert_neq(x->visible_ms, 11);
        last = x->visible_ms;
    }
    free(b.timers);
}
