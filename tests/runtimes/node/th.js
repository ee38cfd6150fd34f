'use strict';
// Test handler for tests/runtimes/run_clients.sh: does what event.op says.
const herald = require('herald'); // provided by the bootstrap, no file

class ValueError extends Error {
  constructor(m) { super(m); this.name = 'ValueError'; }
}

exports.handler = function (event, context, callback) {
  if (typeof event !== 'object' || event === null) return Promise.resolve({ raw: event });
  switch (event.op) {
    case 'raise':
      throw new ValueError('boom');
    case 'reject':
      throw new herald.Reject(event.why || 'rejected');
    case 'reject_global':
      throw new globalThis.herald.Reject(event.why || 'rejected');
    case 'reject_name': {
      const e = new Error(event.why || 'rejected');
      e.name = 'Herald.Reject';
      throw e;
    }
    case 'print':
      console.log('a line from the handler');
      console.log('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfake!');
      process.stdout.write('no newline at the end');
      console.error('and one to stderr');
      return Promise.resolve({ printed: 3 });
    case 'context': {
      const h = context.herald;
      return Promise.resolve({
        request_id: context.awsRequestId,
        function_name: context.functionName,
        function_version: context.functionVersion,
        memory: context.memoryLimitInMB,
        arn: context.invokedFunctionArn,
        topic: h.topic,
        message_id: h.messageId,
        attempt: h.attempt,
        attributes: h.attributes,
        remaining: context.getRemainingTimeInMillis(),
        trace_env: process.env._X_AMZN_TRACE_ID,
        has_log_names: 'logGroupName' in context && 'logStreamName' in context,
      });
    }
    case 'unserializable':
      return Promise.resolve({ x: 10n });
    case 'string':
      return Promise.resolve('hello');
    case 'none':
      return Promise.resolve(undefined);
    case 'async':
      return new Promise((resolve) => setTimeout(() => resolve({ async: true, n: event.n }), 5));
    case 'async_reject':
      return new Promise((_, reject) => setTimeout(() => reject(new ValueError('async boom')), 5));
    case 'callback':
      setImmediate(() => callback(null, { callback: true, n: event.n }));
      return undefined;
    case 'callback_error':
      setImmediate(() => callback(new ValueError('callback boom')));
      return undefined;
    case 'callback_forgotten':
      return undefined; // never calls back: null once nothing is left to run (as AWS)
    case 'never_settles':
      return new Promise(() => {}); // nothing left to run: Runtime.NodeJsExit (as AWS)
    case 'sync_value':
      return { sync: true };
    default:
      return Promise.resolve(event);
  }
};
