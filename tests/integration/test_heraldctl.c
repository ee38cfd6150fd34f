/* test_heraldctl.c — heraldctl through the real programs (DESIGN §2): the
 * exact JSON of stats, workers, dlq list and dlq show; the dead-letter tools
 * (list filters, show encodings, replay onto the own subscription, --rate,
 * --dry-run, purge selections); reading the database with the broker stopped;
 * invoke (byte-for-byte output, errors, --async); and the exit codes of
 * unknown ids and bad usage.
 *
 * The JSON is parsed for real (a small parser below), so every object's key
 * set and every value's type is checked, not just substrings. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "../../proto/proto.h"

static h_env env;

static void setup(void)
{
    h_setup(&env);
    unsetenv("HERALD_BROKER");   /* invoke --async: each test says where */
}
static void teardown(void) { h_teardown(&env); }

TestSuite(heraldctl, .init = setup, .fini = teardown, .timeout = 90);

#include "tjson.h"

/* --- running heraldctl ---------------------------------------------------------- */

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* heraldctl --broker ADMIN ARGS...: its exit code; stdout/stderr when asked. */
#define CTL(out, err, ...) h_run(&env, NULL, out, err, "bin/heraldctl", "--broker", env.adm, __VA_ARGS__, NULL)

static j_val *json_of(int rc, char *out, char *err, const char *what)
{
    cr_assert_eq(rc, 0, "heraldctl %s: exit %d: %s", what, rc, err ? err : "");
    j_val *v = j_parse(out);
    cr_assert_not_null(v, "heraldctl %s: stdout is not JSON: %s", what, out);
    free(out);
    free(err);
    return v;
}

/* heraldctl --broker ADMIN ARGS... (exit 0 asserted), stdout parsed as JSON. */
#define CTL_JSON(...)                                                             \
    ({                                                                            \
        char *o_ = NULL, *e_ = NULL;                                              \
        int rc_ = CTL(&o_, &e_, __VA_ARGS__);                                     \
        json_of(rc_, o_, e_, #__VA_ARGS__);                                       \
    })

/* Runs heraldctl ARGV (argv[0] ignored) with stdin from in_path (or
 * /dev/null) and stdout/stderr to files: byte-exact, NULs included. */
static int run_files(const char *in_path, const char *out_path, const char *err_path, char **argv)
{
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork");
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int in = open(in_path ? in_path : "/dev/null", O_RDONLY);
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || out < 0 || err < 0) _exit(126);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        char path[700];
        snprintf(path, sizeof path, "%s/bin/heraldctl", env.root);
        argv[0] = path;
        execv(path, argv);
        _exit(127);
    }
    setpgid(pid, pid);
    int st = h_wait_exit(pid, 60000);
    if (st < 0) { kill(-pid, SIGKILL); st = h_wait_exit(pid, 5000); }
    return st;
}

/* A whole file, byte-exact (NULs included); *len its size. */
static unsigned char *read_bytes(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot read %s", path);
    size_t cap = 1 << 16, n = 0;
    unsigned char *b = malloc(cap);
    size_t got;
    while ((got = fread(b + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) b = realloc(b, cap *= 2);
    }
    fclose(f);
    *len = n;
    return b;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* --- publishing and waiting ------------------------------------------------------ */

/* Publishes one event (payload, or stdin from in_path when payload is "-");
 * attr "K=V" or NULL. Returns its message id (malloc'ed). */
static char *publish(const char *topic, const char *payload, const char *in_path, const char *attr)
{
    char *out = NULL, *err = NULL;
    int rc = attr ? h_run(&env, in_path, &out, &err, "bin/herald-publish", "--broker", env.pub, topic, payload, "-a",
                          attr, NULL)
                  : h_run(&env, in_path, &out, &err, "bin/herald-publish", "--broker", env.pub, topic, payload, NULL);
    cr_assert_eq(rc, 0, "herald-publish %s: exit %d: %s", topic, rc, err ? err : "");
    free(err);
    out[strcspn(out, "\n")] = 0;
    cr_assert(out[0], "herald-publish printed no message id");
    return out;
}

/* Publishes n events "prefix-I" to topic in one --lines run; the ids, in
 * order, into ids (n malloc'ed strings). */
static void publish_n(const char *topic, const char *prefix, int n, char **ids)
{
    char *in = h_path(&env, "lines.in");
    FILE *f = fopen(in, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < n; i++) fprintf(f, "%s-%d\n", prefix, i);
    fclose(f);
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, in, &out, &err, "bin/herald-publish", "--broker", env.pub, "--lines", topic, NULL);
    cr_assert_eq(rc, 0, "herald-publish --lines %s: exit %d: %s", topic, rc, err ? err : "");
    char *save = NULL, *line = strtok_r(out, "\n", &save);
    for (int i = 0; i < n; i++) {
        cr_assert_not_null(line, "herald-publish --lines printed %d of %d ids", i, n);
        if (ids) ids[i] = strdup(line);
        line = strtok_r(NULL, "\n", &save);
    }
    free(out);
    free(err);
}




/* Nothing of the subscription is queued, delayed or in flight. */
static void assert_sub_idle(const char *topic, const char *function)
{
    h_assert_sub(&env, topic, function, "ready", 0);
    h_assert_sub(&env, topic, function, "delayed", 0);
    h_assert_sub(&env, topic, function, "inflight", 0);
}

static bool workers_registered(void *arg)
{
    int want = *(int *)arg;
    char *st = h_stats(&env);
    j_val *v = j_parse(st);
    free(st);
    const j_val *w = j_get(v, "workers");
    return w && w->t == J_ARR && (int)w->n == want;
}

static void wait_workers(int n)
{
    cr_assert(h_wait(workers_registered, &n, 15000), "%d workers never registered: %s", n, h_stats(&env));
}



/* One line of ctl_fixable.sh's record: "FUNCTION TOPIC MID ATTEMPT START_MS PAYLOAD". */
typedef struct { char function[130], topic[130], mid[80], payload[256]; int attempt; long long start_ms; } rec_line;

/* The records of a file (at most max); returns how many. */
static int read_records(const char *path, rec_line *r, int max)
{
    char *s = h_read(path, NULL);
    if (!s) return 0;
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(s, "\n", &save); line && n < max; line = strtok_r(NULL, "\n", &save)) {
        char *f[6] = { 0 }, *p = line;
        for (int k = 0; k < 5; k++) f[k] = strsep(&p, " ");
        f[5] = p ? p : "";
        cr_assert(f[4], "bad record line '%s' in %s", line, path);
        rec_line *x = &r[n++];
        memset(x, 0, sizeof *x);
        snprintf(x->function, sizeof x->function, "%s", f[0]);
        snprintf(x->topic, sizeof x->topic, "%s", f[1]);
        snprintf(x->mid, sizeof x->mid, "%s", f[2]);
        x->attempt = atoi(f[3]);
        x->start_ms = atoll(f[4]);
        snprintf(x->payload, sizeof x->payload, "%s", f[5]);
    }
    free(s);
    return n;
}

/* dlq list --json [--function F]: the array (exit 0 asserted). */
static j_val *dlq_list_fn(const char *function)
{
    return function ? CTL_JSON("dlq", "list", "--json", "--limit", "0", "--function", function)
                    : CTL_JSON("dlq", "list", "--json", "--limit", "0");
}

typedef struct { const char *function; size_t want; } dlq_is;

static bool dlq_count_is(void *arg)
{
    dlq_is *d = arg;
    char *out = NULL;
    int rc = CTL(&out, NULL, "dlq", "list", "--json", "--limit", "0", "--function", d->function);
    j_val *v = rc == 0 ? j_parse(out) : NULL;
    free(out);
    return v && v->t == J_ARR && v->n == d->want;
}

static bool contains_id(const j_val *list, long long id)
{
    for (size_t i = 0; i < j_len(list); i++)
        if (j_int(j_at(list, i), "id") == id) return true;
    return false;
}

static bool contains_mid(const j_val *list, const char *mid)
{
    return j_find(list, "message_id", mid, NULL, NULL) != NULL;
}

static const char *const LIST_KEYS =
    "id:i,message_id:s,topic:s,function:s,attempts:i,outcome:s,error:s,failed_at:s,payload_bytes:i";

/* RFC 3339 UTC: YYYY-MM-DDTHH:MM:SS[.fraction]Z */
static bool rfc3339_utc(const char *s)
{
    const char *pat = "dddd-dd-ddTdd:dd:dd";
    size_t i = 0;
    for (; pat[i]; i++) {
        if (pat[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != pat[i]) return false;
    }
    if (s[i] == '.') {
        i++;
        if (s[i] < '0' || s[i] > '9') return false;
        while (s[i] >= '0' && s[i] <= '9') i++;
    }
    return s[i] == 'Z' && s[i + 1] == 0;
}

/* The config body of one function and topics, with DIR-relative files. */
static const char *FIXABLE_FMT =
    "{ name = \"%s\"; exec = [\"tests/handlers/ctl_fixable.sh\"]; max_attempts = %d;\n"
    "  backoff = { initial = 0.05; jitter = \"none\"; };\n"
    "  env = { RECORD_FILE = \"%s\"; FIX_FILE = \"%s\"; }; }";

static char *fixable_fn(const char *name, int max_attempts, const char *record, const char *fix)
{
    char *s = NULL;
    cr_assert(asprintf(&s, FIXABLE_FMT, name, max_attempts, h_path(&env, record), fix ? h_path(&env, fix) : "") > 0);
    return s;
}

/* --- 1. stats and workers JSON ---------------------------------------------------- */

static const char *const TOPIC_KEYS = "name:s,published:i";
static const char *const SUB_KEYS = "topic:s,function:s,ready:i,delayed:i,inflight:i,dead:i,succeeded:i,failed:i";
static const char *const FN_KEYS =
    "name:s,invocations:i,errors:i,timeouts:i,rejected:i,crashed:i,lost:i,p50_ms:n,p99_ms:n,gb_seconds:n,"
    "kind:s,cold_starts:i,init_ms:n,warm:i,recycles:o";
static const char *const RECYCLE_KEYS =
    "max_invocations:i,idle:i,memory:i,timeout:i,crash:i,init_error:i,redefined:i,shutdown:i";
static const char *const WORKER_KEYS = "id:s,host:s,pid:i,functions:a,slots:i,busy:i,last_seen_ms:i,refused:a";

static void check_sub(const j_val *subs, const char *topic, const char *fn, long succeeded, long failed, long dead)
{
    const j_val *s = j_find(subs, "topic", topic, "function", fn);
    cr_assert_not_null(s, "stats has no subscription %s→%s", topic, fn);
    char where[300];
    snprintf(where, sizeof where, "subscriptions[%s→%s]", topic, fn);
    assert_keys(s, SUB_KEYS, where);
    cr_assert_eq(j_int(s, "succeeded"), succeeded, "%s: succeeded %lld, expected %ld", where, j_int(s, "succeeded"), succeeded);
    cr_assert_eq(j_int(s, "failed"), failed, "%s: failed %lld, expected %ld", where, j_int(s, "failed"), failed);
    cr_assert_eq(j_int(s, "dead"), dead, "%s: dead %lld, expected %ld", where, j_int(s, "dead"), dead);
    cr_assert_eq(j_int(s, "ready"), 0, "%s: ready", where);
    cr_assert_eq(j_int(s, "delayed"), 0, "%s: delayed", where);
    cr_assert_eq(j_int(s, "inflight"), 0, "%s: inflight", where);
}

static void check_fn(const j_val *fns, const char *name, long invocations, long errors, long rejected)
{
    const j_val *f = j_find(fns, "name", name, NULL, NULL);
    cr_assert_not_null(f, "stats has no function %s", name);
    char where[300];
    snprintf(where, sizeof where, "functions[%s]", name);
    assert_keys(f, FN_KEYS, where);
    cr_assert_eq(j_int(f, "invocations"), invocations, "%s: invocations %lld, expected %ld", where,
                 j_int(f, "invocations"), invocations);
    cr_assert_eq(j_int(f, "errors"), errors, "%s: errors %lld, expected %ld", where, j_int(f, "errors"), errors);
    cr_assert_eq(j_int(f, "rejected"), rejected, "%s: rejected %lld, expected %ld", where, j_int(f, "rejected"), rejected);
    cr_assert_eq(j_int(f, "timeouts"), 0, "%s: timeouts", where);
    cr_assert_eq(j_int(f, "crashed"), 0, "%s: crashed", where);
    cr_assert_eq(j_int(f, "lost"), 0, "%s: lost", where);
    if (invocations > 0) {
        cr_assert_gt(j_num(f, "p50_ms"), 0, "%s: p50_ms is 0 after %ld invocations", where, invocations);
        cr_assert_geq(j_num(f, "p99_ms"), j_num(f, "p50_ms"), "%s: p99_ms < p50_ms", where);
        cr_assert_gt(j_num(f, "gb_seconds"), 0, "%s: gb_seconds is 0 after %ld invocations", where, invocations);
    } else {
        cr_assert_eq(j_num(f, "p50_ms"), 0, "%s: p50_ms without invocations", where);
        cr_assert_eq(j_num(f, "gb_seconds"), 0, "%s: gb_seconds without invocations", where);
    }
    /* exec functions: no runtime processes, every recycle reason listed at 0 */
    cr_assert_str_eq(j_str(f, "kind"), "exec", "%s: kind", where);
    cr_assert_eq(j_int(f, "cold_starts"), 0, "%s: cold_starts", where);
    cr_assert_eq(j_num(f, "init_ms"), 0, "%s: init_ms", where);
    cr_assert_eq(j_int(f, "warm"), 0, "%s: warm", where);
    const j_val *r = j_get(f, "recycles");
    assert_keys(r, RECYCLE_KEYS, where);
    for (size_t i = 0; i < r->n; i++) cr_assert_eq(j_int(r, r->keys[i]), 0, "%s: recycles.%s", where, r->keys[i]);
}

static void check_worker(const j_val *w, pid_t pid, const char *const *fns, size_t nfns, long slots)
{
    assert_keys(w, WORKER_KEYS, "workers[0]");
    cr_assert_eq(j_int(w, "pid"), pid, "workers[0].pid %lld, the worker is %d", j_int(w, "pid"), (int)pid);
    cr_assert(j_str(w, "id")[0], "workers[0].id is empty");
    char host[256];
    gethostname(host, sizeof host);
    cr_assert_str_eq(j_str(w, "host"), host, "workers[0].host");
    cr_assert_eq(j_int(w, "slots"), slots, "workers[0].slots %lld, the worker runs %ld", j_int(w, "slots"), slots);
    cr_assert_eq(j_int(w, "busy"), 0, "workers[0].busy with nothing to do");
    long long seen = j_int(w, "last_seen_ms");
    cr_assert(seen >= 0 && seen < 3000, "workers[0].last_seen_ms %lld with a 0.5 s heartbeat", seen);
    const j_val *f = j_get(w, "functions");
    cr_assert_eq(j_len(f), nfns, "workers[0].functions has %zu entries, expected %zu", j_len(f), nfns);
    for (size_t i = 0; i < nfns; i++) {
        bool found = false;
        for (size_t k = 0; k < f->n; k++) found = found || (f->items[k]->t == J_STR && strcmp(f->items[k]->s, fns[i]) == 0);
        cr_assert(found, "workers[0].functions lacks %s", fns[i]);
    }
}

Test(heraldctl, stats_json_has_exactly_the_documented_keys_and_the_counts_of_a_known_workload)
{
    char body[4096];
    snprintf(body, sizeof body,
             "functions = (\n"
             " { name = \"ok\"; exec = [\"tests/handlers/ctl_fixable.sh\"]; env = { RECORD_FILE = \"%s\"; }; },\n"
             " { name = \"bad\"; exec = [\"tests/handlers/fail.sh\", \"1\"]; max_attempts = 2;\n"
             "   backoff = { initial = 0.05; jitter = \"none\"; }; },\n"
             " { name = \"rej\"; exec = [\"tests/handlers/fail.sh\", \"65\"]; max_attempts = 3; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"ok\"; }, { function = \"bad\"; } ); },\n"
             "  { name = \"r\"; subscriptions = ( { function = \"rej\"; } ); },\n"
             "  { name = \"idle\"; subscriptions = ( { function = \"ok\"; } ); } );\n",
             h_path(&env, "ok.txt"));
    h_config(&env, "os", body);
    h_broker(&env);
    pid_t worker = h_worker(&env, NULL, 3);
    wait_workers(1);

    /* 4 events on t: ok succeeds 4 times, bad fails 2 × 4 times → 4 dead;
     * 3 events on r: rej rejects each at once → 3 dead */
    publish_n("t", "t", 4, NULL);
    publish_n("r", "r", 3, NULL);
    h_wait_sub(&env, "t", "ok", "succeeded", 4, 20000);
    h_wait_sub(&env, "t", "bad", "dead", 4, 20000);
    h_wait_sub(&env, "r", "rej", "dead", 3, 20000);

    j_val *st = CTL_JSON("stats", "--json");
    assert_keys(st, "topics:a,subscriptions:a,functions:a,workers:a,refused:o", "stats");

    const j_val *topics = j_get(st, "topics");
    cr_assert_eq(j_len(topics), 3, "stats lists %zu topics, the config has 3", j_len(topics));
    for (size_t i = 0; i < topics->n; i++) assert_keys(topics->items[i], TOPIC_KEYS, "topics[]");
    cr_assert_eq(j_int(j_find(topics, "name", "t", NULL, NULL), "published"), 4);
    cr_assert_eq(j_int(j_find(topics, "name", "r", NULL, NULL), "published"), 3);
    cr_assert_eq(j_int(j_find(topics, "name", "idle", NULL, NULL), "published"), 0);

    const j_val *subs = j_get(st, "subscriptions");
    cr_assert_eq(j_len(subs), 4, "stats lists %zu subscriptions, the config has 4 (and no async invoke ran)",
                 j_len(subs));
    check_sub(subs, "t", "ok", 4, 0, 0);
    check_sub(subs, "t", "bad", 0, 8, 4);
    check_sub(subs, "r", "rej", 0, 3, 3);
    check_sub(subs, "idle", "ok", 0, 0, 0);

    const j_val *fns = j_get(st, "functions");
    cr_assert_eq(j_len(fns), 3, "stats lists %zu functions, the config has 3", j_len(fns));
    check_fn(fns, "ok", 4, 0, 0);
    check_fn(fns, "bad", 8, 8, 0);
    check_fn(fns, "rej", 3, 0, 3);

    const j_val *ws = j_get(st, "workers");
    cr_assert_eq(j_len(ws), 1, "stats lists %zu workers, 1 is connected", j_len(ws));
    const char *const all[] = { "ok", "bad", "rej" };
    check_worker(j_at(ws, 0), worker, all, 3, 3);

    const j_val *refused = j_get(st, "refused");
    assert_keys(refused, "publish:i,worker:i,admin:i", "refused");
    cr_assert_eq(j_int(refused, "publish"), 0);
    cr_assert_eq(j_int(refused, "worker"), 0);
    cr_assert_eq(j_int(refused, "admin"), 0);

    /* -c CONFIG finds the same broker */
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "-c", env.cfg, "stats", "--json", NULL);
    j_val *st2 = json_of(rc, out, err, "-c CONFIG stats --json");
    assert_keys(st2, "topics:a,subscriptions:a,functions:a,workers:a,refused:o", "stats (-c CONFIG)");
    cr_assert_eq(j_int(j_find(j_get(st2, "topics"), "name", "t", NULL, NULL), "published"), 4);

    /* the dead letters stats counts are the ones dlq list shows */
    cr_assert_eq(j_len(dlq_list_fn("bad")), 4);
    cr_assert_eq(j_len(dlq_list_fn("rej")), 3);
    cr_assert_eq(h_count_lines(h_path(&env, "ok.txt")), 4);
}

/* --- runtime stats: STATS from a worker of our own ------------------------------- */

/* A worker written with proto's encoders on a DEALER (with the suite's CURVE
 * keys when it runs with them), so a test can send what herald-worker would. */
typedef struct { void *ctx, *sock; } raw_worker;

static void raw_open(raw_worker *r, const char *id)
{
    r->ctx = zmq_ctx_new();
    r->sock = zmq_socket(r->ctx, ZMQ_DEALER);
    cr_assert_not_null(r->sock);
    int zero = 0, tmo = 5000;
    zmq_setsockopt(r->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(r->sock, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
    zmq_setsockopt(r->sock, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    zmq_setsockopt(r->sock, ZMQ_ROUTING_ID, id, strlen(id));
    const char *key = NULL, *broker_key = NULL;
    char why[512];
    cr_assert_eq(keys_pick(&key, &broker_key, why, sizeof why), 0, "%s", why);
    cr_assert_eq(keys_client(r->sock, key, broker_key, why, sizeof why), 0, "%s", why);
    cr_assert_eq(zmq_connect(r->sock, env.wrk), 0, "connect %s: %s", env.wrk, zmq_strerror(zmq_errno()));
}

static void raw_close(raw_worker *r)
{
    zmq_close(r->sock);
    zmq_ctx_term(r->ctx);
}

/* Sends the header in sb (then empties it). */
static void raw_send(raw_worker *r, msgpack_sbuffer *sb)
{
    cr_assert_eq(frames_send(r->sock, NULL, 0, sb, NULL, 0, 0), 0, "send: %s", zmq_strerror(zmq_errno()));
    msgpack_sbuffer_clear(sb);
}

/* The next message other than a HEARTBEAT, decoded into *m (the caller
 * clears it); fails the test when none comes within 5 s. */
static void raw_next(raw_worker *r, proto_msg *m, const char *waiting_for)
{
    for (;;) {
        proto_frames f;
        frames_init(&f);
        int rc = frames_recv(r->sock, &f, 8, 0);
        cr_assert_eq(rc, 0, "no %s from the broker within 5 s: %s", waiting_for, zmq_strerror(zmq_errno()));
        char err[256];
        cr_assert_eq(proto_decode(frames_data(&f, 0), frames_size(&f, 0), m, err, sizeof err), 0, "%s", err);
        frames_close(&f);
        free(f.parts);
        if (m->type != MSG_HEARTBEAT) return;
        proto_msg_clear(m);
    }
}

static const proto_fndef *fndef(const proto_config *c, const char *name)
{
    for (uint32_t i = 0; i < c->nfns; i++)
        if (strcmp(c->fns[i].name, name) == 0) return &c->fns[i];
    cr_assert_fail("CONFIG has no function %s", name);
    return NULL;
}

static bool cold_starts_are(void *arg)
{
    return h_fn_stat(&env, "warm", "cold_starts") == *(long *)arg;
}

Test(heraldctl, stats_adds_up_the_runtime_counters_that_workers_send_in_STATS)
{
    char text[2048];   /* heartbeats of 10 s: the raw workers need not send any */
    snprintf(text, sizeof text,
             "broker = { publish_endpoint = \"%s\"; worker_endpoint = \"%s\"; admin_endpoint = \"%s\";\n"
             "  data_dir = \"%s/data\"; durability = \"os\"; heartbeat = 10.0; };\n"
             "functions = (\n"
             " { name = \"warm\"; runtime = { command = [\"tests/handlers/env.sh\", \"x\"]; handler = \"app.handler\";\n"
             "     format = \"sns\"; max_invocations = 100; idle_timeout = 2.5; init_timeout = 4; };\n"
             "   timeout = 7; memory_mb = 256; concurrency = 3; },\n"
             " { name = \"plain\"; exec = [\"tests/handlers/env.sh\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"warm\"; } ); } );\n%s",
             env.pub, env.wrk, env.adm, env.dir,
             env.curve ? "security = { curve = true; secret_key = \"keys/broker.key\"; publishers = \"keys/publishers\";\n"
                         "  workers = \"keys/workers\"; admins = \"keys/admins\"; };\n" : "");
    h_write(env.cfg, text);
    h_broker(&env);
    raw_worker w, stranger;
    raw_open(&w, "rawstats");
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    proto_register reg = { .worker_id = "rawstats", .host = "h", .pid = 1, .slots = 2 };
    cr_assert_eq(proto_encode_register(&sb, &reg), 0);
    raw_send(&w, &sb);

    /* CONFIG carries the runtime's settings; the exec function has none */
    proto_msg m;
    raw_next(&w, &m, "CONFIG");
    cr_assert_eq(m.type, MSG_CONFIG, "got %s", proto_type_name(m.type));
    const proto_fndef *d = fndef(&m.u.config, "warm");
    cr_assert(d->runtime);
    cr_assert_not(d->native);
    cr_assert_eq(d->nexec, 2);
    cr_assert_str_eq(d->exec[0], "tests/handlers/env.sh");
    cr_assert_null(d->library);
    cr_assert_eq(d->timeout_ms, 7000);
    cr_assert_eq(d->memory_mb, 256);
    cr_assert_str_eq(d->rt.handler, "app.handler");
    cr_assert_eq(d->rt.format, PROTO_RT_SNS);
    cr_assert_eq(d->rt.max_invocations, 100);
    cr_assert_eq(d->rt.idle_timeout_ms, 2500);
    cr_assert_eq(d->rt.init_timeout_ms, 4000);
    cr_assert_eq(d->rt.concurrency, 3);
    d = fndef(&m.u.config, "plain");
    cr_assert_not(d->runtime);
    cr_assert_not(d->native);
    cr_assert_null(d->rt.handler);
    proto_msg_clear(&m);
    proto_refused none = { 0 };
    cr_assert_eq(proto_encode_refused(&sb, &none), 0);
    raw_send(&w, &sb);

    /* two STATS of deltas; an unknown function in one is skipped */
    proto_stats_entry e1[2] = { { .function = "warm", .cold_starts = 2, .init_us = 800000, .warm = 5 },
                                { .function = "nope", .cold_starts = 7, .warm = 7 } };
    e1[0].recycles[PROTO_RECYCLE_IDLE] = 1;
    proto_stats s1 = { e1, 2 };
    cr_assert_eq(proto_encode_stats(&sb, &s1), 0);
    raw_send(&w, &sb);
    proto_stats_entry e2 = { .function = "warm", .cold_starts = 1, .init_us = 200000, .warm = 4 };
    e2.recycles[PROTO_RECYCLE_IDLE] = 1;
    e2.recycles[PROTO_RECYCLE_CRASH] = 2;
    e2.recycles[PROTO_RECYCLE_INIT_ERROR] = 1;
    proto_stats s2 = { &e2, 1 };
    cr_assert_eq(proto_encode_stats(&sb, &s2), 0);
    raw_send(&w, &sb);

    /* a malformed STATS is refused with ERROR 1 and counts nothing */
    static const unsigned char bad[] = { 0x93, 0x01, 0xa5, 'S', 'T', 'A', 'T', 'S', 0x91, 0x95, 0xa4, 'w', 'a', 'r',
                                         'm', 0x05, 0x05, 0x05, 0x81, 0xa3, 'o', 'o', 'm', 0x01 };
    cr_assert_eq(zmq_send(w.sock, bad, sizeof bad, 0), (int)sizeof bad);
    raw_next(&w, &m, "ERROR");
    cr_assert(m.type == MSG_ERROR && m.u.error.status == PROTO_E_MALFORMED, "got %s", proto_type_name(m.type));
    cr_assert(strstr(m.u.error.text, "STATS entry 0: recycles reason 0: unknown reason \"oom\""), "%s", m.u.error.text);
    proto_msg_clear(&m);

    /* a STATS from a worker the broker does not know is dropped unanswered:
     * the first answer on that connection is the one to its HEARTBEAT */
    raw_open(&stranger, "stranger");
    proto_stats_entry e3 = { .function = "warm", .cold_starts = 100 };
    proto_stats s3 = { &e3, 1 };
    cr_assert_eq(proto_encode_stats(&sb, &s3), 0);
    raw_send(&stranger, &sb);
    cr_assert_eq(proto_encode_heartbeat(&sb), 0);
    raw_send(&stranger, &sb);
    proto_frames f;
    frames_init(&f);
    cr_assert_eq(frames_recv(stranger.sock, &f, 8, 0), 0, "no answer to the stranger's HEARTBEAT");
    char err[256];
    cr_assert_eq(proto_decode(frames_data(&f, 0), frames_size(&f, 0), &m, err, sizeof err), 0, "%s", err);
    cr_assert(m.type == MSG_ERROR && m.u.error.status == PROTO_E_CONFLICT, "the stranger got %s %s",
              proto_type_name(m.type), m.type == MSG_ERROR ? m.u.error.text : "");
    proto_msg_clear(&m);
    frames_close(&f);
    free(f.parts);

    long want = 3;
    cr_assert(h_wait(cold_starts_are, &want, 15000), "cold_starts never reached 3: %s", h_stats(&env));
    j_val *st = CTL_JSON("stats", "--json");
    const j_val *fns = j_get(st, "functions");
    const j_val *fn = j_find(fns, "name", "warm", NULL, NULL);
    cr_assert_not_null(fn);
    assert_keys(fn, FN_KEYS, "functions[warm]");
    cr_assert_str_eq(j_str(fn, "kind"), "runtime");
    cr_assert_eq(j_int(fn, "cold_starts"), 3);
    cr_assert(j_num(fn, "init_ms") > 333.3 && j_num(fn, "init_ms") < 333.4, "init_ms %g, the mean of 1 s over 3",
              j_num(fn, "init_ms"));
    cr_assert_eq(j_int(fn, "warm"), 9);
    const j_val *r = j_get(fn, "recycles");
    assert_keys(r, RECYCLE_KEYS, "functions[warm].recycles");
    static const struct { const char *reason; long n; } rs[] = {
        { "max_invocations", 0 }, { "idle", 2 }, { "memory", 0 }, { "timeout", 0 },
        { "crash", 2 }, { "init_error", 1 }, { "redefined", 0 }, { "shutdown", 0 },
    };
    for (size_t i = 0; i < sizeof rs / sizeof *rs; i++)
        cr_assert_eq(j_int(r, rs[i].reason), rs[i].n, "recycles.%s %lld, expected %ld", rs[i].reason,
                     j_int(r, rs[i].reason), rs[i].n);
    check_fn(fns, "plain", 0, 0, 0);

    /* the tables: the kind in FUNCTIONS, RUNTIMES only for what started processes */
    char *out = NULL, *e = NULL;
    cr_assert_eq(CTL(&out, &e, "stats"), 0, "%s", e);
    const char *rt = strstr(out, "\nRUNTIMES\n");
    cr_assert_not_null(rt, "%s", out);
    cr_assert(strstr(out, "runtime") && strstr(out, "exec"), "no kind column: %s", out);
    const char *wk = strstr(rt, "\nWORKERS");
    cr_assert_not_null(wk, "%s", out);
    char section[2048];
    snprintf(section, sizeof section, "%.*s", (int)(wk - rt), rt);
    cr_assert(strstr(section, "name  cold_starts  init_ms  warm  recycles"), "%s", section);
    cr_assert(strstr(section, "warm            3  333.333     9  idle=2 crash=2 init_error=1"), "%s", section);
    cr_assert_null(strstr(section, "plain"), "an exec function in RUNTIMES: %s", section);
    free(out);
    free(e);

    msgpack_sbuffer_destroy(&sb);
    raw_close(&stranger);
    raw_close(&w);
}

Test(heraldctl, workers_json_is_the_array_of_connected_workers_with_exactly_the_documented_keys)
{
    h_config(&env, "os",
             "functions = ( { name = \"a\"; exec = [\"tests/handlers/ctl_echo.sh\"]; },\n"
             "  { name = \"b\"; exec = [\"tests/handlers/ctl_echo.sh\"]; },\n"
             "  { name = \"c\"; exec = [\"tests/handlers/ctl_echo.sh\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"a\"; } ); } );\n");
    h_broker(&env);
    j_val *none = CTL_JSON("workers", "--json");
    cr_assert(none->t == J_ARR && none->n == 0, "workers --json with no worker connected is not []");

    pid_t w1 = h_worker(&env, "a,c", 3);
    pid_t w2 = h_worker(&env, NULL, 2);
    wait_workers(2);
    j_val *ws = CTL_JSON("workers", "--json");
    cr_assert_eq(j_len(ws), 2);
    const j_val *first = j_at(ws, 0), *second = j_at(ws, 1);
    if (j_int(first, "pid") != w1) { const j_val *t = first; first = second; second = t; }
    const char *const ac[] = { "a", "c" }, *const abc[] = { "a", "b", "c" };
    check_worker(first, w1, ac, 2, 3);
    check_worker(second, w2, abc, 3, 2);
    cr_assert_str_neq(j_str(first, "id"), j_str(second, "id"), "two workers with the same id");

    /* the same rows as stats' workers[] */
    j_val *st = CTL_JSON("stats", "--json");
    cr_assert_eq(j_len(j_get(st, "workers")), 2);

    /* a worker that stops is no longer listed */
    cr_assert_eq(h_signal_exit(&env, w1, SIGTERM, 10000), 0, "worker did not stop cleanly");
    wait_workers(1);
    ws = CTL_JSON("workers", "--json");
    cr_assert_eq(j_int(j_at(ws, 0), "pid"), w2);
}

/* --- 2. dlq list ----------------------------------------------------------------- */

Test(heraldctl, dlq_list_filters_by_function_topic_and_limit_newest_first)
{
    h_config(&env, "os",
             "functions = ( { name = \"a\"; exec = [\"tests/handlers/fail.sh\", \"65\"]; },\n"
             "  { name = \"b\"; exec = [\"tests/handlers/fail.sh\", \"65\"]; },\n"
             "  { name = \"c\"; exec = [\"tests/handlers/fail.sh\", \"65\"]; } );\n"
             "topics = ( { name = \"t1\"; subscriptions = ( { function = \"a\"; }, { function = \"b\"; } ); },\n"
             "  { name = \"t2\"; subscriptions = ( { function = \"a\"; } ); },\n"
             "  { name = \"t3\"; subscriptions = ( { function = \"c\"; } ); } );\n");
    h_broker(&env);
    h_worker(&env, NULL, 4);
    char *t1[3], *t2[2];
    publish_n("t1", "one", 3, t1);
    h_wait_sub(&env, "t1", "a", "dead", 3, 20000);
    h_wait_sub(&env, "t1", "b", "dead", 3, 20000);
    publish_n("t2", "two", 2, t2);
    h_wait_sub(&env, "t2", "a", "dead", 2, 20000);
    publish_n("t3", "three", 101, NULL);
    h_wait_sub(&env, "t3", "c", "dead", 101, 30000);
    const int total = 3 + 3 + 2 + 101;

    /* everything: newest first, every object with exactly the list keys */
    j_val *all = CTL_JSON("dlq", "list", "--json", "--limit", "0");
    cr_assert_eq(j_len(all), (size_t)total, "dlq list --limit 0: %zu dead letters, expected %d", j_len(all), total);
    for (size_t i = 0; i < all->n; i++) {
        const j_val *d = all->items[i];
        assert_keys(d, LIST_KEYS, "dlq list[]");
        cr_assert(rfc3339_utc(j_str(d, "failed_at")), "failed_at '%s' is not RFC 3339 UTC", j_str(d, "failed_at"));
        cr_assert_str_eq(j_str(d, "outcome"), "rejected");
        cr_assert_eq(j_int(d, "attempts"), 1);
        cr_assert(strstr(j_str(d, "error"), "failing with 65"), "error: %s", j_str(d, "error"));
        /* payloads "one-N", "two-N" (5 bytes), "three-N" (7 to 9 bytes) */
        long long pb = j_int(d, "payload_bytes");
        if (strcmp(j_str(d, "topic"), "t3") == 0) cr_assert(pb >= 7 && pb <= 9, "payload_bytes %lld", pb);
        else cr_assert_eq(pb, 5, "payload_bytes %lld of a 5-byte payload", pb);
        if (i == 0) continue;
        const j_val *prev = all->items[i - 1];
        cr_assert_gt(j_int(prev, "id"), j_int(d, "id"), "dlq list is not newest first: id %lld before %lld",
                     j_int(prev, "id"), j_int(d, "id"));
        cr_assert_geq(strcmp(j_str(prev, "failed_at"), j_str(d, "failed_at")), 0,
                      "dlq list is not newest first: failed_at %s before %s", j_str(prev, "failed_at"),
                      j_str(d, "failed_at"));
    }

    /* the default limit is 100: the 100 newest */
    j_val *dflt = CTL_JSON("dlq", "list", "--json");
    cr_assert_eq(j_len(dflt), 100, "dlq list without --limit: %zu, expected the default 100", j_len(dflt));
    for (size_t i = 0; i < 100; i++) cr_assert_eq(j_int(dflt->items[i], "id"), j_int(all->items[i], "id"));

    /* --limit N: the N newest */
    j_val *three = CTL_JSON("dlq", "list", "--json", "--limit", "3");
    cr_assert_eq(j_len(three), 3);
    for (size_t i = 0; i < 3; i++) cr_assert_eq(j_int(three->items[i], "id"), j_int(all->items[i], "id"));

    /* --function */
    j_val *fa = CTL_JSON("dlq", "list", "--json", "--function", "a");
    cr_assert_eq(j_len(fa), 5, "--function a: %zu, expected 5 (3 of t1, 2 of t2)", j_len(fa));
    for (size_t i = 0; i < fa->n; i++) cr_assert_str_eq(j_str(fa->items[i], "function"), "a");
    for (int i = 0; i < 3; i++) cr_assert(contains_mid(fa, t1[i]), "--function a lacks t1 event %s", t1[i]);
    for (int i = 0; i < 2; i++) cr_assert(contains_mid(fa, t2[i]), "--function a lacks t2 event %s", t2[i]);
    j_val *fc = CTL_JSON("dlq", "list", "--json", "--function", "c");
    cr_assert_eq(j_len(fc), 100, "--function c: the default limit applies to a filtered list too");
    fc = CTL_JSON("dlq", "list", "--json", "--function", "c", "--limit", "0");
    cr_assert_eq(j_len(fc), 101);

    /* --topic */
    j_val *tt1 = CTL_JSON("dlq", "list", "--json", "--topic", "t1");
    cr_assert_eq(j_len(tt1), 6, "--topic t1: %zu, expected 6 (a and b, 3 each)", j_len(tt1));
    for (size_t i = 0; i < tt1->n; i++) {
        cr_assert_str_eq(j_str(tt1->items[i], "topic"), "t1");
        if (i) cr_assert_gt(j_int(tt1->items[i - 1], "id"), j_int(tt1->items[i], "id"), "--topic: not newest first");
    }
    for (int i = 0; i < 3; i++) {
        cr_assert(j_find(tt1, "message_id", t1[i], "function", "a"), "--topic t1 lacks a's copy of %s", t1[i]);
        cr_assert(j_find(tt1, "message_id", t1[i], "function", "b"), "--topic t1 lacks b's copy of %s", t1[i]);
    }

    /* both, and with a limit */
    j_val *a2 = CTL_JSON("dlq", "list", "--json", "--function", "a", "--topic", "t2");
    cr_assert_eq(j_len(a2), 2);
    for (int i = 0; i < 2; i++) cr_assert(contains_mid(a2, t2[i]));
    j_val *a2l = CTL_JSON("dlq", "list", "--json", "--topic", "t1", "--function", "b", "--limit", "2");
    cr_assert_eq(j_len(a2l), 2);
    j_val *b1 = CTL_JSON("dlq", "list", "--json", "--topic", "t1", "--function", "b");
    cr_assert_eq(j_int(a2l->items[0], "id"), j_int(b1->items[0], "id"));
    cr_assert_eq(j_int(a2l->items[1], "id"), j_int(b1->items[1], "id"));

    /* nothing matches: an empty array, exit 0 */
    j_val *none = CTL_JSON("dlq", "list", "--json", "--function", "b", "--topic", "t2");
    cr_assert_eq(j_len(none), 0);

    /* the table: a header and one row per dead letter */
    char *out = NULL;
    cr_assert_eq(CTL(&out, NULL, "dlq", "list", "--limit", "3"), 0);
    cr_assert_eq(strncmp(out, "id", 2), 0, "the table has no header: %s", out);
    size_t rows = 0;
    for (char *p = out; *p; p++) rows += *p == '\n';
    cr_assert_eq(rows, 4, "dlq list --limit 3 printed %zu lines: %s", rows, out);
    free(out);
}

/* --- 3. dlq show ----------------------------------------------------------------- */

static unsigned char *b64_decode(const char *s, size_t *len)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(s);
    cr_assert_eq(n % 4, 0, "base64 of length %zu", n);
    unsigned char *o = malloc(n / 4 * 3 + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i += 4) {
        unsigned v = 0;
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            char c = s[i + j];
            const char *q = c == '=' ? NULL : strchr(t, c);
            cr_assert(c == '=' || (q && c), "'%c' is not base64", c);
            if (c == '=') pad++;
            v = v << 6 | (q ? (unsigned)(q - t) : 0);
        }
        o[k++] = (unsigned char)(v >> 16);
        if (pad < 2) o[k++] = (unsigned char)(v >> 8);
        if (pad < 1) o[k++] = (unsigned char)v;
    }
    *len = k;
    return o;
}

static const char *const SHOW_KEYS =
    "id:i,message_id:s,topic:s,function:s,attempts:i,outcome:s,error:s,failed_at:s,payload_bytes:i,"
    "attributes:o,payload:s,payload_encoding:s,history:a";
static const char *const HISTORY_KEYS = "attempt:i,outcome:s,worker:s,started_at:z,duration_ms:i,error:s";

static j_val *dlq_show_id(long long id)
{
    char ids[32];
    snprintf(ids, sizeof ids, "%lld", id);
    return CTL_JSON("dlq", "show", ids, "--json");
}

Test(heraldctl, dlq_show_prints_a_binary_payload_as_base64_and_a_text_payload_as_utf8)
{
    h_config(&env, "os",
             "functions = ( { name = \"f\"; exec = [\"tests/handlers/fail.sh\", \"1\"]; max_attempts = 2;\n"
             "   backoff = { initial = 0.05; jitter = \"none\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"f\"; } ); } );\n");
    h_broker(&env);
    h_worker(&env, NULL, 2);

    /* binary: every byte value, NUL and invalid UTF-8 included, 301 bytes (a
     * length that needs base64 padding) */
    unsigned char bin[301];
    for (size_t i = 0; i < sizeof bin; i++) bin[i] = (unsigned char)(255 - i * 7);
    bin[0] = 0;
    bin[1] = 0xff;
    write_bytes(h_path(&env, "bin.in"), bin, sizeof bin);
    char *bin_id = publish("t", "-", h_path(&env, "bin.in"), "kind=binary");
    /* text: UTF-8 with quotes, a tab, newlines and non-ASCII */
    const char *text = "h\xc3\xa9llo \"w\xc3\xb6rld\"\n\tline 2 \xe2\x9c\x93 \xf0\x9f\x98\x80\n";
    write_bytes(h_path(&env, "text.in"), text, strlen(text));
    char *text_id = publish("t", "-", h_path(&env, "text.in"), NULL);
    h_wait_sub(&env, "t", "f", "dead", 2, 20000);

    j_val *list = dlq_list_fn("f");
    cr_assert_eq(j_len(list), 2);
    const j_val *lb = j_find(list, "message_id", bin_id, NULL, NULL), *lt = j_find(list, "message_id", text_id, NULL, NULL);
    cr_assert(lb && lt, "dlq list lacks the published events");
    cr_assert_eq(j_int(lb, "payload_bytes"), (long long)sizeof bin);
    cr_assert_eq(j_int(lt, "payload_bytes"), (long long)strlen(text));

    /* binary → base64 of exactly those bytes */
    j_val *sb = dlq_show_id(j_int(lb, "id"));
    assert_keys(sb, SHOW_KEYS, "dlq show (binary)");
    cr_assert_str_eq(j_str(sb, "payload_encoding"), "base64");
    size_t n;
    unsigned char *dec = b64_decode(j_str(sb, "payload"), &n);
    cr_assert_eq(n, sizeof bin, "the base64 payload decodes to %zu bytes, %zu were published", n, sizeof bin);
    cr_assert_eq(memcmp(dec, bin, n), 0, "the base64 payload decodes to other bytes than were published");
    free(dec);
    cr_assert_eq(j_int(sb, "payload_bytes"), (long long)sizeof bin);
    cr_assert_str_eq(j_str(sb, "message_id"), bin_id);
    cr_assert_str_eq(j_str(sb, "topic"), "t");
    cr_assert_str_eq(j_str(sb, "function"), "f");
    cr_assert_eq(j_int(sb, "attempts"), 2);
    cr_assert_str_eq(j_str(sb, "outcome"), "error");
    const j_val *attrs = j_get(sb, "attributes");
    assert_keys(attrs, "kind:s", "attributes");
    cr_assert_str_eq(j_str(attrs, "kind"), "binary");
    const j_val *hist = j_get(sb, "history");
    cr_assert_eq(j_len(hist), 2, "history of 2 failed attempts has %zu entries", j_len(hist));
    for (size_t i = 0; i < 2; i++) {
        const j_val *h = hist->items[i];
        assert_keys(h, HISTORY_KEYS, "history[]");
        cr_assert_eq(j_int(h, "attempt"), (long long)i + 1);
        cr_assert_str_eq(j_str(h, "outcome"), "error");
        cr_assert(strstr(j_str(h, "error"), "failing with 1"), "history error: %s", j_str(h, "error"));
        cr_assert(j_str(h, "worker")[0], "history entry without its worker");
        cr_assert(rfc3339_utc(j_str(h, "started_at")), "started_at '%s'", j_str(h, "started_at"));
        cr_assert_geq(j_int(h, "duration_ms"), 0);
    }
    /* the list keys of show are the list's values */
    cr_assert_eq(j_int(sb, "id"), j_int(lb, "id"));
    cr_assert_str_eq(j_str(sb, "failed_at"), j_str(lb, "failed_at"));
    cr_assert_str_eq(j_str(sb, "error"), j_str(lb, "error"));

    /* text → the text itself */
    j_val *st = dlq_show_id(j_int(lt, "id"));
    assert_keys(st, SHOW_KEYS, "dlq show (text)");
    cr_assert_str_eq(j_str(st, "payload_encoding"), "utf-8");
    const j_val *p = j_get(st, "payload");
    cr_assert_eq(p->slen, strlen(text), "the text payload is %zu bytes, %zu were published", p->slen, strlen(text));
    cr_assert_eq(memcmp(p->s, text, p->slen), 0, "the text payload differs: %s", p->s);
    assert_keys(j_get(st, "attributes"), "", "attributes (none)");

    /* the human form says the encoding too, and prints the text */
    char ids[32], *out = NULL;
    snprintf(ids, sizeof ids, "%lld", j_int(lt, "id"));
    cr_assert_eq(CTL(&out, NULL, "dlq", "show", ids), 0);
    cr_assert(strstr(out, "utf-8") && strstr(out, "w\xc3\xb6rld"), "dlq show (text form): %s", out);
    free(out);
    free(bin_id);
    free(text_id);
}

/* --- 4. replay ------------------------------------------------------------------- */

/* topic t → fix (fails until DIR/fixed exists) and rec (records, succeeds);
 * extra: more functions and subscriptions. */
static pid_t config_fix_rec(const char *extra_fns, const char *extra_subs, int worker_slots)
{
    char body[4096];
    char *fix = fixable_fn("fix", 1, "fix.txt", "fixed"), *rec = fixable_fn("rec", 1, "rec.txt", NULL);
    snprintf(body, sizeof body,
             "functions = ( %s,\n %s%s );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"fix\"; }, { function = \"rec\"; }%s ); } );\n",
             fix, rec, extra_fns ? extra_fns : "", extra_subs ? extra_subs : "");
    free(fix);
    free(rec);
    h_config(&env, "os", body);
    pid_t broker = h_broker(&env);
    h_worker(&env, NULL, worker_slots);
    return broker;
}

Test(heraldctl, dlq_replay_of_one_id_runs_it_again_only_on_its_own_subscription_and_it_succeeds)
{
    config_fix_rec(NULL, NULL, 4);
    char *ids[3];
    publish_n("t", "ev", 3, ids);
    h_wait_sub(&env, "t", "fix", "dead", 3, 20000);
    h_wait_sub(&env, "t", "rec", "succeeded", 3, 20000);
    h_wait_lines(h_path(&env, "rec.txt"), 3, 10000);
    j_val *list = dlq_list_fn("fix");
    cr_assert_eq(j_len(list), 3);
    const j_val *victim = j_find(list, "message_id", ids[1], NULL, NULL);
    cr_assert_not_null(victim);
    long long vid = j_int(victim, "id");

    h_write(h_path(&env, "fixed"), "");   /* the fix is deployed */
    char arg[32], *out = NULL, *err = NULL;
    snprintf(arg, sizeof arg, "%lld", vid);
    int rc = CTL(&out, &err, "dlq", "replay", arg);
    cr_assert_eq(rc, 0, "dlq replay %s: exit %d: %s", arg, rc, err);
    cr_assert_str_eq(out, "replayed 1\n");
    free(out);
    free(err);

    h_wait_sub(&env, "t", "fix", "succeeded", 1, 20000);
    h_assert_sub(&env, "t", "fix", "dead", 2);
    h_assert_sub(&env, "t", "fix", "failed", 3);
    assert_sub_idle("t", "fix");
    /* the topic's other subscription did not get it again */
    h_assert_sub(&env, "t", "rec", "succeeded", 3);
    assert_sub_idle("t", "rec");
    cr_assert_eq(h_count_lines(h_path(&env, "rec.txt")), 3, "rec ran again after a replay of fix's dead letter");

    /* it ran once more on fix, as attempt 1 (attempts reset), same message id */
    rec_line r[8];
    int n = read_records(h_path(&env, "fix.txt"), r, 8);
    cr_assert_eq(n, 4, "fix ran %d times, expected 3 + the replay", n);
    cr_assert_str_eq(r[3].mid, ids[1], "the replay ran %s, not %s", r[3].mid, ids[1]);
    cr_assert_str_eq(r[3].topic, "t");
    cr_assert_eq(r[3].attempt, 1, "the replay ran as attempt %d", r[3].attempt);
    cr_assert_str_eq(r[3].payload, "ev-1");

    j_val *after = dlq_list_fn("fix");
    cr_assert_eq(j_len(after), 2);
    cr_assert(!contains_id(after, vid), "the replayed dead letter is still listed");
    cr_assert(contains_mid(after, ids[0]) && contains_mid(after, ids[2]));
}

Test(heraldctl, dlq_replay_all_function_replays_that_functions_dead_letters_only_on_their_own_subscription)
{
    config_fix_rec(",\n { name = \"other\"; exec = [\"tests/handlers/fail.sh\", \"65\"]; }",
                   ", { function = \"other\"; }", 4);
    char *ids[3];
    publish_n("t", "ev", 3, ids);
    h_wait_sub(&env, "t", "fix", "dead", 3, 20000);
    h_wait_sub(&env, "t", "other", "dead", 3, 20000);
    h_wait_sub(&env, "t", "rec", "succeeded", 3, 20000);
    h_wait_lines(h_path(&env, "rec.txt"), 3, 10000);

    h_write(h_path(&env, "fixed"), "");
    j_val *r = CTL_JSON("dlq", "replay", "--all", "--function", "fix", "--json");
    assert_keys(r, "count:i", "dlq replay --json");
    cr_assert_eq(j_int(r, "count"), 3);

    h_wait_sub(&env, "t", "fix", "succeeded", 3, 20000);
    h_assert_sub(&env, "t", "fix", "dead", 0);
    assert_sub_idle("t", "fix");
    /* not the function's neighbours on the topic */
    h_assert_sub(&env, "t", "other", "dead", 3);
    h_assert_sub(&env, "t", "other", "failed", 3);
    h_assert_sub(&env, "t", "other", "succeeded", 0);
    assert_sub_idle("t", "other");
    h_assert_sub(&env, "t", "rec", "succeeded", 3);
    assert_sub_idle("t", "rec");
    cr_assert_eq(h_count_lines(h_path(&env, "rec.txt")), 3, "rec ran again after a replay of fix's dead letters");
    cr_assert_eq(j_len(dlq_list_fn("fix")), 0);
    cr_assert_eq(j_len(dlq_list_fn("other")), 3);

    rec_line rl[16];
    int n = read_records(h_path(&env, "fix.txt"), rl, 16);
    cr_assert_eq(n, 6, "fix ran %d times, expected 3 + 3 replays", n);
    for (int i = 0; i < 3; i++) {
        bool found = false;
        for (int k = 3; k < 6; k++) found = found || (strcmp(rl[k].mid, ids[i]) == 0 && rl[k].attempt == 1);
        cr_assert(found, "event %s was not replayed as attempt 1 on fix", ids[i]);
    }
}

Test(heraldctl, dlq_replay_dry_run_prints_the_count_and_changes_nothing)
{
    config_fix_rec(NULL, NULL, 4);
    publish_n("t", "ev", 3, NULL);
    h_wait_sub(&env, "t", "fix", "dead", 3, 20000);
    h_wait_sub(&env, "t", "rec", "succeeded", 3, 20000);
    j_val *before = dlq_list_fn(NULL);
    cr_assert_eq(j_len(before), 3);
    /* were anything replayed, it would now succeed */
    h_write(h_path(&env, "fixed"), "");

    char *out = NULL, *err = NULL;
    int rc = CTL(&out, &err, "dlq", "replay", "--all", "--dry-run");
    cr_assert_eq(rc, 0, "dlq replay --all --dry-run: exit %d: %s", rc, err);
    cr_assert_eq(strncmp(out, "would replay 3", 14), 0, "dlq replay --all --dry-run printed: %s", out);
    cr_assert(out[14] == '\n' || out[14] == ' ', "dlq replay --all --dry-run printed: %s", out);
    free(out);
    free(err);
    j_val *r = CTL_JSON("dlq", "replay", "--all", "--function", "fix", "--dry-run", "--json");
    assert_keys(r, "count:i,dry_run:b", "dlq replay --dry-run --json");
    cr_assert_eq(j_int(r, "count"), 3);
    char arg[32];
    snprintf(arg, sizeof arg, "%lld", j_int(j_at(before, 0), "id"));
    r = CTL_JSON("dlq", "replay", arg, "--dry-run", "--json");
    cr_assert_eq(j_int(r, "count"), 1);

    /* nothing changed: the counters at once (a replay moves them in the same
     * turn), the dead letters, and no handler ran */
    h_assert_sub(&env, "t", "fix", "dead", 3);
    h_assert_sub(&env, "t", "fix", "succeeded", 0);
    assert_sub_idle("t", "fix");
    h_assert_sub(&env, "t", "rec", "succeeded", 3);
    assert_sub_idle("t", "rec");
    j_val *after = dlq_list_fn(NULL);
    cr_assert_eq(j_len(after), 3);
    for (size_t i = 0; i < 3; i++) cr_assert_eq(j_int(after->items[i], "id"), j_int(before->items[i], "id"));
    cr_assert_eq(h_count_lines(h_path(&env, "fix.txt")), 3);
    cr_assert_eq(h_count_lines(h_path(&env, "rec.txt")), 3);
}

Test(heraldctl, dlq_replay_rate_50_spreads_200_replayed_events_over_at_least_3_seconds)
{
    char body[2048];
    char *fix = fixable_fn("fix", 1, "fix.txt", "fixed");
    snprintf(body, sizeof body, "functions = ( %s );\n"
                                "topics = ( { name = \"t\"; subscriptions = ( { function = \"fix\"; } ); } );\n", fix);
    free(fix);
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, 8);
    const int n = 200;
    publish_n("t", "ev", n, NULL);
    h_wait_sub(&env, "t", "fix", "dead", n, 30000);
    h_wait_lines(h_path(&env, "fix.txt"), (size_t)n, 10000);
    /* the replays record into a fresh file */
    cr_assert_eq(rename(h_path(&env, "fix.txt"), h_path(&env, "fix.before.txt")), 0);
    h_write(h_path(&env, "fixed"), "");

    long t0 = mono_ms();
    char *out = NULL, *err = NULL;
    int rc = CTL(&out, &err, "dlq", "replay", "--all", "--rate", "50");
    long took = mono_ms() - t0;
    cr_assert_eq(rc, 0, "dlq replay --all --rate 50: exit %d: %s", rc, err);
    cr_assert_str_eq(out, "replayed 200\n");
    free(out);
    free(err);
    cr_assert_lt(took, 3000, "dlq replay --rate took %ld ms to answer: it should schedule, not wait", took);
    /* at once: none dead, and (at 50/s) most still waiting their turn */
    h_assert_sub(&env, "t", "fix", "dead", 0);
    long delayed = h_sub_stat(&env, "t", "fix", "delayed");
    cr_assert(delayed >= 100 && delayed <= n, "right after the replay %ld of 200 are delayed", delayed);

    h_wait_sub(&env, "t", "fix", "succeeded", n, 30000);
    h_assert_sub(&env, "t", "fix", "dead", 0);
    rec_line *r = calloc((size_t)n + 8, sizeof *r);
    int got = read_records(h_path(&env, "fix.txt"), r, n + 8);
    cr_assert_eq(got, n, "%d replayed runs recorded, expected %d", got, n);
    long long first = r[0].start_ms, last = r[0].start_ms;
    for (int i = 0; i < got; i++) {
        if (r[i].start_ms < first) first = r[i].start_ms;
        if (r[i].start_ms > last) last = r[i].start_ms;
        cr_assert_eq(r[i].attempt, 1);
    }
    /* the i-th becomes visible at now + i/50: 199/50 = 3.98 s between the first and the last */
    cr_log_info("200 replays at --rate 50 started over %lld ms", last - first);
    cr_assert_geq(last - first, 3000, "200 replays at 50/s started within %lld ms (expected ≥ 3 s)", last - first);
    /* … not bunched: at 50/s about 50 start in any one second (a loaded
     * machine may bunch some; half of them at once would be no rate at all) */
    for (int i = 0; i < got; i++) {
        int in_window = 0;
        for (int k = 0; k < got; k++) in_window += r[k].start_ms >= r[i].start_ms && r[k].start_ms < r[i].start_ms + 1000;
        cr_assert_leq(in_window, 100, "%d replays started within 1 s at --rate 50", in_window);
    }
    free(r);
}

/* The broker answers and no longer lists subscription tf[0] → tf[1]. */
static bool sub_gone(void *arg)
{
    const char **tf = arg;
    char *st = h_stats(&env), row[300];
    snprintf(row, sizeof row, "{\"topic\":\"%s\",\"function\":\"%s\"", tf[0], tf[1]);
    bool gone = st && !strstr(st, row);
    free(st);
    return gone;
}

Test(heraldctl, dlq_replay_of_a_dead_letter_whose_subscription_is_gone_keeps_it_and_says_why)
{
    pid_t broker = config_fix_rec(NULL, NULL, 2);
    char *ids[2];
    publish_n("t", "ev", 2, ids);
    h_wait_sub(&env, "t", "fix", "dead", 2, 20000);
    h_wait_sub(&env, "t", "rec", "succeeded", 2, 20000);
    j_val *before = dlq_list_fn("fix");
    cr_assert_eq(j_len(before), 2);

    /* the subscription t → fix goes away (the function stays); its dead
     * letters do not block the reload */
    char body[4096];
    char *fix = fixable_fn("fix", 1, "fix.txt", "fixed"), *rec = fixable_fn("rec", 1, "rec.txt", NULL);
    snprintf(body, sizeof body,
             "functions = ( %s,\n %s );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n", fix, rec);
    free(fix);
    free(rec);
    h_config(&env, "os", body);
    kill(broker, SIGHUP);
    const char *tf[2] = { "t", "fix" };
    cr_assert(h_wait(sub_gone, tf, 10000), "the reload never removed t → fix: %s", h_stats(&env));
    h_write(h_path(&env, "fixed"), "");

    char *out = NULL, *err = NULL;
    int rc = CTL(&out, &err, "dlq", "replay", "--all");
    cr_assert_eq(rc, 1, "replay of dead letters without their subscription: exit %d (stderr: %s)", rc, err);
    cr_assert_str_eq(out, "replayed 0\n");
    cr_assert(strstr(err, "no longer exists") && strstr(err, "fix"), "no reason on stderr: %s", err);
    free(out);
    free(err);
    /* by id: the same */
    char arg[32];
    snprintf(arg, sizeof arg, "%lld", j_int(j_at(before, 0), "id"));
    out = err = NULL;
    rc = CTL(&out, &err, "dlq", "replay", arg);
    cr_assert_eq(rc, 1, "replay %s: exit %d", arg, rc);
    cr_assert(strstr(err, arg) && strstr(err, "no longer exists"), "replay %s: %s", arg, err);
    free(out);
    free(err);

    /* they stay, untouched; nothing ran */
    j_val *after = dlq_list_fn("fix");
    cr_assert_eq(j_len(after), 2, "dead letters of a removed subscription were dropped by a replay");
    for (size_t i = 0; i < 2; i++) cr_assert_eq(j_int(after->items[i], "id"), j_int(before->items[i], "id"));
    cr_assert_eq(h_count_lines(h_path(&env, "fix.txt")), 2);
    h_assert_sub(&env, "t", "rec", "succeeded", 2);
    assert_sub_idle("t", "rec");
}

Test(heraldctl, dlq_show_history_keeps_every_attempt_across_replays)
{
    char body[2048];
    snprintf(body, sizeof body,
             "functions = ( { name = \"fix\"; exec = [\"tests/handlers/ctl_fixable.sh\"]; max_attempts = 2;\n"
             "  backoff = { initial = 0.05; jitter = \"none\"; };\n"
             "  env = { RECORD_FILE = \"%s\"; FIX_FILE = \"%s\"; FAIL_STATUS = \"1\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"fix\"; } ); } );\n",
             h_path(&env, "fix.txt"), h_path(&env, "fixed"));
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, 2);
    char *mid = publish("t", "again", NULL, NULL);
    h_wait_sub(&env, "t", "fix", "dead", 1, 20000);
    j_val *l1 = dlq_list_fn("fix");
    long long id1 = j_int(j_at(l1, 0), "id");
    j_val *s1 = dlq_show_id(id1);
    cr_assert_eq(j_int(s1, "attempts"), 2);
    cr_assert_eq(j_len(j_get(s1, "history")), 2);

    /* replayed without a fix: it fails twice more and is dead again */
    char arg[32];
    snprintf(arg, sizeof arg, "%lld", id1);
    char *out = NULL;
    cr_assert_eq(CTL(&out, NULL, "dlq", "replay", arg), 0);
    free(out);
    h_wait_sub(&env, "t", "fix", "failed", 4, 20000);
    h_wait_sub(&env, "t", "fix", "dead", 1, 20000);
    j_val *l2 = dlq_list_fn("fix");
    cr_assert_eq(j_len(l2), 1);
    const j_val *d2 = j_at(l2, 0);
    cr_assert_str_eq(j_str(d2, "message_id"), mid);
    cr_assert_eq(j_int(d2, "attempts"), 2, "attempts counts since the last replay: %lld", j_int(d2, "attempts"));
    j_val *s2 = dlq_show_id(j_int(d2, "id"));
    assert_keys(s2, SHOW_KEYS, "dlq show");
    cr_assert_eq(j_int(s2, "attempts"), 2);
    const j_val *h = j_get(s2, "history");
    cr_assert_eq(j_len(h), 4, "history across a replay has %zu entries, expected 2 + 2", j_len(h));
    for (size_t i = 0; i < 4; i++) {
        assert_keys(h->items[i], HISTORY_KEYS, "history[]");
        cr_assert_str_eq(j_str(h->items[i], "outcome"), "error");
        cr_assert(strstr(j_str(h->items[i], "error"), "not fixed"), "history error: %s", j_str(h->items[i], "error"));
        if (i) cr_assert_geq(strcmp(j_str(h->items[i], "started_at"), j_str(h->items[i - 1], "started_at")), 0,
                             "history is not in order");
    }
    cr_assert_eq(j_int(h->items[0], "attempt"), 1);
    cr_assert_eq(j_int(h->items[1], "attempt"), 2);
    cr_assert_eq(j_int(h->items[2], "attempt"), 1, "the replay's first attempt is numbered %lld",
                 j_int(h->items[2], "attempt"));
    cr_assert_eq(j_int(h->items[3], "attempt"), 2);
    free(mid);
}

/* --- 5. purge -------------------------------------------------------------------- */

/* topic t → a and b, both rejecting everything at once */
static void config_two_rejecting(void)
{
    h_config(&env, "os",
             "functions = ( { name = \"a\"; exec = [\"tests/handlers/fail.sh\", \"65\"]; },\n"
             "  { name = \"b\"; exec = [\"tests/handlers/fail.sh\", \"65\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"a\"; }, { function = \"b\"; } ); } );\n");
    h_broker(&env);
    h_worker(&env, NULL, 4);
}

Test(heraldctl, dlq_purge_by_id_deletes_exactly_those_dead_letters)
{
    config_two_rejecting();
    publish_n("t", "ev", 4, NULL);
    h_wait_sub(&env, "t", "a", "dead", 4, 20000);
    h_wait_sub(&env, "t", "b", "dead", 4, 20000);
    j_val *a = dlq_list_fn("a");
    cr_assert_eq(j_len(a), 4);
    char id0[32], id2[32];
    snprintf(id0, sizeof id0, "%lld", j_int(a->items[0], "id"));
    snprintf(id2, sizeof id2, "%lld", j_int(a->items[2], "id"));

    char *out = NULL, *err = NULL;
    int rc = CTL(&out, &err, "dlq", "purge", id0, id2);
    cr_assert_eq(rc, 0, "dlq purge %s %s: exit %d: %s", id0, id2, rc, err);
    cr_assert_str_eq(out, "purged 2\n");
    free(out);
    free(err);
    h_assert_sub(&env, "t", "a", "dead", 2);
    h_assert_sub(&env, "t", "b", "dead", 4);
    j_val *left = dlq_list_fn("a");
    cr_assert_eq(j_len(left), 2);
    cr_assert_eq(j_int(left->items[0], "id"), j_int(a->items[1], "id"));
    cr_assert_eq(j_int(left->items[1], "id"), j_int(a->items[3], "id"));
    cr_assert_eq(j_len(dlq_list_fn("b")), 4);
    out = err = NULL;
    cr_assert_eq(CTL(&out, &err, "dlq", "show", id0), 1, "dlq show of a purged dead letter did not exit 1");
    free(out);
    free(err);

    /* --json; and an id that is no longer there counts 0 and says so (exit 1) */
    char id1[32];
    snprintf(id1, sizeof id1, "%lld", j_int(a->items[1], "id"));
    j_val *r = CTL_JSON("dlq", "purge", id1, "--json");
    assert_keys(r, "count:i", "dlq purge --json");
    cr_assert_eq(j_int(r, "count"), 1);
    h_assert_sub(&env, "t", "a", "dead", 1);
    out = err = NULL;
    rc = CTL(&out, &err, "dlq", "purge", id0);
    cr_assert_eq(rc, 1, "purging an id that is not a dead letter: exit %d", rc);
    cr_assert_str_eq(out, "purged 0\n");
    cr_assert(strstr(err, "not dead letters") || strstr(err, id0), "no reason on stderr: %s", err);
    free(out);
    free(err);
    h_assert_sub(&env, "t", "a", "dead", 1);
    h_assert_sub(&env, "t", "b", "dead", 4);
}

Test(heraldctl, dlq_purge_all_function_deletes_only_that_functions_dead_letters)
{
    config_two_rejecting();
    publish_n("t", "ev", 3, NULL);
    h_wait_sub(&env, "t", "a", "dead", 3, 20000);
    h_wait_sub(&env, "t", "b", "dead", 3, 20000);

    char *out = NULL, *err = NULL;
    int rc = CTL(&out, &err, "dlq", "purge", "--all", "--function", "a", "--dry-run");
    cr_assert_eq(rc, 0, "purge --dry-run: exit %d: %s", rc, err);
    cr_assert_eq(strncmp(out, "would purge 3", 13), 0, "purge --dry-run printed: %s", out);
    free(out);
    free(err);
    h_assert_sub(&env, "t", "a", "dead", 3);
    cr_assert_eq(j_len(dlq_list_fn("a")), 3, "purge --dry-run deleted dead letters");

    j_val *r = CTL_JSON("dlq", "purge", "--all", "--function", "a", "--json");
    cr_assert_eq(j_int(r, "count"), 3);
    h_assert_sub(&env, "t", "a", "dead", 0);
    h_assert_sub(&env, "t", "b", "dead", 3);
    cr_assert_eq(j_len(dlq_list_fn("a")), 0);
    cr_assert_eq(j_len(dlq_list_fn("b")), 3);
    cr_assert_eq(j_len(dlq_list_fn(NULL)), 3);

    /* again: nothing left to purge */
    r = CTL_JSON("dlq", "purge", "--all", "--function", "a", "--json");
    cr_assert_eq(j_int(r, "count"), 0);
    h_assert_sub(&env, "t", "b", "dead", 3);
    /* --topic selects too: another topic's none, this one's all */
    r = CTL_JSON("dlq", "purge", "--all", "--topic", "nosuch", "--json");
    cr_assert_eq(j_int(r, "count"), 0);
    h_assert_sub(&env, "t", "b", "dead", 3);
    r = CTL_JSON("dlq", "purge", "--all", "--topic", "t", "--json");
    cr_assert_eq(j_int(r, "count"), 3);
    h_assert_sub(&env, "t", "b", "dead", 0);
    cr_assert_eq(j_len(dlq_list_fn(NULL)), 0);
}

typedef struct { const char *older; long want; } purge_dry;

static bool purge_dry_count_is(void *arg)
{
    purge_dry *p = arg;
    char *out = NULL;
    int rc = CTL(&out, NULL, "dlq", "purge", "--all", "--older-than", p->older, "--dry-run", "--json");
    j_val *v = rc == 0 ? j_parse(out) : NULL;
    free(out);
    const j_val *c = j_get(v, "count");
    return c && c->t == J_NUM && c->i == p->want;
}

Test(heraldctl, dlq_purge_all_older_than_deletes_only_the_older_dead_letters)
{
    h_config(&env, "os",
             "functions = ( { name = \"a\"; exec = [\"tests/handlers/fail.sh\", \"65\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"a\"; } ); } );\n");
    h_broker(&env);
    h_worker(&env, NULL, 4);
    char *old[2], *young[3];
    publish_n("t", "old", 2, old);
    h_wait_sub(&env, "t", "a", "dead", 2, 20000);
    long dead_at = wall_ms();
    /* until both are older than 2 s (by the broker's own count) */
    purge_dry pd = { "2", 2 };
    cr_assert(h_wait(purge_dry_count_is, &pd, 10000), "the first 2 dead letters never counted as older than 2 s");
    cr_assert_geq(wall_ms() - dead_at, 1500, "dead letters of %ld ms counted as older than 2 s", wall_ms() - dead_at);

    publish_n("t", "young", 3, young);
    h_wait_sub(&env, "t", "a", "dead", 5, 20000);
    j_val *r = CTL_JSON("dlq", "purge", "--all", "--older-than", "2", "--json");
    cr_assert_eq(j_int(r, "count"), 2, "purge --older-than 2 deleted %lld, expected the 2 older ones",
                 j_int(r, "count"));
    h_assert_sub(&env, "t", "a", "dead", 3);
    j_val *left = dlq_list_fn(NULL);
    cr_assert_eq(j_len(left), 3);
    for (int i = 0; i < 3; i++) cr_assert(contains_mid(left, young[i]), "the young dead letter %s was purged", young[i]);
    for (int i = 0; i < 2; i++) cr_assert(!contains_mid(left, old[i]), "the old dead letter %s is still there", old[i]);

    /* with a function filter too: none of a's remaining ones is that old */
    r = CTL_JSON("dlq", "purge", "--all", "--function", "a", "--older-than", "60", "--json");
    cr_assert_eq(j_int(r, "count"), 0);
    h_assert_sub(&env, "t", "a", "dead", 3);
}

/* --- 6. the broker stopped ------------------------------------------------------- */

Test(heraldctl, dlq_list_and_show_read_the_database_with_the_broker_stopped)
{
    char body[2048];
    char *fix = fixable_fn("fix", 1, "fix.txt", "fixed");
    snprintf(body, sizeof body, "functions = ( %s );\n"
                                "topics = ( { name = \"t\"; subscriptions = ( { function = \"fix\"; } ); } );\n", fix);
    free(fix);
    h_config(&env, "os", body);
    pid_t broker = h_broker(&env);
    h_worker(&env, NULL, 2);
    free(publish("t", "first", NULL, "k=v"));
    free(publish("t", "second", NULL, NULL));
    h_wait_sub(&env, "t", "fix", "dead", 2, 20000);

    char *live_list = NULL, *live_show = NULL;
    cr_assert_eq(CTL(&live_list, NULL, "dlq", "list", "--json"), 0);
    j_val *l = j_parse(live_list);
    cr_assert_eq(j_len(l), 2);
    char id[32];
    snprintf(id, sizeof id, "%lld", j_int(j_at(l, 1), "id"));
    cr_assert_eq(CTL(&live_show, NULL, "dlq", "show", id, "--json"), 0);

    cr_assert_eq(h_signal_exit(&env, broker, SIGTERM, 10000), 0, "the broker did not stop cleanly on SIGTERM");

    const char *data = h_path(&env, "data"), *file = h_path(&env, "data/herald.db");
    const struct { const char *what, *a, *b; } via[] = {
        { "--db DATA_DIR", "--db", data },
        { "--db DATA_DIR/herald.db", "--db", file },
    };
    for (size_t i = 0; i < 2; i++) {
        char *out = NULL, *err = NULL;
        int rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "dlq", "list", "--json", via[i].a, via[i].b, NULL);
        cr_assert_eq(rc, 0, "dlq list %s: exit %d: %s", via[i].what, rc, err);
        cr_assert_str_eq(out, live_list, "dlq list %s differs from the broker's answer", via[i].what);
        free(out);
        free(err);
        out = err = NULL;
        rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "dlq", "show", id, "--json", via[i].a, via[i].b, NULL);
        cr_assert_eq(rc, 0, "dlq show %s %s: exit %d: %s", id, via[i].what, rc, err);
        cr_assert_str_eq(out, live_show, "dlq show %s differs from the broker's answer", via[i].what);
        free(out);
        free(err);
    }
    /* -c CONFIG: the broker does not answer, so its data_dir is read */
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "-c", env.cfg, "--timeout", "1", "dlq", "list", "--json",
                   NULL);
    cr_assert_eq(rc, 0, "dlq list -c CONFIG: exit %d: %s", rc, err);
    cr_assert_str_eq(out, live_list, "dlq list -c CONFIG differs from the broker's answer");
    free(out);
    free(err);
    out = err = NULL;
    rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "-c", env.cfg, "--timeout", "1", "dlq", "show", id, "--json",
               NULL);
    cr_assert_eq(rc, 0, "dlq show -c CONFIG: exit %d: %s", rc, err);
    cr_assert_str_eq(out, live_show, "dlq show -c CONFIG differs from the broker's answer");
    free(out);
    free(err);
    /* the filters and the table work there too */
    out = err = NULL;
    rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "dlq", "list", "--db", data, "--function", "fix", "--limit",
               "1", NULL);
    cr_assert_eq(rc, 0, "dlq list --db (table): exit %d: %s", rc, err);
    cr_assert(strstr(out, "fix") && strncmp(out, "id", 2) == 0, "dlq list --db (table): %s", out);
    free(out);
    free(err);
    /* neither --db nor -c: it says how to read the database */
    out = err = NULL;
    rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "--broker", env.adm, "--timeout", "1", "dlq", "list", NULL);
    cr_assert_eq(rc, 1, "dlq list with the broker stopped and no --db: exit %d", rc);
    cr_assert(strstr(err, "--db"), "no hint at --db: %s", err);
    free(out);
    free(err);
    free(live_list);
    free(live_show);
}

Test(heraldctl, stats_with_the_broker_stopped_says_unreachable_and_exits_1_within_6_seconds)
{
    h_config(&env, "os",
             "functions = ( { name = \"a\"; exec = [\"tests/handlers/ctl_echo.sh\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"a\"; } ); } );\n");
    pid_t broker = h_broker(&env);
    cr_assert_eq(h_signal_exit(&env, broker, SIGTERM, 10000), 0, "the broker did not stop cleanly on SIGTERM");

    char *out = NULL, *err = NULL;
    long t0 = mono_ms();
    int rc = CTL(&out, &err, "stats");   /* the default --timeout: 5 s */
    long took = mono_ms() - t0;
    cr_log_info("stats with the broker stopped answered in %ld ms", took);
    cr_assert_eq(rc, 1, "stats with the broker stopped: exit %d", rc);
    cr_assert(strstr(err, "unreachable"), "stats with the broker stopped: stderr does not say unreachable: %s", err);
    cr_assert(strstr(err, env.adm), "the message does not name the endpoint: %s", err);
    cr_assert_lt(took, 6000, "stats took %ld ms to give up (default --timeout 5 s)", took);
    cr_assert_str_eq(out, "", "stats printed to stdout: %s", out);
    free(out);
    free(err);
}

Test(heraldctl, dlq_replay_and_purge_with_the_broker_stopped_say_unreachable_and_exit_1)
{
    h_config(&env, "os",
             "functions = ( { name = \"a\"; exec = [\"tests/handlers/ctl_echo.sh\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"a\"; } ); } );\n");
    pid_t broker = h_broker(&env);
    cr_assert_eq(h_signal_exit(&env, broker, SIGTERM, 10000), 0);
    const char *cmds[][2] = { { "replay", "--all" }, { "purge", "--all" } };
    for (int i = 0; i < 2; i++) {
        char *out = NULL, *err = NULL;
        long t0 = mono_ms();
        int rc = CTL(&out, &err, "--timeout", "1", "dlq", cmds[i][0], cmds[i][1]);
        long took = mono_ms() - t0;
        cr_assert_eq(rc, 1, "dlq %s with the broker stopped: exit %d", cmds[i][0], rc);
        cr_assert(strstr(err, "unreachable"), "dlq %s: %s", cmds[i][0], err);
        cr_assert_lt(took, 3000, "dlq %s --timeout 1 took %ld ms", cmds[i][0], took);
        free(out);
        free(err);
    }
}

/* --- 7. invoke ------------------------------------------------------------------- */

static unsigned char pattern_byte(size_t i)
{
    return (unsigned char)((i * 31 + (i >> 8)) & 255);
}

Test(heraldctl, invoke_prints_the_handler_output_byte_for_byte_including_1_mib)
{
    h_config(&env, "os",
             "functions = ( { name = \"echo\"; exec = [\"tests/handlers/ctl_echo.sh\"]; },\n"
             "  { name = \"pattern\"; exec = [\"tests/handlers/ctl_pattern.sh\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"echo\"; } ); } );\n");
    h_broker(&env);
    h_worker(&env, NULL, 2);
    wait_workers(1);

    /* a payload argument comes back as is: no newline added */
    char *out = NULL, *err = NULL;
    int rc = CTL(&out, &err, "invoke", "echo", "hello world");
    cr_assert_eq(rc, 0, "invoke echo: exit %d: %s", rc, err);
    cr_assert_str_eq(out, "hello world");
    free(out);
    free(err);

    /* binary through stdin ("-") and back */
    unsigned char bin[4099];
    for (size_t i = 0; i < sizeof bin; i++) bin[i] = (unsigned char)(i * 13 + 7);
    bin[0] = 0;
    bin[sizeof bin - 1] = 0;
    write_bytes(h_path(&env, "bin.in"), bin, sizeof bin);
    char *argv1[] = { NULL, "--broker", env.adm, "invoke", "echo", "-", NULL };
    rc = run_files(h_path(&env, "bin.in"), h_path(&env, "bin.out"), h_path(&env, "bin.err"), argv1);
    cr_assert_eq(rc, 0, "invoke echo - : exit %d: %s", rc, h_read(h_path(&env, "bin.err"), NULL));
    size_t n;
    unsigned char *got = read_bytes(h_path(&env, "bin.out"), &n);
    cr_assert_eq(n, sizeof bin, "invoke echo - printed %zu bytes of %zu", n, sizeof bin);
    cr_assert_eq(memcmp(got, bin, n), 0, "invoke echo - printed other bytes than the payload");
    free(got);

    /* no payload argument: stdin too */
    char *argv3[] = { NULL, "--broker", env.adm, "invoke", "echo", NULL };
    rc = run_files(h_path(&env, "bin.in"), h_path(&env, "bin2.out"), h_path(&env, "bin2.err"), argv3);
    cr_assert_eq(rc, 0, "invoke echo < file: exit %d: %s", rc, h_read(h_path(&env, "bin2.err"), NULL));
    got = read_bytes(h_path(&env, "bin2.out"), &n);
    cr_assert(n == sizeof bin && memcmp(got, bin, n) == 0, "invoke echo < file printed other bytes (%zu)", n);
    free(got);

    /* 1 MiB of a pattern with every byte value */
    char *argv2[] = { NULL, "--broker", env.adm, "invoke", "pattern", NULL };
    rc = run_files(NULL, h_path(&env, "mib.out"), h_path(&env, "mib.err"), argv2);
    cr_assert_eq(rc, 0, "invoke pattern: exit %d: %s", rc, h_read(h_path(&env, "mib.err"), NULL));
    got = read_bytes(h_path(&env, "mib.out"), &n);
    cr_assert_eq(n, (size_t)1 << 20, "invoke pattern printed %zu bytes, the handler wrote 1 MiB", n);
    for (size_t i = 0; i < n; i++)
        if (got[i] != pattern_byte(i))
            cr_assert_fail("invoke pattern: byte %zu is 0x%02x, the handler wrote 0x%02x", i, got[i], pattern_byte(i));
    free(got);
    size_t elen = 0;
    char *e = h_read(h_path(&env, "mib.err"), &elen);
    cr_assert_eq(elen, 0, "invoke pattern wrote to stderr: %s", e);
    free(e);
}

/* DESIGN §4: output is capped at 6 MiB; a sync invoke whose output is larger
 * fails with Function.ResponseSizeTooLarge (exit 1, the size and the cap on
 * stderr) instead of a cut-off success, for exec (stdout) and native
 * (set_output) alike; exactly 6 MiB still comes back byte for byte. An async
 * invoke's output is discarded, so the same handler run as an event succeeds. */
Test(heraldctl, invoke_of_an_output_over_6_mib_fails_with_function_response_size_too_large, .timeout = 180)
{
    h_config(&env, "os",
             "functions = ( { name = \"six\"; exec = [\"tests/handlers/ctl_pattern.sh\"];"
             " env = { PATTERN_BYTES = \"6291456\"; }; },\n"
             "  { name = \"over\"; exec = [\"tests/handlers/ctl_pattern.sh\"]; env = { PATTERN_BYTES = \"6291457\"; };"
             " max_attempts = 1; },\n"
             "  { name = \"nat\"; native = { library = \"build/tests/handlers/libnative.so\"; symbol = \"handle\"; };"
             " max_attempts = 1; } );\n"
             "topics = ( { name = \"t\"; } );\n");
    h_broker(&env);
    h_worker(&env, NULL, 2);
    wait_workers(1);
    const size_t cap = (size_t)6 << 20;

    const char *fns[][2] = { { "six", NULL }, { "nat", "pattern:6291456" } };
    for (int k = 0; k < 2; k++) {
        char o[64], e[64];
        snprintf(o, sizeof o, "six%d.out", k);
        snprintf(e, sizeof e, "six%d.err", k);
        char *argv[] = { NULL, "--broker", env.adm, "invoke", (char *)fns[k][0], (char *)fns[k][1], NULL };
        int rc = run_files(NULL, h_path(&env, o), h_path(&env, e), argv);
        cr_assert_eq(rc, 0, "invoke %s (exactly 6 MiB): exit %d: %s", fns[k][0], rc, h_read(h_path(&env, e), NULL));
        size_t n;
        unsigned char *got = read_bytes(h_path(&env, o), &n);
        cr_assert_eq(n, cap, "invoke %s printed %zu bytes, the handler wrote exactly 6 MiB", fns[k][0], n);
        for (size_t i = 0; i < n; i++)
            if (got[i] != pattern_byte(i))
                cr_assert_fail("invoke %s: byte %zu is 0x%02x, the handler wrote 0x%02x", fns[k][0], i, got[i],
                               pattern_byte(i));
        free(got);
    }

    const char *over[][2] = { { "over", NULL }, { "nat", "pattern:6291457" } };
    for (int k = 0; k < 2; k++) {
        char *out = NULL, *err = NULL;
        int rc = over[k][1] ? CTL(&out, &err, "invoke", over[k][0], over[k][1]) : CTL(&out, &err, "invoke", over[k][0]);
        cr_assert_eq(rc, 1, "invoke %s (6 MiB + 1 byte): exit %d, stdout %zu bytes: %s", over[k][0], rc, strlen(out),
                     err);
        cr_assert_str_eq(out, "", "a too large output was printed in part");
        cr_assert(strstr(err, "Function.ResponseSizeTooLarge") && strstr(err, "6291457") && strstr(err, "6291456"),
                  "invoke %s: stderr does not say the output's size and the cap: %s", over[k][0], err);
        cr_assert_eq(strchr(err, '\n'), err + strlen(err) - 1, "not one line: %s", err);
        free(out);
        free(err);
    }
    cr_assert_eq(h_fn_stat(&env, "over", "errors"), 1);

    /* as an event (async invoke) the output is discarded: success, no retry, no dead letter */
    setenv("HERALD_BROKER", env.pub, 1);
    cr_assert_eq(CTL(NULL, NULL, "invoke", "--async", "over"), 0);
    unsetenv("HERALD_BROKER");
    h_wait_sub(&env, "", "over", "succeeded", 1, 30000);
    h_assert_sub(&env, "", "over", "failed", 0);
    h_assert_sub(&env, "", "over", "dead", 0);
    cr_assert_eq(h_fn_stat(&env, "over", "errors"), 1, "the event counted as an error");
}

Test(heraldctl, invoke_of_a_failing_handler_exits_1_with_its_error_on_stderr)
{
    h_config(&env, "os",
             "functions = ( { name = \"bad\"; exec = [\"tests/handlers/fail.sh\", \"1\"]; max_attempts = 3; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"bad\"; } ); } );\n");
    h_broker(&env);
    h_worker(&env, NULL, 2);
    wait_workers(1);
    char *out = NULL, *err = NULL;
    int rc = CTL(&out, &err, "invoke", "bad", "x");
    cr_assert_eq(rc, 1, "invoke of a handler that exits 1: exit %d", rc);
    cr_assert(strstr(err, "failing with 1"), "the handler's error is not on stderr: %s", err);
    cr_assert_str_eq(out, "", "stdout of a failed invoke: %s", out);
    free(out);
    free(err);
    /* once: not stored, not retried */
    cr_assert_eq(h_fn_stat(&env, "bad", "invocations"), 1);
    cr_assert_eq(h_fn_stat(&env, "bad", "errors"), 1);
    cr_assert_eq(j_len(dlq_list_fn("bad")), 0, "a failed sync invoke became a dead letter");
}

Test(heraldctl, invoke_of_an_unknown_or_unserved_function_exits_1_at_once_saying_which)
{
    h_config(&env, "os",
             "functions = ( { name = \"served\"; exec = [\"tests/handlers/ctl_echo.sh\"]; },\n"
             "  { name = \"lonely\"; exec = [\"tests/handlers/ctl_echo.sh\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"served\"; } ); } );\n");
    h_broker(&env);
    h_worker(&env, "served", 2);
    wait_workers(1);

    char *out = NULL, *err = NULL;
    long t0 = mono_ms();
    int rc = CTL(&out, &err, "invoke", "nosuch", "x");
    long took = mono_ms() - t0;
    cr_assert_eq(rc, 1, "invoke of an unknown function: exit %d", rc);
    cr_assert(strstr(err, "nosuch") && strstr(err, "unknown function"), "invoke nosuch: %s", err);
    cr_assert_eq(strchr(err, '\n'), err + strlen(err) - 1, "not one line: %s", err);
    cr_assert_str_eq(out, "");
    cr_assert_lt(took, 4000, "invoke of an unknown function took %ld ms", took);
    free(out);
    free(err);

    out = err = NULL;
    t0 = mono_ms();
    rc = CTL(&out, &err, "invoke", "lonely", "x");
    took = mono_ms() - t0;
    cr_assert_eq(rc, 1, "invoke of a function no worker serves: exit %d", rc);
    cr_assert(strstr(err, "lonely") && strstr(err, "no connected worker"), "invoke lonely: %s", err);
    cr_assert_str_eq(out, "");
    cr_assert_lt(took, 4000, "invoke of an unserved function took %ld ms", took);
    free(out);
    free(err);

    /* and the served one works */
    out = NULL;
    cr_assert_eq(CTL(&out, NULL, "invoke", "served", "ok"), 0);
    cr_assert_str_eq(out, "ok");
    free(out);
}

Test(heraldctl, invoke_async_stores_the_event_and_runs_the_function_with_an_empty_topic)
{
    char body[2048];
    char *rec = fixable_fn("rec", 3, "rec.txt", NULL);
    snprintf(body, sizeof body, "functions = ( %s );\n"
                                "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n", rec);
    free(rec);
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, 2);

    /* the broker --broker names; $HERALD_BROKER (a publisher's endpoint) plays no part */
    setenv("HERALD_BROKER", "tcp://127.0.0.1:1", 1);
    char *out = NULL, *err = NULL;
    int rc = CTL(&out, &err, "invoke", "--async", "rec", "hello async");
    unsetenv("HERALD_BROKER");
    cr_assert_eq(rc, 0, "invoke --async: exit %d: %s", rc, err);
    size_t len = strlen(out);
    cr_assert(len > 1 && out[len - 1] == '\n' && !strchr(out, ' '), "invoke --async printed: '%s'", out);
    out[len - 1] = 0;
    char *mid1 = out;
    free(err);
    for (char *p = mid1; *p; p++)
        cr_assert(strchr("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-", *p),
                  "'%s' is not a message id", mid1);

    /* … or the one -c CONFIG names */
    out = err = NULL;
    rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "-c", env.cfg, "invoke", "--async", "rec", "second", NULL);
    cr_assert_eq(rc, 0, "invoke --async -c CONFIG: exit %d: %s", rc, err);
    out[strcspn(out, "\n")] = 0;
    char *mid2 = out;
    free(err);
    cr_assert_str_neq(mid1, mid2);

    h_wait_sub(&env, "", "rec", "succeeded", 2, 20000);
    h_wait_lines(h_path(&env, "rec.txt"), 2, 5000);
    rec_line r[4];
    int n = read_records(h_path(&env, "rec.txt"), r, 4);
    cr_assert_eq(n, 2, "the function ran %d times for 2 async invokes", n);
    for (int i = 0; i < 2; i++) {
        const char *want_mid = strcmp(r[i].payload, "hello async") == 0 ? mid1 : mid2;
        cr_assert(strcmp(r[i].payload, "hello async") == 0 || strcmp(r[i].payload, "second") == 0,
                  "payload '%s'", r[i].payload);
        cr_assert_str_eq(r[i].function, "rec");
        cr_assert_str_eq(r[i].topic, "", "HERALD_TOPIC of an async invoke is '%s'", r[i].topic);
        cr_assert_str_eq(r[i].mid, want_mid, "the handler saw message id %s, invoke printed %s", r[i].mid, want_mid);
        cr_assert_eq(r[i].attempt, 1);
    }
    /* stats: the function's own queue, topic "" */
    h_assert_sub(&env, "", "rec", "failed", 0);
    h_assert_sub(&env, "", "rec", "dead", 0);
    assert_sub_idle("", "rec");
    h_assert_sub(&env, "t", "rec", "succeeded", 0);
    free(mid1);
    free(mid2);
}

Test(heraldctl, invoke_async_of_a_failing_function_ends_in_dlq_list_with_an_empty_topic)
{
    h_config(&env, "os",
             "functions = ( { name = \"bad\"; exec = [\"tests/handlers/fail.sh\", \"1\"]; max_attempts = 2;\n"
             "   backoff = { initial = 0.05; jitter = \"none\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"bad\"; } ); } );\n");
    h_broker(&env);
    h_worker(&env, NULL, 2);
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "-c", env.cfg, "invoke", "--async", "bad", "doomed", NULL);
    cr_assert_eq(rc, 0, "invoke --async: exit %d: %s", rc, err);
    out[strcspn(out, "\n")] = 0;
    free(err);

    h_wait_sub(&env, "", "bad", "dead", 1, 20000);
    dlq_is d = { "bad", 1 };
    cr_assert(h_wait(dlq_count_is, &d, 5000));
    j_val *list = dlq_list_fn("bad");
    cr_assert_eq(j_len(list), 1);
    const j_val *dl = j_at(list, 0);
    assert_keys(dl, LIST_KEYS, "dlq list[]");
    cr_assert_str_eq(j_str(dl, "topic"), "", "an async invoke's dead letter has topic '%s'", j_str(dl, "topic"));
    cr_assert_str_eq(j_str(dl, "message_id"), out);
    cr_assert_str_eq(j_str(dl, "function"), "bad");
    cr_assert_eq(j_int(dl, "attempts"), 2, "retried as the function says (max_attempts 2)");
    cr_assert_str_eq(j_str(dl, "outcome"), "error");
    j_val *show = dlq_show_id(j_int(dl, "id"));
    cr_assert_str_eq(j_str(show, "payload"), "doomed");
    cr_assert_str_eq(j_str(show, "topic"), "");
    h_assert_sub(&env, "t", "bad", "dead", 0);
    free(out);
}

Test(heraldctl, invoke_timeout_bounds_the_wait_and_exits_1)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"slow\"; exec = [\"tests/handlers/sleep.sh\"]; timeout = 4.0;\n"
             "   env = { PIDFILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"slow\"; } ); } );\n",
             h_path(&env, "slow.pid"));
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, 2);
    wait_workers(1);
    char *out = NULL, *err = NULL;
    long t0 = mono_ms();
    int rc = CTL(&out, &err, "invoke", "slow", "x", "--timeout", "1");
    long took = mono_ms() - t0;
    cr_log_info("invoke --timeout 1 of a sleeping handler gave up after %ld ms", took);
    cr_assert_eq(rc, 1, "invoke --timeout 1 of a handler that sleeps: exit %d", rc);
    cr_assert(strstr(err, "timeout"), "invoke --timeout: %s", err);
    cr_assert_str_eq(out, "");
    cr_assert(took >= 900 && took < 3500, "invoke --timeout 1 returned after %ld ms (the function's own timeout is 4 s)",
              took);
    free(out);
    free(err);
}

/* --- 8. unknown ids and bad usage --------------------------------------------- */

Test(heraldctl, dlq_show_replay_purge_of_an_unknown_id_exit_1_with_a_clear_message)
{
    h_config(&env, "os",
             "functions = ( { name = \"a\"; exec = [\"tests/handlers/ctl_echo.sh\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"a\"; } ); } );\n");
    h_broker(&env);
    char *out = NULL, *err = NULL;
    int rc = CTL(&out, &err, "dlq", "show", "999999");
    cr_assert_eq(rc, 1, "dlq show 999999: exit %d", rc);
    cr_assert(strstr(err, "999999") && strstr(err, "dead letter"), "dlq show 999999: %s", err);
    cr_assert_eq(strchr(err, '\n'), err + strlen(err) - 1, "not one line: %s", err);
    cr_assert_str_eq(out, "");
    free(out);
    free(err);
    out = err = NULL;
    rc = CTL(&out, &err, "dlq", "show", "999999", "--json");
    cr_assert_eq(rc, 1, "dlq show 999999 --json: exit %d", rc);
    j_val *e = j_parse(out);   /* the error as the one JSON document */
    cr_assert(e && j_str(e, "error") && strstr(j_str(e, "error"), "999999"), "dlq show 999999 --json printed: %s", out);
    free(out);
    free(err);
    /* from the database too */
    out = err = NULL;
    rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "dlq", "show", "999999", "--db", h_path(&env, "data"), NULL);
    cr_assert_eq(rc, 1, "dlq show 999999 --db: exit %d", rc);
    cr_assert(strstr(err, "999999"), "dlq show 999999 --db: %s", err);
    free(out);
    free(err);
    for (int i = 0; i < 2; i++) {
        const char *cmd = i ? "purge" : "replay";
        out = err = NULL;
        rc = CTL(&out, &err, "dlq", cmd, "999999");
        cr_assert_eq(rc, 1, "dlq %s 999999: exit %d", cmd, rc);
        cr_assert(strstr(err, "not dead letters") || strstr(err, "999999"), "dlq %s 999999: %s", cmd, err);
        free(out);
        free(err);
    }
}

Test(heraldctl, bad_flags_and_unknown_commands_exit_2_with_a_clear_message)
{
    /* no broker: a usage error is found before anything is asked */
    static const struct { const char *why; const char *args[8]; const char *says; } cases[] = {
        { "--limit x", { "dlq", "list", "--limit", "x" }, "--limit" },
        { "--limit -1", { "dlq", "list", "--limit", "-1" }, "--limit" },
        { "replay, neither ids nor --all", { "dlq", "replay" }, "--all" },
        { "purge, neither ids nor --all", { "dlq", "purge" }, "--all" },
        { "replay, ids and --all", { "dlq", "replay", "3", "--all" }, "--all" },
        { "replay, a non-integer id", { "dlq", "replay", "abc" }, "abc" },
        { "replay --rate 0", { "dlq", "replay", "--all", "--rate", "0" }, "--rate" },
        { "replay --rate x", { "dlq", "replay", "--all", "--rate", "x" }, "--rate" },
        { "purge --older-than x", { "dlq", "purge", "--all", "--older-than", "x" }, "--older-than" },
        { "replay --older-than", { "dlq", "replay", "--all", "--older-than", "5" }, "--older-than" },
        { "purge --rate", { "dlq", "purge", "--all", "--rate", "5" }, "--rate" },
        { "ids with --function", { "dlq", "purge", "3", "--function", "a" }, "--function" },
        { "show without an id", { "dlq", "show" }, "ID" },
        { "show abc", { "dlq", "show", "abc" }, "ID" },
        { "list with an argument", { "dlq", "list", "extra" }, "argument" },
        { "a bad --function name", { "dlq", "list", "--function", "no good" }, "--function" },
        { "unknown dlq command", { "dlq", "frob" }, "frob" },
        { "dlq alone", { "dlq" }, "dlq" },
        { "unknown command", { "frobnicate" }, "frobnicate" },
        { "stats with an argument", { "stats", "extra" }, "argument" },
        { "--timeout 0", { "--timeout", "0", "stats" }, "--timeout" },
        { "invoke without a function", { "invoke" }, "invoke" },
        { "invoke of a bad name", { "invoke", "no good" }, "invoke" },
        { "check without a file", { "check" }, "check" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *const *a = cases[i].args;
        char *out = NULL, *err = NULL;
        long t0 = mono_ms();
        int rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "--broker", env.adm, a[0], a[1], a[2], a[3], a[4],
                       a[5], a[6], a[7], NULL);
        long took = mono_ms() - t0;
        cr_assert_eq(rc, 2, "%s: exit %d (stderr: %s)", cases[i].why, rc, err);
        cr_assert_str_eq(out, "", "%s: printed to stdout: %s", cases[i].why, out);
        cr_assert_eq(strncmp(err, "heraldctl: ", 11), 0, "%s: stderr is not a heraldctl error: %s", cases[i].why, err);
        cr_assert(strstr(err, cases[i].says), "%s: the message does not mention '%s': %s", cases[i].why, cases[i].says,
                  err);
        cr_assert_eq(strchr(err, '\n'), err + strlen(err) - 1, "%s: the error is not one line: %s", cases[i].why, err);
        cr_assert_lt(took, 4000, "%s: took %ld ms (did it try the broker?)", cases[i].why, took);
        free(out);
        free(err);
    }
    /* an unknown option: named, with the usage */
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "--bogus", "stats", NULL);
    cr_assert_eq(rc, 2, "--bogus: exit %d", rc);
    cr_assert(strstr(err, "bogus") && strstr(err, "usage"), "--bogus: %s", err);
    cr_assert_str_eq(out, "");
    free(out);
    free(err);
    /* no command at all */
    out = err = NULL;
    rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", NULL);
    cr_assert_eq(rc, 2, "no command: exit %d", rc);
    cr_assert(strstr(err, "usage"), "no command: %s", err);
    free(out);
    free(err);
}

/* ---- a large replay and purge ---------------------------------------------- */

/* Inserts n dead letters of (topic, function) into the stopped broker's
 * database, ids interleaved with those of other calls (step, offset). */
static void insert_dead(const char *topic, const char *function, int n, int step, int offset)
{
    char path[600], sql[768];
    snprintf(path, sizeof path, "%s/data/herald.db", env.dir);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < %d)"
             " INSERT INTO dead(id, msg, sub, mid, topic, function, attempts, outcome, error, failed_ms, payload)"
             " SELECT 1 + i * %d + %d, 1, (SELECT id FROM subs WHERE topic = '%s' AND function = '%s'),"
             " 'old-' || '%s-' || i, '%s', '%s', 3, 'error', 'boom', 0, 'payload-' || i FROM k",
             n - 1, step, offset, topic, function, function, topic, function);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
}

/* Replaying and purging tens of thousands of dead letters takes the broker
 * a while; it goes on serving meanwhile: a worker stays connected (its
 * heartbeats answered), publishes are confirmed, heraldctl waits for the
 * answer past its timeout while the broker answers its pings. */
Test(heraldctl, dlq_replay_and_purge_of_many_keep_the_broker_serving, .timeout = 180)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"build/tests/handlers/librel_record.so\";"
             " symbol = \"record\"; }; env = { RECORD_FILE = \"%s\"; }; },\n"
             "  { name = \"other\"; native = { library = \"build/tests/handlers/librel_record.so\";"
             " symbol = \"record\"; }; env = { RECORD_FILE = \"/dev/null\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; }, { function = \"other\"; } ); } );\n",
             h_path(&env, "record.txt"));
    h_config(&env, "os", body);
    pid_t broker = h_broker(&env);
    cr_assert_eq(h_signal_exit(&env, broker, SIGTERM, 15000), 0);
    /* of each: 100 chunks (about 3 s unloaded), longer than heraldctl's --timeout
     * 1.5, so heraldctl must keep waiting on pings. Each ping is answered within
     * one loop turn (one chunk). On a loaded machine such a turn took more than
     * 0.5 s, but not more than 1.5 s. */
    const int n = 200000;
    insert_dead("t", "rec", n, 2, 0);
    insert_dead("t", "other", n, 2, 1);
    broker = h_broker(&env);
    h_assert_sub(&env, "t", "rec", "dead", n);
    pid_t worker = h_start(&env, "worker", "bin/herald-worker", "--broker", env.wrk, "--functions", "rec",
                           "--concurrency", "64", NULL);

    /* meanwhile: a publisher, one event at a time */
    char script[1200];
    snprintf(script, sizeof script,
             "i=0; while [ ! -e %s ]; do i=$((i+1)); bin/herald-publish --broker %s t during-$i >/dev/null"
             " || echo \"publish $i failed\"; done",
             h_path(&env, "stop"), env.pub);
    pid_t pub = h_start(&env, "prober", "/bin/sh", "-c", script, NULL);

    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "--broker", env.adm, "--timeout", "1.5", "dlq", "replay",
                   "--all", "--function", "rec", NULL);
    cr_assert_eq(rc, 0, "dlq replay: exit %d: %s", rc, err ? err : "");
    cr_assert(strstr(out, "replayed 200000"), "%s", out);
    free(out);
    free(err);
    rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "--broker", env.adm, "--timeout", "1.5", "dlq", "purge", "--all",
               NULL);
    cr_assert_eq(rc, 0, "dlq purge: exit %d: %s", rc, err ? err : "");
    cr_assert(strstr(out, "purged 200000"), "%s", out);
    free(out);
    free(err);
    h_write(h_path(&env, "stop"), "");
    cr_assert_eq(h_wait_exit(pub, 30000), 0, "the publisher loop did not end");

    h_wait_lines(h_path(&env, "record.txt"), (size_t)n, 60000);
    h_assert_sub(&env, "t", "rec", "dead", 0);
    h_assert_sub(&env, "t", "other", "dead", 0);
    char *plog = h_read(h_path(&env, "prober.out"), NULL), *wlog = h_read(h_path(&env, "worker.err"), NULL);
    cr_assert(!plog || !strstr(plog, "failed"), "a publish failed during the replay or purge: %.500s", plog);
    cr_assert(!wlog || !strstr(wlog, "silent"), "the worker lost the broker during the replay or purge: %.500s", wlog);
    free(plog);
    free(wlog);
    (void)worker;
}

/* The broker stops (and comes back) while a long purge runs: the purge dies
 * with it, so heraldctl must say so rather than wait for an answer that will
 * never come. */
Test(heraldctl, dlq_purge_cut_by_a_broker_restart_ends_with_an_error, .timeout = 120)
{
    h_config(&env, "os",
             "functions = ( { name = \"rec\"; native = { library = \"build/tests/handlers/librel_record.so\";"
             " symbol = \"record\"; }; env = { RECORD_FILE = \"/dev/null\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n");
    pid_t broker = h_broker(&env);
    cr_assert_eq(h_signal_exit(&env, broker, SIGTERM, 15000), 0);
    const int n = 400000;
    insert_dead("t", "rec", n, 1, 0);
    broker = h_broker(&env);
    /* its first ping goes 5 s after the request: to the broker that came back */
    pid_t ctl = h_start(&env, "purge", "bin/heraldctl", "--broker", env.adm, "--timeout", "5", "dlq", "purge", "--all",
                        NULL);
    long end = 0;
    for (int i = 0; i < 1000; i++) {   /* until the purge is under way */
        long dead = h_sub_stat(&env, "t", "rec", "dead");
        if (dead != LONG_MIN && dead < n) break;
        usleep(10000);
        end = i;
    }
    cr_assert_lt(end, 999, "the purge never started");
    cr_assert_eq(h_signal_exit(&env, broker, SIGTERM, 15000), 0);
    broker = h_broker(&env);
    long left = h_sub_stat(&env, "t", "rec", "dead");
    int st = h_wait_exit(ctl, 30000);
    char *err = h_read(h_path(&env, "purge.err"), NULL);
    cr_assert_neq(st, -1, "heraldctl still waits for a purge the broker dropped when it stopped");
    cr_assert_eq(st, 1, "heraldctl exit %d: %s", st, err ? err : "");
    cr_assert(err && strstr(err, "restarted"), "stderr: %s", err ? err : "");
    cr_assert(left > 0 && left < n, "%ld of %d dead letters left: the purge was not cut part way", left, n);
    fprintf(stderr, "heraldctl: a purge cut by a restart (%ld of %d left): %s", left, n, err);
    free(err);
}
