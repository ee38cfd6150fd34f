# rt_proto.py: a runtime process that speaks the Runtime API itself (no
# bootstrap), for the integration tests of the API's answers. The event is
# JSON {"op": ..., "report": PATH}; what the API answered is written to
# PATH as JSON before the event's own response, so a test reads it.
# RT_PROTO_INIT_ERROR=1 in the environment: it posts an init error and exits.
import http.client
import json
import os
import sys

api = os.environ["AWS_LAMBDA_RUNTIME_API"]
base = "/2018-06-01/runtime"
conn = http.client.HTTPConnection(api)


def call(method, path, body=None, headers=None):
    conn.request(method, base + path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read(), r


if os.environ.get("RT_PROTO_INIT_ERROR") == "1":
    st, _, _ = call("POST", "/init/error",
                    json.dumps({"errorMessage": "no config file", "errorType": "Test.ConfigMissing"}),
                    {"Lambda-Runtime-Function-Error-Type": "Test.ConfigMissing"})
    sys.exit(1)

while True:
    st, body, r = call("GET", "/invocation/next")
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    ev = json.loads(body)
    seen = {"next": st, "headers": dict(r.getheaders())}
    op = ev.get("op")
    if op == "wrong_id":
        seen["wrong_id"] = call("POST", "/invocation/00000000-0000-4000-8000-000000000000/response", b"{}")[0]
    if op == "too_large":
        seen["too_large"] = call("POST", "/invocation/%s/response" % rid, b"x" * (6 * 1024 * 1024 + 1))[0]
        with open(ev["report"], "w") as f:
            json.dump(seen, f)
        continue
    with open(ev["report"], "w") as f:
        json.dump(seen, f)
    if op == "error":
        st2 = call("POST", "/invocation/%s/error" % rid,
                   json.dumps({"errorMessage": "it broke", "errorType": "Test.Broken", "stackTrace": []}),
                   {"Lambda-Runtime-Function-Error-Type": "Unhandled"})[0]
    else:
        st2 = call("POST", "/invocation/%s/response" % rid, json.dumps({"ok": True}))[0]
    if op == "linger":
        # answered, but it does not ask for the next event: it waits for a
        # file, then exits — whatever the worker handed it meanwhile never
        # reached it
        import time
        while not os.path.exists(ev["until"]):
            time.sleep(0.01)
        sys.exit(0)
    if op == "twice":
        seen["first"] = st2
        seen["second"] = call("POST", "/invocation/%s/response" % rid, b"{}")[0]
        with open(ev["report"], "w") as f:
            json.dump(seen, f)
