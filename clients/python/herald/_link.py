"""One DEALER socket to a broker endpoint, with its monitor: CURVE keys, the
socket options, and what the monitor's events mean for a client (connection
refused, handshake refused, disconnected). Used by Publisher and Admin.

A link is one socket: after a lost connection the owner opens a new link
rather than letting libzmq reconnect the old socket, whose queue may still
hold requests that would reach the new connection before its HELLO.
"""
import os

import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from .errors import Invalid, Refused, Unreachable

# Invoke outputs are up to 6 MiB; dead letters up to max_payload (64 MiB at
# most) in a dlq.show answer: frames up to this are taken.
MAX_MSG_SIZE = (64 << 20) + (64 << 10)
# ZMTP heartbeats: a broker host that vanishes without a FIN still ends the
# connection, so the re-send starts.
ZMTP_HEARTBEAT_MS = 2000
ZMTP_HEARTBEAT_TIMEOUT_MS = 6000
# Connect retries with no connect for this long, before any handshake
# succeeded: "connection refused" at once rather than after the timeout.
REFUSED_S = 1.0
# Handshakes dropped without a reason in a row, before any succeeded, that
# make "CURVE on one side only, or the wrong broker key" (one alone is also a
# broker killed during ours).
HANDSHAKE_DROPS = 3

_EVENTS = (zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_DISCONNECTED |
           zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH |
           zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def load_keys(key_file, broker_key_file):
    """(public, secret, server) Z85 keys from `heraldctl keygen` files, or
    None for plaintext. Invalid when only one is given or a file is bad."""
    if key_file is None and broker_key_file is None:
        return None
    if key_file is None or broker_key_file is None:
        raise Invalid("CURVE needs both key_file (ours, NAME.key) and broker_key_file (the broker's NAME.pub)")
    if not zmq.has("curve"):
        raise Invalid("this libzmq was built without CURVE support")
    try:
        public, secret = zmq.auth.load_certificate(os.fspath(key_file))
        server, _ = zmq.auth.load_certificate(os.fspath(broker_key_file))
    except (OSError, ValueError) as e:
        raise Invalid("cannot read CURVE keys: %s" % e) from None
    if secret is None:
        raise Invalid("%s has no secret-key: give the .key file `heraldctl keygen` wrote, not the .pub" % key_file)
    return public, secret, server


class Link:
    """A DEALER connected to endpoint, and the state its monitor tells."""

    def __init__(self, ctx, endpoint, keys, hwm=1000, sndtimeo=-1):
        self.endpoint = endpoint
        self.curve = keys is not None
        self.sock = ctx.socket(zmq.DEALER)
        self.mon = None
        try:
            s = self.sock
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, hwm)
            s.setsockopt(zmq.RCVHWM, hwm)
            s.setsockopt(zmq.MAXMSGSIZE, MAX_MSG_SIZE)
            s.setsockopt(zmq.SNDTIMEO, sndtimeo)
            s.setsockopt(zmq.HEARTBEAT_IVL, ZMTP_HEARTBEAT_MS)
            s.setsockopt(zmq.HEARTBEAT_TIMEOUT, ZMTP_HEARTBEAT_TIMEOUT_MS)
            if keys:
                s.curve_publickey, s.curve_secretkey, s.curve_serverkey = keys
            self.mon = s.get_monitor_socket(_EVENTS)
            s.connect(endpoint)
        except zmq.ZMQError as e:
            self.close()
            raise Invalid("cannot connect to %s: %s" % (endpoint, e)) from None
        self.connected = False      # a TCP/IPC connect happened
        self.handshaken = False     # a ZMTP handshake succeeded
        self.lost = False           # a handshaken connection dropped
        self.refused_since = None   # monotonic: first connect retry with no connect since
        self.drops = 0              # handshakes dropped without a reason, in a row
        self.note = ""              # why the last handshake failed
        self.verdict = None         # an exception: no broker can answer on this link

    def events(self, now, role):
        """Reads the monitor; updates the state above. role names the key
        directory in messages ("publishers", "admins")."""
        while self.mon is not None:
            try:
                ev = recv_monitor_message(self.mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            e, value = ev["event"], ev["value"]
            if e == zmq.EVENT_CONNECTED:
                self.connected = True
                self.refused_since = None
            elif e == zmq.EVENT_CONNECT_RETRIED:
                if self.connected or self.handshaken:
                    continue
                if self.refused_since is None:
                    self.refused_since = now
                if now - self.refused_since >= REFUSED_S and self.verdict is None:
                    self.verdict = Unreachable("broker %s unreachable: connection refused (is it running?)"
                                               % self.endpoint)
            elif e == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshaken = True
                self.drops = 0
                self.note = ""
            elif e == zmq.EVENT_DISCONNECTED:
                if self.handshaken:
                    self.lost = True
            elif e == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.verdict = Refused("broker %s refused our CURVE key (ZAP status %s): is it in the broker's "
                                       "%s directory?" % (self.endpoint, value, role))
                self.verdict.fatal = True
            elif e == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                    why = ("it does not use CURVE, we do" if self.curve
                           else "it uses CURVE: give key_file and broker_key_file")
                    self.verdict = Refused("handshake with broker %s failed: CURVE on one side only (%s)"
                                           % (self.endpoint, why))
                else:
                    self.verdict = Refused("handshake with broker %s failed (ZMTP protocol error 0x%x)"
                                           % (self.endpoint, value))
                self.verdict.fatal = True
            elif e == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                self.note = "the handshake failed" + (": is the broker key right?" if self.curve else "")
                self.drops += 1
                if not self.handshaken and self.drops >= HANDSHAKE_DROPS and self.verdict is None:
                    self.verdict = Unreachable(
                        "broker %s unreachable: the handshake failed: %s" % (
                            self.endpoint,
                            "CURVE on one side only (it does not use CURVE, we do), or the wrong broker key?"
                            if self.curve else "CURVE on one side only? (it uses CURVE: give key_file and "
                            "broker_key_file)"))

    def close(self):
        if self.mon is not None:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self.mon.close(0)
            self.mon = None
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
