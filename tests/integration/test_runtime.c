/* test_runtime.c — the `runtime` handler kind through the real programs
 * (DESIGN §11): broker, worker and heraldctl as processes, the Python and
 * Node runtime clients of examples/runtimes/ as the runtimes, and
 * tests/handlers/rt_proto.py speaking the Runtime API by hand where the
 * API's own answers are the point. What a test checks is what a user sees:
 * invoke's output and error, dead letters, stats, the processes and files
 * left behind. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "harness.h"
#include "tjson.h"

static h_env env;

static void setup(void) { h_setup(&env); }
static void teardown(void) { h_teardown(&env); }

TestSuite(runtime, .init = setup, .fini = teardown, .timeout = 120);

#define PY "command = [\"python3\", \"examples/runtimes/python/bootstrap.py\"]; "
#define NODE "command = [\"node\", \"examples/runtimes/node/bootstrap.js\"]; "

/* heraldctl invoke FUNCTION PAYLOAD: exit code, output and error (caller frees). */
static int invoke(const char *fn, const char *payload, char **out, char **err)
{
    return h_run(&env, NULL, out, err, "bin/heraldctl", "--broker", env.adm, "invoke", fn, payload, NULL);
}

/* invoke that must succeed: its output parsed as JSON. */
static j_val *invoke_ok(const char *fn, const char *payload)
{
    char *out = NULL, *err = NULL;
    int rc = invoke(fn, payload, &out, &err);
    cr_assert_eq(rc, 0, "invoke %s %s: exit %d: %s (worker log: %s)", fn, payload, rc, err ? err : "",
                 h_read(h_path(&env, "worker1.err"), NULL));
    j_val *v = j_parse(out);
    cr_assert(v, "invoke %s %s: not JSON: '%s'", fn, payload, out);
    free(err);
    return v;
}

/* invoke that must fail: its error text (stderr), exit 1. */
static char *invoke_fails(const char *fn, const char *payload)
{
    char *out = NULL, *err = NULL;
    int rc = invoke(fn, payload, &out, &err);
    cr_assert_eq(rc, 1, "invoke %s %s: exit %d, wanted 1; out '%s' err '%s'", fn, payload, rc, out, err);
    free(out);
    return err;
}

static bool workers_up(void *arg)
{
    (void)arg;
    char *st = h_stats(&env);
    j_val *v = st ? j_parse(st) : NULL;
    free(st);
    const j_val *w = v ? j_get(v, "workers") : NULL;
    return w && j_len(w) == 1;
}

static void start(const char *body, int concurrency)
{
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, concurrency);
    cr_assert(h_wait(workers_up, NULL, 15000), "the worker never registered: %s",
              h_read(h_path(&env, "worker1.err"), NULL));
}

static bool pid_alive(pid_t pid)
{
    return kill(pid, 0) == 0 || errno != ESRCH;
}

static bool pid_gone(void *arg)
{
    return !pid_alive(*(pid_t *)arg);
}

static bool path_gone(void *arg)
{
    struct stat st;
    return lstat((const char *)arg, &st) < 0;
}

/* Open descriptors of pid. */
static int count_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

typedef struct { pid_t pid; int want; } fd_want;

static bool fds_back(void *arg)
{
    fd_want *w = arg;
    return count_fds(w->pid) == w->want;
}

/* A function's runtime counter from stats --json (cold_starts, warm, init_ms,
 * or "recycles.REASON"); LONG_MIN when missing. */
static long rt_stat(const char *function, const char *key)
{
    char *st = h_stats(&env);
    j_val *v = st ? j_parse(st) : NULL;
    free(st);
    const j_val *f = v ? j_find(j_get(v, "functions"), "name", function, NULL, NULL) : NULL;
    if (!f)
        return LONG_MIN;
    if (!strncmp(key, "recycles.", 9)) {
        const j_val *r = j_get(f, "recycles");
        return r && j_get(r, key + 9) ? (long)j_int(r, key + 9) : LONG_MIN;
    }
    return j_get(f, key) ? (long)j_num(f, key) : LONG_MIN;
}

typedef struct { const char *function, *key; long at_least; } stat_want;

static bool stat_reached(void *arg)
{
    stat_want *w = arg;
    long v = rt_stat(w->function, w->key);
    return v != LONG_MIN && v >= w->at_least;
}

static void wait_stat(const char *function, const char *key, long at_least)
{
    stat_want w = { function, key, at_least };
    cr_assert(h_wait(stat_reached, &w, 20000), "stats %s.%s never reached %ld: %s", function, key, at_least,
              h_stats(&env));
}

/* --- warm processes ---------------------------------------------------------- */

Test(runtime, python_handler_stays_warm_one_process_many_events)
{
    start("functions = ( { name = \"py\"; runtime = { " PY "handler = \"tests/handlers/rt_py.handler\"; }; } );\n",
          2);
    j_val *a = invoke_ok("py", "{\"op\":\"pid\"}");
    j_val *b = invoke_ok("py", "{\"op\":\"pid\"}");
    j_val *c = invoke_ok("py", "{\"op\":\"pid\"}");
    cr_assert_eq(j_int(a, "pid"), j_int(b, "pid"), "a second event started a new process");
    cr_assert_eq(j_int(b, "pid"), j_int(c, "pid"));
    cr_assert_eq(j_int(c, "calls"), 3, "the module was not kept between events");
    /* a payload that is not JSON reaches the handler as a string, and comes back */
    char *out = NULL, *err = NULL;
    cr_assert_eq(invoke("py", "plain words", &out, &err), 0, "%s", err);
    cr_assert_str_eq(out, "\"plain words\"");
    wait_stat("py", "cold_starts", 1);
    wait_stat("py", "warm", 3);
    cr_assert_eq(rt_stat("py", "cold_starts"), 1);
    cr_assert_gt(rt_stat("py", "init_ms"), 0, "init time not counted");
}

Test(runtime, node_handler_runs_through_the_node_client)
{
    start("functions = ( { name = \"js\"; runtime = { " NODE "handler = \"tests/handlers/rt_node.handler\"; }; },\n"
          "  { name = \"jsapp\"; runtime = { " NODE "handler = \"examples/runtimes/node/app.handler\"; }; } );\n",
          2);
    j_val *a = invoke_ok("js", "{\"op\":\"pid\"}");
    j_val *b = invoke_ok("js", "{\"op\":\"later\"}");
    cr_assert(j_get(b, "later"), "an async handler's promise was not awaited");
    j_val *c = invoke_ok("js", "{\"op\":\"pid\"}");
    cr_assert_eq(j_int(a, "pid"), j_int(c, "pid"), "node was not kept warm");
    cr_assert_eq(j_int(c, "calls"), 3);
    j_val *ctx = invoke_ok("js", "{\"op\":\"context\"}");
    cr_assert_str_eq(j_str(ctx, "functionName"), "js");
    cr_assert_str_eq(j_str(ctx, "invokedFunctionArn"), "arn:aws:lambda:us-east-1:000000000000:function:js");
    char *e = invoke_fails("js", "{\"op\":\"raise\",\"message\":\"bad input\"}");
    cr_assert(strstr(e, "TypeError: bad input"), "error text '%s'", e);
    e = invoke_fails("js", "{\"op\":\"reject\"}");
    cr_assert(strstr(e, "Herald.Reject: not for us"), "error text '%s'", e);
    j_val *app = invoke_ok("jsapp", "{\"text\":\"a b c\"}");
    cr_assert(app, "the example app did not answer");
}

static char gw_url[64];

static bool gateway_listening(void *arg)
{
    (void)arg;
    char *log = h_read(h_path(&env, "gateway.err"), NULL);
    const char *p = log ? strstr(log, "listening on 127.0.0.1:") : NULL;
    if (p)
        snprintf(gw_url, sizeof gw_url, "http://127.0.0.1:%d/metrics", atoi(p + strlen("listening on 127.0.0.1:")));
    free(log);
    return p != NULL;
}

Test(runtime, stats_and_metrics_count_cold_starts_warm_invocations_and_recycles)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"py\"; runtime = { " PY "handler = \"tests/handlers/rt_py.handler\";\n"
             "  max_invocations = 2; }; } );\n"
             "gateway = { listen = \"127.0.0.1:0\"; broker = \"%s\"; admin = \"%s\"; };\n", env.pub, env.adm);
    start(body, 2);
    /* 5 events, 2 per process: processes of 2, 2 and 1 events */
    for (int i = 0; i < 5; i++)
        invoke_ok("py", "{\"op\":\"pid\"}");
    wait_stat("py", "recycles.max_invocations", 2);   /* STATS come once a heartbeat: wait for each */
    wait_stat("py", "warm", 2);
    wait_stat("py", "cold_starts", 3);
    cr_assert_eq(rt_stat("py", "cold_starts"), 3, "%s", h_stats(&env));
    cr_assert_eq(rt_stat("py", "recycles.max_invocations"), 2);
    cr_assert_eq(rt_stat("py", "warm"), 2);
    cr_assert_eq(rt_stat("py", "recycles.crash"), 0);
    h_start(&env, "gateway", "bin/herald-gateway", "-c", env.cfg, NULL);
    cr_assert(h_wait(gateway_listening, NULL, 10000), "the gateway did not say where it listens");
    char *m = NULL, *err = NULL;
    cr_assert_eq(h_run(&env, NULL, &m, &err, "/usr/bin/curl", "-sf", gw_url, NULL), 0, "GET /metrics: %s", err);
    static const char *const want[] = {
        "herald_function_cold_starts_total{function=\"py\"} 3\n",
        "herald_function_warm_invocations_total{function=\"py\"} 2\n",
        "herald_function_recycles_total{function=\"py\",reason=\"max_invocations\"} 2\n",
        "herald_function_recycles_total{function=\"py\",reason=\"crash\"} 0\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert(strstr(m, want[i]), "/metrics lacks %s", want[i]);
    cr_assert(strstr(m, "herald_function_init_seconds_total{function=\"py\"} "), "/metrics lacks the init time");
}

/* --- layout and environment ---------------------------------------------------- */

/* The value of NAME in an environ dump (one "NAME=value" per line), or NULL. */
static const char *env_get(char **lines, size_t n, const char *name)
{
    size_t k = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (!strncmp(lines[i], name, k) && lines[i][k] == '=')
            return lines[i] + k + 1;
    return NULL;
}

Test(runtime, lambda_layout_cwd_is_the_task_root_home_and_tmpdir_its_own_dir_and_the_environment_is_exact)
{
    char body[2048];
    /* the command records what it was started with: its fds and its environment, exactly */
    snprintf(body, sizeof body,
             "functions = ( { name = \"py\"; memory_mb = 256; env = { GREETING = \"hi\"; };\n"
             "  runtime = { command = [\"sh\", \"-c\", \"ls /proc/self/fd > %s; tr '\\\\000' '\\\\n' < /proc/$$/environ > %s; "
             "exec python3 examples/runtimes/python/bootstrap.py\"];\n"
             "              handler = \"tests/handlers/rt_py.handler\"; }; } );\n",
             h_path(&env, "fds.txt"), h_path(&env, "environ.txt"));
    start(body, 2);
    j_val *v = invoke_ok("py", "{\"op\":\"env\"}");
    cr_assert_str_eq(j_str(v, "cwd"), env.root, "cwd is not LAMBDA_TASK_ROOT");
    char **e;
    size_t total, n = h_lines_sorted(h_path(&env, "environ.txt"), &e, &total);
    cr_assert_gt(n, 0, "the command did not record its environment");
    cr_assert_str_eq(env_get(e, n, "LAMBDA_TASK_ROOT"), env.root);
    cr_assert_str_eq(env_get(e, n, "_HANDLER"), "tests/handlers/rt_py.handler");
    cr_assert_str_eq(env_get(e, n, "AWS_LAMBDA_FUNCTION_NAME"), "py");
    cr_assert_str_eq(env_get(e, n, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), "256");
    cr_assert_str_eq(env_get(e, n, "AWS_LAMBDA_FUNCTION_VERSION"), "$LATEST");
    cr_assert_str_eq(env_get(e, n, "AWS_REGION"), "us-east-1");
    cr_assert_str_eq(env_get(e, n, "GREETING"), "hi");
    const char *api = env_get(e, n, "AWS_LAMBDA_RUNTIME_API");
    cr_assert(api && !strncmp(api, "127.0.0.1:", 10) && atoi(api + 10) > 0, "AWS_LAMBDA_RUNTIME_API '%s'", api);
    const char *home = env_get(e, n, "HOME"), *tmp = env_get(e, n, "TMPDIR");
    cr_assert(home && tmp && !strcmp(home, tmp), "HOME %s, TMPDIR %s", home, tmp);
    cr_assert(!strncmp(home, h_path(&env, "runs"), strlen(h_path(&env, "runs"))), "HOME %s not under the run dir", home);
    /* nothing else from the worker: every name is one of these */
    static const char *const allowed[] = {
        "PATH", "LANG", "TZ", "HOME", "TMPDIR", "GREETING", "AWS_LAMBDA_RUNTIME_API", "_HANDLER",
        "LAMBDA_TASK_ROOT", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION", "AWS_REGION",
    };
    for (size_t i = 0; i < n; i++) {
        bool ok = false;
        for (size_t k = 0; k < sizeof allowed / sizeof allowed[0] && !ok; k++)
            ok = !strncmp(e[i], allowed[k], strlen(allowed[k])) && e[i][strlen(allowed[k])] == '=';
        cr_assert(ok, "the runtime's environment has %s", e[i]);
    }
    cr_assert_null(env_get(e, n, "AWS_LAMBDA_MAX_CONCURRENCY"));
    h_free_lines(e, n);
    /* fds 0–2 only when it started: ls, a child of it, sees those and the
     * one it opened to read its fd directory (3, the lowest free one) */
    char *fds = h_read(h_path(&env, "fds.txt"), NULL);
    cr_assert(fds, "the command did not run");
    cr_assert_str_eq(fds, "0\n1\n2\n3\n", "the runtime started with more than fds 0-2: %s", fds);
    /* Lambda's context */
    j_val *c = invoke_ok("py", "{\"op\":\"context\"}");
    cr_assert_str_eq(j_str(c, "function_name"), "py");
    cr_assert_eq(j_int(c, "memory_limit_in_mb"), 256);
    cr_assert_str_eq(j_str(c, "invoked_function_arn"), "arn:aws:lambda:us-east-1:000000000000:function:py");
    long rem = (long)j_int(c, "remaining_ms");
    cr_assert(rem > 0 && rem <= 30000, "remaining time %ld ms of a 30 s timeout", rem);
    cr_assert_eq(strlen(j_str(c, "aws_request_id")), 36, "request id '%s'", j_str(c, "aws_request_id"));
}

Test(runtime, run_dir_persists_between_events_of_a_process_and_is_removed_after)
{
    start("functions = ( { name = \"py\"; runtime = { " PY "handler = \"tests/handlers/rt_py.handler\"; }; } );\n",
          2);
    j_val *a = invoke_ok("py", "{\"op\":\"tmp\"}");
    j_val *b = invoke_ok("py", "{\"op\":\"tmp\"}");
    cr_assert(!j_get(a, "existed")->b, "a new process found a file in its run dir");
    cr_assert(j_get(b, "existed")->b, "the run dir did not persist between events");
    cr_assert_str_eq(j_str(a, "tmpdir"), j_str(b, "tmpdir"));
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", j_str(a, "tmpdir"));
    pid_t pid = (pid_t)j_int(a, "pid");
    /* the worker stops: the process and its run dir go */
    cr_assert_eq(h_signal_exit(&env, env.pids[1], SIGTERM, 20000), 0, "the worker did not stop cleanly");
    cr_assert(!pid_alive(pid), "the runtime process %d outlived its worker", (int)pid);
    cr_assert(path_gone(dir), "the run dir %s was left behind", dir);
}

/* --- outcomes -------------------------------------------------------------------- */

Test(runtime, outcomes_error_rejected_crashed_and_exit_as_design_says)
{
    start("functions = ( { name = \"py\"; max_attempts = 2;\n"
          "  runtime = { " PY "handler = \"tests/handlers/rt_py.handler\"; }; } );\n",
          2);
    char *e = invoke_fails("py", "{\"op\":\"raise\",\"message\":\"no such user\"}");
    cr_assert(strstr(e, "ValueError: no such user"), "error text '%s'", e);
    e = invoke_fails("py", "{\"op\":\"reject\",\"message\":\"malformed\"}");
    cr_assert(strstr(e, "Herald.Reject: malformed"), "error text '%s'", e);
    e = invoke_fails("py", "{\"op\":\"crash\"}");
    cr_assert(strstr(e, "killed by signal 11 (SIGSEGV)"), "error text '%s'", e);
    e = invoke_fails("py", "{\"op\":\"exit\"}");
    cr_assert(strstr(e, "exit status 3") && strstr(e, "exiting on purpose"), "error text '%s'", e);
    /* a handler flooding stdout (64 MiB) neither blocks nor fails */
    j_val *fl = invoke_ok("py", "{\"op\":\"flood\",\"chunks\":1000}");
    cr_assert_eq(j_int(fl, "flooded"), 1000);
    /* the classes in stats */
    cr_assert_eq(h_fn_stat(&env, "py", "errors"), 1);
    cr_assert_eq(h_fn_stat(&env, "py", "rejected"), 1);
    cr_assert_eq(h_fn_stat(&env, "py", "crashed"), 2);
    /* and a crash ends only its process: the next event runs */
    j_val *v = invoke_ok("py", "{\"op\":\"pid\"}");
    cr_assert_gt(j_int(v, "pid"), 0);
    wait_stat("py", "recycles.crash", 2);
}

Test(runtime, a_response_over_6_mib_fails_the_invoke_with_response_size_too_large)
{
    start("functions = ( { name = \"py\"; runtime = { " PY "handler = \"tests/handlers/rt_py.handler\"; }; } );\n",
          2);
    char *e = invoke_fails("py", "{\"op\":\"big\",\"bytes\":7000000}");
    cr_assert(strstr(e, "Function.ResponseSizeTooLarge"), "error text '%s'", e);
    /* 6 MiB exactly is fine (the JSON string's quotes are 2 of its bytes) */
    char *out = NULL, *err = NULL;
    cr_assert_eq(invoke("py", "{\"op\":\"big\",\"bytes\":6291454}", &out, &err), 0, "%s", err);
    cr_assert_eq(strlen(out), 6291456);
}

Test(runtime, timeout_kills_the_whole_tree_and_the_next_event_gets_a_fresh_process)
{
    start("functions = ( { name = \"py\"; timeout = 1.0; max_attempts = 1;\n"
          "  runtime = { " PY "handler = \"tests/handlers/rt_py.handler\"; }; } );\n",
          2);
    j_val *before = invoke_ok("py", "{\"op\":\"pid\"}");
    char payload[512];
    snprintf(payload, sizeof payload, "{\"op\":\"sleep\",\"seconds\":30,\"orphan\":\"%s\"}", h_path(&env, "orphan"));
    char *e = invoke_fails("py", payload);
    cr_assert(strstr(e, "timeout after 1 s"), "error text '%s'", e);
    char *o = h_read(h_path(&env, "orphan"), NULL);
    cr_assert(o, "the handler did not start its grandchild");
    pid_t orphan = (pid_t)atoi(o);
    cr_assert(h_wait(pid_gone, &orphan, 10000), "the setsid'd grandchild %d survived the timeout", (int)orphan);
    pid_t old = (pid_t)j_int(before, "pid");
    cr_assert(!pid_alive(old), "the timed-out process %d is still there", (int)old);
    j_val *after = invoke_ok("py", "{\"op\":\"pid\"}");
    cr_assert_neq(j_int(after, "pid"), old, "the event after a timeout ran in the old process");
    cr_assert_eq(h_fn_stat(&env, "py", "timeouts"), 1);
    wait_stat("py", "recycles.timeout", 1);
}

Test(runtime, init_errors_count_an_attempt_and_the_runtime_restarts_with_backoff)
{
    start("functions = ( { name = \"broken\"; max_attempts = 1; runtime = { " PY
          "handler = \"tests/handlers/rt_broken.handler\"; }; },\n"
          "  { name = \"says\"; max_attempts = 1; env = { RT_PROTO_INIT_ERROR = \"1\"; };\n"
          "    runtime = { command = [\"python3\", \"tests/handlers/rt_proto.py\"]; }; },\n"
          "  { name = \"quits\"; max_attempts = 1; runtime = { command = [\"false\"]; }; },\n"
          "  { name = \"slow\"; max_attempts = 1; runtime = { command = [\"sleep\", \"30\"]; init_timeout = 0.5; }; } );\n",
          2);
    char *e = invoke_fails("broken", "{}");
    cr_assert(strstr(e, "Runtime.InitError") && strstr(e, "this module cannot load"), "error text '%s'", e);
    e = invoke_fails("says", "{}");
    cr_assert(strstr(e, "Runtime.InitError: Test.ConfigMissing: no config file"), "error text '%s'", e);
    e = invoke_fails("quits", "{}");
    cr_assert(strstr(e, "Runtime.InitError: exit status 1"), "error text '%s'", e);
    e = invoke_fails("slow", "{}");
    cr_assert(strstr(e, "Runtime.InitError: init timeout after 0.5 s"), "error text '%s'", e);
    /* counted as attempts (errors), and as init_error recycles */
    cr_assert_eq(h_fn_stat(&env, "quits", "errors"), 1);
    /* the next start waits (backoff) but comes: a second event fails the same way */
    e = invoke_fails("quits", "{}");
    cr_assert(strstr(e, "Runtime.InitError: exit status 1"), "error text '%s'", e);
    wait_stat("quits", "recycles.init_error", 2);
    cr_assert_eq(rt_stat("quits", "cold_starts"), 0, "a runtime that never asked for an event counted as started");
}

/* A runtime that fails its init is started again after 1 s, then 2 s, 4 s…
 * (up to 30 s): each start writes its time, and the gaps between starts are
 * at least the backoff (a loaded machine only makes them longer). */
Test(runtime, a_failing_init_is_restarted_after_1_s_then_doubling)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"quits\"; max_attempts = 1;\n"
             "  runtime = { command = [\"sh\", \"-c\", \"date +%%s%%N >> %s; exit 1\"]; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"quits\"; } ); } );\n",
             h_path(&env, "starts"));
    start(body, 2);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(h_run(&env, NULL, NULL, NULL, "bin/herald-publish", "--broker", env.pub, "t", "x", NULL), 0);
    wait_stat("quits", "recycles.init_error", 4);
    char **lines;
    size_t total, n = h_lines_sorted(h_path(&env, "starts"), &lines, &total);
    cr_assert_geq(n, 4, "%zu starts", n);
    double want = 1.0;
    for (size_t i = 1; i < 4; i++, want *= 2) {
        double gap = (double)(atoll(lines[i]) - atoll(lines[i - 1])) / 1e9;
        cr_assert_geq(gap, want - 0.05, "start %zu came %.3f s after the one before, not after a %.0f s backoff", i,
                      gap, want);
    }
    h_free_lines(lines, n);
}

/* --- recycling --------------------------------------------------------------------- */

Test(runtime, max_invocations_recycles_the_process_with_jitter)
{
    start("functions = ( { name = \"py\"; runtime = { " PY "handler = \"tests/handlers/rt_py.handler\";\n"
          "  max_invocations = 3; }; } );\n",
          2);
    pid_t pids[12];
    int distinct = 0, run = 1, longest = 1;
    for (int i = 0; i < 12; i++) {
        j_val *v = invoke_ok("py", "{\"op\":\"pid\"}");
        pids[i] = (pid_t)j_int(v, "pid");
        if (i > 0 && pids[i] == pids[i - 1]) {
            run++;
        } else {
            distinct++;
            run = 1;
        }
        if (run > longest)
            longest = run;
    }
    /* 3 ± 10% is 3: each process serves exactly 3 */
    cr_assert_eq(distinct, 4, "12 events over max_invocations 3 ran in %d processes", distinct);
    cr_assert_eq(longest, 3);
    wait_stat("py", "recycles.max_invocations", 3);
}

Test(runtime, idle_timeout_stops_an_idle_process)
{
    start("functions = ( { name = \"py\"; runtime = { " PY "handler = \"tests/handlers/rt_py.handler\";\n"
          "  idle_timeout = 0.5; }; } );\n",
          2);
    pid_t worker = env.pids[1];
    int fds_before = count_fds(worker);
    j_val *a = invoke_ok("py", "{\"op\":\"tmp\"}");
    pid_t pid = (pid_t)j_int(a, "pid");
    cr_assert(h_wait(pid_gone, &pid, 15000), "the idle process %d was not stopped", (int)pid);
    /* its run dir goes with it, while the worker runs on */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", j_str(a, "tmpdir"));
    cr_assert(h_wait(path_gone, dir, 10000), "the stopped process's run dir %s was left behind", dir);
    /* and the worker holds no descriptor of it any more */
    fd_want fw = { worker, fds_before };
    cr_assert(h_wait(fds_back, &fw, 10000), "the worker had %d fds before the runtime, %d after it stopped",
              fds_before, count_fds(worker));
    j_val *b = invoke_ok("py", "{\"op\":\"pid\"}");
    cr_assert_neq(j_int(b, "pid"), pid);
    wait_stat("py", "recycles.idle", 1);
}

Test(runtime, a_process_above_memory_mb_is_recycled_between_events)
{
    start("functions = ( { name = \"py\"; memory_mb = 64; runtime = { " PY "handler = \"tests/handlers/rt_py.handler\"; }; } );\n",
          2);
    j_val *a = invoke_ok("py", "{\"op\":\"grow\",\"mb\":100}");
    pid_t pid = (pid_t)j_int(a, "pid");
    cr_assert(h_wait(pid_gone, &pid, 15000), "the process %d above memory_mb was not recycled", (int)pid);
    j_val *b = invoke_ok("py", "{\"op\":\"pid\"}");
    cr_assert_neq(j_int(b, "pid"), pid);
    wait_stat("py", "recycles.memory", 1);
}

/* --- the API ------------------------------------------------------------------------- */

/* GET /next on addr from this process: "closed" when the server hangs up. */
static const char *probe_from_here(const char *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(strchr(addr, ':') + 1)) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0, "connect %s: %s", addr, strerror(errno));
    static const char req[] = "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n";
    ssize_t w = send(fd, req, sizeof req - 1, MSG_NOSIGNAL);
    char buf[256];
    struct timeval tv = { 10, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t n = w < 0 ? 0 : recv(fd, buf, sizeof buf - 1, 0);
    close(fd);
    return n <= 0 ? "closed" : "answered";
}

Test(runtime, the_api_refuses_every_process_but_its_runtimes_own)
{
    start("functions = ( { name = \"a\"; runtime = { " PY "handler = \"tests/handlers/rt_py.handler\"; }; },\n"
          "  { name = \"b\"; runtime = { " PY "handler = \"tests/handlers/rt_py.handler\"; }; } );\n",
          2);
    j_val *a = invoke_ok("a", "{\"op\":\"addr\"}");
    const char *addr = j_str(a, "addr");
    /* another function's runtime */
    char payload[256];
    snprintf(payload, sizeof payload, "{\"op\":\"probe\",\"addr\":\"%s\"}", addr);
    j_val *b = invoke_ok("b", payload);
    cr_assert_str_eq(j_str(b, "status"), "closed", "another function's handler reached a's Runtime API");
    /* this test process (not in the runtime's tree) */
    cr_assert_str_eq(probe_from_here(addr), "closed", "an outside process reached the Runtime API");
    /* another user (when the test may become one) */
    if (geteuid() == 0) {
        pid_t child = fork();
        if (child == 0) {
            if (setgid(65534) < 0 || setuid(65534) < 0)
                _exit(3);
            _exit(!strcmp(probe_from_here(addr), "closed") ? 0 : 1);
        }
        int st = 0;
        cr_assert_eq(waitpid(child, &st, 0), child);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "another user's process reached the Runtime API (status %d)", st);
    }
    /* and a still works: the intruders took nothing */
    j_val *again = invoke_ok("a", "{\"op\":\"pid\"}");
    cr_assert_eq(j_int(again, "pid"), j_int(a, "pid"));
}

typedef struct { const char *path, *key; j_val *v; } report_want;

static bool report_has(void *arg)
{
    report_want *w = arg;
    char *text = h_read(w->path, NULL);
    w->v = text ? j_parse(text) : NULL;
    return w->v && j_get(w->v, w->key);
}

/* rt_proto.py's report once it has key (it writes it after answering). */
static j_val *wait_report(const char *path, const char *key)
{
    report_want w = { path, key, NULL };
    cr_assert(h_wait(report_has, &w, 20000), "the runtime's report %s never had %s", path, key);
    return w.v;
}

Test(runtime, the_api_answers_like_aws_wrong_id_second_response_and_413)
{
    start("functions = ( { name = \"p\"; max_attempts = 1; runtime = { command = [\"python3\", \"tests/handlers/rt_proto.py\"]; }; } );\n",
          2);
    char payload[512];
    const char *rep = h_path(&env, "rep.json");
    snprintf(payload, sizeof payload, "{\"op\":\"wrong_id\",\"report\":\"%s\"}", rep);
    invoke_ok("p", payload);
    j_val *r = j_parse(h_read(rep, NULL));
    cr_assert_eq(j_int(r, "next"), 200);
    cr_assert_eq(j_int(r, "wrong_id"), 400, "a response for another request id");
    const j_val *h = j_get(r, "headers");
    static const char *const hdrs[] = { "Lambda-Runtime-Aws-Request-Id", "Lambda-Runtime-Deadline-Ms",
                                        "Lambda-Runtime-Invoked-Function-Arn", "Lambda-Runtime-Trace-Id",
                                        "Herald-Topic", "Herald-Message-Id", "Herald-Attempt", "Herald-Attributes" };
    for (size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++)
        cr_assert(j_str(h, hdrs[i]), "GET next without %s", hdrs[i]);
    cr_assert_str_eq(j_str(h, "Herald-Attempt"), "1");
    cr_assert_str_eq(j_str(h, "Herald-Attributes"), "{}");
    long long deadline = atoll(j_str(h, "Lambda-Runtime-Deadline-Ms"));
    cr_assert(deadline > 1700000000000LL, "deadline %lld", deadline);

    snprintf(payload, sizeof payload, "{\"op\":\"twice\",\"report\":\"%s\"}", rep);
    invoke_ok("p", payload);
    r = wait_report(rep, "second");   /* written after its second response: after the invoke */
    cr_assert_eq(j_int(r, "first"), 202);
    cr_assert_eq(j_int(r, "second"), 403, "a second response for the same id");

    snprintf(payload, sizeof payload, "{\"op\":\"too_large\",\"report\":\"%s\"}", rep);
    char *e = invoke_fails("p", payload);
    cr_assert(strstr(e, "Function.ResponseSizeTooLarge"), "error text '%s'", e);
    r = wait_report(rep, "too_large");   /* the invoke may end before the runtime reads its 413 */
    cr_assert_eq(j_int(r, "too_large"), 413);

    snprintf(payload, sizeof payload, "{\"op\":\"error\",\"report\":\"%s\"}", rep);
    e = invoke_fails("p", payload);
    cr_assert(strstr(e, "Test.Broken: it broke"), "error text '%s'", e);
}

/* --- events ---------------------------------------------------------------------------- */

Test(runtime, topic_events_run_exactly_once_across_warm_processes)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"py\"; runtime = { " PY "handler = \"tests/handlers/rt_py.handler\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"py\"; } ); } );\n");
    start(body, 4);
    const char *in = h_path(&env, "events.txt"), *rec = h_path(&env, "record.txt");
    FILE *f = fopen(in, "w");
    for (int i = 0; i < 300; i++)
        fprintf(f, "{\"op\":\"record\",\"path\":\"%s\",\"n\":%d}\n", rec, i);
    fclose(f);
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, in, &out, &err, "bin/herald-publish", "--broker", env.pub, "--lines", "t", NULL);
    cr_assert_eq(rc, 0, "publish: %s", err);
    h_wait_sub(&env, "t", "py", "succeeded", 300, 60000);
    char **lines;
    size_t total, n = h_lines_sorted(rec, &lines, &total);
    cr_assert_eq(total, 300, "%zu handler runs for 300 events", total);
    cr_assert_eq(n, 300, "duplicates: %zu distinct of %zu", n, total);
    /* at most min(slots 4, unlimited) processes ran them */
    char **pids = calloc(n, sizeof *pids);
    size_t np = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = strchr(lines[i], ' ') + 1;
        bool seen = false;
        for (size_t k = 0; k < np && !seen; k++)
            seen = !strcmp(pids[k], p);
        if (!seen)
            pids[np++] = (char *)p;
    }
    cr_assert(np >= 1 && np <= 4, "%zu processes ran the events, the limit is 4", np);
    h_free_lines(lines, n);
}

Test(runtime, sns_format_wraps_topic_deliveries_in_the_records_envelope)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"py\"; env = { RT_OUT = \"%s\"; };\n"
             "  runtime = { " PY "handler = \"tests/handlers/rt_py.handler\"; format = \"sns\"; }; } );\n"
             "topics = ( { name = \"uploads\"; subscriptions = ( { function = \"py\"; } ); } );\n",
             h_path(&env, "sns.jsonl"));
    start(body, 2);
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "bin/herald-publish", "--broker", env.pub, "--attr", "kind=png",
                   "uploads", "hello \"world\"", NULL);
    cr_assert_eq(rc, 0, "publish: %s", err);
    h_wait_lines(h_path(&env, "sns.jsonl"), 1, 30000);
    j_val *v = j_parse(h_read(h_path(&env, "sns.jsonl"), NULL));
    cr_assert(v, "not one JSON line");
    const j_val *rec = j_at(j_get(j_get(v, "event"), "Records"), 0);
    cr_assert_str_eq(j_str(rec, "EventSource"), "aws:sns");
    const j_val *sns = j_get(rec, "Sns");
    cr_assert_str_eq(j_str(sns, "Message"), "hello \"world\"");
    cr_assert_str_eq(j_str(sns, "TopicArn"), "arn:aws:sns:us-east-1:000000000000:uploads");
    cr_assert_str_eq(j_str(sns, "Type"), "Notification");
    cr_assert_str_eq(j_str(sns, "MessageId"), j_str(v, "message_id"));
    cr_assert_str_eq(j_str(j_get(j_get(sns, "MessageAttributes"), "kind"), "Value"), "png");
    cr_assert_str_eq(j_str(v, "topic"), "uploads");
    cr_assert_str_eq(j_str(j_get(v, "attributes"), "kind"), "png");
    /* a direct invoke is not a topic delivery: the payload as it is */
    j_val *d = invoke_ok("py", "{\"op\":\"echo\",\"x\":1}");
    cr_assert_str_eq(j_str(d, "op"), "echo");
}

Test(runtime, async_invoke_runs_a_runtime_function)
{
    start("functions = ( { name = \"py\"; runtime = { " PY "handler = \"tests/handlers/rt_py.handler\"; }; } );\n", 2);
    char payload[512], *out = NULL, *err = NULL;
    snprintf(payload, sizeof payload, "{\"op\":\"record\",\"path\":\"%s\",\"n\":7}", h_path(&env, "async.txt"));
    int rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "--broker", env.adm, "invoke", "--async", "py", payload, NULL);
    cr_assert_eq(rc, 0, "invoke --async: %s", err);
    h_wait_lines(h_path(&env, "async.txt"), 1, 30000);
    char *got = h_read(h_path(&env, "async.txt"), NULL);
    cr_assert(!strncmp(got, "7 ", 2), "recorded '%s'", got);
}

Test(runtime, an_event_handed_to_a_process_that_ends_before_asking_goes_back_uncounted)
{
    start("functions = ( { name = \"p\"; runtime = { command = [\"python3\", \"tests/handlers/rt_proto.py\"]; }; } );\n"
          "topics = ( { name = \"t\"; subscriptions = ( { function = \"p\"; } ); } );\n", 2);
    char ev[1024], *out = NULL, *err = NULL;
    const char *until = h_path(&env, "until"), *r1 = h_path(&env, "r1.json"), *r2 = h_path(&env, "r2.json");
    snprintf(ev, sizeof ev, "{\"op\":\"linger\",\"until\":\"%s\",\"report\":\"%s\"}", until, r1);
    cr_assert_eq(h_run(&env, NULL, &out, &err, "bin/herald-publish", "--broker", env.pub, "t", ev, NULL), 0, "%s", err);
    h_wait_sub(&env, "t", "p", "succeeded", 1, 30000);
    /* the process answered and lingers: the next event goes to it (it is the idle one) */
    snprintf(ev, sizeof ev, "{\"op\":\"x\",\"report\":\"%s\"}", r2);
    cr_assert_eq(h_run(&env, NULL, &out, &err, "bin/herald-publish", "--broker", env.pub, "t", ev, NULL), 0, "%s", err);
    h_wait_sub(&env, "t", "p", "inflight", 1, 30000);
    h_write(until, "now");   /* it exits without asking for the event */
    j_val *r = wait_report(r2, "headers");
    cr_assert_str_eq(j_str(j_get(r, "headers"), "Herald-Attempt"), "1", "the event was charged an attempt");
    h_wait_sub(&env, "t", "p", "succeeded", 2, 30000);
    h_assert_sub(&env, "t", "p", "failed", 0);
    cr_assert_eq(h_fn_stat(&env, "p", "crashed"), 0);
    wait_stat("p", "cold_starts", 2);
}

/* --- the worker around it ------------------------------------------------------------------ */

Test(runtime, worker_drain_finishes_the_running_event_then_stops_every_process)
{
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"py\"; runtime = { " PY "handler = \"tests/handlers/rt_py.handler\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"py\"; } ); } );\n");
    start(body, 2);
    j_val *a = invoke_ok("py", "{\"op\":\"tmp\"}");
    pid_t pid = (pid_t)j_int(a, "pid");
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", j_str(a, "tmpdir"));
    char ev[512], *out = NULL, *err = NULL;
    snprintf(ev, sizeof ev, "{\"op\":\"sleep\",\"seconds\":2,\"orphan\":\"%s\"}", h_path(&env, "orphan"));
    cr_assert_eq(h_run(&env, NULL, &out, &err, "bin/herald-publish", "--broker", env.pub, "t", ev, NULL), 0, "%s", err);
    h_wait_sub(&env, "t", "py", "inflight", 1, 20000);
    /* the event is running: SIGTERM the worker */
    struct stat st;
    for (int i = 0; i < 1000 && stat(h_path(&env, "orphan"), &st) < 0; i++)
        usleep(10000);
    int code = h_signal_exit(&env, env.pids[1], SIGTERM, 30000);
    cr_assert_eq(code, 0, "the worker exited %d", code);
    h_assert_sub(&env, "t", "py", "succeeded", 1);
    cr_assert(!pid_alive(pid), "the runtime process outlived the worker");
    pid_t orphan = (pid_t)atoi(h_read(h_path(&env, "orphan"), NULL));
    cr_assert(h_wait(pid_gone, &orphan, 5000), "the runtime's grandchild outlived the worker");
    cr_assert(path_gone(dir), "the run dir %s was left behind", dir);
    DIR *d = opendir(h_path(&env, "runs"));
    struct dirent *e;
    int left = 0;
    while (d && (e = readdir(d)))
        left += e->d_name[0] != '.';
    if (d)
        closedir(d);
    cr_assert_eq(left, 0, "the worker left %d entries in its run dir", left);
}

Test(runtime, a_runtime_command_that_cannot_run_is_refused_by_the_worker)
{
    h_config(&env, "os",
             "functions = ( { name = \"gone\"; runtime = { command = [\"tests/handlers/no-such-runtime\"]; }; },\n"
             "  { name = \"py\"; runtime = { " PY "handler = \"tests/handlers/rt_py.handler\"; }; } );\n");
    h_broker(&env);
    h_worker(&env, NULL, 2);
    cr_assert(h_wait(workers_up, NULL, 15000), "no worker");
    char *w = NULL;
    for (int i = 0; i < 500; i++) {
        w = h_ctl(&env, "workers", "--json", NULL);
        if (w && strstr(w, "no-such-runtime"))
            break;
        usleep(10000);
    }
    cr_assert(w && strstr(w, "\"function\":\"gone\"") && strstr(w, "is not an executable program"),
              "workers: %s", w);
}
