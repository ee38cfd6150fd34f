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

static bool a_worker_registered(void *arg)
{
    (void)arg;
    char *out = h_ctl(&env, "workers", "--json", NULL);
    bool yes = out && strstr(out, "\"slots\"");
    free(out);
    return yes;
}

/* h_worker, then until the broker lists it: an invoke before that has no worker. */
static void start_worker(void)
{
    h_worker(&env, NULL, 2);
    cr_assert(h_wait(a_worker_registered, NULL, 20000), "the worker never registered");
}

/* python3 reads text as one JSON document and evaluates expr on it (d); true
 * when it parses and expr holds. */
static bool json_holds(const char *text, const char *expr)
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

Test(cli, the_admin_endpoint_takes_async_invokes_but_no_topic_publishes)
{
    config_rec(NULL, NULL);
    h_broker(&env);
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, NULL, &out, &err, "bin/herald-publish", "--broker", env.adm, "--timeout", "5", "t", "x", NULL);
    cr_assert_eq(rc, 1, "a publish to a topic on the admin endpoint: exit %d (out: %s)", rc, out);
    cr_assert(strstr(err, "publish endpoint"), "the refusal does not say where topics are published: %s", err);
    free(out);
    free(err);
    cr_assert_eq(h_sub_stat(&env, "t", "rec", "ready"), 0, "the event was stored");
}

/* --- --json on every heraldctl command, errors included ---------------------------- */

/* heraldctl ARGS... --json: exit code, stdout kept in *out (caller frees). */
#define CTL_RUN(out, ...) h_run(&env, NULL, out, NULL, "bin/heraldctl", __VA_ARGS__, NULL)

Test(cli, json_usage_errors_print_one_json_error_and_exit_2)
{
    static const char *const cases[][6] = {
        { "dlq", "list", "--limit", "x" }, { "dlq", "replay" }, { "dlq", "show", "abc" },
        { "frobnicate" }, { "stats", "extra" }, { "--timeout", "0", "stats" }, { "invoke" },
        { "check" }, { "keygen" }, { "--bogus", "stats" }, { NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *const *a = cases[i];
        char *out = NULL;
        int rc = a[0] ? CTL_RUN(&out, "--json", "--broker", env.adm, a[0], a[1], a[2], a[3])
                      : CTL_RUN(&out, "--json");
        cr_assert_eq(rc, 2, "case %zu (%s %s): exit %d", i, a[0], a[1], rc);
        cr_assert(json_holds(out, "set(d) <= {'error'} and isinstance(d['error'], str) and len(d['error']) > 3"),
                  "case %zu (%s %s): stdout is not one {\"error\":…} document: '%s'", i, a[0], a[1], out);
        free(out);
    }
}

Test(cli, json_runtime_errors_print_one_json_error_and_exit_1)
{
    /* no broker at all: stats, workers, dlq replay, invoke, invoke --async */
    static const char *const cases[][4] = {
        { "stats" }, { "workers" }, { "dlq", "replay", "--all" }, { "dlq", "list" }, { "invoke", "echo", "x" },
        { "invoke", "--async", "echo", "x" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *const *a = cases[i];
        char *out = NULL;
        int rc = CTL_RUN(&out, "--json", "--timeout", "1", "--broker", env.adm, a[0], a[1], a[2], a[3]);
        cr_assert_eq(rc, 1, "%s %s with no broker: exit %d", a[0], a[1] ? a[1] : "", rc);
        cr_assert(json_holds(out, "isinstance(d, dict) and isinstance(d.get('error'), str) and d['error']"),
                  "%s %s: stdout is not one {\"error\":…} document: '%s'", a[0], a[1] ? a[1] : "", out);
        free(out);
    }
}

Test(cli, json_invoke_prints_the_output_or_the_error_as_one_document)
{
    config_rec(NULL, NULL);
    h_broker(&env);
    start_worker();

    char *out = NULL;
    int rc = CTL_RUN(&out, "--broker", env.adm, "--json", "invoke", "echo", "hi there");
    cr_assert_eq(rc, 0, "invoke --json: exit %d", rc);
    cr_assert(json_holds(out, "d['output'] == 'hi there' and d['output_encoding'] == 'utf-8' and "
                              "isinstance(d['message_id'], str)"), "invoke --json printed '%s'", out);
    free(out);

    /* bytes that are not UTF-8 come back as base64 */
    char *in = h_path(&env, "bin.in");
    FILE *f = fopen(in, "wb");
    cr_assert_not_null(f);
    fwrite("\xff\x00\x01z", 1, 4, f);
    fclose(f);
    out = NULL;
    rc = h_run(&env, in, &out, NULL, "bin/heraldctl", "--broker", env.adm, "--json", "invoke", "echo", "-", NULL);
    cr_assert_eq(rc, 0, "invoke --json of bytes: exit %d", rc);
    cr_assert(json_holds(out, "d['output'] == '/wABeg==' and d['output_encoding'] == 'base64'"),
              "invoke --json of bytes printed '%s'", out);
    free(out);

    /* a failing handler: its error, and the kind of error */
    out = NULL;
    rc = CTL_RUN(&out, "--broker", env.adm, "--json", "invoke", "bad", "x");
    cr_assert_eq(rc, 1, "invoke --json of a failing handler: exit %d", rc);
    cr_assert(json_holds(out, "isinstance(d['error'], str) and d['error_type'] == 'handler'"),
              "a failed invoke --json printed '%s'", out);
    free(out);
    out = NULL;
    rc = CTL_RUN(&out, "--broker", env.adm, "--json", "invoke", "nosuch", "x");
    cr_assert_eq(rc, 1);
    cr_assert(json_holds(out, "'nosuch' in d['error'] and d['error_type'] == 'unknown_function'"),
              "invoke --json of an unknown function printed '%s'", out);
    free(out);

    /* --async: the message id as {"message_id":…} */
    out = NULL;
    rc = CTL_RUN(&out, "--broker", env.adm, "--json", "invoke", "--async", "rec", "x");
    cr_assert_eq(rc, 0, "invoke --async --json: exit %d", rc);
    cr_assert(json_holds(out, "list(d) == ['message_id'] and len(d['message_id']) > 2"),
              "invoke --async --json printed '%s'", out);
    free(out);
}

Test(cli, json_check_and_keygen_print_json)
{
    config_rec(NULL, NULL);
    char *out = NULL;
    int rc = CTL_RUN(&out, "--json", "check", env.cfg);
    cr_assert_eq(rc, 0, "check --json of a good config: exit %d", rc);
    cr_assert(json_holds(out, "d['ok'] is True and d['functions'] == 3 and d['topics'] == 1"),
              "check --json printed '%s'", out);
    free(out);

    char *bad = h_path(&env, "bad.cfg");
    h_write(bad, "broker = { max_payload = \"big\"; };\n"
                 "functions = ( { name = \"a b\"; exec = [\"x\"]; } );\n");
    out = NULL;
    rc = CTL_RUN(&out, "--json", "check", bad);
    cr_assert_eq(rc, 2, "check --json of a bad config: exit %d", rc);
    cr_assert(json_holds(out, "isinstance(d['error'], str) and len(d['errors']) >= 2 and "
                              "all(set(e) == {'file', 'line', 'message'} and e['file'].endswith('bad.cfg') and "
                              "e['line'] in (1, 2) and e['message'] for e in d['errors'])"),
              "check --json of a bad config printed '%s'", out);
    free(out);

    out = NULL;
    rc = CTL_RUN(&out, "--json", "keygen", h_path(&env, "k1"));
    cr_assert_eq(rc, 0, "keygen --json: exit %d", rc);
    cr_assert(json_holds(out, "d['key_file'].endswith('k1.key') and d['pub_file'].endswith('k1.pub') and "
                              "len(d['public_key']) == 40"), "keygen --json printed '%s'", out);
    free(out);
    /* it never overwrites: a runtime error, as JSON */
    out = NULL;
    rc = CTL_RUN(&out, "--json", "keygen", h_path(&env, "k1"));
    cr_assert_eq(rc, 1, "keygen --json over an existing key: exit %d", rc);
    cr_assert(json_holds(out, "list(d) == ['error']"), "keygen --json over an existing key printed '%s'", out);
    free(out);
}

/* --- herald-publish --lines: one output line per input line ------------------------ */

/* Lines of text (a copy), split on '\n'; returns the count. */
static size_t split_lines(const char *text, char ***lines)
{
    size_t n = 0, cap = 16;
    char **v = malloc(cap * sizeof *v);
    const char *p = text;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (n == cap) v = realloc(v, (cap *= 2) * sizeof *v);
        v[n++] = strndup(p, len);
        p = nl ? nl + 1 : NULL;
    }
    *lines = v;
    return n;
}

/* 5 lines: 1 ok, 2 too large for the client, 3 ok, 4 and 5 throttled by the
 * broker (max_backlog 2, no worker to drain it). */
static char *mixed_input(void)
{
    char *in = h_path(&env, "mixed.in");
    FILE *f = fopen(in, "w");
    cr_assert_not_null(f);
    fprintf(f, "one\n");
    for (int i = 0; i < 2000; i++) fputc('x', f);
    fprintf(f, "\nthree\nfour\nfive\n");
    fclose(f);
    return in;
}

Test(cli, publish_lines_prints_one_line_per_input_line_in_order)
{
    config_rec("max_payload = 1024; max_backlog = 2;", NULL);
    pid_t broker = h_broker(&env);
    char *in = mixed_input();
    char *out = NULL, *err = NULL;
    int rc = h_run(&env, in, &out, &err, "bin/herald-publish", "--broker", env.pub, "--lines", "t", NULL);
    cr_assert_eq(rc, 1, "a load with refused lines: exit %d (stderr: %s)", rc, err);
    char **l;
    size_t n = split_lines(out, &l);
    cr_assert_eq(n, 5, "5 input lines, %zu output lines: '%s' (stderr: %s)", n, out, err);
    cr_assert(strncmp(l[0], "ERROR", 5) != 0 && strncmp(l[2], "ERROR", 5) != 0, "lines 1 and 3 were stored: %s", out);
    cr_assert(strncmp(l[1], "ERROR ", 6) == 0 && strstr(l[1], "max_payload"), "line 2 (too large): '%s'", l[1]);
    cr_assert(strncmp(l[3], "ERROR ", 6) == 0 && strstr(l[3], "throttled"), "line 4 (throttled): '%s'", l[3]);
    cr_assert(strncmp(l[4], "ERROR ", 6) == 0 && strstr(l[4], "throttled"), "line 5 (throttled): '%s'", l[4]);
    cr_assert(strstr(err, "LINE 2: ") && strstr(err, "LINE 4: ") && strstr(err, "LINE 5: ") && !strstr(err, "LINE 1:") &&
              !strstr(err, "LINE 3:"), "stderr: %s", err);
    free(out);
    free(err);

    /* --json: one object per line, {"line":N,"id":…} or {"line":N,"error":…};
     * on an empty broker again, so that the same lines get in */
    cr_assert_eq(h_signal_exit(&env, broker, SIGTERM, 10000), 0);
    char rm[600];
    snprintf(rm, sizeof rm, "rm -rf '%s'", h_path(&env, "data"));
    cr_assert_eq(system(rm), 0);
    h_broker(&env);
    out = err = NULL;
    rc = h_run(&env, in, &out, &err, "bin/herald-publish", "--broker", env.pub, "--lines", "--json", "t", NULL);
    cr_assert_eq(rc, 1, "--json: exit %d (stderr: %s)", rc, err);
    n = split_lines(out, &l);
    cr_assert_eq(n, 5, "--json: %zu output lines: %s", n, out);
    for (size_t i = 0; i < 5; i++) {
        char expr[200];
        bool ok = i == 0 || i == 2;
        snprintf(expr, sizeof expr, "d['line'] == %zu and set(d) == {'line', '%s'} and isinstance(d['%s'], str)",
                 i + 1, ok ? "id" : "error", ok ? "id" : "error");
        cr_assert(json_holds(l[i], expr), "--json line %zu: '%s'", i + 1, l[i]);
    }
    free(out);
    free(err);
}

static bool file_has(void *arg)
{
    const char **a = arg;
    char *t = h_read(a[0], NULL);
    bool yes = t && strstr(t, a[1]);
    free(t);
    return yes;
}

Test(cli, publish_lines_retry_throttled_retries_until_the_backlog_frees)
{
    config_rec("max_backlog = 2;", NULL);
    h_broker(&env);
    char *in = h_path(&env, "four.in");
    h_write(in, "a\nb\nc\nd\n");
    /* no worker yet: lines 3 and 4 are throttled and wait */
    char prog[600];
    snprintf(prog, sizeof prog, "%s/bin/herald-publish", env.root);
    pid_t pub = h_start(&env, "pub", "/bin/sh", "-c",
                        "exec \"$0\" --broker \"$1\" --lines --retry-throttled --timeout 60 t < \"$2\"",
                        prog, env.pub, in, NULL);
    (void)pub;
    const char *cond[2] = { h_path(&env, "pub.err"), "retrying" };
    cr_assert(h_wait(file_has, cond, 20000), "herald-publish never said it retries a throttled line");
    h_worker(&env, "rec", 2);   /* drains the backlog: the retries get in */
    int st = h_wait_exit(pub, 30000);
    char *out = h_read(h_path(&env, "pub.out"), NULL), *err = h_read(h_path(&env, "pub.err"), NULL);
    cr_assert_eq(st, 0, "--retry-throttled: exit %d (stderr: %s)", st, err);
    char **l;
    size_t n = split_lines(out, &l);
    cr_assert_eq(n, 4, "4 lines, %zu ids: %s", n, out);
    for (size_t i = 0; i < n; i++) cr_assert(strncmp(l[i], "ERROR", 5) != 0, "line %zu: %s", i + 1, l[i]);
    h_wait_lines(h_path(&env, "rec.txt"), 4, 20000);
    free(out);
    free(err);
}

/* --- a broker that is down, or speaks CURVE alone: said at once --------------------- */

Test(cli, broker_down_is_reported_as_connection_refused)
{
    /* a long --timeout: the answer must come from the transport, not the clock */
    const char *eps[2] = { env.adm, "tcp://127.0.0.1:1" };   /* ipc:// with no socket file; a closed port */
    for (int i = 0; i < 2; i++) {
        static const char *const cmds[][4] = { { "stats" }, { "dlq", "replay", "--all" }, { "invoke", "echo", "x" } };
        for (size_t k = 0; k < sizeof cmds / sizeof cmds[0]; k++) {
            char *out = NULL, *err = NULL;
            int rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "--broker", eps[i], "--timeout", "60",
                           cmds[k][0], cmds[k][1], cmds[k][2], NULL);
            cr_assert_eq(rc, 1, "heraldctl %s with no broker at %s: exit %d", cmds[k][0], eps[i], rc);
            cr_assert(strstr(err, "connection refused") && strstr(err, eps[i]),
                      "heraldctl %s with no broker at %s: %s", cmds[k][0], eps[i], err);
            free(out);
            free(err);
        }
        char *err = NULL;
        const char *pub = i == 0 ? env.pub : "tcp://127.0.0.1:1";
        int rc = h_run(&env, NULL, NULL, &err, "bin/herald-publish", "--broker", pub, "--timeout", "60", "t", "x",
                       NULL);
        cr_assert_eq(rc, 1, "herald-publish with no broker at %s: exit %d", pub, rc);
        cr_assert(strstr(err, "connection refused") && strstr(err, pub), "herald-publish, no broker at %s: %s", pub,
                  err);
        free(err);
    }
}

Test(cli, curve_on_one_side_is_said_at_once)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s' && mkdir -p keys/publishers keys/workers keys/admins && "
             "'%s/bin/heraldctl' keygen keys/broker >/dev/null && '%s/bin/heraldctl' keygen keys/client >/dev/null && "
             "for r in publishers workers admins; do cp keys/client.pub keys/$r/; done",
             env.dir, env.root, env.root);
    if (!env.curve) cr_assert_eq(system(cmd), 0);   /* HERALD_TEST_CURVE=1: h_setup made them */
    unsetenv("HERALD_KEY");
    unsetenv("HERALD_BROKER_KEY");
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"echo\"; exec = [\"tests/handlers/ctl_echo.sh\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"echo\"; } ); } );\n%s",
             env.curve ? "" : "security = { curve = true; secret_key = \"keys/broker.key\"; publishers = "
                              "\"keys/publishers\"; workers = \"keys/workers\"; admins = \"keys/admins\"; };\n");
    h_config(&env, "os", body);
    env.curve = true;   /* h_broker: the broker answers with keys only */
    setenv("HERALD_KEY", h_path(&env, "keys/client.key"), 1);
    setenv("HERALD_BROKER_KEY", h_path(&env, "keys/broker.pub"), 1);
    h_broker(&env);
    unsetenv("HERALD_KEY");
    unsetenv("HERALD_BROKER_KEY");
    /* a plaintext client, several times: whichever side drops the handshake first */
    for (int i = 0; i < 5; i++) {
        char *err = NULL;
        int rc = h_run(&env, NULL, NULL, &err, "bin/herald-publish", "--broker", env.pub, "--timeout", "60", "t", "x",
                       NULL);
        cr_assert_eq(rc, 1, "a plaintext herald-publish against a CURVE broker: exit %d", rc);
        cr_assert(strstr(err, "CURVE on one side"), "herald-publish, plaintext against CURVE: %s", err);
        free(err);
        err = NULL;
        rc = h_run(&env, NULL, NULL, &err, "bin/heraldctl", "--broker", env.adm, "--timeout", "60", "stats", NULL);
        cr_assert_eq(rc, 1, "a plaintext heraldctl against a CURVE broker: exit %d", rc);
        cr_assert(strstr(err, "CURVE on one side"), "heraldctl, plaintext against CURVE: %s", err);
        free(err);
    }
}

/* --- what the programs print about themselves ---------------------------------------- */

/* "dir/file.c:123:" anywhere in text. */
static bool has_source_location(const char *text)
{
    for (const char *p = text; p && (p = strstr(p, ".c:")) != NULL; p += 3)
        if (p[3] >= '0' && p[3] <= '9') return true;
    return false;
}

static bool broker_refused_reload(void *arg)
{
    (void)arg;
    char *t = h_read(h_path(&env, "broker.err"), NULL);
    bool yes = t && strstr(t, "SIGHUP") && strstr(t, "refused");
    free(t);
    return yes;
}

Test(cli, log_lines_name_no_source_location_unless_verbose)
{
    config_rec(NULL, NULL);
    pid_t broker = h_broker(&env);
    /* a reload the broker refuses: an error a user reads */
    h_write(env.cfg, "broker = { max_payload = \"big\"; };\n");
    kill(broker, SIGHUP);
    cr_assert(h_wait(broker_refused_reload, NULL, 10000), "the broker never said it refused the reload");
    char *t = h_read(h_path(&env, "broker.err"), NULL);
    cr_assert(!has_source_location(t), "the broker's log shows source locations without --verbose:\n%s", t);
    free(t);
}

Test(cli, every_program_answers_version)
{
    static const char *const progs[] = { "bin/herald-broker", "bin/herald-worker", "bin/herald-publish", "bin/heraldctl",
                                         "bin/herald-gateway" };
    for (size_t i = 0; i < sizeof progs / sizeof progs[0]; i++) {
        char *out = NULL, *err = NULL;
        int rc = h_run(&env, NULL, &out, &err, progs[i], "--version", NULL);
        cr_assert_eq(rc, 0, "%s --version: exit %d (%s)", progs[i], rc, err);
        char want[64];
        snprintf(want, sizeof want, "%s 0.", strrchr(progs[i], '/') + 1);
        cr_assert_eq(strncmp(out, want, strlen(want)), 0, "%s --version printed '%s'", progs[i], out);
        cr_assert_eq(strchr(out, '\n'), out + strlen(out) - 1, "%s --version: not one line: '%s'", progs[i], out);
        free(out);
        free(err);
    }
}

Test(cli, help_says_invoke_output_is_byte_exact_without_an_added_newline)
{
    char *out = NULL;
    int rc = h_run(&env, NULL, &out, NULL, "bin/heraldctl", "--help", NULL);
    cr_assert_eq(rc, 0);
    cr_assert(strstr(out, "byte for byte") && strstr(out, "no\n                      newline is added"),
              "heraldctl --help does not say invoke adds no newline:\n%s", out);
    free(out);
}

/* An error text is cut at a byte count (the last 4 KiB of stderr), so it can
 * end inside a character: the one JSON document stays valid all the same. */
Test(cli, json_error_with_a_cut_character_is_still_one_valid_document)
{
    h_config(&env, "os",
             "functions = ( { name = \"cut\"; exec = [\"sh\", \"-c\", \"printf 'cut \\\\303' >&2; exit 1\"];\n"
             "                max_attempts = 1; } );\n"
             "topics = ( { name = \"t\"; } );\n");
    h_broker(&env);
    start_worker();
    char *out = NULL;
    int rc = CTL_RUN(&out, "--broker", env.adm, "--json", "invoke", "cut", "x");
    cr_assert_eq(rc, 1, "invoke --json of a failing handler: exit %d", rc);
    cr_assert(out && strstr(out, "cut "), "no error text: '%s'", out ? out : "");
    cr_assert(json_holds(out, "d['error'].endswith('cut \\ufffd') and d['error_type'] == 'handler'"),
              "invoke --json printed '%s'", out);
    free(out);
}
