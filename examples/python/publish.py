#!/usr/bin/python3
"""publish.py — publish events to herald from Python.

    PYTHONPATH=clients/python examples/python/publish.py [--broker ENDPOINT] TOPIC [N]

Publishes one event and waits for its confirm (sync), then N more (default
100) without waiting (async, batched: several per PUBLISH message), and
prints every message id once the broker has stored it. With `make run`
going, `examples/python/publish.py events 1000` publishes to the example
config's `events` topic. CURVE: set HERALD_KEY and HERALD_BROKER_KEY (the
files `heraldctl keygen` writes). Exit 1 with the broker's words on a
refusal (unknown topic, throttled, unreachable…).
"""
import argparse
import json
import sys
import time

import herald


def main():
    ap = argparse.ArgumentParser(description="publish events to herald")
    ap.add_argument("--broker", help="publish endpoint (default $HERALD_BROKER or tcp://127.0.0.1:7710)")
    ap.add_argument("topic")
    ap.add_argument("n", nargs="?", type=int, default=100, help="async publishes after the first (default 100)")
    a = ap.parse_args()
    try:
        with herald.Publisher(a.broker, timeout=10) as p:
            first = p.publish(a.topic, json.dumps({"hello": "from python"}), attributes={"source": "publish.py"})
            print("sync:", first)
            t0 = time.monotonic()
            futures = [p.publish_async(a.topic, json.dumps({"n": i}).encode(), attributes={"n": str(i)})
                       for i in range(a.n)]
            failed = p.flush()
            took = time.monotonic() - t0
            for f in futures:
                print("async:", f.result() if not f.exception() else "failed: %s" % f.exception())
            print("%d published in %.2f s, %d failed" % (a.n, took, failed), file=sys.stderr)
            return 1 if failed else 0
    except herald.HeraldError as e:
        print("publish.py: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
