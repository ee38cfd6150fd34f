"""herald-bench's X2e handler: X2's handler (x2_handler.py) as an `exec`
function, one python3 process per event, doing for its one event what the
runtime client does for each: read the payload, parse it as JSON, call the
handler with the message id in its context, write the result to stdout."""
import json
import os
import sys
import types

from x2_handler import handler  # beside this file: sys.path[0]

context = types.SimpleNamespace(herald=types.SimpleNamespace(message_id=os.environ["HERALD_MESSAGE_ID"]))
sys.stdout.write(json.dumps(handler(json.loads(sys.stdin.buffer.read()), context)))
