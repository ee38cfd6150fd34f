/* test_hlog.c — handler log lines (worker/loglines.c, hlog.h): how bytes are
 * cut into lines, cleaned, rate-limited and framed as CH_LOG. */
#include <criterion/criterion.h>
#include <string.h>

#include "../../worker/hlog.h"

/* The lines of l, framed and decoded again, joined by '|'. */
static void lines_of(loglines *l, char *out, size_t cap, uint32_t *dropped)
{
    wbuf b = { 0 };
    loglines_frame(l, &b, "m-1", 2);
    out[0] = 0;
    *dropped = 0;
    if (b.len == 0)
        return;
    const char *body;
    uint32_t n;
    bool bad = false;
    cr_assert(msg_next(&b, &body, &n, &bad));
    cr_assert_eq((uint8_t)body[0], CH_LOG);
    chan_log m;
    cr_assert(chan_log_get(body + 1, n - 1, &m));
    cr_assert_str_eq(m.message_id, "m-1");
    cr_assert_eq(m.attempt, 2);
    *dropped = m.dropped;
    size_t used = 0;
    for (uint32_t i = 0; i < m.n; i++) {
        size_t len;
        const char *p = rd_bytes(&m.lines, &len);
        used += (size_t)snprintf(out + used, cap - used, "%s%.*s", i ? "|" : "", (int)len, p);
    }
    wbuf_free(&b);
}

Test(hlog, lines_cut_at_newlines_and_cleaned)
{
    loglines l = { 0 };
    char out[8192];
    uint32_t dropped;
    loglines_feed(&l, "one\ntw", 6, 1);
    loglines_feed(&l, "o\r\n\x1b[31mred\tok\n\nlast", 20, 2);
    lines_of(&l, out, sizeof out, &dropped);
    cr_assert_str_eq(out, "one|two|?[31mred\tok|");
    loglines_end(&l, 3);   /* "last" had no newline */
    lines_of(&l, out, sizeof out, &dropped);
    cr_assert_str_eq(out, "last");
    cr_assert_eq(dropped, 0);
    loglines_free(&l);
}

Test(hlog, long_lines_cut_every_line_max)
{
    loglines l = { 0 };
    static char big[HLOG_LINE_MAX * 2 + 10], out[HLOG_LINE_MAX * 3 + 16];
    memset(big, 'x', sizeof big);
    big[HLOG_LINE_MAX] = '\n';   /* a line of exactly the max is one line, not two */
    loglines_feed(&l, big, sizeof big, 1);
    loglines_end(&l, 1);
    uint32_t dropped;
    lines_of(&l, out, sizeof out, &dropped);
    cr_assert_eq(strlen(out), HLOG_LINE_MAX + 1 + HLOG_LINE_MAX + 1 + 9);
    cr_assert_eq(out[HLOG_LINE_MAX], '|');
    cr_assert_eq(out[2 * HLOG_LINE_MAX + 1], '|');
    loglines_free(&l);
}

Test(hlog, past_the_burst_lines_are_dropped_and_counted_then_the_rate_refills)
{
    loglines l = { 0 };
    for (int i = 0; i < HLOG_BURST + 500; i++)
        loglines_feed(&l, "x\n", 2, 1000000);
    cr_assert_eq(l.nlines, HLOG_BURST);
    cr_assert_eq(l.dropped, 500);
    loglines_feed(&l, "y\n", 2, 1000000 + 1000000 / HLOG_RATE);   /* one line's worth of time later */
    loglines_feed(&l, "z\n", 2, 1000000 + 1000000 / HLOG_RATE);
    cr_assert_eq(l.nlines, HLOG_BURST + 1);
    cr_assert_eq(l.dropped, 501);
    wbuf b = { 0 };
    loglines_frame(&l, &b, "", 0);
    cr_assert_eq(l.nlines, 0);
    cr_assert_eq(l.dropped, 0);
    wbuf_free(&b);
    loglines_free(&l);
}
