#!/bin/sh
# Test exec handler: appends "MESSAGE_ID ATTEMPT" to $START_FILE when it
# starts, sleeps $SLEEP_S seconds (default 2), then appends the same line to
# $RECORD_FILE: a delivery recorded there ran to completion.
echo "$HERALD_MESSAGE_ID $HERALD_ATTEMPT" >> "$START_FILE"
sleep "${SLEEP_S:-2}"
echo "$HERALD_MESSAGE_ID $HERALD_ATTEMPT" >> "$RECORD_FILE"
