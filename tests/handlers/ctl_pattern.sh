#!/bin/sh
# Test exec handler: writes ${PATTERN_BYTES:-1048576} deterministic bytes to
# stdout, byte i being (i * 31 + i / 256) mod 256: every byte value, NULs and
# newlines included, and no 256-byte period (a dropped or repeated block shows).
exec python3 -c '
import os, sys
n = int(os.environ.get("PATTERN_BYTES", "1048576"))
sys.stdout.buffer.write(bytes((i * 31 + (i >> 8)) & 255 for i in range(n)))
'
