#!/bin/sh
# Test exec handler: copies its exact initial environment (NUL-separated, from
# /proc, so the shell adds nothing) to $DUMP_DIR/$HERALD_MESSAGE_ID.env, whole
# or not at all (written aside, then renamed).
cat /proc/$$/environ > "$DUMP_DIR/$HERALD_MESSAGE_ID.tmp" && mv "$DUMP_DIR/$HERALD_MESSAGE_ID.tmp" "$DUMP_DIR/$HERALD_MESSAGE_ID.env"
