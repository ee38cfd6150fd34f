#!/bin/sh
# Test exec handler for runner/exec_parked_dir_…: says what run dir it found,
# then (MODE, its first argument) tampers with the run dirs that idle
# supervisors keep parked for their next attempt (WDIR/SHARD/sID), or with
# its own:
#   report  nothing
#   plant   writes a file into every parked dir
#   swap    replaces every parked dir with a symlink to $BAIT (a dir holding a file)
#   xattr   sets a user extended attribute on its own run dir
#   flags   sets an inode flag (chattr +A: no atime updates) on its own run dir
echo "entries=$(ls -A | wc -l)"
echo "pwd=$(pwd -P)"
echo "noatime=$(lsattr -d . 2>/dev/null | cut -d' ' -f1 | tr -cd A | wc -c)"
echo "xattrs=$(python3 -c 'import os
try: print(len(os.listxattr(".")))
except OSError: print(0)')"
wdir=$(dirname "$(dirname "$PWD")")
case "$1" in
plant) for d in "$wdir"/*/s*; do [ -d "$d" ] && echo planted > "$d/planted"; done ;;
swap) for d in "$wdir"/*/s*; do [ -d "$d" ] && rm -rf "$d" && ln -s "$BAIT" "$d"; done ;;
xattr) python3 -c 'import os; os.setxattr(".", "user.leak", b"1")' && echo "set=yes" ;;
flags) chattr +A . 2>/dev/null && echo "set=yes" ;;
esac
exit 0
