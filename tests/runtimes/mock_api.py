#!/usr/bin/env python3
"""A mock AWS Lambda Runtime API (2018-06-01) server for testing runtime clients.

    mock_api.py --events FILE --out FILE --port-file FILE [--lang python|node]
                [--repeat N] [--timeout SECONDS]

Serves the events of FILE one by one on GET /2018-06-01/runtime/invocation/next
(with Lambda's and herald's headers), records every /response, /error and
/init/error as one JSON line in --out, checks each against the event's "expect",
and exits when every event has been answered (or an init error came):
exit 0 if everything matched, 1 on a mismatch, 2 on --timeout.

FILE is {"events": [EVENT...], "init_error": EXPECT?, "connections": N?}
(N: how many TCP connections the client must have opened in all). An EVENT is
  {"name": "json", "body": "raw text" | "json": VALUE, "only": "node"?,
   "headers": {extra or overriding headers}, "deadline_in": ms (default 30000),
   "drop_connection": true (close the connection after answering this one),
   "chunked": true (send the body with Transfer-Encoding: chunked),
   "expect": EXPECT}
and EXPECT is any of
  {"kind": "response"|"error", "json": VALUE (the body, parsed, equals it),
   "subset": {key: VALUE} (those keys of the parsed body equal these; the strings
   "$ID" "$ARN" "$MSGID" "$DEADLINE" "$TRACE" stand for this event's values),
   "errorType": "...", "errorMessage": "...", "stackTrace": "nonempty"|"present",
   "remaining": [lo, hi] (body["remaining"] is a number in [lo, hi]),
   "errorTypeHeader": "..."}
--repeat N serves the first event N times and checks nothing (for benchmarks).
"""
import argparse
import http.server
import json
import os
import sys
import threading
import time

PREFIX = "/2018-06-01/runtime/"


class State:
    def __init__(self, args):
        spec = json.load(open(args.events))
        events = [e for e in spec.get("events", [])
                  if e.get("only") in (None, args.lang)]
        self.repeat = args.repeat
        if self.repeat:
            events = events[:1]
        self.events = events
        self.total = self.repeat or len(events)
        self.init_expect = spec.get("init_error")
        self.served = 0
        self.got_init = False
        self.connections = 0  # TCP connections accepted
        self.connections_at_done = None
        self.want_connections = spec.get("connections")
        self.first_next = None  # monotonic time of the first GET next
        self.answered = 0
        self.pending = {}  # request id -> (event, values)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.failures = []
        self.out = open(args.out, "w")
        self.body_cache = {}
        if self.total == 0 and not self.init_expect:
            self.done.set()

    def fail(self, what):
        self.failures.append(what)
        sys.stderr.write("mock_api: MISMATCH: %s\n" % what)


def event_body(ev):
    if "json" in ev:
        return json.dumps(ev["json"]).encode()
    return ev.get("body", "").encode("utf-8", "surrogateescape")


def check(state, name, expect, kind, body, headers, values):
    """Compare one answer with its expectation; record each difference."""
    if expect is None:
        return
    if expect.get("kind", kind) != kind:
        state.fail("%s: expected /%s, got /%s: %r" % (name, expect["kind"], kind, body[:300]))
        return
    parsed = None
    try:
        parsed = json.loads(body)
    except ValueError:
        if any(k in expect for k in ("json", "subset", "errorType", "remaining")):
            state.fail("%s: body is not JSON: %r" % (name, body[:300]))
            return
    if "json" in expect and parsed != expect["json"]:
        state.fail("%s: body %r != %r" % (name, parsed, expect["json"]))
    for k, want in expect.get("subset", {}).items():
        if isinstance(want, str) and want.startswith("$"):
            want = values.get(want, want)
        got = parsed.get(k, "<missing>") if isinstance(parsed, dict) else "<not an object>"
        if got != want:
            state.fail("%s: %s = %r, expected %r" % (name, k, got, want))
    for k in ("errorType", "errorMessage"):
        if k in expect and (not isinstance(parsed, dict) or parsed.get(k) != expect[k]):
            state.fail("%s: %s = %r, expected %r" % (
                name, k, parsed.get(k) if isinstance(parsed, dict) else parsed, expect[k]))
    if "stackTrace" in expect:
        st = parsed.get("stackTrace") if isinstance(parsed, dict) else None
        if not isinstance(st, list) or (expect["stackTrace"] == "nonempty" and not st):
            state.fail("%s: stackTrace %r is not a %s list" % (name, st, expect["stackTrace"]))
    if "remaining" in expect:
        lo, hi = expect["remaining"]
        got = parsed.get("remaining") if isinstance(parsed, dict) else None
        if not isinstance(got, (int, float)) or not lo <= got <= hi:
            state.fail("%s: remaining time %r not in [%d, %d]" % (name, got, lo, hi))
    if "errorTypeHeader" in expect:
        got = headers.get("Lambda-Runtime-Function-Error-Type")
        if got != expect["errorTypeHeader"]:
            state.fail("%s: Lambda-Runtime-Function-Error-Type %r, expected %r"
                       % (name, got, expect["errorTypeHeader"]))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Lambda's API
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stalls

    def setup(self):
        super().setup()
        with self.server.state.lock:
            self.server.state.connections += 1
            self.conn_no = self.server.state.connections

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, body=b"", headers=(), chunked=False):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        if chunked:  # in two chunks, with a chunk extension and a trailer
            self.send_header("Transfer-Encoding", "chunked")
            half = len(body) // 2
            body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(part), part)
                            for part in (body[:half], body[half:]) if part)
            body += b"0\r\nX-Trailer: yes\r\n\r\n"
        else:
            self.send_header("Content-Length", str(len(body)))
        # Head and body in one write, as a real server would (end_headers() then
        # write() would be two segments, two reads for the client).
        self._headers_buffer.extend((b"\r\n", body))
        self.flush_headers()

    def do_GET(self):
        st = self.server.state
        if self.path != PREFIX + "invocation/next":
            return self.reply(404, b'{"errorType":"NotFound"}')
        with st.lock:
            if st.served >= st.total:
                ev = None
            else:
                n = st.served
                if n == 0:
                    st.first_next = time.monotonic()
                st.served += 1
                ev = st.events[0 if st.repeat else n]
        if ev is None:  # held, like Lambda's, until we are done
            st.done.wait()
            self.close_connection = True
            return
        name = ev.get("name", "event")
        rid = "req-%d-%s" % (n, name)
        deadline = int(time.time() * 1000) + int(ev.get("deadline_in", 30000))
        msgid = "msg-%d" % n
        arn = "arn:aws:lambda:local:000000000000:function:" + os.environ.get(
            "AWS_LAMBDA_FUNCTION_NAME", "fn")
        hdrs = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": rid,
            "Lambda-Runtime-Deadline-Ms": str(deadline),
            "Lambda-Runtime-Invoked-Function-Arn": arn,
            "Lambda-Runtime-Trace-Id": "Root=1-00000000-%024d;Sampled=0" % n,
            "Herald-Topic": "orders",
            "Herald-Message-Id": msgid,
            "Herald-Attempt": "1",
            "Herald-Attributes": '{"color":"red","size":"L"}',
        }
        hdrs.update(ev.get("headers", {}))
        values = {"$ID": rid, "$ARN": arn, "$MSGID": msgid, "$DEADLINE": deadline,
                  "$TRACE": hdrs["Lambda-Runtime-Trace-Id"]}
        with st.lock:
            st.pending[rid] = (ev, values)
        key = id(ev)
        body = st.body_cache.get(key)
        if body is None:
            body = st.body_cache[key] = event_body(ev)
        self.reply(200, body, hdrs.items(), chunked=bool(ev.get("chunked")))

    def do_POST(self):
        st = self.server.state
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        path = self.path
        if path == PREFIX + "init/error":
            kind, rid = "init_error", None
        elif path.startswith(PREFIX + "invocation/"):
            rid, _, kind = path[len(PREFIX + "invocation/"):].rpartition("/")
        else:
            return self.reply(404, b'{"errorType":"NotFound"}')
        if kind not in ("response", "error", "init_error"):
            return self.reply(404, b'{"errorType":"NotFound"}')
        text = body.decode("utf-8", "replace")
        etype = self.headers.get("Lambda-Runtime-Function-Error-Type")
        with st.lock:
            if kind == "init_error":
                ev, values = None, {}
                st.got_init = True
            else:
                ev, values = st.pending.pop(rid, (None, None))
                if ev is None:
                    self.reply(400, b'{"errorType":"InvalidRequestID"}')
                    st.fail("answer for unknown request id %r" % rid)
                    return
            if not st.repeat:
                st.out.write(json.dumps({"id": rid, "kind": kind, "body": text,
                                         "errorTypeHeader": etype,
                                         "connection": self.conn_no}) + "\n")
                if kind == "init_error":
                    if st.init_expect is None:
                        st.fail("unexpected init error: %s" % text)
                    else:
                        check(st, "init", st.init_expect, kind, text,
                              {"Lambda-Runtime-Function-Error-Type": etype}, values)
                else:
                    check(st, ev.get("name", "event"), ev.get("expect"), kind, text,
                          {"Lambda-Runtime-Function-Error-Type": etype}, values)
            if kind != "init_error":
                st.answered += 1
            finished = kind == "init_error" or st.answered >= st.total
            if finished:  # the client reconnects once we stop: count until now
                st.connections_at_done = st.connections
        self.reply(202, b'{"status":"OK"}', [("Content-Type", "application/json")])
        if ev is not None and ev.get("drop_connection"):
            # Close the kept-alive connection without a word: the client must
            # reconnect for its next request.
            self.close_connection = True
        if finished:
            st.done.set()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--lang", default="python")
    ap.add_argument("--repeat", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()

    state = State(args)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.state = state
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, args.port_file)  # appears whole

    started = time.monotonic()
    if not state.done.wait(args.timeout):
        sys.stderr.write("mock_api: timed out: %d of %d events served, %d answered\n"
                         % (state.served, state.total, state.answered))
        state.out.close()
        os._exit(2)
    elapsed = time.monotonic() - (state.first_next or started)
    with state.lock:
        got = state.connections_at_done
        if state.want_connections is not None and got != state.want_connections:
            state.fail("%s connections, expected %d (keep-alive, one reconnect)"
                       % (got, state.want_connections))
        if state.init_expect is not None and not state.got_init:
            state.fail("no init error came, expected %r" % state.init_expect)
        state.out.close()
        if state.repeat:
            sys.stderr.write("mock_api: %d events in %.3f s (%.0f events/s)\n"
                             % (state.answered, elapsed, state.answered / elapsed))
        code = 1 if state.failures else 0
    os._exit(code)


if __name__ == "__main__":
    main()
