"""An example herald runtime handler (AWS Lambda's Python signature).

Counts the words of a message and says who handled it. Raise herald.Reject for an
event that can never succeed (it is dead-lettered at once); any other exception
fails this attempt and the event is retried.
"""
import herald  # given by the bootstrap; no file needed


def handler(event, context):
    text = event.get("text") if isinstance(event, dict) else event
    if not isinstance(text, str):
        raise herald.Reject("expected a string or {\"text\": string}, got %s" % type(text).__name__)
    print("counting %d characters for %s" % (len(text), context.aws_request_id))
    return {
        "words": len(text.split()),
        "request_id": context.aws_request_id,
        "function": context.function_name,
        "topic": context.herald.topic,
        "attempt": context.herald.attempt,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
