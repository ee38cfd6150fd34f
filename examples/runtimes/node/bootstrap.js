#!/usr/bin/env node
'use strict';
/*
 * A Lambda Runtime API (2018-06-01) client for herald's `runtime` handlers.
 *
 * Built-in modules only. Written from AWS's Runtime API documentation; it behaves
 * like AWS's Node.js runtime interface client where a handler can tell:
 *
 *   _HANDLER "file.export"   (also "dir/file.export", "file.obj.fn"): file.js or
 *                            file.cjs loaded with require() from the current
 *                            directory (LAMBDA_TASK_ROOT), file.mjs (or a .js that
 *                            is an ES module) with import(); loaded once.
 *   handler(event, context[, callback])
 *                            may return a Promise (async), or call callback(err,
 *                            result) / context.succeed / fail / done. A callback
 *                            handler that returns without calling back gets null
 *                            once nothing is left to run (as AWS). herald extras:
 *                            a plain (non-undefined) value returned synchronously
 *                            is the result; the result is sent as soon as the
 *                            callback is called (callbackWaitsForEmptyEventLoop is
 *                            accepted and treated as false: the process stays warm).
 *   event                    the body parsed as JSON, else the body as a string
 *                            (UTF-8; invalid sequences become U+FFFD).
 *   result                   JSON.stringify(result ?? null); a value JSON cannot
 *                            serialize (BigInt, a cycle) -> Runtime.MarshalError.
 *   errors                   /error {errorMessage, errorType, stackTrace}. A
 *                            herald.Reject, or any error whose name is
 *                            'Herald.Reject', -> errorType "Herald.Reject": the
 *                            event goes to the dead letters at once.
 *
 * herald.Reject / herald.Retry: `require('herald')` (CommonJS) and
 * `globalThis.herald` (both kinds, ES modules included) give { Reject, Retry }.
 *
 * Speed: one keep-alive connection on a raw TCP socket with a minimal HTTP/1.1
 * response parser (Content-Length and chunked): an echo loop measured ~110 µs of
 * CPU per event this way against ~270 µs with the http module and a keep-alive
 * Agent (maxSockets 1), most of what is left being the socket's system calls.
 */
const net = require('net');
const path = require('path');
const fs = require('fs');
const Module = require('module');
const { pathToFileURL } = require('url');
const util = require('util');

const API = '/2018-06-01/runtime';
const NEXT = API + '/invocation/next';
const INVOCATION = API + '/invocation/';
const INIT_ERROR = API + '/init/error';
const ERROR_TYPE_UNHANDLED = 'Lambda-Runtime-Function-Error-Type: Unhandled\r\n';

// ---- the `herald` module handlers use -----------------------------------------
class Reject extends Error {
  constructor(message) { super(message); this.name = 'Herald.Reject'; }
}
class Retry extends Error {
  constructor(message) { super(message); this.name = 'Herald.Retry'; }
}
const heraldModule = Object.freeze({ Reject, Retry });
globalThis.herald = heraldModule;
{
  // require('herald') resolves to the object above, with no file on disk.
  const load = Module._load;
  Module._load = function (request, parent, isMain) {
    if (request === 'herald') return heraldModule;
    return load.apply(this, arguments);
  };
}

// ---- the connection -------------------------------------------------------------
const CRLFCRLF = Buffer.from('\r\n\r\n');

class RuntimeApi {
  constructor(address) {
    const i = address.lastIndexOf(':');
    const port = Number(address.slice(i + 1));
    if (i <= 0 || !Number.isInteger(port)) {
      throw new Error(`AWS_LAMBDA_RUNTIME_API must be host:port, not '${address}'`);
    }
    this.host = address.slice(0, i);
    this.port = port;
    this.hostHeader = `Host: ${address}\r\n`;
    this.nextRequest = `GET ${NEXT} HTTP/1.1\r\n${this.hostHeader}\r\n`;
    this.sock = null;
    this.pending = null; // { data, resolve, reject, retried }
    this.buf = null;
    this.head = null; // the parsed head of the response being read
  }

  connect() {
    const s = net.connect(this.port, this.host);
    s.setNoDelay(true);
    s.on('data', (d) => this.onData(d));
    s.on('error', () => {}); // 'close' follows and decides
    s.on('close', () => this.onClose(s));
    this.sock = s;
    this.buf = null;
    this.head = null;
  }

  onClose(s) {
    if (s !== this.sock) return;
    this.sock = null;
    const p = this.pending;
    if (!p) return;
    if (!p.retried && this.head === null) {
      // The server closed a kept-alive connection: reopen it once.
      p.retried = true;
      this.connect();
      this.sock.write(p.data);
      return;
    }
    this.pending = null;
    p.reject(new Error('the Runtime API closed the connection'));
  }

  // One request at a time; resolves with { status, headers, body (Buffer) }.
  send(data) {
    return new Promise((resolve, reject) => {
      this.pending = { data, resolve, reject, retried: false };
      if (this.sock === null) this.connect();
      this.sock.ref();
      this.sock.write(data);
    });
  }

  get() { return this.send(this.nextRequest); }

  post(path, body, extraHeaders) {
    return this.send(`POST ${path} HTTP/1.1\r\n${this.hostHeader}` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
      `${extraHeaders}\r\n${body}`);
  }

  // While the handler runs, our idle socket must not keep the process alive, so
  // that 'beforeExit' tells us when a handler has nothing left to run.
  idle() { if (this.sock !== null) this.sock.unref(); }

  onData(chunk) {
    this.buf = this.buf === null ? chunk : Buffer.concat([this.buf, chunk]);
    for (;;) {
      if (this.head === null) {
        const end = this.buf.indexOf(CRLFCRLF);
        if (end < 0) return;
        this.head = parseHead(this.buf.latin1Slice(0, end));
        this.buf = this.buf.subarray(end + 4);
      }
      const h = this.head;
      let body;
      if (h.chunked) {
        body = takeChunked(this.buf);
        if (body === null) return;
        this.buf = body.rest;
        body = body.body;
      } else {
        if (this.buf.length < h.length) return;
        body = this.buf.subarray(0, h.length);
        this.buf = this.buf.subarray(h.length);
      }
      this.head = null;
      const p = this.pending;
      this.pending = null;
      if (this.buf.length === 0) this.buf = null;
      if (h.close && this.sock !== null) {
        const s = this.sock;
        this.sock = null;
        s.destroy();
      }
      if (p !== null) p.resolve({ status: h.status, headers: h.headers, body });
      if (this.buf === null) return;
    }
  }
}

function parseHead(text) {
  const lines = text.split('\r\n');
  const status = parseInt(lines[0].slice(9, 12), 10);
  const headers = Object.create(null);
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const c = line.indexOf(':');
    if (c > 0) headers[line.slice(0, c).toLowerCase()] = line.slice(c + 1).trim();
  }
  const te = headers['transfer-encoding'];
  return {
    status,
    headers,
    length: Number(headers['content-length'] || 0),
    chunked: te !== undefined && te.toLowerCase().includes('chunked'),
    close: (headers.connection || '').toLowerCase() === 'close',
  };
}

// A chunked body, whole, or null while it is incomplete.
function takeChunked(buf) {
  const parts = [];
  let at = 0;
  for (;;) {
    const eol = buf.indexOf('\r\n', at);
    if (eol < 0) return null;
    const size = parseInt(buf.latin1Slice(at, eol), 16);
    if (Number.isNaN(size)) throw new Error('bad chunked body from the Runtime API');
    if (size === 0) {
      // "0\r\n" then an empty line, or trailers ending with one.
      if (buf.length < eol + 4) return null;
      let stop = eol + 4;
      if (buf[eol + 2] !== 13 || buf[eol + 3] !== 10) {
        const end = buf.indexOf(CRLFCRLF, eol + 2);
        if (end < 0) return null;
        stop = end + 4;
      }
      return { body: Buffer.concat(parts), rest: buf.subarray(stop) };
    }
    if (buf.length < eol + 2 + size + 2) return null;
    parts.push(buf.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}

// ---- errors ---------------------------------------------------------------------
function errorResponse(err) {
  if (util.types.isNativeError(err) ||
      (err && typeof err.name === 'string' && typeof err.message === 'string')) {
    const type = err instanceof Reject || err.name === 'Herald.Reject' ? 'Herald.Reject' : err.name;
    return {
      errorMessage: err.message,
      errorType: type,
      stackTrace: typeof err.stack === 'string' && err.stack !== '' ? err.stack.split('\n') : [],
    };
  }
  return { errorMessage: String(err), errorType: typeof err, stackTrace: [] };
}

function logError(requestId, e) {
  process.stderr.write(`[ERROR] ${requestId ? requestId + ' ' : ''}${e.errorType}: ${e.errorMessage}\n` +
    (e.stackTrace.length ? e.stackTrace.join('\n') + '\n' : ''));
}

// An error the bootstrap makes itself: its stack would only show the bootstrap.
function initError(type, message) {
  const e = new Error(message);
  e.name = type;
  e.stack = '';
  return e;
}

// Report an init error to the Runtime API, then exit non-zero (as AWS does).
async function initFail(api, err) {
  const e = errorResponse(err);
  logError(null, e);
  try {
    await api.post(INIT_ERROR, JSON.stringify(e), `Lambda-Runtime-Function-Error-Type: ${e.errorType}\r\n`);
  } catch (x) {
    process.stderr.write(`bootstrap: cannot report the init error: ${x.message}\n`);
  }
  process.exit(1);
}

// ---- loading the handler --------------------------------------------------------
async function loadHandler(root, spec) {
  const slash = spec.lastIndexOf('/');
  const dir = spec.slice(0, slash + 1);
  const rest = spec.slice(slash + 1);
  const dot = rest.indexOf('.');
  if (dot <= 0 || dot === rest.length - 1) {
    throw initError('Runtime.MalformedHandlerName', `Bad handler ${spec}`);
  }
  const moduleName = dir + rest.slice(0, dot);
  const exportPath = rest.slice(dot + 1).split('.');
  const base = path.resolve(root, moduleName);

  let mod;
  try {
    if (fs.existsSync(base + '.mjs')) {
      mod = await import(pathToFileURL(base + '.mjs').href);
    } else if (fs.existsSync(base + '.cjs')) {
      mod = require(base + '.cjs');
    } else {
      let file = base;
      if (fs.existsSync(base + '.js')) file = base + '.js';
      else if (!fs.existsSync(base)) {
        // Not a file under the root: a package, as AWS allows (node_modules).
        try {
          file = require.resolve(moduleName, { paths: [root] });
        } catch (e) {
          throw initError('Runtime.ImportModuleError',
            `Error: Cannot find module '${moduleName}'`);
        }
      }
      try {
        mod = require(file);
      } catch (e) {
        if (e && e.code === 'ERR_REQUIRE_ESM') mod = await import(pathToFileURL(file).href);
        else throw e;
      }
    }
  } catch (e) {
    if (e && e.name && e.name.startsWith('Runtime.')) throw e;
    if (e instanceof SyntaxError) {
      throw initError('Runtime.UserCodeSyntaxError', `${e.name}: ${e.message}`);
    }
    if (e && e.code === 'MODULE_NOT_FOUND') {
      throw initError('Runtime.ImportModuleError', `Error: ${e.message}`);
    }
    throw e; // thrown by the module's top level: reported as it is
  }

  let fn = mod;
  for (const key of exportPath) {
    fn = fn == null ? undefined : fn[key];
  }
  if (typeof fn !== 'function') {
    throw initError('Runtime.HandlerNotFound', `${moduleName}.${exportPath.join('.')} is undefined or not exported`);
  }
  return fn;
}

// ---- context --------------------------------------------------------------------
const ENV = process.env;
const FUNCTION_NAME = ENV.AWS_LAMBDA_FUNCTION_NAME;
const FUNCTION_VERSION = ENV.AWS_LAMBDA_FUNCTION_VERSION;
const MEMORY_SIZE = ENV.AWS_LAMBDA_FUNCTION_MEMORY_SIZE; // a string, as AWS
const LOG_GROUP = ENV.AWS_LAMBDA_LOG_GROUP_NAME;
const LOG_STREAM = ENV.AWS_LAMBDA_LOG_STREAM_NAME;

class HeraldInfo {
  constructor(topic, messageId, attempt, attributesJson) {
    this.topic = topic;
    this.messageId = messageId;
    this.attempt = attempt;
    this._attributesJson = attributesJson;
    this._attributes = undefined;
  }

  // The message's attributes as an object, parsed on first use.
  get attributes() {
    if (this._attributes === undefined) {
      let a = {};
      try { if (this._attributesJson) a = JSON.parse(this._attributesJson); } catch (e) { a = {}; }
      this._attributes = a !== null && typeof a === 'object' && !Array.isArray(a) ? a : {};
    }
    return this._attributes;
  }

  toJSON() {
    return { topic: this.topic, messageId: this.messageId, attempt: this.attempt, attributes: this.attributes };
  }
}

class Context {
  constructor(requestId, arn, deadline, herald, finish) {
    this.awsRequestId = requestId;
    this.invokedFunctionArn = arn;
    this.functionName = FUNCTION_NAME;
    this.functionVersion = FUNCTION_VERSION;
    this.memoryLimitInMB = MEMORY_SIZE;
    this.logGroupName = LOG_GROUP;
    this.logStreamName = LOG_STREAM;
    this.callbackWaitsForEmptyEventLoop = false;
    this.herald = herald;
    this._deadline = deadline;
    this._finish = finish;
  }

  getRemainingTimeInMillis() {
    const left = this._deadline - Date.now();
    return left > 0 ? left : 0;
  }

  succeed(result) { this._finish(null, result); }
  fail(err) { this._finish(err === undefined || err === null ? 'handled' : err); }
  done(err, result) { this._finish(err, result); }
}
Object.defineProperty(Context.prototype, '_finish', { writable: true, enumerable: false, value: null });

// ---- the loop -------------------------------------------------------------------
async function main() {
  const address = ENV.AWS_LAMBDA_RUNTIME_API;
  if (!address) {
    process.stderr.write('bootstrap: AWS_LAMBDA_RUNTIME_API is not set\n');
    process.exit(2);
  }
  const api = new RuntimeApi(address);
  const root = ENV.LAMBDA_TASK_ROOT || process.cwd();

  let handler;
  try {
    handler = await loadHandler(root, ENV._HANDLER || '');
  } catch (e) {
    await initFail(api, e);
  }

  // The invocation in progress: how it ends, and what ends it when the handler
  // leaves nothing to run ('beforeExit').
  let current = null;
  process.on('beforeExit', () => {
    const c = current;
    if (c === null) return;
    if (c.async) {
      c.finish(initError('Runtime.NodeJsExit',
        'The handler returned a Promise that never settled and nothing is left to run'));
    } else {
      c.finish(null, null); // a callback handler that never called back: null (as AWS)
    }
  });
  // As AWS: the event in progress gets the error, then the process exits.
  const fatal = (code) => (err) => {
    const c = current;
    const e = errorResponse(err);
    logError(c && c.requestId, e);
    if (c === null) process.exit(code);
    current = null;
    api.post(INVOCATION + c.requestId + '/error', JSON.stringify(e), ERROR_TYPE_UNHANDLED)
      .finally(() => process.exit(code));
  };
  process.on('uncaughtException', fatal(129));
  process.on('unhandledRejection', fatal(128));

  for (;;) {
    const res = await api.get();
    if (res.status !== 200) {
      process.stderr.write(`bootstrap: GET next: HTTP ${res.status} ${res.body.toString('utf8', 0, 200)}\n`);
      process.exit(1);
    }
    const h = res.headers;
    const requestId = h['lambda-runtime-aws-request-id'];
    if (!requestId) {
      process.stderr.write('bootstrap: GET next without Lambda-Runtime-Aws-Request-Id\n');
      process.exit(1);
    }
    const trace = h['lambda-runtime-trace-id'];
    if (trace) ENV._X_AMZN_TRACE_ID = trace;
    else delete ENV._X_AMZN_TRACE_ID;
    const attempt = h['herald-attempt'];

    let event;
    const text = res.body.toString('utf8');
    try {
      event = JSON.parse(text);
    } catch (e) {
      event = text;
    }

    // Settles once, with the first of: callback, context.done/succeed/fail,
    // the returned Promise, a returned value, a throw, or 'beforeExit'.
    let settle;
    const outcome = new Promise((resolve) => { settle = resolve; });
    const inv = { requestId, async: false, finish: null };
    inv.finish = (err, result) => {
      if (current !== inv) return;
      current = null;
      settle(err !== undefined && err !== null ? { err } : { result });
    };
    const callback = (err, result) => inv.finish(err, result);
    const context = new Context(requestId, h['lambda-runtime-invoked-function-arn'],
      Number(h['lambda-runtime-deadline-ms']) || 0,
      new HeraldInfo(h['herald-topic'], h['herald-message-id'],
        attempt !== undefined && /^\d+$/.test(attempt) ? Number(attempt) : undefined,
        h['herald-attributes']),
      inv.finish);

    current = inv;
    api.idle();
    try {
      const r = handler(event, context, callback);
      if (r !== null && r !== undefined && typeof r.then === 'function') {
        inv.async = true;
        r.then((v) => inv.finish(null, v), (e) => inv.finish(e === undefined || e === null ? 'handled' : e));
      } else if (r !== undefined) {
        inv.finish(null, r);
      }
    } catch (e) {
      inv.finish(e === undefined || e === null ? 'handled' : e);
    }
    const out = await outcome;

    if (out.err === undefined) {
      let body;
      try {
        body = JSON.stringify(out.result === undefined ? null : out.result);
        if (body === undefined) body = 'null'; // a function or a symbol
      } catch (e) {
        const m = { errorMessage: `Unable to stringify response body: ${e.message}`, errorType: 'Runtime.MarshalError', stackTrace: [] };
        logError(requestId, m);
        await api.post(INVOCATION + requestId + '/error', JSON.stringify(m), ERROR_TYPE_UNHANDLED);
        continue;
      }
      const r = await api.post(INVOCATION + requestId + '/response', body, '');
      if (r.status >= 300) {
        process.stderr.write(`bootstrap: POST response: HTTP ${r.status} ${r.body.toString('utf8', 0, 200)}\n`);
      }
    } else {
      const e = errorResponse(out.err);
      logError(requestId, e);
      const r = await api.post(INVOCATION + requestId + '/error', JSON.stringify(e), ERROR_TYPE_UNHANDLED);
      if (r.status >= 300) {
        process.stderr.write(`bootstrap: POST error: HTTP ${r.status} ${r.body.toString('utf8', 0, 200)}\n`);
      }
    }
  }
}

main().catch((e) => {
  process.stderr.write(`bootstrap: ${e && e.message ? e.message : e}\n`);
  process.exit(1);
});
