#!/bin/sh
# Test exec handler for runner/exec_supervisor_reused_…: says who started it
# and what run dir it found, then dirties that dir (a file, a subtree it
# cannot read, its own mode) and leaves a setsid'ed sleeper behind. It reads
# its whole payload first (the supervisor's memory test sends a large one).
cat > /dev/null
echo "ppid=$PPID"
echo "pwd=$(pwd)"
echo "home=$HOME"
echo "entries=$(ls -A | wc -l)"
echo "mode=$(stat -c %a .)"
echo x > file
mkdir -p sub/deeper && echo y > sub/deeper/f && chmod 000 sub
setsid sleep 60 > /dev/null 2>&1 < /dev/null &
echo "sleeper=$!"
chmod 500 .
