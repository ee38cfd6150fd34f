"""Publisher: publishes events and invokes functions on a broker's publish
endpoint (proto/PROTOCOL.md §3–§4).

State: one I/O thread owns the ZeroMQ socket; the caller's threads hand it
work through the outbox (under ``_cond``) and a wake-up pipe. The outbox holds
every publish the broker has not confirmed, in sequence order, each a private
copy, because after a reconnect it is sent again with its original sequence.

Idempotence (DESIGN §5): the client draws a random producer id and numbers
its publishes 1, 2, 3…; the broker keeps the high-water sequence of each
producer in the same commit as the events, so a publish re-sent after a lost
connection is answered "already stored" with its original message id
(``PRODUCER-SEQ``) instead of being stored twice.

Invariants: at most ``window`` publishes (and about 64 MiB of payload) are
unconfirmed; nothing is sent on a socket before its WELCOME; every accepted
publish's future ends exactly once — confirmed, refused, or given up on
``timeout`` seconds after it was accepted.
"""
import collections
import concurrent.futures
import os
import secrets
import threading
import time

import zmq

from . import _proto
from ._link import Link, load_keys
from .errors import (HandlerError, HeraldError, Invalid, Refused, Timeout, TooLarge,
                     Unreachable, from_status)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:7710"
WINDOW_MAX = 1000000
# A new publish waits while this many payload bytes are unconfirmed (as
# libherald): 1,000 publishes of 256 KiB would otherwise be 256 MiB here.
WINDOW_BYTES = 64 << 20
# Entries per PUBLISH even when the broker allows more: with the default
# window four batches are in flight, and a bigger one only delays its confirm.
BATCH_MAX = 256
# Bytes of a PUBLISH header frame. The broker's publish socket takes frames
# of at most max_payload + 64 KiB (ZMQ_MAXMSGSIZE) and closes the connection
# on a larger one; 256 entries with 16 attributes of 1 KiB each would be
# 4.7 MiB. One entry is at most ~19 KiB, so it always fits alone.
HEADER_MAX = 60 << 10
PRODUCER_LEN = 20          # [0-9A-Za-z]{20}: ~119 random bits
DRAIN_MAX = 1024           # messages handled per turn, so sending is not starved
TURN_MAX_S = 0.5           # the longest poll: the I/O thread also watches stop and deadlines
_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _producer_id():
    return "".join(secrets.choice(_DIGITS) for _ in range(PRODUCER_LEN))


def _copy(exc):
    """A fresh instance of exc for another caller (tracebacks are per raise)."""
    if isinstance(exc, HandlerError):
        return HandlerError(exc.text, exc.status, exc.message_id)
    e = type(exc)(exc.text, exc.status)
    if getattr(exc, "fatal", False):
        e.fatal = True
    return e


class _Entry:
    __slots__ = ("seq", "wire", "size", "payload", "submitted", "future", "batch")

    def __init__(self, seq, wire, payload, submitted, future):
        self.seq = seq
        self.wire = wire            # the PUBLISH entry [seq, topic, attrs, delay_ms, dedup_id, function]
        self.size = _proto.entry_size(wire)   # its bytes in the header frame
        self.payload = payload      # bytes
        self.submitted = submitted  # monotonic s; given up on at + timeout
        self.future = future
        self.batch = 0              # serial of the batch it was last sent in; 0: unsent on this socket


class _Invoke:
    __slots__ = ("req", "function", "payload", "timeout_ms", "future", "gen")

    def __init__(self, req, function, payload, timeout_ms, future):
        self.req, self.function, self.payload = req, function, payload
        self.timeout_ms, self.future = timeout_ms, future
        self.gen = 0                # the socket generation it was sent on; 0: not sent yet


class _Done(list):
    """(future, result or exception) pairs to end after a step; published
    counts those that left the outbox."""
    published = 0


def _new_future():
    f = concurrent.futures.Future()
    f.set_running_or_notify_cancel()   # a sent publish cannot be taken back: cancel() says False
    return f


def _settle(done):
    """Ends futures (outside _cond: their callbacks may publish)."""
    for fut, value in done:
        try:
            if isinstance(value, BaseException):
                fut.set_exception(value)
            else:
                fut.set_result(value)
        except concurrent.futures.InvalidStateError:
            pass


class Publisher:
    """A client of the publish endpoint: publishes (sync and async, batched,
    idempotent across reconnects) and invokes.

    ``endpoint``: the broker's publish endpoint (default ``$HERALD_BROKER``,
    else ``tcp://127.0.0.1:7710``). ``timeout``: seconds a publish may wait
    for its confirm (re-sent across reconnects meanwhile), and for a first
    answer from the broker. ``window``: publishes in flight at once.
    ``key_file`` / ``broker_key_file``: CURVE, the ``NAME.key`` and the
    broker's ``NAME.pub`` that ``heraldctl keygen`` writes (default
    ``$HERALD_KEY`` / ``$HERALD_BROKER_KEY``; neither: plaintext).

    Thread-safe. Confirm callbacks (``future.add_done_callback``) run in the
    client's I/O thread: keep them short, and do not wait on this client
    inside them. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, endpoint=None, timeout=10.0, window=1000, key_file=None, broker_key_file=None):
        self.endpoint = endpoint or os.environ.get("HERALD_BROKER") or DEFAULT_ENDPOINT
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise Invalid("timeout must be a positive number of seconds")
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= WINDOW_MAX:
            raise Invalid("window must be an integer from 1 to %d" % WINDOW_MAX)
        if key_file is None and broker_key_file is None:
            key_file = os.environ.get("HERALD_KEY") or None
            broker_key_file = os.environ.get("HERALD_BROKER_KEY") or None
        self.timeout = float(timeout)
        self.window = window
        self.producer = _producer_id()
        self._keys = load_keys(key_file, broker_key_file)
        self._ctx = zmq.Context()
        try:
            self._link = Link(self._ctx, self.endpoint, self._keys, hwm=window + 64)
        except BaseException:
            self._ctx.term()
            raise
        self._cond = threading.Condition()
        # shared with the callers' threads, under _cond
        self._seq = 0                       # last producer sequence handed out
        self._outbox = collections.OrderedDict()   # seq → _Entry, unconfirmed, oldest first
        self._unsent = collections.deque()  # entries to send on the current socket
        self._bytes = 0                     # payload bytes in the outbox
        self._limits = None                 # (max_payload, max_batch) from the first WELCOME
        self._fatal = None                  # an exception every call now raises
        self._no_broker = None              # before any WELCOME: why no broker can answer
        self._attempt = 0                   # welcome waits so far (each clears a stale verdict)
        self._req = 0                       # last invoke request id
        self._invokes = {}                  # req → _Invoke waiting for its reply
        self._inv_unsent = collections.deque()
        self._waiters = 0                   # callers blocked on a confirm: send at once
        self._expired = 0                   # publishes given up on, ever
        self._expired_exc = None            # the latest one's exception
        self._failed = 0                    # publishes that failed since the last flush()
        self._settling = 0                  # publishes out of the outbox whose future is not ended yet
        self._closing = False
        self._stop = False
        # the I/O thread's own
        self._gen = 1                       # sockets opened so far
        self._hello_pending = False         # HELLO sent on this socket, no WELCOME since
        self._batches = {}                  # serial → unconfirmed entries of that batch
        self._serial = 0
        self._seen_attempt = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._send_hello()
        self._thread = threading.Thread(target=self._run, name="herald-publisher", daemon=True)
        self._thread.start()

    # ---- public API -----------------------------------------------------

    def publish(self, topic, payload, attributes=None, delay=0, dedup_id=None):
        """Publishes one event and waits until the broker has stored it.

        ``payload``: bytes (a str is sent as UTF-8). ``attributes``: a dict
        str→str (at most 16; keys are names). ``delay``: seconds (≤ 900)
        before it is delivered. ``dedup_id``: within 5 minutes a second
        publish to the topic with the same id is not stored again and gets
        the first one's id. Returns the message id. Raises
        :class:`~herald.Invalid`, :class:`~herald.UnknownTopic`,
        :class:`~herald.Throttled`, :class:`~herald.TooLarge`,
        :class:`~herald.Unreachable`, :class:`~herald.Timeout`…
        """
        return self._wait(self.publish_async(topic, payload, attributes, delay, dedup_id))

    def publish_async(self, topic, payload, attributes=None, delay=0, dedup_id=None):
        """Publishes one event without waiting for its confirm; arguments as
        :meth:`publish`. Returns a :class:`concurrent.futures.Future` whose
        result is the message id (or whose exception says why it was not
        stored). Blocks only while ``window`` publishes are unconfirmed.
        Publishes are sent in batches, several per PUBLISH message."""
        _proto.check_name("topic", topic)
        return self._submit(topic, None, payload, attributes, delay, dedup_id)

    def invoke_async(self, function, payload):
        """Queues an asynchronous invoke of ``function`` (Lambda's Event
        type): stored like an event, retried, dead-lettered; waits until it
        is stored and returns its message id."""
        _proto.check_name("function", function)
        return self._wait(self._submit("", function, payload, None, 0, None))

    def invoke(self, function, payload, timeout=None):
        """Runs ``function`` once, now, on a worker (Lambda's
        RequestResponse) and returns its output (bytes). ``timeout``: seconds
        for queueing plus run (None: the function's timeout + 5 s). Raises
        :class:`~herald.HandlerError` (the handler's error text, and
        ``message_id``), :class:`~herald.UnknownFunction`,
        :class:`~herald.NoWorker`, :class:`~herald.Busy`,
        :class:`~herald.Timeout`, :class:`~herald.Unreachable`. Not
        retried: a connection lost meanwhile raises Unreachable."""
        _proto.check_name("function", function)
        payload = _proto.as_bytes(payload)
        if timeout is None:
            timeout_ms = 0
        else:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
                raise Invalid("timeout must be a positive number of seconds")
            timeout_ms = max(1, int(round(timeout * 1000)))
            if timeout_ms > _proto.MAX_INVOKE_TIMEOUT_MS:
                raise Invalid("timeout %r s: at most %d s" % (timeout, _proto.MAX_INVOKE_TIMEOUT_MS // 1000))
        self._await_welcome()
        self._check_size(payload)
        fut = _new_future()
        with self._cond:
            self._check_open()
            self._req += 1
            inv = _Invoke(self._req, function, payload, timeout_ms, fut)
            self._invokes[inv.req] = inv
            self._inv_unsent.append(inv)
        self._wake()
        # the broker answers by the deadline it was given (default: the
        # function's timeout + 5 s, at most 900 + 5 s); slack for the trip
        wait = (timeout_ms / 1000.0 if timeout_ms else 905.0) + 2.0
        try:
            return fut.result(wait)
        except concurrent.futures.TimeoutError:
            with self._cond:
                self._invokes.pop(inv.req, None)
            raise Timeout("no answer to the invoke of %s from broker %s within %g s"
                          % (function, self.endpoint, wait)) from None

    def flush(self, timeout=None):
        """Waits until every publish accepted so far is confirmed, refused or
        given up on (``timeout`` seconds, default the client's timeout).
        Returns how many publishes failed since the previous flush (their
        futures say why); raises :class:`~herald.Timeout` if some are still
        unconfirmed at the end."""
        limit = self.timeout + 1.0 if timeout is None else float(timeout)
        with self._cond:
            self._waiters += 1
            try:
                self._wake()
                if not self._cond.wait_for(lambda: not self._outbox and not self._settling, limit):
                    n = len(self._outbox)
                    raise Timeout("flush: %d publishes still unconfirmed after %g s" % (n, limit))
                failed, self._failed = self._failed, 0
                return failed
            finally:
                self._waiters -= 1

    def close(self, timeout=None):
        """Flushes (see :meth:`flush`), then stops the I/O thread and closes
        the socket; publishes still unconfirmed fail with Timeout. Safe to
        call twice."""
        with self._cond:
            if self._stop:
                return
            self._closing = True
            fatal = self._fatal
        if fatal is None:
            try:
                self.flush(timeout)
            except HeraldError:
                pass
        with self._cond:
            self._stop = True
        self._wake()
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def max_payload(self):
        """The broker's largest payload in bytes (None before its WELCOME)."""
        with self._cond:
            return self._limits[0] if self._limits else None

    # ---- the callers' side ------------------------------------------------

    def _check_open(self):
        if self._fatal is not None:
            raise _copy(self._fatal)
        if self._closing:
            raise Invalid("the client is closed")

    def _check_size(self, payload):
        with self._cond:
            limit = self._limits[0]
        if len(payload) > limit:
            raise TooLarge("payload of %d bytes is larger than the broker's max_payload (%d bytes)"
                           % (len(payload), limit), 2)

    def _wake(self):
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass   # the pipe is full: the thread is awake anyway (or closed)

    def _await_welcome(self):
        """Returns once a broker told its limits; raises why not."""
        with self._cond:
            self._check_open()
            if self._limits:
                return
            self._attempt += 1       # a new try: a broker may have come meanwhile
            self._no_broker = None
            self._wake()
            self._cond.wait_for(lambda: self._limits or self._fatal or self._no_broker, self.timeout)
            if self._fatal is not None:
                raise _copy(self._fatal)
            if self._limits:
                return
            if self._no_broker is not None:
                raise _copy(self._no_broker)
            raise Unreachable("broker %s unreachable: no answer within %g s" % (self.endpoint, self.timeout))

    def _submit(self, topic, function, payload, attributes, delay, dedup_id):
        payload = _proto.as_bytes(payload)
        attrs = _proto.check_attrs(attributes)
        dms = _proto.delay_ms(delay)
        if dedup_id is not None:
            _proto.check_id("dedup_id", dedup_id)
        self._await_welcome()
        self._check_size(payload)
        fut = _new_future()
        with self._cond:
            self._check_open()
            if self._full():
                if threading.current_thread() is self._thread:
                    raise HeraldError("window full: a confirm callback cannot wait for room (its own thread "
                                      "makes the room)")
                expired = self._expired
                self._waiters += 1
                try:
                    self._wake()
                    ok = self._cond.wait_for(lambda: not self._full() or self._fatal or self._closing,
                                             self.timeout)
                finally:
                    self._waiters -= 1
                self._check_open()
                # room made by giving up on old publishes is no room: the
                # broker is not answering, so this one is refused too
                if ok and self._expired != expired:
                    raise _copy(self._expired_exc)
                if not ok:
                    raise Timeout("window full (%d publishes, %d payload bytes in flight): no confirm from "
                                  "broker %s within %g s" % (len(self._outbox), self._bytes, self.endpoint,
                                                              self.timeout))
            self._seq += 1
            e = _Entry(self._seq, [self._seq, topic, attrs, dms, dedup_id, function], payload,
                       time.monotonic(), fut)
            self._outbox[e.seq] = e
            self._unsent.append(e)
            self._bytes += len(payload)
        self._wake()
        return fut

    def _full(self):
        return len(self._outbox) >= self.window or self._bytes >= WINDOW_BYTES

    def _wait(self, fut):
        with self._cond:
            self._waiters += 1
        self._wake()
        try:
            # the I/O thread settles it by submitted + timeout; the slack
            # only guards against a bug leaving the caller hanging
            return fut.result(self.timeout + 5.0)
        except concurrent.futures.TimeoutError:
            raise Timeout("no confirm from broker %s within %g s" % (self.endpoint, self.timeout)) from None
        finally:
            with self._cond:
                self._waiters -= 1

    # ---- the I/O thread -----------------------------------------------------

    def _run(self):
        try:
            while True:
                with self._cond:
                    if self._stop:
                        break
                    if self._attempt != self._seen_attempt:
                        self._seen_attempt = self._attempt
                        if self._link.verdict is not None and not getattr(self._link.verdict, "fatal", False):
                            self._link.verdict = None
                            self._link.refused_since = None
                            self._link.drops = 0
                self._send()
                self._finish(self._expire, time.monotonic())
                self._poll()
                self._finish(self._receive)
                self._finish(self._watch)
        except Exception as e:   # a bug here must not leave callers waiting forever
            with self._cond:
                self._fatal = HeraldError("the client's I/O thread failed: %r" % e)
        with self._cond:
            why = self._fatal or Timeout("the client closed before broker %s confirmed" % self.endpoint)
        self._finish(self._fail_all, why)
        self._link.close()

    def _finish(self, step, *args):
        """Runs step(*args, done), then ends the futures it collected in
        done; flush() returns only once they are ended."""
        done = _Done()
        step(*args, done)
        _settle(done)
        if done.published:
            with self._cond:
                self._settling -= done.published
                self._cond.notify_all()

    def _send_hello(self):
        self._link.sock.send(_proto.hello(self.producer, "publisher"), zmq.NOBLOCK)
        self._hello_pending = True

    def _send(self):
        """Sends queued invokes and batches of unsent publishes: at once
        while fewer than two batches are in flight (or someone waits), else
        once a full batch has gathered."""
        if self._hello_pending or self._fatal is not None:
            return
        sock = self._link.sock
        while True:
            with self._cond:
                if not self._inv_unsent:
                    break
                inv = self._inv_unsent[0]
                if inv.req not in self._invokes:   # given up on
                    self._inv_unsent.popleft()
                    continue
            try:
                sock.send_multipart([_proto.invoke(inv.req, inv.function, inv.timeout_ms), inv.payload], zmq.NOBLOCK)
            except zmq.Again:
                break
            with self._cond:
                self._inv_unsent.popleft()
                inv.gen = self._gen
        max_batch = self._limits[1]
        while True:
            with self._cond:
                while self._unsent and self._unsent[0].seq not in self._outbox:
                    self._unsent.popleft()
                n = len(self._unsent)
                if n == 0 or (not self._waiters and len(self._batches) >= 2 and n < max_batch):
                    return
                batch, size = [], 0
                while self._unsent and len(batch) < max_batch:
                    e = self._unsent[0]
                    if batch and size + e.size > HEADER_MAX:
                        break
                    self._unsent.popleft()
                    if e.seq in self._outbox:
                        batch.append(e)
                        size += e.size
            if not batch:
                return
            frames = [_proto.publish(self.producer, [e.wire for e in batch])] + [e.payload for e in batch]
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:   # the socket's queue is full: next turn
                with self._cond:
                    self._unsent.extendleft(reversed(batch))
                return
            with self._cond:
                self._serial += 1
                live = 0
                for e in batch:
                    if e.seq in self._outbox:
                        e.batch = self._serial
                        live += 1
                if live:
                    self._batches[self._serial] = live

    def _take(self, seq, value, done):
        """Ends the publish seq with value (an id or an exception). Under _cond."""
        e = self._outbox.pop(seq, None)
        if e is None:
            return   # a duplicate answer, or given up on
        self._bytes -= len(e.payload)
        if e.batch and e.batch in self._batches:
            self._batches[e.batch] -= 1
            if self._batches[e.batch] == 0:
                del self._batches[e.batch]
        if isinstance(value, BaseException):
            self._failed += 1
        self._settling += 1
        done.append((e.future, value))
        done.published += 1

    def _silence(self):
        """What "no answer in time" is now: Timeout from a broker that
        welcomed us on this connection, else Unreachable."""
        if self._link.handshaken and not self._hello_pending and self._limits:
            return Timeout("no confirm from broker %s within %g s" % (self.endpoint, self.timeout), None)
        note = " (%s)" % self._link.note if self._link.note else ""
        return Unreachable("broker %s unreachable: no answer within %g s%s" % (self.endpoint, self.timeout, note))

    def _expire(self, now, done):
        with self._cond:
            while self._outbox:
                e = next(iter(self._outbox.values()))
                if now - e.submitted < self.timeout:
                    break
                exc = self._silence()
                self._expired += 1
                self._expired_exc = exc
                self._take(e.seq, exc, done)

    def _poll(self):
        wait = TURN_MAX_S
        with self._cond:
            if self._outbox:
                e = next(iter(self._outbox.values()))
                wait = min(wait, max(0.0, e.submitted + self.timeout - time.monotonic()))
        p = zmq.Poller()
        p.register(self._link.sock, zmq.POLLIN)
        p.register(self._link.mon, zmq.POLLIN)
        p.register(self._wake_r, zmq.POLLIN)
        p.poll(int(wait * 1000) + 1)
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _receive(self, done):
        """Handles what arrived on the socket (before the monitor: what came
        before a disconnect is handled before the socket is replaced)."""
        sock = self._link.sock
        for _ in range(DRAIN_MAX):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                t, f = _proto.decode(frames)
            except _proto.Malformed:
                continue   # dropped, as the broker drops what it cannot read
            if t == "WELCOME":
                with self._cond:
                    mb = min(f[1] or 1, BATCH_MAX, _proto.MAX_BATCH)
                    self._limits = (f[0], mb)
                    self._hello_pending = False
                    self._cond.notify_all()
            elif t == "CONFIRM":
                with self._cond:
                    for seq, status, text in f[0]:
                        self._take(seq, text if status == 0 else from_status(status, text), done)
            elif t == "ERROR":
                self._on_error(f[0], f[1], done)
            elif t == "INVOKE_REPLY":
                req, status, error, mid = f[0], f[1], f[2], f[3]
                with self._cond:
                    inv = self._invokes.pop(req, None)
                if inv is None:
                    continue
                if status == 0:
                    done.append((inv.future, frames[1]))
                elif status == 8:
                    done.append((inv.future, HandlerError(error or "the handler failed", 8, mid)))
                else:
                    done.append((inv.future, from_status(status, error)))

    def _on_error(self, status, text, done):
        """An ERROR carries no correlation: it answers our oldest unanswered
        request — the HELLO while no WELCOME followed it, else the oldest
        batch in flight, else the oldest invoke sent."""
        exc = from_status(status or 1, text)
        with self._cond:
            if self._hello_pending:
                self._fatal = Refused("broker %s refused HELLO: %s" % (self.endpoint, text), status)
                self._fatal.fatal = True
                self._fail_all_locked(self._fatal, done)
                return
            if self._batches:
                serial = min(self._batches)
                for e in [e for e in self._outbox.values() if e.batch == serial]:
                    self._take(e.seq, _copy(exc), done)
                return
            sent = [i for i in self._invokes.values() if i.gen == self._gen]
            if sent:
                inv = min(sent, key=lambda i: i.req)
                del self._invokes[inv.req]
                done.append((inv.future, exc))

    def _fail_all(self, exc, done):
        """Every publish and invoke ends with (a copy of) exc."""
        with self._cond:
            self._fail_all_locked(exc, done)

    def _fail_all_locked(self, exc, done):
        for seq in list(self._outbox):
            self._take(seq, _copy(exc), done)
        for inv in list(self._invokes.values()):
            done.append((inv.future, _copy(exc)))
        self._invokes.clear()
        self._inv_unsent.clear()
        self._cond.notify_all()

    def _watch(self, done):
        """The monitor's news: a refused key or handshake (fatal), no broker
        before any WELCOME, or a dropped connection (a fresh socket, and
        every unconfirmed publish again)."""
        link = self._link
        link.events(time.monotonic(), "publishers")
        v = link.verdict
        if v is not None and getattr(v, "fatal", False):
            with self._cond:
                if self._fatal is None:
                    self._fatal = v
                    self._fail_all_locked(v, done)
            return
        if v is not None:
            with self._cond:
                # only a verdict of this try: one left from an earlier try
                # waits until the top of the loop has cleared it
                if not self._limits and self._no_broker is None and self._seen_attempt == self._attempt:
                    self._no_broker = v
                    self._cond.notify_all()
        if link.lost:
            self._reopen(done)

    def _reopen(self, done):
        """A fresh socket: HELLO, then (after WELCOME) every unconfirmed
        publish again with its original sequence. Confirms still unread on
        the old socket are dropped on purpose: their publishes come back
        "already stored" with the same ids. An invoke sent on the old
        socket is lost with it (not retried: it may have run)."""
        self._link.close()
        self._link = Link(self._ctx, self.endpoint, self._keys, hwm=self.window + 64)
        with self._cond:
            for inv in [i for i in self._invokes.values() if i.gen == self._gen]:
                del self._invokes[inv.req]
                done.append((inv.future, Unreachable("the connection to broker %s was lost during the invoke of %s"
                                                     % (self.endpoint, inv.function))))
            self._gen += 1
            self._batches.clear()
            for e in self._outbox.values():
                e.batch = 0
            self._unsent = collections.deque(self._outbox.values())
        self._send_hello()
