/* test_console.c — the web console (DESIGN §14) through the real programs:
 * broker + worker + herald-gateway, its JSON API read with curl and compared
 * with heraldctl, and the pages loaded in headless Chromium
 * (tests/console/drive.py, Debian's chromium + chromium-driver +
 * python3-selenium) which checks every number shown and replays a dead
 * letter through the page. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static h_env env;
static char ep[64];
static void setup(void) { h_setup(&env); }
static void teardown(void) { h_teardown(&env); }
TestSuite(console, .init = setup, .fini = teardown, .timeout = 180);

/* broker, a worker and the gateway; `fix` dead-letters at once until FIX exists. */
static void start_all(bool write)
{
    char body[4096];
    snprintf(body, sizeof body,
             "functions = (\n"
             " { name = \"fix\"; exec = [\"tests/handlers/ctl_fixable.sh\"];\n"
             "   env = { RECORD_FILE = \"%s\"; FIX_FILE = \"%s\"; }; },\n"
             " { name = \"ok\"; exec = [\"true\"]; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"fix\"; }, { function = \"ok\"; } ); } );\n"
             "schedules = ( { name = \"nightly\"; cron = \"0 2 * * ? *\"; timezone = \"Europe/Paris\"; topic = \"t\"; } );\n"
             "gateway = { listen = \"127.0.0.1:0\"; broker = \"%s\"; admin = \"%s\"; console_write = %s; };\n",
             h_path(&env, "rec.txt"), h_path(&env, "FIX"), env.pub, env.adm, write ? "true" : "false");
    h_config(&env, "os", body);
    h_broker(&env);
    h_worker(&env, NULL, 4);
    h_gateway(&env, ep, sizeof ep);
}

/* GET (or ARGS…) the gateway's PATH: the HTTP status; *body the response. */
static int curl(char **body, const char *path, const char *a1, const char *a2, const char *a3, const char *a4)
{
    char u[300];
    snprintf(u, sizeof u, "%s%s", ep, path);
    return h_curl(&env, body, u, a1, a2, a3, a4, NULL);
}

/* heraldctl … --json without its final newline (the API has none). */
static char *ctl_json(const char *a, const char *b, const char *c, const char *d)
{
    char *out = h_ctl(&env, a, b, c, d, NULL);
    cr_assert(out, "heraldctl %s %s failed", a, b);
    out[strcspn(out, "\n")] = 0;
    return out;
}

/* Three events: each dead-lettered by fix, handled by ok. Returns the first's message id. */
static char *publish_three(void)
{
    char *first = NULL;
    for (int i = 0; i < 3; i++) {
        char *out = NULL;
        cr_assert_eq(h_run(&env, NULL, &out, NULL, "bin/herald-publish", "--broker", env.pub, "t",
                           i == 0 ? "first event" : "another", NULL), 0);
        out[strcspn(out, "\n")] = 0;
        if (i == 0) first = out;
        else free(out);
    }
    h_wait_sub(&env, "t", "fix", "dead", 3, 20000);
    h_wait_sub(&env, "t", "ok", "succeeded", 3, 20000);
    return first;
}

Test(console, the_api_answers_what_heraldctl_answers)
{
    start_all(false);
    free(publish_three());
    char *api = NULL, *ctl = ctl_json("dlq", "list", "--json", NULL);
    cr_assert_eq(curl(&api, "/api/dlq", NULL, NULL, NULL, NULL), 200);
    cr_assert_str_eq(api, ctl, "GET /api/dlq\n%s\nheraldctl dlq list --json\n%s", api, ctl);
    free(api);
    free(ctl);
    ctl = ctl_json("schedules", "--json", NULL, NULL);
    cr_assert_eq(curl(&api, "/api/schedules", NULL, NULL, NULL, NULL), 200);
    cr_assert_str_eq(api, ctl);
    free(api);
    free(ctl);
    ctl = ctl_json("dlq", "show", "1", "--json");
    cr_assert_eq(curl(&api, "/api/dlq/1", NULL, NULL, NULL, NULL), 200);
    cr_assert_str_eq(api, ctl);
    free(api);
    free(ctl);
    /* stats: the same document but for the workers' "last seen", which moves */
    cr_assert_eq(curl(&api, "/api/stats", NULL, NULL, NULL, NULL), 200);
    ctl = ctl_json("stats", "--json", NULL, NULL);
    char *a = strstr(api, "\"workers\""), *c = strstr(ctl, "\"workers\"");
    cr_assert(a && c);
    *a = *c = 0;
    cr_assert_str_eq(api, ctl);
    free(api);
    free(ctl);
    cr_assert_eq(curl(&api, "/api/dlq/999", NULL, NULL, NULL, NULL), 404, "%s", api);
    free(api);
    cr_assert_eq(curl(&api, "/api/dlq?function=no%20such", NULL, NULL, NULL, NULL), 400, "%s", api);
    free(api);
    cr_assert_eq(curl(&api, "/api/nothing", NULL, NULL, NULL, NULL), 404, "%s", api);
    free(api);
}

Test(console, replay_and_purge_are_refused_unless_console_write_is_on)
{
    start_all(false);
    free(publish_three());
    char *out = NULL;
    cr_assert_eq(curl(&out, "/api/dlq/replay", "-X", "POST", "-d", "ids=1"), 403, "%s", out);
    cr_assert(strstr(out, "console_write"), "%s", out);
    free(out);
    cr_assert_eq(curl(&out, "/api/dlq/purge", "-X", "POST", "-d", "all=1"), 403, "%s", out);
    free(out);
    h_assert_sub(&env, "t", "fix", "dead", 3);   /* nothing was touched */
}

Test(console, replay_and_purge_take_ids_or_all_and_say_how_many)
{
    start_all(true);
    free(publish_three());
    char *out = NULL;
    cr_assert_eq(curl(&out, "/api/dlq/purge", "-X", "POST", "-d", "function=fix"), 400, "%s", out);   /* neither */
    free(out);
    cr_assert_eq(curl(&out, "/api/dlq/purge", "-X", "POST", "-d", "all=1&dryrun=1"), 400, "%s", out);   /* misspelt */
    cr_assert(strstr(out, "unknown field 'dryrun'"), "%s", out);
    free(out);
    cr_assert_eq(curl(&out, "/api/dlq/purge", "-X", "POST", "-d", "all=1&function=fix&dry_run=1"), 200, "%s", out);
    cr_assert(strstr(out, "\"count\":3"), "%s", out);
    free(out);
    h_assert_sub(&env, "t", "fix", "dead", 3);   /* a dry run */
    cr_assert_eq(curl(&out, "/api/dlq/purge", "-X", "POST", "-d", "ids=1,2"), 200, "%s", out);
    cr_assert(strstr(out, "\"count\":2"), "%s", out);
    free(out);
    h_wait_sub(&env, "t", "fix", "dead", 1, 10000);
}

/* The pages in a real browser: every number as heraldctl says, and a dead
 * letter replayed through the page is handled. */
Test(console, the_pages_show_what_heraldctl_shows_and_replay_a_dead_letter_in_chromium)
{
    start_all(true);
    char *mid = publish_three();
    char *stats = h_ctl(&env, "stats", "--json", NULL);
    cr_assert(stats);
    h_write(h_path(&env, "stats.json"), stats);
    free(stats);
    h_write(h_path(&env, "FIX"), "fixed\n");   /* the replayed one succeeds */
    char *out = NULL, *err = NULL;
    const char *shots = getenv("HERALD_CONSOLE_SCREENSHOTS");
    int rc = shots ? h_run(&env, NULL, &out, &err, "/usr/bin/python3", "tests/console/drive.py", ep,
                           h_path(&env, "stats.json"), mid, "--screenshots", shots, NULL)
                   : h_run(&env, NULL, &out, &err, "/usr/bin/python3", "tests/console/drive.py", ep,
                           h_path(&env, "stats.json"), mid, NULL);
    cr_assert_eq(rc, 0, "drive.py: %s%s", out, err);
    free(out);
    free(err);
    h_wait_sub(&env, "t", "fix", "succeeded", 1, 20000);
    h_assert_sub(&env, "t", "fix", "dead", 2);
    free(mid);
}
