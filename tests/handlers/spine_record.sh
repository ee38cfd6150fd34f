#!/bin/sh
# Records what the handler saw: one line "MESSAGE_ID TOPIC ATTR_KIND PAYLOAD"
# appended to $RECORD_FILE (set in the function's env).
payload=$(cat)
echo "$HERALD_MESSAGE_ID $HERALD_TOPIC ${HERALD_ATTR_KIND:--} $payload" >> "$RECORD_FILE"
