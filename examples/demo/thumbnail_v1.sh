#!/bin/sh
# thumbnail v1: "makes a thumbnail" of the upload named on stdin — and chokes
# on names with a space in them (the bug the demo fixes).
name=$(cat)
case "$name" in
  *" "*) echo "thumbnail: cannot open '${name%% *}': no such file (v1 splits names on spaces)" >&2; exit 1;;
esac
echo "thumbnail of $name: 128x128"
