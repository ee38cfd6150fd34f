/* herald-publish: publish events from the command line (DESIGN §2).
 *
 *   herald-publish [--broker ENDPOINT] [--timeout SECONDS] TOPIC [PAYLOAD | -]
 *                  [-a KEY=VALUE]... [--delay SECONDS] [--dedup-id ID] [--lines]
 *                  [--key FILE --broker-key FILE]
 *
 * One event: PAYLOAD, or all of stdin (binary-safe); its id is printed once
 * the broker confirmed it durable. --lines: one event per stdin line (without
 * its newline), pipelined through herald_publish_async; one output line per
 * input line, in input order whatever order confirms arrive in (a small
 * reorder buffer): the id, or "ERROR why" (--json: one object per line); a
 * refused line also gets "LINE N: why" on stderr and makes the exit status 1.
 * Exit: 0 success, 1 runtime failure (one line on stderr), 2 usage or config
 * error. Uses the public API of include/herald.h, and proto's UTF-8 rule.
 */
#include "herald.h"
#include "../proto/proto.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROG "herald-publish"
#define MAX_ATTRS 16

static const char usage_line[] =
    "usage: " PROG " [--broker ENDPOINT] [--timeout SECONDS] TOPIC [PAYLOAD | -] [-a KEY=VALUE]... "
    "[--delay SECONDS] [--dedup-id ID] [--lines [--retry-throttled]] [--json] [--key FILE --broker-key FILE]";

static const char help_text[] =
    "Publishes an event to a herald topic and prints its message id once the broker\n"
    "has stored it durably.\n"
    "\n"
    "  TOPIC                  topic name, [A-Za-z0-9_.-]{1,128}\n"
    "  PAYLOAD | -            the payload; none or '-': all of stdin (binary-safe)\n"
    "  -a, --attr KEY=VALUE   an attribute (up to 16)\n"
    "  --delay SECONDS        not delivered before then (0-900)\n"
    "  --dedup-id ID          a second publish with this id within 5 minutes is not stored again\n"
    "  --lines                one event per stdin line, pipelined: one output line per input\n"
    "                         line, in order: its id, or 'ERROR why' (and 'LINE N: why' on\n"
    "                         stderr); exit 1 when any line failed\n"
    "  --retry-throttled      with --lines: a line the broker throttles is sent again, backing\n"
    "                         off, until --timeout has passed since it was first sent\n"
    "  --json                 {\"id\":…} or {\"error\":…}; with --lines one object per line:\n"
    "                         {\"line\":N,\"id\":…} or {\"line\":N,\"error\":…}\n"
    "  --broker ENDPOINT      default $HERALD_BROKER, else tcp://127.0.0.1:7710\n"
    "  --timeout SECONDS      a broker that does not answer within it is unreachable (default 5)\n"
    "  --key FILE             our CURVE certificate (.key); default $HERALD_KEY\n"
    "  --broker-key FILE      the broker's public certificate (.pub); default $HERALD_BROKER_KEY\n"
    "  -h, --help             this text\n"
    "  --version              the version\n"
    "\n"
    "Exit status: 0 success, 1 runtime failure (unreachable, refused, too large...),\n"
    "2 usage or configuration error. A payload starting with '-' goes after '--'.\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, PROG ": ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s\n", usage_line);
    return 2;
}

/* The topic rule of DESIGN §1, checked before stdin is read. */
static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 128 && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

static bool valid_id(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 63 && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

static bool parse_seconds(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) return false;
    *out = v;
    return true;
}

/* Reads all of f (binary-safe). NULL on a read error or out of memory. */
static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *bigger = realloc(buf, cap *= 2);
        if (!bigger) free(buf);
        buf = bigger;
    }
    if (buf && ferror(f)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* ---- --lines: the reorder buffer --------------------------------------- */

typedef struct {
    int state;                     /* 0: waiting for the broker, 1: stored, 2: failed, 3: throttled, to retry */
    char id[HERALD_ID_MAX];
    char *why;                     /* owned, when failed */
    char *data; size_t len;        /* --retry-throttled: a copy of the line until it is settled */
    int64_t first_ms;              /* monotonic: first sent; retried until first_ms + timeout */
    int64_t retry_ms;              /* monotonic: when state 3 goes again */
    unsigned tries;                /* throttled answers so far */
} slot;

static struct {
    herald_client *client;
    slot *s;                       /* s[i] is line base + i */
    size_t cap;
    uint64_t base;
    uint64_t next_print;           /* first line not printed yet */
    uint64_t next_line;            /* line number the next read gets */
    bool failed;                   /* some line was refused: exit 1 */
    bool json;                     /* --json: {"line":N,"id":…} / {"line":N,"error":…} per line */
    bool retry;                    /* --retry-throttled */
    int timeout_ms;                /* how long a throttled line is retried */
    size_t retries;                /* slots in state 3 */
    const char *topic;
    const herald_publish_opts *po;
} L = { .base = 1, .next_print = 1, .next_line = 1 };

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* s as a JSON string (RFC 8259 escapes; bytes >= 0x80 pass through). */
static void json_str(FILE *f, const char *s)
{
    putc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch >= 0x80) {   /* valid UTF-8 as it is, a stray byte as U+FFFD */
            size_t k = util_utf8_len((const unsigned char *)s, strnlen(s, 4));
            if (k) fwrite(s, 1, k, f), s += k - 1;
            else fputs("\\ufffd", f);
            continue;
        }
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch == '\n') fputs("\\n", f);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else putc(ch, f);
    }
    putc('"', f);
}

static slot *slot_of(uint64_t line)
{
    return &L.s[line - L.base];
}

/* Room for line next_line: drop printed slots first, then grow. */
static int add_slot(void)
{
    if (L.next_line - L.base >= L.cap && L.next_print > L.base) {
        size_t printed = L.next_print - L.base;
        memmove(L.s, L.s + printed, (L.next_line - L.next_print) * sizeof *L.s);
        L.base = L.next_print;
    }
    if (L.next_line - L.base >= L.cap) {
        size_t cap = L.cap ? L.cap * 2 : 1024;
        slot *s = realloc(L.s, cap * sizeof *s);
        if (!s) return -1;
        L.s = s;
        L.cap = cap;
    }
    memset(slot_of(L.next_line), 0, sizeof(slot));
    L.next_line++;
    return 0;
}

static void fail_line(uint64_t line, const char *why)
{
    slot *s = slot_of(line);
    s->state = 2;
    s->why = strdup(why && *why ? why : "failed");
    for (char *p = s->why; p && *p; p++)   /* one output line per input line */
        if (*p == '\n' || *p == '\r') *p = ' ';
    L.failed = true;
}

static void line_confirmed(void *arg, int status, const char *id)
{
    uint64_t line = (uintptr_t)arg;
    slot *s = slot_of(line);
    const char *why = herald_last_error(L.client);   /* the broker's words for this one */
    if (status == 0) {
        s->state = 1;
        snprintf(s->id, sizeof s->id, "%s", id);
    } else if (status == HERALD_E_THROTTLED && L.retry && s->data && mono_ms() < s->first_ms + L.timeout_ms) {
        /* back off: 50 ms, doubling, at most 1 s apart, until --timeout */
        if (s->tries++ == 0)
            fprintf(stderr, PROG ": line %llu: %s; retrying for up to %g s\n", (unsigned long long)line,
                    why && *why ? why : herald_strerror(status), L.timeout_ms / 1000.0);
        int64_t wait = s->tries > 5 ? 1000 : 50LL << (s->tries - 1);
        s->state = 3;
        s->retry_ms = mono_ms() + wait;
        L.retries++;
        return;
    } else {
        fail_line(line, why && *why ? why : herald_strerror(status));
    }
    free(s->data);
    s->data = NULL;
}

/* Sends again the throttled lines whose wait is over; *next_ms gets the
 * earliest wait still running (INT64_MAX: none). */
static void resend_due(int64_t *next_ms)
{
    *next_ms = INT64_MAX;
    if (!L.retries) return;
    int64_t now = mono_ms();
    for (uint64_t line = L.next_print; line < L.next_line; line++) {
        slot *s = slot_of(line);
        if (s->state != 3) continue;
        if (s->retry_ms > now) {
            if (s->retry_ms < *next_ms) *next_ms = s->retry_ms;
            continue;
        }
        s->state = 0;
        L.retries--;
        int rc = herald_publish_async(L.client, L.topic, s->data, s->len, L.po, line_confirmed,
                                      (void *)(uintptr_t)line);
        if (rc) {
            const char *why = herald_last_error(L.client);
            fail_line(line, *why ? why : herald_strerror(rc));
            free(s->data);
            s->data = NULL;
        }
    }
}

static void print_ready(void)
{
    while (L.next_print < L.next_line && slot_of(L.next_print)->state) {
        slot *s = slot_of(L.next_print);
        if (s->state == 3) break;   /* throttled, waiting to go again */
        if (s->state == 1 && L.json) {
            printf("{\"line\":%llu,\"id\":", (unsigned long long)L.next_print);
            json_str(stdout, s->id);
            fputs("}\n", stdout);
        } else if (s->state == 1) {
            fputs(s->id, stdout);
            putc('\n', stdout);
        } else {
            const char *why = s->why ? s->why : "failed";
            if (L.json) {
                printf("{\"line\":%llu,\"error\":", (unsigned long long)L.next_print);
                json_str(stdout, why);
                fputs("}\n", stdout);
            } else {
                printf("ERROR %s\n", why);
            }
            fprintf(stderr, "LINE %llu: %s\n", (unsigned long long)L.next_print, why);
            free(s->why);
        }
        free(s->data);
        L.next_print++;
    }
}

static int publish_lines(herald_client *c, const char *topic, const herald_publish_opts *po, int timeout_ms)
{
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    L.client = c;
    L.topic = topic;
    L.po = po;
    L.timeout_ms = timeout_ms;
    char *line = NULL, *fatal = NULL;
    size_t linecap = 0;
    ssize_t n;
    int exit_code = 0;
    while (!fatal && (n = getline(&line, &linecap, stdin)) >= 0) {
        size_t len = (size_t)n;
        if (len && line[len - 1] == '\n') len--;
        uint64_t lineno = L.next_line;
        if (add_slot() < 0) {
            fatal = strdup("out of memory");
            break;
        }
        slot *sl = slot_of(lineno);
        sl->first_ms = mono_ms();
        if (L.retry && !(sl->data = malloc(len ? len : 1))) {
            fatal = strdup("out of memory");
            break;
        }
        if (sl->data) memcpy(sl->data, line, len);
        sl->len = len;
        int rc = herald_publish_async(c, topic, line, len, po, line_confirmed, (void *)(uintptr_t)lineno);
        if (rc == HERALD_E_INVALID) {   /* the same options for every line: a usage error */
            fprintf(stderr, PROG ": %s\n%s\n", herald_last_error(c), usage_line);
            exit_code = 2;
            break;
        }
        if (rc) {
            const char *why = herald_last_error(c);
            fail_line(lineno, *why ? why : herald_strerror(rc));
            free(sl->data);
            sl->data = NULL;
            /* Only a too-large line is that line's own problem; anything else
             * (unreachable, window timed out, key refused) stops the load. */
            if (rc != HERALD_E_TOO_LARGE) {
                char buf[600];
                snprintf(buf, sizeof buf, "stopped at line %llu: %s", (unsigned long long)lineno,
                         *why ? why : herald_strerror(rc));
                fatal = strdup(buf);
            }
        }
        int64_t next;
        resend_due(&next);
        print_ready();
    }
    /* every answer in; the throttled lines go again, each until it gets in or
     * its --timeout passes */
    while (!fatal && exit_code == 0 && L.retry) {
        herald_flush(c, timeout_ms);   /* answers: stored, throttled again, or refused */
        print_ready();
        if (!L.retries) break;
        int64_t next;
        resend_due(&next);
        int64_t now = mono_ms();
        if (next != INT64_MAX && next > now) {
            struct timespec ts = { (time_t)((next - now) / 1000), (long)((next - now) % 1000) * 1000000L };
            nanosleep(&ts, NULL);
        }
    }
    if (!fatal && exit_code == 0 && ferror(stdin)) {
        char buf[300];
        snprintf(buf, sizeof buf, "reading stdin: %s", strerror(errno));
        fatal = strdup(buf);
    }
    free(line);
    L.retry = false;   /* from here on a throttled answer is final */
    for (uint64_t k = L.next_print; k < L.next_line; k++)
        if (slot_of(k)->state == 3) {
            fail_line(k, "throttled: stopped before it could be sent again");
            L.retries--;
        }
    herald_flush(c, timeout_ms);   /* failures come back through line_confirmed */
    herald_close(&c);              /* gives up on whatever is left, through line_confirmed too */
    print_ready();
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, PROG ": writing stdout: %s\n", strerror(errno));
        if (!exit_code) exit_code = 1;
    }
    if (fatal) fprintf(stderr, PROG ": %s\n", fatal);
    if (!exit_code && (fatal || L.failed)) exit_code = 1;
    free(fatal);
    free(L.s);
    return exit_code;
}

/* ---- main -------------------------------------------------------------- */

int main(int argc, char **argv)
{
    enum { OPT_BROKER = 256, OPT_TIMEOUT, OPT_DELAY, OPT_DEDUP, OPT_LINES, OPT_KEY, OPT_BROKER_KEY, OPT_JSON,
           OPT_RETRY, OPT_VERSION };
    static const struct option longopts[] = {
        { "broker", required_argument, NULL, OPT_BROKER },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "attr", required_argument, NULL, 'a' },
        { "delay", required_argument, NULL, OPT_DELAY },
        { "dedup-id", required_argument, NULL, OPT_DEDUP },
        { "lines", no_argument, NULL, OPT_LINES },
        { "json", no_argument, NULL, OPT_JSON },
        { "retry-throttled", no_argument, NULL, OPT_RETRY },
        { "version", no_argument, NULL, OPT_VERSION },
        { "key", required_argument, NULL, OPT_KEY },
        { "broker-key", required_argument, NULL, OPT_BROKER_KEY },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *broker = NULL, *dedup = NULL, *key = NULL, *broker_key = NULL;
    double timeout_s = 5, delay = 0;
    bool lines = false;
    herald_attr attrs[MAX_ATTRS];
    size_t nattrs = 0;
    int opt;
    /* GNU getopt permutes: options may come before or after the positionals.
     * Leading ':' and opterr = 0: we word the complaints ourselves. */
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":a:h", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_BROKER: broker = optarg; break;
        case OPT_TIMEOUT:
            if (!parse_seconds(optarg, 0.001, 86400, &timeout_s))
                return usage_error("--timeout wants seconds above 0, not '%s'", optarg);
            break;
        case OPT_DELAY:
            if (!parse_seconds(optarg, 0, 900, &delay))
                return usage_error("--delay wants 0 to 900 seconds, not '%s'", optarg);
            break;
        case OPT_DEDUP:
            if (!valid_id(optarg))
                return usage_error("--dedup-id '%s': ids are 1-63 characters of A-Z a-z 0-9 _ -", optarg);
            dedup = optarg;
            break;
        case OPT_LINES: lines = true; break;
        case OPT_JSON: L.json = true; break;
        case OPT_RETRY: L.retry = true; break;
        case OPT_VERSION:
            printf(PROG " %s\n", HERALD_VERSION);
            return 0;
        case OPT_KEY: key = optarg; break;
        case OPT_BROKER_KEY: broker_key = optarg; break;
        case 'a': {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg) return usage_error("-a wants KEY=VALUE, not '%s'", optarg);
            if (nattrs == MAX_ATTRS) return usage_error("%s", "at most 16 attributes");
            *eq = '\0';
            if (!valid_name(optarg))   /* keys follow the name rule (DESIGN §4) */
                return usage_error("invalid attribute key '%s': keys are 1-128 characters of A-Z a-z 0-9 _ . -",
                                   optarg);
            for (size_t i = 0; i < nattrs; i++)
                if (strcmp(attrs[i].key, optarg) == 0) return usage_error("attribute '%s' given twice", optarg);
            attrs[nattrs++] = (herald_attr){ optarg, eq + 1 };
            break;
        }
        case 'h':
            printf("%s\n\n%s", usage_line, help_text);
            return 0;
        case ':':
            return usage_error("option '%s' needs an argument", argv[optind - 1]);
        default:
            if (optopt) {
                char o[3] = { '-', (char)optopt, '\0' };
                return usage_error("unknown option '%s'", o);
            }
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    int npos = argc - optind;
    if (npos < 1) return usage_error("%s", "missing TOPIC");
    if (npos > 2) return usage_error("unexpected argument '%s'", argv[optind + 2]);
    const char *topic = argv[optind], *payload = npos == 2 ? argv[optind + 1] : NULL;
    if (!valid_name(topic))
        return usage_error("invalid topic name '%s': names are 1-128 characters of A-Z a-z 0-9 _ . -", topic);
    if (lines && dedup) return usage_error("%s", "--dedup-id cannot be combined with --lines");
    if (L.retry && !lines) return usage_error("%s", "--retry-throttled goes with --lines");
    if (lines && payload && strcmp(payload, "-") != 0)
        return usage_error("%s", "--lines reads stdin: give no PAYLOAD (or '-')");
    if (!key && getenv("HERALD_KEY") && *getenv("HERALD_KEY")) key = getenv("HERALD_KEY");
    if (!broker_key && getenv("HERALD_BROKER_KEY") && *getenv("HERALD_BROKER_KEY"))
        broker_key = getenv("HERALD_BROKER_KEY");
    if (!key != !broker_key)
        return usage_error("%s", "--key and --broker-key (or HERALD_KEY and HERALD_BROKER_KEY) go together");

    int timeout_ms = (int)(timeout_s * 1000 + 0.5);
    if (timeout_ms < 1) timeout_ms = 1;
    herald_options o = { .endpoint = broker, .timeout_ms = timeout_ms, .key_file = key,
                         .broker_key_file = broker_key };
    herald_publish_opts po = { .attrs = attrs, .nattrs = nattrs, .dedup_id = dedup, .delay = delay };
    herald_client *c = herald_connect(&o);
    if (!c) {   /* only a bad endpoint, bad key files or no memory get here */
        fprintf(stderr, PROG ": %s\n", herald_last_error(NULL));
        return 2;
    }
    if (lines) return publish_lines(c, topic, &po, timeout_ms);

    size_t len;
    char *data = NULL;
    if (payload && strcmp(payload, "-") != 0) {
        len = strlen(payload);
    } else {
        data = read_all(stdin, &len);
        if (!data) {
            fprintf(stderr, PROG ": reading stdin: %s\n", strerror(errno ? errno : ENOMEM));
            herald_close(&c);
            return 1;
        }
        payload = data;
    }
    char id[HERALD_ID_MAX];
    int rc = herald_publish(c, topic, payload, len, &po, id);
    int exit_code = 0;
    if (rc == 0 && L.json) {
        fputs("{\"id\":", stdout);
        json_str(stdout, id);
        fputs("}\n", stdout);
    } else if (rc == 0) {
        printf("%s\n", id);
    }
    if (rc == 0) {
        if (fflush(stdout) != 0 || ferror(stdout)) {
            fprintf(stderr, PROG ": writing stdout: %s\n", strerror(errno));
            exit_code = 1;
        }
    } else {
        const char *why = herald_last_error(c);
        fprintf(stderr, PROG ": cannot publish to \"%s\": %s\n", topic, *why ? why : herald_strerror(rc));
        if (L.json) {
            fputs("{\"error\":", stdout);
            json_str(stdout, *why ? why : herald_strerror(rc));
            fputs("}\n", stdout);
        }
        exit_code = rc == HERALD_E_INVALID ? 2 : 1;
        if (rc == HERALD_E_INVALID) fprintf(stderr, "%s\n", usage_line);
    }
    free(data);
    herald_close(&c);
    return exit_code;
}
