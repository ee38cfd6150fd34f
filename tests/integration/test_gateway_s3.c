/* test_gateway_s3.c — S3 / MinIO bucket-notification webhooks through the
 * real broker, worker and gateway (POST /sources/s3/TOPIC, DESIGN §12).
 *
 * Notifications are posted with /usr/bin/curl in the shape MinIO's webhook
 * target sends ({"EventName":…,"Key":…,"Records":[R]}, compact, as Go's
 * encoding/json writes it) and in S3's ({"Records":[R,…]}, here indented).
 * Every event is checked where it lands: an exec recorder the test writes
 * keeps each payload byte for byte in RECORD_DIR/ID.payload and appends
 * "ID EVENT_NAME BUCKET" to RECORD_DIR/index; "stored" is the broker's own
 * count (heraldctl stats --json, the topic's "published").
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"

static h_env env;
static char ep[64];             /* http://127.0.0.1:PORT */

static void setup(void)
{
    h_setup(&env);
    unsetenv("HERALD_BROKER");
}
static void teardown(void) { h_teardown(&env); }

TestSuite(gateway_s3, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers ------------------------------------------------------------------------- */

static const char recorder[] =
    "#!/bin/sh\n"
    "# one delivery: its payload as a file, then one index line (the line last: it says the file is whole)\n"
    "cat > \"$RECORD_DIR/$HERALD_MESSAGE_ID.payload\"\n"
    "echo \"$HERALD_MESSAGE_ID ${HERALD_ATTR_EVENT_NAME:--} ${HERALD_ATTR_BUCKET:--}\" >> \"$RECORD_DIR/index\"\n";

/* Topic uploads → the recorder; broker settings extra (max_payload, max_backlog). */
static void config(const char *extra)
{
    h_write(h_path(&env, "s3rec.sh"), recorder);
    cr_assert_eq(chmod(h_path(&env, "s3rec.sh"), 0755), 0);
    cr_assert_eq(mkdir(h_path(&env, "rec"), 0755), 0);
    char body[2048];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; exec = [\"%s\"]; env = { RECORD_DIR = \"%s\"; }; } );\n"
             "topics = ( { name = \"uploads\"; subscriptions = ( { function = \"rec\"; } ); } );\n"
             "gateway = { listen = \"127.0.0.1:0\"; broker = \"%s\"; admin = \"%s\"; };\n",
             h_path(&env, "s3rec.sh"), h_path(&env, "rec"), env.pub, env.adm);
    h_config_broker(&env, "os", extra, body);
}

/* broker (+ a worker when worker) + the gateway. */
static void start_all(const char *extra, bool worker)
{
    config(extra);
    h_broker(&env);
    if (worker) h_worker(&env, NULL, 4);
    h_gateway(&env, ep, sizeof ep);
}

static char *url(const char *path)
{
    static char bufs[4][400];
    static int k;
    char *b = bufs[k++ % 4];
    snprintf(b, 400, "%s%s", ep, path);
    return b;
}

/* POST body (as bytes, from a file) to /sources/s3/TOPIC the way MinIO does. */
static int post(const char *topic, const char *body, char **answer)
{
    static int k;
    char name[32], at[600], path[300];
    snprintf(name, sizeof name, "post%d.json", k++);
    h_write(h_path(&env, name), body);
    snprintf(at, sizeof at, "@%s", h_path(&env, name));
    snprintf(path, sizeof path, "/sources/s3/%s", topic);
    return h_curl(&env, answer, "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", at, url(path), NULL);
}

/* One S3 event record as MinIO writes it (compact). */
static void record(char *out, size_t n, const char *event, const char *bucket, const char *key, int seq)
{
    snprintf(out, n,
             "{\"eventVersion\":\"2.0\",\"eventSource\":\"minio:s3\",\"awsRegion\":\"\","
             "\"eventTime\":\"2026-12-07T20:00:%02d.000Z\",\"eventName\":\"%s\","
             "\"userIdentity\":{\"principalId\":\"minioadmin\"},"
             "\"requestParameters\":{\"principalId\":\"minioadmin\",\"region\":\"\",\"sourceIPAddress\":\"127.0.0.1\"},"
             "\"responseElements\":{\"x-amz-request-id\":\"17F0A1B2C3D4E5%02d\",\"x-minio-origin-endpoint\":\"http://127.0.0.1:9000\"},"
             "\"s3\":{\"s3SchemaVersion\":\"1.0\",\"configurationId\":\"Config\","
             "\"bucket\":{\"name\":\"%s\",\"ownerIdentity\":{\"principalId\":\"minioadmin\"},\"arn\":\"arn:aws:s3:::%s\"},"
             "\"object\":{\"key\":\"%s\",\"size\":%d,\"eTag\":\"d41d8cd98f00b204e9800998ecf8427e\","
             "\"contentType\":\"image/png\",\"userMetadata\":{\"content-type\":\"image/png\"},"
             "\"sequencer\":\"17F0A1B2C3D4E6%02d\"}},"
             "\"source\":{\"host\":\"127.0.0.1\",\"port\":\"\",\"userAgent\":\"MinIO (linux; amd64) minio-go/v7.0.66\"}}",
             seq, event, seq, bucket, bucket, key, 100 + seq, seq);
}

/* MinIO's webhook body around one record. */
static void minio_body(char *out, size_t n, const char *rec, const char *event, const char *key)
{
    snprintf(out, n, "{\"EventName\":\"%s\",\"Key\":\"%s\",\"Records\":[%s]}", event, key, rec);
}

static long published(void)
{
    char *st = h_stats(&env);
    const char *topics = st ? strstr(st, "\"topics\":[") : NULL;
    long v = h_json_num(topics, "{\"name\":\"uploads\"", "published");
    free(st);
    return v;
}

static size_t index_lines(void) { return h_count_lines(h_path(&env, "rec/index")); }

static bool index_has(void *arg) { return index_lines() >= *(size_t *)arg; }

/* Waits for n deliveries; then the index line of id ("ID EVENT BUCKET"),
 * without the id, and the payload recorded for it (static buffers). */
static void landed(size_t n, const char *id, const char **attrs, const char **payload)
{
    cr_assert(h_wait(index_has, &n, 20000), "%zu of %zu events reached the handler", index_lines(), n);
    static char line[600];
    static char *pl;
    char want[120];
    snprintf(want, sizeof want, "%s ", id);
    char *s = h_read(h_path(&env, "rec/index"), NULL);
    line[0] = 0;
    for (char *l = strtok(s, "\n"); l; l = strtok(NULL, "\n"))
        if (strncmp(l, want, strlen(want)) == 0) snprintf(line, sizeof line, "%s", l + strlen(want));
    free(s);
    cr_assert(line[0], "%s was never delivered", id);
    char name[140];
    snprintf(name, sizeof name, "rec/%s.payload", id);
    free(pl);
    pl = h_read(h_path(&env, name), NULL);
    cr_assert_not_null(pl);
    *attrs = line;
    *payload = pl;
}

/* The message ids of a 200 answer {"published":N,"message_ids":[…]}; returns N. */
static int ids_of(const char *answer, char ids[][80], int max)
{
    int n = -1;
    cr_assert_eq(sscanf(answer, "{\"published\":%d,", &n), 1, "%s", answer);
    const char *p = strstr(answer, "\"message_ids\":[");
    cr_assert_not_null(p, "%s", answer);
    p += strlen("\"message_ids\":[");
    int k = 0;
    while (*p == '"' && k < max) {
        const char *e = strchr(p + 1, '"');
        snprintf(ids[k++], 80, "%.*s", (int)(e - p - 1), p + 1);
        p = e + 1;
        if (*p == ',') p++;
    }
    cr_assert_eq(k, n, "%d ids for published %d: %s", k, n, answer);
    return n;
}

/* ---- one record, three records --------------------------------------------------------- */

Test(gateway_s3, minio_notification_is_one_event_whose_payload_is_its_record)
{
    start_all("max_payload = 16384;", true);
    char rec[2048], body[4096], *ans = NULL;
    record(rec, sizeof rec, "s3:ObjectCreated:Put", "images", "cats/tom%2Bjerry.png", 1);
    minio_body(body, sizeof body, rec, "s3:ObjectCreated:Put", "images/cats/tom+jerry.png");
    int st = post("uploads", body, &ans);
    cr_assert_eq(st, 200, "%d %s", st, ans);
    char ids[4][80];
    cr_assert_eq(ids_of(ans, ids, 4), 1);
    free(ans);
    const char *attrs, *payload;
    landed(1, ids[0], &attrs, &payload);
    char want[8192];
    snprintf(want, sizeof want, "{\"Records\":[%s]}", rec);
    cr_assert_str_eq(payload, want, "the payload is not the record as a one-record notification");
    cr_assert_str_eq(attrs, "ObjectCreated:Put images", "event_name (no \"s3:\") and bucket: %s", attrs);
    cr_assert_eq(published(), 1);

    /* the route is counted under its own label */
    char *m = NULL;
    cr_assert_eq(h_curl(&env, &m, url("/metrics"), NULL), 200);
    cr_assert(strstr(m, "herald_gateway_requests_total{route=\"s3\",code=\"200\"} 1\n"), "%s", m);
    free(m);
}

Test(gateway_s3, three_records_are_three_events_each_a_one_record_notification)
{
    start_all("max_payload = 16384;", true);
    static const struct { const char *event, *bucket, *name; } r[3] = {
        { "s3:ObjectCreated:Put", "images", "ObjectCreated:Put" },
        { "ObjectRemoved:Delete", "logs", "ObjectRemoved:Delete" },   /* S3's own spelling: kept */
        { "s3:ObjectCreated:CompleteMultipartUpload", "video", "ObjectCreated:CompleteMultipartUpload" },
    };
    char rec[3][2048], body[8192];
    for (int i = 0; i < 3; i++) record(rec[i], sizeof rec[i], r[i].event, r[i].bucket, "k\\u00e9y", i);
    /* S3's shape, indented as its documentation shows it: white space between
     * records is not part of any record */
    snprintf(body, sizeof body, "{\n  \"Records\": [\n    %s,\n    %s ,\n\t%s\n  ]\n}\n", rec[0], rec[1], rec[2]);
    char *ans = NULL;
    int st = post("uploads", body, &ans);
    cr_assert_eq(st, 200, "%d %s", st, ans);
    char ids[4][80];
    cr_assert_eq(ids_of(ans, ids, 4), 3);
    free(ans);
    for (int i = 0; i < 3; i++) {
        const char *attrs, *payload;
        landed(3, ids[i], &attrs, &payload);
        char want[8192], want_attrs[200];
        snprintf(want, sizeof want, "{\"Records\":[%s]}", rec[i]);
        cr_assert_str_eq(payload, want, "record %d", i + 1);
        snprintf(want_attrs, sizeof want_attrs, "%s %s", r[i].name, r[i].bucket);
        cr_assert_str_eq(attrs, want_attrs, "record %d", i + 1);
    }
    cr_assert_eq(published(), 3);
}

/* ---- bad bodies ------------------------------------------------------------------------------ */

Test(gateway_s3, bad_bodies_get_400_with_one_line_and_store_nothing)
{
    start_all("max_payload = 16384;", true);
    char good[2048], good_then_bad[4500];
    record(good, sizeof good, "s3:ObjectCreated:Put", "images", "a.png", 1);
    /* the first record is good: the second one's fault must keep it out too */
    snprintf(good_then_bad, sizeof good_then_bad, "{\"Records\":[%s,{\"eventName\":\"s3:ObjectCreated:Put\"}]}", good);
    const struct { const char *body, *says; } bad[] = {
        { "", "not JSON" },
        { "EventName=x", "not JSON" },
        { "{\"Records\":[", "not JSON" },
        { "{\"Records\":[]} x", "not JSON" },
        { "{\"Records\":[{\"eventName\":\"a\x01\"}]}", "not JSON" },
        { "{\"Records\":[{\"eventName\":\"\xff\"}]}", "not JSON" },
        { "{\"Records\":[01]}", "not JSON" },
        { "[{\"eventName\":\"s3:ObjectCreated:Put\"}]", "not an object" },
        { "{\"EventName\":\"s3:ObjectCreated:Put\",\"Key\":\"b/o\"}", "no \\\"Records\\\" array" },
        { "{\"Records\":{}}", "not an array" },
        { "{\"Records\":[1]}", "record 1 is not a JSON object" },
        { "{\"Records\":[{\"s3\":{\"bucket\":{\"name\":\"b\"}}}]}", "record 1 has no eventName" },
        { "{\"Records\":[{\"eventName\":7,\"s3\":{\"bucket\":{\"name\":\"b\"}}}]}", "record 1 has no eventName" },
        { "{\"Records\":[{\"eventName\":\"s3:\",\"s3\":{\"bucket\":{\"name\":\"b\"}}}]}", "names no event" },
        { "{\"Records\":[{\"eventName\":\"s3:ObjectCreated:Put\",\"s3\":{}}]}", "record 1 has no s3.bucket.name" },
        { "{\"Records\":[{\"eventName\":\"s3:ObjectCreated:Put\",\"s3\":{\"bucket\":{\"name\":\"\"}}}]}",
          "record 1 has no s3.bucket.name" },
        { good_then_bad, "record 2 has no s3.bucket.name" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *ans = NULL;
        int st = post("uploads", bad[i].body, &ans);
        cr_assert_eq(st, 400, "body %zu: %d %s", i, st, ans);
        cr_assert(strncmp(ans, "{\"error\":\"", 10) == 0 && strstr(ans, bad[i].says), "body %zu: %s", i, ans);
        char *nl = strchr(ans, '\n');
        cr_assert(nl && nl[1] == 0, "body %zu: not one line: %s", i, ans);
        free(ans);
    }
    cr_assert_eq(published(), 0, "a refused notification stored something");
    /* and the route works: the count above could move */
    char body[4096];
    minio_body(body, sizeof body, good, "s3:ObjectCreated:Put", "images/a.png");
    cr_assert_eq(post("uploads", body, NULL), 200);
    cr_assert_eq(published(), 1);
    size_t one = 1;
    cr_assert(h_wait(index_has, &one, 20000));
    cr_assert_eq(index_lines(), 1, "only the good notification was delivered");
}

Test(gateway_s3, body_over_max_payload_is_413)
{
    start_all("max_payload = 4096;", true);
    char rec[2048], body[16000] = "{\"Records\":[";
    for (int i = 0; i < 6; i++) {   /* ~6 KiB */
        record(rec, sizeof rec, "s3:ObjectCreated:Put", "images", "a.png", i);
        strcat(body, i ? "," : "");
        strcat(body, rec);
    }
    strcat(body, "]}");
    cr_assert_gt(strlen(body), 4096);
    char *ans = NULL;
    int st = post("uploads", body, &ans);
    cr_assert_eq(st, 413, "%d %s", st, ans);
    cr_assert(strstr(ans, "max_payload"), "%s", ans);
    free(ans);
    cr_assert_eq(published(), 0);
}

/* ---- topics, probes ---------------------------------------------------------------------------- */

Test(gateway_s3, unknown_topic_is_404_and_the_probes_answer)
{
    start_all("max_payload = 16384;", true);
    char rec[2048], body[4096], *ans = NULL;
    record(rec, sizeof rec, "s3:ObjectCreated:Put", "images", "a.png", 1);
    minio_body(body, sizeof body, rec, "s3:ObjectCreated:Put", "images/a.png");
    int st = post("nope", body, &ans);
    cr_assert_eq(st, 404, "%d %s", st, ans);
    cr_assert_str_eq(ans, "{\"error\":\"unknown topic 'nope'\"}\n");
    free(ans);
    st = post("bad%20name", body, &ans);
    cr_assert_eq(st, 400, "%d %s", st, ans);
    free(ans);

    /* MinIO sends HEAD to its webhook endpoint when the target starts: any answer is "up" */
    st = h_curl(&env, &ans, "-I", url("/sources/s3/uploads"), NULL);
    cr_assert_eq(st, 200, "HEAD: %d %s", st, ans);
    free(ans);
    st = h_curl(&env, &ans, url("/sources/s3/uploads"), NULL);
    cr_assert_eq(st, 200, "GET: %d %s", st, ans);
    cr_assert(strstr(ans, "\"topic\":\"uploads\""), "%s", ans);
    free(ans);
    st = h_curl(&env, &ans, url("/sources/s3/nope"), NULL);
    cr_assert_eq(st, 404, "GET unknown: %d %s", st, ans);
    free(ans);
    st = h_curl(&env, &ans, "-X", "PUT", "--data-binary", "{}", url("/sources/s3/uploads"), NULL);
    cr_assert_eq(st, 405, "PUT: %d %s", st, ans);
    free(ans);
    /* nothing to publish: an empty Records list, S3's s3:TestEvent */
    st = post("uploads", "{\"Records\":[]}", &ans);
    cr_assert_eq(st, 200, "%d %s", st, ans);
    cr_assert_str_eq(ans, "{\"published\":0,\"message_ids\":[]}\n");
    free(ans);
    st = post("uploads",
              "{\"Service\":\"Amazon S3\",\"Event\":\"s3:TestEvent\",\"Time\":\"2026-12-07T20:00:00.000Z\","
              "\"Bucket\":\"images\",\"RequestId\":\"5582815E1AEA5ADF\",\"HostId\":\"8cLeGAmw\"}", &ans);
    cr_assert_eq(st, 200, "s3:TestEvent: %d %s", st, ans);
    free(ans);
    cr_assert_eq(published(), 0);
}

/* ---- the broker down, a batch half stored: MinIO's re-post ------------------------------------- */

Test(gateway_s3, broker_down_is_503_and_the_repost_after_it_returns_loses_nothing, .timeout = 180)
{
    start_all("max_payload = 16384;", true);
    char rec[2][2048], body[8192], *ans = NULL;
    record(rec[0], sizeof rec[0], "s3:ObjectCreated:Put", "images", "a.png", 1);
    record(rec[1], sizeof rec[1], "s3:ObjectRemoved:Delete", "images", "b.png", 2);
    snprintf(body, sizeof body, "{\"Records\":[%s,%s]}", rec[0], rec[1]);
    h_kill(&env, env.pids[0], SIGTERM);   /* start_all started the broker first */
    int st = post("uploads", body, &ans);
    cr_assert(st == 503 || st == 502, "broker down: %d %s", st, ans);
    cr_assert(strncmp(ans, "{\"error\":\"", 10) == 0, "%s", ans);
    free(ans);
    h_broker(&env);
    st = post("uploads", body, &ans);   /* MinIO's queue posts the same body again */
    cr_assert_eq(st, 200, "after the broker returned: %d %s", st, ans);
    char ids[4][80];
    cr_assert_eq(ids_of(ans, ids, 4), 2);
    free(ans);
    const char *attrs, *payload;
    landed(2, ids[0], &attrs, &payload);
    cr_assert_str_eq(attrs, "ObjectCreated:Put images");
    landed(2, ids[1], &attrs, &payload);
    cr_assert_str_eq(attrs, "ObjectRemoved:Delete images");
    cr_assert_eq(published(), 2, "each record once");
}

static bool succeeded_is(void *arg)
{
    return h_sub_stat(&env, "uploads", "rec", "succeeded") == *(long *)arg;
}

Test(gateway_s3, partly_stored_notification_is_not_2xx_and_its_repost_stores_each_record_once, .timeout = 180)
{
    /* max_backlog = 2 and no worker yet: the third record is throttled */
    start_all("max_payload = 16384; max_backlog = 2;", false);
    char rec[3][2048], body[8192], *ans = NULL;
    for (int i = 0; i < 3; i++) record(rec[i], sizeof rec[i], "s3:ObjectCreated:Put", "images", "x.png", i);
    snprintf(body, sizeof body, "{\"Records\":[%s,%s,%s]}", rec[0], rec[1], rec[2]);
    int st = post("uploads", body, &ans);
    cr_assert_eq(st, 503, "throttled third record: %d %s", st, ans);
    cr_assert(strstr(ans, "2 of 3 records stored") && strstr(ans, "record 3: throttled"), "%s", ans);
    free(ans);
    cr_assert_eq(published(), 2);
    /* the backlog drains; the sender posts the whole notification again */
    h_worker(&env, NULL, 4);
    long two = 2;
    cr_assert(h_wait(succeeded_is, &two, 20000), "the two stored records were not handled");
    st = post("uploads", body, &ans);
    cr_assert_eq(st, 200, "re-post: %d %s", st, ans);
    char ids[4][80];
    cr_assert_eq(ids_of(ans, ids, 4), 3);
    free(ans);
    long three = 3;
    cr_assert(h_wait(succeeded_is, &three, 20000), "the third record was not handled");
    cr_assert_eq(published(), 3, "a record stored twice");
    cr_assert_eq(index_lines(), 3);
    for (int i = 0; i < 3; i++) {
        const char *attrs, *payload;
        landed(3, ids[i], &attrs, &payload);
        char want[8192];
        snprintf(want, sizeof want, "{\"Records\":[%s]}", rec[i]);
        cr_assert_str_eq(payload, want, "record %d", i + 1);
    }
}
