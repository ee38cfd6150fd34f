"""herald — the Python client of herald, a self-hosted SNS + SQS + Lambda.

Publish events and invoke functions with :class:`Publisher`, administer the
broker (stats, workers, schedules, dead letters) with :class:`Admin`. Written
from the wire protocol (proto/PROTOCOL.md); needs only pyzmq and msgpack
(Debian: python3-zmq, python3-msgpack).

    import herald
    with herald.Publisher("tcp://127.0.0.1:7710") as p:
        mid = p.publish("orders.created", b'{"order": 42}', attributes={"region": "eu"})
        futures = [p.publish_async("events", b"%d" % i) for i in range(1000)]
        p.flush()
        print(p.invoke("resize", b"img.png", timeout=30))
"""
from .admin import Admin
from .errors import (BrokerError, Busy, Conflict, HandlerError, HeraldError, Invalid, NotFound, NoWorker,
                     Refused, Throttled, Timeout, TooLarge, UnknownFunction, UnknownTopic, Unreachable)
from .publisher import Publisher

__version__ = "0.1"   # HERALD_VERSION of include/herald.h
__all__ = ["Publisher", "Admin", "HeraldError", "Invalid", "Unreachable", "Timeout", "Busy", "Refused",
           "TooLarge", "UnknownTopic", "UnknownFunction", "Throttled", "NoWorker", "NotFound", "Conflict",
           "BrokerError", "HandlerError"]
