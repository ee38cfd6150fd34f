/* test_security.c — CURVE on every endpoint and role-scoped keys (DESIGN §7),
 * through the real programs. Keys come from `heraldctl keygen`. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "../../proto/proto.h"
#include "harness.h"

static h_env env;
static void setup(void)
{
    unsetenv("HERALD_KEY");   /* this suite sets up its own keys, in every mode */
    unsetenv("HERALD_BROKER_KEY");
    unsetenv("HERALD_TEST_CURVE");
    h_setup(&env);
}
static void teardown(void) { h_teardown(&env); }
TestSuite(security, .init = setup, .fini = teardown, .timeout = 120);

static const char *BODY =
    "functions = ( { name = \"rec\"; native = { library = \"examples/handlers/libcount.so\"; symbol = \"count\"; }; } );\n"
    "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n";

static void keygen(const char *name)
{
    char path[600];
    snprintf(path, sizeof path, "%s/keys/%s", env.dir, name);
    cr_assert_eq(h_run(&env, NULL, NULL, NULL, "bin/heraldctl", "keygen", path, NULL), 0, "keygen %s", name);
}

static void allow(const char *name, const char *role)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cp '%s/keys/%s.pub' '%s/keys/%s/'", env.dir, name, env.dir, role);
    cr_assert_eq(system(cmd), 0);
}

/* broker key + keys "pub", "wrk", "adm", "other": each allowed in its own role only */
static void secure_config(void)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/keys/publishers' '%s/keys/workers' '%s/keys/admins'", env.dir, env.dir,
             env.dir);
    cr_assert_eq(system(cmd), 0);
    keygen("broker");
    keygen("pub");
    keygen("wrk");
    keygen("adm");
    keygen("other");
    allow("pub", "publishers");
    allow("wrk", "workers");
    allow("adm", "admins");
    char body[2048];
    snprintf(body, sizeof body,
             "%ssecurity = { curve = true; secret_key = \"keys/broker.key\"; publishers = \"keys/publishers\";\n"
             "  workers = \"keys/workers\"; admins = \"keys/admins\"; };\n", BODY);
    h_config(&env, "os", body);
}

static char kpath[8][600];
static const char *key(const char *name)
{
    static int k;
    char *p = kpath[k++ % 8];
    snprintf(p, 600, "%s/keys/%s.key", env.dir, name);
    return p;
}
static const char *broker_pub(void)
{
    static char p[600];
    snprintf(p, sizeof p, "%s/keys/broker.pub", env.dir);
    return p;
}

static int stats_as(const char *who, char **out, char **err)
{
    return h_run(&env, NULL, out, err, "bin/heraldctl", "--broker", env.adm, "--timeout", "2", "--key", key(who),
                 "--broker-key", broker_pub(), "stats", "--json", NULL);
}

static bool broker_answers_adm(void *arg)
{
    (void)arg;
    char *out = NULL;
    int rc = stats_as("adm", &out, NULL);
    free(out);
    return rc == 0;
}

static pid_t start_broker(void)
{
    pid_t pid = h_start(&env, "broker", "bin/herald-broker", "-c", env.cfg, NULL);
    cr_assert(h_wait(broker_answers_adm, NULL, 20000), "the CURVE broker did not come up");
    return pid;
}

static int publish_as(const char *who, const char *endpoint, char **err)
{
    char *out = NULL;
    int rc = who ? h_run(&env, NULL, &out, err, "bin/herald-publish", "--broker", endpoint, "--timeout", "2", "--key",
                         key(who), "--broker-key", broker_pub(), "t", "x", NULL)
                 : h_run(&env, NULL, &out, err, "bin/herald-publish", "--broker", endpoint, "--timeout", "2", "t", "x",
                         NULL);
    free(out);
    return rc;
}

Test(security, clients_without_the_right_key_get_nothing_through_on_any_endpoint)
{
    secure_config();
    start_broker();
    char *err = NULL;
    /* plaintext, and an unknown key, on the publish endpoint */
    cr_assert_eq(publish_as(NULL, env.pub, &err), 1, "a plaintext publish went through");
    cr_assert(strstr(err, "CURVE"), "plaintext refusal says why: %s", err);
    free(err);
    cr_assert_eq(publish_as("other", env.pub, &err), 1, "an unknown key published");
    cr_assert(strstr(err, "refused") || strstr(err, "unreachable"), "%s", err);
    free(err);
    /* admin endpoint: no key, unknown key */
    cr_assert_eq(h_run(&env, NULL, NULL, NULL, "bin/heraldctl", "--broker", env.adm, "--timeout", "2", "stats", NULL), 1);
    cr_assert_eq(stats_as("other", NULL, &err), 1);
    cr_assert(strstr(err, "refused our key"), "%s", err);
    free(err);
    /* worker endpoint: an unknown key cannot register */
    pid_t w = h_start(&env, "badworker", "bin/herald-worker", "--broker", env.wrk, "--root", env.root, "--key",
                      key("other"), "--broker-key", broker_pub(), NULL);
    cr_assert_eq(h_wait_exit(w, 10000), 1, "a worker with an unknown key must stop and say so");
    char *log = h_read(h_path(&env, "badworker.err"), NULL);
    cr_assert(log && strstr(log, "refused our key"), "%s", log);
    free(log);
    /* and everyone with the right key is still served */
    cr_assert_eq(publish_as("pub", env.pub, NULL), 0);
    char *st = NULL;
    cr_assert_eq(stats_as("adm", &st, NULL), 0);
    cr_assert(strstr(st, "{\"name\":\"t\",\"published\":1}"), "%s", st);
    long refused_pub = h_json_num(st, "\"refused\":", "publish");
    long refused_adm = h_json_num(st, "\"refused\":", "admin");
    long refused_wrk = h_json_num(st, "\"refused\":", "worker");
    cr_assert(refused_pub >= 1 && refused_adm >= 1 && refused_wrk >= 1, "refusals not counted: %s", st);
    free(st);
}

Test(security, each_key_has_only_the_roles_of_its_directories)
{
    secure_config();
    start_broker();
    char *err = NULL;
    /* a worker key cannot publish; a publisher key cannot administer */
    cr_assert_eq(publish_as("wrk", env.pub, &err), 1, "a worker key published");
    free(err);
    cr_assert_eq(stats_as("pub", NULL, NULL), 1, "a publisher key read stats");
    cr_assert_eq(stats_as("wrk", NULL, NULL), 1, "a worker key read stats");
    cr_assert_eq(h_run(&env, NULL, NULL, NULL, "bin/heraldctl", "--broker", env.adm, "--timeout", "2", "--key", key("pub"),
                       "--broker-key", broker_pub(), "dlq", "purge", "--all", NULL), 1,
                 "a publisher key purged the dead letters");
    /* a publisher key cannot register as a worker */
    pid_t w = h_start(&env, "pubworker", "bin/herald-worker", "--broker", env.wrk, "--root", env.root, "--key",
                      key("pub"), "--broker-key", broker_pub(), NULL);
    cr_assert_eq(h_wait_exit(w, 10000), 1, "a publisher key registered as a worker");
    /* the right ones work, end to end */
    h_start(&env, "worker", "bin/herald-worker", "--broker", env.wrk, "--root", env.root, "--key", key("wrk"),
            "--broker-key", broker_pub(), NULL);
    cr_assert_eq(publish_as("pub", env.pub, NULL), 0);
    char *st = NULL;
    for (int i = 0; i < 200; i++) {   /* handled: the worker got it over CURVE */
        free(st);
        st = NULL;
        stats_as("adm", &st, NULL);
        if (st && h_json_num(st, "{\"topic\":\"t\",\"function\":\"rec\"", "succeeded") == 1) break;
        usleep(50000);
    }
    cr_assert_eq(h_json_num(st, "{\"topic\":\"t\",\"function\":\"rec\"", "succeeded"), 1, "%s", st);
    free(st);
}

Test(security, removing_a_pub_file_and_sighup_stops_new_connections_with_that_key)
{
    secure_config();
    pid_t broker = start_broker();
    allow("other", "publishers");
    kill(broker, SIGHUP);
    bool ok = false;
    for (int i = 0; i < 100 && !ok; i++) ok = publish_as("other", env.pub, NULL) == 0;
    cr_assert(ok, "adding other.pub + SIGHUP did not let it publish");
    char path[700];
    snprintf(path, sizeof path, "%s/keys/publishers/other.pub", env.dir);
    cr_assert_eq(unlink(path), 0);
    kill(broker, SIGHUP);
    bool refused = false;
    for (int i = 0; i < 100 && !refused; i++) refused = publish_as("other", env.pub, NULL) == 1;
    cr_assert(refused, "removing other.pub + SIGHUP did not stop it");
    cr_assert_eq(publish_as("pub", env.pub, NULL), 0, "the others must keep working");
}

Test(security, a_secret_key_readable_by_others_stops_the_broker_naming_the_file)
{
    secure_config();
    char path[700];
    snprintf(path, sizeof path, "%s/keys/broker.key", env.dir);
    cr_assert_eq(chmod(path, 0644), 0);
    char *err = NULL;
    int rc = h_run(&env, NULL, NULL, &err, "bin/herald-broker", "-c", env.cfg, NULL);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, err);
    cr_assert(strstr(err, path) && strstr(err, "0644"), "%s", err);
    free(err);
    struct stat st;
    cr_assert(stat(h_path(&env, "data"), &st) != 0, "a refused broker must start nothing");
}

static long rss_kb(pid_t pid)
{
    char path[64], *s;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    s = h_read(path, NULL);
    char *p = s ? strstr(s, "VmRSS:") : NULL;
    long kb = p ? strtol(p + 6, NULL, 10) : -1;
    free(s);
    return kb;
}

Test(security, too_many_frames_from_an_authenticated_publisher_are_refused_without_growth)
{
    if (getenv("HERALD_TEST_SANITIZE"))
        cr_skip_test("RSS says nothing under AddressSanitizer, which keeps freed memory in quarantine");
    secure_config();
    pid_t broker = start_broker();
    void *ctx = zmq_ctx_new();
    char why[256];
    static char frame[200 * 1024];
    memset(frame, 'z', sizeof frame);
    long first = -1, last = -1;
    for (int round = 0; round < 10; round++) {
        void *s = zmq_socket(ctx, ZMQ_DEALER);
        int zero = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
        cr_assert_eq(keys_client(s, key("pub"), broker_pub(), why, sizeof why), 0, "%s", why);
        cr_assert_eq(zmq_connect(s, env.pub), 0);
        /* a PUBLISH header declaring one event, then 200 frames of 200 KiB */
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        proto_pub p = { .seq = 1, .topic = "t" };
        proto_publish pb = { .producer = "attacker", .pubs = &p, .npubs = 1 };
        proto_encode_publish(&sb, &pb);
        zmq_send(s, sb.data, sb.size, ZMQ_SNDMORE);
        for (int i = 0; i < 200; i++) zmq_send(s, frame, sizeof frame, i < 199 ? ZMQ_SNDMORE : 0);
        msgpack_sbuffer_destroy(&sb);
        zmq_pollitem_t it = { s, 0, ZMQ_POLLIN, 0 };
        cr_assert(zmq_poll(&it, 1, 10000) == 1, "no answer to a message of 201 frames");
        zmq_msg_t m;
        zmq_msg_init(&m);
        cr_assert(zmq_msg_recv(&m, s, 0) >= 0);
        proto_msg pm;
        cr_assert_eq(proto_decode(zmq_msg_data(&m), zmq_msg_size(&m), &pm, why, sizeof why), 0, "%s", why);
        /* refused whole, with its seq (PROTOCOL.md §5): a CONFIRM entry, status 1 */
        cr_assert_eq(pm.type, MSG_CONFIRM, "expected CONFIRM, got %s", proto_type_name(pm.type));
        cr_assert(pm.u.confirm.n == 1 && pm.u.confirm.entries[0].seq == 1 &&
                  pm.u.confirm.entries[0].status == PROTO_E_MALFORMED, "expected seq 1 refused as malformed");
        cr_assert(strstr(pm.u.confirm.entries[0].text, "frames"), "refused for its frame count: %s",
                  pm.u.confirm.entries[0].text);
        proto_msg_clear(&pm);
        zmq_msg_close(&m);
        zmq_close(s);
        /* everyone else is unaffected */
        cr_assert_eq(publish_as("pub", env.pub, NULL), 0);
        if (round == 1) first = rss_kb(broker);
        last = rss_kb(broker);
    }
    zmq_ctx_term(ctx);
    fprintf(stderr, "security: broker RSS %ld KiB after round 2, %ld KiB after round 10\n", first, last);
    cr_assert(last <= first + 4096, "the broker grew from %ld to %ld KiB over 8 rounds", first, last);
}

/* The Z85 public key of a key file of the test. */
static void pub_z85(const char *name, char out[41])
{
    char path[700], why[256];
    snprintf(path, sizeof path, "%s/keys/%s.pub", env.dir, name);
    cr_assert_eq(keys_read(path, "public-key", out, why, sizeof why), 0, "%s", why);
}

static bool log_has(void *arg)
{
    char *log = h_read(h_path(&env, "broker.err"), NULL);
    bool ok = log && strstr(log, (const char *)arg);
    free(log);
    return ok;
}

Test(security, a_refused_key_is_logged_by_its_file_when_the_broker_has_one)
{
    secure_config();
    start_broker();
    /* wrk's .pub is in the workers directory: the log names that file */
    cr_assert_eq(stats_as("wrk", NULL, NULL), 1, "a worker key read stats");
    char want[900];
    snprintf(want, sizeof want, "refused a connection on the admin endpoint from ");
    cr_assert(h_wait(log_has, want, 5000), "no refusal logged");
    char *log = h_read(h_path(&env, "broker.err"), NULL);
    char file[700], z85[41];
    snprintf(file, sizeof file, "key %s/keys/workers/wrk.pub is not allowed (the admins directory)", env.dir);
    cr_assert(strstr(log, file), "the refusal names the key's file (%s): %s", file, log);
    free(log);
    /* other's key is in no directory: the log gives it in Z85 */
    cr_assert_eq(stats_as("other", NULL, NULL), 1, "an unknown key read stats");
    pub_z85("other", z85);
    snprintf(want, sizeof want, "key %s is not allowed (the admins directory)", z85);
    cr_assert(h_wait(log_has, want, 5000), "an unknown key is logged in Z85: %s", want);
}
