#!/bin/sh
# Records when it ran: one line "MESSAGE_ID START_NS END_NS" (date +%s%N, the
# realtime clock) appended to $TIMES_FILE in one write, after sleeping
# $SLEEP_S seconds (if set) between the two readings.
cat > /dev/null
start=$(date +%s%N)
if [ -n "$SLEEP_S" ]; then sleep "$SLEEP_S"; fi
end=$(date +%s%N)
echo "$HERALD_MESSAGE_ID $start $end" >> "$TIMES_FILE"
