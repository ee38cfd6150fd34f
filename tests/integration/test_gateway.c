/* test_gateway.c — herald-gateway through the real programs (DESIGN §10,
 * AWS-COMPAT.md): curl on the native routes, Debian's awscli (/usr/bin/aws)
 * and python3-boto3 (/usr/bin/python3) on the SNS and Lambda routes, signed
 * and unsigned; /metrics parsed as Prometheus text with exact counter moves;
 * /healthz across a broker restart; 1,000 concurrent publishes; bad requests.
 *
 * Every event is checked where it lands: an exec recorder (spine_record.sh)
 * appends "ID TOPIC KIND PAYLOAD" per delivery, and an event published
 * through the gateway must look there exactly like one published with
 * herald-publish. The gateway listens on 127.0.0.1:0 and logs
 * "listening on 127.0.0.1:PORT"; the tests read the port from its stderr.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define ARN "arn:aws:sns:us-east-1:000000000000:"

static h_env env;
static char ep[64];             /* http://127.0.0.1:PORT */

static void setup(void)
{
    h_setup(&env);
    /* dummy credentials: the gateway checks no signature, the clients need some */
    setenv("AWS_ACCESS_KEY_ID", "x", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "y", 1);
    setenv("AWS_DEFAULT_REGION", "us-east-1", 1);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    setenv("AWS_PAGER", "", 1);
    setenv("AWS_MAX_ATTEMPTS", "1", 1);
    setenv("AWS_CONFIG_FILE", h_path(&env, "aws-config-none"), 1);
    setenv("AWS_SHARED_CREDENTIALS_FILE", h_path(&env, "aws-credentials-none"), 1);
    unsetenv("AWS_PROFILE");
    unsetenv("AWS_ENDPOINT_URL");
    unsetenv("HERALD_BROKER");
}
static void teardown(void) { h_teardown(&env); }

TestSuite(gateway, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers ------------------------------------------------------------------- */

/* Topic t: rec (every event) and only_x (filter kind = x); topic bulk: the
 * native counter. Functions echo (cat), fail (exit 3, 2 attempts). */
static void config(void)
{
    char body[4096];
    snprintf(body, sizeof body,
             "functions = (\n"
             " { name = \"rec\"; exec = [\"tests/handlers/spine_record.sh\"]; env = { RECORD_FILE = \"%s\"; }; },\n"
             " { name = \"only_x\"; exec = [\"tests/handlers/spine_record.sh\"]; env = { RECORD_FILE = \"%s\"; }; },\n"
             " { name = \"echo\"; exec = [\"cat\"]; },\n"
             " { name = \"fail\"; exec = [\"tests/handlers/fail.sh\", \"3\"]; max_attempts = 2;\n"
             "   backoff = { initial = 0.1; max = 0.1; jitter = \"none\"; }; },\n"
             " { name = \"count\"; native = { library = \"examples/handlers/libcount.so\"; symbol = \"count\"; };\n"
             "   env = { COUNT_FILE = \"%s\"; }; } );\n"
             "topics = (\n"
             " { name = \"t\"; subscriptions = ( { function = \"rec\"; },\n"
             "   { function = \"only_x\"; filter = { kind = [\"x\"]; }; } ); },\n"
             " { name = \"bulk\"; subscriptions = ( { function = \"count\"; } ); } );\n"
             "gateway = { listen = \"127.0.0.1:0\"; broker = \"%s\"; admin = \"%s\"; };\n",
             h_path(&env, "rec.txt"), h_path(&env, "x.txt"), h_path(&env, "count.txt"), env.pub, env.adm);
    h_config(&env, "os", body);
}

/* broker + one worker + the gateway. */
static void start_all(void)
{
    config();
    h_broker(&env);
    h_worker(&env, NULL, 8);
    h_gateway(&env, ep, sizeof ep);
}

static char *url(const char *path)
{
    static char bufs[4][300];
    static int k;
    char *b = bufs[k++ % 4];
    snprintf(b, 300, "%s%s", ep, path);
    return b;
}

/* /usr/bin/aws --endpoint-url EP ARGS…: exit code, stdout and stderr (caller frees). */
static int aws(char **out, char **err, ...)
{
    const char *a[17] = { 0 };
    va_list ap;
    va_start(ap, err);
    for (int n = 0; n < 16 && (a[n] = va_arg(ap, const char *)) != NULL; n++)
        ;
    va_end(ap);
    return h_run(&env, NULL, out, err, "/usr/bin/aws", "--endpoint-url", ep, "--region", "us-east-1", a[0], a[1],
                 a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15], NULL);
}

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
}

typedef struct { const char *path, *needle; size_t count; } file_has;

/* At least count lines of path contain needle. */
static bool lines_with(void *arg)
{
    file_has *f = arg;
    char *s = h_read(f->path, NULL);
    size_t n = 0;
    for (char *line = s ? strtok(s, "\n") : NULL; line; line = strtok(NULL, "\n")) n += strstr(line, f->needle) != NULL;
    free(s);
    return n >= f->count;
}

/* The line of path that starts with "ID ", without the id (static buffer). */
static const char *recorded(const char *path, const char *id)
{
    static char found[1024];
    char want[128];
    snprintf(want, sizeof want, "%s ", id);
    file_has f = { path, want, 1 };
    cr_assert(h_wait(lines_with, &f, 20000), "%s never recorded %s:\n%s", path, id, h_read(path, NULL));
    char *s = h_read(path, NULL);
    found[0] = 0;
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n"))
        if (strncmp(line, want, strlen(want)) == 0) snprintf(found, sizeof found, "%s", line + strlen(want));
    free(s);
    return found;
}

/* herald-publish t PAYLOAD [-a kind=K]: the message id (static buffer). */
static const char *herald_publish(const char *topic, const char *payload, const char *kind)
{
    static char id[80];
    char attr[64], *out = NULL, *err = NULL;
    snprintf(attr, sizeof attr, "kind=%s", kind ? kind : "");
    int rc = kind ? h_run(&env, NULL, &out, &err, "bin/herald-publish", "--broker", env.pub, topic, payload, "-a", attr, NULL)
                  : h_run(&env, NULL, &out, &err, "bin/herald-publish", "--broker", env.pub, topic, payload, NULL);
    cr_assert_eq(rc, 0, "herald-publish: %s", err);
    snprintf(id, sizeof id, "%s", out);
    trim(id);
    free(out);
    free(err);
    return id;
}

/* The sum of "published" over every topic in stats. */
static long total_published(void)
{
    char *st = h_stats(&env);
    cr_assert_not_null(st);
    long sum = 0;
    for (const char *p = st; (p = strstr(p, "\"published\":")) != NULL; p++) sum += atol(p + 12);
    free(st);
    return sum;
}

/* ---- Prometheus text ---------------------------------------------------------------- */

/* Checks the exposition format: every sample `name{labels} value` with a
 * # TYPE of its family before it; counters end in _total. */
static void check_prometheus(const char *text)
{
    char *copy = strdup(text), *save = NULL;
    char types[256][96];
    char kinds[256][16];
    size_t ntypes = 0, samples = 0;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') {
            char name[96], kind[16];
            if (sscanf(line, "# TYPE %95s %15s", name, kind) == 2) {
                cr_assert(strcmp(kind, "counter") == 0 || strcmp(kind, "gauge") == 0 || strcmp(kind, "summary") == 0 ||
                              strcmp(kind, "histogram") == 0 || strcmp(kind, "untyped") == 0,
                          "bad TYPE line: %s", line);
                if (strcmp(kind, "counter") == 0)
                    cr_assert(strlen(name) > 6 && strcmp(name + strlen(name) - 6, "_total") == 0,
                              "counter %s does not end in _total", name);
                cr_assert(ntypes < 256);
                snprintf(types[ntypes], sizeof types[0], "%s", name);
                snprintf(kinds[ntypes++], sizeof kinds[0], "%s", kind);
            }
            continue;
        }
        const char *p = line;
        cr_assert(isalpha((unsigned char)*p) || *p == '_' || *p == ':', "bad metric name in: %s", line);
        while (isalnum((unsigned char)*p) || *p == '_' || *p == ':') p++;
        char name[96];
        snprintf(name, sizeof name, "%.*s", (int)(p - line), line);
        if (*p == '{') {
            p++;
            while (*p != '}') {
                cr_assert(isalpha((unsigned char)*p) || *p == '_', "bad label name in: %s", line);
                while (isalnum((unsigned char)*p) || *p == '_') p++;
                cr_assert(p[0] == '=' && p[1] == '"', "bad label in: %s", line);
                p += 2;
                while (*p && *p != '"') p += *p == '\\' ? 2 : 1;
                cr_assert(*p == '"', "unterminated label value in: %s", line);
                p++;
                if (*p == ',') p++;
                else cr_assert(*p == '}', "bad label list in: %s", line);
            }
            p++;
        }
        cr_assert(*p == ' ', "no space before the value in: %s", line);
        char *end;
        strtod(p + 1, &end);
        cr_assert(end != p + 1 && *end == 0, "bad value in: %s", line);
        /* its family: the name, or the name less a summary/histogram suffix */
        bool typed = false;
        for (size_t i = 0; i < ntypes && !typed; i++) {
            size_t tl = strlen(types[i]);
            if (strcmp(types[i], name) == 0) typed = true;
            else if (strncmp(types[i], name, tl) == 0 &&
                     (strcmp(name + tl, "_count") == 0 || strcmp(name + tl, "_sum") == 0 ||
                      strcmp(name + tl, "_bucket") == 0) &&
                     (strcmp(kinds[i], "summary") == 0 || strcmp(kinds[i], "histogram") == 0))
                typed = true;
        }
        cr_assert(typed, "sample %s has no # TYPE before it", name);
        samples++;
    }
    cr_assert_gt(samples, 10, "too few samples:\n%s", text);
    free(copy);
}

/* The value of one series, e.g. `herald_topic_published_total{topic="t"}`; NAN if absent. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; (p = strstr(p, series)) != NULL; p += n)
        if ((p == text || p[-1] == '\n') && p[n] == ' ') return strtod(p + n + 1, NULL);
    return NAN;
}

static char *scrape(void)
{
    char *body = NULL;
    cr_assert_eq(h_curl(&env, &body, url("/metrics"), NULL), 200, "/metrics: %s", body);
    check_prometheus(body);
    return body;
}

/* ---- 3. native routes ------------------------------------------------------------------ */

Test(gateway, native_publish_and_invoke_like_herald_publish)
{
    start_all();
    h_write(h_path(&env, "event.bin"), "native payload");
    char *body = NULL, at[600];
    snprintf(at, sizeof at, "@%s", h_path(&env, "event.bin"));
    int st = h_curl(&env, &body, "-X", "POST", "--data-binary", at, url("/topics/t"), "-H", "X-Herald-Attr-kind: x", NULL);
    cr_assert_eq(st, 202, "POST /topics/t: %d %s", st, body);
    char id[80] = "";
    cr_assert_eq(sscanf(body, "{\"message_id\":\"%79[^\"]\"}", id), 1, "body: %s", body);
    free(body);
    /* the handler saw the attribute (HERALD_ATTR_KIND=x), like herald-publish's event */
    const char *hp = herald_publish("t", "native payload", "x");
    char via_gw[1024];
    snprintf(via_gw, sizeof via_gw, "%s", recorded(h_path(&env, "rec.txt"), id));
    cr_assert_str_eq(via_gw, "t x native payload");
    cr_assert_str_eq(recorded(h_path(&env, "rec.txt"), hp), via_gw);
    cr_assert_str_eq(recorded(h_path(&env, "x.txt"), id), via_gw);

    st = h_curl(&env, &body, "-X", "POST", "--data-binary", "x", url("/topics/nope"), NULL);
    cr_assert_eq(st, 404, "unknown topic: %d %s", st, body);
    cr_assert(strstr(body, "{\"error\":"), "%s", body);
    free(body);

    /* synchronous invoke: the output byte for byte */
    st = h_curl(&env, &body, "-X", "POST", "--data-binary", "in\tput \"1\"", url("/functions/echo/invoke"), NULL);
    cr_assert_eq(st, 200);
    cr_assert_str_eq(body, "in\tput \"1\"");
    free(body);
    st = h_curl(&env, &body, "-X", "POST", "--data-binary", "x", url("/functions/fail/invoke"), NULL);
    cr_assert_eq(st, 502, "%d %s", st, body);
    cr_assert(strstr(body, "failing with 3"), "%s", body);
    free(body);
    st = h_curl(&env, &body, "-X", "POST", "--data-binary", "x", url("/functions/nope/invoke"), NULL);
    cr_assert_eq(st, 404, "%d %s", st, body);
    free(body);
}

/* ---- 1, 2. awscli ------------------------------------------------------------------------- */

/* 16 runs of the aws CLI (~0.7 s of CPU each to start): minutes on a loaded machine */
Test(gateway, awscli_sns_and_lambda, .timeout = 600)
{
    start_all();
    char *out = NULL, *err = NULL;
    int rc;
    /* list-topics, signed and unsigned */
    for (int unsigned_ = 0; unsigned_ < 2; unsigned_++) {
        rc = unsigned_ ? aws(&out, &err, "--no-sign-request", "sns", "list-topics", "--query", "Topics[].TopicArn",
                             "--output", "text", NULL)
                       : aws(&out, &err, "sns", "list-topics", "--query", "Topics[].TopicArn", "--output", "text", NULL);
        cr_assert_eq(rc, 0, "list-topics: %s", err);
        cr_assert(strstr(out, ARN "t") && strstr(out, ARN "bulk"), "list-topics: %s", out);
        free(out);
        free(err);
    }
    /* create-topic: a configured topic gives its ARN; another name is refused */
    rc = aws(&out, &err, "sns", "create-topic", "--name", "t", "--query", "TopicArn", "--output", "text", NULL);
    cr_assert_eq(rc, 0, "create-topic: %s", err);
    trim(out);
    cr_assert_str_eq(out, ARN "t");
    free(out);
    free(err);
    rc = aws(&out, &err, "--no-sign-request", "sns", "create-topic", "--name", "newtopic", NULL);
    cr_assert_eq(rc, 254, "create-topic of an unconfigured name: %d %s", rc, err);
    cr_assert(strstr(err, "InvalidParameter"), "%s", err);
    free(out);
    free(err);

    /* publish with an attribute that only_x's filter matches (signed), and
     * one it does not (unsigned) */
    rc = aws(&out, &err, "sns", "publish", "--topic-arn", ARN "t", "--message", "hello cli", "--message-attributes",
             "{\"kind\":{\"DataType\":\"String\",\"StringValue\":\"x\"}}", "--query", "MessageId", "--output", "text",
             NULL);
    cr_assert_eq(rc, 0, "publish: %s", err);
    char id1[80];
    snprintf(id1, sizeof id1, "%s", out);
    trim(id1);
    free(out);
    free(err);
    rc = aws(&out, &err, "--no-sign-request", "sns", "publish", "--topic-arn", ARN "t", "--message", "unsigned cli",
             "--message-attributes", "{\"kind\":{\"DataType\":\"String\",\"StringValue\":\"y\"}}", "--query",
             "MessageId", "--output", "text", NULL);
    cr_assert_eq(rc, 0, "unsigned publish: %s", err);
    char id2[80];
    snprintf(id2, sizeof id2, "%s", out);
    trim(id2);
    free(out);
    free(err);

    /* publish-batch: two entries, one matching the filter */
    rc = aws(&out, &err, "sns", "publish-batch", "--topic-arn", ARN "t", "--publish-batch-request-entries",
             "[{\"Id\":\"m1\",\"Message\":\"batch one\"},{\"Id\":\"m2\",\"Message\":\"batch two\",\"MessageAttributes\":"
             "{\"kind\":{\"DataType\":\"String\",\"StringValue\":\"x\"}}}]",
             "--query", "[Successful[].MessageId, length(Failed)]", "--output", "text", NULL);
    cr_assert_eq(rc, 0, "publish-batch: %s", err);
    char b1[80], b2[80];
    int nfailed = -1;
    cr_assert_eq(sscanf(out, "%d %79s %79s", &nfailed, b1, b2), 3, "publish-batch: %s", out);
    cr_assert_eq(nfailed, 0);
    free(out);
    free(err);

    /* an unknown topic: NotFound, exit 254, nothing stored */
    long before = total_published();
    rc = aws(&out, &err, "sns", "publish", "--topic-arn", ARN "nope", "--message", "lost", NULL);
    cr_assert_eq(rc, 254, "publish to an unknown topic: %d %s", rc, err);
    cr_assert(strstr(err, "NotFound"), "%s", err);
    free(out);
    free(err);
    rc = aws(&out, &err, "sns", "publish", "--topic-arn", "arn:aws:sns:eu-west-1:000000000000:t", "--message", "lost",
             NULL);
    cr_assert_eq(rc, 254, "another region: %d %s", rc, err);
    cr_assert(strstr(err, "NotFound"), "%s", err);
    free(out);
    free(err);
    cr_assert_eq(total_published(), before, "a refused publish was counted");

    /* each event reached the handlers of its topic exactly as herald-publish's does */
    const char *hp = herald_publish("t", "hello cli", "x");
    char ref[1024];
    snprintf(ref, sizeof ref, "%s", recorded(h_path(&env, "rec.txt"), hp));
    cr_assert_str_eq(recorded(h_path(&env, "rec.txt"), id1), ref);
    cr_assert_str_eq(recorded(h_path(&env, "x.txt"), id1), ref);
    cr_assert_str_eq(recorded(h_path(&env, "rec.txt"), id2), "t y unsigned cli");
    cr_assert_str_eq(recorded(h_path(&env, "rec.txt"), b1), "t - batch one");
    cr_assert_str_eq(recorded(h_path(&env, "rec.txt"), b2), "t x batch two");
    cr_assert_str_eq(recorded(h_path(&env, "x.txt"), b2), "t x batch two");
    char *xs = h_read(h_path(&env, "x.txt"), NULL);
    cr_assert(!strstr(xs, id2) && !strstr(xs, b1), "the filter let a non-matching event through: %s", xs);
    free(xs);

    /* lambda invoke RequestResponse: output byte for byte, signed and unsigned */
    const char *payload = "{\"k\": [1, 2], \"s\": \"h\\u00e9llo\"}";
    for (int unsigned_ = 0; unsigned_ < 2; unsigned_++) {
        const char *o = h_path(&env, unsigned_ ? "out-u.json" : "out-s.json");
        rc = unsigned_ ? aws(&out, &err, "--no-sign-request", "lambda", "invoke", "--function-name", "echo",
                             "--cli-binary-format", "raw-in-base64-out", "--payload", payload, o, NULL)
                       : aws(&out, &err, "lambda", "invoke", "--function-name", "echo", "--cli-binary-format",
                             "raw-in-base64-out", "--payload", payload, o, NULL);
        cr_assert_eq(rc, 0, "lambda invoke: %s", err);
        cr_assert(strstr(out, "\"StatusCode\": 200") && !strstr(out, "FunctionError"), "%s", out);
        free(out);
        free(err);
        char *got = h_read(o, NULL);
        cr_assert_str_eq(got, payload);
        free(got);
    }
    /* a function named by its ARN */
    rc = aws(&out, &err, "lambda", "invoke", "--function-name", "arn:aws:lambda:us-east-1:000000000000:function:echo",
             "--cli-binary-format", "raw-in-base64-out", "--payload", "{}", h_path(&env, "arn.json"), NULL);
    cr_assert_eq(rc, 0, "invoke by ARN: %s", err);
    free(out);
    free(err);
    /* a failing handler: exit 0, FunctionError, its error in the payload */
    rc = aws(&out, &err, "lambda", "invoke", "--function-name", "fail", "--cli-binary-format", "raw-in-base64-out",
             "--payload", "{}", h_path(&env, "fail.json"), NULL);
    cr_assert_eq(rc, 0, "failing invoke: %s", err);
    cr_assert(strstr(out, "\"FunctionError\": \"Unhandled\""), "%s", out);
    free(out);
    free(err);
    char *fj = h_read(h_path(&env, "fail.json"), NULL);
    cr_assert(strstr(fj, "\"errorMessage\":\"failing with 3"), "%s", fj);
    free(fj);
    /* an unknown function */
    rc = aws(&out, &err, "lambda", "invoke", "--function-name", "nope", "--payload", "{}", h_path(&env, "n.json"), NULL);
    cr_assert_eq(rc, 254, "unknown function: %d %s", rc, err);
    cr_assert(strstr(err, "ResourceNotFoundException"), "%s", err);
    free(out);
    free(err);

    /* Event: 202, the handler runs; a failing one ends in the dead letters */
    rc = aws(&out, &err, "lambda", "invoke", "--function-name", "rec", "--invocation-type", "Event",
             "--cli-binary-format", "raw-in-base64-out", "--payload", "event via cli", h_path(&env, "ev.json"), NULL);
    cr_assert_eq(rc, 0, "Event: %s", err);
    cr_assert(strstr(out, "\"StatusCode\": 202"), "%s", out);
    free(out);
    free(err);
    file_has ev = { h_path(&env, "rec.txt"), "  - event via cli", 1 };   /* HERALD_TOPIC empty */
    cr_assert(h_wait(lines_with, &ev, 20000), "the Event invoke never ran: %s", h_read(ev.path, NULL));
    rc = aws(&out, &err, "--no-sign-request", "lambda", "invoke", "--function-name", "fail", "--invocation-type",
             "Event", "--cli-binary-format", "raw-in-base64-out", "--payload", "doomed", h_path(&env, "ev2.json"), NULL);
    cr_assert_eq(rc, 0, "failing Event: %s", err);
    free(out);
    free(err);
    char *dlq = NULL;
    for (int i = 0; i < 200; i++) {
        free(dlq);
        dlq = h_ctl(&env, "dlq", "list", "--json", NULL);
        if (dlq && strstr(dlq, "\"function\":\"fail\"")) break;
        usleep(100000);
    }
    cr_assert(dlq && strstr(dlq, "\"topic\":\"\",\"function\":\"fail\",\"attempts\":2"),
              "no dead letter after the retries: %s", dlq);
    free(dlq);
}

/* ---- 1, 2. boto3 ------------------------------------------------------------------------------ */

static const char boto3_script[] =
    "import sys, boto3\n"
    "from botocore import UNSIGNED\n"
    "from botocore.config import Config\n"
    "ep, T = sys.argv[1], 'arn:aws:sns:us-east-1:000000000000:t'\n"
    "for signed in (True, False):\n"
    "    kw = dict(retries={'total_max_attempts': 1}, read_timeout=900)\n"
    "    if not signed: kw['signature_version'] = UNSIGNED\n"
    "    mk = lambda s: boto3.client(s, endpoint_url=ep, region_name='us-east-1', config=Config(**kw))\n"
    "    sns, lam = mk('sns'), mk('lambda')\n"
    "    arns = [t['TopicArn'] for t in sns.list_topics()['Topics']]\n"
    "    assert T in arns and 'NextToken' not in sns.list_topics(), arns\n"
    "    assert sns.create_topic(Name='t')['TopicArn'] == T\n"
    "    tag = 'signed' if signed else 'unsigned'\n"
    "    r = sns.publish(TopicArn=T, Message='boto3 ' + tag, MessageAttributes={\n"
    "        'kind': {'DataType': 'String', 'StringValue': 'x'},\n"
    "        'n': {'DataType': 'Number', 'StringValue': '5'},\n"
    "        'bin': {'DataType': 'Binary', 'BinaryValue': b'\\x00\\x01'}})\n"
    "    print('publish', tag, r['MessageId'])\n"
    "    r = sns.publish_batch(TopicArn=T, PublishBatchRequestEntries=[\n"
    "        {'Id': 'a', 'Message': 'batch a ' + tag},\n"
    "        {'Id': 'b', 'Message': 'batch b ' + tag, 'MessageAttributes': {'kind': {'DataType': 'String', 'StringValue': 'x'}}}])\n"
    "    assert r['Failed'] == [] and len(r['Successful']) == 2, r\n"
    "    for s in r['Successful']: print('batch', tag, s['Id'], s['MessageId'])\n"
    "    try:\n"
    "        sns.publish(TopicArn=T + 'zz', Message='x'); assert False, 'published to an unknown topic'\n"
    "    except sns.exceptions.NotFoundException: pass\n"
    "    r = lam.invoke(FunctionName='echo', Payload=b'{\"a\": \"\\xc3\\xa9\"}')\n"
    "    assert r['StatusCode'] == 200 and 'FunctionError' not in r, r\n"
    "    assert r['Payload'].read() == b'{\"a\": \"\\xc3\\xa9\"}'\n"
    "    r = lam.invoke(FunctionName='fail', Payload=b'{}')\n"
    "    assert r['StatusCode'] == 200 and r['FunctionError'] == 'Unhandled', r\n"
    "    assert b'failing with 3' in r['Payload'].read()\n"
    "    try:\n"
    "        lam.invoke(FunctionName='nope', Payload=b'{}'); assert False, 'invoked an unknown function'\n"
    "    except lam.exceptions.ResourceNotFoundException: pass\n"
    "    r = lam.invoke(FunctionName='000000000000:function:rec', InvocationType='Event', Payload=b'boto3 event ' + tag.encode())\n"
    "    assert r['StatusCode'] == 202, r\n"
    "    assert lam.invoke(FunctionName='echo', InvocationType='DryRun')['StatusCode'] == 204\n"
    "print('done')\n";

Test(gateway, boto3_sns_and_lambda)
{
    start_all();
    h_write(h_path(&env, "b.py"), boto3_script);
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "/usr/bin/python3", h_path(&env, "b.py"), ep, NULL);
    cr_assert_eq(rc, 0, "boto3 script failed:\n%s\n%s", out, err);
    cr_assert(strstr(out, "done\n"), "%s", out);
    /* every id it got reached the handlers, as herald-publish's events do */
    const char *hp = herald_publish("t", "boto3 signed", "x");
    char ref[1024];
    snprintf(ref, sizeof ref, "%s", recorded(h_path(&env, "rec.txt"), hp));
    char *save = NULL;
    int ids = 0;
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char kind[16], tag[16], id[80], entry[8];
        if (sscanf(line, "publish %15s %79s", tag, id) == 2) {
            char want[128];
            snprintf(want, sizeof want, "t x boto3 %s", tag);
            cr_assert_str_eq(recorded(h_path(&env, "rec.txt"), id), want);
            cr_assert_str_eq(recorded(h_path(&env, "x.txt"), id), want);
            if (strcmp(tag, "signed") == 0) cr_assert_str_eq(want, ref);
            ids++;
        } else if (sscanf(line, "batch %15s %7s %79s", tag, entry, id) == 3) {
            char want[128];
            snprintf(kind, sizeof kind, "%s", strcmp(entry, "b") == 0 ? "x" : "-");
            snprintf(want, sizeof want, "t %s batch %s %s", kind, entry, tag);
            cr_assert_str_eq(recorded(h_path(&env, "rec.txt"), id), want);
            ids++;
        }
    }
    cr_assert_eq(ids, 6, "%s", out);
    file_has ev = { h_path(&env, "rec.txt"), "  - boto3 event ", 2 };
    cr_assert(h_wait(lines_with, &ev, 20000), "the Event invokes did not run: %s", h_read(ev.path, NULL));
    free(out);
    free(err);
}

/* ---- 4. /metrics and /healthz -------------------------------------------------------------------- */

typedef struct { const char *series; double want; } metric_is;

static bool metric_reaches(void *arg)
{
    metric_is *m = arg;
    char *body = NULL;
    if (h_curl(&env, &body, url("/metrics"), NULL) != 200) { free(body); return false; }
    double v = sample(body, m->series);
    free(body);
    return v == m->want;
}

static bool healthz_is(void *arg)
{
    return h_curl(&env, NULL, url("/healthz"), NULL) == *(int *)arg;
}

Test(gateway, metrics_counters_move_by_the_workload_and_healthz_follows_the_broker)
{
    start_all();
    /* one event first so that every series exists, then a baseline */
    cr_assert_eq(h_curl(&env, NULL, "-X", "POST", "--data-binary", "warm", url("/topics/t"), NULL), 202);
    metric_is warm = { "herald_subscription_succeeded_total{topic=\"t\",function=\"rec\"}", 1 };
    cr_assert(h_wait(metric_reaches, &warm, 20000));
    char *m0 = scrape();
    cr_assert_eq(sample(m0, "herald_broker_up"), 1);
    cr_assert_eq(sample(m0, "herald_workers_connected"), 1);

    /* the workload: 5 events (3 of kind x), 3 good invokes, 2 failing ones */
    for (int i = 0; i < 5; i++) {
        char p[16];
        snprintf(p, sizeof p, "m%d", i);
        int st = i < 3 ? h_curl(&env, NULL, "-X", "POST", "--data-binary", p, url("/topics/t"), "-H", "X-Herald-Attr-Kind: x", NULL)
                       : h_curl(&env, NULL, "-X", "POST", "--data-binary", p, url("/topics/t"), NULL);
        cr_assert_eq(st, 202);
    }
    for (int i = 0; i < 3; i++) cr_assert_eq(h_curl(&env, NULL, "-X", "POST", "-d", "e", url("/functions/echo/invoke"), NULL), 200);
    for (int i = 0; i < 2; i++) cr_assert_eq(h_curl(&env, NULL, "-X", "POST", "-d", "f", url("/functions/fail/invoke"), NULL), 502);
    metric_is done = { "herald_subscription_succeeded_total{topic=\"t\",function=\"rec\"}", 6 };
    cr_assert(h_wait(metric_reaches, &done, 20000), "the events were not all handled");
    metric_is done_x = { "herald_subscription_succeeded_total{topic=\"t\",function=\"only_x\"}",
                         sample(m0, "herald_subscription_succeeded_total{topic=\"t\",function=\"only_x\"}") + 3 };
    cr_assert(h_wait(metric_reaches, &done_x, 20000), "the filtered events were not all handled");
    char *m1 = scrape();
    static const struct { const char *series; double delta; } moves[] = {
        { "herald_topic_published_total{topic=\"t\"}", 5 },
        { "herald_topic_published_total{topic=\"bulk\"}", 0 },
        { "herald_subscription_succeeded_total{topic=\"t\",function=\"rec\"}", 5 },
        { "herald_subscription_succeeded_total{topic=\"t\",function=\"only_x\"}", 3 },
        { "herald_subscription_failed_total{topic=\"t\",function=\"rec\"}", 0 },
        { "herald_function_invocations_total{function=\"rec\"}", 5 },
        { "herald_function_invocations_total{function=\"only_x\"}", 3 },
        { "herald_function_invocations_total{function=\"echo\"}", 3 },
        { "herald_function_invocations_total{function=\"fail\"}", 2 },
        { "herald_function_errors_total{function=\"fail\"}", 2 },
        { "herald_function_errors_total{function=\"echo\"}", 0 },
        { "herald_function_duration_seconds_count{function=\"echo\"}", 3 },
        { "herald_gateway_requests_total{route=\"publish\",code=\"202\"}", 5 },
        { "herald_gateway_requests_total{route=\"invoke\",code=\"200\"}", 3 },
    };
    for (size_t i = 0; i < sizeof moves / sizeof moves[0]; i++) {
        double a = sample(m0, moves[i].series), b = sample(m1, moves[i].series);
        if (isnan(a) && strstr(moves[i].series, "gateway_requests")) a = 0;   /* first of its kind */
        if (isnan(a) && strstr(moves[i].series, "\"echo\"")) a = 0;
        if (isnan(a) && strstr(moves[i].series, "\"fail\"")) a = 0;
        cr_assert(!isnan(b), "%s missing from:\n%s", moves[i].series, m1);
        cr_assert_eq(b - a, moves[i].delta, "%s moved by %g, expected %g", moves[i].series, b - a, moves[i].delta);
    }
    cr_assert_eq(sample(m1, "herald_subscription_ready{topic=\"t\",function=\"rec\"}"), 0);
    cr_assert_eq(sample(m1, "herald_subscription_inflight{topic=\"t\",function=\"rec\"}"), 0);
    cr_assert_eq(sample(m1, "herald_subscription_dead{topic=\"t\",function=\"rec\"}"), 0);
    cr_assert(sample(m1, "herald_function_duration_seconds{function=\"echo\",quantile=\"0.99\"}") > 0);
    /* the warm-runtime families exist for every function: 0 for exec ones */
    static const char *const zero[] = {
        "herald_function_cold_starts_total{function=\"rec\"}", "herald_function_init_seconds_total{function=\"rec\"}",
        "herald_function_warm_invocations_total{function=\"rec\"}",
        "herald_function_recycles_total{function=\"rec\",reason=\"idle\"}",
        "herald_function_recycles_total{function=\"echo\",reason=\"max_invocations\"}",
        "herald_function_recycles_total{function=\"echo\",reason=\"shutdown\"}",
    };
    for (size_t i = 0; i < sizeof zero / sizeof *zero; i++)
        cr_assert_eq(sample(m1, zero[i]), 0, "%s is not 0 in:\n%s", zero[i], m1);
    free(m0);
    free(m1);

    /* /healthz: 200, 503 while the broker is down, 200 once it is back */
    int ok = 200, down = 503;
    cr_assert(healthz_is(&ok));
    h_kill(&env, env.pids[0], SIGTERM);   /* start_all started the broker first */
    cr_assert(h_wait(healthz_is, &down, 10000), "/healthz did not turn 503 with the broker down");
    char *m2 = NULL;
    cr_assert_eq(h_curl(&env, &m2, url("/metrics"), NULL), 200);
    cr_assert_eq(sample(m2, "herald_broker_up"), 0, "%s", m2);
    free(m2);
    h_broker(&env);
    cr_assert(h_wait(healthz_is, &ok, 15000), "/healthz did not come back to 200 after the broker restarted");
    cr_assert_eq(h_curl(&env, NULL, "-X", "POST", "--data-binary", "after", url("/topics/t"), NULL), 202);
}

/* ---- 5. 1,000 concurrent publishes; bad requests ---------------------------------------------------- */

Test(gateway, thousand_concurrent_publishes_and_bad_requests)
{
    start_all();
    const int n = 1000;
    FILE *f = fopen(h_path(&env, "par.cfg"), "w");
    cr_assert_not_null(f);
    for (int i = 0; i < n; i++)
        fprintf(f, "%surl = \"%s\"\ndata-binary = \"p%d\"\nheader = \"X-Herald-Attr-kind: k\"\n"
                   "write-out = \"\\n%%{http_code}\\n\"\n",
                i ? "next\n" : "", url("/topics/bulk"), i);
    fclose(f);
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "/usr/bin/curl", "-s", "-S", "--parallel", "--parallel-max", "300",
                   "--parallel-immediate", "-K", h_path(&env, "par.cfg"), NULL);
    cr_assert_eq(rc, 0, "curl --parallel: %s", err);
    int accepted = 0;
    FILE *ids = fopen(h_path(&env, "ids.txt"), "w");
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char id[80];
        if (sscanf(line, "{\"message_id\":\"%79[^\"]\"}", id) == 1) fprintf(ids, "%s\n", id);
        else if (strcmp(line, "202") == 0) accepted++;
        else cr_assert_fail("unexpected line from curl: %s", line);
    }
    fclose(ids);
    free(out);
    free(err);
    cr_assert_eq(accepted, n, "%d of %d publishes got 202", accepted, n);
    char **a, **b;
    size_t ta, tb;
    size_t na = h_lines_sorted(h_path(&env, "ids.txt"), &a, &ta);
    cr_assert_eq(na, (size_t)n, "%zu distinct ids of %zu", na, ta);
    file_has all = { h_path(&env, "count.txt"), "-", (size_t)n };
    cr_assert(h_wait(lines_with, &all, 30000), "the handler saw %zu of %d", h_count_lines(all.path), n);
    size_t nb = h_lines_sorted(h_path(&env, "count.txt"), &b, &tb);
    cr_assert_eq(nb, (size_t)n);
    for (size_t i = 0; i < (size_t)n; i++) cr_assert_str_eq(a[i], b[i]);
    h_free_lines(a, na);
    h_free_lines(b, nb);

    /* bad requests: 4xx with a clear message, and the gateway keeps serving */
    char *body = NULL;
    int st = h_curl(&env, &body, "-X", "POST", "--data-binary", "Action=Publish&TopicArn=%zz&Message=x", url("/"), NULL);
    cr_assert_eq(st, 400, "%d %s", st, body);
    cr_assert(strstr(body, "<Code>MalformedQueryString</Code>") && strstr(body, "not followed by two hex digits"), "%s", body);
    free(body);
    st = h_curl(&env, &body, "-X", "POST", "--data-binary", "Action=Frobnicate&Version=2010-03-31", url("/"), NULL);
    cr_assert_eq(st, 400, "%d %s", st, body);
    cr_assert(strstr(body, "<Code>InvalidAction</Code>") && strstr(body, "Frobnicate"), "%s", body);
    free(body);
    /* above max_payload (256 KiB by default): with a length, and chunked */
    f = fopen(h_path(&env, "big.bin"), "w");
    for (int i = 0; i < 300 * 1024; i++) fputc('a' + i % 26, f);
    fclose(f);
    char at[600];
    snprintf(at, sizeof at, "@%s", h_path(&env, "big.bin"));
    st = h_curl(&env, &body, "-X", "POST", "--data-binary", at, url("/topics/bulk"), NULL);
    cr_assert_eq(st, 413, "%d %s", st, body);
    cr_assert(strstr(body, "max_payload"), "%s", body);
    free(body);
    st = h_curl(&env, &body, "-X", "POST", "-H", "Transfer-Encoding: chunked", "--data-binary", at, url("/topics/bulk"), NULL);
    cr_assert_eq(st, 413, "chunked: %d %s", st, body);
    free(body);
    st = h_curl(&env, &body, "-X", "POST", "--data-binary", at, url("/2015-03-31/functions/echo/invocations"), NULL);
    cr_assert_eq(st, 413, "lambda: %d %s", st, body);
    cr_assert(strstr(body, "Request must be smaller"), "%s", body);
    free(body);
    st = h_curl(&env, &body, "-X", "POST", "--data-binary", "x", url("/topics/bad%20name"), NULL);
    cr_assert_eq(st, 400, "bad topic name: %d %s", st, body);
    free(body);
    st = h_curl(&env, &body, "-X", "POST", "-H", "X-Herald-Delay: soon", "--data-binary", "x", url("/topics/bulk"), NULL);
    cr_assert_eq(st, 400, "bad delay: %d %s", st, body);
    cr_assert(strstr(body, "X-Herald-Delay"), "%s", body);
    free(body);
    st = h_curl(&env, &body, "-X", "POST", "--data-binary", "nothing here", url("/elsewhere"), NULL);
    cr_assert_eq(st, 404, "%d %s", st, body);
    free(body);
    /* still serving, chunked bodies included */
    cr_assert_eq(h_curl(&env, NULL, url("/healthz"), NULL), 200);
    st = h_curl(&env, &body, "-X", "POST", "-H", "Transfer-Encoding: chunked", "--data-binary", "chunked ok", url("/topics/t"),
              NULL);
    cr_assert_eq(st, 202, "%d %s", st, body);
    char id[80];
    cr_assert_eq(sscanf(body, "{\"message_id\":\"%79[^\"]\"}", id), 1, "%s", body);
    free(body);
    cr_assert_str_eq(recorded(h_path(&env, "rec.txt"), id), "t - chunked ok");
}

/* ---- CURVE: the gateway's key in publishers/ and admins/ ------------------------------------------ */

static bool healthz_ok(void *arg)
{
    (void)arg;
    return h_curl(&env, NULL, url("/healthz"), NULL) == 200;
}

/* A raw HTTP/1.1 connection to the gateway. */
static int http_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(strrchr(ep, ':') + 1)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    cr_assert(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        cr_assert(w > 0, "send: %s (the gateway reset the connection)", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
}

/* Everything up to EOF; fails on a reset. Caller frees. */
static char *recv_all(int fd)
{
    size_t len = 0, cap = 1 << 16;
    char *b = malloc(cap);
    for (ssize_t r; (r = recv(fd, b + len, cap - len - 1, 0)) != 0;) {
        cr_assert(r > 0, "recv: %s (the gateway reset the connection)", strerror(errno));
        len += (size_t)r;
        if (cap - len < 2) b = realloc(b, cap *= 2);
    }
    b[len] = 0;
    return b;
}

/* A body above max_payload from a client that sends it without waiting
 * (no Expect: 100-continue) is read and dropped before the 413: answered
 * and closed at once, the client — still sending — would get its connection
 * reset instead of the answer. One that waits (Expect) gets the 413 at once. */
Test(gateway, oversized_body_gets_413_not_a_reset)
{
    start_all();
    size_t n = 300 * 1024;
    char *big = malloc(n);
    memset(big, 'a', n);
    char head[256];
    snprintf(head, sizeof head, "POST /topics/bulk HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n", n);
    int fd = http_connect();
    send_all(fd, head, strlen(head));
    send_all(fd, big, 1000);
    /* No answer while the body is still coming (the gateway waits for it). */
    struct pollfd p = { .fd = fd, .events = POLLIN };
    cr_assert_eq(poll(&p, 1, 300), 0, "the gateway answered before the body was read");
    send_all(fd, big + 1000, n - 1000);
    char *resp = recv_all(fd);
    cr_assert(strncmp(resp, "HTTP/1.1 413", 12) == 0 && strstr(resp, "payload of 307200 bytes") &&
              strstr(resp, "max_payload"), "%s", resp);
    free(resp);
    close(fd);

    /* Past 16 MiB it is not worth reading: the 413 comes at once, unread. */
    fd = http_connect();
    snprintf(head, sizeof head, "POST /topics/bulk HTTP/1.1\r\nHost: x\r\nContent-Length: %u\r\n"
             "Connection: close\r\n\r\n", 17u << 20);
    send_all(fd, head, strlen(head));
    resp = recv_all(fd);
    cr_assert(strncmp(resp, "HTTP/1.1 413", 12) == 0, "%s", resp);
    free(resp);
    close(fd);

    /* A chunked body without end is cut off past 16 MiB. */
    fd = http_connect();
    const char *ch = "POST /topics/bulk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    send_all(fd, ch, strlen(ch));
    char chunk_head[32];
    snprintf(chunk_head, sizeof chunk_head, "%zx\r\n", n);
    size_t sent = 0;
    for (; sent < (64u << 20); sent += n) {
        if (send(fd, chunk_head, strlen(chunk_head), MSG_NOSIGNAL) < 0 || send(fd, big, n, MSG_NOSIGNAL) < 0 ||
            send(fd, "\r\n", 2, MSG_NOSIGNAL) < 0)
            break;
    }
    cr_assert_lt(sent, 64u << 20, "64 MiB of chunks were taken in");
    close(fd);

    fd = http_connect();
    snprintf(head, sizeof head, "POST /2015-03-31/functions/echo/invocations HTTP/1.1\r\nHost: x\r\n"
             "Content-Length: %zu\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n", n);
    send_all(fd, head, strlen(head));
    resp = recv_all(fd);   /* not a 100 Continue: the answer, without the body */
    cr_assert(strncmp(resp, "HTTP/1.1 413", 12) == 0 && strstr(resp, "RequestTooLargeException"), "%s", resp);
    free(resp);
    close(fd);
    free(big);
}

Test(gateway, curve_gateway_key_in_publishers_and_admins_publishes_and_reads_stats)
{
    char cmd[2400];
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s'; mkdir -p keys/publishers keys/workers keys/admins;"
             " for k in broker gw wrk; do '%s/bin/heraldctl' keygen keys/$k >/dev/null; done;"
             " cp keys/gw.pub keys/publishers/; cp keys/gw.pub keys/admins/; cp keys/wrk.pub keys/workers/",
             env.dir, env.root);
    cr_assert_eq(system(cmd), 0);
    char body[2048];
    snprintf(body, sizeof body,
             "functions = ( { name = \"count\"; native = { library = \"examples/handlers/libcount.so\"; symbol = \"count\"; };\n"
             "   env = { COUNT_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"bulk\"; subscriptions = ( { function = \"count\"; } ); } );\n"
             "security = { curve = true; secret_key = \"keys/broker.key\"; publishers = \"keys/publishers\";\n"
             "  workers = \"keys/workers\"; admins = \"keys/admins\"; };\n"
             "gateway = { listen = \"127.0.0.1:0\"; broker = \"%s\"; admin = \"%s\";\n"
             "  key = \"keys/gw.key\"; broker_key = \"keys/broker.pub\"; };\n",
             h_path(&env, "count.txt"), env.pub, env.adm);
    h_config(&env, "os", body);
    h_start(&env, "broker", "bin/herald-broker", "-c", env.cfg, NULL);
    h_start(&env, "worker", "bin/herald-worker", "--broker", env.wrk, "--root", env.root, "--run-dir",
            h_path(&env, "runs"), "--key", h_path(&env, "keys/wrk.key"), "--broker-key", h_path(&env, "keys/broker.pub"),
            NULL);
    h_gateway(&env, ep, sizeof ep);
    cr_assert(h_wait(healthz_ok, NULL, 20000), "/healthz never answered 200 over CURVE");
    char *out = NULL;
    int st = h_curl(&env, &out, "-X", "POST", "--data-binary", "secret", url("/topics/bulk"), NULL);
    cr_assert_eq(st, 202, "%d %s", st, out);
    free(out);
    file_has one = { h_path(&env, "count.txt"), "-", 1 };
    cr_assert(h_wait(lines_with, &one, 20000), "the event never reached the handler");
    char *m = scrape();
    cr_assert_eq(sample(m, "herald_topic_published_total{topic=\"bulk\"}"), 1, "%s", m);
    free(m);
}

static bool worker_registered(void *arg)
{
    (void)arg;
    char *st = h_stats(&env);
    bool ok = st && strstr(st, "\"workers\":[{");
    free(st);
    return ok;
}

/* A whole file as bytes (h_read stops at a NUL); *len its size. */
static unsigned char *read_binary(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    size_t cap = 1 << 20, n = 0, k;
    unsigned char *b = malloc(cap);
    while ((k = fread(b + n, 1, cap - n, f)) > 0)
        if ((n += k) == cap) b = realloc(b, cap *= 2);
    fclose(f);
    *len = n;
    return b;
}

/* DESIGN §4/§10: a sync invoke whose output is over 6 MiB is a function error,
 * as Lambda answers it: 200 + X-Amz-Function-Error: Unhandled + a body
 * {"errorType":"Function.ResponseSizeTooLarge","errorMessage":…} saying the
 * size and the cap (the native route: 502); never a cut-off 200. Exactly
 * 6 MiB comes back byte for byte. Exec (stdout) and native (set_output). */
Test(gateway, lambda_invoke_of_an_output_over_6_mib_is_function_response_size_too_large, .timeout = 180)
{
    char body[2048];
    snprintf(body, sizeof body,
             "functions = ( { name = \"six\"; exec = [\"tests/handlers/ctl_pattern.sh\"];"
             " env = { PATTERN_BYTES = \"6291456\"; }; },\n"
             "  { name = \"over\"; exec = [\"tests/handlers/ctl_pattern.sh\"]; env = { PATTERN_BYTES = \"6291457\"; }; },\n"
             "  { name = \"nat\"; native = { library = \"build/tests/handlers/libnative.so\"; symbol = \"handle\"; }; } );\n"
             "topics = ( { name = \"t\"; } );\n"
             "gateway = { listen = \"127.0.0.1:0\"; broker = \"%s\"; admin = \"%s\"; };\n",
             env.pub, env.adm);
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, 2);
    h_gateway(&env, ep, sizeof ep);
    cr_assert(h_wait(worker_registered, NULL, 20000), "the worker never registered");   /* invokes need it */

    const char *ok[][2] = { { "six", "{}" }, { "nat", "pattern:6291456" } };
    for (int k = 0; k < 2; k++) {
        char path[200], *hdr;
        snprintf(path, sizeof path, "/2015-03-31/functions/%s/invocations", ok[k][0]);
        char *out = NULL;
        int st = h_curl(&env, &out, "-D", h_path(&env, "ok.hdr"), "-o", h_path(&env, "ok.out"), "-X", "POST", "--data-binary",
                      ok[k][1], url(path), NULL);
        cr_assert_eq(st, 200, "%s: %d", ok[k][0], st);
        free(out);
        hdr = h_read(h_path(&env, "ok.hdr"), NULL);
        cr_assert(!strcasestr(hdr, "X-Amz-Function-Error"), "%s: exactly 6 MiB is an error: %s", ok[k][0], hdr);
        free(hdr);
        size_t n;
        unsigned char *got = read_binary(h_path(&env, "ok.out"), &n);
        cr_assert_eq(n, (size_t)6 << 20, "%s: %zu bytes came back, the handler wrote exactly 6 MiB", ok[k][0], n);
        for (size_t i = 0; i < n; i++)
            if (got[i] != (unsigned char)((i * 31 + (i >> 8)) & 255))
                cr_assert_fail("%s: byte %zu differs from what the handler wrote", ok[k][0], i);
        free(got);
    }

    const char *big[][2] = { { "over", "{}" }, { "nat", "pattern:6291457" } };
    for (int k = 0; k < 2; k++) {
        char path[200], *out = NULL;
        snprintf(path, sizeof path, "/2015-03-31/functions/%s/invocations", big[k][0]);
        int st = h_curl(&env, &out, "-D", h_path(&env, "big.hdr"), "-X", "POST", "--data-binary", big[k][1], url(path), NULL);
        char *hdr = h_read(h_path(&env, "big.hdr"), NULL);
        cr_assert_eq(st, 200, "%s: %d %s", big[k][0], st, hdr);
        cr_assert(strcasestr(hdr, "X-Amz-Function-Error: Unhandled"), "%s: no function error: %s", big[k][0], hdr);
        cr_assert_str_eq(out, "{\"errorMessage\":\"Response payload size (6291457 bytes) exceeded maximum allowed "
                              "payload size (6291456 bytes).\",\"errorType\":\"Function.ResponseSizeTooLarge\"}",
                         "%s", big[k][0]);
        free(hdr);
        free(out);
        snprintf(path, sizeof path, "/functions/%s/invoke", big[k][0]);
        st = h_curl(&env, &out, "-X", "POST", "--data-binary", big[k][1], url(path), NULL);
        cr_assert(st == 502 && strstr(out, "Function.ResponseSizeTooLarge") && strlen(out) < 300,
                  "native route, %s: %d %.300s", big[k][0], st, out);
        free(out);
    }
}

/* DESIGN §4: attribute keys are [A-Za-z0-9_.-]{1,128}. An SNS message
 * attribute name outside that is InvalidParameterValue (400), as AWS answers
 * a bad name; in a batch only that entry fails; an X-Herald-Attr-* header
 * whose name is not a key is a 400 too. Nothing of them is stored. */
Test(gateway, attribute_names_outside_the_key_rule_are_refused)
{
    start_all();
    long before = total_published();
    const char *names[] = { "has+space", "%C3%A9", "a%2Fb", "x%3Dy" };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char form[600], *body = NULL;
        snprintf(form, sizeof form,
                 "Action=Publish&Version=2010-03-31&TopicArn=" ARN "t&Message=m&MessageAttributes.entry.1.Name=%s"
                 "&MessageAttributes.entry.1.Value.DataType=String&MessageAttributes.entry.1.Value.StringValue=v",
                 names[i]);
        int st = h_curl(&env, &body, "-X", "POST", "-H", "Content-Type: application/x-www-form-urlencoded", "--data-binary",
                      form, url("/"), NULL);
        cr_assert_eq(st, 400, "name %s: %d %s", names[i], st, body);
        cr_assert(strstr(body, "<Code>InvalidParameterValue</Code>") && strstr(body, "message attribute name"),
                  "name %s: %s", names[i], body);
        free(body);
    }
    char *body = NULL;
    int st = h_curl(&env, &body, "-X", "POST", "-H", "Content-Type: application/x-www-form-urlencoded", "--data-binary",
                  "Action=PublishBatch&Version=2010-03-31&TopicArn=" ARN "t"
                  "&PublishBatchRequestEntries.member.1.Id=good&PublishBatchRequestEntries.member.1.Message=a"
                  "&PublishBatchRequestEntries.member.2.Id=bad&PublishBatchRequestEntries.member.2.Message=b"
                  "&PublishBatchRequestEntries.member.2.MessageAttributes.entry.1.Name=no+space"
                  "&PublishBatchRequestEntries.member.2.MessageAttributes.entry.1.Value.DataType=String"
                  "&PublishBatchRequestEntries.member.2.MessageAttributes.entry.1.Value.StringValue=v",
                  url("/"), NULL);
    cr_assert_eq(st, 200, "%d %s", st, body);
    cr_assert(strstr(body, "<Failed><member><Id>bad</Id><Code>InvalidParameterValue</Code>"), "%s", body);
    cr_assert(strstr(body, "<Successful><member><Id>good</Id>"), "%s", body);
    free(body);
    st = h_curl(&env, &body, "-X", "POST", "--data-binary", "x", "-H", "X-Herald-Attr-a!b: 1", url("/topics/t"), NULL);
    cr_assert_eq(st, 400, "X-Herald-Attr-a!b: %d %s", st, body);
    cr_assert(strstr(body, "invalid attribute key"), "%s", body);
    free(body);
    cr_assert_eq(total_published(), before + 1, "only the good batch entry may be stored");
}
