#!/bin/sh
# examples/run.sh CONFIG — what `make run` does after building: a broker and
# two workers on CONFIG (and the HTTP gateway when CONFIG has a gateway group),
# in the foreground, until Ctrl-C (or SIGTERM), which stops them all by PID. Workers take their endpoint from CONFIG's worker
# group and resolve handler paths against the repository.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cfg=${1:-$root/config/herald.cfg}
bin=$root/bin

"$bin/heraldctl" check "$cfg" >/dev/null || exit 2
"$bin/herald-broker" -c "$cfg" &
broker=$!
pids=$broker
stop() {
    trap - INT TERM EXIT
    # workers first, so they finish what they hold while the broker is up
    for p in $pids; do [ "$p" = "$broker" ] || kill -TERM "$p" 2>/dev/null; done
    for p in $pids; do [ "$p" = "$broker" ] || wait "$p" 2>/dev/null; done
    kill -TERM "$broker" 2>/dev/null; wait "$broker" 2>/dev/null
    exit 0
}
trap stop INT TERM EXIT

i=0
until "$bin/heraldctl" -c "$cfg" --timeout 0.5 stats >/dev/null 2>&1; do
    i=$((i + 1))
    if ! kill -0 "$broker" 2>/dev/null || [ $i -gt 40 ]; then
        echo "make run: the broker did not start (see the messages above)" >&2
        trap - EXIT; exit 1
    fi
done
for n in 1 2; do
    "$bin/herald-worker" -c "$cfg" --root "$root" &
    pids="$pids $!"
done
console=""
if grep -q '^gateway *=' "$cfg"; then   # the HTTP gateway and its web console, when CONFIG has a gateway group
    "$bin/herald-gateway" -c "$cfg" &
    pids="$pids $!"
    listen=$(sed -n 's/^gateway *=.*listen *= *"\([^"]*\)".*/\1/p' "$cfg")
    console="  web console: http://${listen:-127.0.0.1:7780}/console/
"
fi
cat <<MSG

herald is running (broker pid $broker; workers and gateway: $(echo $pids | cut -d' ' -f2-)).
${console}Try, in another terminal:
  bin/herald-publish events 'hello world'
  bin/herald-publish greetings Ada -a lang=fr
  seq 1000 | bin/herald-publish --lines bench
  bin/heraldctl stats
Ctrl-C stops them all.

MSG
wait "$broker"
