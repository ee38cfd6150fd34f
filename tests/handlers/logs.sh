#!/bin/sh
# Test exec handler (test_logs.c): two stderr lines naming its message and
# attempt, then its payload on stdout as "result:PAYLOAD" (log_output).
echo "hello from $HERALD_MESSAGE_ID attempt $HERALD_ATTEMPT" >&2
printf 'second line\n' >&2
printf 'result:%s' "$(cat)"
