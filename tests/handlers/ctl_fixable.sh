#!/bin/sh
# Test exec handler for heraldctl's tests. Appends one line
#   "FUNCTION TOPIC MESSAGE_ID ATTEMPT START_MS PAYLOAD"
# (fields separated by one space; TOPIC is empty for an async invoke) to
# $RECORD_FILE when it starts. Then, when $FIX_FILE is set and that file does
# not exist, it fails: "not fixed: ..." on stderr and exit ${FAIL_STATUS:-65}
# (65: permanent, dead-lettered at once). Otherwise it succeeds and prints
# "done MESSAGE_ID".
start=$(date +%s%3N)
payload=$(cat)
echo "$HERALD_FUNCTION $HERALD_TOPIC $HERALD_MESSAGE_ID $HERALD_ATTEMPT $start $payload" >> "$RECORD_FILE"
if [ -n "$FIX_FILE" ] && [ ! -e "$FIX_FILE" ]; then
    echo "not fixed: $FIX_FILE does not exist" >&2
    exit "${FAIL_STATUS:-65}"
fi
echo "done $HERALD_MESSAGE_ID"
