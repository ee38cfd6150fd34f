#!/bin/sh
# Reliability suite: writes $FLOOD_MIB MiB to stdout and as much to stderr, at once.
n=$(( ${FLOOD_MIB:-1024} * 1048576 ))
head -c $n /dev/zero >&2 &
head -c $n /dev/zero
wait
