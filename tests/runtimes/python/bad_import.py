import no_such_module_anywhere  # noqa: F401  (an init error on purpose)


def handler(event, context):
    return event
