/* test_python.c — the Python client (clients/python/herald) against the real
 * broker and worker. Each test writes its config and starts the programs
 * through the harness (temp dir, ipc:// endpoints, process groups killed by
 * PID at teardown), then runs one scenario of tests/python/cases.py with
 * Debian's /usr/bin/python3 (python3-zmq, python3-msgpack) and
 * PYTHONPATH=clients/python: the scenario checks what the client sees, the
 * broker's stats and its database. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define PYTHON "/usr/bin/python3"

static h_env env;
static char script[700];

static void setup(void)
{
    h_setup(&env);
    snprintf(script, sizeof script, "%s/tests/python/cases.py", env.root);
    char pp[700];
    snprintf(pp, sizeof pp, "%s/clients/python", env.root);
    setenv("PYTHONPATH", pp, 1);
    setenv("PYTHONDONTWRITEBYTECODE", "1", 1);   /* no __pycache__ left in the checkout */
}
static void teardown(void) { h_teardown(&env); }
TestSuite(python, .init = setup, .fini = teardown, .timeout = 120);

/* Runs cases.py CASE DIR [ARG]; its words, and the broker's log, on failure. */
static void run_case(const char *name, const char *arg)
{
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, PYTHON, script, name, env.dir, arg, NULL);
    cr_assert_eq(rc, 0, "cases.py %s exits %d:\n%s%s\nbroker log:\n%s", name, rc, out ? out : "", err ? err : "",
                 h_read(h_path(&env, "broker.err"), NULL));
    free(out);
    free(err);
}

static const char *REC =
    "functions = ( { name = \"rec\"; exec = [\"examples/handlers/echo.sh\"]; } );\n"
    "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n";

Test(python, publish_sync_async_batched_with_attributes_delay_and_dedup)
{
    h_config(&env, "os", REC);   /* no worker: every event stays in the database to be counted */
    h_broker(&env);
    run_case("publish_modes", NULL);
}

Test(python, the_example_app_publishes_and_says_why_it_cannot)
{
    h_config(&env, "os", REC);
    h_broker(&env);
    char app[700], *out = NULL, *err = NULL;
    snprintf(app, sizeof app, "%s/examples/python/publish.py", env.root);
    int rc = h_run(&env, NULL, &out, &err, PYTHON, app, "--broker", env.pub, "t", "10", NULL);
    cr_assert_eq(rc, 0, "publish.py exits %d: %s%s", rc, out, err);
    cr_assert(strstr(out, "sync: ") && strstr(out, "-11\n"), "one sync and 10 async ids: %s", out);
    cr_assert(strstr(err, "10 published"), "%s", err);
    free(out);
    free(err);
    rc = h_run(&env, NULL, &out, &err, PYTHON, app, "--broker", env.pub, "nope", NULL);
    cr_assert_eq(rc, 1, "an unknown topic exits 1: %s", err);
    cr_assert(strstr(err, "unknown topic 'nope'"), "in the broker's words: %s", err);
    free(out);
    free(err);
}

Test(python, refusals_raise_clear_exceptions)
{
    h_config_broker(&env, "os", "max_payload = 1024; max_backlog = 3;", REC);
    pid_t b = h_broker(&env);
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)b);
    run_case("refusals", pid);   /* it stops and continues the broker for the Timeout case */
}

Test(python, invoke_sync_and_async_and_a_real_worker_handles_what_python_published)
{
    char body[2048];
    snprintf(body, sizeof body,
             "functions = ( { name = \"echo\"; exec = [\"examples/handlers/echo.sh\"]; env = { ECHO_LOG = \"%s\"; }; },\n"
             "  { name = \"fail\"; exec = [\"tests/handlers/fail.sh\", \"3\"]; max_attempts = 1; },\n"
             "  { name = \"idle\"; exec = [\"examples/handlers/echo.sh\"]; },\n"
             "  { name = \"slow\"; exec = [\"tests/handlers/sleep.sh\"]; env = { PIDFILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"echo\"; } ); } );\n",
             h_path(&env, "echo.log"), h_path(&env, "slow.pid"));
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, "echo,fail,slow", 2);   /* nobody serves idle */
    run_case("invoke_and_worker", NULL);
}

Test(python, admin_methods_with_explicit_all)
{
    h_config(&env, "os",
             "functions = ( { name = \"fail\"; exec = [\"tests/handlers/fail.sh\", \"3\"]; max_attempts = 1; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"fail\"; } ); }, { name = \"ticks\"; } );\n"
             "schedules = ( { name = \"tick\"; rate = \"1 hour\"; topic = \"ticks\"; } );\n");
    h_broker(&env);
    h_worker(&env, "fail", 2);
    run_case("admin_methods", NULL);
}

static bool said_killed(void *arg)
{
    (void)arg;
    char *out = h_read(h_path(&env, "py.out"), NULL);
    bool yes = out && strstr(out, "killed\n");
    free(out);
    return yes;
}

Test(python, broker_sigkill_mid_stream_stores_every_confirmed_publish_once)
{
    h_config(&env, "os", REC);
    pid_t b = h_broker(&env);
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)b);
    /* cases.py kills the broker itself after 900 of its 2,000 async
     * publishes (stopped at 600, so some are sent and unconfirmed) and says
     * "killed"; the broker comes back here while it keeps publishing. */
    pid_t py = h_start(&env, "py", PYTHON, script, "kill9", env.dir, pid, NULL);
    cr_assert(h_wait(said_killed, NULL, 30000), "cases.py never killed the broker: %s",
              h_read(h_path(&env, "py.err"), NULL));
    h_kill(&env, b, SIGKILL);   /* reaps it */
    h_broker(&env);
    int st = h_wait_exit(py, 90000);
    for (int i = 0; i < env.npids; i++)
        if (env.pids[i] == py) env.pids[i] = 0;
    cr_assert_eq(st, 0, "cases.py kill9 exits %d:\n%s%s", st, h_read(h_path(&env, "py.out"), NULL),
                 h_read(h_path(&env, "py.err"), NULL));
}

/* The worker of the CURVE test is registered and configured: an invoke runs. */
static bool echo_served(void *arg)
{
    (void)arg;
    return h_run(&env, NULL, NULL, NULL, "bin/heraldctl", "--broker", env.adm, "--timeout", "2", "--key",
                 h_path(&env, "keys/adm.key"), "--broker-key", h_path(&env, "keys/broker.pub"), "invoke", "echo",
                 "ready?", NULL) == 0;
}

Test(python, curve_keys_from_heraldctl_keygen)
{
    unsetenv("HERALD_KEY");   /* this test makes its own keys, in every mode */
    unsetenv("HERALD_BROKER_KEY");
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s' && mkdir -p keys/publishers keys/workers keys/admins && "
             "for k in broker pub wrk adm; do '%s/bin/heraldctl' keygen keys/$k >/dev/null; done && "
             "cp keys/pub.pub keys/publishers/ && cp keys/wrk.pub keys/workers/ && cp keys/adm.pub keys/admins/",
             env.dir, env.root);
    cr_assert_eq(system(cmd), 0, "heraldctl keygen");
    char body[2048];
    snprintf(body, sizeof body,
             "functions = ( { name = \"echo\"; exec = [\"examples/handlers/echo.sh\"]; } );\n"
             "topics = ( { name = \"t\"; } );\n"
             "security = { curve = true; secret_key = \"keys/broker.key\"; publishers = \"keys/publishers\";\n"
             "  workers = \"keys/workers\"; admins = \"keys/admins\"; };\n");
    h_config(&env, "os", body);
    pid_t b = h_start(&env, "broker", "bin/herald-broker", "-c", env.cfg, NULL);
    (void)b;
    h_start(&env, "worker", "bin/herald-worker", "--broker", env.wrk, "--root", env.root, "--run-dir",
            h_path(&env, "runs"), "--concurrency", "1", "--key", h_path(&env, "keys/wrk.key"), "--broker-key",
            h_path(&env, "keys/broker.pub"), NULL);
    cr_assert(h_wait(echo_served, NULL, 20000), "the CURVE worker never served echo");
    run_case("curve", NULL);
}

Test(python, frozen_broker_re_send_is_answered_with_the_first_id)
{
    h_config(&env, "os", REC);
    pid_t b = h_broker(&env);
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)b);
    run_case("frozen", pid);   /* it stops the broker for the ZMTP heartbeat's 6 s, then continues it */
}
