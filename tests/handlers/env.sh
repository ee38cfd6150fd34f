#!/bin/sh
# Test exec handler: prints its working directory, how many entries it holds,
# then its exact initial environment (from /proc, so the shell adds nothing).
echo "cwd=$(pwd -P)"
echo "entries=$(ls -A | wc -l)"
tr '\0' '\n' < /proc/$$/environ
