#!/usr/bin/env bash
# Runs the Runtime API clients of examples/runtimes/ (Python and Node) against
# tests/runtimes/mock_api.py: every case's answers are checked by the mock, and
# this script exits non-zero on any mismatch.
#   tests/runtimes/run_clients.sh            the cases
#   tests/runtimes/run_clients.sh --bench N  instead: the echo handler, N events:
#                                            events/s and CPU µs per event of each client
#   ONLY=REGEX tests/runtimes/run_clients.sh the cases whose tag matches
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
mock="$here/mock_api.py"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/herald-rt.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    [ -n "${KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
bench=0
[ "${1:-}" = --bench ] && bench=${2:-20000}

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

client_cmd() { # LANG -> the client's command line
    case $1 in
        python) echo "python3 $top/examples/runtimes/python/bootstrap.py" ;;
        node) echo "node $top/examples/runtimes/node/bootstrap.js" ;;
    esac
}

# start_mock LANG EVENTS TAG [mock args...]: sets mock_pid, port
start_mock() {
    local lang=$1 events=$2 tag=$3; shift 3
    rm -f "$tmp/$tag.port"
    python3 "$mock" --events "$events" --out "$tmp/$tag.out" --port-file "$tmp/$tag.port" \
        --lang "$lang" "$@" 2>"$tmp/$tag.mock.err" &
    mock_pid=$!
    pids+=("$mock_pid")
    while [ ! -s "$tmp/$tag.port" ]; do # the port file appears whole (renamed)
        kill -0 "$mock_pid" 2>/dev/null || { cat "$tmp/$tag.mock.err"; return 1; }
        sleep 0.02
    done
    port=$(cat "$tmp/$tag.port")
}

# wait_gone PID: waits (up to 5 s) for a process to end, then kills it; echoes its status
wait_gone() {
    local pid=$1 i
    for i in $(seq 250); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.02
    done
    kill "$pid" 2>/dev/null
    wait "$pid"
    echo $?
}

# run_case LANG TAG EVENTS HANDLER ROOT CLIENT_EXIT(any|nonzero)
run_case() {
    local lang=$1 tag=$2 events=$3 handler=$4 root=$5 want_exit=$6
    [[ $tag =~ ${ONLY:-.} ]] || return 0
    start_mock "$lang" "$events" "$tag" --timeout 20 || { fail "$tag: the mock did not start"; return; }
    (cd "$root" && exec env AWS_LAMBDA_RUNTIME_API="127.0.0.1:$port" _HANDLER="$handler" \
        LAMBDA_TASK_ROOT="$root" AWS_LAMBDA_FUNCTION_NAME=fn-test \
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128 AWS_LAMBDA_FUNCTION_VERSION='$LATEST' \
        $(client_cmd "$lang") >"$tmp/$tag.stdout" 2>"$tmp/$tag.stderr") &
    local client_pid=$!
    pids+=("$client_pid")
    wait "$mock_pid"
    local mock_rc=$?
    local client_rc
    client_rc=$(wait_gone "$client_pid")
    if [ "$mock_rc" -ne 0 ]; then
        fail "$tag: the mock says (exit $mock_rc):"
        sed 's/^/    /' "$tmp/$tag.mock.err"
        echo "    client stderr:"; sed 's/^/    /' "$tmp/$tag.stderr" | head -20
    elif [ "$want_exit" = nonzero ] && [ "$client_rc" -eq 0 ]; then
        fail "$tag: the client exited 0 after an init error"
    else
        echo "ok   $tag ($(wc -l <"$tmp/$tag.out") answers checked)"
    fi
}

[ "$bench" -eq 0 ] && for lang in python node; do
    hd="$here/$lang"
    run_case "$lang" "$lang-cases" "$here/events.json" th.handler "$hd" any
    if [[ $lang-cases =~ ${ONLY:-.} ]] && ! grep -q '^a line from the handler$' "$tmp/$lang-cases.stdout"; then
        fail "$lang-cases: the handler's print did not reach stdout"
    fi
    run_case "$lang" "$lang-subdir" "$here/events_deep.json" sub/deep.handler "$hd" any
    run_case "$lang" "$lang-import-error" "$here/init_import.json" bad_import.handler "$hd" nonzero
    run_case "$lang" "$lang-no-module" "$here/init_import.json" no_such_file.handler "$hd" nonzero
    run_case "$lang" "$lang-no-handler" "$here/init_missing.json" th.no_such_function "$hd" nonzero
    run_case "$lang" "$lang-malformed" "$here/init_malformed.json" th "$hd" nonzero
    run_case "$lang" "$lang-example-echo" "$here/events_echo.json" echo.handler \
        "$top/examples/runtimes/$lang" any
    run_case "$lang" "$lang-example-app" "$here/events_app.json" app.handler \
        "$top/examples/runtimes/$lang" any
done
# The mock itself: a wrong answer must be caught.
if [ "$bench" -eq 0 ] && [[ mock-self-test =~ ${ONLY:-.} ]]; then
    python3 - "$here/events.json" "$tmp/wrong.json" <<'EOF'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["events"] = [e for e in spec["events"] if e["name"] == "json"]
spec["events"][0]["expect"]["json"]["n"] = 2
json.dump(spec, open(sys.argv[2], "w"))
EOF
    start_mock python "$tmp/wrong.json" mock-self-test --timeout 20 || fail "mock-self-test: no start"
    (cd "$here/python" && exec env AWS_LAMBDA_RUNTIME_API="127.0.0.1:$port" _HANDLER=th.handler \
        python3 "$top/examples/runtimes/python/bootstrap.py" >/dev/null 2>&1) &
    self_client=$!
    pids+=("$self_client")
    wait "$mock_pid"
    self_rc=$?
    wait_gone "$self_client" >/dev/null
    if [ "$self_rc" -eq 1 ] && grep -q 'MISMATCH' "$tmp/mock-self-test.mock.err"; then
        echo "ok   mock-self-test (a wrong answer is caught)"
    else
        fail "mock-self-test: the mock did not catch a wrong answer (exit $self_rc)"
    fi
fi
if [ "$bench" -eq 0 ]; then
    run_case node node-esm "$here/events_esm.json" esm.handler "$here/node" any
    run_case node node-uncaught "$here/events_uncaught.json" crash.handler "$here/node" nonzero
fi

if [ "$bench" -gt 0 ]; then
    # CPU per event = (CPU of a run of N events - CPU of a run of 1) / (N - 1):
    # the interpreter's start and the handler's import cancel out.
    cpu_run() { # LANG N -> "cpu_seconds events_per_second"
        local lang=$1 n=$2 tag="bench-$1-$2"
        start_mock "$lang" "$here/events_echo.json" "$tag" --repeat "$n" --timeout 300 || return 1
        python3 - "$port" "$top/examples/runtimes/$lang" $(client_cmd "$lang") <<'EOF'
import os, resource, subprocess, sys
port, root, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
env = dict(os.environ, AWS_LAMBDA_RUNTIME_API="127.0.0.1:" + port, _HANDLER="echo.handler",
           LAMBDA_TASK_ROOT=root, AWS_LAMBDA_FUNCTION_NAME="bench",
           AWS_LAMBDA_FUNCTION_MEMORY_SIZE="128", AWS_LAMBDA_FUNCTION_VERSION="$LATEST")
p = subprocess.Popen(cmd, cwd=root, env=env, stderr=subprocess.DEVNULL)
p.wait()
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print("%.6f" % (ru.ru_utime + ru.ru_stime))
sys.stderr.write("client user %.3f sys %.3f\n" % (ru.ru_utime, ru.ru_stime))
EOF
        wait "$mock_pid"
        sed -n 's/.*(\([0-9]*\) events\/s).*/\1/p' "$tmp/$tag.mock.err" >"$tmp/$tag.rate"
    }
    for lang in python node; do
        one=$(cpu_run "$lang" 1) || { fail "bench $lang"; continue; }
        many=$(cpu_run "$lang" "$bench") || { fail "bench $lang"; continue; }
        rate=$(cat "$tmp/bench-$lang-$bench.rate")
        python3 -c "import sys; one, many, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]); \
print('bench %-6s echo: %d events, %s events/s (the mock is the bottleneck), %.1f us CPU per event in the client' \
% (sys.argv[4], n, sys.argv[5], (many - one) / (n - 1) * 1e6))" "$one" "$many" "$bench" "$lang" "$rate"
    done
fi

if [ "$failures" -ne 0 ]; then
    echo "$failures failure(s)"
    exit 1
fi
echo "all runtime client cases passed"
