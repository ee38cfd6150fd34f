#!/bin/sh
# Reliability suite: leaves a grandchild behind (in its process group, not
# setsid) that would outlive it, writes its pid to $PIDFILE, and exits 0.
( sleep 300 & echo $! > "$PIDFILE.tmp" && mv "$PIDFILE.tmp" "$PIDFILE" )
exit 0
