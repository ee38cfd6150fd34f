/* test_config_errors.c — a broker with a bad config prints FILE:LINE: what,
 * exits 2 and starts nothing (no database, no endpoint); heraldctl check says
 * the same. One test per kind of error of DESIGN §3. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static h_env env;
static void setup(void) { h_setup(&env); }
static void teardown(void) { h_teardown(&env); }
TestSuite(config_errors, .init = setup, .fini = teardown, .timeout = 60);

static const char *GOOD_FN =
    "functions = ( { name = \"f\"; exec = [\"/bin/true\"]; } );\n"
    "topics = ( { name = \"t\"; subscriptions = ( { function = \"f\"; } ); } );\n";

/* Writes the config (the broker group on line 1, then extra), runs the broker
 * and heraldctl check on it and checks both report "FILE:LINE:" + needle. */
static void refused(const char *extra, int line, const char *needle)
{
    char text[4096];
    snprintf(text, sizeof text,
             "broker = { publish_endpoint = \"%s\"; worker_endpoint = \"%s\"; admin_endpoint = \"%s\"; data_dir = \"%s/data\"; };\n%s",
             env.pub, env.wrk, env.adm, env.dir, extra);
    h_write(env.cfg, text);
    char want[512];
    snprintf(want, sizeof want, "%s:%d: ", env.cfg, line);
    char *err = NULL;
    int rc = h_run(&env, NULL, NULL, &err, "bin/herald-broker", "-c", env.cfg, NULL);
    cr_assert_eq(rc, 2, "broker exit %d, stderr: %s", rc, err);
    cr_assert(strstr(err, want), "expected '%s' in: %s", want, err);
    cr_assert(strstr(err, needle), "expected '%s' in: %s", needle, err);
    free(err);
    struct stat st;
    cr_assert(stat(h_path(&env, "data"), &st) != 0, "a refused config must start nothing: data dir exists");
    cr_assert(stat(h_path(&env, "pub.sock"), &st) != 0, "a refused config must bind nothing");
    err = NULL;
    rc = h_run(&env, NULL, NULL, &err, "bin/heraldctl", "check", env.cfg, NULL);
    cr_assert_eq(rc, 2, "check exit %d", rc);
    cr_assert(strstr(err, want) && strstr(err, needle), "check said: %s", err);
    free(err);
}

Test(config_errors, syntax_error_names_its_line)
{
    refused("topics = ();\nfunctions = ( { name = \"f\"; exec = [\"/bin/true\"; } );\n", 3, "syntax error");
}

Test(config_errors, wrong_type_names_its_line)
{
    char t[1024];
    snprintf(t, sizeof t, "%s\n%s", "functions = ( { name = \"f\"; exec = [\"/bin/true\"]; timeout = \"slow\"; } );",
             "topics = ();\n");
    refused(t, 2, "timeout");
}

Test(config_errors, out_of_range_value_names_its_line)
{
    refused("functions = ( { name = \"f\"; exec = [\"/bin/true\"];\n  memory_mb = 8; } );\n", 3, "memory_mb");
}

Test(config_errors, unknown_setting_name_names_its_line)
{
    char t[1024];
    snprintf(t, sizeof t, "%s# a comment\nfunctions_typo = 1;\n", GOOD_FN);
    refused(t, 5, "functions_typo");
}

Test(config_errors, integer_beyond_32_bits_without_L_names_its_line)
{
    refused("functions = ( { name = \"f\"; exec = [\"/bin/true\"]; } );\n"
            "topics = ();\nsecurity = { curve = false; };\n# max_backlog below is 5e9\n"
            "worker = { concurrency = 5000000000; };\n", 6, "32 bits");
}

Test(config_errors, unknown_function_in_a_subscription_names_its_line)
{
    refused("functions = ( { name = \"f\"; exec = [\"/bin/true\"]; } );\n"
            "topics = ( { name = \"t\";\n  subscriptions = ( { function = \"nope\"; } ); } );\n", 4, "nope");
}

Test(config_errors, a_good_config_passes_check)
{
    char text[2048];
    snprintf(text, sizeof text, "broker = { data_dir = \"%s/data\"; };\n%s", env.dir, GOOD_FN);
    h_write(env.cfg, text);
    char *out = NULL;
    int rc = h_run(&env, NULL, &out, NULL, "bin/heraldctl", "check", env.cfg, NULL);
    cr_assert_eq(rc, 0);
    cr_assert(strstr(out, ": ok"), "%s", out);
    free(out);
}

Test(config_errors, an_endpoint_port_beyond_65535_is_a_config_error_not_another_port)
{
    char text[2048];
    snprintf(text, sizeof text,
             "broker = { publish_endpoint = \"%s\";\n  worker_endpoint = \"tcp://127.0.0.1:99999\";\n"
             "  admin_endpoint = \"%s\"; data_dir = \"%s/data\"; };\n%s",
             env.pub, env.adm, env.dir, GOOD_FN);
    h_write(env.cfg, text);
    char want[600];
    snprintf(want, sizeof want,
             "%s:2: broker.worker_endpoint: 'tcp://127.0.0.1:99999' has port 99999, outside 1 to 65535\n", env.cfg);
    char *err = NULL;
    int rc = h_run(&env, NULL, NULL, &err, "bin/herald-broker", "-c", env.cfg, NULL);
    cr_assert_eq(rc, 2, "broker exit %d, stderr: %s", rc, err);
    cr_assert_str_eq(err, want);
    free(err);
    struct stat st;
    cr_assert(stat(h_path(&env, "data"), &st) != 0, "a refused config must start nothing: data dir exists");
    cr_assert(stat(h_path(&env, "pub.sock"), &st) != 0, "a refused config must bind nothing");
    err = NULL;
    rc = h_run(&env, NULL, NULL, &err, "bin/heraldctl", "check", env.cfg, NULL);
    cr_assert_eq(rc, 2, "check exit %d", rc);
    cr_assert_str_eq(err, want);
    free(err);
}

Test(config_errors, a_bad_endpoint_in_a_flag_is_a_usage_error)
{
    struct { const char *prog, *flag, *endpoint, *why; } cases[] = {
        { "bin/herald-worker", "--broker", "tcp://127.0.0.1:99999", "has port 99999, outside 1 to 65535" },
        { "bin/herald-worker", "--broker", "tcp//127.0.0.1:7711", "is not a ZeroMQ endpoint" },
        { "bin/herald-publish", "--broker", "tcp://127.0.0.1:99999", "has port 99999, outside 1 to 65535" },
        { "bin/heraldctl", "--broker", "udp://127.0.0.1:7712", "has an unknown transport 'udp'" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *err = NULL;
        int rc = strcmp(cases[i].prog, "bin/herald-publish") == 0
                     ? h_run(&env, NULL, NULL, &err, cases[i].prog, cases[i].flag, cases[i].endpoint, "t", "x", NULL)
                 : strcmp(cases[i].prog, "bin/heraldctl") == 0
                     ? h_run(&env, NULL, NULL, &err, cases[i].prog, cases[i].flag, cases[i].endpoint, "stats", NULL)
                     : h_run(&env, NULL, NULL, &err, cases[i].prog, cases[i].flag, cases[i].endpoint, NULL);
        cr_assert_eq(rc, 2, "%s %s %s: exit %d: %s", cases[i].prog, cases[i].flag, cases[i].endpoint, rc, err);
        char want[300];   /* herald-publish says it through libherald, which names no flag */
        snprintf(want, sizeof want, "%s '%s' %s", strcmp(cases[i].prog, "bin/herald-publish") ? cases[i].flag : "endpoint",
                 cases[i].endpoint, cases[i].why);
        cr_assert(err && strstr(err, want), "%s: expected '%s' in: %s", cases[i].prog, want, err);
        cr_assert(strchr(err, '\n') == err + strlen(err) - 1, "one line: %s", err);
        free(err);
    }
    /* HERALD_BROKER is the publish endpoint's other source */
    setenv("HERALD_BROKER", "tcp://127.0.0.1:0", 1);
    char *err = NULL;
    int rc = h_run(&env, NULL, NULL, &err, "bin/herald-publish", "t", "x", NULL);
    unsetenv("HERALD_BROKER");
    cr_assert_eq(rc, 2, "exit %d: %s", rc, err);
    cr_assert(err && strstr(err, "endpoint 'tcp://127.0.0.1:0' has port 0, outside 1 to 65535"), "%s", err);
    free(err);
}
