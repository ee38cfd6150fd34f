"""Wire format of proto/PROTOCOL.md, version 1: header frames as msgpack
arrays ``[1, TYPE, field…]``, the local checks of §2 (names, ids, attributes)
and the decoding of what the broker sends to a publisher or an admin client.
Pure functions: no sockets here.
"""
import re

import msgpack

from .errors import Invalid

VERSION = 1
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")
ID_RE = re.compile(r"[0-9A-Za-z_-]{1,63}\Z")
MAX_ATTRS = 16
MAX_ATTR_VALUE = 1024       # bytes
MAX_DELAY_MS = 900000
MAX_INVOKE_TIMEOUT_MS = 3600000
MAX_BATCH = 1024            # entries per PUBLISH the protocol allows
STR_MAX = 65536             # bytes of any header string

# Elements of each message the broker sends us, header included.
_SIZES = {"WELCOME": 5, "CONFIRM": 3, "ERROR": 4, "ADMIN_REPLY": 6, "INVOKE_REPLY": 6}
# Payload frames after the header.
_FRAMES = {"INVOKE_REPLY": 1}


class Malformed(Exception):
    """A frame from the broker that does not follow the protocol (dropped)."""


def check_name(what, value):
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise Invalid("%s %r: expected a name of 1 to 128 of A-Z a-z 0-9 _ . -" % (what, value))
    return value


def check_id(what, value):
    if not isinstance(value, str) or not ID_RE.match(value):
        raise Invalid("%s %r: expected an id of 1 to 63 of A-Z a-z 0-9 _ -" % (what, value))
    return value


def as_bytes(payload):
    """bytes for a payload frame: bytes-like as is, str as UTF-8."""
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise Invalid("payload must be bytes or str, not %s" % type(payload).__name__)


def check_attrs(attrs):
    """A copy of attrs as a dict str→str checked against §2 (Attributes)."""
    if not attrs:
        return {}
    items = attrs.items() if hasattr(attrs, "items") else attrs
    out = {}
    for k, v in items:
        check_name("attribute key", k)
        if not isinstance(v, str):
            raise Invalid("attribute %s: the value must be a str, not %s" % (k, type(v).__name__))
        if "\0" in v or len(v.encode("utf-8")) > MAX_ATTR_VALUE:
            raise Invalid("attribute %s: the value must be at most %d bytes, without NUL" % (k, MAX_ATTR_VALUE))
        if k in out:
            raise Invalid("attribute %s given twice" % k)
        out[k] = v
    if len(out) > MAX_ATTRS:
        raise Invalid("%d attributes: at most %d" % (len(out), MAX_ATTRS))
    return out


def delay_ms(delay):
    """Seconds (int or float) → whole ms, 0…900 000."""
    if isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise Invalid("delay must be a number of seconds")
    ms = int(round(delay * 1000))
    if ms < 0 or ms > MAX_DELAY_MS:
        raise Invalid("delay %r s: must be 0 to %d s" % (delay, MAX_DELAY_MS // 1000))
    return ms


def pack(*fields):
    return msgpack.packb([VERSION] + list(fields), use_bin_type=True)


def hello(client_id, role):
    return pack("HELLO", client_id, role)


def publish(producer, entries):
    """entries: [seq, topic, attrs, delay_ms, dedup_id|None, function|None] each."""
    return pack("PUBLISH", producer, entries)


def entry_size(entry):
    """Bytes of one PUBLISH entry in the header frame."""
    return len(msgpack.packb(entry, use_bin_type=True))


def invoke(req, function, timeout_ms):
    return pack("INVOKE", req, function, timeout_ms)


def admin(req, command, args):
    return pack("ADMIN", req, command, args)


def _uint(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def decode(frames):
    """(type, fields) of a message from the broker; Malformed when it is not
    one a client takes, in the shape §4 gives it."""
    try:
        h = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
    except Exception as e:   # any undecodable frame: the caller drops it
        raise Malformed("undecodable header: %s" % e)
    if not isinstance(h, list) or len(h) < 2 or h[0] != VERSION or not isinstance(h[1], str):
        raise Malformed("not a version 1 header")
    t = h[1]
    if t not in _SIZES or len(h) != _SIZES[t]:
        raise Malformed("%s with %d elements" % (t, len(h)))
    if len(frames) - 1 != _FRAMES.get(t, 0):
        raise Malformed("%s with %d payload frames" % (t, len(frames) - 1))
    f = h[2:]
    if t == "WELCOME" and not all(_uint(x) for x in f):
        raise Malformed("WELCOME: limits must be uints")
    if t == "CONFIRM":
        if not isinstance(f[0], list):
            raise Malformed("CONFIRM: entries must be an array")
        for e in f[0]:
            if not (isinstance(e, list) and len(e) == 3 and _uint(e[0]) and _uint(e[1]) and isinstance(e[2], str)):
                raise Malformed("CONFIRM: an entry is not [seq, status, text]")
    if t == "ERROR" and not (_uint(f[0]) and isinstance(f[1], str)):
        raise Malformed("ERROR: not [status, text]")
    if t in ("ADMIN_REPLY", "INVOKE_REPLY"):
        if not (_uint(f[0]) and _uint(f[1]) and (f[2] is None or isinstance(f[2], str))):
            raise Malformed("%s: not [req, status, error, …]" % t)
        if t == "INVOKE_REPLY" and not isinstance(f[3], str):
            raise Malformed("INVOKE_REPLY: message_id must be a str")
    return t, f
