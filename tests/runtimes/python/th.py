"""Test handler for tests/runtimes/run_clients.sh: does what event["op"] says."""
import os
import sys

import herald  # provided by the bootstrap, no file


class Unserializable:
    pass


def handler(event, context):
    if not isinstance(event, dict):
        return {"raw": event}
    op = event.get("op")
    if op == "raise":
        raise ValueError("boom")
    if op == "reject":
        raise herald.Reject(event.get("why", "rejected"))
    if op == "print":
        print("a line from the handler")
        print("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfake!")
        sys.stdout.write("no newline at the end")
        sys.stderr.write("and one to stderr\n")
        return {"printed": 3}
    if op == "context":
        h = context.herald
        return {
            "request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "memory": context.memory_limit_in_mb,
            "arn": context.invoked_function_arn,
            "topic": h.topic,
            "message_id": h.message_id,
            "attempt": h.attempt,
            "attributes": h.attributes,
            "remaining": context.get_remaining_time_in_millis(),
            "trace_env": os.environ.get("_X_AMZN_TRACE_ID"),
            "has_log_names": hasattr(context, "log_group_name") and hasattr(context, "log_stream_name"),
        }
    if op == "unserializable":
        return {"x": Unserializable()}
    if op == "string":
        return "hello"
    if op == "none":
        return None
    return event
