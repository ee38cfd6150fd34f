#!/usr/bin/env python3
"""A Lambda Runtime API (2018-06-01) client for herald's `runtime` handlers.

Standard library only. Written from AWS's Runtime API documentation; it behaves
like AWS's Python runtime interface client where a handler can tell:

  handler(event, context)   _HANDLER = "module.function" (also "dir/module.function"
                            or "pkg.module.function"), imported once from the
                            current directory (LAMBDA_TASK_ROOT).
  event                     the body parsed as JSON; a body that is not JSON is
                            given as str, decoded UTF-8 with errors='surrogateescape'
                            (lossless: event.encode('utf-8', 'surrogateescape')
                            gives back the exact bytes).
  result                    json-serialized (None -> null, a str -> a JSON string);
                            bytes are sent as they are (as AWS does); anything json
                            cannot serialize -> error Runtime.MarshalError.
  exception                 /error {errorMessage, errorType, stackTrace};
                            herald.Reject(msg) -> errorType "Herald.Reject" (the
                            event is dead-lettered at once, no retries).

`import herald` works without any file: this bootstrap puts a small module in
sys.modules with Reject (permanent failure) and Retry (an ordinary failure).

One persistent HTTP/1.1 connection carries every request; the loop does no
imports and parses nothing it does not need (attributes are parsed when read).
"""
import json
import os
import socket
import sys
import time
import types

API = "/2018-06-01/runtime"
NEXT = API + "/invocation/next"
INVOCATION = API + "/invocation/"
INIT_ERROR = API + "/init/error"
ERROR_TYPE_HEADER = b"Lambda-Runtime-Function-Error-Type: "


# ---- the `herald` module handlers import ------------------------------------
class Reject(Exception):
    """Raise to fail the event permanently: it goes to the dead letters at once."""


class Retry(Exception):
    """Raise to fail this attempt; the event is retried (like any exception)."""


herald_module = types.ModuleType("herald", "herald runtime helpers (from the bootstrap)")
for cls in (Reject, Retry):
    cls.__module__ = "herald"
    setattr(herald_module, cls.__name__, cls)
sys.modules["herald"] = herald_module


# ---- context ------------------------------------------------------------------
class HeraldInfo:
    """herald's extras for one event: topic, message_id, attempt, attributes."""

    __slots__ = ("topic", "message_id", "attempt", "_attributes_json", "_attributes")

    def __init__(self, topic, message_id, attempt, attributes_json):
        self.topic = topic
        self.message_id = message_id
        self.attempt = attempt
        self._attributes_json = attributes_json
        self._attributes = None

    @property
    def attributes(self):
        """The message's attributes as a dict (parsed on first use)."""
        if self._attributes is None:
            raw = self._attributes_json
            try:
                # Header values arrive as latin-1 text; the JSON is UTF-8.
                parsed = json.loads(raw.encode("latin-1").decode("utf-8", "replace")) if raw else {}
            except (ValueError, UnicodeError):
                parsed = {}
            self._attributes = parsed if isinstance(parsed, dict) else {}
        return self._attributes

    def __repr__(self):
        return "HeraldInfo(topic=%r, message_id=%r, attempt=%r)" % (
            self.topic, self.message_id, self.attempt)


class LambdaContext:
    """The fields of AWS's Python context object, plus `herald` (a HeraldInfo)."""

    __slots__ = ("aws_request_id", "invoked_function_arn", "_deadline_ms", "herald")

    # The same for every event of this process: class attributes, no per-event cost.
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
    memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")  # a str, as AWS
    log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
    log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
    client_context = None
    identity = None

    def __init__(self, request_id, function_arn, deadline_ms, herald):
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self._deadline_ms = deadline_ms
        self.herald = herald

    def get_remaining_time_in_millis(self):
        left = self._deadline_ms - int(time.time() * 1000)
        return left if left > 0 else 0

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return "LambdaContext(aws_request_id=%r, function_name=%r, herald=%r)" % (
            self.aws_request_id, self.function_name, self.herald)


# ---- the connection -------------------------------------------------------------
class APIError(Exception):
    """The Runtime API went away or answered something that is not HTTP/1.1."""


class RuntimeAPI:
    """One keep-alive HTTP/1.1 connection to the Runtime API.

    A raw socket and a small response parser (Content-Length and chunked bodies):
    http.client parses every response's headers with the email package, which
    cost several times the CPU of this whole loop."""

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise SystemExit("bootstrap: AWS_LAMBDA_RUNTIME_API must be host:port, not %r" % address)
        self.addr = (host.strip("[]").encode("ascii", "replace"), int(port))
        self.host_line = ("Host: %s\r\n" % address).encode("latin-1")
        self.sock = None
        self.buf = b""

    def connect(self):
        self.close()
        self.sock = socket.create_connection(self.addr)  # host as bytes: no idna codec
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, data):
        """Send one whole request; return (status, headers, body bytes).

        headers maps lower-case names to str values (latin-1, as HTTP's bytes).
        A connection the server closed between requests is reopened once."""
        for attempt in (0, 1):
            got_any = False
            try:
                if self.sock is None:
                    self.connect()
                self.sock.sendall(data)
                got_any, result = self.read_response()
                return result
            except (OSError, APIError):
                self.close()
                if attempt or got_any:
                    raise

    def read_response(self):
        sock, buf = self.sock, self.buf
        recv = sock.recv
        end = buf.find(b"\r\n\r\n")
        while end < 0:
            more = recv(65536)
            if not more:
                raise APIError("the Runtime API closed the connection")
            start = len(buf) - 3  # the terminator may straddle the two reads
            buf += more
            end = buf.find(b"\r\n\r\n", start if start > 0 else 0)
        lines = buf[:end].decode("latin-1").split("\r\n")
        buf = buf[end + 4:]
        status_line = lines[0]
        if not status_line.startswith("HTTP/1."):
            raise APIError("not an HTTP/1.1 response: %r" % status_line[:80])
        status = int(status_line[9:12])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.lower()] = v.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body, buf = self.read_chunked(buf)
        else:
            n = int(headers.get("content-length", 0))
            while len(buf) < n:
                more = recv(max(65536, n - len(buf)))
                if not more:
                    raise APIError("the Runtime API closed the connection mid-body")
                buf += more
            body, buf = buf[:n], buf[n:]
        self.buf = buf
        if headers.get("connection", "").lower() == "close":
            self.close()
        return True, (status, headers, body)

    def read_chunked(self, buf):
        parts = []
        recv = self.sock.recv
        while True:
            eol = buf.find(b"\r\n")
            while eol < 0:
                more = recv(65536)
                if not more:
                    raise APIError("the Runtime API closed the connection mid-body")
                buf += more
                eol = buf.find(b"\r\n")
            size = int(buf[:eol].split(b";")[0], 16)
            if size == 0:  # "0\r\n", maybe trailers, then an empty line
                end = buf.find(b"\r\n\r\n", eol)
                while end < 0:
                    more = recv(65536)
                    if not more:
                        raise APIError("the Runtime API closed the connection mid-body")
                    buf += more
                    end = buf.find(b"\r\n\r\n", eol)
                return b"".join(parts), buf[end + 4:]
            need = eol + 2 + size + 2
            while len(buf) < need:
                more = recv(65536)
                if not more:
                    raise APIError("the Runtime API closed the connection mid-body")
                buf += more
            parts.append(buf[eol + 2:eol + 2 + size])
            buf = buf[need:]

    def get_next(self):
        return self.request(b"GET " + NEXT.encode() + b" HTTP/1.1\r\n" + self.host_line + b"\r\n")

    def post(self, path, body, extra=b""):
        """POST body (bytes) to path; a refusal (HTTP >= 300) is logged."""
        status, _, data = self.request(b"".join((
            b"POST ", path.encode("latin-1"), b" HTTP/1.1\r\n", self.host_line,
            b"Content-Type: application/json\r\nContent-Length: ", str(len(body)).encode(),
            b"\r\n", extra, b"\r\n", body)))
        if status >= 300:
            sys.stderr.write("bootstrap: POST %s: HTTP %d %s\n"
                             % (path, status, data[:200].decode("utf-8", "replace")))
        return status


# ---- errors ---------------------------------------------------------------------
def stack_lines(tb):
    """The traceback as AWS formats it: one string per frame, bootstrap frames cut."""
    import traceback  # on the error path only: it costs ~9 ms of cold start
    frames = traceback.extract_tb(tb)
    me = __file__
    while frames and frames[0].filename == me:
        frames.pop(0)
    return traceback.format_list(frames)


def error_body(message, error_type, stack):
    return json.dumps({"errorMessage": message, "errorType": error_type,
                       "stackTrace": stack}).encode()


def log_error(request_id, error_type, message, stack):
    sys.stderr.write("[ERROR] %s%s: %s\n%s" % (
        "" if request_id is None else request_id + " ", error_type, message, "".join(stack)))
    sys.stderr.flush()


def init_fail(api, error_type, message, stack):
    """Report an init error to the Runtime API and exit non-zero (as AWS does)."""
    log_error(None, error_type, message, stack)
    try:
        api.post(INIT_ERROR, error_body(message, error_type, stack),
                 ERROR_TYPE_HEADER + error_type.encode("latin-1", "replace") + b"\r\n")
    except (OSError, APIError) as e:
        sys.stderr.write("bootstrap: cannot report the init error: %s\n" % e)
    sys.exit(1)


def load_handler(api, spec):
    """Import the handler's module once; an init error is reported and ends us."""
    modname, dot, fname = spec.rpartition(".")
    if not dot or not modname or not fname:
        init_fail(api, "Runtime.MalformedHandlerName",
                  "Bad handler '%s': not enough values to unpack (expected 2, got 1)" % spec, [])
    if modname.split(".")[0].split("/")[0] in sys.builtin_module_names:
        init_fail(api, "Runtime.BuiltInModuleConflict",
                  "Cannot use built-in module %s as a handler module" % modname, [])
    import importlib  # once, at init
    try:
        module = importlib.import_module(modname.replace("/", "."))
    except ImportError as e:
        init_fail(api, "Runtime.ImportModuleError",
                  "Unable to import module '%s': %s" % (modname, e), [])
    except SyntaxError as e:
        init_fail(api, "Runtime.UserCodeSyntaxError",
                  "Syntax error in module '%s': %s" % (modname, e),
                  ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)])
    except Exception as e:  # an exception raised by the module's top level
        init_fail(api, type(e).__name__, str(e), stack_lines(e.__traceback__))
    handler = getattr(module, fname, None)
    if handler is None:
        init_fail(api, "Runtime.HandlerNotFound",
                  "Handler '%s' missing on module '%s'" % (fname, modname), [])
    if not callable(handler):
        init_fail(api, "Runtime.HandlerNotFound",
                  "Handler '%s' on module '%s' is not callable" % (fname, modname), [])
    return handler


def _default(obj):
    # AWS serializes Decimal (what boto3's DynamoDB gives) as a number.
    import decimal
    if isinstance(obj, decimal.Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


# ---- the loop -------------------------------------------------------------------
def main():
    env = os.environ
    address = env.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        sys.stderr.write("bootstrap: AWS_LAMBDA_RUNTIME_API is not set\n")
        return 2
    spec = env.get("_HANDLER", "")
    root = env.get("LAMBDA_TASK_ROOT") or os.getcwd()
    # The handler's modules come from the task root, not from beside this file.
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and sys.path[0] in (here, ""):
        sys.path[0] = root
    elif root not in sys.path:
        sys.path.insert(0, root)
    # stdout is the function's log: a line at a time, never mixed with the API.
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except AttributeError:
        pass

    api = RuntimeAPI(address)
    handler = load_handler(api, spec)

    # Everything the loop touches, bound to locals once.
    get_next = api.get_next
    post = api.post
    loads = json.loads
    encode = json.JSONEncoder(default=_default).encode
    unhandled = ERROR_TYPE_HEADER + b"Unhandled\r\n"
    setenv, unsetenv = env.__setitem__, env.pop
    Context, Info = LambdaContext, HeraldInfo
    reject = Reject

    while True:
        status, h, body = get_next()
        if status != 200:
            sys.stderr.write("bootstrap: GET next: HTTP %d %s\n"
                             % (status, body[:200].decode("utf-8", "replace")))
            return 1
        rid = h.get("lambda-runtime-aws-request-id")
        if not rid:
            sys.stderr.write("bootstrap: GET next without Lambda-Runtime-Aws-Request-Id\n")
            return 1
        trace = h.get("lambda-runtime-trace-id")
        if trace:
            setenv("_X_AMZN_TRACE_ID", trace)
        else:
            unsetenv("_X_AMZN_TRACE_ID", None)
        deadline = h.get("lambda-runtime-deadline-ms", "")
        attempt = h.get("herald-attempt", "")
        context = Context(rid, h.get("lambda-runtime-invoked-function-arn"),
                          int(deadline) if deadline.isdigit() else 0,
                          Info(h.get("herald-topic"), h.get("herald-message-id"),
                               int(attempt) if attempt.isdigit() else None,
                               h.get("herald-attributes")))
        try:
            event = loads(body)
        except ValueError:  # not JSON (or not UTF-8): the raw text
            event = body.decode("utf-8", "surrogateescape")

        try:
            result = handler(event, context)
        except Exception as e:
            error_type = "Herald.Reject" if isinstance(e, reject) else type(e).__name__
            message = str(e)
            stack = stack_lines(e.__traceback__)
            log_error(rid, error_type, message, stack)
            post(INVOCATION + rid + "/error", error_body(message, error_type, stack), unhandled)
            continue

        if result.__class__ is bytes:
            out = result
        else:
            try:
                out = encode(result).encode()
            except (TypeError, ValueError, OverflowError, RecursionError) as e:
                message = "Unable to marshal response: %s" % e
                log_error(rid, "Runtime.MarshalError", message, [])
                post(INVOCATION + rid + "/error",
                     error_body(message, "Runtime.MarshalError", []), unhandled)
                continue
        post(INVOCATION + rid + "/response", out)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except (OSError, APIError) as e:
        sys.stderr.write("bootstrap: the Runtime API went away: %s\n" % e)
        sys.exit(1)
