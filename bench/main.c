/* main.c — herald-bench: options, the plan of rows, the machine note, the
 * medians and the one markdown table (docs/PERFORMANCE.md explains it).
 *
 *   herald-bench [--runs N] [--only W1,W2,W3,B1,X1,X2,X2e,X3] [--root DIR] [--tmp DIR]
 *                [--scale F] [--verbose] [--keep] [--attach CMD] [--wrap-broker W]
 *                [--python P] [--node N]
 *
 * Runs go run-major (run 1 of every row, then run 2 …), so that a burst of
 * load from other users of the machine spreads over the rows instead of
 * spoiling one. The table goes to stdout, one progress line per run to stderr.
 * Exit 0 when every run of every row was correct, 1 otherwise, 2 on usage.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

volatile sig_atomic_t bench_interrupted;

static void on_signal(int sig) { (void)sig; bench_interrupted = 1; }

/* The standard workloads of ../shared/peers/README.md, then herald's own:
 * B1 backlog, X1 exec (a shell script), X2 and X3 warm runtimes (Python,
 * Node: `return event` plus one write), and X2e: X2's handler as exec, one
 * python3 per event, the baseline of the X2 / X2e ratio (fewer events: it
 * runs at tens per second). */
static const workload PLAN[] = {
    { "W1", KIND_QUEUE, "fsync", 100000, 1, 2, 64, 256, 0, 1000, 120, LANG_SH, NULL },
    { "W1", KIND_QUEUE, "os", 100000, 1, 2, 64, 256, 0, 1000, 120, LANG_SH, NULL },
    { "W2", KIND_QUEUE, "fsync", 25000, 4, 2, 64, 256, 0, 1000, 120, LANG_SH, NULL },
    { "W2", KIND_QUEUE, "os", 25000, 4, 2, 64, 256, 0, 1000, 120, LANG_SH, NULL },
    { "W3", KIND_LATENCY, "fsync", 20000, 1, 1, 64, 256, 2000, 1, 120, LANG_SH, NULL },
    { "W3", KIND_LATENCY, "os", 20000, 1, 1, 64, 256, 2000, 1, 120, LANG_SH, NULL },
    { "B1", KIND_BACKLOG, "fsync", 1000000, 1, 2, 64, 1024, 0, 1000, 300, LANG_SH, NULL },
    { "X1", KIND_EXEC, "fsync", 2000, 1, 2, 64, 256, 0, 1000, 120, LANG_SH, "bench/x1_handler.sh" },
    { "X2", KIND_RUNTIME, "fsync", 20000, 1, 2, 8, 256, 0, 1000, 120, LANG_PYTHON, "bench/x2_handler.handler" },
    { "X2e", KIND_EXEC, "fsync", 200, 1, 2, 8, 256, 0, 1000, 300, LANG_PYTHON, "bench/x2e_handler.py" },
    { "X3", KIND_RUNTIME, "fsync", 20000, 1, 2, 8, 256, 0, 1000, 120, LANG_NODE, "bench/x3_handler.handler" },
};
#define NPLAN (sizeof PLAN / sizeof PLAN[0])
#define MAX_RUNS 25

static void usage(FILE *f)
{
    fprintf(f, "usage: herald-bench [--runs N] [--only W1,W2,W3,B1,X1,X2,X2e,X3] [--root DIR] [--tmp DIR]\n"
               "                    [--scale F] [--verbose] [--keep] [--attach CMD] [--wrap-broker W]\n"
               "                    [--python P] [--node N]\n"
               "  --runs N    runs per row (default 3); the table shows medians\n"
               "  --only L    rows whose workload is in the comma list L\n"
               "  --root DIR  the herald checkout (default: the one holding this binary)\n"
               "  --tmp DIR   where run dirs go (default $TMPDIR or /tmp; use a real disk)\n"
               "  --scale F   multiply every N by F (smoke tests; figures not comparable)\n"
               "  --verbose   progress of each step; failed runs keep their dir\n"
               "  --keep      keep every run dir\n"
               "  --attach CMD    run `sh -c CMD` over each measured window, with BROKER_PID,\n"
               "                  WORKER_PIDS, RUN_TAG and RUN_DIR set; SIGINT at the window's end\n"
               "                  (e.g. 'perf record -g -o /tmp/$RUN_TAG.data -p $BROKER_PID')\n"
               "  --wrap-broker W put the words W before the broker's command line\n"
               "                  (e.g. 'valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%%p')\n"
               "  --python P, --node N  the interpreters of X2, X2e and X3 (default: python3 and node on\n"
               "                  PATH, resolved to the executable they run as)\n");
}

/* --- the machine ----------------------------------------------------------- */

static void read_line(const char *path, const char *prefix, char *out, size_t cap)
{
    FILE *f = fopen(path, "re");
    char line[512];
    out[0] = '\0';
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        if (prefix && strncmp(line, prefix, strlen(prefix)))
            continue;
        char *v = prefix ? strchr(line, ':') : line;
        v = v ? v + (prefix ? 1 : 0) : line;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t l = strcspn(v, "\n");
        l = l < cap - 1 ? l : cap - 1;
        memcpy(out, v, l);
        out[l] = '\0';
        break;
    }
    fclose(f);
}

/* The mount holding dir (longest mount point that prefixes it): source, type. */
static void disk_of(const char *dir, char *out, size_t cap)
{
    char real[PATH_MAX], line[1024], best_mp[PATH_MAX] = "", best[600] = "unknown";
    if (!realpath(dir, real))
        snprintf(real, sizeof real, "%s", dir);
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            /* id parent maj:min root mountpoint opts … - fstype source superopts */
            char mp[PATH_MAX], fstype[64], src[256];
            char *dash = strstr(line, " - ");
            if (!dash || sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1 ||
                sscanf(dash + 3, "%63s %255s", fstype, src) != 2)
                continue;
            size_t l = strlen(mp);
            if (strncmp(real, mp, l) || (real[l] != '/' && real[l] != '\0' && strcmp(mp, "/")))
                continue;
            if (l >= strlen(best_mp)) {
                snprintf(best_mp, sizeof best_mp, "%s", mp);
                snprintf(best, sizeof best, "%s (%s, mounted on %s)", src, fstype, mp);
            }
        }
        fclose(f);
    }
    snprintf(out, cap, "%s", best);
}

static void loadavg(char *out, size_t cap)
{
    char l[128];
    read_line("/proc/loadavg", NULL, l, sizeof l);
    double a = 0, b = 0, c = 0;
    sscanf(l, "%lf %lf %lf", &a, &b, &c);
    snprintf(out, cap, "%.2f, %.2f, %.2f", a, b, c);
}

/* The first line `cmd` prints, or "" (stderr discarded). */
static void first_line(const char *cmd, char *out, size_t cap)
{
    char full[800];
    snprintf(full, sizeof full, "%s 2>/dev/null", cmd);
    FILE *p = popen(full, "re");
    out[0] = '\0';
    if (p) {
        if (!fgets(out, (int)cap, p))
            out[0] = '\0';
        out[strcspn(out, "\n")] = '\0';
        pclose(p);
    }
}

/* The executable the interpreter `given` (python3, node, or a path) runs as,
 * and its version. Runtime and exec rows name that executable directly, so
 * that a version manager's shim (pyenv's is a bash script: 0.4 s a start) is
 * not measured. */
static void interpreter(wl_lang lang, const char *given, char *path, size_t cap, char *version, size_t vcap)
{
    char line[600], cmd[700];   /* given: a path, up to PATH_MAX in theory; ours are short */
    if (lang == LANG_NODE)
        snprintf(cmd, sizeof cmd, "'%s' -p 'process.execPath + \" \" + process.version'", given);
    else
        snprintf(cmd, sizeof cmd, "'%s' -c 'import sys; print(sys.executable, sys.version.split()[0])'", given);
    first_line(cmd, line, sizeof line);
    char *sp = strrchr(line, ' ');
    path[0] = version[0] = '\0';
    if (!sp || line[0] != '/')
        return;
    *sp = '\0';
    snprintf(path, cap, "%s", line);
    snprintf(version, vcap, "%s", sp + 1);
}

static void git_rev(const char *root, char *out, size_t cap)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "git -C '%s' rev-parse --short HEAD 2>/dev/null", root);
    FILE *p = popen(cmd, "re");
    out[0] = '\0';
    if (p) {
        if (fgets(out, (int)cap, p))
            out[strcspn(out, "\n")] = '\0';
        pclose(p);
    }
    if (!out[0])
        snprintf(out, cap, "unknown");
}

/* --- medians and the table ------------------------------------------------- */

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    double med, lo, hi;
    int n;
} stat3;

/* median [min–max] of field f over the ok runs */
static stat3 over(const result *rs, int nr, double (*f)(const result *))
{
    double v[MAX_RUNS];
    int n = 0;
    for (int i = 0; i < nr; i++)
        if (rs[i].ok)
            v[n++] = f(&rs[i]);
    stat3 s = { NAN, NAN, NAN, n };
    if (!n)
        return s;
    qsort(v, (size_t)n, sizeof v[0], cmp_d);
    s.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    s.lo = v[0];
    s.hi = v[n - 1];
    return s;
}

#define FIELD(name, expr) static double name(const result *r) { return (expr); }
FIELD(f_pub, r->pub_rate)
FIELD(f_e2e, r->e2e_rate)
FIELD(f_p50, r->p50_us)
FIELD(f_p99, r->p99_us)
FIELD(f_p999, r->p999_us)
FIELD(f_max, r->max_us)
FIELD(f_broker, r->cpu.broker)
FIELD(f_workers, r->cpu.worker + r->cpu.launcher + r->cpu.hosts + r->cpu.exec)
FIELD(f_rss, r->rss_mib)
FIELD(f_hwm, r->hwm_mib)
FIELD(f_rss2, r->rss_restart_mib)
FIELD(f_db, r->db_mib)
FIELD(f_stop, r->stop_s)
FIELD(f_ready, r->ready_s)
FIELD(f_cpu_worker, r->cpu.worker)
FIELD(f_cpu_launcher, r->cpu.launcher)
FIELD(f_cpu_exec, r->cpu.exec)
FIELD(f_cpu_sup, r->cpu.supervisors)
FIELD(f_cpu_hand, r->cpu.handlers)
FIELD(f_cpu_hand_own, r->cpu.handlers_own)
FIELD(f_cpu_prod, r->cpu.producer)
FIELD(f_bpub, r->broker_pub_cpu)
FIELD(f_bdrain, r->cpu.broker - r->broker_pub_cpu)
FIELD(f_init, r->init_ms)
FIELD(f_steady, r->steady_rate)
FIELD(f_cold, (double)r->cold_starts)

/* "12,345" */
static const char *grouped(double v, char *buf, size_t cap)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.0f", v);
    size_t len = strlen(tmp), o = 0;
    for (size_t i = 0; i < len && o + 2 < cap; i++) {
        if (i && (len - i) % 3 == 0 && tmp[i - 1] != '-')
            buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
    return buf;
}

/* a cell: "median [min–max]" (rates: grouped integers; else `prec` decimals) */
static const char *cell(stat3 s, int prec, bool range, char *buf, size_t cap)
{
    if (!s.n || isnan(s.med))
        return snprintf(buf, cap, "–"), buf;
    char a[24], b[24], c[24];
    if (prec < 0) {
        grouped(s.med, a, sizeof a);
        grouped(s.lo, b, sizeof b);
        grouped(s.hi, c, sizeof c);
    } else {
        snprintf(a, sizeof a, "%.*f", prec, s.med);
        snprintf(b, sizeof b, "%.*f", prec, s.lo);
        snprintf(c, sizeof c, "%.*f", prec, s.hi);
    }
    if (range && s.n > 1 && cap >= 3 * sizeof a + 8)
        snprintf(buf, cap, "%s [%s–%s]", a, b, c);
    else
        snprintf(buf, cap, "%s", a);
    return buf;
}

static void print_row(const workload *w, const result *rs, int nr)
{
    int ok = 0;
    long long missing = 0, dup = 0;
    for (int i = 0; i < nr; i++) {
        ok += rs[i].ok;
        missing += rs[i].missing;
        dup += rs[i].dup;
    }
    char c1[80], c2[80], c3[64], c4[64], c5[64], c6[40], c7[40], notes[900] = "", a[40], b[40], c[40], d[40];
    bool lat = w->kind == KIND_LATENCY;
    if (w->kind == KIND_LATENCY) {
        snprintf(notes, sizeof notes, "paced %.0f/s, one publish at a time; achieved %s ev/s; max %s µs", w->rate,
                 cell(over(rs, nr, f_pub), -1, false, a, sizeof a), cell(over(rs, nr, f_max), 0, false, b, sizeof b));
    } else if (w->kind == KIND_BACKLOG) {
        snprintf(notes, sizeof notes,
                 "no workers while publishing. After it: broker RSS %s MiB (peak %s), data_dir %s MiB incl. WAL. "
                 "Restart: SIGTERM→exit %s s, exec→`heraldctl stats` answers %s s, RSS then %s MiB. "
                 "End-to-end = drain: %d workers started → last event handled. Broker CPU: publish %s s, drain %s s",
                 cell(over(rs, nr, f_rss), 1, false, a, sizeof a), cell(over(rs, nr, f_hwm), 1, false, b, sizeof b),
                 cell(over(rs, nr, f_db), 0, false, c, sizeof c), cell(over(rs, nr, f_stop), 2, false, d, sizeof d),
                 cell(over(rs, nr, f_ready), 2, false, c4, sizeof c4), cell(over(rs, nr, f_rss2), 1, false, c5, sizeof c5),
                 w->workers, cell(over(rs, nr, f_bpub), 2, false, c6, sizeof c6),
                 cell(over(rs, nr, f_bdrain), 2, false, c7, sizeof c7));
    } else if (w->kind == KIND_EXEC) {
        /* where the time goes, as CPU ms per invocation and share of the total */
        double inv = (double)w->n;
        double wk = over(rs, nr, f_cpu_worker).med, la = over(rs, nr, f_cpu_launcher).med,
               ex = over(rs, nr, f_cpu_exec).med, br = over(rs, nr, f_broker).med,
               su = over(rs, nr, f_cpu_sup).med, ha = over(rs, nr, f_cpu_hand).med,
               pr = over(rs, nr, f_cpu_prod).med;
        bool split = true, diff = false;
        for (int i = 0; i < nr; i++) {
            split &= !rs[i].ok || rs[i].cpu.split;
            diff |= rs[i].ok && rs[i].cpu.exec_by_difference;
        }
        double tot = wk + la + ex + br + pr;
        if (ok && tot > 0) {
            char part[300];
            if (split)
                snprintf(part, sizeof part, "handler processes %.2f ms (%.0f%%), supervisors %.2f ms (%.0f%%)",
                         ha * 1e3 / inv, 100 * ha / tot, su * 1e3 / inv, 100 * su / tot);
            else
                snprintf(part, sizeof part, "supervisors + handler processes %.2f ms (%.0f%%)", ex * 1e3 / inv,
                         100 * ex / tot);
            snprintf(notes, sizeof notes,
                     "%s; CPU per invocation %.2f ms: %s, launcher %.2f ms (%.0f%%), "
                     "herald-worker %.2f ms (%.0f%%), broker %.2f ms (%.0f%%), producer %.2f ms (%.0f%%)",
                     w->lang == LANG_SH ? "`/bin/true`-like script" : "X2's Python handler, one python3 per event",
                     tot * 1e3 / inv, part, la * 1e3 / inv, 100 * la / tot, wk * 1e3 / inv, 100 * wk / tot,
                     br * 1e3 / inv, 100 * br / tot, pr * 1e3 / inv, 100 * pr / tot);
            if (diff) {
                size_t l = strlen(notes);
                snprintf(notes + l, sizeof notes - l, " (supervisors + handlers: the machine's busy time "
                         "less the other processes, as /proc undercounts short-lived children)");
            }
            if (split) {   /* without other users' work, which the busy time includes */
                size_t l = strlen(notes);
                snprintf(notes + l, sizeof notes - l, "; a handler process's own CPU (exit records) %.2f ms",
                         over(rs, nr, f_cpu_hand_own).med * 1e3 / inv);
            }
        }
    } else if (w->kind == KIND_RUNTIME) {
        /* where the time goes, as CPU µs per event and share of the total */
        double ev = (double)w->n;
        double wk = over(rs, nr, f_cpu_worker).med, la = over(rs, nr, f_cpu_launcher).med,
               su = over(rs, nr, f_cpu_sup).med, ha = over(rs, nr, f_cpu_hand).med,
               ex = over(rs, nr, f_cpu_exec).med, br = over(rs, nr, f_broker).med,
               pr = over(rs, nr, f_cpu_prod).med;
        double tot = wk + la + ex + br + pr;
        if (ok && tot > 0)
            snprintf(notes, sizeof notes,
                     "%s runtime client, `return event` + one write; second half of the events %s/s; "
                     "CPU per event %.0f µs: runtime processes "
                     "%.0f µs (%.0f%%), their supervisors %.0f µs (%.0f%%), herald-worker %.0f µs (%.0f%%), "
                     "launcher %.0f µs, broker %.0f µs (%.0f%%), producer %.0f µs (%.0f%%); "
                     "%s cold starts, init %s ms mean",
                     w->lang == LANG_NODE ? "Node" : "Python", cell(over(rs, nr, f_steady), -1, true, c1, sizeof c1),
                     tot * 1e6 / ev, ha * 1e6 / ev, 100 * ha / tot,
                     su * 1e6 / ev, 100 * su / tot, wk * 1e6 / ev, 100 * wk / tot, la * 1e6 / ev,
                     br * 1e6 / ev, 100 * br / tot, pr * 1e6 / ev, 100 * pr / tot,
                     cell(over(rs, nr, f_cold), 0, false, a, sizeof a), cell(over(rs, nr, f_init), 0, false, b, sizeof b));
    }
    if (ok < nr) {
        for (int i = 0; i < nr; i++)
            if (!rs[i].ok) {
                size_t l = strlen(notes);
                snprintf(notes + l, sizeof notes - l, "%sFAILED run %d: %s", l ? "; " : "", i + 1, rs[i].why);
                break;
            }
    }
    char nsub[40], n1[32];
    if (w->subs > 1)
        snprintf(nsub, sizeof nsub, "%s × %d", grouped((double)w->n, n1, sizeof n1), w->subs);
    else
        snprintf(nsub, sizeof nsub, "%s", grouped((double)w->n, n1, sizeof n1));
    printf("| %s | %s | %s | %d B | %d × %d | %d/%d | %lld / %lld | %s | %s | %s | %s | %s | %s | %s | %s |\n",
           w->name, w->durability, nsub, w->payload, w->workers, w->inflight, ok, nr, missing, dup,
           cell(over(rs, nr, f_pub), -1, true, c1, sizeof c1),
           cell(over(rs, nr, f_e2e), -1, true, c2, sizeof c2),
           lat ? cell(over(rs, nr, f_p50), 0, true, c3, sizeof c3) : "–",
           lat ? cell(over(rs, nr, f_p99), 0, true, c4, sizeof c4) : "–",
           lat ? cell(over(rs, nr, f_p999), 0, true, c5, sizeof c5) : "–",
           cell(over(rs, nr, f_broker), 2, false, c6, sizeof c6),
           cell(over(rs, nr, f_workers), 2, false, c7, sizeof c7), notes);
}

/* --- main ------------------------------------------------------------------ */

static int exists(const char *path, bool exec)
{
    return access(path, exec ? X_OK : R_OK) == 0;
}

/* name is one of the comma list's items (case-insensitive: x2e = X2e) */
static bool listed(const char *list, const char *name)
{
    size_t l = strlen(name);
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        if (n == l && !strncasecmp(p, name, l))
            return true;
        p += n + (p[n] == ',');
    }
    return false;
}

/* The median end-to-end rate of row `name`, or NAN when it is not in the plan. */
static double row_e2e(const workload *plan, int np, result (*res)[MAX_RUNS], int runs, const char *name)
{
    for (int i = 0; i < np; i++)
        if (!strcmp(plan[i].name, name))
            return over(res[i], runs, f_e2e).med;
    return NAN;
}

/* Lines under the table: the warm/exec ratio and the runtimes' cold starts. */
static void print_runtime_notes(const workload *plan, int np, result (*res)[MAX_RUNS], int runs)
{
    double x2 = row_e2e(plan, np, res, runs, "X2"), x2e = row_e2e(plan, np, res, runs, "X2e");
    char a[40], b[40];
    bool any = false;
    if (!isnan(x2) && !isnan(x2e) && x2e > 0) {
        printf("\nX2 / X2e, the same Python handler as a warm runtime and as exec, in this run: %s / %s = %.0f×.\n",
               grouped(x2, a, sizeof a), grouped(x2e, b, sizeof b), x2 / x2e);
        any = true;
    }
    for (int i = 0; i < np; i++) {
        if (plan[i].kind != KIND_RUNTIME)
            continue;
        stat3 init = over(res[i], runs, f_init), cold = over(res[i], runs, f_cold);
        if (!init.n)
            continue;
        if (!any)
            printf("\n");
        any = true;
        printf("Cold start of %s's %s runtime (spawn → first /next; `heraldctl stats` init_ms, the mean of a run): "
               "%.0f ms [%.0f–%.0f], over %.0f processes a run.\n",
               plan[i].name, plan[i].lang == LANG_NODE ? "Node" : "Python", init.med, init.lo, init.hi, cold.med);
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "runs", required_argument, NULL, 'r' }, { "only", required_argument, NULL, 'o' },
        { "root", required_argument, NULL, 'R' }, { "tmp", required_argument, NULL, 't' },
        { "scale", required_argument, NULL, 's' }, { "verbose", no_argument, NULL, 'v' },
        { "keep", no_argument, NULL, 'k' },       { "help", no_argument, NULL, 'h' },
        { "attach", required_argument, NULL, 'A' }, { "wrap-broker", required_argument, NULL, 'W' },
        { "python", required_argument, NULL, 'P' }, { "node", required_argument, NULL, 'N' },
        { NULL, 0, NULL, 0 },
    };
    bench_env e;
    memset(&e, 0, sizeof e);
    int runs = 3, c;
    double scale = 1.0;
    const char *only = NULL, *want_python = "python3", *want_node = "node";
    char root[PATH_MAX] = "";
    while ((c = getopt_long(argc, argv, "r:o:R:t:s:vkh", opts, NULL)) != -1) {
        switch (c) {
        case 'r': runs = atoi(optarg); break;
        case 'o': only = optarg; break;
        case 'R':
            if (!realpath(optarg, root)) {
                fprintf(stderr, "herald-bench: --root %s: no such directory\n", optarg);
                return 2;
            }
            break;
        case 't': e.tmp_parent = optarg; break;
        case 's': scale = atof(optarg); break;
        case 'v': e.verbose = true; break;
        case 'k': e.keep = true; break;
        case 'A': e.attach = optarg; break;
        case 'W': e.wrap_broker = optarg; break;
        case 'P': want_python = optarg; break;
        case 'N': want_node = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || runs < 1 || runs > MAX_RUNS || scale <= 0 || scale > 10) {
        usage(stderr);
        return 2;
    }
    if (!root[0]) {   /* ROOT/bin/herald-bench */
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n <= 0) {
            fprintf(stderr, "herald-bench: cannot find the checkout; give --root\n");
            return 2;
        }
        exe[n] = '\0';
        *strrchr(exe, '/') = '\0';
        char *up = strrchr(exe, '/');
        if (up)
            *up = '\0';
        snprintf(root, sizeof root, "%s", exe);
    }
    e.root = root;
    if (!e.tmp_parent)
        e.tmp_parent = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(e.broker, sizeof e.broker, "%s/bin/herald-broker", root);
    snprintf(e.worker, sizeof e.worker, "%s/bin/herald-worker", root);
    snprintf(e.ctl, sizeof e.ctl, "%s/bin/heraldctl", root);
    snprintf(e.handler_so, sizeof e.handler_so, "%s/build/bench/libbench_handler.so", root);
    if (!exists(e.broker, true) || !exists(e.worker, true) || !exists(e.ctl, true) ||
        !exists(e.handler_so, false)) {
        fprintf(stderr, "herald-bench: %s is not a built checkout (run `make bench` there)\n", root);
        return 2;
    }

    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* the plan */
    workload plan[NPLAN];
    int np = 0;
    for (size_t i = 0; i < NPLAN; i++) {
        if (only && !listed(only, PLAN[i].name))
            continue;
        plan[np] = PLAN[i];
        plan[np].n = (int64_t)llround((double)PLAN[i].n * scale);
        if (plan[np].n < 10)
            plan[np].n = 10;
        np++;
    }
    if (!np) {
        fprintf(stderr, "herald-bench: --only %s selects nothing\n", only);
        return 2;
    }
    char pyver[64] = "", nodever[64] = "", interps[1400] = "";
    for (int i = 0; i < np; i++) {
        char *path = plan[i].lang == LANG_NODE ? e.node : e.python;
        char *ver = plan[i].lang == LANG_NODE ? nodever : pyver;
        if (plan[i].lang != LANG_SH && !path[0])
            interpreter(plan[i].lang, plan[i].lang == LANG_NODE ? want_node : want_python, path,
                        sizeof e.python, ver, sizeof pyver);
    }
    if (e.python[0])
        snprintf(interps, sizeof interps, " python3: %s (%s).", e.python, pyver);
    if (e.node[0])
        snprintf(interps + strlen(interps), sizeof interps - strlen(interps), " node: %s (%s).", e.node, nodever);

    char model[256], load0[64], load1[64], disk[700], rev[64], when[64];
    struct utsname u;
    uname(&u);
    read_line("/proc/cpuinfo", "model name", model, sizeof model);
    disk_of(e.tmp_parent, disk, sizeof disk);
    git_rev(root, rev, sizeof rev);
    loadavg(load0, sizeof load0);
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    fprintf(stderr, "herald-bench: %d rows × %d runs; load average %s\n", np, runs, load0);

    static result res[NPLAN][MAX_RUNS];
    uint64_t t0 = mono_ns();
    for (int r = 0; r < runs && !bench_interrupted; r++)
        for (int i = 0; i < np && !bench_interrupted; i++) {
            result *x = &res[i][r];
            workload_run(&e, &plan[i], r + 1, x);
            char a[40], b[40];
            fprintf(stderr, "herald-bench: %s %-5s run %d/%d: %s publish %s ev/s, e2e %s /s", plan[i].name,
                    plan[i].durability, r + 1, runs, x->ok ? "ok" : "FAILED", grouped(x->pub_rate, a, sizeof a),
                    grouped(x->e2e_rate, b, sizeof b));
            if (plan[i].kind == KIND_LATENCY)
                fprintf(stderr, ", p50/p99/p99.9 %.0f/%.0f/%.0f µs", x->p50_us, x->p99_us, x->p999_us);
            if (plan[i].kind == KIND_RUNTIME)
                fprintf(stderr, ", second half %s /s, %lld cold starts, init %.0f ms mean",
                        grouped(x->steady_rate, a, sizeof a), (long long)x->cold_starts, x->init_ms);
            if (plan[i].kind == KIND_BACKLOG)
                fprintf(stderr, ", RSS %.1f MiB, db %.0f MiB, stop %.2f s, ready %.2f s, broker CPU publish %.2f s",
                        x->rss_mib, x->db_mib, x->stop_s, x->ready_s, x->broker_pub_cpu);
            fprintf(stderr, ", missing %lld, dup %lld, CPU broker %.2f s workers %.2f s producer %.2f s (%.1f s)%s%s\n",
                    (long long)x->missing, (long long)x->dup, x->cpu.broker,
                    x->cpu.worker + x->cpu.launcher + x->cpu.hosts + x->cpu.exec, x->cpu.producer, x->wall_s,
                    x->ok ? "" : ": ", x->ok ? "" : x->why);
            if (e.verbose)
                fprintf(stderr, "herald-bench:   CPU s: herald-worker %.2f, launcher %.2f, hosts %.2f, "
                                "exec %.2f%s (supervisors %.2f in %ld, handlers %.2f in %ld, split %s)\n",
                        x->cpu.worker, x->cpu.launcher, x->cpu.hosts, x->cpu.exec,
                        x->cpu.exec_by_difference ? " by difference" : "", x->cpu.supervisors,
                        x->cpu.nsupervisors, x->cpu.handlers, x->cpu.nhandlers, x->cpu.split ? "yes" : "no");
        }
    if (bench_interrupted) {
        fprintf(stderr, "herald-bench: interrupted; everything it started is stopped\n");
        return 1;
    }
    loadavg(load1, sizeof load1);
    double total = since_s(t0);

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("herald %s, %s. Machine: %ld CPUs (%s), kernel %s, run dirs on %s. "
           "Load average (1, 5, 15 min) %s at the start, %s at the end; %.0f s in all.%s\n\n",
           rev, when, ncpu, model, u.release, disk, load0, load1, total, interps);
    printf("Median [min–max] of the correct runs out of %d per row. publish = N / (first publish → all confirmed); "
           "end-to-end = deliveries / (first publish → last new delivery handled); CPU = seconds over that window.\n\n",
           runs);
    printf("| workload | durability | N | payload | workers × in-flight | ok runs | missing / dup | publish ev/s | "
           "end-to-end deliveries/s | p50 µs | p99 µs | p99.9 µs | broker CPU s | workers CPU s | notes |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    int all_ok = 1;
    for (int i = 0; i < np; i++) {
        print_row(&plan[i], res[i], runs);
        for (int r = 0; r < runs; r++)
            all_ok &= res[i][r].ok;
    }
    print_runtime_notes(plan, np, res, runs);
    return all_ok ? 0 : 1;
}
