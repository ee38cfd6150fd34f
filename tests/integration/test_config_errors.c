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

/* ---- heraldctl check FILE --root DIR: what the running programs would find ---- */

/* DIR/app: the code tree a worker runs from (--root), with an executable
 * handlers/ok.sh and lib/libcount.so; DIR/keys: good keys. */
static void app_tree(void)
{
    char cmd[3000];
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s' && mkdir -p app/handlers app/lib keys/publishers keys/workers keys/admins && "
             "printf '#!/bin/sh\\ncat\\n' > app/handlers/ok.sh && chmod 755 app/handlers/ok.sh && "
             "printf 'not a program\\n' > app/handlers/plain.sh && chmod 644 app/handlers/plain.sh && "
             "printf 'print(1)\\n' > app/handlers/x.py && "
             "cp '%s/examples/handlers/libcount.so' app/lib/ && printf 'text\\n' > app/lib/libtext.so && "
             "'%s/bin/heraldctl' keygen keys/broker >/dev/null && '%s/bin/heraldctl' keygen keys/w >/dev/null && "
             "cp keys/w.pub keys/workers/",
             env.dir, env.root, env.root, env.root);
    cr_assert_eq(system(cmd), 0);
}

/* Writes text as the config, runs check FILE --root DIR/app; its exit code,
 * stdout and stderr (caller frees). */
static int check_root(const char *text, char **out, char **err)
{
    h_write(env.cfg, text);
    return h_run(&env, NULL, out, err, "bin/heraldctl", "check", env.cfg, "--root", h_path(&env, "app"), NULL);
}

/* The expected stderr: fmt with every %1$s the config file, %2$s the app dir. */
static char *expect(const char *fmt)
{
    char *s = NULL;
    cr_assert(asprintf(&s, fmt, env.cfg, h_path(&env, "app"), env.dir) > 0);
    return s;
}

Test(config_errors, check_root_passes_a_config_whose_programs_libraries_and_keys_are_there)
{
    app_tree();
    char *out = NULL, *err = NULL;
    int rc = check_root("functions = ( { name = \"a\"; exec = [\"handlers/ok.sh\"]; },\n"
                        "  { name = \"b\"; exec = [\"sh\", \"handlers/x.py\", \"-c\", \"text/plain\"]; },\n"
                        "  { name = \"c\"; native = { library = \"lib/libcount.so\"; symbol = \"count\"; }; } );\n"
                        "security = { curve = true; secret_key = \"keys/broker.key\"; publishers = \"keys/publishers\";\n"
                        "  workers = \"keys/workers\"; admins = \"keys/admins\"; };\n"
                        "worker = { key = \"keys/w.key\"; broker_key = \"keys/broker.pub\"; };\n",
                        &out, &err);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
    cr_assert(strstr(out, ": ok (3 functions") && strstr(out, h_path(&env, "app")), "%s", out);
    free(out);
    free(err);
}

Test(config_errors, check_root_reports_handler_programs_that_would_not_run)
{
    app_tree();
    char *err = NULL;
    int rc = check_root("functions = ( { name = \"a\"; exec = [\"handlers/nope.sh\"]; },\n"
                        "  { name = \"b\"; exec = [\"handlers/plain.sh\"]; },\n"
                        "  { name = \"c\";\n    exec = [\"no-such-program-of-herald\"]; },\n"
                        "  { name = \"d\"; exec = [\"python3\", \"handlers/missing.py\"]; } );\n",
                        NULL, &err);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, err);
    char *want = expect(
        "%1$s:1: functions[0] (a): exec[0]: %2$s/handlers/nope.sh does not exist\n"
        "%1$s:2: functions[1] (b): exec[0]: %2$s/handlers/plain.sh is not executable (mode 0644)\n"
        "%1$s:4: functions[2] (c): exec[0]: 'no-such-program-of-herald' is not an executable program in PATH\n"
        "%1$s:5: functions[3] (d): exec[1]: %2$s/handlers/missing.py does not exist (the handler would get "
        "'handlers/missing.py' in an empty directory)\n");
    cr_assert_str_eq(err, want);
    free(want);
    free(err);
}

Test(config_errors, check_root_checks_a_runtime_command_like_an_exec_program)
{
    app_tree();
    char *out = NULL, *err = NULL;
    int rc = check_root("functions = ( { name = \"a\"; runtime = { command = [\"handlers/ok.sh\"]; handler = \"x.h\"; }; },\n"
                        "  { name = \"b\"; runtime = { command = [\"sh\", \"handlers/x.py\"]; }; } );\n",
                        &out, &err);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
    cr_assert(strstr(out, ": ok (2 functions"), "%s", out);
    free(out);
    free(err);
    err = NULL;
    rc = check_root("functions = ( { name = \"a\"; runtime = { command = [\"handlers/nope.sh\"]; }; },\n"
                    "  { name = \"b\"; runtime = {\n    command = [\"handlers/plain.sh\"]; }; },\n"
                    "  { name = \"c\"; runtime = { command = [\"no-such-program-of-herald\"]; }; },\n"
                    "  { name = \"d\"; runtime = { command = [\"python3\", \"handlers/missing.py\"]; }; } );\n",
                    NULL, &err);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, err);
    char *want = expect(
        "%1$s:1: functions[0] (a): runtime.command[0]: %2$s/handlers/nope.sh does not exist\n"
        "%1$s:3: functions[1] (b): runtime.command[0]: %2$s/handlers/plain.sh is not executable (mode 0644)\n"
        "%1$s:4: functions[2] (c): runtime.command[0]: 'no-such-program-of-herald' is not an executable program in PATH\n"
        "%1$s:5: functions[3] (d): runtime.command[1]: %2$s/handlers/missing.py does not exist\n");
    cr_assert_str_eq(err, want);
    free(want);
    free(err);
}

Test(config_errors, check_root_reports_native_libraries_that_would_not_load)
{
    app_tree();
    char *err = NULL;
    int rc = check_root("functions = ( { name = \"a\"; native = { library = \"lib/libnope.so\"; symbol = \"count\"; }; },\n"
                        "  { name = \"b\"; native = { library = \"lib/libtext.so\"; symbol = \"count\"; }; },\n"
                        "  { name = \"c\"; native = {\n    library = \"lib/libcount.so\"; symbol = \"nope\"; }; } );\n",
                        NULL, &err);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, err);
    char *want = expect(
        "%1$s:1: functions[0] (a): native.library: %2$s/lib/libnope.so does not exist\n"
        "%1$s:2: functions[1] (b): native.library: %2$s/lib/libtext.so is not an ELF shared library\n"
        "%1$s:4: functions[2] (c): native.symbol: 'nope' is not a function defined in %2$s/lib/libcount.so\n");
    cr_assert_str_eq(err, want);
    free(want);
    free(err);
}

Test(config_errors, check_root_reports_key_files_and_directories_that_would_fail)
{
    app_tree();
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cd '%s' && chmod 640 keys/broker.key && printf 'junk\\n' > keys/workers/bad.pub && "
             "rmdir keys/admins", env.dir);
    cr_assert_eq(system(cmd), 0);
    char *err = NULL;
    int rc = check_root("security = { curve = true; secret_key = \"keys/broker.key\";\n"
                        "  publishers = \"keys/publishers\"; workers = \"keys/workers\";\n"
                        "  admins = \"keys/admins\"; };\n"
                        "worker = { key = \"keys/nope.key\"; broker_key = \"keys/broker.pub\"; };\n",
                        NULL, &err);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, err);
    char *want = expect(
        "%1$s:1: security.secret_key: %3$s/keys/broker.key is readable or writable by group or others (mode 0640): "
        "chmod 600 %3$s/keys/broker.key\n"
        "%1$s:2: security.workers: key file %3$s/keys/workers/bad.pub has no public-key line\n"
        "%1$s:3: security.admins: %3$s/keys/admins: No such file or directory\n"
        "%1$s:4: worker.key: %3$s/keys/nope.key: No such file or directory\n");
    cr_assert_str_eq(err, want);
    free(want);
    free(err);
}

Test(config_errors, check_without_root_checks_the_file_alone)
{
    app_tree();
    h_write(env.cfg, "functions = ( { name = \"a\"; exec = [\"handlers/nope.sh\"]; } );\n"
                     "worker = { key = \"keys/nope.key\"; broker_key = \"keys/broker.pub\"; };\n");
    char *out = NULL;
    int rc = h_run(&env, NULL, &out, NULL, "bin/heraldctl", "check", env.cfg, NULL);
    cr_assert_eq(rc, 0, "check without --root looks at the file only");
    cr_assert(strstr(out, ": ok"), "%s", out);
    free(out);
    char *err = NULL;
    rc = h_run(&env, NULL, NULL, &err, "bin/heraldctl", "check", env.cfg, "--root", h_path(&env, "nope"), NULL);
    cr_assert_eq(rc, 2, "a --root that is not a directory: exit %d", rc);
    cr_assert(err && strstr(err, "--root") && strstr(err, h_path(&env, "nope")), "%s", err);
    free(err);
}
