"""The smallest handler: returns its event (used by benchmarks)."""


def handler(event, context):
    return event
