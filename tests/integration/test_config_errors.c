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
