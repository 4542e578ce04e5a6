// An HTTP service: twelve-factor, JSON logs, drains on SIGTERM. No dependencies.
// Environment: PORT (default 3000), GREETING, MSO_SERVICE / MSO_RELEASE (set by mso).
'use strict';
const http = require('node:http');

const SERVICE = process.env.MSO_SERVICE || 'service';

function log(level, msg, fields = {}) {
  process.stdout.write(JSON.stringify({ ts: Date.now() / 1000, level, service: SERVICE, msg, ...fields }) + '\n');
}

function createServer(greeting) {
  const state = { ready: false };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const send = (status, body) => {
      res.writeHead(status, { 'Content-Type': 'application/json', Connection: 'close' });
      res.end(JSON.stringify(body) + '\n');
    };
    if (url.pathname === '/healthz') return send(200, { status: 'ok' });
    if (url.pathname === '/ready') {
      return state.ready ? send(200, { status: 'ready' }) : send(503, { status: 'draining' });
    }
    const delay = Math.min(Math.max(Number(url.searchParams.get('delay')) || 0, 0), 30);
    const started = Date.now();
    setTimeout(() => {
      send(200, { message: greeting, service: SERVICE, release: process.env.MSO_RELEASE || null, replica: process.env.MSO_REPLICA || null, path: url.pathname });
      log('info', 'request', { method: req.method, path: url.pathname, status: 200, ms: Date.now() - started });
    }, delay * 1000);
  });
  server.state = state;
  // Stop taking connections; the callback runs once the requests in flight are done.
  server.drain = (done) => { state.ready = false; server.close(done); server.closeIdleConnections(); };
  return server;
}

if (require.main === module) {
  const server = createServer(process.env.GREETING || 'hello');
  const port = Number(process.env.PORT || 3000);
  server.listen(port, '0.0.0.0', () => { server.state.ready = true; log('info', 'listening', { port }); });
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => {
      log('info', 'draining', { signal });
      server.drain(() => { log('info', 'stopped'); process.exit(0); });
    });
  }
}

module.exports = { createServer };
