/* libFuzzer target for schedule expressions and TZif files, sched/
 * (make fuzz: build/fuzz/fuzz_sched).
 *
 * Byte 0 picks the input's kind:
 *   even: the rest is a spec ("cron(...)", "rate(...)", "at(...)", or a bare
 *         cron / rate / at with bits 1-2 of byte 0) parsed; when it parses, its
 *         next fire times are chained from a few instants in UTC, New York and
 *         Paris, and each must be later than the last and, for a cron, fall on
 *         a wall time whose minute, hour and month the cron allows;
 *   odd:  the rest is a TZif file loaded from memory; when it loads, offsets
 *         and local → UTC conversions at a few instants must stay consistent.
 * Nothing may crash, leak, hang or read out of bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../sched/cron.h"
#include "../../sched/tz.h"

static tz_t *zones[3];

static void check_fires(const cron_t *c, const tz_t *z, int64_t after)
{
    for (int k = 0; k < 8; k++) {
        int64_t n;
        if (cron_next(c, z, after, &n) < 0) return;
        if (n <= after) abort();
        if (c->kind == CRON_CRON) {
            int64_t y;
            int mo, d, h, mi, s;
            tz_split(n + tz_offset(z, n, NULL), &y, &mo, &d, &h, &mi, &s);
            if (s || !(c->minutes >> mi & 1) || !(c->hours >> h & 1) || !(c->months >> mo & 1)) abort();
        }
        after = n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!zones[0]) {
        char err[256];
        zones[0] = tz_load("UTC", err, sizeof err);
        zones[1] = tz_load("America/New_York", err, sizeof err);
        zones[2] = tz_load("Europe/Paris", err, sizeof err);
        if (!zones[0] || !zones[1] || !zones[2]) abort();
    }
    if (size < 1) return 0;
    char err[256];
    if (data[0] & 1) {
        tz_t *z = tz_load_bytes(data + 1, size - 1, "fuzz", err, sizeof err);
        if (!z) return 0;
        static const int64_t at[] = { -4000000000LL, 0, 1774000000, 1793500000, 4102444800LL, 7258118400LL };
        for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
            int32_t off = tz_offset(z, at[i], NULL);
            int64_t u[2];
            int n = tz_local_to_utc(z, at[i] + off, u);
            if (n < 0 || n > 2 || (n == 2 && u[0] >= u[1])) abort();
            (void)tz_next_transition(z, at[i]);
        }
        tz_destroy(&z);
        return 0;
    }
    char *s = malloc(size);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = 0;
    cron_t c;
    int rc;
    switch (data[0] >> 1 & 3) {
    case 0: rc = cron_parse(s, &c, err, sizeof err); break;
    case 1: rc = cron_parse_cron(s, &c, err, sizeof err); break;
    case 2: rc = cron_parse_rate(s, &c, err, sizeof err); break;
    default: rc = cron_parse_at(s, &c, err, sizeof err); break;
    }
    free(s);
    if (rc < 0) {
        if (!err[0]) abort();                   /* every refusal says why */
        return 0;
    }
    static const int64_t after[] = { 0, 1772841600, 1793509200, 4102444800LL };
    for (int zi = 0; zi < 3; zi++)
        for (size_t i = 0; i < sizeof after / sizeof after[0]; i++) check_fires(&c, zones[zi], after[i]);
    return 0;
}
