#!/bin/sh
# Test exec handler: starts a grandchild that escapes with setsid() (the
# subshell exits, so it re-parents to the supervisor), writes its pid to
# $PIDFILE, then outlives any timeout while ignoring SIGTERM.
( setsid sleep 300 & echo $! > "$PIDFILE.tmp" && mv "$PIDFILE.tmp" "$PIDFILE" )
trap '' TERM
while :; do sleep 1; done
