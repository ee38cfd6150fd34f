#!/bin/sh
# examples/demo.sh — `make demo`: a scripted tour of herald on config/demo.cfg.
# Starts a broker and two workers, publishes a batch with one poison event,
# shows stats and the dead letter, deploys the fixed handler, replays the dead
# letter and shows it succeed; stops everything it started (by PID).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cfg=config/demo.cfg
ctl="bin/heraldctl -c $cfg"
pub="bin/herald-publish --broker tcp://127.0.0.1:7720"
rm -rf var/demo && mkdir -p var/demo
cp examples/demo/thumbnail_v1.sh var/demo/thumbnail.sh

pids=""
cleanup() {
    for p in $pids; do kill -TERM "$p" 2>/dev/null; done
    for p in $pids; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT INT TERM
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
wait_for() {   # wait_for SECONDS COMMAND...: until the command succeeds
    t=$1; shift; i=0
    until "$@" >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -gt $((t * 10)) ] && { echo "demo: gave up waiting for: $*" >&2; exit 1; }
        sleep 0.1
    done
}
dead_count() { $ctl dlq list --function thumbnail --json | grep -o '"id":' | wc -l; }

step "start a broker and two workers"
bin/herald-broker -c $cfg 2> var/demo/broker.log & pids="$pids $!"
wait_for 10 $ctl --timeout 0.5 stats
for n in 1 2; do bin/herald-worker -c $cfg --concurrency 4 2> var/demo/worker$n.log & pids="$pids $!"; done
wait_for 10 sh -c "$ctl workers --json | grep -q '},{'"
$ctl workers

step "publish five uploads (one has a space in its name: thumbnail v1 cannot take it)"
for f in cat.png dog.png "summer holiday.png" logo.png sky.png; do
    printf '%-20s → ' "$f"; $pub uploads "$f" -a type=image
done
$pub uploads "report.pdf" -a type=document >/dev/null   # audit only: the filter keeps it from thumbnail

step "after three attempts with backoff, the poison event is a dead letter"
wait_for 20 sh -c "[ \$($ctl dlq list --function thumbnail --json | grep -o '\"id\":' | wc -l) -ge 1 ]"
wait_for 10 sh -c "$ctl stats --json | grep -q '\"function\":\"thumbnail\",\"ready\":0,\"delayed\":0,\"inflight\":0'"
$ctl stats
step "heraldctl dlq list / dlq show: what failed, how often, and why"
$ctl dlq list
id=$($ctl dlq list --json | sed -n 's/^\[{"id":\([0-9]*\).*/\1/p')
$ctl dlq show "$id"

step "deploy the fix (thumbnail v2) and replay the dead letter onto its own queue"
cp examples/demo/thumbnail_v2.sh var/demo/thumbnail.sh
$ctl dlq replay "$id"
wait_for 20 sh -c "[ \$($ctl dlq list --function thumbnail --json | grep -o '\"id\":' | wc -l) -eq 0 ]"
wait_for 10 sh -c "$ctl stats --json | grep -q '\"function\":\"thumbnail\",\"ready\":0,\"delayed\":0,\"inflight\":0,\"dead\":0,\"succeeded\":5'"
$ctl stats
step "a synchronous invoke, like Lambda's RequestResponse"
$ctl invoke thumbnail "summer holiday.png"

step "done: stopping the workers and the broker"
