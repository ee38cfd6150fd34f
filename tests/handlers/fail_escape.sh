#!/bin/sh
# Test exec handler: starts a grandchild that escapes its process group with
# setsid() (the subshell exits, so it re-parents to the supervisor), appends
# its pid to $PID_DIR/escaped.pids and its own pid to $PID_DIR/handler.pids,
# then sleeps far past any timeout (exec keeps its pid).
( setsid sleep 300 & echo $! >> "$PID_DIR/escaped.pids" )
echo $$ >> "$PID_DIR/handler.pids"
exec sleep 300
