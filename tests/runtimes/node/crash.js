'use strict';
// An exception thrown outside the handler's call while an event is in progress:
// reported as that event's error, then the process exits (as AWS).
exports.handler = (event, context, callback) => {
  if (event.late) {
    setTimeout(() => { throw new TypeError('late throw'); }, 5);
    return;
  }
  callback(null, event);
};
