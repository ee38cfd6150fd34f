#!/bin/sh
# Test exec handler: appends "ATTEMPT START_MS" to $RECORD_FILE when it
# starts, then fails (stderr + exit 1) on attempts before $SUCCEED_AT
# (default 3) and succeeds from that attempt on.
echo "$HERALD_ATTEMPT $(date +%s%3N)" >> "$RECORD_FILE"
if [ "$HERALD_ATTEMPT" -lt "${SUCCEED_AT:-3}" ]; then
    echo "flaky: attempt $HERALD_ATTEMPT fails" >&2
    exit 1
fi
echo "flaky: attempt $HERALD_ATTEMPT succeeds"
