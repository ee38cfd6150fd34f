/* test_cli.c — what the command-line programs print and where they connect:
 * invoke --async on the broker the command names, --json on every heraldctl
 * command (errors too), herald-publish --lines pairing its output with its
 * input, the messages for a broker that is down or speaks CURVE alone, and
 * --version on every program. JSON is checked with python3's json module,
 * so a document that any other parser would refuse fails the test.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static h_env env;

static void setup(void)
{
    h_setup(&env);
    unsetenv("HERALD_BROKER");
}
static void teardown(void) { h_teardown(&env); }

TestSuite(cli, .init = setup, .fini = teardown, .timeout = 90);

/* A function "rec" that appends its payload and a newline to DIR/rec.txt. */
static void config_rec(const char *extra_broker, const char *extra_body)
{
    char body[2048];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; exec = [\"sh\", \"-c\", \"cat >> %s; echo >> %s\"]; },\n"
             "              { name = \"echo\"; exec = [\"tests/handlers/ctl_echo.sh\"]; },\n"
             "              { name = \"bad\"; exec = [\"tests/handlers/fail.sh\", \"1\"]; max_attempts = 1; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); } );\n%s",
             h_path(&env, "rec.txt"), h_path(&env, "rec.txt"), extra_body ? extra_body : "");
    h_config_broker(&env, "os", extra_broker, body);
}

/* python3 reads text as one JSON document and evaluates expr on it (d); true
 * when it parses and expr holds. */
__attribute__((unused)) static bool json_holds(const char *text, const char *expr)
{
    char *in = h_path(&env, "json.in");
    h_write(in, text ? text : "");
    char *prog = NULL, *out = NULL, *err = NULL;
    cr_assert(asprintf(&prog, "import json,sys\nd=json.load(open(sys.argv[1]))\nsys.exit(0 if (%s) else 1)", expr) > 0);
    int rc = h_run(&env, NULL, &out, &err, "/usr/bin/python3", "-c", prog, in, NULL);
    if (rc != 0) cr_log_warn("json check '%s' on '%s': %s", expr, text ? text : "", err ? err : "");
    free(prog);
    free(out);
    free(err);
    return rc == 0;
}

/* --- invoke --async goes to the broker the command names ----------------------- */

Test(cli, invoke_async_uses_the_named_broker)
{
    config_rec(NULL, NULL);
    h_broker(&env);
    h_worker(&env, NULL, 2);

    /* no HERALD_BROKER, the broker on ipc:// only: --broker ADMIN is the one to use */
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "--broker", env.adm, "--timeout", "2", "invoke",
                   "--async", "rec", "via-broker", NULL);
    cr_assert_eq(rc, 0, "heraldctl --broker ADMIN invoke --async: exit %d: %s", rc, err);
    cr_assert(out[0] && strchr(out, '\n'), "no message id printed: '%s'", out);
    free(out);
    free(err);

    /* -c FILE: the same broker the config names */
    out = err = NULL;
    rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "-c", env.cfg, "--timeout", "2", "invoke", "--async", "rec",
               "via-config", NULL);
    cr_assert_eq(rc, 0, "heraldctl -c FILE invoke --async: exit %d: %s", rc, err);
    free(out);
    free(err);

    h_wait_lines(h_path(&env, "rec.txt"), 2, 20000);
    char *rec = h_read(h_path(&env, "rec.txt"), NULL);
    cr_assert(strstr(rec, "via-broker\n") && strstr(rec, "via-config\n"), "the handler saw: %s", rec);
    free(rec);
}
