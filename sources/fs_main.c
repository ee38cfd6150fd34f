/* herald-source-fs: watched directories announced as S3 buckets (DESIGN §12,
 * docs/SOURCES.md).
 *
 *   herald-source-fs -c FILE [--source NAME] [--verbose] | --help | --version
 *
 * Runs every source of type "fs" in FILE (or the one named): each has its
 * own inotify descriptor, state directory and libherald client with a stable
 * producer id. The loop, per turn:
 *   1. wait for inotify (or, while publishes are in flight, read their
 *      confirms for up to a few ms: callbacks run inside herald_flush);
 *   2. read inotify events: each compares one path with the view (fs_tree.c);
 *   3. a full comparison when one is due (start, overflow, rescan period,
 *      a directory left unwatched);
 *   4. pump: give the next changes their seqs, journal them, fdatasync,
 *      then publish (the journal is on disk before the broker sees a seq);
 *   5. a snapshot when confirms came in (at most once a second).
 * Exit: 0 on SIGTERM/SIGINT, 1 runtime failure (state dir locked or
 * unwritable, watched directory gone), 2 usage or config error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs.h"
#include "../proto/proto.h"

#define PROG "herald-source-fs"
#define MAX_SOURCES 64
#define BATCH 256                 /* records journaled per fdatasync at most */
#define CONFIRM_WAIT_MS 20        /* how long a turn reads confirms when publishes are in flight */
#define UNREACHABLE_RETRY_MS 1000

static volatile sig_atomic_t stop_sig;
static volatile sig_atomic_t in_client;   /* inside a libherald call that may block */

/* A stop that lands while libherald waits for a broker that does not answer
 * ends the process at once: the journal and the snapshot make any moment a
 * safe one to die (it is the kill -9 path, which the tests exercise). */
static void on_signal(int sig)
{
    stop_sig = sig;
    if (in_client) _exit(0);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: " PROG " -c FILE [--source NAME] [--verbose] | --help | --version\n"
               "  Watches the directories of the config's sources of type \"fs\" and publishes each\n"
               "  created or removed file as an S3 event notification (docs/SOURCES.md).\n"
               "  -c, --config FILE   the herald config (its sources = ( ... ) list)\n"
               "  --source NAME       run only this source\n"
               "  -v, --verbose       debug logging\n"
               "Exit status: 0 stopped by SIGTERM/SIGINT, 1 runtime failure, 2 usage or config error.\n");
}

/* ---- confirms ------------------------------------------------------------ */

static void on_confirm(void *arg, int status, const char *id)
{
    (void)id;
    fs_rec *r = arg;
    fs_source *s = r->src;
    s->inflight--;
    s->progress_ms = util_mono_ms();
    r->sent = false;
    if (status == 0) {
        s->announced++;
        s->retry_ms = 0;
        LOG_DEBUG("source %s: seq %llu stored as %s", s->cfg->name, (unsigned long long)r->seq, id);
        fs_state_confirmed(s, r);
        return;
    }
    if (status == HERALD_E_UNREACHABLE || status == HERALD_E_TIMEOUT) {
        /* given up on by the client (a day without an answer): it keeps its
         * seq and goes again on a new client */
        s->reconnect = true;
        return;
    }
    /* refused (throttled, a broker-side failure, …): the broker remembers
     * the refusal under this seq, so the change goes again with a new one
     * once everything in flight has its answer */
    r->refused = true;
    s->refused++;
    if (s->refusing) return;   /* one backoff step per round of refusals */
    s->refusing = true;
    s->retry_ms = s->retry_ms ? s->retry_ms * 2 : FS_RETRY_MIN_MS;
    if (s->retry_ms > FS_RETRY_MAX_MS) s->retry_ms = FS_RETRY_MAX_MS;
    s->retry_at_ms = util_mono_ms() + s->retry_ms;
    LOG_WARN("source %s: the broker refused seq %llu (%s: %s): sending it again in %d ms", s->cfg->name,
             (unsigned long long)r->seq, herald_strerror(status), s->client ? herald_last_error(s->client) : "",
             s->retry_ms);
}

/* ---- publishing ---------------------------------------------------------- */

/* The next records that may go, in queue order, each with a seq above the
 * last one this client used (a refused or out-of-order one gets a new seq and
 * a journal line saying which it replaces). */
static size_t plan(fs_source *s, fs_rec **out)
{
    size_t n = 0;
    uint64_t last = s->last_sent_seq;
    for (fs_rec *r = s->head; r && s->inflight + n < FS_WINDOW && n < BATCH; r = r->next) {
        if (r->sent) continue;
        if (!r->seq || r->refused || r->seq <= last) {
            if (fs_state_assign(s, r) < 0) {
                LOG_ERROR("source %s: cannot write the journal: %s", s->cfg->name, strerror(errno));
                break;
            }
        }
        last = r->seq;
        out[n++] = r;
    }
    return n;
}

static int publish_one(fs_source *s, fs_rec *r)
{
    size_t len;
    char *json = fs_event_json(s, r, &len);
    if (!json) return HERALD_E_NOMEM;
    herald_attr attrs[2] = { { "event_name", r->op == FS_CREATED ? "ObjectCreated:Put" : "ObjectRemoved:Delete" },
                             { "bucket", s->cfg->bucket } };
    herald_publish_opts po = { .attrs = attrs, .nattrs = 2, .seq = r->seq };
    in_client = 1;
    int rc = herald_publish_async(s->client, s->cfg->topic, json, len, &po, on_confirm, r);
    in_client = 0;
    free(json);
    return rc;
}

void fs_pump(fs_source *s, int64_t now)
{
    if (!s->head || now < s->retry_at_ms) return;
    if (s->refusing) {
        if (s->inflight) return;   /* every answer in before new seqs are given */
        s->refusing = false;
    }
    if (s->reconnect) {
        if (s->inflight) return;
        herald_close(&s->client);
        s->reconnect = false;
    }
    if (!s->client) {
        s->client = herald_connect(&s->hopts);
        if (!s->client) {
            LOG_ERROR("source %s: %s", s->cfg->name, herald_last_error(NULL));
            s->retry_at_ms = now + UNREACHABLE_RETRY_MS;
            return;
        }
        s->last_sent_seq = 0;
    }
    fs_rec *batch[BATCH];
    for (;;) {
        size_t n = plan(s, batch);
        if (n == 0) return;
        /* the journal before the broker: a seq the broker may have stored must
         * be found again after a crash, or its change goes out with a new one */
        if (fs_state_sync(s) < 0) {
            s->retry_at_ms = now + UNREACHABLE_RETRY_MS;
            return;
        }
        for (size_t i = 0; i < n; i++) {
            fs_rec *r = batch[i];
            int rc = publish_one(s, r);
            if (rc == 0) {
                if (!s->inflight) s->progress_ms = util_mono_ms();
                r->sent = true;
                s->inflight++;
                s->last_sent_seq = r->seq;
                continue;
            }
            if (rc == HERALD_E_UNREACHABLE || rc == HERALD_E_TIMEOUT) {
                LOG_DEBUG("source %s: %s: waiting", s->cfg->name, herald_last_error(s->client));
                s->retry_at_ms = util_mono_ms() + UNREACHABLE_RETRY_MS;
            } else if (rc == HERALD_E_INVALID && strstr(herald_last_error(s->client), "not above")) {
                s->reconnect = true;   /* cannot happen by plan(); a fresh client settles it */
            } else {
                /* too large (a key near PATH_MAX over a tiny max_payload) or no
                 * memory: this change cannot go; the others must not wait for it */
                LOG_ERROR("source %s: cannot publish %s: %s", s->cfg->name, r->key, herald_last_error(s->client));
                fs_state_confirmed(s, r);
            }
            return;
        }
        if (s->inflight >= FS_WINDOW) return;
    }
}

/* ---- setup --------------------------------------------------------------- */

static int source_open(fs_source *s, const cfg_source *c)
{
    memset(s, 0, sizeof *s);
    s->cfg = c;
    s->ino_fd = s->lock_fd = -1;
    struct stat st;
    int rc = stat(c->path, &st);
    if (rc < 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, PROG ": source %s: path %s: %s\n", c->name, c->path, rc < 0 ? strerror(errno) : "not a directory");
        return -1;
    }
    if (fs_state_open(s) < 0 || fs_watch_open(s) < 0) return -1;
    s->hopts = (herald_options){ .endpoint = c->broker, .timeout_ms = FS_CLIENT_TIMEOUT_MS, .window = FS_WINDOW,
                                 .key_file = c->key, .broker_key_file = c->broker_key, .producer_id = s->producer };
    s->client = herald_connect(&s->hopts);
    if (!s->client) {
        fprintf(stderr, PROG ": source %s: %s\n", c->name, herald_last_error(NULL));
        return -1;
    }
    s->rescan_needed = true;   /* the start's comparison: what changed while we were away */
    return 0;
}

static void source_close(fs_source *s)
{
    if (s->client) {
        /* what is still unconfirmed is in the journal: the next start sends it again */
        if (s->inflight) herald_flush(s->client, 1000);
        if (!s->inflight) herald_close(&s->client);
    }
    if (s->snap_dirty) fs_state_snapshot(s);
    fs_watch_close(s);
    fs_state_close(s);
}

static int64_t rescan_period_ms(const fs_source *s)
{
    return (int64_t)(s->cfg->rescan_s * 1000);
}

/* Steps 3-5 of the loop for one source. -1: it cannot go on. */
static int source_turn(fs_source *s, int64_t now)
{
    if (s->rescan_needed || (s->next_rescan_ms && now >= s->next_rescan_ms)) {
        int64_t t0 = util_mono_ms();
        s->next_rescan_ms = rescan_period_ms(s) ? now + rescan_period_ms(s) : 0;
        size_t before = s->npending;
        if (fs_rescan(s) < 0) return -1;
        LOG_DEBUG("source %s: rescan: %zu object(s), %zu change(s) found, %lld ms", s->cfg->name, s->view.n,
                  s->npending - before, (long long)(util_mono_ms() - t0));
    }
    fs_pump(s, now);
    if (s->snap_dirty && now - s->snap_at_ms >= FS_SNAPSHOT_EVERY_MS && fs_state_snapshot(s) < 0)
        LOG_ERROR("source %s: cannot write the snapshot in %s: %s", s->cfg->name, s->cfg->state_dir, strerror(errno));
    return 0;
}

/* How long step 1 may wait: until the next rescan, retry or snapshot. */
static int poll_timeout(fs_source *ss, size_t n, int64_t now)
{
    int64_t wake = now + 1000;
    for (size_t i = 0; i < n; i++) {
        fs_source *s = &ss[i];
        if (s->inflight || s->rescan_needed) return 0;   /* step 1 waits on confirms instead */
        if (s->next_rescan_ms && s->next_rescan_ms < wake) wake = s->next_rescan_ms;
        if (s->head && s->retry_at_ms < wake) wake = s->retry_at_ms;
        if (s->snap_dirty && s->snap_at_ms + FS_SNAPSHOT_EVERY_MS < wake) wake = s->snap_at_ms + FS_SNAPSHOT_EVERY_MS;
    }
    return wake > now ? (int)(wake - now) : 0;
}

int main(int argc, char **argv)
{
    util_set_program(PROG);
    const char *cfg_path = NULL, *only = NULL;
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' }, { "source", required_argument, NULL, 's' },
        { "verbose", no_argument, NULL, 'v' }, { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' }, { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': cfg_path = optarg; break;
        case 's': only = optarg; break;
        case 'v': util_verbose = 1; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf(PROG " %s\n", HERALD_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!cfg_path || optind != argc) {
        if (optind != argc) fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    herald_config *cfg = config_load(cfg_path, NULL);
    if (!cfg) return 2;   /* every error was printed as FILE:LINE */
    static fs_source srcs[MAX_SOURCES];
    size_t n = 0;
    for (size_t i = 0; i < cfg->nsources; i++) {
        const cfg_source *c = &cfg->sources[i];
        if (strcmp(c->type, "fs") != 0 || (only && strcmp(c->name, only) != 0)) continue;
        if (n == MAX_SOURCES) {
            fprintf(stderr, PROG ": %s: more than %d sources of type \"fs\"; run several processes with --source\n",
                    cfg_path, MAX_SOURCES);
            config_destroy(&cfg);
            return 2;
        }
        srcs[n++].cfg = c;
    }
    if (n == 0) {
        if (only) fprintf(stderr, PROG ": %s: no source named '%s' of type \"fs\"\n", cfg_path, only);
        else fprintf(stderr, PROG ": %s: no source of type \"fs\" (sources = ( { type = \"fs\"; ... } ))\n", cfg_path);
        config_destroy(&cfg);
        return 2;
    }
    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    int rc = 0;
    size_t opened = 0;
    for (; opened < n; opened++)
        if (source_open(&srcs[opened], srcs[opened].cfg) < 0) {
            rc = 1;
            opened++;
            goto out;
        }
    /* the start's comparison before anything else, so that every directory
     * is watched when the line below says so (tests wait for it) */
    for (size_t i = 0; i < n; i++)
        if (source_turn(&srcs[i], util_mono_ms()) < 0) {
            rc = 1;
            goto out;
        }
    for (size_t i = 0; i < n; i++)
        LOG_INFO("source %s: watching %s as bucket %s → topic %s (producer %s, state %s)", srcs[i].cfg->name,
                 srcs[i].cfg->path, srcs[i].cfg->bucket, srcs[i].cfg->topic, srcs[i].producer, srcs[i].cfg->state_dir);
    struct pollfd pfd[MAX_SOURCES];
    while (!stop_sig) {
        int64_t now = util_mono_ms();
        for (size_t i = 0; i < n; i++) pfd[i] = (struct pollfd){ .fd = srcs[i].ino_fd, .events = POLLIN };
        int timeout = poll_timeout(srcs, n, now);
        if (poll(pfd, n, timeout) < 0 && errno != EINTR) break;
        for (size_t i = 0; i < n && !stop_sig; i++) {
            fs_source *s = &srcs[i];
            if (pfd[i].revents & POLLIN) fs_watch_read(s);
            if (s->inflight) {   /* confirms: their callbacks run in here */
                in_client = 1;
                herald_flush(s->client, CONFIRM_WAIT_MS / (int)n > 0 ? CONFIRM_WAIT_MS / (int)n : 1);
                in_client = 0;
            }
            if (s->inflight && util_mono_ms() - s->progress_ms >= FS_STALL_MS) {
                LOG_WARN("source %s: no answer from broker %s for %d s with %zu publishes in flight: reconnecting",
                         s->cfg->name, s->cfg->broker, FS_STALL_MS / 1000, s->inflight);
                herald_reconnect(s->client);
                s->progress_ms = util_mono_ms();
            }
            if (source_turn(s, util_mono_ms()) < 0) {
                rc = 1;
                goto out;
            }
        }
    }
    if (stop_sig) LOG_INFO("%s: stopping", stop_sig == SIGTERM ? "SIGTERM" : "SIGINT");
out:
    for (size_t i = 0; i < opened; i++) {
        LOG_INFO("source %s: %llu announced, %llu refused and sent again, %llu queue overflows, %zu pending",
                 srcs[i].cfg->name, (unsigned long long)srcs[i].announced, (unsigned long long)srcs[i].refused,
                 (unsigned long long)srcs[i].overflows, srcs[i].npending);
        source_close(&srcs[i]);
    }
    config_destroy(&cfg);
    return rc;
}
