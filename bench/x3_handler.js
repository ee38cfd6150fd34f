'use strict';
// herald-bench's X3 handler (a `runtime` function, Node): `return event`, plus
// the one write the bench checks exactly-once handling with. The message id
// goes to BENCH_LOG, opened once per process in append mode, in one write(2)
// per event; the bench matches the log against the ids the producer got
// confirmed (docs/PERFORMANCE.md). A plain value returned synchronously is the
// result (the runtime client's rule), so no Promise is made per event.
const fs = require('fs');

const log = fs.openSync(process.env.BENCH_LOG, 'a');

exports.handler = (event, context) => {
  fs.writeSync(log, context.herald.messageId + '\n');
  return event;
};
