/* main.c — heraldctl [--broker ADMIN_ENDPOINT] [-c FILE] [--timeout S] COMMAND
 *
 * Commands in this version: `stats [--json]`, `workers [--json]`,
 * `dlq list [--function F] [--topic T] [--limit N] [--json] [--db PATH]`,
 * `dlq show ID [--json] [--db PATH]`, `dlq replay`, `dlq purge`,
 * `invoke [--async] FUNCTION [PAYLOAD|-] [--timeout S]`, `check FILE [--root DIR]`. Exit codes: 0 success, 1 runtime failure (broker unreachable,
 * refused), 2 usage or config error. Errors: one line on stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <time.h>

#include <herald.h>

#include "../broker/dlq.h"
#include "../config/config.h"
#include "ctl.h"

/* --json: every run prints exactly one JSON document on stdout, an error too
 * ({"error":…}, where every error of the run is joined by "; "). Errors go
 * to stderr as well, as one "heraldctl: why" line each. */
static struct {
    bool json;                  /* --json was given (anywhere on the command line) */
    bool printed;               /* the run's document is out */
    char error[2048];           /* what say_error said, for {"error":…} */
    const char *type;           /* "error_type" of the document; NULL: none */
} jdoc;

static void note_error(const char *text)
{
    size_t n = strlen(jdoc.error);
    if (n + 3 < sizeof jdoc.error)
        snprintf(jdoc.error + n, sizeof jdoc.error - n, "%s%s", n ? "; " : "", text);
}

/* "heraldctl: WHY" on stderr (fmt may end in a newline), kept for --json. */
static void say_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say_error(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '\n') buf[--n] = 0;
    fprintf(stderr, "heraldctl: %s\n", buf);
    note_error(buf);
}

/* A config for -c FILE: its errors, one "FILE:LINE: what" line each, on
 * stderr and in the --json error. NULL on a bad config (exit 2). */
static herald_config *load_config(const char *path)
{
    char *errs = NULL;
    herald_config *cfg = config_load(path, &errs);
    if (!cfg && errs) {
        fputs(errs, stderr);
        for (char *line = strtok(errs, "\n"); line; line = strtok(NULL, "\n")) note_error(line);
    } else if (!cfg) {
        say_error("%s: cannot load the config", path);
    }
    free(errs);
    return cfg;
}

/* {"error":…} (and "error_type") unless the run printed its document. */
static void json_error_doc(int rc)
{
    if (!jdoc.json || jdoc.printed) return;
    char fallback[64];
    snprintf(fallback, sizeof fallback, "failed with exit status %d", rc);
    printf("{\"error\":");
    json_string(stdout, jdoc.error[0] ? jdoc.error : fallback, strlen(jdoc.error[0] ? jdoc.error : fallback));
    if (jdoc.type) {
        printf(",\"error_type\":");
        json_string(stdout, jdoc.type, strlen(jdoc.type));
    }
    printf("}\n");
    jdoc.printed = true;
}

/* Valid UTF-8 (no overlongs, no surrogates): printed as a JSON string, else base64. */
static bool valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0, k; i < n; i += k)
        if (!(k = util_utf8_len(s + i, n - i))) return false;
    return true;
}

/* "KEY":bytes,"KEY_encoding":"utf-8"|"base64" (like dlq show's payload). */
static void json_bytes(const char *key, const void *p, size_t n)
{
    bool text = valid_utf8(p, n);
    msgpack_object o = { .type = text ? MSGPACK_OBJECT_STR : MSGPACK_OBJECT_BIN };
    if (text) o.via.str = (msgpack_object_str){ (uint32_t)n, p };
    else o.via.bin = (msgpack_object_bin){ (uint32_t)n, p };
    printf("\"%s\":", key);
    json_print(stdout, &o);
    printf(",\"%s_encoding\":\"%s\"", key, text ? "utf-8" : "base64");
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: heraldctl [--broker ADMIN_ENDPOINT] [-c FILE] [--timeout SECONDS]\n"
            "                 [--key FILE --broker-key FILE] COMMAND\n"
            "commands:\n"
            "  stats [--json] [--watch [SECONDS]]\n"
            "                      topics, subscriptions, functions, runtimes, workers (--watch: redraw)\n"
            "  workers [--json]    connected workers\n"
            "  schedules [--json]  each schedule: its target, spec, zone, next and last slot (UTC), fired\n"
            "  dlq list [--function F] [--topic T] [--limit N] [--json] [--db PATH]\n"
            "                      dead letters, newest first (default limit 100; 0: all)\n"
            "  dlq show ID [--json] [--db PATH]\n"
            "                      one dead letter: payload, attributes, every failed attempt\n"
            "  dlq replay (ID... | --all) [--function F] [--topic T] [--rate N] [--dry-run]\n"
            "                      back onto their own subscription's queue, attempts reset\n"
            "  dlq purge (ID... | --all) [--function F] [--topic T] [--older-than SECONDS] [--dry-run]\n"
            "  invoke [--async] FUNCTION [PAYLOAD|-] [--timeout S]\n"
            "                      run a function now and print its output byte for byte (no\n"
            "                      newline is added when it has none); --async: store and run it\n"
            "                      like an event, with retries, and print the message id\n"
            "  keygen NAME         write a CURVE key pair: NAME.key (0600) and NAME.pub\n"
            "  check FILE [--root DIR]\n"
            "                      validate a config file; every error as FILE:LINE. --root: also\n"
            "                      what the programs would find: handler programs and native\n"
            "                      libraries under DIR (as a worker's --root) or in PATH, key\n"
            "                      files and directories, secret keys' modes\n"
            "\n"
            "--json (any command): exactly one JSON document on stdout, an error too:\n"
            "  {\"error\":\"why\"} (invoke adds \"error_type\": handler, unknown_function, no_worker,\n"
            "  busy, timeout, too_large, unreachable...); invoke {\"output\",\"output_encoding\"\n"
            "  (utf-8|base64),\"message_id\"}; invoke --async {\"message_id\"}; dlq replay/purge\n"
            "  {\"count\"} (+ \"dry_run\":true); check {\"ok\":true,...} or {\"error\",\"errors\":\n"
            "  [{\"file\",\"line\",\"message\"}]}; keygen {\"key_file\",\"pub_file\",\"public_key\"}.\n"
            "Exit status: 0 success, 1 runtime failure, 2 usage or config error. --version: the version.\n");
}

/* One "FILE:LINE: what" line of check as {"file","line","message"} (a line
 * without a number: line 0; without a file: the whole line is the message). */
static void json_check_error(const char *line)
{
    const char *c1 = strchr(line, ':');
    char *end = NULL;
    long no = c1 ? strtol(c1 + 1, &end, 10) : 0;
    bool located = c1 && end != c1 + 1 && *end == ':';
    printf("{\"file\":");
    json_string(stdout, line, located || c1 ? (size_t)(c1 - line) : 0);
    const char *msg = located ? end + 1 : c1 ? c1 + 1 : line;
    while (*msg == ' ') msg++;
    printf(",\"line\":%ld,\"message\":", located ? no : 0L);
    json_string(stdout, msg, strlen(msg));
    printf("}");
}

/* check FILE [--root DIR]: the file alone, so that it runs anywhere (CI);
 * with --root, also what the running programs would find under DIR and in
 * the key paths (config_probe). */
static int cmd_check(int argc, char **argv, const char *root_arg)
{
    if (argc != 2) {
        say_error("usage: heraldctl check FILE [--root DIR]");
        return 2;
    }
    char *root = NULL;
    struct stat rst;
    if (root_arg && (!(root = realpath(root_arg, NULL)) || stat(root, &rst) != 0 || !S_ISDIR(rst.st_mode))) {
        say_error("--root %s: %s", root_arg, root ? "not a directory" : strerror(errno));
        free(root);
        return 2;
    }
    char *errs = NULL;
    herald_config *cfg = config_load(argv[1], &errs);
    if (cfg && root && config_probe(cfg, root, &errs) > 0)
        config_destroy(&cfg);
    if (!cfg) {
        fputs(errs ? errs : "", stderr);
        if (jdoc.json) {   /* every error of the list, generic over what check found */
            size_t nerr = 0;
            printf("{\"error\":");
            char head[600];
            for (const char *p = errs ? errs : ""; *p; p++) nerr += *p == '\n';
            if (errs && *errs && errs[strlen(errs) - 1] != '\n') nerr++;
            snprintf(head, sizeof head, "%s: %zu error%s", argv[1], nerr, nerr == 1 ? "" : "s");
            json_string(stdout, head, strlen(head));
            printf(",\"errors\":[");
            size_t k = 0;
            for (char *line = errs ? strtok(errs, "\n") : NULL; line; line = strtok(NULL, "\n")) {
                if (k++) putchar(',');
                json_check_error(line);
            }
            printf("]}\n");
            jdoc.printed = true;
        }
        free(errs);
        free(root);
        return 2;
    }
    size_t nsubs = 0;
    for (size_t i = 0; i < cfg->ntopics; i++) nsubs += cfg->topics[i].nsubs;
    if (jdoc.json) {
        printf("{\"ok\":true,\"file\":");
        json_string(stdout, argv[1], strlen(argv[1]));
        printf(",\"functions\":%zu,\"topics\":%zu,\"subscriptions\":%zu,\"schedules\":%zu,\"root\":",
               cfg->nfunctions, cfg->ntopics, nsubs, cfg->nschedules);
        if (root) json_string(stdout, root, strlen(root));
        else printf("null");
        printf("}\n");
        jdoc.printed = true;
    } else {
        printf("%s: ok (%zu functions, %zu topics, %zu subscriptions, %zu schedules%s%s)\n", argv[1],
               cfg->nfunctions, cfg->ntopics, nsubs, cfg->nschedules,
               root ? "; programs, libraries and keys found with --root " : "", root ? root : "");
    }
    config_destroy(&cfg);
    free(errs);
    free(root);
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
    /* the last column is not padded: no trailing blanks */
    for (size_t c = 0; c < ncols; c++)
        printf("%s%-*s", c ? "  " : "", c + 1 < ncols ? (int)width[c] : 0, cols[c]);
    putchar('\n');
    for (size_t r = 0; r < nrows; r++) {
        for (size_t c = 0; c < ncols; c++) {
            mp_text(mp_get(&list->via.array.ptr[r], cols[c]), cell, sizeof cell);
            /* numbers right-aligned, text left-aligned */
            char *end;
            bool num = cell[0] && (strtod(cell, &end), *end == 0);
            printf("%s%*s", c ? "  " : "", num ? (int)width[c] : c + 1 < ncols ? -(int)width[c] : 0, cell);
        }
        putchar('\n');
    }
}

/* Options of every command, parsed once (GNU getopt permutes, so they may
 * come before or after the command words). */
typedef struct {
    const char *endpoint, *cfg_path, *db, *function, *topic;
    double timeout_s, rate;
    int64_t limit, older_than;
    bool json, all, dry_run, async, watch;
    const char *key, *broker_key;   /* CURVE: ours (.key) and the broker's (.pub) */
    const char *root;           /* check --root: where the worker's code lives */
} ctl_opts;

/* Where dead letters are read from: the broker's admin endpoint, or with
 * --db (or a config whose broker is down) the database file itself. */
typedef struct {
    admin_client a;
    bool admin_open;
    sqlite3 *db;
    herald_config *cfg;
} dlq_source;

/* --db PATH: the database file, or a data dir holding herald.db. */
static sqlite3 *open_db(const char *path, char *err, size_t n)
{
    struct stat st;
    char buf[4200];
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(buf, sizeof buf, "%s/herald.db", path);
        path = buf;
    } else if (stat(path, &st) != 0) {
        snprintf(err, n, "%s: no such database", path);
        return NULL;
    }
    return dlq_open(path, err, n);
}

static void print_dlq_table(const msgpack_object *list)
{
    static const char *const cols[] = { "id", "message_id", "topic", "function", "attempts", "outcome",
                                        "failed_at", "error" };
    if (!list || list->type != MSGPACK_OBJECT_ARRAY) return;
    if (list->via.array.size == 0) { printf("no dead letters\n"); return; }
    /* the error column: its first line, cut to fit a terminal */
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        msgpack_object *e = (msgpack_object *)mp_get(&list->via.array.ptr[i], "error");
        if (!e || e->type != MSGPACK_OBJECT_STR) continue;
        uint32_t len = 0;
        while (len < e->via.str.size && e->via.str.ptr[len] != '\n' && len < 60) len++;
        e->via.str.size = len;
    }
    table(list, cols, 8);
}

static void print_dlq_show(const msgpack_object *d)
{
    char v[256];
    static const char *const keys[] = { "id", "message_id", "topic", "function", "attempts", "outcome",
                                        "failed_at", "payload_bytes", "payload_encoding" };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        mp_text(mp_get(d, keys[i]), v, sizeof v);
        printf("%-17s %s\n", keys[i], v);
    }
    const msgpack_object *at = mp_get(d, "attributes");
    printf("%-17s", "attributes");
    if (at && at->type == MSGPACK_OBJECT_MAP && at->via.map.size) {
        for (uint32_t i = 0; i < at->via.map.size; i++) {
            char k[256];
            mp_text(&at->via.map.ptr[i].key, k, sizeof k);
            mp_text(&at->via.map.ptr[i].val, v, sizeof v);
            printf(" %s=%s", k, v);
        }
    } else {
        printf(" -");
    }
    const msgpack_object *p = mp_get(d, "payload");
    printf("\npayload\n");
    if (p && p->type == MSGPACK_OBJECT_STR) {
        fwrite(p->via.str.ptr, 1, p->via.str.size, stdout);
        if (!p->via.str.size || p->via.str.ptr[p->via.str.size - 1] != '\n') putchar('\n');
    }
    const msgpack_object *h = mp_get(d, "history");
    uint32_t nh = h && h->type == MSGPACK_OBJECT_ARRAY ? h->via.array.size : 0;
    printf("history (%u failed attempts)\n", nh);
    for (uint32_t i = 0; i < nh; i++) {
        const msgpack_object *e = &h->via.array.ptr[i];
        char a[32], o[32], w[80], s[40], du[32];
        mp_text(mp_get(e, "attempt"), a, sizeof a);
        mp_text(mp_get(e, "outcome"), o, sizeof o);
        mp_text(mp_get(e, "worker"), w, sizeof w);
        mp_text(mp_get(e, "started_at"), s, sizeof s);
        mp_text(mp_get(e, "duration_ms"), du, sizeof du);
        printf("  #%s %-8s %s on %s, %s ms\n", a, o, s, w[0] ? w : "-", du);
        const msgpack_object *er = mp_get(e, "error");
        if (er && er->type == MSGPACK_OBJECT_STR && er->via.str.size) {
            /* the error text indented, line by line */
            const char *q = er->via.str.ptr, *end = q + er->via.str.size;
            while (q < end) {
                const char *nl = memchr(q, '\n', (size_t)(end - q));
                size_t len = nl ? (size_t)(nl - q) : (size_t)(end - q);
                printf("      %.*s\n", (int)len, q);
                q += len + (nl ? 1 : 0);
            }
        }
    }
}

/* dlq replay / purge: writes, so always through the broker. */
/* The dead-letter filter of an admin request: "function" and "topic", nil when not given. */
static void pack_filter(msgpack_packer *pk, const ctl_opts *o)
{
    msgpack_pack_str_with_body(pk, "function", 8);
    if (o->function) msgpack_pack_str_with_body(pk, o->function, strlen(o->function));
    else msgpack_pack_nil(pk);
    msgpack_pack_str_with_body(pk, "topic", 5);
    if (o->topic) msgpack_pack_str_with_body(pk, o->topic, strlen(o->topic));
    else msgpack_pack_nil(pk);
}

static int cmd_dlq_write(const ctl_opts *o, int argc, char **argv)
{
    bool replay = strcmp(argv[1], "replay") == 0;
    size_t nids = (size_t)argc - 2;
    if ((nids == 0) == !o->all) {
        say_error("usage: heraldctl dlq %s (ID... | --all) [--function F] [--topic T]%s\n",
                argv[1], replay ? " [--rate N] [--dry-run]" : " [--older-than SECONDS] [--dry-run]");
        return 2;
    }
    if (nids && (o->function || o->topic || o->older_than)) {
        say_error("--function, --topic and --older-than select with --all, not with ids\n");
        return 2;
    }
    if ((o->function && !proto_valid_name(o->function)) || (o->topic && !proto_valid_name(o->topic))) {
        say_error("--function and --topic take names of [A-Za-z0-9_.-]{1,128}\n");
        return 2;
    }
    if (replay && o->older_than) {
        say_error("--older-than is a purge option\n");
        return 2;
    }
    if (!replay && o->rate > 0) {
        say_error("--rate is a replay option\n");
        return 2;
    }
    msgpack_sbuffer args;
    msgpack_sbuffer_init(&args);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &args, msgpack_sbuffer_write);
    /* the broker takes exactly these (PROTOCOL.md §4): ids, or all: true
     * narrowed by the filters; rate for a replay, older_than for a purge */
    msgpack_pack_map(&pk, 2 + (nids ? 0 : 2) + (replay || !nids ? 1 : 0));
    if (nids) {
        msgpack_pack_str_with_body(&pk, "ids", 3);
        msgpack_pack_array(&pk, (uint32_t)nids);
    } else {
        msgpack_pack_str_with_body(&pk, "all", 3);
        msgpack_pack_true(&pk);
    }
    for (size_t i = 0; i < nids; i++) {
        char *end;
        long long id = strtoll(argv[2 + i], &end, 10);
        if (*end || end == argv[2 + i] || id < 0) {
            say_error("'%s' is not a dead-letter id (an integer from dlq list)\n", argv[2 + i]);
            msgpack_sbuffer_destroy(&args);
            return 2;
        }
        msgpack_pack_int64(&pk, id);
    }
    if (!nids) pack_filter(&pk, o);
    if (replay) {
        msgpack_pack_str_with_body(&pk, "rate", 4);
        msgpack_pack_double(&pk, o->rate);
    } else if (!nids) {
        msgpack_pack_str_with_body(&pk, "older_than", 10);
        msgpack_pack_int64(&pk, o->older_than);
    }
    msgpack_pack_str_with_body(&pk, "dry_run", 7);
    if (o->dry_run) msgpack_pack_true(&pk);
    else msgpack_pack_false(&pk);

    herald_config *cfg = NULL;
    const char *endpoint = o->endpoint;
    if (o->cfg_path) {
        cfg = load_config(o->cfg_path);
        if (!cfg) { msgpack_sbuffer_destroy(&args); return 2; }
        if (!endpoint) endpoint = cfg->broker.admin_endpoint;
    }
    if (!endpoint) endpoint = "tcp://127.0.0.1:7712";
    admin_client a;
    int rc = 1;
    if (admin_open(&a, endpoint, (int)(o->timeout_s * 1000), o->key, o->broker_key) != 0 ||
        admin_call_long(&a, replay ? "dlq.replay" : "dlq.purge", args.data, args.size) != 0) {
        say_error("%s\n", a.error);
        goto out;
    }
    const proto_admin_reply *r = &a.reply.u.admin_reply;
    if (r->status != PROTO_OK) {
        say_error("%s\n", r->error ? r->error : proto_status_name(r->status));
        goto out;
    }
    const msgpack_object *cnt = mp_get(&r->result, "count"), *sk = mp_get(&r->result, "skipped"),
                         *why = mp_get(&r->result, "why");
    long long count = cnt && cnt->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (long long)cnt->via.u64 : 0;
    long long skipped = sk && sk->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (long long)sk->via.u64 : 0;
    if (!o->json)
        printf("%s %lld%s\n", o->dry_run ? (replay ? "would replay" : "would purge") : replay ? "replayed" : "purged",
               count, o->dry_run ? " (dry run: nothing changed)" : "");
    rc = 0;
    if (why && why->type == MSGPACK_OBJECT_STR && why->via.str.size) {
        say_error("%.*s\n", (int)why->via.str.size, why->via.str.ptr);
        rc = 1;
    }
    if (nids && (size_t)(count + skipped) < nids) {
        say_error("%zu of the given ids are not dead letters (see dlq list)\n",
                nids - (size_t)(count + skipped));
        rc = 1;
    }
    if (o->json) {   /* one document: the count, and what went wrong with the rest */
        printf("{\"count\":%lld%s", count, o->dry_run ? ",\"dry_run\":true" : "");
        if (rc) {
            printf(",\"error\":");
            json_string(stdout, jdoc.error, strlen(jdoc.error));
        }
        printf("}\n");
        jdoc.printed = true;
    }
out:
    admin_close(&a);
    msgpack_sbuffer_destroy(&args);
    config_destroy(&cfg);
    return rc;
}

static int cmd_dlq(const ctl_opts *o, int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "replay") == 0 || strcmp(argv[1], "purge") == 0))
        return cmd_dlq_write(o, argc, argv);
    if (argc < 2) {
        say_error("usage: heraldctl dlq list|show ...\n");
        return 2;
    }
    bool list = strcmp(argv[1], "list") == 0, show = strcmp(argv[1], "show") == 0;
    if (!list && !show) {
        say_error("unknown dlq command '%s' (list, show, replay, purge)\n", argv[1]);
        return 2;
    }
    int64_t id = 0;
    if (show) {
        char *end;
        if (argc != 3 || (id = strtoll(argv[2], &end, 10)) < 0 || *end || end == argv[2]) {
            say_error("usage: heraldctl dlq show ID (an integer id from dlq list)\n");
            return 2;
        }
    } else if (argc != 2) {
        say_error("dlq list takes no arguments (filters: --function, --topic, --limit)\n");
        return 2;
    }
    if ((o->function && !proto_valid_name(o->function)) || (o->topic && !proto_valid_name(o->topic))) {
        say_error("--function and --topic take names of [A-Za-z0-9_.-]{1,128}\n");
        return 2;
    }
    char err[1024] = "";
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    const msgpack_object *result = NULL;
    int rc = 1;
    herald_config *cfg = NULL;
    admin_client a;
    bool opened = false;
    const char *db_path = o->db;
    if (!db_path) {
        const char *endpoint = o->endpoint;
        if (o->cfg_path) {
            cfg = load_config(o->cfg_path);
            if (!cfg) return 2;
            if (!endpoint) endpoint = cfg->broker.admin_endpoint;
        }
        if (!endpoint) endpoint = "tcp://127.0.0.1:7712";
        opened = true;
        if (admin_open(&a, endpoint, (int)(o->timeout_s * 1000), o->key, o->broker_key) == 0) {
            msgpack_sbuffer args;
            msgpack_sbuffer_init(&args);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &args, msgpack_sbuffer_write);
            if (list) {
                msgpack_pack_map(&pk, 3);
                pack_filter(&pk, o);
                msgpack_pack_str_with_body(&pk, "limit", 5);
                msgpack_pack_int64(&pk, o->limit);
            } else {
                msgpack_pack_map(&pk, 1);
                msgpack_pack_str_with_body(&pk, "id", 2);
                msgpack_pack_int64(&pk, id);
            }
            int ok = admin_call(&a, list ? "dlq.list" : "dlq.show", args.data, args.size);
            msgpack_sbuffer_destroy(&args);
            if (ok == 0) {
                const proto_admin_reply *r = &a.reply.u.admin_reply;
                if (r->status != PROTO_OK) {
                    say_error("%s\n", r->error ? r->error : proto_status_name(r->status));
                    goto out;
                }
                result = &r->result;
            }
        }
        if (!result) {
            /* the broker is down: a config names the database to read instead */
            if (!cfg) {
                say_error("%s (with the broker stopped, read the database: --db PATH or -c FILE)\n",
                        a.error);
                goto out;
            }
            db_path = cfg->broker.data_dir;
        }
    }
    if (!result) {
        sqlite3 *db = open_db(db_path, err, sizeof err);
        if (!db) { say_error("%s\n", err); goto out; }
        dlq_filter f = { .function = o->function, .topic = o->topic, .limit = o->limit };
        int r = list ? dlq_list(db, &f, &out, err, sizeof err) : dlq_show(db, id, &out, err, sizeof err);
        sqlite3_close(db);
        if (r != 0) { say_error("%s\n", err); goto out; }
        if (msgpack_unpack_next(&up, out.data, out.size, NULL) != MSGPACK_UNPACK_SUCCESS) goto out;
        result = &up.data;
    }
    if (o->json) {
        json_print(stdout, result);
        putchar('\n');
        jdoc.printed = true;
    } else if (list) {
        print_dlq_table(result);
    } else {
        print_dlq_show(result);
    }
    rc = 0;
out:
    if (opened) admin_close(&a);
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&out);
    config_destroy(&cfg);
    return rc;
}

/* The payload: the argument, or stdin (binary-safe) when it is "-" or absent. */
static char *read_payload(const char *arg, size_t *len)
{
    if (arg && strcmp(arg, "-") != 0) {
        *len = strlen(arg);
        return strdup(arg);
    }
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            char *b2 = realloc(buf, cap *= 2);
            if (!b2) { free(buf); return NULL; }
            buf = b2;
        }
        size_t got = fread(buf + n, 1, cap - n, stdin);
        if (got == 0) break;
        n += got;
    }
    *len = n;
    return buf;
}

/* "error_type" of a failed invoke in --json: the broker's status, as a word. */
static const char *invoke_error_type(uint32_t status)
{
    switch (status) {
    case PROTO_E_HANDLER: return "handler";
    case PROTO_E_UNKNOWN_FUNCTION: return "unknown_function";
    case PROTO_E_NO_WORKER: return "no_worker";
    case PROTO_E_BUSY: return "busy";
    case PROTO_E_TIMEOUT: return "timeout";
    case PROTO_E_TOO_LARGE: return "too_large";
    case PROTO_E_THROTTLED: return "throttled";
    default: return "refused";
    }
}

/* invoke [--async] FUNCTION [PAYLOAD|-] [--timeout S] */
static int cmd_invoke(const ctl_opts *o, bool timeout_given, int argc, char **argv)
{
    if (argc < 2 || argc > 3 || !proto_valid_name(argv[1])) {
        say_error("usage: heraldctl invoke [--async] FUNCTION [PAYLOAD|-] [--timeout S]\n");
        return 2;
    }
    size_t len = 0;
    char *payload = read_payload(argc == 3 ? argv[2] : NULL, &len);
    if (!payload) { say_error("out of memory reading the payload\n"); return 1; }
    herald_config *cfg = NULL;
    if (o->cfg_path && !(cfg = load_config(o->cfg_path))) { free(payload); return 2; }
    int rc = 1;
    const char *endpoint = o->endpoint ? o->endpoint : cfg ? cfg->broker.admin_endpoint : "tcp://127.0.0.1:7712";
    if (o->async) {
        /* Lambda's Event type: stored for the function, run with its retries.
         * A PUBLISH of an async invoke to the admin endpoint, like every other
         * command (the broker takes async invokes there, with admin keys). */
        herald_options ho = { .endpoint = endpoint,
                              .timeout_ms = (int)(o->timeout_s * 1000),
                              .key_file = o->key, .broker_key_file = o->broker_key };
        herald_client *c = herald_connect(&ho);
        char id[HERALD_ID_MAX];
        int st = c ? herald_invoke_async(c, argv[1], payload, len, id) : HERALD_E_INVALID;
        if (st == 0 && jdoc.json) {
            printf("{\"message_id\":");
            json_string(stdout, id, strlen(id));
            printf("}\n");
            jdoc.printed = true;
            rc = 0;
        } else if (st == 0) {
            printf("%s\n", id);
            rc = 0;
        } else {
            jdoc.type = st == HERALD_E_UNREACHABLE ? "unreachable" : st == HERALD_E_UNKNOWN ? "unknown_function"
                     : st == HERALD_E_THROTTLED ? "throttled" : st == HERALD_E_TOO_LARGE ? "too_large" : "refused";
            say_error("invoke --async %s: %s\n", argv[1],
                     c && *herald_last_error(c) ? herald_last_error(c) : herald_strerror(st));
        }
        herald_close(&c);
        goto out;
    }
    admin_client a;
    /* reachable first (5 s), then as long as the invoke may take */
    int reach_ms = timeout_given && o->timeout_s < 5 ? (int)(o->timeout_s * 1000) : 5000;
    if (admin_open(&a, endpoint, reach_ms, o->key, o->broker_key) != 0 || admin_call(&a, "ping", NULL, 0) != 0) {
        jdoc.type = "unreachable";
        say_error("%s\n", a.error);
        admin_close(&a);
        goto out;
    }
    uint32_t tmo = timeout_given ? (uint32_t)(o->timeout_s * 1000) : 0;
    int wait = timeout_given ? (int)tmo + 2000 : (900 + 5 + 5) * 1000;
    const void *output;
    size_t out_len;
    if (admin_invoke(&a, argv[1], payload, len, tmo, wait, &output, &out_len) != 0) {
        jdoc.type = "unreachable";
        say_error("invoke %s: %s\n", argv[1], a.error);
    } else {
        const proto_invoke_reply *r = &a.reply.u.invoke_reply;
        if (r->status != PROTO_OK) jdoc.type = invoke_error_type(r->status);
        if (r->status == PROTO_OK && jdoc.json) {
            printf("{");
            json_bytes("output", output, out_len);
            printf(",\"message_id\":");
            json_string(stdout, r->message_id ? r->message_id : "", r->message_id ? strlen(r->message_id) : 0);
            printf("}\n");
            jdoc.printed = true;
            rc = fflush(stdout) == 0 ? 0 : 1;
        } else if (r->status == PROTO_OK) {
            fwrite(output, 1, out_len, stdout);   /* byte for byte */
            rc = fflush(stdout) == 0 ? 0 : 1;
        } else if (r->status == PROTO_E_HANDLER) {
            /* the handler's own error text, as it wrote it */
            note_error(r->error && *r->error ? r->error : "handler failed");
            fprintf(stderr, "%s", r->error ? r->error : "handler failed");
            if (r->error && *r->error && r->error[strlen(r->error) - 1] != '\n') fputc('\n', stderr);
        } else {
            say_error("invoke %s: %s\n", argv[1], r->error ? r->error : proto_status_name(r->status));
        }
    }
    admin_close(&a);
out:
    free(payload);
    config_destroy(&cfg);
    return rc;
}

/* Under the workers table: each function a worker refused, and why. */
static void refusals(const msgpack_object *workers)
{
    if (!workers || workers->type != MSGPACK_OBJECT_ARRAY) return;
    bool any = false;
    for (uint32_t i = 0; i < workers->via.array.size; i++) {
        const msgpack_object *w = &workers->via.array.ptr[i], *rs = mp_get(w, "refused");
        if (!rs || rs->type != MSGPACK_OBJECT_ARRAY) continue;
        char id[128], fn[256], why[PROTO_ERROR_WIRE_MAX + 1];
        mp_text(mp_get(w, "id"), id, sizeof id);
        for (uint32_t k = 0; k < rs->via.array.size; k++) {
            if (!any) printf("\nREFUSED (the worker cannot run the function)\n");
            any = true;
            mp_text(mp_get(&rs->via.array.ptr[k], "function"), fn, sizeof fn);
            mp_text(mp_get(&rs->via.array.ptr[k], "reason"), why, sizeof why);
            printf("%s  %s: %s\n", id, fn, why);
        }
    }
}

/* Under the functions table: the runtime functions that started processes,
 * with their cold starts, mean init time, warm invocations and the reasons
 * their processes were stopped ("idle=2 crash=1"; "-": none). */
static void runtimes(const msgpack_object *fns)
{
    if (!fns || fns->type != MSGPACK_OBJECT_ARRAY) return;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    uint32_t n = 0;
    for (uint32_t i = 0; i < fns->via.array.size; i++) {
        const msgpack_object *c = mp_get(&fns->via.array.ptr[i], "cold_starts");
        n += c && c->type == MSGPACK_OBJECT_POSITIVE_INTEGER && c->via.u64 > 0;
    }
    if (n == 0) { msgpack_sbuffer_destroy(&sb); return; }
    static const char *const keys[] = { "name", "cold_starts", "init_ms", "warm" };
    msgpack_pack_array(&pk, n);
    for (uint32_t i = 0; i < fns->via.array.size; i++) {
        const msgpack_object *f = &fns->via.array.ptr[i], *c = mp_get(f, "cold_starts");
        if (!c || c->type != MSGPACK_OBJECT_POSITIVE_INTEGER || c->via.u64 == 0) continue;
        msgpack_pack_map(&pk, 5);
        for (size_t k = 0; k < 4; k++) {
            msgpack_pack_str(&pk, strlen(keys[k]));
            msgpack_pack_str_body(&pk, keys[k], strlen(keys[k]));
            const msgpack_object *v = mp_get(f, keys[k]);
            if (v) msgpack_pack_object(&pk, *v);
            else msgpack_pack_nil(&pk);
        }
        char text[256] = "";
        const msgpack_object *r = mp_get(f, "recycles");
        for (uint32_t k = 0; r && r->type == MSGPACK_OBJECT_MAP && k < r->via.map.size; k++) {
            const msgpack_object *key = &r->via.map.ptr[k].key, *v = &r->via.map.ptr[k].val;
            if (key->type != MSGPACK_OBJECT_STR || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || !v->via.u64) continue;
            size_t used = strlen(text);
            snprintf(text + used, sizeof text - used, "%s%.*s=%llu", used ? " " : "", (int)key->via.str.size,
                     key->via.str.ptr, (unsigned long long)v->via.u64);
        }
        if (!text[0]) snprintf(text, sizeof text, "-");
        msgpack_pack_str(&pk, 8);
        msgpack_pack_str_body(&pk, "recycles", 8);
        msgpack_pack_str(&pk, strlen(text));
        msgpack_pack_str_body(&pk, text, strlen(text));
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, sb.data, sb.size, NULL) == MSGPACK_UNPACK_SUCCESS) {
        static const char *const cols[] = { "name", "cold_starts", "init_ms", "warm", "recycles" };
        printf("\nRUNTIMES\n");
        table(&up.data, cols, 5);
    }
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
}

/* An admin command without arguments: its result, or NULL after saying why. */
static const msgpack_object *call_ok(admin_client *a, const char *command)
{
    if (admin_call(a, command, NULL, 0) != 0) {
        say_error("%s\n", a->error);
        return NULL;
    }
    const proto_admin_reply *r = &a->reply.u.admin_reply;
    if (r->status != PROTO_OK) {
        say_error("%s\n", r->error ? r->error : proto_status_name(r->status));
        return NULL;
    }
    return &r->result;
}

static int cmd_schedules(admin_client *a, bool json)
{
    const msgpack_object *result = call_ok(a, "schedules");
    if (!result) return 1;
    if (json) {
        json_print(stdout, result);
        putchar('\n');
        jdoc.printed = true;
        return 0;
    }
    static const char *const cols[] = { "name", "topic", "function", "spec", "timezone", "next", "last", "fired" };
    table(result, cols, 8);
    return 0;
}

static int cmd_stats(admin_client *a, bool json, bool workers_only)
{
    const msgpack_object *st = call_ok(a, "stats");
    if (!st) return 1;
    if (json) {
        json_print(stdout, workers_only ? mp_get(st, "workers") : st);
        putchar('\n');
        jdoc.printed = true;
        return 0;
    }
    static const char *const wcols[] = { "id", "host", "pid", "functions", "slots", "busy", "last_seen_ms" };
    if (workers_only) {
        table(mp_get(st, "workers"), wcols, 7);
        refusals(mp_get(st, "workers"));
        return 0;
    }
    static const char *const tcols[] = { "name", "published" };
    static const char *const scols[] = { "topic", "function", "ready", "delayed", "inflight", "dead",
                                         "succeeded", "failed" };
    static const char *const fcols[] = { "name", "kind", "invocations", "errors", "timeouts", "rejected",
                                         "crashed", "lost", "p50_ms", "p99_ms", "gb_seconds" };
    printf("TOPICS\n");
    table(mp_get(st, "topics"), tcols, 2);
    printf("\nSUBSCRIPTIONS\n");
    table(mp_get(st, "subscriptions"), scols, 8);
    printf("\nFUNCTIONS\n");
    table(mp_get(st, "functions"), fcols, 11);
    runtimes(mp_get(st, "functions"));
    const msgpack_object *w = mp_get(st, "workers");
    printf("\nWORKERS (%u connected)\n", w && w->type == MSGPACK_OBJECT_ARRAY ? w->via.array.size : 0);
    table(w, wcols, 7);
    refusals(w);
    return 0;
}

static int run(int argc, char **argv)
{
    ctl_opts o = { .timeout_s = 5.0, .limit = 100 };
    enum { O_DB = 256, O_FUNCTION, O_TOPIC, O_LIMIT, O_ALL, O_RATE, O_DRY, O_OLDER, O_ASYNC, O_WATCH,
           O_KEY, O_BROKER_KEY, O_ROOT };
    bool timeout_given = false;
    static const struct option opts[] = {
        { "broker", required_argument, NULL, 'b' }, { "config", required_argument, NULL, 'c' },
        { "timeout", required_argument, NULL, 't' }, { "json", no_argument, NULL, 'j' },
        { "db", required_argument, NULL, O_DB }, { "function", required_argument, NULL, O_FUNCTION },
        { "topic", required_argument, NULL, O_TOPIC }, { "limit", required_argument, NULL, O_LIMIT },
        { "all", no_argument, NULL, O_ALL }, { "rate", required_argument, NULL, O_RATE },
        { "dry-run", no_argument, NULL, O_DRY }, { "older-than", required_argument, NULL, O_OLDER },
        { "async", no_argument, NULL, O_ASYNC }, { "watch", no_argument, NULL, O_WATCH },
        { "key", required_argument, NULL, O_KEY }, { "broker-key", required_argument, NULL, O_BROKER_KEY },
        { "root", required_argument, NULL, O_ROOT },
        { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
    };
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "b:c:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'b': o.endpoint = optarg; break;
        case 'c': o.cfg_path = optarg; break;
        case 't':
            o.timeout_s = strtod(optarg, &end);
            timeout_given = true;
            if (*end || end == optarg || o.timeout_s <= 0 || o.timeout_s > 3600) {
                say_error("--timeout must be a number of seconds (0 < S <= 3600)\n");
                return 2;
            }
            break;
        case 'j': o.json = true; break;
        case O_DB: o.db = optarg; break;
        case O_FUNCTION: o.function = optarg; break;
        case O_TOPIC: o.topic = optarg; break;
        case O_LIMIT:
            o.limit = strtoll(optarg, &end, 10);
            if (*end || end == optarg || o.limit < 0) {
                say_error("--limit must be an integer >= 0 (0: all)\n");
                return 2;
            }
            break;
        case O_ALL: o.all = true; break;
        case O_ASYNC: o.async = true; break;
        case O_WATCH: o.watch = true; break;
        case O_KEY: o.key = optarg; break;
        case O_BROKER_KEY: o.broker_key = optarg; break;
        case O_ROOT: o.root = optarg; break;
        case O_DRY: o.dry_run = true; break;
        case O_RATE:
            o.rate = strtod(optarg, &end);
            if (*end || end == optarg || o.rate <= 0 || o.rate > 1e6) {
                say_error("--rate must be a number of dead letters per second (> 0)\n");
                return 2;
            }
            break;
        case O_OLDER:
            o.older_than = strtoll(optarg, &end, 10);
            if (*end || end == optarg || o.older_than <= 0) {
                say_error("--older-than must be a number of seconds (> 0)\n");
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default:
            if (optopt && optopt < 256) say_error("unknown option '-%c' or it needs an argument", optopt);
            else say_error("unknown option '%s' or it needs an argument", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        note_error("no command given (try --help)");
        usage(stderr);
        return 2;
    }
    char ep_why[256];   /* libzmq would keep 16 bits of port 99999 and ask another broker */
    if (o.endpoint && endpoint_check(o.endpoint, false, ep_why, sizeof ep_why) != 0) {
        say_error("--broker '%s' %s", o.endpoint, ep_why);
        return 2;
    }
    const char *cmd = argv[optind];
    if (strcmp(cmd, "check") == 0) return cmd_check(argc - optind, argv + optind, o.root);
    if (strcmp(cmd, "keygen") == 0) {
        if (argc - optind != 2) {
            say_error("usage: heraldctl keygen NAME (writes NAME.key and NAME.pub)\n");
            return 2;
        }
        char why[512];
        if (keys_generate(argv[optind + 1], why, sizeof why) != 0) {
            say_error("%s\n", why);
            return 1;
        }
        const char *name = argv[optind + 1];
        if (jdoc.json) {
            char pub[4200], key[41] = "";
            snprintf(pub, sizeof pub, "%s.pub", name);
            keys_read(pub, "public-key", key, why, sizeof why);
            printf("{\"key_file\":");
            snprintf(pub, sizeof pub, "%s.key", name);
            json_string(stdout, pub, strlen(pub));
            printf(",\"pub_file\":");
            snprintf(pub, sizeof pub, "%s.pub", name);
            json_string(stdout, pub, strlen(pub));
            printf(",\"public_key\":");
            json_string(stdout, key, strlen(key));
            printf("}\n");
            jdoc.printed = true;
        } else {
            printf("%s.key (secret, mode 0600) and %s.pub written\n", name, name);
        }
        return 0;
    }
    char kwhy[512];
    if (keys_pick(&o.key, &o.broker_key, kwhy, sizeof kwhy) != 0) {
        say_error("%s\n", kwhy);
        return 2;
    }
    if (strcmp(cmd, "dlq") == 0) return cmd_dlq(&o, argc - optind, argv + optind);
    if (strcmp(cmd, "invoke") == 0) return cmd_invoke(&o, timeout_given, argc - optind, argv + optind);
    bool stats = strcmp(cmd, "stats") == 0, workers = strcmp(cmd, "workers") == 0;
    bool schedules = strcmp(cmd, "schedules") == 0;
    if (!stats && !workers && !schedules) {
        say_error("unknown command '%s' (try --help)\n", cmd);
        return 2;
    }
    double every = 2.0;   /* stats --watch [SECONDS] */
    if (stats && o.watch && optind + 2 == argc) {
        char *w_end;
        every = strtod(argv[optind + 1], &w_end);
        if (*w_end || w_end == argv[optind + 1] || every < 0.1 || every > 3600) {
            say_error("stats --watch takes a number of seconds (0.1 to 3600)\n");
            return 2;
        }
    } else if (optind + 1 != argc) {
        say_error("%s takes no arguments\n", cmd);
        return 2;
    }
    herald_config *cfg = NULL;
    const char *endpoint = o.endpoint;
    if (o.cfg_path) {
        cfg = load_config(o.cfg_path);
        if (!cfg) return 2;
        if (!endpoint) endpoint = cfg->broker.admin_endpoint;
    }
    if (!endpoint) endpoint = "tcp://127.0.0.1:7712";
    admin_client a;
    int rc = 1;
    if (admin_open(&a, endpoint, (int)(o.timeout_s * 1000), o.key, o.broker_key) != 0) {
        say_error("%s\n", a.error);
    } else if (o.watch && stats && !o.json) {
        /* like top: redraw in place until interrupted */
        for (;;) {
            printf("\033[H\033[2J%s every %g s — %s\n\n", endpoint, every, "Ctrl-C to stop");
            rc = cmd_stats(&a, false, false);
            fflush(stdout);
            if (rc != 0) break;
            struct timespec ts = { (time_t)every, (long)((every - (double)(time_t)every) * 1e9) };
            nanosleep(&ts, NULL);
        }
    } else if (schedules) {
        rc = cmd_schedules(&a, o.json);
    } else {
        rc = cmd_stats(&a, o.json, workers);
    }
    admin_close(&a);
    config_destroy(&cfg);
    return rc;
}

int main(int argc, char **argv)
{
    util_set_program("heraldctl");
    opterr = 0;   /* run() words the complaint about a bad option itself */
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--json") == 0) jdoc.json = true;
        if (strcmp(argv[i], "--version") == 0) {
            printf("heraldctl %s\n", HERALD_VERSION);
            return 0;
        }
    }
    int rc = run(argc, argv);
    if (rc != 0) json_error_doc(rc);
    if (fflush(stdout) != 0 && rc == 0) rc = 1;
    return rc;
}
