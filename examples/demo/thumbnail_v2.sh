#!/bin/sh
# thumbnail v2: the fix — names are taken whole.
name=$(cat)
echo "thumbnail of $name: 128x128"
