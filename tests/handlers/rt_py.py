# rt_py.py: a runtime function's handler for the integration tests, run by
# examples/runtimes/python/bootstrap.py. The event says what to do:
# {"op": ...}; anything else comes back as it is.
import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import time

import herald

STARTED = time.time()
CALLS = 0


def _http_get(addr, path):
    """GET path from host:port; the status code, or "closed" when the server
    hangs up without an answer."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, addr)).encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                return "closed"
            data += chunk
        return int(data.split(b" ", 2)[1])
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
    finally:
        s.close()


def handler(event, context):
    global CALLS
    CALLS += 1
    if isinstance(event, dict) and "Records" in event and os.environ.get("RT_OUT"):
        # a topic delivery in SNS's envelope: kept for the test to read
        h = context.herald
        with open(os.environ["RT_OUT"], "a") as f:
            f.write(json.dumps({"event": event, "topic": h.topic, "message_id": h.message_id,
                                "attempt": h.attempt, "attributes": h.attributes}) + "\n")
        return None
    if not isinstance(event, dict) or "op" not in event:
        return event
    op = event["op"]
    if op == "pid":
        return {"pid": os.getpid(), "calls": CALLS}
    if op == "env":
        return {"env": dict(os.environ), "cwd": os.getcwd(), "uid": os.getuid()}
    if op == "context":
        return {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "memory_limit_in_mb": int(context.memory_limit_in_mb),
            "invoked_function_arn": context.invoked_function_arn,
            "remaining_ms": context.get_remaining_time_in_millis(),
        }
    if op == "fds":
        return {"fds": sorted(int(f) for f in os.listdir("/proc/self/fd"))}
    if op == "tmp":  # the run dir persists between the events of one process
        path = os.path.join(os.environ["TMPDIR"], "mark")
        existed = os.path.exists(path)
        with open(path, "w") as f:
            f.write("x")
        return {"existed": existed, "tmpdir": os.environ["TMPDIR"], "pid": os.getpid()}
    if op == "addr":
        return {"addr": os.environ["AWS_LAMBDA_RUNTIME_API"], "pid": os.getpid()}
    if op == "probe":  # another runtime's API, from this process
        return {"status": _http_get(event["addr"], "/2018-06-01/runtime/invocation/next")}
    if op == "sleep":
        if event.get("orphan"):
            # a setsid'd grandchild that would outlive us if nobody killed the tree
            p = subprocess.Popen(["sleep", "300"], start_new_session=True)
            with open(event["orphan"], "w") as f:
                f.write(str(p.pid))
        time.sleep(float(event["seconds"]))
        return {"slept": event["seconds"]}
    if op == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if op == "exit":
        sys.stdout.write("exiting on purpose\n")
        sys.stdout.flush()
        os._exit(3)
    if op == "raise":
        raise ValueError(event.get("message", "boom"))
    if op == "reject":
        raise herald.Reject(event.get("message", "not for us"))
    if op == "big":
        return "x" * int(event["bytes"])
    if op == "grow":  # resident memory that stays after the event: a file
        # mapping, so RLIMIT_DATA (memory_mb too) does not stop it first
        global HOARD
        path = os.path.join(os.environ["TMPDIR"], "hoard")
        size = int(event["mb"]) << 20
        with open(path, "wb") as f:
            f.truncate(size)
        with open(path, "r+b") as f:
            HOARD = mmap.mmap(f.fileno(), size)
        for i in range(0, size, 4096):
            HOARD[i] = 1
        return {"pid": os.getpid()}
    if op == "record":  # one line per event handled, for exactly-once checks
        with open(event["path"], "a") as f:
            f.write("%s %s\n" % (event["n"], os.getpid()))
        return {"n": event["n"]}
    if op == "flood":
        chunk = "y" * 65536 + "\n"
        for _ in range(int(event["chunks"])):
            sys.stdout.write(chunk)
        sys.stdout.flush()
        return {"flooded": event["chunks"]}
    if op == "echo":
        return event
    return {"unknown": op}
