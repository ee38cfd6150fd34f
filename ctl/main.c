/* main.c — heraldctl [--broker ADMIN_ENDPOINT] [-c FILE] [--timeout S] COMMAND
 *
 * Commands in this version: `stats [--json]`, `workers [--json]`,
 * `check FILE`. Exit codes: 0 success, 1 runtime failure (broker unreachable,
 * refused), 2 usage or config error. Errors: one line on stderr.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../config/config.h"
#include "ctl.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: heraldctl [--broker ADMIN_ENDPOINT] [-c FILE] [--timeout SECONDS] COMMAND\n"
            "commands:\n"
            "  stats [--json]      topics, subscriptions, functions, workers\n"
            "  workers [--json]    connected workers\n"
            "  check FILE          validate a config file; every error as FILE:LINE\n");
}

static int cmd_check(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "heraldctl: usage: heraldctl check FILE\n");
        return 2;
    }
    char *errs = NULL;
    herald_config *cfg = config_load(argv[1], &errs);
    if (!cfg) {
        fputs(errs ? errs : "", stderr);
        free(errs);
        return 2;
    }
    size_t nsubs = 0;
    for (size_t i = 0; i < cfg->ntopics; i++) nsubs += cfg->topics[i].nsubs;
    printf("%s: ok (%zu functions, %zu topics, %zu subscriptions)\n", argv[1], cfg->nfunctions,
           cfg->ntopics, nsubs);
    config_destroy(&cfg);
    free(errs);
    return 0;
}

/* Prints rows of a list of maps as an aligned table with these columns. */
static void table(const msgpack_object *list, const char *const *cols, size_t ncols)
{
    if (!list || list->type != MSGPACK_OBJECT_ARRAY) return;
    size_t nrows = list->via.array.size;
    size_t width[16] = { 0 };
    for (size_t c = 0; c < ncols; c++) width[c] = strlen(cols[c]);
    char cell[256];
    for (size_t r = 0; r < nrows; r++)
        for (size_t c = 0; c < ncols; c++) {
            mp_text(mp_get(&list->via.array.ptr[r], cols[c]), cell, sizeof cell);
            if (strlen(cell) > width[c]) width[c] = strlen(cell);
        }
    for (size_t c = 0; c < ncols; c++) printf("%s%-*s", c ? "  " : "", (int)width[c], cols[c]);
    putchar('\n');
    for (size_t r = 0; r < nrows; r++) {
        for (size_t c = 0; c < ncols; c++) {
            mp_text(mp_get(&list->via.array.ptr[r], cols[c]), cell, sizeof cell);
            /* names left-aligned, numbers right-aligned */
            if (c == 0 || (c == 1 && strcmp(cols[1], "function") == 0) || strcmp(cols[c], "functions") == 0 ||
                strcmp(cols[c], "host") == 0)
                printf("%s%-*s", c ? "  " : "", (int)width[c], cell);
            else
                printf("%s%*s", c ? "  " : "", (int)width[c], cell);
        }
        putchar('\n');
    }
}

static int cmd_stats(admin_client *a, bool json, bool workers_only)
{
    if (admin_call(a, "stats", NULL, 0) != 0) {
        fprintf(stderr, "heraldctl: %s\n", a->error);
        return 1;
    }
    const proto_admin_reply *r = &a->reply.u.admin_reply;
    if (r->status != PROTO_OK) {
        fprintf(stderr, "heraldctl: %s\n", r->error ? r->error : proto_status_name(r->status));
        return 1;
    }
    const msgpack_object *st = &r->result;
    if (json) {
        json_print(stdout, workers_only ? mp_get(st, "workers") : st);
        putchar('\n');
        return 0;
    }
    static const char *const wcols[] = { "id", "host", "pid", "functions", "slots", "busy", "last_seen_ms" };
    if (workers_only) {
        table(mp_get(st, "workers"), wcols, 7);
        return 0;
    }
    static const char *const tcols[] = { "name", "published" };
    static const char *const scols[] = { "topic", "function", "ready", "delayed", "inflight", "dead",
                                         "succeeded", "failed" };
    static const char *const fcols[] = { "name", "invocations", "errors", "timeouts", "rejected", "crashed",
                                         "lost", "p50_ms", "p99_ms", "gb_seconds" };
    printf("TOPICS\n");
    table(mp_get(st, "topics"), tcols, 2);
    printf("\nSUBSCRIPTIONS\n");
    table(mp_get(st, "subscriptions"), scols, 8);
    printf("\nFUNCTIONS\n");
    table(mp_get(st, "functions"), fcols, 10);
    const msgpack_object *w = mp_get(st, "workers");
    printf("\nWORKERS (%u connected)\n", w && w->type == MSGPACK_OBJECT_ARRAY ? w->via.array.size : 0);
    table(w, wcols, 7);
    return 0;
}

int main(int argc, char **argv)
{
    util_set_program("heraldctl");
    const char *endpoint = NULL, *cfg_path = NULL;
    double timeout_s = 5.0;
    bool json = false;
    static const struct option opts[] = {
        { "broker", required_argument, NULL, 'b' }, { "config", required_argument, NULL, 'c' },
        { "timeout", required_argument, NULL, 't' }, { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
    };
    int c;
    /* options anywhere (before or after the command) */
    while ((c = getopt_long(argc, argv, "b:c:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'b': endpoint = optarg; break;
        case 'c': cfg_path = optarg; break;
        case 't': {
            char *end;
            timeout_s = strtod(optarg, &end);
            if (*end || timeout_s <= 0 || timeout_s > 3600) {
                fprintf(stderr, "heraldctl: --timeout must be a number of seconds (0 < S ≤ 3600)\n");
                return 2;
            }
            break;
        }
        case 'j': json = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) { usage(stderr); return 2; }
    const char *cmd = argv[optind];
    if (strcmp(cmd, "check") == 0) return cmd_check(argc - optind, argv + optind);
    bool stats = strcmp(cmd, "stats") == 0, workers = strcmp(cmd, "workers") == 0;
    if (!stats && !workers) {
        fprintf(stderr, "heraldctl: unknown command '%s' (try --help)\n", cmd);
        return 2;
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "heraldctl: %s takes no arguments\n", cmd);
        return 2;
    }
    herald_config *cfg = NULL;
    if (cfg_path) {
        cfg = config_load(cfg_path, NULL);
        if (!cfg) return 2;
        if (!endpoint) endpoint = cfg->broker.admin_endpoint;
    }
    if (!endpoint) endpoint = "tcp://127.0.0.1:7712";
    admin_client a;
    int rc = 1;
    if (admin_open(&a, endpoint, (int)(timeout_s * 1000)) != 0)
        fprintf(stderr, "heraldctl: %s\n", a.error);
    else
        rc = cmd_stats(&a, json, workers);
    admin_close(&a);
    config_destroy(&cfg);
    return rc;
}
