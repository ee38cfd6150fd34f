#!/bin/sh
# x1_handler.sh — herald-bench's X1 exec handler: as near /bin/true as a
# correctness check allows. One builtin append of the message id (no fork, no
# read of stdin), so the bench can count every invocation exactly once.
echo "$HERALD_MESSAGE_ID" >> "$BENCH_LOG"
