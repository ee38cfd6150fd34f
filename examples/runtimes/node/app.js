'use strict';
// An example herald runtime handler (AWS Lambda's Node.js signature).
//
// Counts the words of a message and says who handled it. Throw herald.Reject for
// an event that can never succeed (it is dead-lettered at once); any other error
// fails this attempt and the event is retried.
const { Reject } = require('herald'); // given by the bootstrap; no file needed

exports.handler = async (event, context) => {
  const text = typeof event === 'string' ? event : event && event.text;
  if (typeof text !== 'string') {
    throw new Reject(`expected a string or {"text": string}, got ${typeof text}`);
  }
  console.log(`counting ${text.length} characters for ${context.awsRequestId}`);
  return {
    words: text.split(/\s+/).filter(Boolean).length,
    requestId: context.awsRequestId,
    function: context.functionName,
    topic: context.herald.topic,
    attempt: context.herald.attempt,
    remainingMs: context.getRemainingTimeInMillis(),
  };
};
