#!/bin/sh
# Test exec handler: writes its pid to $PIDFILE and sleeps for five minutes.
echo $$ > "$PIDFILE.tmp" && mv "$PIDFILE.tmp" "$PIDFILE"
exec sleep 300
