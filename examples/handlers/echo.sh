#!/bin/sh
# echo.sh — an exec handler in shell: the payload comes on stdin and goes back
# on stdout (the result of `heraldctl invoke`); a line about it goes to stderr.
# When the function's env sets ECHO_LOG, the message id is appended there.
[ -n "$ECHO_LOG" ] && echo "$HERALD_MESSAGE_ID" >> "$ECHO_LOG"
echo "echo: $HERALD_FUNCTION got $HERALD_MESSAGE_ID from topic '$HERALD_TOPIC' (attempt $HERALD_ATTEMPT/$HERALD_MAX_ATTEMPTS)" >&2
exec cat
