#!/bin/sh
# Test exec handler for fencing: the first attempt writes its pid to
# $PID_FILE and sleeps (as that pid) far longer than the test; a later attempt
# appends "MESSAGE_ID ATTEMPT" to $RECORD_FILE and succeeds.
if [ "$HERALD_ATTEMPT" -ge 2 ]; then
    echo "$HERALD_MESSAGE_ID $HERALD_ATTEMPT" >> "$RECORD_FILE"
    exit 0
fi
echo $$ >> "$PID_FILE"
exec sleep 60
