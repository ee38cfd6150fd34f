/* test_disk.c — disk full (docs/RELIABILITY.md, test 5), and writes that fail
 * (test 5b).
 *
 * The broker's data_dir is a 16 MiB tmpfs the test mounts (root only; skipped
 * otherwise) and always unmounts. disk_min_free = 4 MiB; a filler file takes
 * the tmpfs to ~7 MiB free, then batches of 200 events of 4 KiB are published
 * with herald-publish --lines until the broker refuses them.
 *
 * Must hold: refusals say "throttled: disk alarm"; every confirmed event is
 * stored (all handled once a worker starts); PRAGMA integrity_check says "ok"
 * (sqlite3 library, read-only, while the broker runs and after it stopped);
 * after the filler is deleted, publishing works again without a restart.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "rel.h"

static h_env env;
static char mnt[600];
static bool mounted;

static void setup(void) { h_setup(&env); }
static void teardown(void)
{
    /* the broker first (it holds files there), then the mount, then the dir */
    for (int i = 0; i < env.npids; i++)
        if (env.pids[i] > 0) kill(-env.pids[i], SIGKILL);
    for (int i = 0; i < env.npids; i++)
        if (env.pids[i] > 0) { h_wait_exit(env.pids[i], 5000); env.pids[i] = 0; }
    if (mounted) {
        if (umount2(mnt, 0) != 0 && umount2(mnt, MNT_DETACH) != 0)
            fprintf(stderr, "disk: cannot unmount %s: %s\n", mnt, strerror(errno));
        mounted = false;
    }
    h_teardown(&env);
}

TestSuite(disk, .init = setup, .fini = teardown, .timeout = 300);

static long long free_bytes(const char *dir)
{
    struct statvfs v;
    cr_assert_eq(statvfs(dir, &v), 0);
    return (long long)v.f_bavail * (long long)v.f_frsize;
}

static const char *integrity(const char *db)
{
    static char res[256];
    sqlite3 *h = NULL;
    snprintf(res, sizeof res, "open failed");
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        sqlite3_busy_timeout(h, 5000);
        if (sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            snprintf(res, sizeof res, "%s", (const char *)sqlite3_column_text(st, 0));
        else
            snprintf(res, sizeof res, "error: %s", sqlite3_errmsg(h));
        sqlite3_finalize(st);
    }
    sqlite3_close(h);
    return res;
}

/* Publishes lines [from, from+count) of 4 KiB each ("D<i> xxxx…" — the
 * record keeps the first word); appends the confirmed ids to ids.txt in input
 * order and the refusals to refused.txt. Returns how many were confirmed. */
static int publish_batch(int from, int count, char **why)
{
    char *in = h_path(&env, "batch.txt");
    FILE *f = fopen(in, "w");
    cr_assert_not_null(f);
    static char pad[4097];
    memset(pad, 'x', 4096);
    for (int i = from; i < from + count; i++) fprintf(f, "D%d %s\n", i, pad);
    fclose(f);
    char *out = NULL, *err = NULL;
    h_run(&env, in, &out, &err, "bin/herald-publish", "--broker", env.pub, "--timeout", "20", "--lines", "t", NULL);
    /* refusals come as LINE N (1-based within the batch): keep them as input lines */
    FILE *ids = fopen(h_path(&env, "ids.txt"), "a"), *ref = fopen(h_path(&env, "refused.txt"), "a");
    int k = 0, confirmed = 0;
    bool *refused = calloc((size_t)count, 1);
    for (char *p = err; p && (p = strstr(p, "LINE ")) != NULL; p += 5) {
        long ln = strtol(p + 5, NULL, 10);
        if (ln >= 1 && ln <= count) refused[ln - 1] = true;
    }
    char *save = NULL;
    for (char *tok = out ? strtok_r(out, "\n", &save) : NULL; tok; tok = strtok_r(NULL, "\n", &save)) {
        /* one output line per input line: its id, or "ERROR why" */
        if (k >= count) break;
        if (strncmp(tok, "ERROR ", 6) == 0) { refused[k++] = true; continue; }
        fprintf(ids, "%d %s\n", from + k, tok);
        k++;
        confirmed++;
    }
    for (int i = 0; i < count; i++)
        if (refused[i]) fprintf(ref, "%d\n", from + i);
    fclose(ids);
    fclose(ref);
    free(refused);
    if (why) *why = err;
    else free(err);
    free(out);
    return confirmed;
}

/* Confirmed events never handled: lines "I ID" of ids (input line I, "D<I>
 * …", confirmed as ID) with no "ID D<I> " in the record. Consumes ids. */
static size_t count_lost(char *ids, const char *record)
{
    size_t lost = 0;
    char *save = NULL;
    for (char *line = strtok_r(ids, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char id[128], needle[200];
        int i;
        cr_assert_eq(sscanf(line, "%d %127s", &i, id), 2);
        snprintf(needle, sizeof needle, "%s D%d ", id, i);
        if (!strstr(record, needle)) lost++;
    }
    return lost;
}

Test(disk, full_tmpfs_refuses_publishes_keeps_every_confirmed_event_and_recovers)
{
    if (geteuid() != 0) cr_skip_test("disk-full test: needs root to mount a tmpfs (run as root to include it)");
    snprintf(mnt, sizeof mnt, "%s/data", env.dir);
    cr_assert_eq(mkdir(mnt, 0700), 0);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=16m") != 0)
        cr_skip_test("disk-full test: cannot mount a tmpfs on %s: %s", mnt, strerror(errno));
    mounted = true;

    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"build/tests/handlers/librel_record.so\";"
             " symbol = \"record\"; }; env = { RECORD_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n",
             h_path(&env, "record.txt"));
    h_config_broker(&env, "fsync", "disk_min_free = 4194304;", body);   /* the harness's data_dir: DIR/data */
    pid_t broker = h_broker(&env);

    /* the filler: leave ~7 MiB free */
    char filler[700];
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    long long fill = free_bytes(mnt) - (7LL << 20);
    cr_assert_gt(fill, 0);
    int fd = open(filler, O_WRONLY | O_CREAT, 0600);
    cr_assert_geq(fd, 0);
    static char chunk[1 << 16];
    memset(chunk, 'f', sizeof chunk);
    for (long long left = fill; left > 0;) {
        ssize_t w = write(fd, chunk, left < (long long)sizeof chunk ? (size_t)left : sizeof chunk);
        cr_assert_gt(w, 0, "filler: %s", strerror(errno));
        left -= w;
    }
    close(fd);

    /* publish until refused */
    int next = 0, confirmed = 0, batches = 0;
    char *why = NULL;
    for (;;) {
        free(why);
        why = NULL;
        int c = publish_batch(next, 200, &why);
        confirmed += c;
        next += 200;
        batches++;
        if (c < 200) break;
        cr_assert_lt(batches, 200, "200 batches of 4 KiB events never filled a 16 MiB tmpfs");
        usleep(200000);   /* the alarm is checked once a second: let it look between batches */
    }
    long long free_at_refusal = free_bytes(mnt);
    cr_assert_not_null(strstr(why, "throttled"), "a refusal on a full disk does not say throttled: %.500s", why);
    cr_assert_not_null(strstr(why, "disk"), "a refusal on a full disk does not name the disk: %.500s", why);
    char first_refusal[300];
    snprintf(first_refusal, sizeof first_refusal, "%.*s", (int)strcspn(strstr(why, "LINE"), "\n"),
             strstr(why, "LINE"));
    free(why);
    /* a single publish is refused too, with one clear line */
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "bin/herald-publish", "--broker", env.pub, "t", "one-more", NULL);
    cr_assert_eq(rc, 1, "a publish on a full disk: exit %d", rc);
    cr_assert(strstr(err, "throttled") && strstr(err, "disk"), "stderr: %s", err);
    free(out);
    free(err);
    cr_assert_eq(h_wait_exit(broker, 0), -1, "the broker died on a full disk");
    char db[700];
    snprintf(db, sizeof db, "%s/herald.db", mnt);
    const char *ic1 = integrity(db);
    char ic1c[256];
    snprintf(ic1c, sizeof ic1c, "%s", ic1);
    cr_assert_str_eq(ic1, "ok", "integrity_check on the full disk (broker running): %s", ic1);

    /* free the space: publishing works again, same broker */
    cr_assert_eq(unlink(filler), 0);
    long end = rel_now_ms() + 10000;
    int c = 0;
    char *why2 = NULL;
    while (rel_now_ms() < end) {
        free(why2);
        why2 = NULL;
        c = publish_batch(next, 10, &why2);
        confirmed += c;
        next += 10;
        if (c == 10) break;
        usleep(300000);
    }
    cr_assert_eq(c, 10, "publishing did not work again after space was freed: %.500s", why2 ? why2 : "");
    free(why2);
    cr_assert_eq(h_wait_exit(broker, 0), -1, "the broker was restarted?");

    /* every confirmed event is stored: a worker handles each, under its id */
    h_worker(&env, NULL, 8);
    const char *rec = h_path(&env, "record.txt");
    cr_assert(rel_wait_lines(rec, (size_t)confirmed, 60000), "handled %zu of %d confirmed", h_count_lines(rec),
              confirmed);
    cr_assert(rel_wait_drained(&env, "t", "rec", 30000));
    char *ids = h_read(h_path(&env, "ids.txt"), NULL), *r = h_read(rec, NULL);
    size_t lost = count_lost(ids, r);
    free(ids);
    free(r);
    size_t refused = h_count_lines(h_path(&env, "refused.txt"));
    cr_assert_eq(h_signal_exit(&env, broker, SIGTERM, 15000), 0, "the broker did not stop cleanly");
    const char *ic2 = integrity(db);
    char extra[1400];
    snprintf(extra, sizeof extra,
             "16 MiB tmpfs, disk_min_free 4 MiB: %zu of %d refused, %lld bytes free at the refusal; "
             "\"%s\"; integrity_check %s / %s after stop; publishing again after freeing: yes",
             refused, next, free_at_refusal, first_refusal, ic1c, ic2);
    rel_report("disk-full", "data_dir on a full 16 MiB tmpfs", 1, confirmed, (long)lost,
               (long)(h_count_lines(rec) - (size_t)confirmed), extra);
    cr_assert_eq(lost, 0, "%zu confirmed events not handled after a full disk", lost);
    cr_assert_str_eq(ic2, "ok", "integrity_check after the broker stopped: %s", ic2);
    cr_assert_eq(h_count_lines(rec), (size_t)confirmed, "runs %zu for %d confirmed", h_count_lines(rec), confirmed);
}

/* Test 5b: the broker's writes fail. RLIMIT_FSIZE of 1 byte, set on the
 * running broker (prlimit(2), no root needed), makes every write it issues
 * past the first byte of any file fail with EFBIG — WAL frames, the
 * checkpointer's copies, its log — so commits fail while a worker is acking:
 * publishes and acks of those turns are lost together, as a dying disk would
 * do it. Must hold: the broker lives; each refused publish says "storage
 * failed" with SQLite's reason and is never stored (never handled); stats
 * count only what was confirmed; once the limit is lifted the same broker
 * confirms again; every confirmed event is handled (acks lost with a failed
 * turn give duplicates, which at-least-once allows: counted); the database
 * passes integrity_check after the broker stops. */
static void set_fsize(pid_t pid, rlim_t soft)
{
    struct rlimit old, rl;
    cr_assert_eq(prlimit(pid, RLIMIT_FSIZE, NULL, &old), 0, "prlimit: %s", strerror(errno));
    rl.rlim_cur = soft;
    rl.rlim_max = old.rlim_max;
    cr_assert_eq(prlimit(pid, RLIMIT_FSIZE, &rl, NULL), 0, "prlimit: %s", strerror(errno));
}

Test(disk, failing_writes_refuse_the_turn_lose_no_confirmed_event_and_recover)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"build/tests/handlers/librel_record.so\";"
             " symbol = \"record\"; }; env = { RECORD_FILE = \"%s\"; SLEEP_US = \"2000\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n",
             h_path(&env, "record.txt"));
    h_config(&env, "fsync", body);
    pid_t broker = h_broker(&env);
    h_worker(&env, NULL, 8);
    char rec[600];   /* h_path's buffers are reused by the calls below */
    snprintf(rec, sizeof rec, "%s", h_path(&env, "record.txt"));

    /* 1. a stream being handled (2 ms a run: ~0.4 s of work in flight) */
    const int n1 = 400, n2 = 200, n3 = 200;
    int confirmed = publish_batch(0, n1, NULL);
    cr_assert_eq(confirmed, n1, "before any fault: %d of %d confirmed", confirmed, n1);
    cr_assert(rel_wait_lines(rec, 20, 10000), "the worker handles nothing");

    /* 2. every write fails: publishes are refused, the worker's acks are lost */
    set_fsize(broker, 1);
    size_t at_fault = h_count_lines(rec);
    char *why = NULL;
    int c2 = publish_batch(n1, n2, &why);
    cr_assert_eq(c2, 0, "%d publishes confirmed while every write failed", c2);
    cr_assert(why && strstr(why, "storage failed") && strstr(why, "I/O error"),
              "a refusal does not say the storage failed, and why: %.300s", why ? why : "");
    char first_refusal[300];
    snprintf(first_refusal, sizeof first_refusal, "%.*s", (int)strcspn(strstr(why, "LINE"), "\n"),
             strstr(why, "LINE"));
    free(why);
    cr_assert(rel_wait_lines(rec, (size_t)n1, 20000), "the worker stopped while writes failed: %zu runs",
              h_count_lines(rec));
    size_t during = h_count_lines(rec) - at_fault;
    cr_assert_gt(during, 0, "no handler ran while writes failed: the acks were not put to the test");
    cr_assert_eq(h_wait_exit(broker, 0), -1, "the broker died when its writes failed");
    cr_assert_eq(rel_topic_published(&env, "t"), n1, "stats count refused publishes as published");

    /* 3. writes work again: the same broker confirms again */
    set_fsize(broker, RLIM_INFINITY);
    int c3 = publish_batch(n1 + n2, n3, &why);
    cr_assert_eq(c3, n3, "after the fault, %d of %d confirmed: %.300s", c3, n3, why ? why : "");
    free(why);
    confirmed += c3;

    /* every confirmed event handled under its id; no refused one ever ran */
    cr_assert(rel_wait_drained(&env, "t", "rec", 60000), "the queue never drained: %s", h_stats(&env));
    char *ids = h_read(h_path(&env, "ids.txt"), NULL), *r = h_read(rec, NULL);
    size_t lost = count_lost(ids, r), ran_refused = 0;
    for (int i = n1; i < n1 + n2; i++) {
        char needle[32];
        snprintf(needle, sizeof needle, " D%d ", i);
        if (strstr(r, needle)) ran_refused++;
    }
    free(ids);
    free(r);
    size_t runs = h_count_lines(rec);
    cr_assert_eq(rel_topic_published(&env, "t"), confirmed, "stats: published is not the %d confirmed", confirmed);
    cr_assert_eq(h_signal_exit(&env, broker, SIGTERM, 15000), 0, "the broker did not stop cleanly");
    char db[700];
    snprintf(db, sizeof db, "%s/data/herald.db", env.dir);
    const char *ic = integrity(db);
    char extra[900];
    snprintf(extra, sizeof extra,
             "RLIMIT_FSIZE 1 byte on the running broker, then lifted: %d of %d refused; \"%s\"; "
             "%zu runs while writes failed; integrity_check %s after stop",
             n2, n1 + n2 + n3, first_refusal, during, ic);
    rel_report("write-failure", "every broker write fails (EFBIG)", 1, confirmed, (long)lost,
               (long)(runs - (size_t)confirmed), extra);
    cr_assert_eq(lost, 0, "%zu confirmed events never handled after failed writes", lost);
    cr_assert_eq(ran_refused, 0, "%zu refused publishes were stored and ran", ran_refused);
    cr_assert_str_eq(ic, "ok", "integrity_check after the broker stopped: %s", ic);
}
