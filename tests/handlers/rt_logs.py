# rt_logs.py: a runtime process for test_logs.c, speaking the Runtime API by
# hand. It says a line on stderr before its first event (a line of no
# event), one per event naming the payload, and answers "rt:PAYLOAD".
import http.client
import os
import sys

conn = http.client.HTTPConnection(os.environ["AWS_LAMBDA_RUNTIME_API"])
base = "/2018-06-01/runtime"
print("runtime starting", file=sys.stderr, flush=True)
while True:
    conn.request("GET", base + "/invocation/next")
    r = conn.getresponse()
    body = r.read()
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    print("rt got " + body.decode(), file=sys.stderr, flush=True)
    conn.request("POST", base + "/invocation/%s/response" % rid, b"rt:" + body)
    conn.getresponse().read()
