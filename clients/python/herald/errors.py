"""The exceptions of the herald client, one per kind of failure.

Every exception is a :class:`HeraldError`; ``status`` is the broker's status
number (proto/PROTOCOL.md §5) when the broker answered, else ``None``, and
``str(e)`` is the broker's words (or the client's, when the broker never
answered).
"""


class HeraldError(Exception):
    """Base class: ``status`` (int or None) and the one-line reason."""

    def __init__(self, text, status=None):
        super().__init__(text)
        self.text = text
        self.status = status


class Invalid(HeraldError, ValueError):
    """An argument the client refuses before sending (bad name, too many
    attributes, delay out of range, a payload above the broker's max_payload…)."""


class Unreachable(HeraldError):
    """No broker answered: nothing listens at the endpoint, the handshake
    failed, or the connection was lost and did not come back in time."""


class Timeout(HeraldError):
    """The broker is connected but did not answer in time (status 9 when the
    broker itself says so)."""


class Busy(Timeout):
    """Status 12: no worker slot became free before the invoke's deadline;
    nothing ran."""


class Refused(HeraldError):
    """The broker refused the request (status 1, malformed; or our CURVE key)."""


class TooLarge(Refused):
    """Status 2: the payload is larger than the broker's max_payload."""


class UnknownTopic(Refused):
    """Status 3: the broker has no such topic."""


class UnknownFunction(Refused):
    """Status 4: the broker has no such function."""


class Throttled(Refused):
    """Status 5: the backlog is above max_backlog or the disk is nearly
    full; nothing was stored — try later."""


class NoWorker(Refused):
    """Status 7: no connected worker serves the function."""


class NotFound(Refused):
    """Status 10: no such dead letter (or other object)."""


class Conflict(Refused):
    """Status 11."""


class BrokerError(HeraldError):
    """Status 6: the broker's commit failed; nothing was stored."""


class HandlerError(HeraldError):
    """Status 8: the handler failed; ``text`` is its error (stderr tail,
    set_error text or "timeout after N s"), ``message_id`` the id it saw."""

    def __init__(self, text, status=8, message_id=""):
        super().__init__(text, status)
        self.message_id = message_id


_BY_STATUS = {1: Refused, 2: TooLarge, 3: UnknownTopic, 4: UnknownFunction, 5: Throttled,
              6: BrokerError, 7: NoWorker, 8: HandlerError, 9: Timeout, 10: NotFound,
              11: Conflict, 12: Busy}

STATUS_NAMES = {1: "malformed request", 2: "payload too large", 3: "unknown topic",
                4: "unknown function", 5: "throttled", 6: "internal error",
                7: "no worker serves the function", 8: "handler failed", 9: "timeout",
                10: "not found", 11: "conflict", 12: "no worker slot became free in time"}


def from_status(status, text):
    """The exception for a non-zero broker status, carrying its text."""
    cls = _BY_STATUS.get(status, Refused)
    return cls(text or STATUS_NAMES.get(status, "status %d" % status), status)
