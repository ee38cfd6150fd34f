/* test_workers.c — worker sessions seen from outside (DESIGN §2, §4,
 * PROTOCOL.md §6): a worker that cannot run a function never gets its work,
 * says why in its log and in `heraldctl workers`; a worker stopped by SIGTERM
 * says goodbye and is gone from `workers` at once; a worker whose broker is
 * not there says it is retrying, and connects when the broker comes up. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static h_env env;

static void setup(void) { h_setup(&env); }
static void teardown(void) { h_teardown(&env); }

TestSuite(workers, .init = setup, .fini = teardown, .timeout = 180);

typedef struct { const char *path, *needle; } file_needle;

static bool file_has(void *arg)
{
    const file_needle *fn = arg;
    char *text = h_read(fn->path, NULL);
    bool yes = text && strstr(text, fn->needle);
    free(text);
    return yes;
}

static size_t count_in_file(const char *path, const char *needle)
{
    char *text = h_read(path, NULL);
    size_t n = 0;
    for (const char *p = text; p && (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    free(text);
    return n;
}

/* `heraldctl workers --json` lists exactly n workers. */
typedef struct { h_env *e; int n; } workers_n;

static bool workers_listed(void *arg)
{
    const workers_n *w = arg;
    char *out = h_ctl(w->e, "workers", "--json", NULL);
    if (!out) return false;
    int n = 0;
    for (const char *p = out; (p = strstr(p, "\"pid\":")) != NULL; p++) n++;
    free(out);
    return n == w->n;
}

/* The worker object (from its "pid" on) of pid in a workers JSON text. */
static const char *worker_json(const char *json, pid_t pid)
{
    char anchor[64];
    snprintf(anchor, sizeof anchor, "\"pid\":%d,", (int)pid);
    return strstr(json, anchor);
}

static pid_t bad_worker(const char *root)
{
    return h_start(&env, "bad", "bin/herald-worker", "--broker", env.wrk, "--root", root, "--run-dir",
                   h_path(&env, "runs"), "--concurrency", "4", NULL);
}

static pid_t good_worker(void)
{
    return h_start(&env, "good", "bin/herald-worker", "--broker", env.wrk, "--root", env.root, "--run-dir",
                   h_path(&env, "runs"), "--concurrency", "4", NULL);
}

/* An exec function by a relative path and a native one by a relative library,
 * both subscribed to topic t: a worker whose --root lacks them refuses both. */
static void two_function_config(void)
{
    char body[2048];
    snprintf(body, sizeof body,
             "functions = (\n"
             " { name = \"notify\"; exec = [\"tests/handlers/spine_record.sh\"]; env = { RECORD_FILE = \"%s\"; }; },\n"
             " { name = \"nat\"; native = { library = \"examples/handlers/libcount.so\"; symbol = \"count\"; };\n"
             "   env = { COUNT_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"notify\"; }, { function = \"nat\"; } ); } );\n",
             h_path(&env, "exec.txt"), h_path(&env, "native.txt"));
    h_config(&env, "os", body);
}

static void publish_lines(int n, const char *name)
{
    h_write_lines(h_path(&env, name), n, "event-%d");
    char *err = NULL;
    int rc = h_run(&env, h_path(&env, name), NULL, &err, "bin/herald-publish", "--broker", env.pub, "--lines", "t",
                   NULL);
    cr_assert_eq(rc, 0, "herald-publish failed: %s", err);
    free(err);
}

/* Every event handled by both functions, none dead-lettered, no failed attempt. */
static void all_handled_none_dead(size_t lines)
{
    h_wait_lines(h_path(&env, "exec.txt"), lines, 60000);
    h_wait_lines(h_path(&env, "native.txt"), lines, 60000);
    h_assert_sub(&env, "t", "notify", "dead", 0);
    h_assert_sub(&env, "t", "nat", "dead", 0);
    h_assert_sub(&env, "t", "notify", "failed", 0);
    h_assert_sub(&env, "t", "nat", "failed", 0);
}

static void assert_refusals_shown(pid_t bad)
{
    char *json = h_ctl(&env, "workers", "--json", NULL);
    cr_assert_not_null(json);
    const char *w = worker_json(json, bad);
    cr_assert_not_null(w, "the bad worker is not listed: %s", json);
    const char *end = strstr(w, "}]},");   /* its refused list ends its object */
    cr_assert(strstr(w, "\"functions\":[]"), "the bad worker still lists functions: %s", json);
    const char *r = strstr(w, "\"refused\":[");
    cr_assert(r && (!end || r < end + 4), "no refused list for the bad worker: %s", json);
    cr_assert(strstr(r, "{\"function\":\"notify\",\"reason\":\""), "notify not refused: %s", json);
    cr_assert(strstr(r, "tests/handlers/spine_record.sh is not an executable program"), "no reason: %s", json);
    cr_assert(strstr(r, "{\"function\":\"nat\",\"reason\":\""), "nat not refused: %s", json);
    cr_assert(strstr(r, "examples/handlers/libcount.so: No such file or directory"), "no reason: %s", json);
    free(json);
    char *text = h_ctl(&env, "workers", NULL);
    cr_assert_not_null(text);
    cr_assert(strstr(text, "REFUSED"), "heraldctl workers does not show the refusals:\n%s", text);
    cr_assert(strstr(text, "notify: ") && strstr(text, "spine_record.sh is not an executable program"),
              "heraldctl workers does not say why notify is refused:\n%s", text);
    cr_assert(strstr(text, "nat: ") && strstr(text, "libcount.so: No such file or directory"),
              "heraldctl workers does not say why nat is refused:\n%s", text);
    free(text);
}

Test(workers, a_worker_that_cannot_load_a_function_takes_none_of_its_work)
{
    two_function_config();
    h_broker(&env);
    char *empty = h_path(&env, "empty-root");
    cr_assert_eq(mkdir(empty, 0755), 0);
    pid_t good = good_worker();
    pid_t bad = bad_worker(empty);
    workers_n two = { &env, 2 };
    cr_assert(h_wait(workers_listed, &two, 20000), "two workers did not register");
    publish_lines(20, "in.txt");
    all_handled_none_dead(20);
    assert_refusals_shown(bad);
    /* its log says what it refused and counts what it serves */
    file_needle bl = { h_path(&env, "bad.err"), "serving 0 functions, refused 2 (" };
    cr_assert(file_has(&bl), "the bad worker's log lacks \"%s\"", bl.needle);
    file_needle gl = { h_path(&env, "good.err"), "serving 2 functions, 4 slots" };
    cr_assert(file_has(&gl), "the good worker's log lacks \"%s\"", gl.needle);
    (void)good;
}

static bool reloaded(void *arg)
{
    (void)arg;
    file_needle fn = { h_path(&env, "broker.err"), "SIGHUP: reloaded" };
    return file_has(&fn);
}

/* The refusals stay true when the broker re-sends CONFIG (SIGHUP) and when
 * the workers register again with a restarted broker. */
Test(workers, refusals_hold_across_a_reload_and_a_broker_restart)
{
    two_function_config();
    pid_t broker = h_broker(&env);
    char *empty = h_path(&env, "empty-root");
    cr_assert_eq(mkdir(empty, 0755), 0);
    good_worker();
    pid_t bad = bad_worker(empty);
    workers_n two = { &env, 2 };
    cr_assert(h_wait(workers_listed, &two, 20000), "two workers did not register");
    kill(broker, SIGHUP);
    cr_assert(h_wait(reloaded, NULL, 10000), "the broker did not reload");
    publish_lines(20, "in1.txt");
    all_handled_none_dead(20);
    assert_refusals_shown(bad);

    int st = h_signal_exit(&env, broker, SIGTERM, 15000);
    char *blog = h_read(h_path(&env, "broker.err"), NULL);
    cr_assert_eq(st, 0, "broker exit %d:\n%s", st, blog);
    free(blog);
    h_broker(&env);
    cr_assert(h_wait(workers_listed, &two, 20000), "the workers did not register again");
    publish_lines(20, "in2.txt");
    all_handled_none_dead(40);
    assert_refusals_shown(bad);
}

/* A native library that is there but cannot be loaded is only found out when
 * its host starts: the worker then refuses the function, hands back what it
 * is sent for it unstarted, and the broker stops sending it there. */
Test(workers, a_function_refused_after_registration_goes_back_unstarted)
{
    two_function_config();
    h_broker(&env);
    char *broken = h_path(&env, "broken-root");
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s/examples/handlers' '%s/tests' && echo 'not a library' > '%s/examples/handlers/libcount.so' "
             "&& cp -r '%s/tests/handlers' '%s/tests/'", broken, broken, broken, env.root, broken);
    cr_assert_eq(system(cmd), 0);
    good_worker();
    pid_t bad = bad_worker(broken);
    workers_n two = { &env, 2 };
    cr_assert(h_wait(workers_listed, &two, 20000), "two workers did not register");
    publish_lines(20, "in.txt");
    h_wait_lines(h_path(&env, "exec.txt"), 20, 60000);
    h_wait_lines(h_path(&env, "native.txt"), 20, 60000);
    h_assert_sub(&env, "t", "notify", "dead", 0);
    h_assert_sub(&env, "t", "nat", "dead", 0);
    char *json = h_ctl(&env, "workers", "--json", NULL);
    cr_assert_not_null(json);
    const char *w = worker_json(json, bad);
    cr_assert(w && strstr(w, "\"refused\":[{\"function\":\"nat\""), "nat is not shown refused: %s", json);
    free(json);
}

static bool broker_log_has(void *arg)
{
    file_needle fn = { h_path(&env, "broker.err"), arg };
    return file_has(&fn);
}

/* heartbeat = 10 s: only the goodbye can make the worker vanish from
 * `workers` within a few seconds (3 missed heartbeats would take 30). */
Test(workers, a_worker_stopped_by_sigterm_says_goodbye)
{
    char text[2048];
    snprintf(text, sizeof text,
             "broker = { publish_endpoint = \"%s\"; worker_endpoint = \"%s\"; admin_endpoint = \"%s\";\n"
             "  data_dir = \"%s/data\"; durability = \"os\"; heartbeat = 10.0; };\n"
             "functions = ( { name = \"notify\"; exec = [\"tests/handlers/spine_record.sh\"];\n"
             "  env = { RECORD_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"notify\"; } ); } );\n",
             env.pub, env.wrk, env.adm, env.dir, h_path(&env, "exec.txt"));
    if (env.curve)   /* as h_config writes it */
        strcat(text, "security = { curve = true; secret_key = \"keys/broker.key\"; publishers = \"keys/publishers\";\n"
                     "  workers = \"keys/workers\"; admins = \"keys/admins\"; };\n");
    h_write(env.cfg, text);
    pid_t broker = h_broker(&env);
    pid_t w1 = h_start(&env, "w1", "bin/herald-worker", "--broker", env.wrk, "--root", env.root, "--run-dir",
                       h_path(&env, "runs"), "--concurrency", "2", NULL);
    workers_n one = { &env, 1 }, none = { &env, 0 };
    cr_assert(h_wait(workers_listed, &one, 20000), "the worker did not register");
    publish_lines(5, "in.txt");
    h_wait_lines(h_path(&env, "exec.txt"), 5, 30000);

    cr_assert_eq(h_signal_exit(&env, w1, SIGTERM, 10000), 0, "the worker did not stop cleanly");
    cr_assert(h_wait(workers_listed, &none, 5000), "heraldctl workers still lists a worker that left");
    char left[128];
    snprintf(left, sizeof left, "pid %d) left", (int)w1);
    cr_assert(h_wait(broker_log_has, left, 1000), "the broker's log does not say the worker left");
    cr_assert_eq(count_in_file(h_path(&env, "broker.err"), "missed 3 heartbeats"), 0);

    cr_assert_eq(h_signal_exit(&env, broker, SIGTERM, 15000), 0);
    char *log = h_read(h_path(&env, "broker.err"), NULL);
    cr_assert_not_null(log);
    cr_assert_null(strstr(log, "malformed"), "a clean stop reports malformed messages:\n%s", log);
    free(log);
    /* one function: singular */
    file_needle wl = { h_path(&env, "w1.err"), "serving 1 function, 2 slots" };
    cr_assert(file_has(&wl), "the worker's log lacks \"%s\"", wl.needle);
}

/* No broker at the endpoint: the worker says so (with the endpoint), keeps
 * trying at a modest rate of log lines, and registers once a broker is up. */
Test(workers, a_worker_without_a_broker_says_it_is_retrying_and_connects_later, .timeout = 120)
{
    h_config(&env, "os", "functions = ( { name = \"f\"; exec = [\"true\"]; } );\n");
    h_start(&env, "w", "bin/herald-worker", "--broker", env.wrk, "--root", env.root, "--run-dir",
            h_path(&env, "runs"), "--concurrency", "1", NULL);
    char first[400];
    snprintf(first, sizeof first, "no answer from the broker at %s: retrying", env.wrk);
    file_needle f1 = { h_path(&env, "w.err"), first };
    cr_assert(h_wait(file_has, &f1, 10000), "the worker does not say it is retrying");
    char again[400];
    snprintf(again, sizeof again, "still no answer from the broker at %s after", env.wrk);
    file_needle f2 = { h_path(&env, "w.err"), again };
    cr_assert(h_wait(file_has, &f2, 20000), "the worker does not say it is still retrying");
    /* ~13 s of retrying every 3 s: two lines, not one per attempt */
    size_t n = count_in_file(h_path(&env, "w.err"), "answer from the broker at");
    cr_assert(n <= 3, "%zu retry lines in ~13 s: a flood", n);

    h_broker(&env);
    workers_n one = { &env, 1 };
    cr_assert(h_wait(workers_listed, &one, 20000), "the worker did not connect once the broker came up");
    file_needle reg = { h_path(&env, "w.err"), "registered with" };
    cr_assert(file_has(&reg), "the worker does not say it registered");
    /* one slot: singular, in the broker's log too */
    cr_assert(broker_log_has("registered with 1 slot\n"), "the broker's log lacks \"registered with 1 slot\"");
}
