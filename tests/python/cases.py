#!/usr/bin/python3
"""cases.py — the Python client's scenarios against a real broker, one per
Criterion test of tests/integration/test_python.c, which writes the config,
starts the broker (and workers) in a temp dir and runs

    /usr/bin/python3 tests/python/cases.py CASE DIR [BROKER_PID]

with PYTHONPATH=clients/python. DIR holds pub.sock / adm.sock (ipc://) and
data/herald.db. Exit 0: the case held; otherwise the failed check is on
stderr. Waits are on conditions with a deadline, never a bare sleep.
"""
import os
import signal
import sqlite3
import sys
import time

import herald
from herald import _proto

DIR = sys.argv[2]
PUB = "ipc://%s/pub.sock" % DIR
ADM = "ipc://%s/adm.sock" % DIR


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def raises(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    except Exception as e:
        raise AssertionError("%s raised %s (%s), not %s" % (fn.__name__, type(e).__name__, e, exc.__name__))
    raise AssertionError("%s raised nothing, expected %s" % (fn.__name__, exc.__name__))


def wait_for(cond, what, timeout=20.0):
    end = time.monotonic() + timeout
    while not cond():
        check(time.monotonic() < end, "no %s within %g s" % (what, timeout))
        time.sleep(0.02)


def record_publishes(seqs=None):
    """Counts what goes out: entries per PUBLISH message (a list, one int per
    message; with seqs, every sequence sent is appended to it), patched into
    the encoder the client calls."""
    sizes = []
    real = _proto.publish

    def spy(producer, entries):
        sizes.append(len(entries))
        if seqs is not None:
            seqs.extend(e[0] for e in entries)
        return real(producer, entries)
    _proto.publish = spy
    return sizes


def record_admin():
    sent = []
    real = _proto.admin

    def spy(req, command, args):
        sent.append((command, dict(args)))
        return real(req, command, args)
    _proto.admin = spy
    return sent


def db_mids():
    db = sqlite3.connect("file:%s/data/herald.db?mode=ro" % DIR, uri=True)
    try:
        return [r[0] for r in db.execute("SELECT mid FROM messages")]
    finally:
        db.close()


# ---- cases ------------------------------------------------------------------

def publish_modes():
    sizes = record_publishes()
    with herald.Publisher(PUB, timeout=10) as p:
        mid = p.publish("t", b"one", attributes={"region": "eu", "k.2": "v"})
        check(mid == p.producer + "-1", "first id is PRODUCER-1: %s" % mid)
        check(p.max_payload and p.max_payload > 0, "WELCOME's max_payload known")
        check(p.publish("t", "text as utf-8 ✓") == p.producer + "-2", "a str payload")
        later = p.publish("t", b"later", delay=2)
        first = p.publish("t", b"d1", dedup_id="order-42")
        again = p.publish("t", b"d2", dedup_id="order-42")
        check(first == again, "a dedup id within 5 minutes gets the first id: %s %s" % (first, again))
        futs = [p.publish_async("t", b"e%d" % i, attributes={"i": str(i)}) for i in range(3000)]
        check(p.flush() == 0, "flush: nothing failed")
        ids = [f.result(0) for f in futs]
        check(len(set(ids)) == 3000, "3000 distinct ids")
        seqs = [int(i.rsplit("-", 1)[1]) for i in ids]
        check(seqs == list(range(seqs[0], seqs[0] + 3000)), "ids follow the producer sequence")
        check(later != mid, "delayed publish has its own id")
        # 16 attributes of 1 KiB each: 300 of them in one PUBLISH would be a
        # 5 MB header, past the broker's frame cap (max_payload + 64 KiB)
        big = {"a%02d" % k: "v" * 1024 for k in range(16)}
        futs2 = [p.publish_async("t", b"big", attributes=big) for i in range(300)]
        check(p.flush() == 0, "publishes with big attributes all stored")
        check(len(set(f.result(0) for f in futs2)) == 300, "300 ids")
    check(max(sizes) > 1, "several publishes per PUBLISH message: %s" % sizes[:20])
    check(sum(sizes) == 3305, "each publish sent once with the broker up: %d" % sum(sizes))
    with herald.Admin(ADM) as a:
        topics = {t["name"]: t["published"] for t in a.stats()["topics"]}
        check(topics["t"] == 3304, "the broker counts 3304 published (the dedup one not twice): %s" % topics)
        subs = [s for s in a.stats()["subscriptions"] if s["topic"] == "t"]
        check(subs[0]["delayed"] == 1, "the delayed publish waits: %s" % subs)
    mids = db_mids()
    check(len(mids) == len(set(mids)) == 3304, "3304 stored, no duplicate: %d" % len(mids))
    print("published 3305 (3304 stored), batches up to %d" % max(sizes))


def refusals():
    pid = int(sys.argv[3])
    with herald.Publisher(PUB, timeout=2) as p:
        e = raises(herald.UnknownTopic, p.publish, "nope", b"x")
        check(e.status == 3 and "nope" in str(e), "unknown topic in the broker's words: %s" % e)
        check(isinstance(e, herald.Refused), "UnknownTopic is a Refused")
        e = raises(herald.TooLarge, p.publish, "t", b"x" * 2000)
        check("1024" in str(e), "too large says the limit: %s" % e)
        raises(herald.Invalid, p.publish, "bad topic!", b"x")
        raises(herald.Invalid, p.publish, "t", b"x", attributes={"k%d" % i: "v" for i in range(17)})
        raises(herald.Invalid, p.publish, "t", b"x", attributes={"bad key": "v"})
        raises(herald.Invalid, p.publish, "t", b"x", delay=901)
        raises(herald.Invalid, p.publish, "t", b"x", dedup_id="no spaces")
        raises(herald.Invalid, p.publish, "t", 42)
        # max_backlog = 3 in the config: the fourth event is throttled
        for i in range(3):
            p.publish("t", b"fill")
        e = raises(herald.Throttled, p.publish, "t", b"over")
        check(e.status == 5 and "throttled" in str(e), "throttled in the broker's words: %s" % e)
        # a broker that stops answering: Timeout, not a hang
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            e = raises(herald.Timeout, p.publish, "t", b"late")
            check(time.monotonic() - t0 < 6, "the timeout is kept")
        finally:
            os.kill(pid, signal.SIGCONT)
    # nobody at the endpoint: Unreachable at once, saying so
    t0 = time.monotonic()
    with herald.Publisher("ipc://%s/nobody.sock" % DIR, timeout=10) as p:
        e = raises(herald.Unreachable, p.publish, "t", b"x")
    check("connection refused" in str(e), "says why: %s" % e)
    check(time.monotonic() - t0 < 5, "refused connections are reported before the timeout")
    with herald.Admin("ipc://%s/nobody.sock" % DIR, timeout=2) as a:
        raises(herald.Unreachable, a.stats)
    raises(herald.Invalid, herald.Publisher, PUB, key_file="only-one.key")
    raises(herald.Invalid, herald.Publisher, PUB, window=0)
    print("refusals ok")


def invoke_and_worker():
    log = os.path.join(DIR, "echo.log")
    with herald.Publisher(PUB, timeout=10) as p:
        mid = p.publish("t", b"from python", attributes={"origin": "py"})
        out = p.invoke("echo", b"round trip \x00\xff", timeout=20)
        check(out == b"round trip \x00\xff", "invoke returns the handler's output byte for byte: %r" % out)
        e = raises(herald.HandlerError, p.invoke, "fail", b"x", timeout=20)
        check(e.status == 8 and "failing with 3" in str(e), "the handler's words: %s" % e)
        check(e.message_id, "HandlerError has the id the handler saw")
        raises(herald.UnknownFunction, p.invoke, "nope", b"x")
        e = raises(herald.NoWorker, p.invoke, "idle", b"x")
        check(e.status == 7, "no worker serves idle: %s" % e)
        amid = p.invoke_async("echo", b"later")
        check(amid.startswith(p.producer + "-"), "invoke_async returns a message id: %s" % amid)
        raises(herald.UnknownFunction, p.invoke_async, "nope", b"x")
        e = raises(herald.Timeout, p.invoke, "slow", b"x", timeout=1)
        check(e.status == 9, "the broker's deadline passed after dispatch: %s" % e)
    # the real herald-worker ran both: its handler logged their message ids
    def logged():
        return os.path.exists(log) and {mid, amid} <= set(open(log).read().split())
    wait_for(logged, "message ids %s and %s in the echo handler's log" % (mid, amid))
    print("worker handled", mid, amid)


def admin_methods():
    sent = record_admin()
    with herald.Admin(ADM, timeout=5) as a:
        check(a.ping() > 0, "ping: the broker's start time")
        st = a.stats()
        check({"topics", "subscriptions", "functions", "workers", "refused"} <= set(st), "stats keys: %s" % list(st))
        wait_for(lambda: len(a.workers()) == 1, "one worker")
        check(a.workers()[0]["functions"] == ["fail"], "workers: %s" % a.workers())
        sc = a.schedules()
        check(len(sc) == 1 and sc[0]["name"] == "tick" and sc[0]["topic"] == "ticks", "schedules: %s" % sc)
        with herald.Publisher(PUB) as p:
            mids = [p.publish("t", b"poison %d" % i, attributes={"n": str(i)}) for i in range(4)]
        wait_for(lambda: len(a.dlq_list()) == 4, "4 dead letters")
        dl = a.dlq_list(function="fail", topic="t", limit=2)
        check(len(dl) == 2, "limit: %s" % dl)
        check(set(x["message_id"] for x in a.dlq_list(limit=0)) == set(mids), "dlq_list ids")
        one = a.dlq_list()[0]
        show = a.dlq_show(one["id"])
        check(show["payload"].startswith("poison") and show["history"], "dlq_show: %s" % show)
        check(show["attributes"].get("n") is not None, "dlq_show attributes")
        raises(herald.NotFound, a.dlq_show, 999999)
        # replay / purge: ids, or all=True — never an empty request
        for bad in ({}, {"ids": []}, {"ids": [1], "all": True}, {"ids": [1], "function": "fail"},
                    {"all": "yes"}):
            raises(herald.Invalid, a.dlq_replay, **bad)
            raises(herald.Invalid, a.dlq_purge, **bad)
        n_before = len(sent)
        check(a.dlq_replay(all=True, dry_run=True)["count"] == 4, "dry run counts 4")
        check(len(a.dlq_list()) == 4, "a dry run changes nothing")
        r = a.dlq_replay(ids=[one["id"]], rate=100)
        check(r["count"] == 1, "replayed one by id: %s" % r)
        wait_for(lambda: len(a.dlq_list()) == 4 and all(x["message_id"] in mids for x in a.dlq_list()),
                 "the replayed one dead again")
        check(a.dlq_purge(all=True, function="fail", older_than=3600)["count"] == 0, "older_than filters")
        ids = [x["id"] for x in a.dlq_list()]
        check(a.dlq_purge(ids=ids[:1])["count"] == 1, "purged one by id")
        check(a.dlq_purge(all=True, topic="t")["count"] == 3, "purged the rest with all=True")
        check(a.dlq_list() == [], "no dead letter left")
        writes = [(c, args) for c, args in sent[n_before:] if c in ("dlq.replay", "dlq.purge")]
        for c, args in writes:
            check(("ids" in args) != (args.get("all") is True), "%s sends ids or an explicit all: %s" % (c, args))
            check(set(args) <= {"ids", "all", "function", "topic", "rate", "dry_run", "older_than"},
                  "only documented argument names: %s" % args)
        check(any(args.get("all") is True for c, args in writes), "all=True goes on the wire as all: true")
    print("admin ok: %d requests" % len(sent))


def kill9():
    """publish_async 2,000 events, SIGKILL the broker after 900 (stopped
    after 600, so some are surely sent and unconfirmed), let the test restart
    it, then check every publish confirmed and stored exactly once."""
    pid = int(sys.argv[3])
    seqs = []
    sizes = record_publishes(seqs)
    p = herald.Publisher(PUB, timeout=40, window=1000)
    futs = []
    for i in range(2000):
        futs.append(p.publish_async("t", b"event %d" % i))
        if i == 600:
            # stopped first, so publishes are surely sent and unconfirmed at the kill
            os.kill(pid, signal.SIGSTOP)
        if i == 900:   # a full batch (256) has gathered since the stop, so one went out
            wait_for(lambda: seqs and max(seqs) > 601, "publishes sent to the stopped broker")
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not os.path.exists("/proc/%d/cmdline" % pid) or
                     not open("/proc/%d/cmdline" % pid, "rb").read(), "the broker's end")
            at_kill = set(db_mids())   # what it had stored (and maybe not confirmed)
            print("killed", flush=True)   # the test restarts the broker on this line
    failed = p.flush(60)
    ids = [f.result(0) if not f.exception(0) else None for f in futs]
    p.close()
    check(failed == 0, "every publish confirmed across the restart: %d failed (%s)"
          % (failed, [f.exception(0) for f in futs if f.exception(0)][:3]))
    check(ids == ["%s-%d" % (p.producer, i + 1) for i in range(2000)], "ids are PRODUCER-SEQ in order")
    mids = db_mids()
    check(len(mids) == len(set(mids)), "no duplicate in the broker's messages: %d rows, %d distinct"
          % (len(mids), len(set(mids))))
    check(set(mids) == set(ids), "every confirmed publish stored: %d stored, %d confirmed"
          % (len(set(mids)), len(ids)))
    resent = sum(sizes) - 2000
    check(resent > 0, "unconfirmed publishes were sent again after the restart")
    seen, again = set(), set()
    for s in seqs:
        (again if s in seen else seen).add(s)
    known = sum(1 for s in again if "%s-%d" % (p.producer, s) in at_kill)
    print("2000 stored exactly once; %d entries re-sent after the restart, %d of them stored before the kill "
          "(answered already stored, with their first id)" % (resent, known))


def frozen():
    """A broker that freezes (SIGSTOP) with publishes sent to it: the
    client's ZMTP heartbeat gives up on the connection, a fresh socket
    re-sends them with the same sequences, and once the broker runs again it
    has the same seqs twice (the old connection's bytes and the re-send):
    each is stored once, and the second answer carries the first id."""
    pid = int(sys.argv[3])
    seqs = []
    record_publishes(seqs)
    with herald.Publisher(PUB, timeout=30) as p:
        first = p.publish("t", b"warm")
        os.kill(pid, signal.SIGSTOP)
        try:
            futs = [p.publish_async("t", b"frozen %d" % i) for i in range(50)]
            # two batches go at once; the rest wait for a full one (or a flush)
            wait_for(lambda: len(seqs) > 1, "publishes sent to the frozen broker")
            wait_for(lambda: p._gen > 1, "the client giving up on the frozen connection", timeout=20)
            frozen_sent = set(seqs[1:])
        finally:
            os.kill(pid, signal.SIGCONT)
        check(p.flush() == 0, "all confirmed after the broker thawed")
        ids = [f.result(0) for f in futs]
    check(ids == ["%s-%d" % (p.producer, i + 2) for i in range(50)], "the original ids: %s" % ids[:3])
    twice = [s for s in frozen_sent if seqs.count(s) >= 2]
    check(frozen_sent and len(twice) == len(frozen_sent),
          "each of the %d sent to the frozen broker was sent again: %d" % (len(frozen_sent), len(twice)))
    mids = db_mids()
    check(sorted(mids) == sorted([first] + ids), "stored once each: %d rows" % len(mids))
    print("%d publishes sent twice across a frozen connection, all 50 stored once" % len(frozen_sent))


def curve():
    k = lambda n: os.path.join(DIR, "keys", n)
    with herald.Publisher(PUB, timeout=5, key_file=k("pub.key"), broker_key_file=k("broker.pub")) as p:
        mid = p.publish("t", b"encrypted")
        check(mid.startswith(p.producer), "published over CURVE: %s" % mid)
        check(p.invoke("echo", b"curve", timeout=20) == b"curve", "invoke over CURVE")
    with herald.Admin(ADM, key_file=k("adm.key"), broker_key_file=k("broker.pub")) as a:
        check(a.stats()["topics"][0]["published"] == 1, "admin over CURVE")
    # no keys: refused at once, saying CURVE
    with herald.Publisher(PUB, timeout=5) as p:
        e = raises(herald.HeraldError, p.publish, "t", b"plain")
    check("CURVE" in str(e), "plaintext against CURVE says why: %s" % e)
    # a key the broker does not know (only allowed as admin, not publisher)
    with herald.Publisher(PUB, timeout=5, key_file=k("adm.key"), broker_key_file=k("broker.pub")) as p:
        e = raises(herald.Refused, p.publish, "t", b"x")
    check("publishers" in str(e), "a refused key names the directory: %s" % e)
    with herald.Admin(ADM, timeout=3, key_file=k("pub.key"), broker_key_file=k("broker.pub")) as a:
        e = raises(herald.Refused, a.stats)
    check("admins" in str(e), "a publisher key cannot administer: %s" % e)
    raises(herald.Invalid, herald.Publisher, PUB, key_file=k("pub.pub"), broker_key_file=k("broker.pub"))
    print("curve ok")


CASES = {f.__name__: f for f in (publish_modes, refusals, invoke_and_worker, admin_methods, kill9, frozen, curve)}

if __name__ == "__main__":
    CASES[sys.argv[1]]()
