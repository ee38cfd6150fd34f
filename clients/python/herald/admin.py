"""Admin: the broker's admin endpoint (ADMIN → ADMIN_REPLY, proto/PROTOCOL.md
§4), one request at a time, in the caller's thread.

Each request is answered within ``timeout`` or reported Unreachable; after a
failed request the socket is replaced, so a request still queued in it can
never reach a broker that comes back later (a replay nobody waits for). A
replay or purge of many dead letters may take long: it is waited for as long
as the broker answers a ping within ``timeout`` with the same start time.
"""
import os
import secrets
import threading
import time

import zmq

from . import _proto
from ._link import Link, load_keys
from .errors import HeraldError, Invalid, Refused, Timeout, Unreachable, from_status

DEFAULT_ENDPOINT = "tcp://127.0.0.1:7712"


def _uint(what, v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise Invalid("%s must be an integer ≥ 0, not %r" % (what, v))
    return v


class Admin:
    """A client of the admin endpoint: one method per admin command.

    ``endpoint``: the broker's admin endpoint (default
    ``tcp://127.0.0.1:7712``). ``timeout``: seconds each request may take
    (a replay or purge: seconds between signs of life). ``key_file`` /
    ``broker_key_file``: CURVE, as for :class:`~herald.Publisher` (the key
    must be in the broker's admins directory). Thread-safe (requests are
    serialized). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, endpoint=None, timeout=5.0, key_file=None, broker_key_file=None):
        self.endpoint = endpoint or DEFAULT_ENDPOINT
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise Invalid("timeout must be a positive number of seconds")
        if key_file is None and broker_key_file is None:
            key_file = os.environ.get("HERALD_KEY") or None
            broker_key_file = os.environ.get("HERALD_BROKER_KEY") or None
        self.timeout = float(timeout)
        self._keys = load_keys(key_file, broker_key_file)
        self._name = "pyadmin_" + secrets.token_hex(6)
        self._ctx = zmq.Context()
        self._lock = threading.Lock()
        self._link = None
        self._req = 0

    # ---- commands -----------------------------------------------------------

    def ping(self):
        """The broker's start time (Unix ms): a restart shows as a new value."""
        return self._call("ping", {})

    def stats(self):
        """Every figure of ``heraldctl stats --json``: a dict of ``topics``,
        ``subscriptions``, ``functions``, ``workers`` and ``refused``."""
        return self._call("stats", {})

    def workers(self):
        """The connected workers: a list of dicts ``{id, host, pid,
        functions, slots, busy, last_seen_ms, …}`` (the ``workers`` of
        :meth:`stats`)."""
        return self.stats().get("workers", [])

    def schedules(self):
        """The schedules: a list of dicts ``{name, topic, function, spec,
        timezone, catch_up, next, last, fired}``."""
        return self._call("schedules", {})

    def dlq_list(self, function=None, topic=None, limit=100):
        """Dead letters, newest first, at most ``limit`` (0: all), narrowed
        to a function and/or topic: a list of dicts ``{id, message_id,
        topic, function, attempts, outcome, error, failed_at,
        payload_bytes}``."""
        args = {"limit": _uint("limit", limit)}
        if function is not None:
            args["function"] = _proto.check_name("function", function)
        if topic is not None:
            args["topic"] = _proto.check_name("topic", topic)
        return self._call("dlq.list", args)

    def dlq_show(self, id):
        """One whole dead letter: the list keys plus ``attributes``,
        ``payload`` (str) with ``payload_encoding`` (``utf-8`` or
        ``base64``) and ``history`` (every attempt). Raises
        :class:`~herald.NotFound` when there is none with that id."""
        return self._call("dlq.show", {"id": _uint("id", id)})

    def dlq_replay(self, ids=None, all=False, function=None, topic=None, rate=None, dry_run=False):
        """Moves dead letters back onto their own subscription's queue with
        their attempts reset: those named by ``ids`` (a non-empty list), or
        with ``all=True`` every one, narrowed by ``function`` / ``topic``.
        ``rate``: at most that many per second become visible (None or 0:
        at once). ``dry_run``: only count. Returns ``{count, skipped, why}``
        (``why``: one line per dead letter left in place)."""
        args = self._selection("dlq_replay", ids, all, function, topic, {})
        if rate is not None:
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate < 0:
                raise Invalid("rate must be a number ≥ 0 (per second)")
            args["rate"] = rate
        if dry_run:
            args["dry_run"] = True
        return self._call("dlq.replay", args, long=True)

    def dlq_purge(self, ids=None, all=False, function=None, topic=None, older_than=None, dry_run=False):
        """Deletes dead letters: those named by ``ids`` (a non-empty list),
        or with ``all=True`` every one, narrowed by ``function``, ``topic``
        and ``older_than`` (seconds since it failed). ``dry_run``: only
        count. Returns ``{count}``."""
        extra = {}
        if older_than is not None:
            if isinstance(older_than, bool) or not isinstance(older_than, int) or older_than <= 0:
                raise Invalid("older_than must be a whole number of seconds > 0")
            extra["older_than"] = older_than
        args = self._selection("dlq_purge", ids, all, function, topic, extra)
        if dry_run:
            args["dry_run"] = True
        return self._call("dlq.purge", args, long=True)

    def close(self):
        """Closes the socket. Safe to call twice."""
        with self._lock:
            if self._link is not None:
                self._link.close()
                self._link = None
            if self._ctx is not None:
                self._ctx.term()
                self._ctx = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- requests ---------------------------------------------------------

    @staticmethod
    def _selection(what, ids, all_, function, topic, filters):
        """The arguments that say which dead letters: ids, or all=True
        (sent explicitly) with its filters. An empty request never means
        all."""
        if all_ not in (True, False):
            raise Invalid("%s: all must be True or False" % what)
        if ids is not None and all_:
            raise Invalid("%s: give ids=[…] or all=True, not both" % what)
        if ids is not None:
            if isinstance(ids, (str, bytes)):
                raise Invalid("%s: ids must be a list of dead-letter ids" % what)
            ids = [_uint("a dead-letter id", i) for i in ids]
            if not ids:
                raise Invalid("%s: ids is empty (an empty request never means all: give all=True)" % what)
            if function is not None or topic is not None or filters:
                raise Invalid("%s: function, topic and older_than narrow all=True; they do not go with ids" % what)
            return {"ids": ids}
        if not all_:
            raise Invalid("%s: give ids=[…] or all=True" % what)
        args = {"all": True}
        if function is not None:
            args["function"] = _proto.check_name("function", function)
        if topic is not None:
            args["topic"] = _proto.check_name("topic", topic)
        args.update(filters)
        return args

    def _drop_link(self):
        if self._link is not None:
            self._link.close()
            self._link = None

    def _call(self, command, args, long=False):
        with self._lock:
            if self._ctx is None:
                raise Invalid("the admin client is closed")
            try:
                if self._link is None or self._link.lost:
                    self._open()
                started = self._request("ping", {}) if long else None
                return self._request(command, args, started)
            except HeraldError as e:
                # a fresh socket next time: nothing of this request may
                # reach a broker later; the broker's own refusals keep it
                if isinstance(e, (Unreachable, Timeout)) or getattr(e, "fatal", False):
                    self._drop_link()
                raise

    def _open(self):
        self._drop_link()
        self._link = Link(self._ctx, self.endpoint, self._keys, hwm=100, sndtimeo=int(self.timeout * 1000))
        self._link.sock.send(_proto.hello(self._name, "admin"), zmq.NOBLOCK)
        self._wait(lambda t, f: t == "WELCOME", self.timeout, "WELCOME")

    def _request(self, command, args, started=None):
        self._req += 1
        req = self._req
        try:
            self._link.sock.send(_proto.admin(req, command, args))
        except zmq.ZMQError as e:
            raise Unreachable("cannot send to broker %s: %s" % (self.endpoint, e)) from None
        ping = [None]

        def mine(t, f):
            if t != "ADMIN_REPLY":
                return False
            if f[0] == req:
                return True
            if ping[0] is not None and f[0] == ping[0]:
                if f[1] == 0 and started is not None and f[3] != started:
                    raise HeraldError("the broker at %s restarted before it answered %s: part of it may be done; "
                                      "run it again for the rest" % (self.endpoint, command))
                ping[0] = None
                return "alive"
            return False   # a late answer to an earlier request

        def on_silence():
            if started is None or ping[0] is not None:
                return False
            self._req += 1   # still working, or gone? ask
            ping[0] = self._req
            self._link.sock.send(_proto.admin(ping[0], "ping", {}))
            return True

        t, f = self._wait(mine, self.timeout, command, on_silence)
        status, error, result = f[1], f[2], f[3]
        if status != 0:
            raise from_status(status, error)   # the broker names the command
        return result

    def _wait(self, want, limit, what, on_silence=None):
        """Receives until want(type, fields) is true; "alive" restarts the
        clock. Raises on ERROR, a refused handshake, no broker, silence."""
        link = self._link
        deadline = time.monotonic() + limit
        poller = zmq.Poller()
        poller.register(link.sock, zmq.POLLIN)
        poller.register(link.mon, zmq.POLLIN)
        while True:
            now = time.monotonic()
            if now >= deadline:
                if on_silence is not None and on_silence():
                    deadline = time.monotonic() + limit
                    continue
                note = " (%s)" % link.note if link.note and not link.handshaken else ""
                raise Unreachable("broker %s unreachable: no answer to %s within %g s%s"
                                  % (self.endpoint, what, limit, note))
            poller.poll(int((deadline - now) * 1000) + 1)
            link.events(time.monotonic(), "admins")
            if link.verdict is not None and (getattr(link.verdict, "fatal", False) or not link.handshaken):
                raise link.verdict
            while True:
                try:
                    frames = link.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    t, f = _proto.decode(frames)
                except _proto.Malformed:
                    continue
                if t == "ERROR":
                    raise Refused("broker %s refused %s: %s" % (self.endpoint, what, f[1]), f[0])
                ok = want(t, f)
                if ok == "alive":
                    deadline = time.monotonic() + limit
                elif ok:
                    return t, f
            if link.lost:
                raise Unreachable("the connection to broker %s was lost waiting for %s (it may or may not "
                                  "have been done)" % (self.endpoint, what))
