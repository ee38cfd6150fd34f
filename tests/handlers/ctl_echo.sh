#!/bin/sh
# Test exec handler: its output is its payload, byte for byte.
exec cat
