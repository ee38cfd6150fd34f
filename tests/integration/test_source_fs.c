/* test_source_fs.c — herald-source-fs through the real programs (DESIGN §12,
 * docs/SOURCES.md): a broker, a worker running tests/handlers/src_record.c
 * (one line per event: id, attributes, the S3 JSON) and the source watching
 * DIR/in. What the broker stored is what the handler saw.
 *
 * "Exactly these events" is checked without clocks: after the changes under
 * test a sentinel file is written; the source publishes in the order it saw
 * changes, so once the sentinel's event is stored every earlier one is too,
 * and once the subscription's succeeded count reaches the topic's published
 * count every stored event has been recorded.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "../../sources/fs.h"

static h_env env;
static char indir[300];
static int source_starts;

static void setup(void)
{
    h_setup(&env);
    snprintf(indir, sizeof indir, "%s/in", env.dir);
    mkdir(indir, 0755);
    source_starts = 0;
}
static void teardown(void) { h_teardown(&env); }

TestSuite(source_fs, .init = setup, .fini = teardown, .timeout = 120);

/* ---- the events the handler recorded --------------------------------------- */

typedef struct {
    char mid[80];
    char attr_name[40], attr_bucket[80];
    char name[40];                /* eventName */
    char key[600];                /* as in the JSON (encoded) */
    char etag[40];
    char seqr[24];                /* sequencer */
    long size;                    /* -1: absent */
    char *json;                   /* owned */
} ev_t;

typedef struct {
    ev_t *v;
    size_t n;
} evs_t;

/* "key":"value" → value (no escapes in our JSON); "" when absent. */
static const char *jstr(const char *json, const char *key, char *out, size_t size)
{
    char k[64];
    snprintf(k, sizeof k, "\"%s\":\"", key);
    const char *p = strstr(json, k);
    out[0] = '\0';
    if (!p) return out;
    p += strlen(k);
    const char *e = strchr(p, '"');
    size_t n = e ? (size_t)(e - p) : 0;
    if (n >= size) n = size - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    return out;
}

static long jnum(const char *json, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = strstr(json, k);
    return p ? strtol(p + strlen(k), NULL, 10) : -1;
}

static void evs_free(evs_t *e)
{
    for (size_t i = 0; i < e->n; i++) free(e->v[i].json);
    free(e->v);
    e->v = NULL;
    e->n = 0;
}

static int by_sequencer(const void *a, const void *b)
{
    return strcmp(((const ev_t *)a)->seqr, ((const ev_t *)b)->seqr);
}

/* The recorded events, one per message id (a redelivery after a broker
 * crash runs the handler again with the same id), in sequencer order. */
static void load(evs_t *e)
{
    e->v = NULL;
    e->n = 0;
    char *text = h_read(h_path(&env, "rec.txt"), NULL);
    if (!text) return;
    size_t cap = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        ev_t ev = { .size = -1 };
        int at = 0, attempt;
        if (sscanf(line, "%79s %d event_name=%39s bucket=%79s %n", ev.mid, &attempt, ev.attr_name, ev.attr_bucket,
                   &at) != 4 || !at)
            continue;
        bool dup = false;
        for (size_t i = 0; i < e->n && !dup; i++) dup = strcmp(e->v[i].mid, ev.mid) == 0;
        if (dup) continue;
        ev.json = strdup(line + at);
        jstr(ev.json, "eventName", ev.name, sizeof ev.name);
        jstr(ev.json, "key", ev.key, sizeof ev.key);
        jstr(ev.json, "eTag", ev.etag, sizeof ev.etag);
        jstr(ev.json, "sequencer", ev.seqr, sizeof ev.seqr);
        ev.size = jnum(ev.json, "size");
        if (e->n == cap) e->v = realloc(e->v, (cap = cap ? cap * 2 : 256) * sizeof *e->v);
        e->v[e->n++] = ev;
    }
    free(text);
    if (e->n) qsort(e->v, e->n, sizeof *e->v, by_sequencer);
}

static size_t count(const evs_t *e, const char *name, const char *key)
{
    size_t n = 0;
    for (size_t i = 0; i < e->n; i++)
        if ((!name || strcmp(e->v[i].name, name) == 0) && (!key || strcmp(e->v[i].key, key) == 0)) n++;
    return n;
}

static const char *list(const evs_t *e)
{
    static char buf[8192];
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < e->n && o + 200 < sizeof buf; i++)
        o += (size_t)snprintf(buf + o, sizeof buf - o, "  %s %s %s %s\n", e->v[i].seqr, e->v[i].name, e->v[i].key,
                              e->v[i].etag);
    return buf;
}

/* ---- the programs ------------------------------------------------------------ */

static void write_cfg(const char *extra)
{
    char body[4096];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"build/tests/handlers/libsrc_record.so\";"
             " symbol = \"record\"; }; env = { RECORD_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"uploads\"; subscriptions = ( { function = \"rec\"; } ); } );\n"
             "sources = ( { name = \"photos\"; type = \"fs\"; path = \"%s\"; bucket = \"photos\";"
             " topic = \"uploads\"; %s } );\n",
             h_path(&env, "rec.txt"), indir, extra ? extra : "");
    h_config(&env, "os", body);
}

typedef struct {
    const char *log;
} log_arg;

static bool log_says_watching(void *arg)
{
    char *t = h_read(h_path(&env, ((log_arg *)arg)->log), NULL);
    bool ok = t && strstr(t, ": watching ");
    free(t);
    return ok;
}

/* Starts the source (its own log per start) and waits until every directory
 * is watched and the start's comparison is done. */
static pid_t start_source(void)
{
    char log[32], err[48];
    snprintf(log, sizeof log, "source%d", ++source_starts);
    snprintf(err, sizeof err, "%s.err", log);
    /* pids of programs that were killed are forgotten: restarts must not run out of slots */
    int k = 0;
    for (int i = 0; i < env.npids; i++)
        if (env.pids[i]) env.pids[k++] = env.pids[i];
    env.npids = k;
    pid_t pid = h_start(&env, log, "bin/herald-source-fs", "-c", env.cfg, NULL);
    log_arg a = { err };
    bool up = h_wait(log_says_watching, &a, 20000);
    cr_assert(up, "the source did not come up: %s", h_read(h_path(&env, err), NULL));
    return pid;
}

static pid_t broker_pid, source_pid;

static void start_all(const char *extra)
{
    write_cfg(extra);
    broker_pid = h_broker(&env);
    h_worker(&env, "rec", 2);
    source_pid = start_source();
}

static void put(const char *rel, const char *content)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", indir, rel);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fputs(content, f);
    fclose(f);
}

static char *in(const char *rel)
{
    static char buf[4][PATH_MAX];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, PATH_MAX, "%s/%s", indir, rel);
    return p;
}

static long published(void)
{
    char *st = h_stats(&env);
    long v = h_json_num(st, "{\"name\":\"uploads\"", "published");
    free(st);
    return v;
}

typedef struct {
    const char *key;
} key_arg;

static bool recorded(void *arg)
{
    evs_t e;
    load(&e);
    size_t n = count(&e, NULL, ((key_arg *)arg)->key);
    evs_free(&e);
    return n > 0;
}

static bool all_handled(void *arg)
{
    (void)arg;
    long p = published();
    return p >= 0 && h_sub_stat(&env, "uploads", "rec", "succeeded") == p;
}

/* Writes the sentinel rel (its encoded key: key) and waits until it and
 * everything published before it was handled. */
static void settle_on(const char *rel, const char *key)
{
    put(rel, "sentinel");
    key_arg a = { key };
    cr_assert(h_wait(recorded, &a, 30000), "the sentinel %s was not announced", key);
    cr_assert(h_wait(all_handled, NULL, 30000), "published %ld, handled %ld", published(),
              h_sub_stat(&env, "uploads", "rec", "succeeded"));
}

static void settle(void)
{
    static int k;
    char name[32];
    snprintf(name, sizeof name, "zz-sentinel-%d", ++k);
    settle_on(name, name);
}

/* ---- tests -------------------------------------------------------------------- */

static bool is_rfc3339_ms(const char *s)
{
    /* 2026-12-07T20:45:23.123Z */
    if (strlen(s) != 24) return false;
    for (int i = 0; i < 24; i++) {
        char c = s[i];
        bool digit = c >= '0' && c <= '9';
        if ((i == 4 || i == 7) ? c != '-' : i == 10 ? c != 'T' : (i == 13 || i == 16) ? c != ':' :
            i == 19 ? c != '.' : i == 23 ? c != 'Z' : !digit)
            return false;
    }
    return true;
}

typedef struct {
    size_t n;
} n_arg;

static bool n_recorded(void *arg)
{
    evs_t e;
    load(&e);
    size_t n = e.n;
    evs_free(&e);
    return n >= ((n_arg *)arg)->n;
}

/* Each step waits for its event: the source compares a path with what it
 * finds when it looks, so a file moved away before that is never seen. */
static void step_done(size_t n)
{
    n_arg a = { n };
    cr_assert(h_wait(n_recorded, &a, 30000), "no event %zu", n);
}

Test(source_fs, create_delete_move_in_and_out_exact_json)
{
    start_all(NULL);
    put("red flower.jpg", "hello\n");
    step_done(1);
    char out[PATH_MAX];
    snprintf(out, sizeof out, "%s/moved-away.jpg", env.dir);
    cr_assert_eq(rename(in("red flower.jpg"), out), 0);   /* move out */
    step_done(2);
    mkdir(in("docs"), 0755);
    char outside[PATH_MAX];
    snprintf(outside, sizeof outside, "%s/outside.txt", env.dir);
    h_write(outside, "x");
    cr_assert_eq(rename(outside, in("docs/a+b.txt")), 0);   /* move in */
    step_done(3);
    cr_assert_eq(unlink(in("docs/a+b.txt")), 0);
    step_done(4);
    settle();
    evs_t e;
    load(&e);
    cr_assert_eq(e.n, 5, "expected 5 events:\n%s", list(&e));
    const char *want[5][2] = { { "ObjectCreated:Put", "red+flower.jpg" }, { "ObjectRemoved:Delete", "red+flower.jpg" },
                               { "ObjectCreated:Put", "docs/a%2Bb.txt" }, { "ObjectRemoved:Delete", "docs/a%2Bb.txt" },
                               { "ObjectCreated:Put", "zz-sentinel-1" } };
    for (int i = 0; i < 5; i++) {
        cr_assert_str_eq(e.v[i].name, want[i][0], "event %d:\n%s", i, list(&e));
        cr_assert_str_eq(e.v[i].key, want[i][1], "event %d:\n%s", i, list(&e));
        cr_assert_str_eq(e.v[i].attr_name, want[i][0], "attribute event_name");
        cr_assert_str_eq(e.v[i].attr_bucket, "photos", "attribute bucket");
        cr_assert_eq(strlen(e.v[i].seqr), 16, "sequencer %s", e.v[i].seqr);
        cr_assert_eq(strspn(e.v[i].seqr, "0123456789ABCDEF"), 16, "sequencer %s", e.v[i].seqr);
        if (i) cr_assert_lt(strcmp(e.v[i - 1].seqr, e.v[i].seqr), 0, "sequencers increase");
    }
    const ev_t *c = &e.v[0];
    char v[128];
    cr_assert(strncmp(c->json, "{\"Records\":[{", 13) == 0, "%s", c->json);
    cr_assert_str_eq(jstr(c->json, "eventVersion", v, sizeof v), "2.1");
    cr_assert_str_eq(jstr(c->json, "eventSource", v, sizeof v), "herald:fs");
    cr_assert_str_eq(jstr(c->json, "awsRegion", v, sizeof v), "us-east-1");
    cr_assert(is_rfc3339_ms(jstr(c->json, "eventTime", v, sizeof v)), "eventTime %s", v);
    cr_assert_str_eq(jstr(c->json, "s3SchemaVersion", v, sizeof v), "1.0");
    cr_assert(strstr(c->json, "\"bucket\":{\"name\":\"photos\","), "%s", c->json);
    cr_assert_str_eq(jstr(c->json, "arn", v, sizeof v), "arn:aws:s3:::photos");
    cr_assert_eq(c->size, 6);
    cr_assert_str_eq(c->etag, "b1946ac92492d2347c6235b4d2611184", "the MD5 of hello\\n");
    cr_assert_eq(e.v[2].size, 1);
    cr_assert_str_eq(e.v[2].etag, "9dd4e461268c8034f5c8564e155c67a6", "the MD5 of x");
    cr_assert_eq(e.v[1].size, -1, "S3 gives no size for a removal: %s", e.v[1].json);
    cr_assert_str_eq(e.v[1].etag, "", "nor an eTag");
    /* An S3 handler as people write them reads it unchanged. */
    h_write(h_path(&env, "event.json"), c->json);
    char *pyout = NULL, *pyerr = NULL;
    int rc = h_run(&env, h_path(&env, "event.json"), &pyout, &pyerr, "/usr/bin/python3", "-c",
                   "import json, sys, urllib.parse\n"
                   "r = json.load(sys.stdin)['Records'][0]\n"
                   "print(r['s3']['bucket']['name'], urllib.parse.unquote_plus(r['s3']['object']['key']),"
                   " r['s3']['object']['size'], r['eventName'])\n", NULL);
    cr_assert_eq(rc, 0, "python: %s", pyerr);
    cr_assert_str_eq(pyout, "photos red flower.jpg 6 ObjectCreated:Put\n");
    free(pyout);
    free(pyerr);
    evs_free(&e);
}

Test(source_fs, prefix_suffix_and_ignore_globs)
{
    start_all("prefix = \"img/\"; suffix = \".jpg\"; ignore = [\".*.swp\", \"*~\", \"4913\", \"img/skip/*\"];");
    mkdir(in("img"), 0755);
    mkdir(in("img/skip"), 0755);
    mkdir(in("other"), 0755);
    put("img/a.jpg", "a");
    put("img/b.png", "b");         /* suffix */
    put("other/c.jpg", "c");       /* prefix */
    put("img/.a.jpg.swp", "s");    /* vim's swap file */
    put("img/x.jpg~", "s");        /* a backup */
    put("img/4913", "s");          /* vim's write test */
    put("img/skip/d.jpg", "d");    /* a glob on the key */
    put("a.jpg", "e");             /* prefix */
    settle_on("img/zz.jpg", "img/zz.jpg");
    evs_t e;
    load(&e);
    cr_assert_eq(e.n, 2, "only img/a.jpg and the sentinel:\n%s", list(&e));
    cr_assert_str_eq(e.v[0].key, "img/a.jpg");
    cr_assert_str_eq(e.v[1].key, "img/zz.jpg");
    evs_free(&e);
}

Test(source_fs, half_written_file_not_announced_before_close)
{
    start_all(NULL);
    int fd = open(in("big.bin"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, "first half|", 11), 11);
    settle();   /* everything the source had to say so far is in */
    evs_t e;
    load(&e);
    cr_assert_eq(count(&e, NULL, "big.bin"), 0, "announced while still open for writing:\n%s", list(&e));
    evs_free(&e);
    cr_assert_eq(write(fd, "second half", 11), 11);
    close(fd);
    settle();
    load(&e);
    cr_assert_eq(count(&e, NULL, "big.bin"), 1, "%s", list(&e));
    for (size_t i = 0; i < e.n; i++)
        if (strcmp(e.v[i].key, "big.bin") == 0) cr_assert_eq(e.v[i].size, 22, "announced before it was whole");
    evs_free(&e);
}

Test(source_fs, mkdir_p_then_touch_is_exactly_one_event)
{
    start_all(NULL);
    char cmd[PATH_MAX * 2];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/a/b/c' && touch '%s/a/b/c/f'", indir, indir);
    cr_assert_eq(system(cmd), 0);
    put("a/b/c/g", "later: through the new watch");
    settle();
    evs_t e;
    load(&e);
    cr_assert_eq(count(&e, "ObjectCreated:Put", "a/b/c/f"), 1, "%s", list(&e));
    cr_assert_eq(count(&e, "ObjectCreated:Put", "a/b/c/g"), 1, "%s", list(&e));
    cr_assert_eq(e.n, 3, "%s", list(&e));
    evs_free(&e);
}

Test(source_fs, stopped_source_catches_up_with_exactly_the_difference)
{
    start_all(NULL);
    char name[64], content[64];
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "old-%03d", i);
        snprintf(content, sizeof content, "old %d", i);
        put(name, content);
    }
    settle();
    cr_assert_eq(h_signal_exit(&env, source_pid, SIGTERM, 10000), 0, "SIGTERM: exit 0");
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "new-%03d", i);
        snprintf(content, sizeof content, "new %d", i);
        put(name, content);
    }
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "old-%03d", i);
        cr_assert_eq(unlink(in(name)), 0);
    }
    source_pid = start_source();
    settle();
    evs_t e;
    load(&e);
    size_t created_new = 0, removed_old = 0, created_old = 0;
    for (size_t i = 0; i < e.n; i++) {
        bool created = strcmp(e.v[i].name, "ObjectCreated:Put") == 0;
        if (strncmp(e.v[i].key, "new-", 4) == 0) created_new += created;
        if (strncmp(e.v[i].key, "old-", 4) == 0) created ? created_old++ : removed_old++;
    }
    cr_assert_eq(created_old, 50, "the old files once each:\n%s", list(&e));
    cr_assert_eq(created_new, 100);
    cr_assert_eq(removed_old, 50);
    cr_assert_eq(e.n, 202, "and nothing else (2 sentinels):\n%s", list(&e));
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "new-%03d", i);
        cr_assert_eq(count(&e, "ObjectCreated:Put", name), 1, "%s twice", name);
    }
    evs_free(&e);
}

static size_t journal_lines(void)
{
    return h_count_lines(h_path(&env, "data/sources/photos/journal"));
}

static bool five_journaled(void *arg)
{
    (void)arg;
    return journal_lines() >= 5;
}

/* The journal is written before the publish; a source killed before the
 * confirms came sends its journal again with the same seqs, and the broker
 * answers what it stored as already stored. */
Test(source_fs, journaled_changes_sent_again_with_the_same_seqs_after_kill9)
{
    start_all(NULL);
    kill(broker_pid, SIGSTOP);   /* publishes go out, no confirm comes back */
    char name[32];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "f%d", i);
        put(name, name);
    }
    cr_assert(h_wait(five_journaled, NULL, 20000), "journal: %zu lines", journal_lines());
    cr_assert_eq(h_signal_exit(&env, source_pid, SIGKILL, 10000), 128 + SIGKILL);
    kill(broker_pid, SIGCONT);   /* it may store what reached it before the kill */
    source_pid = start_source();
    char *log = h_read(h_path(&env, "source2.err"), NULL);
    cr_assert(log && strstr(log, "5 change(s) from the journal go to the broker again (seq 1 and up)"), "%s", log);
    free(log);
    settle();
    evs_t e;
    load(&e);
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "f%d", i);
        cr_assert_eq(count(&e, NULL, name), 1, "%s:\n%s", name, list(&e));
    }
    cr_assert_eq(e.n, 6, "%s", list(&e));
    for (size_t i = 0; i < e.n; i++) {   /* message ids are PRODUCER-SEQ: the changes kept seqs 1-5 */
        long seq = atol(strrchr(e.v[i].mid, '-') + 1);
        if (strcmp(e.v[i].key, "zz-sentinel-1") != 0)
            cr_assert(seq >= 1 && seq <= 5, "%s went again with a new seq: %s", e.v[i].key, e.v[i].mid);
    }
    evs_free(&e);
}

static bool log_says_refused(void *arg)
{
    (void)arg;
    char *t = h_read(h_path(&env, "source1.err"), NULL);
    bool ok = t && strstr(t, "the broker refused seq");
    free(t);
    return ok;
}

/* A throttled publish is refused and remembered under its seq by the broker:
 * the source sends the change again with a new seq once the backlog drains. */
Test(source_fs, throttled_changes_wait_and_catch_up)
{
    char body[4096];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"build/tests/handlers/libsrc_record.so\";"
             " symbol = \"record\"; }; env = { RECORD_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"uploads\"; subscriptions = ( { function = \"rec\"; } ); } );\n"
             "sources = ( { name = \"photos\"; type = \"fs\"; path = \"%s\"; bucket = \"photos\"; topic = \"uploads\"; } );\n",
             h_path(&env, "rec.txt"), indir);
    h_config_broker(&env, "os", "max_backlog = 10;", body);
    broker_pid = h_broker(&env);
    source_pid = start_source();   /* no worker yet: the backlog only grows */
    char name[32];
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof name, "t%02d", i);
        put(name, name);
    }
    cr_assert(h_wait(log_says_refused, NULL, 20000), "nothing was throttled");
    h_worker(&env, "rec", 2);
    settle();
    evs_t e;
    load(&e);
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof name, "t%02d", i);
        cr_assert_eq(count(&e, "ObjectCreated:Put", name), 1, "%s:\n%s", name, list(&e));
    }
    cr_assert_eq(e.n, 41, "%s", list(&e));
    evs_free(&e);
}

/* ---- kill -9 at random moments ------------------------------------------------ */

#define CHAOS_KEYS 40

static void md5_hex(const char *path, char out[33])
{
    out[0] = '\0';
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    fs_etag_fd(fd, out);
    close(fd);
}

/* Disk and events agree: per key, the last event (by sequencer) is a
 * Created with the file's MD5, or a Removed / nothing for an absent file. */
static bool consistent(void *arg)
{
    const char **why = arg;
    evs_t e;
    load(&e);
    bool ok = true;
    for (int k = 0; k < CHAOS_KEYS && ok; k++) {
        char key[16], etag[33];
        snprintf(key, sizeof key, "k%02d", k);
        const ev_t *last = NULL;
        for (size_t i = 0; i < e.n; i++)
            if (strcmp(e.v[i].key, key) == 0) last = &e.v[i];
        md5_hex(in(key), etag);
        if (etag[0]) ok = last && strcmp(last->name, "ObjectCreated:Put") == 0 && strcmp(last->etag, etag) == 0;
        else ok = !last || strcmp(last->name, "ObjectRemoved:Delete") == 0;
        if (!ok && why) *why = etag[0] ? "a file on disk whose last event is not its Created" : "a removed file whose last event is a Created";
    }
    evs_free(&e);
    return ok;
}

/* Creates, replaces and deletes files under dir until killed. A new version
 * is written beside the tree and renamed in (what careful writers do): a file
 * rewritten in place can be read by the source in its truncated state, which
 * is a real version on disk but not one this test can predict. */
static void churn(const char *dir, const char *tmpdir, unsigned seed)
{
    srand(seed);
    for (long v = 0;; v++) {
        char path[PATH_MAX], tmp[PATH_MAX], content[128];
        int k = rand() % CHAOS_KEYS;
        snprintf(path, sizeof path, "%s/k%02d", dir, k);
        if (rand() % 3 == 0) {
            unlink(path);
        } else {
            snprintf(tmp, sizeof tmp, "%s/k%02d.tmp", tmpdir, k);
            snprintf(content, sizeof content, "k%02d version %ld of %d", k, v, (int)getpid());
            int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) {
                if (write(fd, content, strlen(content)) < 0) _exit(1);
                close(fd);
                rename(tmp, path);
            }
        }
        usleep(2000 + rand() % 3000);
    }
}

static void pause_ms(int ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

Test(source_fs, kill9_source_and_broker_at_random_moments, .timeout = 150)
{
    start_all("rescan = 2;");
    unsigned seed = (unsigned)time(NULL);
    cr_log_info("seed %u", seed);
    pid_t churner = fork();
    cr_assert(churner >= 0);
    if (churner == 0) churn(indir, env.dir, seed);
    srand(seed);
    int rounds = getenv("HERALD_TEST_SANITIZE") ? 6 : 12;
    for (int r = 0; r < rounds; r++) {
        /* the churn goes on while we wait: this is not a timing assertion */
        pause_ms(150 + rand() % 600);
        if (rand() % 2) {
            cr_assert_eq(h_signal_exit(&env, source_pid, SIGKILL, 10000), 128 + SIGKILL);
            source_pid = start_source();
        } else {
            cr_assert_eq(h_signal_exit(&env, broker_pid, SIGKILL, 10000), 128 + SIGKILL);
            int k = 0;
            for (int i = 0; i < env.npids; i++)
                if (env.pids[i]) env.pids[k++] = env.pids[i];
            env.npids = k;
            broker_pid = h_broker(&env);
        }
    }
    kill(churner, SIGKILL);
    waitpid(churner, NULL, 0);
    const char *why = NULL;
    cr_assert(h_wait(consistent, &why, 60000), "events and disk disagree: %s", why);
    evs_t e;
    load(&e);
    cr_assert_gt(e.n, 50, "the churn made few events:\n%s", list(&e));
    /* at most once per (key, eTag): every version's content is unique */
    for (size_t i = 0; i < e.n; i++) {
        if (strcmp(e.v[i].name, "ObjectCreated:Put") != 0) continue;
        for (size_t j = i + 1; j < e.n; j++)
            cr_assert(strcmp(e.v[j].name, "ObjectCreated:Put") != 0 || strcmp(e.v[i].key, e.v[j].key) != 0 ||
                      strcmp(e.v[i].etag, e.v[j].etag) != 0,
                      "%s %s announced twice (%s and %s)", e.v[i].key, e.v[i].etag, e.v[i].mid, e.v[j].mid);
    }
    /* and no removal announced twice in a row */
    for (int k = 0; k < CHAOS_KEYS; k++) {
        char key[16];
        snprintf(key, sizeof key, "k%02d", k);
        const char *prev = "";
        for (size_t i = 0; i < e.n; i++) {
            if (strcmp(e.v[i].key, key) != 0) continue;
            cr_assert(!(strcmp(prev, "ObjectRemoved:Delete") == 0 && strcmp(e.v[i].name, prev) == 0),
                      "%s removed twice in a row (%s)", key, e.v[i].mid);
            prev = e.v[i].name;
        }
    }
    cr_log_info("%zu events, %d restarts", e.n, rounds);
    evs_free(&e);
}

/* ---- the kernel's queue overflows --------------------------------------------- */

static bool log_says_overflow(void *arg)
{
    (void)arg;
    char *t = h_read(h_path(&env, "source1.err"), NULL);
    bool ok = t && strstr(t, "event queue overflowed");
    free(t);
    return ok;
}

/* max_queued_events cannot be lowered without root (and not for others on a
 * shared machine): the source is stopped while more events than the queue
 * holds happen (mkdir/rmdir pairs, cheap), then files; after SIGCONT the
 * files exist only past the overflow, so only the rescan can find them. */
Test(source_fs, queue_overflow_rescans_and_announces_every_file)
{
    start_all("rescan = 3600;");
    char *mq = h_read("/proc/sys/fs/inotify/max_queued_events", NULL);
    long max_queued = mq ? atol(mq) : 16384;
    free(mq);
    cr_assert_gt(max_queued, 0);
    kill(source_pid, SIGSTOP);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/churn", indir);
    for (long i = 0; i < max_queued / 2 + 500; i++) {
        cr_assert_eq(mkdir(dir, 0755), 0);
        cr_assert_eq(rmdir(dir), 0);
    }
    char name[32];
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "after-%03d", i);
        put(name, name);
    }
    kill(source_pid, SIGCONT);
    cr_assert(h_wait(log_says_overflow, NULL, 30000), "no overflow was reported");
    settle();
    evs_t e;
    load(&e);
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "after-%03d", i);
        cr_assert_eq(count(&e, "ObjectCreated:Put", name), 1, "%s:\n%s", name, list(&e));
    }
    cr_assert_eq(e.n, 301, "and nothing else");
    evs_free(&e);
}

/* ---- the command line ------------------------------------------------------------ */

Test(source_fs, command_line_and_config_errors)
{
    char *out = NULL, *err = NULL;
    cr_assert_eq(h_run(&env, NULL, &out, &err, "bin/herald-source-fs", "--version", NULL), 0);
    cr_assert_str_eq(out, "herald-source-fs " HERALD_VERSION "\n");
    free(out);
    free(err);
    cr_assert_eq(h_run(&env, NULL, &out, &err, "bin/herald-source-fs", "--help", NULL), 0);
    cr_assert(strstr(out, "usage: herald-source-fs -c FILE"), "%s", out);
    free(out);
    free(err);
    cr_assert_eq(h_run(&env, NULL, &out, &err, "bin/herald-source-fs", NULL), 2);
    free(out);
    free(err);
    h_write(h_path(&env, "bad.cfg"), "sources = ( { name = \"p\"; type = \"fs\"; path = \"/tmp\"; bucket = \"B\";\n"
                                     "  topic = \"t\"; } );\n");
    cr_assert_eq(h_run(&env, NULL, &out, &err, "bin/herald-source-fs", "-c", h_path(&env, "bad.cfg"), NULL), 2);
    cr_assert(strstr(err, "bad.cfg:1: sources[0] (p): bucket: 'B' is not an S3 bucket name"), "%s", err);
    free(out);
    free(err);
    h_write(h_path(&env, "none.cfg"), "broker = { data_dir = \"d\"; };\n");
    cr_assert_eq(h_run(&env, NULL, &out, &err, "bin/herald-source-fs", "-c", h_path(&env, "none.cfg"), NULL), 2);
    cr_assert(strstr(err, "no source of type \"fs\""), "%s", err);
    free(out);
    free(err);
    /* a second process on the same source is refused: one writer per state */
    start_all(NULL);
    cr_assert_eq(h_run(&env, NULL, &out, &err, "bin/herald-source-fs", "-c", env.cfg, NULL), 1);
    cr_assert(strstr(err, "another herald-source-fs runs this source"), "%s", err);
    free(out);
    free(err);
}
