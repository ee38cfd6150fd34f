#!/bin/sh
# Test exec handler: floods stdout and stderr with 100 MiB each, at once.
head -c 104857600 /dev/zero >&2 &
head -c 104857600 /dev/zero
wait
