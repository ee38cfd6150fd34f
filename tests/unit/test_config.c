/* tests/unit/test_config.c: the config loader against the fixtures in
 * tests/configs/ (DESIGN §3): every value of a full file, the defaults, and
 * for each kind of error the exact "FILE:LINE: what" line.
 *
 * Runs from the repository root (as `make test` does): fixture paths and the
 * messages that quote them are relative to it.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../config/config.h"

#define FIX "tests/configs/"

/* Loads a fixture that must fail; returns its error text (caller frees). */
static char *load_fail(const char *path)
{
    char *err = NULL;
    herald_config *c = config_load(path, &err);
    cr_assert_null(c, "%s loaded but should not have", path);
    cr_assert_not_null(err, "%s: no error text", path);
    return err;
}

static herald_config *load_ok(const char *path)
{
    char *err = NULL;
    herald_config *c = config_load(path, &err);
    cr_assert_not_null(c, "%s: %s", path, err ? err : "(no error text)");
    cr_assert_null(err);
    return c;
}

static char *string_fail(const char *text)
{
    char *err = NULL;
    herald_config *c = config_load_string(text, "t.cfg", NULL, &err);
    cr_assert_null(c, "loaded but should not have: %s", text);
    cr_assert_not_null(err);
    return err;
}

static herald_config *string_ok(const char *text)
{
    char *err = NULL;
    herald_config *c = config_load_string(text, "t.cfg", NULL, &err);
    cr_assert_not_null(c, "%s", err ? err : "(no error text)");
    return c;
}

/* The canonical directory of the fixtures, as the loader resolves against. */
static char *fixture_path(const char *rel)
{
    char *dir = realpath("tests/configs", NULL);
    char *p = NULL;
    cr_assert_not_null(dir);
    cr_assert(asprintf(&p, "%s/%s", dir, rel) > 0);
    free(dir);
    return p;
}

static void expect_str(const char *got, const char *want)
{
    cr_assert_not_null(got, "expected \"%s\", got NULL", want);
    cr_assert_str_eq(got, want);
}

static void expect_path(const char *got, const char *fixture_rel)
{
    char *want = fixture_path(fixture_rel);
    expect_str(got, want);
    free(want);
}

Test(config, full_file_every_value)
{
    herald_config *c = load_ok(FIX "full.cfg");
    expect_str(c->path, FIX "full.cfg");

    expect_str(c->broker.publish_endpoint, "tcp://127.0.0.1:17710");
    expect_str(c->broker.worker_endpoint, "ipc:///tmp/herald-test-worker");
    expect_str(c->broker.admin_endpoint, "tcp://127.0.0.1:17712");
    expect_path(c->broker.data_dir, "data/herald");
    cr_assert_eq(c->broker.durability, DURABILITY_OS);
    cr_assert_eq(c->broker.max_payload, 1048576);
    cr_assert_eq(c->broker.max_backlog, 50000000000LL);
    cr_assert_eq(c->broker.disk_min_free, 0);
    cr_assert_float_eq(c->broker.heartbeat_s, 2.0, 1e-9);

    cr_assert(c->security.present);
    cr_assert(c->security.curve);
    expect_path(c->security.secret_key, "keys/broker.key");
    expect_str(c->security.publishers, "/etc/herald/publishers");
    expect_path(c->security.workers, "keys/workers");
    expect_path(c->security.admins, "keys/admins");

    cr_assert_eq(c->nfunctions, 3);
    const cfg_function *t = config_function(c, "thumbnail");
    cr_assert_eq(t, &c->functions[0]);
    cr_assert_not(t->native);
    cr_assert_not(t->runtime);
    cr_assert_eq(t->nexec, 3);
    expect_str(t->exec[0], "python3");
    /* exec paths are the worker's to resolve, against its --root */
    expect_str(t->exec[1], "examples/handlers/thumbnail.py");
    expect_str(t->exec[2], "--size");
    cr_assert_float_eq(t->timeout_s, 12.5, 1e-9);
    cr_assert_eq(t->memory_mb, 256);
    cr_assert_eq(t->concurrency, 4);
    cr_assert_eq(t->max_attempts, 5);
    cr_assert_float_eq(t->backoff.initial_s, 0.5, 1e-9);
    cr_assert_float_eq(t->backoff.max_s, 60.0, 1e-9);
    cr_assert_float_eq(t->backoff.multiplier, 1.5, 1e-9);
    cr_assert_eq(t->backoff.jitter, JITTER_EQUAL);
    cr_assert_eq(t->nenv, 2);
    expect_str(t->env[0].key, "SIZE");
    expect_str(t->env[0].value, "128x128");
    expect_str(t->env[1].key, "LANG_2");
    expect_str(t->env[1].value, "");
    cr_assert_eq(t->line, 21);

    const cfg_function *a = config_function(c, "audit.v2");
    cr_assert_not_null(a);
    cr_assert(a->native);
    cr_assert_not(a->runtime);
    cr_assert_eq(a->nexec, 0);
    expect_str(a->library, "examples/handlers/libaudit.so");
    expect_str(a->symbol, "audit");
    cr_assert_float_eq(a->timeout_s, 900.0, 1e-9);
    cr_assert_eq(a->memory_mb, 16);
    cr_assert_eq(a->concurrency, 100000);
    cr_assert_eq(a->max_attempts, 100);
    cr_assert_eq(a->backoff.jitter, JITTER_NONE);
    cr_assert_float_eq(a->backoff.initial_s, 1.0, 1e-9);
    cr_assert_float_eq(a->backoff.max_s, 300.0, 1e-9);
    cr_assert_float_eq(a->backoff.multiplier, 2.0, 1e-9);
    cr_assert_eq(a->nenv, 0);

    const cfg_function *r = config_function(c, "resize");
    cr_assert_not_null(r);
    cr_assert(r->runtime);
    cr_assert_not(r->native);
    /* the command is the worker's to resolve, like exec's */
    cr_assert_eq(r->nexec, 2);
    expect_str(r->exec[0], "python3");
    expect_str(r->exec[1], "examples/runtimes/python/bootstrap.py");
    expect_str(r->exec_at.file, FIX "full.cfg");
    cr_assert_eq(r->exec_at.line, 32);
    expect_str(r->rt.handler, "app.handler");
    cr_assert_eq(r->rt.format, RT_FORMAT_SNS);
    expect_str(config_rt_format_name(r->rt.format), "sns");
    cr_assert_eq(r->rt.max_invocations, 1000000000);
    cr_assert_float_eq(r->rt.idle_timeout_s, 86400.0, 1e-9);
    cr_assert_float_eq(r->rt.init_timeout_s, 0.5, 1e-9);
    cr_assert_eq(r->concurrency, 8);
    cr_assert_null(r->library);

    cr_assert_eq(c->ntopics, 2);
    const cfg_topic *u = config_topic(c, "uploads");
    cr_assert_not_null(u);
    cr_assert_eq(u->line, 38);
    cr_assert_eq(u->nsubs, 2);
    expect_str(u->subs[0].function, "thumbnail");
    cr_assert_eq(u->subs[0].line, 40);
    cr_assert_eq(u->subs[0].nfilters, 2);
    expect_str(u->subs[0].filters[0].key, "content_type");
    cr_assert_eq(u->subs[0].filters[0].nvalues, 2);
    expect_str(u->subs[0].filters[0].values[0], "image/png");
    expect_str(u->subs[0].filters[0].values[1], "image/jpeg");
    /* a bare string is a one-element list */
    expect_str(u->subs[0].filters[1].key, "region");
    cr_assert_eq(u->subs[0].filters[1].nvalues, 1);
    expect_str(u->subs[0].filters[1].values[0], "eu");
    expect_str(u->subs[1].function, "audit.v2");
    cr_assert_eq(u->subs[1].nfilters, 0);
    const cfg_topic *q = config_topic(c, "quiet-topic");
    cr_assert_not_null(q);
    cr_assert_eq(q->nsubs, 0);
    cr_assert_null(config_topic(c, "nope"));
    cr_assert_null(config_function(c, "nope"));

    cr_assert(c->worker.present);
    expect_str(c->worker.broker, "tcp://10.0.0.1:7711");
    expect_path(c->worker.key, "keys/worker.key");
    expect_str(c->worker.broker_key, "/etc/herald/broker.pub");
    cr_assert_eq(c->worker.concurrency, 8);
    cr_assert_eq(c->worker.nfunctions, 2);
    expect_str(c->worker.functions[0], "thumbnail");
    expect_str(c->worker.functions[1], "audit.v2");
    char *tests_dir = realpath("tests", NULL);
    expect_str(c->worker.root, tests_dir);
    free(tests_dir);
    expect_path(c->worker.run_dir, "run");

    cr_assert(c->gateway.present);
    expect_str(c->gateway.listen, "0.0.0.0:8080");
    expect_str(c->gateway.broker, "tcp://127.0.0.1:17710");
    expect_str(c->gateway.admin, "tcp://127.0.0.1:17712");
    expect_str(c->gateway.region, "eu-west-3");
    expect_str(c->gateway.account, "123456789012");
    expect_path(c->gateway.key, "keys/gateway.key");
    expect_path(c->gateway.broker_key, "keys/broker.pub");

    config_destroy(&c);
    cr_assert_null(c);
    config_destroy(&c); /* idempotent */
}

Test(config, defaults_when_absent)
{
    herald_config *c = load_ok(FIX "minimal.cfg");
    expect_str(c->broker.publish_endpoint, "tcp://127.0.0.1:7710");
    expect_str(c->broker.worker_endpoint, "tcp://127.0.0.1:7711");
    expect_str(c->broker.admin_endpoint, "tcp://127.0.0.1:7712");
    expect_path(c->broker.data_dir, "var/herald");
    cr_assert_eq(c->broker.durability, DURABILITY_FSYNC);
    cr_assert_eq(c->broker.max_payload, 262144);
    cr_assert_eq(c->broker.max_backlog, 10000000);
    cr_assert_eq(c->broker.disk_min_free, 268435456);
    cr_assert_float_eq(c->broker.heartbeat_s, 1.0, 1e-9);
    cr_assert_not(c->security.present);
    cr_assert_not(c->security.curve);
    cr_assert_null(c->security.secret_key);

    cr_assert_eq(c->nfunctions, 1);
    const cfg_function *f = &c->functions[0];
    expect_str(f->name, "f");
    cr_assert_eq(f->nexec, 1);
    cr_assert_float_eq(f->timeout_s, 30.0, 1e-9);
    cr_assert_eq(f->memory_mb, 128);
    cr_assert_eq(f->concurrency, 0);
    cr_assert_eq(f->max_attempts, 3);
    cr_assert_float_eq(f->backoff.initial_s, 1.0, 1e-9);
    cr_assert_float_eq(f->backoff.max_s, 300.0, 1e-9);
    cr_assert_float_eq(f->backoff.multiplier, 2.0, 1e-9);
    cr_assert_eq(f->backoff.jitter, JITTER_FULL);
    cr_assert_eq(c->ntopics, 1);
    cr_assert_eq(c->topics[0].subs[0].nfilters, 0);

    cr_assert_not(c->worker.present);
    expect_str(c->worker.broker, "tcp://127.0.0.1:7711");
    cr_assert_null(c->worker.key);
    cr_assert_null(c->worker.root);
    cr_assert_eq(c->worker.concurrency, 0);
    cr_assert_eq(c->worker.nfunctions, 0);
    cr_assert_not(c->gateway.present);
    expect_str(c->gateway.listen, "127.0.0.1:7780");
    expect_str(c->gateway.broker, "tcp://127.0.0.1:7710");
    expect_str(c->gateway.admin, "tcp://127.0.0.1:7712");
    expect_str(c->gateway.region, "us-east-1");
    expect_str(c->gateway.account, "000000000000");
    cr_assert_null(c->gateway.key);
    config_destroy(&c);
}

Test(config, empty_file_is_valid)
{
    herald_config *c = load_ok(FIX "empty.cfg");
    cr_assert_eq(c->nfunctions, 0);
    cr_assert_eq(c->ntopics, 0);
    config_destroy(&c);
}

Test(config, default_config_loads)
{
    herald_config *c = load_ok("config/herald.cfg");
    char *repo = realpath(".", NULL), *want = NULL;
    cr_assert(asprintf(&want, "%s/var/herald", repo) > 0);
    expect_str(c->broker.data_dir, want);
    free(want);
    free(repo);
    cr_assert_eq(c->broker.durability, DURABILITY_FSYNC);
    cr_assert_eq(c->nfunctions, 6);
    expect_str(config_function(c, "echo")->exec[0], "examples/handlers/echo.sh");
    const cfg_function *w = config_function(c, "words");
    cr_assert(w->runtime && !w->native);
    expect_str(w->exec[1], "examples/runtimes/python/bootstrap.py");
    expect_str(w->rt.handler, "examples/runtimes/python/app.handler");
    cr_assert(config_function(c, "words_js")->runtime);
    expect_str(config_function(c, "hello")->exec[0], "examples/handlers/hello.py");
    cr_assert(config_function(c, "count")->native);
    expect_str(config_function(c, "noop")->symbol, "noop");
    const cfg_topic *g = config_topic(c, "greetings");
    cr_assert_not_null(g);
    cr_assert_eq(g->nsubs, 1);
    expect_str(g->subs[0].filters[0].key, "lang");
    cr_assert_eq(g->subs[0].filters[0].nvalues, 2);
    cr_assert_eq(config_topic(c, "events")->nsubs, 2);
    cr_assert_eq(config_topic(c, "bench")->nsubs, 1);
    cr_assert_eq(config_topic(c, "texts")->nsubs, 2);
    cr_assert(c->worker.present);
    expect_str(c->worker.broker, "tcp://127.0.0.1:7711");
    config_destroy(&c);
}

Test(config, syntax_error)
{
    char *err = load_fail(FIX "bad_syntax.cfg");
    expect_str(err, FIX "bad_syntax.cfg:3: syntax error\n");
    free(err);
}

Test(config, other_parse_errors)
{
    char *err = string_fail("broker = {\n  heartbeat = 1;\n  heartbeat = 2; };\n");
    expect_str(err, "t.cfg:3: syntax error: duplicate setting name\n");
    free(err);
    err = NULL;
    herald_config *c = config_load_string("\n@include \"nope.cfg\"\n", "t.cfg", "tests/configs", &err);
    cr_assert_null(c);
    expect_str(err, "t.cfg:2: cannot open include file 'tests/configs/nope.cfg'\n");
    free(err);
}

Test(config, wrong_type)
{
    char *err = load_fail(FIX "bad_type.cfg");
    expect_str(err, FIX "bad_type.cfg:3: broker.max_payload: expected an integer, not a string\n"
                    FIX "bad_type.cfg:4: broker.heartbeat: expected a number of seconds, not a string\n");
    free(err);
}

Test(config, out_of_range)
{
    char *err = load_fail(FIX "bad_range.cfg");
    expect_str(err,
               FIX "bad_range.cfg:4: functions[0] (thumbnail): timeout: 1000 is out of range (0 < timeout ≤ 900)\n"
               FIX "bad_range.cfg:6: broker.max_payload: 512 is out of range (1024 ≤ max_payload ≤ 67108864)\n");
    free(err);
}

Test(config, unknown_top_level_name)
{
    char *err = load_fail(FIX "bad_unknown_top.cfg");
    expect_str(err, FIX "bad_unknown_top.cfg:2: unknown setting 'brokr' in the top level (did you mean 'broker'?)\n");
    free(err);
    err = string_fail("\n\nlimits = { a = 1; };\n");
    expect_str(err, "t.cfg:3: unknown setting 'limits' in the top level "
                    "(known: broker, security, functions, topics, schedules, worker, gateway)\n");
    free(err);
}

Test(config, unknown_name_in_function)
{
    char *err = load_fail(FIX "bad_unknown_key.cfg");
    expect_str(err, FIX "bad_unknown_key.cfg:4: unknown setting 'timout' in functions[0] (thumbnail) "
                    "(did you mean 'timeout'?)\n");
    free(err);
}

Test(config, unknown_name_in_nested_groups)
{
    char *err = string_fail("functions = ( { name = \"f\";\n"
                            "  native = { library = \"l.so\"; symbol = \"s\"; path = \"x\"; };\n"
                            "  backoff = { factor = 3; }; } );\n"
                            "topics = ( { name = \"t\"; subscriptions = ( { function = \"f\";\n"
                            "  filtre = { a = \"b\"; }; } ); } );\n"
                            "broker = { x = 1; };\n");
    expect_str(err, "t.cfg:2: unknown setting 'path' in functions[0] (f) native\n"
                    "t.cfg:3: unknown setting 'factor' in functions[0] (f) backoff\n"
                    "t.cfg:5: unknown setting 'filtre' in topics[0] (t) subscription (did you mean 'filter'?)\n"
                    "t.cfg:6: unknown setting 'x' in broker\n");
    free(err);
}

Test(config, int32_overflow_without_l)
{
    char *err = load_fail(FIX "bad_int32.cfg");
    expect_str(err, FIX "bad_int32.cfg:2: integer 5000000000 does not fit in 32 bits: "
                    "write it with an L suffix (e.g. 5000000000L)\n");
    free(err);
    /* the edges of int32, and hex, which libconfig reads as a signed int */
    err = string_fail("broker = {\n"
                      "  disk_min_free = 2147483647;\n"
                      "  max_backlog = 2147483648;\n"
                      "};\n"
                      "a = -2147483648; b = -2147483649;\n"
                      "c = 0x7FFFFFFF;\n"
                      "d = 0xFFFFFFFF;\n");
    expect_str(err, "t.cfg:3: integer 2147483648 does not fit in 32 bits: write it with an L suffix (e.g. 2147483648L)\n"
                    "t.cfg:5: integer -2147483649 does not fit in 32 bits: write it with an L suffix (e.g. -2147483649L)\n"
                    "t.cfg:5: unknown setting 'a' in the top level "
                    "(known: broker, security, functions, topics, schedules, worker, gateway)\n"
                    "t.cfg:5: unknown setting 'b' in the top level "
                    "(known: broker, security, functions, topics, schedules, worker, gateway)\n"
                    "t.cfg:6: unknown setting 'c' in the top level "
                    "(known: broker, security, functions, topics, schedules, worker, gateway)\n"
                    "t.cfg:7: integer 0xFFFFFFFF does not fit in 32 bits: write it with an L suffix (e.g. 0xFFFFFFFFL)\n"
                    "t.cfg:7: unknown setting 'd' in the top level "
                    "(known: broker, security, functions, topics, schedules, worker, gateway)\n");
    free(err);
}

Test(config, int64_with_l_accepted)
{
    herald_config *c = load_ok(FIX "good_int64.cfg");
    cr_assert_eq(c->broker.max_backlog, 5000000000LL);
    cr_assert_eq(c->broker.disk_min_free, 0x100000000LL);
    config_destroy(&c);
}

Test(config, big_digits_in_strings_and_comments_ignored)
{
    herald_config *c = load_ok(FIX "int_in_text.cfg");
    expect_path(c->broker.data_dir, "var/8000000000");
    cr_assert_float_eq(c->broker.heartbeat_s, 60.0, 1e-9);
    expect_str(c->functions[0].name, "f9000000000");
    expect_str(c->functions[0].exec[1], "say \"9000000000\"");
    config_destroy(&c);
    /* a float literal is no integer, however large */
    c = string_ok("broker = { max_payload = 262144; };\nfunctions = ( { name = \"x\"; exec = [\"a\"]; "
                  "backoff = { multiplier = 1e10; }; } );\n");
    cr_assert_float_eq(c->functions[0].backoff.multiplier, 1e10, 1);
    config_destroy(&c);
}

Test(config, unknown_function_in_subscription)
{
    char *err = load_fail(FIX "bad_subscription.cfg");
    expect_str(err, FIX "bad_subscription.cfg:5: topics[0] (uploads): subscription: unknown function 'thumbnale'\n");
    free(err);
}

Test(config, function_subscribed_twice)
{
    char *err = string_fail("functions = ( { name = \"f\"; exec = [\"a\"]; } );\n"
                            "topics = ( { name = \"t\"; subscriptions = (\n"
                            "  { function = \"f\"; },\n"
                            "  { function = \"f\"; } ); } );\n");
    expect_str(err, "t.cfg:4: topics[0] (t): subscription: function 'f' already subscribes to this topic (line 3)\n");
    free(err);
}

Test(config, duplicate_function_name)
{
    char *err = load_fail(FIX "bad_duplicate.cfg");
    expect_str(err, FIX "bad_duplicate.cfg:4: functions[2]: name 'thumbnail' is already used by functions[0] (line 2)\n");
    free(err);
}

Test(config, duplicate_topic_name)
{
    char *err = string_fail("topics = ( { name = \"t\"; },\n { name = \"t\"; } );\n");
    expect_str(err, "t.cfg:2: topics[1]: name 't' is already used by topics[0] (line 1)\n");
    free(err);
}

Test(config, exec_and_native)
{
    char *err = load_fail(FIX "bad_exec_native.cfg");
    expect_str(err, FIX "bad_exec_native.cfg:4: functions[0] (both): has both exec and native: "
                    "give exactly one of exec, native, runtime\n");
    free(err);
    err = string_fail("functions = (\n { name = \"none\"; timeout = 3; } );\n");
    expect_str(err, "t.cfg:2: functions[0] (none): has none of exec, native, runtime: give exactly one\n");
    free(err);
}

Test(config, runtime_every_error)
{
    char *err = load_fail(FIX "bad_runtime.cfg");
    expect_str(err,
        FIX "bad_runtime.cfg:3: functions[0] (a): runtime.command: expected a non-empty array of strings, not an empty one\n"
        FIX "bad_runtime.cfg:3: functions[0] (a): runtime.handler: must not be empty\n"
        FIX "bad_runtime.cfg:3: functions[0] (a): runtime.format: 'json' is not one of \"raw\", \"sns\"\n"
        FIX "bad_runtime.cfg:5: functions[1] (b): runtime.command[0]: the program must not be empty\n"
        FIX "bad_runtime.cfg:5: functions[1] (b): runtime.handler: 'app handler' is not 1 to 128 printable ASCII "
            "characters without spaces\n"
        FIX "bad_runtime.cfg:5: functions[1] (b): runtime.max_invocations: 1000000001 is out of range "
            "(0 ≤ max_invocations ≤ 1000000000)\n"
        FIX "bad_runtime.cfg:6: unknown setting 'idel_timeout' in functions[1] (b) runtime (did you mean 'idle_timeout'?)\n"
        FIX "bad_runtime.cfg:6: functions[1] (b): runtime.idle_timeout: 0 is out of range (0 < idle_timeout ≤ 86400)\n"
        FIX "bad_runtime.cfg:6: functions[1] (b): runtime.init_timeout: 901 is out of range (0 < init_timeout ≤ 900)\n"
        FIX "bad_runtime.cfg:7: functions[2] (c): runtime: needs command (the program to start, as an array of strings)\n"
        FIX "bad_runtime.cfg:7: functions[2] (c): runtime.max_invocations: -1 is out of range "
            "(0 ≤ max_invocations ≤ 1000000000)\n"
        FIX "bad_runtime.cfg:7: functions[2] (c): runtime.idle_timeout: 86400.5 is out of range (0 < idle_timeout ≤ 86400)\n"
        FIX "bad_runtime.cfg:8: functions[3] (d): runtime: expected a group { command = [\"...\"]; ... }, not an array\n"
        FIX "bad_runtime.cfg:10: functions[4] (e): has both exec and runtime: give exactly one of exec, native, runtime\n"
        FIX "bad_runtime.cfg:10: functions[4] (e): runtime.command: expected a non-empty array of strings, not a string\n"
        FIX "bad_runtime.cfg:10: functions[4] (e): runtime.init_timeout: expected a number of seconds, not a string\n"
        FIX "bad_runtime.cfg:12: functions[5] (f): has both native and runtime: give exactly one of exec, native, runtime\n"
        FIX "bad_runtime.cfg:13: functions[6] (g): has exec, native and runtime: give exactly one\n"
        FIX "bad_runtime.cfg:14: functions[6] (g): runtime.format: expected a string, not an integer\n");
    free(err);
    /* a handler of 128 bytes is the longest; a control character is refused */
    char text[512], h[130];
    memset(h, 'h', 129);
    h[129] = 0;
    snprintf(text, sizeof text, "functions = ( { name = \"f\"; runtime = { command = [\"p\"]; handler = \"%s\"; }; } );\n", h);
    err = string_fail(text);
    cr_assert(strstr(err, "runtime.handler: 'hhhh") && strstr(err, "is not 1 to 128 printable ASCII"), "%s", err);
    free(err);
    err = string_fail("functions = ( { name = \"f\"; runtime = { command = [\"p\"]; handler = \"a\\tb\"; }; } );\n");
    expect_str(err, "t.cfg:1: functions[0] (f): runtime.handler: 'a\\x09b' is not 1 to 128 printable ASCII characters "
                    "without spaces\n");
    free(err);
    h[128] = 0;
    snprintf(text, sizeof text, "functions = ( { name = \"f\"; runtime = { command = [\"p\"]; handler = \"%s\"; }; } );\n", h);
    herald_config *c = string_ok(text);
    cr_assert_eq(strlen(c->functions[0].rt.handler), 128);
    config_destroy(&c);
}

Test(config, runtime_defaults_and_integers_for_seconds)
{
    herald_config *c = string_ok("functions = ( { name = \"r\"; runtime = { command = [\"bin/boot\"]; }; },\n"
                                 "  { name = \"s\"; runtime = { command = [\"node\", \"index.js\"]; format = \"raw\";\n"
                                 "    max_invocations = 0; idle_timeout = 1; init_timeout = 900; handler = \"index.handler\"; }; } );\n");
    const cfg_function *r = &c->functions[0];
    cr_assert(r->runtime);
    cr_assert_not(r->native);
    cr_assert_eq(r->nexec, 1);
    expect_str(r->exec[0], "bin/boot");
    cr_assert_eq(r->exec_at.line, 1);
    cr_assert_null(r->rt.handler, "absent: _HANDLER is not set");
    cr_assert_eq(r->rt.format, RT_FORMAT_RAW);
    cr_assert_eq(r->rt.max_invocations, 0);
    cr_assert_float_eq(r->rt.idle_timeout_s, 300.0, 1e-9);
    cr_assert_float_eq(r->rt.init_timeout_s, 10.0, 1e-9);
    cr_assert_float_eq(r->timeout_s, 30.0, 1e-9);
    const cfg_function *s = &c->functions[1];
    cr_assert(s->runtime);
    expect_str(s->rt.handler, "index.handler");
    cr_assert_float_eq(s->rt.idle_timeout_s, 1.0, 1e-9);
    cr_assert_float_eq(s->rt.init_timeout_s, 900.0, 1e-9);
    cr_assert_eq(s->exec_at.line, 2);
    /* exec and native functions keep the runtime defaults and are not runtimes */
    config_destroy(&c);
    c = string_ok("functions = ( { name = \"e\"; exec = [\"a\"]; } );\n");
    cr_assert_not(c->functions[0].runtime);
    cr_assert_null(c->functions[0].rt.handler);
    config_destroy(&c);
}

Test(config, several_errors_all_reported)
{
    char *err = load_fail(FIX "bad_many.cfg");
    expect_str(err,
        FIX "bad_many.cfg:2: broker.max_payload: 10 is out of range (1024 ≤ max_payload ≤ 67108864)\n"
        FIX "bad_many.cfg:3: unknown setting 'durabilty' in broker (did you mean 'durability'?)\n"
        FIX "bad_many.cfg:6: functions[0]: name 'a b' is invalid (expected 1 to 128 of A-Z a-z 0-9 _ . -)\n"
        FIX "bad_many.cfg:7: functions[1] (ok): exec: expected a non-empty array of strings, not an empty one\n"
        FIX "bad_many.cfg:7: functions[1] (ok): memory_mb: 8 is out of range (16 ≤ memory_mb ≤ 10240)\n"
        FIX "bad_many.cfg:10: topics[0] (t): subscription: unknown function 'missing'\n"
        FIX "bad_many.cfg:12: unknown setting 'colour' in the top level "
            "(known: broker, security, functions, topics, schedules, worker, gateway)\n"
        /* one error for a truncated value, not a second about its range */
        FIX "bad_many.cfg:13: integer 3000000000 does not fit in 32 bits: write it with an L suffix (e.g. 3000000000L)\n");
    free(err);
}

Test(config, errors_in_included_file_name_it)
{
    char *err = load_fail(FIX "bad_include.cfg");
    expect_str(err,
        FIX "bad_include.cfg:3: broker.heartbeat: 0.05 is out of range (0.1 ≤ heartbeat ≤ 60)\n"
        FIX "bad_include_part.cfg:2: worker.concurrency: 0 is out of range (1 ≤ concurrency ≤ 100000)\n"
        FIX "bad_include_part.cfg:3: integer 99999999999 does not fit in 32 bits: write it with an L suffix (e.g. 99999999999L)\n"
        FIX "bad_include_part.cfg:3: gateway.account: expected a string, not an integer\n");
    free(err);
}

Test(config, relative_paths_resolved_against_file_dir)
{
    herald_config *c = load_ok(FIX "full.cfg");
    expect_path(c->broker.data_dir, "data/herald");
    config_destroy(&c);
    char *err = NULL;
    c = config_load_string("broker = { data_dir = \"../d\"; };\nsecurity = { secret_key = \"/abs/k\"; };\n",
                           "s.cfg", "tests/configs", &err);
    cr_assert_not_null(c, "%s", err);
    char *tests_dir = realpath("tests", NULL), *want = NULL;
    cr_assert(asprintf(&want, "%s/d", tests_dir) > 0);
    expect_str(c->broker.data_dir, want);
    expect_str(c->security.secret_key, "/abs/k");
    free(want);
    free(tests_dir);
    config_destroy(&c);
    /* no base directory: paths stay as written */
    c = string_ok("broker = { data_dir = \"rel/d\"; };\n");
    expect_str(c->broker.data_dir, "rel/d");
    config_destroy(&c);
}

Test(config, wrong_types_everywhere)
{
    /* env names are case-sensitive: herald_x is the user's own, HERALD_ID is not */
    char *err = string_fail(
        "functions = ( { name = \"f\"; exec = \"a.sh\"; timeout = \"3\"; env = { A = 1; herald_x = \"y\"; HERALD_ID = \"z\"; }; },\n"
        "  { name = \"g\"; native = { library = 3; symbol = \"bad-sym\"; }; max_attempts = 1.5; } );\n"
        "topics = ( { name = \"t\"; subscriptions = ( { function = \"f\"; filter = { k = []; n = [1]; }; } ); } );\n"
        "security = { curve = 1; };\n"
        "worker = { functions = [\"f\", \"f\", \"nope\"]; key = \"k\"; };\n"
        "gateway = { account = \"12\"; region = \"US:EAST\"; broker = \"tcp//x:1\"; };\n");
    expect_str(err,
        "t.cfg:1: functions[0] (f): exec: expected a non-empty array of strings, not a string\n"
        "t.cfg:1: functions[0] (f): timeout: expected a number of seconds, not a string\n"
        "t.cfg:1: functions[0] (f): env.A: expected a string, not an integer\n"
        "t.cfg:1: functions[0] (f): env.HERALD_ID: HERALD_* variables are set by herald itself\n"
        "t.cfg:2: functions[1] (g): native.library: expected a string, not an integer\n"
        "t.cfg:2: functions[1] (g): native.symbol: 'bad-sym' is not a C identifier\n"
        "t.cfg:2: functions[1] (g): max_attempts: expected an integer, not a float\n"
        "t.cfg:3: topics[0] (t): subscription: filter.k: expected a string or a non-empty array of strings, not an empty one\n"
        "t.cfg:3: topics[0] (t): subscription: filter.n[0]: expected a string, not an integer\n"
        "t.cfg:4: security.curve: expected true or false, not an integer\n"
        "t.cfg:5: worker.key: is set but broker_key is not: a client needs both its own key and the broker's\n"
        "t.cfg:5: worker.functions[1]: 'f' is listed twice\n"
        "t.cfg:5: worker.functions[2]: unknown function 'nope'\n"
        "t.cfg:6: gateway.broker: 'tcp//x:1' is not a ZeroMQ endpoint (expected tcp://HOST:PORT or ipc://PATH)\n"
        "t.cfg:6: gateway.region: 'US:EAST' is not a region name (like us-east-1)\n"
        "t.cfg:6: gateway.account: '12' is not an account id (12 digits)\n");
    free(err);
}

Test(config, backoff_and_enums)
{
    char *err = string_fail(
        "functions = ( { name = \"f\"; exec = [\"a\"];\n"
        "  backoff = { initial = 500; jitter = \"half\"; multiplier = 0.5; }; } );\n"
        "broker = { durability = \"sometimes\"; heartbeat = 61; max_backlog = 0; disk_min_free = -1; };\n"
        "security = { curve = true; secret_key = \"k\"; };\n");
    expect_str(err,
        "t.cfg:2: functions[0] (f): backoff.multiplier: 0.5 is out of range (multiplier ≥ 1)\n"
        "t.cfg:2: functions[0] (f): backoff.jitter: 'half' is not one of \"full\", \"equal\", \"none\"\n"
        "t.cfg:2: functions[0] (f): backoff.max: 300 (the default) is less than backoff.initial (500)\n"
        "t.cfg:3: broker.durability: 'sometimes' is not one of \"fsync\", \"os\"\n"
        "t.cfg:3: broker.max_backlog: 0 is out of range (max_backlog ≥ 1)\n"
        "t.cfg:3: broker.disk_min_free: -1 is out of range (disk_min_free ≥ 0)\n"
        "t.cfg:3: broker.heartbeat: 61 is out of range (0.1 ≤ heartbeat ≤ 60)\n"
        "t.cfg:4: security: curve = true needs publishers\n"
        "t.cfg:4: security: curve = true needs workers\n"
        "t.cfg:4: security: curve = true needs admins\n");
    free(err);
}

Test(config, missing_names_and_list_shapes)
{
    char *err = string_fail("functions = { name = \"f\"; };\n"
                            "topics = ( { subscriptions = ( { filter = { a = \"b\"; }; } ); }, \"x\" );\n");
    expect_str(err,
        "t.cfg:1: functions: expected a list ( { name = ...; }, ... ), not a group\n"
        "t.cfg:2: topics[0]: needs a name\n"
        "t.cfg:2: topics[0]: subscription: needs a function\n"
        "t.cfg:2: topics[1]: expected a group { name = \"...\"; subscriptions = (...); }, not a string\n");
    free(err);
}

Test(config, int64_accepted_for_int_keys)
{
    herald_config *c = string_ok("functions = ( { name = \"f\"; exec = [\"a\"]; memory_mb = 512L; timeout = 10L; } );\n"
                                 "broker = { max_payload = 2048L; };\n");
    cr_assert_eq(c->functions[0].memory_mb, 512);
    cr_assert_float_eq(c->functions[0].timeout_s, 10.0, 1e-9);
    cr_assert_eq(c->broker.max_payload, 2048);
    config_destroy(&c);
}

Test(config, errors_append_to_errbuf)
{
    char *err = strdup("before\n");
    herald_config *c = config_load_string("x = 1;\n", "a.cfg", NULL, &err);
    cr_assert_null(c);
    expect_str(err, "before\na.cfg:1: unknown setting 'x' in the top level "
                    "(known: broker, security, functions, topics, schedules, worker, gateway)\n");
    free(err);
}

Test(config, errors_to_stderr_without_errbuf, .init = cr_redirect_stderr)
{
    herald_config *c = config_load_string("broker = { max_payload = 1; };\n", "b.cfg", NULL, NULL);
    cr_assert_null(c);
    fflush(stderr);
    cr_assert_stderr_eq_str("b.cfg:1: broker.max_payload: 1 is out of range (1024 ≤ max_payload ≤ 67108864)\n");
}

Test(config, unreadable_file)
{
    char *err = load_fail(FIX "does-not-exist.cfg");
    expect_str(err, FIX "does-not-exist.cfg: cannot read: No such file or directory\n");
    free(err);
}

Test(config, names)
{
    cr_assert_str_eq(config_jitter_name(JITTER_FULL), "full");
    cr_assert_str_eq(config_jitter_name(JITTER_EQUAL), "equal");
    cr_assert_str_eq(config_jitter_name(JITTER_NONE), "none");
    cr_assert_str_eq(config_durability_name(DURABILITY_FSYNC), "fsync");
    cr_assert_str_eq(config_durability_name(DURABILITY_OS), "os");
    char long_name[140];
    memset(long_name, 'a', 129);
    long_name[129] = '\0';
    char *text = NULL;
    cr_assert(asprintf(&text, "topics = ( { name = \"%s\"; } );\n", long_name) > 0);
    char *err = string_fail(text);
    cr_assert(strstr(err, "t.cfg:1: topics[0]: name '") == err, "%s", err);
    cr_assert(strstr(err, "...' is invalid"), "%s", err);
    free(err);
    free(text);
    long_name[128] = '\0';
    cr_assert(asprintf(&text, "topics = ( { name = \"%s\"; } );\n", long_name) > 0);
    herald_config *c = string_ok(text);
    cr_assert_eq(strlen(c->topics[0].name), 128);
    config_destroy(&c);
    free(text);
}

Test(config, endpoints_are_checked_fully)
{
    char *err = string_fail(
        "broker = { publish_endpoint = \"tcp://127.0.0.1:99999\";\n"
        "  worker_endpoint = \"udp://127.0.0.1:7711\";\n"
        "  admin_endpoint = \"tcp://127.0.0.1:\"; };\n"
        "worker = { broker = \"tcp://*:7711\"; };\n"
        "gateway = { broker = \"tcp://host:port\"; admin = \"inproc://admin\"; };\n");
    expect_str(err,
        "t.cfg:1: broker.publish_endpoint: 'tcp://127.0.0.1:99999' has port 99999, outside 1 to 65535\n"
        "t.cfg:2: broker.worker_endpoint: 'udp://127.0.0.1:7711' has an unknown transport 'udp' (herald speaks tcp:// and ipc://)\n"
        "t.cfg:3: broker.admin_endpoint: 'tcp://127.0.0.1:' has no port (expected tcp://HOST:PORT)\n"
        "t.cfg:4: worker.broker: 'tcp://*:7711' has host '*', which only a bind can use: give the broker's address\n"
        "t.cfg:5: gateway.broker: 'tcp://host:port' has port 'port', not a number from 1 to 65535\n"
        "t.cfg:5: gateway.admin: 'inproc://admin' uses inproc://, which reaches only the same process (use tcp:// or ipc://)\n");
    free(err);
}

Test(config, endpoint_hosts_ports_and_paths)
{
    char *err = string_fail(
        "broker = { publish_endpoint = \"tcp://:7710\";\n"
        "  worker_endpoint = \"tcp://::1:7711\";\n"
        "  admin_endpoint = \"tcp://1.2.3.999:7712\"; };\n"
        "worker = { broker = \"tcp://bro ker:7711\"; };\n"
        "gateway = { broker = \"ipc://\"; admin = \"tcp://[fe80::zz]:7712\"; listen = \"127.0.0.1:70000\"; };\n");
    expect_str(err,
        "t.cfg:1: broker.publish_endpoint: 'tcp://:7710' has no host (expected tcp://HOST:PORT)\n"
        "t.cfg:2: broker.worker_endpoint: 'tcp://::1:7711' has an IPv6 address without brackets (write tcp://[ADDRESS]:PORT)\n"
        "t.cfg:3: broker.admin_endpoint: 'tcp://1.2.3.999:7712' has host '1.2.3.999', not an IPv4 address\n"
        "t.cfg:4: worker.broker: 'tcp://bro ker:7711' has host 'bro ker', not a host name, an IP address or [IPv6]\n"
        "t.cfg:5: gateway.listen: '127.0.0.1:70000' has port 70000, outside 0 to 65535\n"
        "t.cfg:5: gateway.broker: 'ipc://' has an empty path\n"
        "t.cfg:5: gateway.admin: 'tcp://[fe80::zz]:7712' has host '[fe80::zz]', not an IPv6 address\n");
    free(err);

    char longpath[200];
    memset(longpath, 'p', 120);
    longpath[120] = '\0';
    char *text = NULL;
    cr_assert(asprintf(&text, "broker = { publish_endpoint = \"tcp://*:*\"; worker_endpoint = \"tcp://0.0.0.0:0\";\n"
                              "  admin_endpoint = \"ipc:///tmp/%s\"; };\n", longpath) > 0);
    err = string_fail(text);
    free(text);
    expect_str(err,
        "t.cfg:1: broker.publish_endpoint: 'tcp://*:*' has port '*' (any free port), which clients could not find: give a port from 1 to 65535\n"
        "t.cfg:1: broker.worker_endpoint: 'tcp://0.0.0.0:0' has port 0, outside 1 to 65535\n"
        "t.cfg:2: broker.admin_endpoint: 'ipc:///tmp/ppppppppppppppppppppppppppppppppppppppppppppppppppppp...' has a path of 125 bytes; a Unix socket path holds at most 107\n");
    free(err);
}

Test(config, good_endpoints_of_every_form)
{
    herald_config *c = string_ok(
        "broker = { publish_endpoint = \"tcp://*:7710\"; worker_endpoint = \"tcp://[::1]:7711\";\n"
        "  admin_endpoint = \"ipc:///run/herald/admin.sock\"; };\n"
        "worker = { broker = \"tcp://broker-1.example.com:7711\"; };\n"
        "gateway = { broker = \"ipc://@herald-publish\"; admin = \"tcp://[fe80::1%eth0]:65535\"; listen = \"[::]:0\"; };\n");
    expect_str(c->broker.publish_endpoint, "tcp://*:7710");
    expect_str(c->worker.broker, "tcp://broker-1.example.com:7711");
    expect_str(c->gateway.admin, "tcp://[fe80::1%eth0]:65535");
    config_destroy(&c);
    c = string_ok("broker = { publish_endpoint = \"tcp://eth0:1\"; worker_endpoint = \"tcp://10.1.2.3:7711\"; };\n"
                  "worker = { broker = \"tcp://10.1.2.3:7711\"; };\n");
    config_destroy(&c);
}

Test(config, probe_judges_arguments_and_library_symbols_as_documented)
{
    /* libc: a library that holds a data symbol (environ) beside functions */
    if (access("/lib/x86_64-linux-gnu/libc.so.6", R_OK) != 0)
        cr_skip_test("no /lib/x86_64-linux-gnu/libc.so.6 on this machine");
    herald_config *c = string_ok(
        "functions = ( { name = \"a\"; exec = [\"sh\", \"text/plain\", \"-o/x.sh\", \"k=v/x.sh\", \"a/b.sh\"]; },\n"
        "  { name = \"b\"; native = { library = \"/lib/x86_64-linux-gnu/libc.so.6\";\n"
        "    symbol = \"environ\"; }; },\n"
        "  { name = \"c\"; native = { library = \"/lib/x86_64-linux-gnu/libc.so.6\"; symbol = \"printf\"; }; } );\n");
    char *err = NULL;
    cr_assert_eq(config_probe(c, "/nonexistent-root", &err), 2, "%s", err);
    expect_str(err,
        "t.cfg:1: functions[0] (a): exec[4]: /nonexistent-root/a/b.sh does not exist (the handler would get 'a/b.sh' "
        "in an empty directory)\n"
        "t.cfg:3: functions[1] (b): native.symbol: 'environ' is defined in /lib/x86_64-linux-gnu/libc.so.6 but is not "
        "a function\n");
    free(err);
    config_destroy(&c);
}

Test(config, probe_checks_a_runtime_command_like_an_exec_program)
{
    herald_config *c = string_ok(
        "functions = ( { name = \"r\"; runtime = { command = [\"no-such-program-of-herald\"]; }; },\n"
        "  { name = \"s\";\n"
        "    runtime = { command = [\"bin/boot\", \"app/main.py\", \"text/plain\"]; }; },\n"
        "  { name = \"t\"; runtime = { command = [\"sh\", \"-c\", \"exit 0\"]; }; } );\n");
    char *err = NULL;
    cr_assert_eq(config_probe(c, "/nonexistent-root", &err), 3, "%s", err);
    expect_str(err,
        "t.cfg:1: functions[0] (r): runtime.command[0]: 'no-such-program-of-herald' is not an executable program in PATH\n"
        "t.cfg:3: functions[1] (s): runtime.command[0]: /nonexistent-root/bin/boot does not exist\n"
        "t.cfg:3: functions[1] (s): runtime.command[1]: /nonexistent-root/app/main.py does not exist\n");
    free(err);
    config_destroy(&c);
}
