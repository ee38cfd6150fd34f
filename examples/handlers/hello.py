#!/usr/bin/env python3
"""hello.py — an exec handler in Python. The payload (a name) arrives on
stdin; attributes arrive as HERALD_ATTR_<KEY> variables. Exit 0 is success,
exit 65 a permanent failure (dead-lettered at once), anything else is retried."""
import os
import sys

name = sys.stdin.read().strip()
if not name:
    print("hello.py: empty payload: nothing to greet", file=sys.stderr)
    sys.exit(65)
greeting = {"en": "Hello", "fr": "Bonjour"}.get(os.environ.get("HERALD_ATTR_LANG", "en"), "Hello")
print(f"{greeting}, {name}!")
