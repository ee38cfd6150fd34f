/* launcher: the single-threaded process that creates every handler process.
 *
 * runner_new() forks it before any ZeroMQ thread exists, so it may fork freely.
 * It reads requests from main (CH_L_EXEC / CH_L_HOST each carry, by
 * SCM_RIGHTS, the child's end of a socketpair main made), forks a supervisor
 * or a host for each, and reaps them. It is a child subreaper, so anything a
 * dead supervisor leaves behind re-parents to it and is reaped too.
 * State: the table of its live children (pid, kind, main's id for hosts), so a
 * kill request names a host by id and reaches a pid that cannot have been
 * reused (the launcher has not reaped it yet). Host exits are reported to main
 * (CH_L_HOSTEXIT) with their wait status; supervisors report for themselves.
 * On CH_L_QUIT or EOF from main it gives its children a short grace to exit by
 * themselves (hosts run herald_fini, supervisors clean up), then SIGKILLs
 * whatever is left, reaps everything and exits.
 */
#define _GNU_SOURCE
#include "runner_int.h"
#include "runtime.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define QUIT_GRACE_MS 2000   /* children's time to exit by themselves on QUIT */
#define MAX_RECV_FDS 253     /* SCM_MAX_FD: the most one recvmsg can carry */

typedef struct {
    pid_t pid;
    bool host;          /* else a supervisor */
    uint64_t id;        /* main's host id */
} child;

static child *kids;
static size_t nkids, capkids;
static host_slot *board;       /* the runner's host board, inherited by every host */
static int fdq[4096];          /* fds received and not yet claimed by a message, FIFO */
static wbuf in;                /* what main sent, not yet parsed */
static size_t fdq_head, fdq_len;

int launcher_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK)
            w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct pollfd pf = { .fd = fd, .events = POLLOUT };
                poll(&pf, 1, 100);
                continue;
            }
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

void launcher_close_from(int from)
{
    if (syscall(SYS_close_range, (unsigned)from, ~0u, 0) == 0)
        return;
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = from; fd < (max > 0 ? max : 65536); fd++)
        close((int)fd);
}

void launcher_signal_children(int sig)
{
    DIR *d = opendir("/proc");
    if (!d)
        return;
    pid_t self = getpid();
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        char path[64], buf[512];
        int pid = atoi(e->d_name);
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        /* "pid (comm) state ppid …": comm may hold spaces and parentheses. */
        char *rp = strrchr(buf, ')');
        char state;
        int ppid;
        if (!rp || sscanf(rp + 1, " %c %d", &state, &ppid) != 2)
            continue;
        /* Our child by PPid: unreaped, so its pid cannot have been reused. */
        if (ppid == self)
            kill((pid_t)pid, sig);
    }
    closedir(d);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int launcher_kill_children(int64_t deadline_ms)
{
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    for (;;) {
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0)
            ;
        if (p < 0 && errno == ECHILD)
            return 0;
        int64_t left = deadline_ms - mono_ms();
        if (left <= 0)
            return -1;
        launcher_signal_children(SIGKILL);
        /* Wait for a SIGCHLD (blocked in every caller) rather than spin. */
        struct timespec ts = { 0, (left < 20 ? left : 20) * 1000000L };
        sigtimedwait(&chld, NULL, &ts);
    }
}

static void add_child(pid_t pid, bool host, uint64_t id)
{
    if (nkids == capkids) {
        size_t cap = capkids ? capkids * 2 : 64;
        child *k = realloc(kids, cap * sizeof *k);
        if (!k) {
            /* Untracked, it is still reaped; only a kill request cannot find it. */
            LOG_ERROR("launcher: out of memory tracking pid %d", (int)pid);
            return;
        }
        kids = k;
        capkids = cap;
    }
    kids[nkids++] = (child){ pid, host, id };
}

static child *find_child(pid_t pid)
{
    for (size_t i = 0; i < nkids; i++)
        if (kids[i].pid == pid)
            return &kids[i];
    return NULL;
}

static int pop_fd(void)
{
    if (fdq_len == 0)
        return -1;
    int fd = fdq[fdq_head];
    fdq_head = (fdq_head + 1) % (sizeof fdq / sizeof fdq[0]);
    fdq_len--;
    return fd;
}

static void push_fd(int fd)
{
    if (fdq_len == sizeof fdq / sizeof fdq[0]) {
        close(fd);   /* main never has this many requests in flight */
        LOG_ERROR("launcher: too many pending descriptors");
        return;
    }
    fdq[(fdq_head + fdq_len) % (sizeof fdq / sizeof fdq[0])] = fd;
    fdq_len++;
}

/* Reports a failed exec start straight on the attempt's channel. */
static void report_exec_failure(int fd, const char *why)
{
    wbuf b = { 0 };
    if (result_put(&b, 0, OUT_ERROR, 0, 0, why, "", 0) == 0)
        launcher_write_all(fd, b.p, b.len);
    wbuf_free(&b);
}

static void report_host_exit(int sock, uint64_t id, int status)
{
    wbuf b = { 0 };
    if (chan_hostexit_put(&b, &(chan_hostexit){ id, status }) == 0)
        launcher_write_all(sock, b.p, b.len);
    wbuf_free(&b);
}

/* A runtime supervisor that could not start: its event fails (an attempt
 * counted: the function's starts back off) and it is gone. */
static void report_runtime_failure(int fd, const char *why)
{
    wbuf b = { 0 };
    if (result_put(&b, 0, OUT_ERROR, 0, 0, why, NULL, 0) == 0 && chan_rtgone_put(&b, PROTO_RECYCLE_INIT_ERROR) == 0)
        launcher_write_all(fd, b.p, b.len);
    wbuf_free(&b);
}

/* In the new child: fd becomes 3, every other descriptor but 0–2 is closed. */
static int child_fds(int fd)
{
    if (fd != 3 && dup2(fd, 3) < 0)
        _exit(127);
    launcher_close_from(4);
    return 3;
}

static void spawn(int sock, const char *wdir, uint8_t type, const char *body, uint32_t n)
{
    int fd = pop_fd();
    if (fd < 0) {
        LOG_ERROR("launcher: request without its descriptor");
        return;
    }
    uint64_t id = 0;
    if (type == CH_L_HOST) {
        chan_host m;
        chan_host_get(body, n, &m);   /* only its id matters here; the host checks the rest */
        id = m.id;
    }
    pid_t self = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        int c = child_fds(fd);
        /* Supervisors and hosts live long: keep only their request, not our
         * copy of the channel buffer (64 MiB after a large payload). A
         * supervisor's large buffers (payloads, outputs) must go back to the
         * kernel when freed: glibc raises its mmap threshold after a large
         * free (ours, above), and then keeps such buffers in the heap. */
        if (type == CH_L_EXEC || type == CH_L_RUNTIME) {
            mallopt(M_MMAP_THRESHOLD, 256 << 10);
            mallopt(M_TRIM_THRESHOLD, 256 << 10);
        }
        char *own = malloc(n ? n : 1);
        if (!own) {
            if (type == CH_L_EXEC)
                report_exec_failure(c, "runner: out of memory");
            _exit(1);
        }
        memcpy(own, body, n);
        wbuf_free(&in);
        if (type == CH_L_EXEC)
            exec_supervise(c, wdir, own, n);
        if (type == CH_L_RUNTIME)
            runtime_supervise(c, wdir, own, n);
        /* A host dies with us: once the launcher is gone its worker hands the
         * host's deliveries back, so a host running on would run them twice. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != self)
            _exit(1);
        host_main(c, own, n, board);
    }
    if (pid < 0) {
        char why[128];
        snprintf(why, sizeof why, "runner: fork: %s", strerror(errno));
        LOG_ERROR("launcher: %s", why);
        if (type == CH_L_EXEC)
            report_exec_failure(fd, why);
        else if (type == CH_L_RUNTIME)
            report_runtime_failure(fd, why);
        else
            report_host_exit(sock, id, -1);
        close(fd);
        return;
    }
    close(fd);
    add_child(pid, type == CH_L_HOST, id);
}

static void kill_host(uint64_t id)
{
    for (size_t i = 0; i < nkids; i++)
        if (kids[i].host && kids[i].id == id)
            kill(kids[i].pid, SIGKILL);
}

static void reap(int sock)
{
    int st;
    pid_t p;
    while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
        child *c = find_child(p);
        if (!c)
            continue;   /* an orphan re-parented to us */
        if (c->host)
            report_host_exit(sock, c->id, st);
        *c = kids[--nkids];
    }
}

__attribute__((noreturn)) static void finish(int64_t deadline)
{
    /* Children that did not stop in the grace get SIGKILL; a supervisor killed
     * here leaves its handler tree to us (we are its subreaper), so keep
     * killing until nothing is left. */
    for (size_t i = 0; i < nkids; i++)
        kill(kids[i].pid, SIGKILL);
    if (launcher_kill_children(deadline) < 0)
        LOG_ERROR("launcher: some handler processes would not die");
    _exit(0);
}

void launcher_main(int sock, const char *wdir, host_slot *host_board)
{
    board = host_board;
    util_set_program("herald-launcher");
    /* Our own process group: a terminal's ^C goes to the worker, which then
     * stops us in order; it must not kill handlers behind its back. */
    setpgid(0, 0);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    prctl(PR_SET_NAME, "herald-launcher");
    /* The worker may have ignored or caught signals; children must start clean. */
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            signal(s, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_SETMASK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        LOG_ERROR("launcher: signalfd: %s", strerror(errno));
        _exit(1);
    }
    int fl = fcntl(sock, F_GETFL);
    fcntl(sock, F_SETFL, fl | O_NONBLOCK);

    bool quitting = false;
    int64_t deadline = 0;
    static char cbuf[CMSG_SPACE(sizeof(int) * MAX_RECV_FDS)];
    for (;;) {
        reap(sock);
        if (quitting && nkids == 0)
            finish(mono_ms() + QUIT_GRACE_MS);
        int timeout = -1;
        if (quitting) {
            int64_t left = deadline - mono_ms();
            if (left <= 0)
                finish(mono_ms() + QUIT_GRACE_MS);
            timeout = (int)left;
        }
        struct pollfd pf[2] = { { .fd = sfd, .events = POLLIN },
                                { .fd = quitting ? -1 : sock, .events = POLLIN } };
        if (poll(pf, 2, timeout) < 0 && errno != EINTR) {
            LOG_ERROR("launcher: poll: %s", strerror(errno));
            finish(mono_ms() + QUIT_GRACE_MS);
        }
        if (pf[0].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) > 0)
                ;
        }
        if (!(pf[1].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        for (;;) {   /* drain what main sent */
            if (!wbuf_reserve(&in, 1 << 16)) {
                LOG_ERROR("launcher: out of memory");
                finish(mono_ms() + QUIT_GRACE_MS);
            }
            struct iovec iov = { in.p + in.len, in.cap - in.len };
            struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
                                 .msg_control = cbuf, .msg_controllen = sizeof cbuf };
            ssize_t got = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0 && errno == EAGAIN)
                break;
            if (got <= 0) {     /* main closed its end (or died): stop */
                quitting = true;
                deadline = mono_ms() + QUIT_GRACE_MS;
                break;
            }
            if (mh.msg_flags & MSG_CTRUNC)
                LOG_ERROR("launcher: descriptors lost (control data truncated)");
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                    continue;
                size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < k; i++) {
                    int fd;
                    memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                    push_fd(fd);
                }
            }
            in.len += (size_t)got;
        }
        const char *body;
        uint32_t n;
        bool bad = false;
        /* Parsed even after EOF: main's last words (kills, QUIT) come before it. */
        while (msg_next(&in, &body, &n, &bad)) {
            uint8_t type = (uint8_t)body[0];
            body++, n--;
            switch (type) {
            case CH_L_EXEC:
            case CH_L_HOST:
            case CH_L_RUNTIME:
                if (quitting)
                    close(pop_fd());   /* no new children once stopping */
                else
                    spawn(sock, wdir, type, body, n);
                break;
            case CH_L_KILL: {
                uint64_t id;
                if (chan_kill_get(body, n, &id))
                    kill_host(id);
                break;
            }
            case CH_L_QUIT:
                quitting = true;
                deadline = mono_ms() + QUIT_GRACE_MS;
                break;
            default:
                LOG_ERROR("launcher: unknown request %d", type);
                break;
            }
        }
        if (in.off == in.len && in.cap > (4u << 20))
            wbuf_free(&in);   /* after a large payload: keep later forks cheap */
        if (bad) {
            LOG_ERROR("launcher: malformed request stream");
            quitting = true;
            deadline = mono_ms() + QUIT_GRACE_MS;
        }
    }
}
