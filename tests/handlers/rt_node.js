// rt_node.js: a runtime function's handler for the integration tests, run by
// examples/runtimes/node/bootstrap.js. The event says what to do ({op}).
'use strict';
let calls = 0;

exports.handler = async (event, context) => {
  calls++;
  if (!event || typeof event !== 'object' || !event.op) return event;
  switch (event.op) {
    case 'pid':
      return { pid: process.pid, calls };
    case 'context':
      return {
        awsRequestId: context.awsRequestId,
        functionName: context.functionName,
        memoryLimitInMB: Number(context.memoryLimitInMB),
        invokedFunctionArn: context.invokedFunctionArn,
        remainingMs: context.getRemainingTimeInMillis(),
      };
    case 'raise':
      throw new TypeError(event.message || 'boom');
    case 'reject': {
      const e = new Error(event.message || 'not for us');
      e.name = 'Herald.Reject';
      throw e;
    }
    case 'later':
      return new Promise((resolve) => setTimeout(() => resolve({ later: true }), 10));
    default:
      return { unknown: event.op };
  }
};
