/* test_datadir.c — one broker per data_dir (DESIGN §3): the broker holds a
 * lock on its data_dir for its life; a second broker on the same data_dir
 * exits 2 naming the holder's pid, whatever its endpoints; the lock dies with
 * its holder, even a SIGKILLed one. Brokers on other data_dirs and heraldctl's
 * read-only dlq commands are not affected. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static h_env env;
static void setup(void) { h_setup(&env); }
static void teardown(void) { h_teardown(&env); }
TestSuite(data_dir, .init = setup, .fini = teardown, .timeout = 90);

/* Nobody serves f: published events stay ready in the database. */
static const char *BODY =
    "functions = ( { name = \"f\"; exec = [\"/bin/true\"]; } );\n"
    "topics = ( { name = \"t\"; subscriptions = ( { function = \"f\"; } ); } );\n";

/* Writes DIR/NAME.cfg: a broker on endpoints DIR/NAME-{pub,wrk,adm}.sock and
 * the given data_dir; adm gets its admin endpoint. */
static const char *other_config(const char *name, const char *data_dir, char *adm, size_t admlen)
{
    static char path[600];
    char text[4096];
    snprintf(adm, admlen, "ipc://%s/%s-adm.sock", env.dir, name);
    snprintf(text, sizeof text,
             "broker = { publish_endpoint = \"ipc://%s/%s-pub.sock\"; worker_endpoint = \"ipc://%s/%s-wrk.sock\";\n"
             "  admin_endpoint = \"%s\"; data_dir = \"%s\"; durability = \"os\"; };\n%s",
             env.dir, name, env.dir, name, adm, data_dir, BODY);
    if (env.curve)
        snprintf(text + strlen(text), sizeof text - strlen(text),
                 "security = { curve = true; secret_key = \"keys/broker.key\"; publishers = \"keys/publishers\";\n"
                 "  workers = \"keys/workers\"; admins = \"keys/admins\"; };\n");
    snprintf(path, sizeof path, "%s/%s.cfg", env.dir, name);
    h_write(path, text);
    return path;
}

static void publish(const char *payload)
{
    char *out = NULL;
    int rc = h_run(&env, NULL, &out, NULL, "bin/herald-publish", "--broker", env.pub, "t", payload, NULL);
    cr_assert_eq(rc, 0, "publish %s: exit %d", payload, rc);
    free(out);
}

Test(data_dir, a_second_broker_on_the_same_data_dir_exits_2_naming_the_holder)
{
    h_config(&env, "os", BODY);
    pid_t first = h_broker(&env);
    publish("one");

    char adm2[400], data[400];
    snprintf(data, sizeof data, "%s/data", env.dir);
    const char *cfg2 = other_config("second", data, adm2, sizeof adm2);
    char *err = NULL;
    int rc = h_run(&env, NULL, NULL, &err, "bin/herald-broker", "-c", cfg2, NULL);
    cr_assert_eq(rc, 2, "a second broker on the same data_dir: exit %d, stderr: %s", rc, err);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %d", (int)first);
    cr_assert(err && strstr(err, pid) && strstr(err, data), "the refusal names the holder (%s) and the data_dir: %s",
              pid, err);
    cr_assert(strchr(err, '\n') == err + strlen(err) - 1, "one line: %s", err);
    free(err);

    /* the first broker is unaffected: it still confirms publishes */
    publish("two");
    h_assert_sub(&env, "t", "f", "ready", 2);
}

Test(data_dir, a_lock_left_by_a_killed_broker_does_not_block_a_restart)
{
    h_config(&env, "os", BODY);
    pid_t first = h_broker(&env);
    publish("one");
    publish("two");
    publish("three");
    cr_assert_eq(h_signal_exit(&env, first, SIGKILL, 5000), 128 + SIGKILL);
    h_broker(&env);   /* asserts that it comes up */
    h_assert_sub(&env, "t", "f", "ready", 3);
    publish("four");
    h_assert_sub(&env, "t", "f", "ready", 4);
}

Test(data_dir, brokers_on_other_data_dirs_and_dlq_readers_are_not_affected)
{
    h_config(&env, "os", BODY);
    h_broker(&env);
    publish("one");

    /* another data_dir: its own broker runs beside the first */
    char adm2[400], data2[400];
    snprintf(data2, sizeof data2, "%s/data2", env.dir);
    const char *cfg2 = other_config("other", data2, adm2, sizeof adm2);
    pid_t second = h_start(&env, "other", "bin/herald-broker", "-c", cfg2, NULL);
    char *out = NULL;
    int rc = -1;
    for (int i = 0; i < 400 && rc != 0; i++) {
        free(out);
        out = NULL;
        rc = h_run(&env, NULL, &out, NULL, "bin/heraldctl", "--broker", adm2, "--timeout", "0.5", "stats", "--json",
                   NULL);
        cr_assert_eq(kill(second, 0), 0, "the broker on another data_dir exited (see %s/other.err)", env.dir);
    }
    cr_assert_eq(rc, 0, "the broker on another data_dir did not answer");
    free(out);

    /* heraldctl reads the dead letters of a running broker's database */
    char data[400];
    snprintf(data, sizeof data, "%s/data", env.dir);
    out = NULL;
    char *err = NULL;
    rc = h_run(&env, NULL, &out, &err, "bin/heraldctl", "dlq", "list", "--db", data, "--json", NULL);
    cr_assert_eq(rc, 0, "dlq list --db on a running broker's data_dir: exit %d: %s", rc, err);
    cr_assert(out && strstr(out, "["), "%s", out);
    free(out);
    free(err);
    publish("two");
    h_assert_sub(&env, "t", "f", "ready", 2);
}
