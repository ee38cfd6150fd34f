def handler(event, context):
    return {"deep": event}
