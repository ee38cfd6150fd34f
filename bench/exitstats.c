/* exitstats.c — the CPU time of processes that have exited, from Linux
 * taskstats (Documentation/accounting/taskstats.rst).
 *
 * X1's handler processes live for a millisecond or two, and its exec
 * supervisors (which run attempt after attempt) exit when their worker stops:
 * /proc sees them only as their launcher's reaped children, or live processes
 * whose own time and reaped children's time it sums. To split
 * that sum, we register a taskstats listener for every CPU before the run;
 * the kernel then sends one record per exiting task: pid, ppid and its CPU
 * time. Records are kept compactly (the listener sees every process on the
 * machine) and classified after the run: a supervisor is a process whose
 * parent was one of the worker's launchers, a handler one whose parent (or
 * ancestor) was a supervisor.
 *
 * Which CPU time: ac_utime + ac_stime, the scheduler-tick samples (HZ), not
 * cpu_run_virtual_total. The latter is sum_exec_runtime as of the task's last
 * scheduler update, stale for a process that lives 1 ms without being
 * preempted (measured: it showed half the tick-sampled time of X1's handler
 * processes). Tick samples are unbiased over thousands of processes. Both
 * miss what the task spends after its record is sent (do_exit sends it before
 * exit_mm), so the caller uses the split as a proportion of the exact total
 * that /proc gives (the launcher's reaped children).
 *
 * Needs CAP_NET_ADMIN (root); without it exitstats_open() says why and X1
 * reports supervisors + handlers as one figure.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/taskstats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NL_BUF 65536        /* one recv: many records */
#define RCVBUF (16 << 20)   /* kernel-side queue between drains (root may force it) */

typedef struct {
    pid_t pid, ppid;
    uint64_t cpu_us;        /* ac_utime + ac_stime: scheduler-tick samples */
} rec;

struct exitstats {
    int fd;
    uint16_t family;        /* TASKSTATS generic-netlink family id */
    char cpumask[32];       /* "0-N", registered; deregistered at close */
    rec *recs; size_t n, cap;
    long lost;              /* ENOBUFS: records the kernel dropped */
};

#define NLA_DATA(a) ((char *)(a) + NLA_HDRLEN)

static int send_cmd(int fd, uint16_t type, uint8_t cmd, uint16_t attr, const void *data, size_t len)
{
    struct {
        struct nlmsghdr n;
        struct genlmsghdr g;
        char buf[256];
    } m;
    memset(&m, 0, sizeof m);
    m.n.nlmsg_type = type;
    m.n.nlmsg_flags = NLM_F_REQUEST;
    m.n.nlmsg_pid = (uint32_t)getpid();
    m.g.cmd = cmd;
    m.g.version = 1;
    struct nlattr *a = (struct nlattr *)m.buf;
    a->nla_type = attr;
    a->nla_len = (uint16_t)(NLA_HDRLEN + len);
    memcpy(NLA_DATA(a), data, len);
    m.n.nlmsg_len = (uint32_t)(NLMSG_LENGTH(GENL_HDRLEN) + NLA_ALIGN(a->nla_len));
    struct sockaddr_nl to = { .nl_family = AF_NETLINK };
    return sendto(fd, &m, m.n.nlmsg_len, 0, (struct sockaddr *)&to, sizeof to) < 0 ? -1 : 0;
}

static int family_id(int fd, uint16_t *id)
{
    if (send_cmd(fd, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_NAME, TASKSTATS_GENL_NAME,
                 sizeof TASKSTATS_GENL_NAME) != 0)
        return -1;
    char buf[4096];
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r <= 0)
        return -1;
    struct nlmsghdr *n = (struct nlmsghdr *)buf;
    if (!NLMSG_OK(n, (uint32_t)r) || n->nlmsg_type == NLMSG_ERROR)
        return -1;
    char *p = (char *)NLMSG_DATA(n) + GENL_HDRLEN, *end = (char *)n + n->nlmsg_len;
    while (p + NLA_HDRLEN <= end) {
        struct nlattr *a = (struct nlattr *)p;
        if (a->nla_len < NLA_HDRLEN)
            break;
        if (a->nla_type == CTRL_ATTR_FAMILY_ID) {
            memcpy(id, NLA_DATA(a), sizeof *id);
            return 0;
        }
        p += NLA_ALIGN(a->nla_len);
    }
    return -1;
}

exitstats *exitstats_open(char *why, size_t cap)
{
    exitstats *x = calloc(1, sizeof *x);
    if (!x) {
        snprintf(why, cap, "out of memory");
        return NULL;
    }
    x->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
    if (x->fd < 0) {
        snprintf(why, cap, "netlink socket: %s", strerror(errno));
        goto fail;
    }
    int sz = RCVBUF;
    if (setsockopt(x->fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) != 0)
        setsockopt(x->fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    struct sockaddr_nl me = { .nl_family = AF_NETLINK };
    if (bind(x->fd, (struct sockaddr *)&me, sizeof me) != 0) {
        snprintf(why, cap, "netlink bind: %s", strerror(errno));
        goto fail;
    }
    if (family_id(x->fd, &x->family) != 0) {
        snprintf(why, cap, "no TASKSTATS netlink family (kernel without CONFIG_TASKSTATS?)");
        goto fail;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_CONF);
    snprintf(x->cpumask, sizeof x->cpumask, "0-%ld", ncpu > 0 ? ncpu - 1 : 0);
    if (send_cmd(x->fd, x->family, TASKSTATS_CMD_GET, TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, x->cpumask,
                 strlen(x->cpumask) + 1) != 0) {
        snprintf(why, cap, "taskstats register: %s", strerror(errno));
        goto fail;
    }
    /* a refusal (EPERM without CAP_NET_ADMIN) comes back as an NLMSG_ERROR;
     * success sends nothing, so wait briefly for an answer */
    char buf[1024];
    usleep(20000);
    ssize_t r = recv(x->fd, buf, sizeof buf, MSG_DONTWAIT | MSG_PEEK);
    if (r > 0) {
        struct nlmsghdr *n = (struct nlmsghdr *)buf;
        if (n->nlmsg_type == NLMSG_ERROR) {
            struct nlmsgerr *e = NLMSG_DATA(n);
            if (e->error) {
                snprintf(why, cap, "taskstats register: %s", strerror(-e->error));
                goto fail;
            }
            recv(x->fd, buf, sizeof buf, MSG_DONTWAIT);
        }
    }
    return x;
fail:
    if (x->fd >= 0)
        close(x->fd);
    free(x);
    return NULL;
}

int exitstats_fd(const exitstats *x) { return x->fd; }

static void keep(exitstats *x, const struct taskstats *t)
{
    if (x->n == x->cap) {
        size_t c = x->cap ? 2 * x->cap : 4096;
        rec *r = realloc(x->recs, c * sizeof *r);
        if (!r) {
            x->lost++;
            return;
        }
        x->recs = r;
        x->cap = c;
    }
    x->recs[x->n++] = (rec){ (pid_t)t->ac_pid, (pid_t)t->ac_ppid, t->ac_utime + t->ac_stime };
}

/* An exit message holds TASKSTATS_TYPE_AGGR_PID { PID, STATS } (and for the
 * last thread of a multi-threaded process AGGR_TGID too, which we skip: the
 * processes we classify are single-threaded). */
static void parse(exitstats *x, struct nlmsghdr *n)
{
    char *p = (char *)NLMSG_DATA(n) + GENL_HDRLEN, *end = (char *)n + n->nlmsg_len;
    while (p + NLA_HDRLEN <= end) {
        struct nlattr *a = (struct nlattr *)p;
        if (a->nla_len < NLA_HDRLEN || p + a->nla_len > end)
            return;
        if ((a->nla_type & NLA_TYPE_MASK) == TASKSTATS_TYPE_AGGR_PID) {
            char *q = NLA_DATA(a), *qe = p + a->nla_len;
            while (q + NLA_HDRLEN <= qe) {
                struct nlattr *b = (struct nlattr *)q;
                if (b->nla_len < NLA_HDRLEN || q + b->nla_len > qe)
                    break;
                if (b->nla_type == TASKSTATS_TYPE_STATS) {
                    /* the kernel's struct may be newer (longer) or older than
                     * ours: fields are only ever appended */
                    struct taskstats t;
                    memset(&t, 0, sizeof t);
                    size_t len = b->nla_len - NLA_HDRLEN;
                    memcpy(&t, NLA_DATA(b), len < sizeof t ? len : sizeof t);
                    keep(x, &t);
                }
                q += NLA_ALIGN(b->nla_len);
            }
        }
        p += NLA_ALIGN(a->nla_len);
    }
}

void exitstats_drain(exitstats *x)
{
    static char buf[NL_BUF];
    for (;;) {
        ssize_t r = recv(x->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r < 0) {
            if (errno == ENOBUFS) {   /* the kernel dropped some: count, go on */
                x->lost++;
                continue;
            }
            return;
        }
        for (struct nlmsghdr *n = (struct nlmsghdr *)buf; NLMSG_OK(n, (uint32_t)r); n = NLMSG_NEXT(n, r))
            if (n->nlmsg_type == x->family)
                parse(x, n);
    }
}

static int cmp_pid(const void *a, const void *b)
{
    pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
    return (x > y) - (x < y);
}

static bool has(const pid_t *set, size_t n, pid_t p)
{
    return n && bsearch(&p, set, n, sizeof p, cmp_pid);
}

int exitstats_split(exitstats *x, const pid_t *launchers, int nl, double *sup_s, long *nsup,
                    double *handler_s, long *nhandler)
{
    exitstats_drain(x);
    /* The listener saw every exit on the machine (other users' too): sort and
     * search, level by level — supervisors (parent: a launcher), then their
     * children, grandchildren … (the handler side), at most 8 levels. */
    pid_t *level = malloc((x->n + (size_t)nl + 1) * sizeof *level);
    char *cls = calloc(x->n + 1, 1);
    if (!level || !cls) {
        free(level);
        free(cls);
        return -1;
    }
    size_t nlev = 0;
    for (int l = 0; l < nl; l++)
        level[nlev++] = launchers[l];
    qsort(level, nlev, sizeof *level, cmp_pid);
    uint64_t s = 0, h = 0;
    *nsup = *nhandler = 0;
    for (int depth = 1; depth <= 8 && nlev; depth++) {
        size_t next = 0;
        pid_t *found = malloc((x->n + 1) * sizeof *found);
        if (!found)
            break;
        for (size_t i = 0; i < x->n; i++) {
            if (cls[i] || !has(level, nlev, x->recs[i].ppid))
                continue;
            cls[i] = (char)depth;
            found[next++] = x->recs[i].pid;
            if (depth == 1) {
                s += x->recs[i].cpu_us;
                (*nsup)++;
            } else {
                h += x->recs[i].cpu_us;
                (*nhandler)++;
            }
        }
        memcpy(level, found, next * sizeof *found);
        free(found);
        nlev = next;
        qsort(level, nlev, sizeof *level, cmp_pid);
    }
    free(level);
    free(cls);
    *sup_s = (double)s / 1e6;
    *handler_s = (double)h / 1e6;
    return x->lost ? -1 : 0;
}

void exitstats_close(exitstats **px)
{
    exitstats *x = *px;
    if (!x)
        return;
    send_cmd(x->fd, x->family, TASKSTATS_CMD_GET, TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK, x->cpumask,
             strlen(x->cpumask) + 1);
    close(x->fd);
    free(x->recs);
    free(x);
    *px = NULL;
}
