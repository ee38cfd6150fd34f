/* test_disk.c — disk full (docs/RELIABILITY.md, test 5).
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
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
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
        while (k < count && refused[k]) k++;
        if (k >= count) break;
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
    size_t lost = 0;
    char *save = NULL;
    for (char *line = strtok_r(ids, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char id[128], needle[200];
        int i;
        cr_assert_eq(sscanf(line, "%d %127s", &i, id), 2);
        snprintf(needle, sizeof needle, "%s D%d ", id, i);
        if (!strstr(r, needle)) lost++;
    }
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
