/* main.c — herald-broker -c FILE: load the config, open the database, bind
 * the three endpoints, run the loop until SIGTERM/SIGINT, commit, exit 0.
 * Exit 2: usage or config error (every config error printed as FILE:LINE),
 * or another broker holds the data_dir; exit 1: runtime failure (database,
 * endpoint in use). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <herald.h>   /* HERALD_VERSION */

#include "broker.h"
#include "dlq.h"

static volatile sig_atomic_t stop_flag, reload_flag;
static void on_stop(int sig) { (void)sig; stop_flag = 1; }
static void on_hup(int sig) { (void)sig; reload_flag = 1; }

static void usage(FILE *f)
{
    fprintf(f, "usage: herald-broker -c FILE [--verbose] | --version\n");
}

static void *bind_router(broker_t *b, const char *what, int role, const char *endpoint, int64_t maxmsg)
{
    void *s = zmq_socket(b->zctx, ZMQ_ROUTER);
    if (!s) return NULL;
    if (auth_server(b, s, role) != 0) {
        fprintf(stderr, "herald-broker: cannot set up CURVE on %s: %s\n", what, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    int one = 1, zero = 0, linger = 2000;
    zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);   /* EHOSTUNREACH, not a silent drop */
    zmq_setsockopt(s, ZMQ_ROUTER_HANDOVER, &one, sizeof one);    /* a reconnecting worker keeps its id */
    zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero);           /* credits bound what we send */
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);       /* last confirms go out at exit */
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (zmq_bind(s, endpoint) != 0) {
        fprintf(stderr, "herald-broker: cannot bind %s %s: %s\n", what, endpoint, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    return s;
}

int main(int argc, char **argv)
{
    util_set_program("herald-broker");
    const char *path = NULL;
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': path = optarg; break;
        case 'v': util_verbose = 1; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("herald-broker %s\n", HERALD_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!path || optind != argc) { usage(stderr); return 2; }

    herald_config *cfg = config_load(path, NULL);
    if (!cfg) return 2;

    broker_t b;
    memset(&b, 0, sizeof b);
    b.stop = &stop_flag;
    b.reload = &reload_flag;
    list_init(&b.workers);
    list_init(&b.invoke_queue);
    list_init(&b.invocations);
    b.confirms_tail = &b.confirms;
    msgpack_sbuffer_init(&b.sb);
    frames_init(&b.in);
    b.heartbeat_ms = (int64_t)(cfg->broker.heartbeat_s * 1000.0 + 0.5);
    b.started_ms = util_wall_ms();
    /* lease ids of this run start above any of an earlier run, so a late
     * result from before a restart can never end a new lease */
    b.next_lease = (uint64_t)b.started_ms << 20;
    int rc = 1;

    struct sigaction sa = { .sa_handler = on_stop };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* A file-size limit (ulimit -f) must fail the write that passes it, which
     * SQLite turns into a failed commit that confirms nothing, rather than
     * kill the broker with SIGXFSZ. */
    signal(SIGXFSZ, SIG_IGN);

    /* keys first: a bad secret key is a config error, and starts nothing */
    char why[512];
    b.zctx = zmq_ctx_new();
    if (auth_open(&b, &cfg->security, why, sizeof why) != 0) {
        fprintf(stderr, "herald-broker: %s\n", why);
        rc = 2;
        goto out_zmq;
    }
    /* before the database: a second broker must not touch it at all */
    int lock_fd = lock_data_dir(cfg->broker.data_dir, why, sizeof why);
    if (lock_fd < 0) {
        fprintf(stderr, "herald-broker: %s\n", why);
        rc = lock_fd == -2 ? 2 : 1;
        goto out_zmq;
    }
    if (store_open(&b.store, cfg->broker.data_dir, cfg->broker.durability) != 0) goto out_lock;
    b.dlq_db = dlq_open(b.store.path, why, sizeof why);
    if (!b.dlq_db) LOG_WARN("dead letters will not be readable over the admin endpoint: %s", why);
    if (broker_setup(&b, cfg) != 0 || store_counts(&b.store, &b) != 0) {
        LOG_ERROR("cannot rebuild the queues from %s", b.store.path);
        goto out_store;
    }
    for (size_t i = 0; i < b.nsubs; i++) queue_refill_delayed(&b, b.subs[i]);   /* the first wake-ups */
    /* after the queues: a slot missed while the broker was down is stored now */
    if (schedules_open(&b) != 0 || schedules_start(&b) != 0) {
        LOG_ERROR("cannot start the schedules in %s", b.store.path);
        goto out_store;
    }
    int64_t mp = cfg->broker.max_payload, head = 64 * 1024;
    int64_t wmax = (mp > (int64_t)PROTO_OUTPUT_MAX ? mp : (int64_t)PROTO_OUTPUT_MAX) + head;
    int64_t amax = (mp > (1 << 20) ? mp : (1 << 20)) + head;
    b.pub_sock = bind_router(&b, "publish_endpoint", 0, cfg->broker.publish_endpoint, mp + head);
    if (b.pub_sock) b.wrk_sock = bind_router(&b, "worker_endpoint", 1, cfg->broker.worker_endpoint, wmax);
    if (b.wrk_sock) b.adm_sock = bind_router(&b, "admin_endpoint", 2, cfg->broker.admin_endpoint, amax);
    if (!b.adm_sock) goto out_sockets;
    if (auth_selftest(&b, cfg->broker.publish_endpoint, why, sizeof why) != 0) {
        fprintf(stderr, "herald-broker: %s\n", why);
        goto out_sockets;
    }

    int64_t ready = 0, delayed = 0;
    for (size_t i = 0; i < b.nsubs; i++) ready += b.subs[i]->queued, delayed += b.subs[i]->delayed;
    LOG_INFO("ready: %zu topics, %zu functions, %lld queued, %lld delayed; publish %s, workers %s, admin %s%s",
             b.ntopics, b.nfunctions, (long long)ready, (long long)delayed, cfg->broker.publish_endpoint,
             cfg->broker.worker_endpoint, cfg->broker.admin_endpoint,
             b.auth.on ? "; CURVE on, ZAP self-test passed" : "");
    rc = loop_run(&b) == 0 ? 0 : 1;
    if (b.dropped[0] || b.dropped[1] || b.dropped[2])
        LOG_INFO("stopped; messages refused as malformed: publish %llu, worker %llu, admin %llu",
                 (unsigned long long)b.dropped[0], (unsigned long long)b.dropped[1],
                 (unsigned long long)b.dropped[2]);
    else
        LOG_INFO("stopped");
out_sockets:
    if (b.pub_sock) zmq_close(b.pub_sock);
    if (b.wrk_sock) zmq_close(b.wrk_sock);
    if (b.adm_sock) zmq_close(b.adm_sock);
out_store:
    schedules_close(&b);
    broker_teardown(&b);
    sqlite3_close(b.dlq_db);
    store_close(&b.store);
out_lock:
    close(lock_fd);   /* last: the database is closed */
out_zmq:
    auth_close(&b);
    zmq_ctx_term(b.zctx);
    frames_close(&b.in);
    free(b.in.parts);
    free(b.reload_skip);
    msgpack_sbuffer_destroy(&b.sb);
    if (b.cfg) cfg = b.cfg;   /* a SIGHUP reload replaced the config we loaded (and freed that one) */
    config_destroy(&cfg);
    return rc;
}
