#!/bin/sh
# peers.sh — `make bench-peers`: the peers' own harness (../shared/peers/run.sh)
# on Redis, RabbitMQ and NATS and on this checkout, in one session on one
# machine, then the ratios herald/peer (../shared/peers/README.md: compare in
# the same run, as a ratio, never against the absolute figures of another day).
#
# Like with like: herald "fsync" ↔ Redis "always" and RabbitMQ durable (they
# answer after fsync), herald "os" ↔ Redis "everysec" and NATS file storage.
# Pairs run back to back, so that a burst of load from elsewhere hits both
# sides of a ratio. RUNS reps each (default 3; the figure is the median of the
# ok reps). run.sh installs a missing peer (and its client library) from
# Debian when we are root. PEERS="redis" limits the run to Redis. Raw lines
# and logs go to a temp dir, removed at the end unless KEEP=1.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${PEERS_DIR:-$root/../shared/peers}
reps=${RUNS:-3}
[ -x "$peers/run.sh" ] || { echo "bench-peers: no $peers/run.sh (set PEERS_DIR)" >&2; exit 2; }
[ -x "$root/bin/herald-broker" ] || { echo "bench-peers: build first (make)" >&2; exit 2; }
out=$(mktemp -d "${TMPDIR:-/tmp}/herald-bench-peers.XXXXXX") || exit 1
if [ "${KEEP:-0}" = 1 ]; then echo "bench-peers: raw lines in $out" >&2; else trap 'rm -rf "$out"' EXIT; fi
trap 'exit 1' INT TERM

load0=$(cut -d' ' -f1-3 /proc/loadavg)
one() {   # PEER WORKLOAD MODE
    echo "bench-peers: $1 $2 $3 ($reps reps)" >&2
    PEERS_OUT="$out" HERALD_ROOT="$root" "$peers/run.sh" "$1" "$2" "$3" "$reps" >"$out/out.txt" 2>>"$out/log"
    grep 'peer=' "$out/out.txt" >>"$out/raw.txt" || echo "bench-peers: $1 $2 $3 gave no result (see $out/log)" >&2
}
others=${PEERS:-redis rabbitmq nats}
one redis W1 always;   one herald W1 fsync
one redis W1 everysec; one herald W1 os
one redis W2 always;   one herald W2 fsync
one redis W3 always;   one herald W3 fsync
case " $others " in *" rabbitmq "*) one rabbitmq W1 durable; one rabbitmq W2 durable;; esac
case " $others " in *" nats "*) one nats W1 file; one nats W2 file; one herald W2 os;; esac
load1=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "Peers' harness, $reps reps each, median of the ok reps; load average $load0 at the start, $load1 at the end."
echo "Latency ratios: lower is better for herald; rate ratios: higher is better."
echo
echo "| workload | herald mode ↔ peer mode | figure | peer | herald | herald / peer |"
echo "|---|---|---|---|---|---|"
# mawk has no asort: medians by insertion sort
awk '
function med(key,   n, i, j, v, a) {
    n = cnt[key]; if (!n) return -1
    for (i = 1; i <= n; i++) { v = val[key, i]; for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]; a[j + 1] = v }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function row(wl, hm, rm, fig, field, nd, peer,   r, h) {
    if (peer == "") peer = "redis"
    r = med(peer SUBSEP wl SUBSEP rm SUBSEP field); h = med("herald" SUBSEP wl SUBSEP hm SUBSEP field)
    if (peer != "redis" && r < 0) return
    printf "| %s | %s ↔ %s %s | %s | %s | %s | %s |\n", wl, hm, peer, rm, fig,
        r < 0 ? "–" : sprintf("%." nd "f", r), h < 0 ? "–" : sprintf("%." nd "f", h),
        (r > 0 && h >= 0) ? sprintf("%.2f", h / r) : "–"
}
{
    delete kv
    for (i = 1; i <= NF; i++) { p = index($i, "="); if (p) kv[substr($i, 1, p - 1)] = substr($i, p + 1) }
    if (kv["status"] != "ok" || kv["missing"] != "0") next
    split("pub_rate e2e_rate lat_p50_us lat_p99_us lat_p999_us", f, " ")
    for (k in f) if (f[k] in kv) { key = kv["peer"] SUBSEP kv["workload"] SUBSEP kv["opt"] SUBSEP f[k]; val[key, ++cnt[key]] = kv[f[k]] }
}
END {
    row("W1", "fsync", "always", "publish ev/s", "pub_rate", 0)
    row("W1", "fsync", "always", "end-to-end deliveries/s", "e2e_rate", 0)
    row("W1", "os", "everysec", "publish ev/s", "pub_rate", 0)
    row("W1", "os", "everysec", "end-to-end deliveries/s", "e2e_rate", 0)
    row("W2", "fsync", "always", "publish ev/s", "pub_rate", 0)
    row("W2", "fsync", "always", "end-to-end deliveries/s", "e2e_rate", 0)
    row("W3", "fsync", "always", "p50 µs", "lat_p50_us", 1)
    row("W3", "fsync", "always", "p99 µs", "lat_p99_us", 1)
    row("W3", "fsync", "always", "p99.9 µs", "lat_p999_us", 1)
    row("W1", "fsync", "durable", "end-to-end deliveries/s", "e2e_rate", 0, "rabbitmq")
    row("W2", "fsync", "durable", "end-to-end deliveries/s", "e2e_rate", 0, "rabbitmq")
    row("W1", "os", "file", "end-to-end deliveries/s", "e2e_rate", 0, "nats")
    row("W2", "os", "file", "end-to-end deliveries/s", "e2e_rate", 0, "nats")
}' "$out/raw.txt"
