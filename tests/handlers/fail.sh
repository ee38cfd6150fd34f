#!/bin/sh
# Test exec handler: says so on stderr and exits with status $1.
echo "failing with $1" >&2
exit "$1"
