/* main.c — herald-worker: the options, the runner, one session with a broker
 * (session.c), and the loop that feeds its deliveries to the runner and its
 * results back.
 *
 * Start-up order matters: the runner forks its launcher before any ZeroMQ
 * thread exists (a process with ZeroMQ threads must not fork except straight
 * into exec).
 *
 * The loop, one turn: SIGTERM → DRAIN (no new work), and once nothing is in
 * flight or unreported, BYE and exit 0 (bounded by the handlers' timeouts);
 * a broker silent for 3 heartbeats → the session fences and registers again
 * (while draining: exit); a HEARTBEAT when due; poll the session's socket and
 * the runner's fd; read what the broker sent; run the runner; send the
 * results. A refused CURVE key, a refused registration or a dead launcher
 * end the worker (exit 1). With --log FILE, SIGHUP reopens FILE (logrotate).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <herald.h>   /* HERALD_VERSION */

#include "../config/config.h"
#include "runner.h"
#include "session.h"

/* --functions, parsed. */
typedef struct {
    char **v; uint32_t n;
} fnlist;

static volatile sig_atomic_t stop_flag, hup_flag;
static void on_stop(int sig) { (void)sig; stop_flag = 1; }
static void on_hup(int sig) { (void)sig; hup_flag = 1; }

static void usage(FILE *f)
{
    fprintf(f, "usage: herald-worker --broker ENDPOINT [--functions a,b] [--concurrency N]\n"
               "                     [--root DIR] [--run-dir DIR] [--key FILE --broker-key FILE]\n"
               "                     [-c FILE] [--log FILE] [--verbose] | --version\n");
}

static int split_functions(fnlist *fl, const char *list)
{
    char *copy = strdup(list), *save = NULL;
    if (!copy) return -1;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!proto_valid_name(t)) {
            fprintf(stderr, "herald-worker: --functions: '%s' is not a valid function name\n", t);
            free(copy);
            return -1;
        }
        char **f = realloc(fl->v, (fl->n + 1) * sizeof *f);
        if (!f) { free(copy); return -1; }
        fl->v = f;
        fl->v[fl->n++] = strdup(t);
    }
    free(copy);
    return 0;
}

int main(int argc, char **argv)
{
    util_set_program("herald-worker");
    session_opts so = { 0 };
    fnlist fl = { 0 };
    int exit_code = -1;
    char id[64] = "", host[256] = "";
    const char *cfg_path = NULL, *functions = NULL, *root = NULL, *run_dir = NULL, *log_file = NULL;
    long concurrency = 0;
    static const struct option opts[] = {
        { "broker", required_argument, NULL, 'b' }, { "functions", required_argument, NULL, 'f' },
        { "concurrency", required_argument, NULL, 'n' }, { "root", required_argument, NULL, 'r' },
        { "run-dir", required_argument, NULL, 'd' }, { "config", required_argument, NULL, 'c' },
        { "verbose", no_argument, NULL, 'v' }, { "help", no_argument, NULL, 'h' },
        { "key", required_argument, NULL, 'K' }, { "broker-key", required_argument, NULL, 'B' },
        { "version", no_argument, NULL, 'V' }, { "log", required_argument, NULL, 'L' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, "b:f:n:r:d:c:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'b': so.endpoint = optarg; break;
        case 'f': functions = optarg; break;
        case 'n': {
            char *end;
            concurrency = strtol(optarg, &end, 10);
            if (*end || concurrency < 1 || concurrency > 100000) {
                fprintf(stderr, "herald-worker: --concurrency must be an integer from 1 to 100000\n");
                return 2;
            }
            break;
        }
        case 'r': root = optarg; break;
        case 'd': run_dir = optarg; break;
        case 'c': cfg_path = optarg; break;
        case 'v': util_verbose = 1; break;
        case 'K': so.key = optarg; break;
        case 'B': so.broker_key = optarg; break;
        case 'L': log_file = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("herald-worker %s\n", HERALD_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) { usage(stderr); return 2; }
    char ep_why[256];   /* libzmq would keep 16 bits of port 99999 and connect elsewhere */
    if (so.endpoint && endpoint_check(so.endpoint, false, ep_why, sizeof ep_why) != 0) {
        fprintf(stderr, "herald-worker: --broker '%s' %s\n", so.endpoint, ep_why);
        return 2;
    }
    herald_config *cfg = NULL;
    if (cfg_path) {
        cfg = config_load(cfg_path, NULL);
        if (!cfg) return 2;
        if (!so.endpoint && cfg->worker.present) so.endpoint = cfg->worker.broker;
        if (!concurrency && cfg->worker.concurrency) concurrency = cfg->worker.concurrency;
        if (!root) root = cfg->worker.root;
        if (!run_dir) run_dir = cfg->worker.run_dir;
        if (!so.key && !so.broker_key) {
            so.key = cfg->worker.key;
            so.broker_key = cfg->worker.broker_key;
        }
        if (!functions && cfg->worker.nfunctions)
            for (size_t i = 0; i < cfg->worker.nfunctions; i++)
                if (split_functions(&fl, cfg->worker.functions[i]) != 0) return 2;
    }
    if (!so.endpoint) so.endpoint = "tcp://127.0.0.1:7711";
    char kwhy[512];
    if (keys_pick(&so.key, &so.broker_key, kwhy, sizeof kwhy) != 0) {
        fprintf(stderr, "herald-worker: %s\n", kwhy);
        config_destroy(&cfg);
        return 2;
    }
    if (functions && split_functions(&fl, functions) != 0) return 2;
    if (!concurrency) concurrency = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    so.slots = (uint32_t)concurrency;
    gethostname(host, sizeof host - 1);
    char rnd[8];
    util_random(rnd, sizeof rnd);
    static const char alnum[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    int len = snprintf(id, sizeof id, "w%d_", (int)getpid());
    for (int i = 0; i < 8; i++) id[len + i] = alnum[(unsigned char)rnd[i] % 36];

    /* Once the flags and config are judged (their errors belong on the
     * terminal), before the launcher: its children write there too. */
    if (log_file && hlog_open(log_file) != 0) {
        config_destroy(&cfg);
        return 2;
    }
    struct sigaction sa = { .sa_handler = on_stop };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (log_file) {   /* without --log, SIGHUP is what it always was */
        struct sigaction hup = { .sa_handler = on_hup };
        sigemptyset(&hup.sa_mask);
        sigaction(SIGHUP, &hup, NULL);
    }
    signal(SIGPIPE, SIG_IGN);

    /* before any ZeroMQ thread exists; the lean launcher program lives in
     * ../libexec beside our bin/, in the tree as once installed */
    char launcher[PATH_MAX + 32] = "";
    char exe[PATH_MAX];
    ssize_t exe_len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (exe_len > 0) {
        exe[exe_len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(launcher, sizeof launcher, "%s/../libexec/herald-launcher", exe);
    }
    runner_opts ro = { .root = root, .run_dir = run_dir, .hosts = 0, .launcher = launcher[0] ? launcher : NULL,
                       .slots = (int)concurrency };
    runner_t *runner = runner_new(&ro);
    if (!runner) { config_destroy(&cfg); return 1; }

    void *zctx = zmq_ctx_new();
    so.id = id;
    so.host = host;
    so.functions = fl.v;
    so.nfunctions = fl.n;
    so.runner = runner;
    so.zctx = zctx;
    session_t *s = session_new(&so);
    if (!s || session_open(s) != 0) { exit_code = 1; goto out; }

    bool draining = false;
    while (exit_code < 0) {
        if (session_failed(s)) { exit_code = 1; break; }   /* the broker refused the registration */
        if (hup_flag) {
            hup_flag = 0;
            hlog_reopen();
        }
        int64_t now = util_mono_ms();
        if (stop_flag && !draining) {
            draining = true;
            session_drain(s);
            LOG_INFO("SIGTERM: finishing %zu in-flight deliveries", runner_busy(runner));
        }
        if (draining && runner_busy(runner) == 0 && session_pending(s) == 0) {
            session_bye(s);   /* after the last RESULT, on the same socket: the broker drops us at once */
            exit_code = 0;
            break;
        }
        if (session_silent(s, now)) {
            /* A worker held up itself (no CPU for a while) first reads what
             * waits for it: the broker may well have spoken meanwhile. */
            session_read(s);
            now = util_mono_ms();
        }
        if (session_silent(s, now)) {
            if (draining) {
                LOG_WARN("broker silent while draining: %zu deliveries not reported", runner_busy(runner));
                exit_code = 0;
                break;
            }
            session_reconnect(s, now);
        }
        session_stats(s, now, false);
        session_heartbeat(s, now);
        long timeout = session_poll_ms(s);
        int rt = runner_next_timeout_ms(runner);
        if (rt >= 0 && rt < timeout) timeout = rt;
        zmq_pollitem_t items[3] = { { NULL, runner_fd(runner), ZMQ_POLLIN, 0 } };
        int nitems = 1 + session_pollitems(s, items + 1);
        if (zmq_poll(items, nitems, timeout) < 0 && zmq_errno() != EINTR) {
            LOG_ERROR("poll: %s", zmq_strerror(zmq_errno()));
            exit_code = 1;
            break;
        }
        session_read(s);
        if (session_handshake_refused(s)) { exit_code = 1; break; }
        runner_dispatch(runner, session_on_result, s);
        if (session_pending(s)) session_flush(s);
        if (runner_broken(runner)) {
            /* Every delivery it still got would fail here: go, so that the
             * broker gives them to other workers and a supervisor restarts us. */
            fprintf(stderr, "herald-worker: the handler launcher died: no handler can start; exiting\n");
            exit_code = 1;
            break;
        }
    }
out:
    session_destroy(&s);
    zmq_ctx_term(zctx);
    runner_destroy(&runner);
    for (uint32_t i = 0; i < fl.n; i++) free(fl.v[i]);
    free(fl.v);
    config_destroy(&cfg);
    return exit_code < 0 ? 1 : exit_code;
}
