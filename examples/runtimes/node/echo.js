'use strict';
// The smallest handler: returns its event (used by benchmarks).
exports.handler = async (event) => event;
