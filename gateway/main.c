/* main.c — herald-gateway -c FILE: reads the config, starts libmicrohttpd on
 * gateway.listen (one thread per connection, so a slow synchronous invoke
 * holds only its own connection), then waits for a signal.
 *
 * listen = "HOST:PORT" or "[V6]:PORT"; port 0 binds a free port. Either way
 * the bound address is logged as "listening on HOST:PORT" once the socket
 * accepts connections (tests read the port from there).
 *
 * Signals: SIGTERM / SIGINT stop accepting, let the requests in progress
 * finish, exit 0. SIGHUP is ignored: topics and functions come from the
 * broker on every request, and listen/broker/keys need a restart.
 * Exit codes: 0 stopped by a signal, 1 cannot listen, 2 usage or config error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

/* Idle HTTP connections are closed after this many seconds (a handler that
 * runs long is not idle: its thread is busy, not waiting on the client). */
#define IDLE_TIMEOUT_S 120
/* Each connection is a thread: bound them (select() would cap at 1024 fds; we use poll). */
#define MAX_CONNECTIONS 4000
/* Our handlers keep at most a few KiB on the stack. */
#define THREAD_STACK (512u << 10)

static void usage(FILE *f)
{
    fprintf(f, "usage: herald-gateway -c FILE [--verbose] | --version\n"
               "  HTTP publish/invoke, Prometheus /metrics, AWS SNS + Lambda compatibility.\n"
               "  Settings: the config's gateway = { listen; broker; admin; region; account; key; broker_key; }\n");
}

/* "HOST:PORT" / "[V6]:PORT" → a socket address. -1 with err on nonsense. */
static int parse_listen(const char *s, struct sockaddr_storage *ss, char *err, size_t errlen)
{
    char host[256];
    const char *port;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof host) goto bad;
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = 0;
        port = end + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof host) goto bad;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = 0;
        port = colon + 1;
    }
    char *end;
    long p = strtol(port, &end, 10);
    if (!*port || *end || p < 0 || p > 65535) goto bad;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (rc != 0 || !ai) {
        snprintf(err, errlen, "gateway.listen '%s': %s", s, gai_strerror(rc));
        return -1;
    }
    memset(ss, 0, sizeof *ss);
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    return 0;
bad:
    snprintf(err, errlen, "gateway.listen '%s' is not HOST:PORT (or [IPV6]:PORT)", s);
    return -1;
}

static void log_bound(gw_t *g, const struct sockaddr_storage *ss)
{
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(g->daemon, MHD_DAEMON_INFO_BIND_PORT);
    unsigned port = di ? di->port : 0;
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, host, sizeof host);
        LOG_INFO("listening on [%s]:%u", host, port);
    } else {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, host, sizeof host);
        LOG_INFO("listening on %s:%u", host, port);
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '\n') buf[--n] = 0;
    LOG_DEBUG("libmicrohttpd: %s", buf);
}

int main(int argc, char **argv)
{
    util_set_program("herald-gateway");
    const char *cfg_path = NULL;
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' }, { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' }, { "version", no_argument, NULL, 'V' }, { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': cfg_path = optarg; break;
        case 'v': util_verbose = 1; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("herald-gateway %s\n", HERALD_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!cfg_path || optind != argc) {
        usage(stderr);
        return 2;
    }
    static gw_t g;
    g.cfg = config_load(cfg_path, NULL);
    if (!g.cfg) return 2;   /* every error was printed as FILE:LINE */
    g.gw = &g.cfg->gateway;
    g.max_payload = (size_t)g.cfg->broker.max_payload;
    char err[512];
    struct sockaddr_storage ss;
    if (parse_listen(g.gw->listen, &ss, err, sizeof err) != 0) {
        fprintf(stderr, "herald-gateway: %s\n", err);
        config_destroy(&g.cfg);
        return 2;
    }
    int rc = 1;
    if (pool_init(&g) != 0) {
        fprintf(stderr, "herald-gateway: cannot set up the broker connections\n");
        goto out_cfg;
    }
    /* Signals are taken by sigwait below: block them in every thread,
     * including those libmicrohttpd and ZeroMQ start from here on. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);   /* a client that hangs up mid-response is not fatal */

    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC | (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    g.daemon = MHD_start_daemon(flags, 0, NULL, NULL, http_access, &g,
                                MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                                MHD_OPTION_NOTIFY_COMPLETED, http_completed, &g,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S,
                                MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
                                MHD_OPTION_THREAD_STACK_SIZE, (size_t)THREAD_STACK,
                                MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                                MHD_OPTION_END);
    if (!g.daemon) {
        fprintf(stderr, "herald-gateway: cannot listen on %s: %s\n", g.gw->listen, strerror(errno));
        goto out_pool;
    }
    log_bound(&g, &ss);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0) continue;
        if (sig == SIGHUP) {
            LOG_INFO("SIGHUP: nothing to reload (topics and functions come from the broker; "
                     "listen, broker and keys need a restart)");
            continue;
        }
        LOG_INFO("%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    }
    /* stop accepting first, then let the requests in progress end */
    MHD_quiesce_daemon(g.daemon);
    MHD_stop_daemon(g.daemon);
    rc = 0;
out_pool:
    pool_destroy(&g);
out_cfg:
    config_destroy(&g.cfg);
    return rc;
}
