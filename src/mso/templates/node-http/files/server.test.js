// The service's own test: `npm test` (node --test) in this folder.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { createServer } = require('./server.js');

async function withServer(fn) {
  const server = createServer('hi there');
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  server.state.ready = true;
  const base = `http://127.0.0.1:${server.address().port}`;
  try { await fn(server, base); } finally { await new Promise((resolve) => server.drain(resolve)); }
}

test('health and readiness', () => withServer(async (server, base) => {
  assert.deepStrictEqual(await (await fetch(base + '/healthz')).json(), { status: 'ok' });
  assert.strictEqual((await fetch(base + '/ready')).status, 200);
}));

test('answers with its config', () => withServer(async (server, base) => {
  const body = await (await fetch(base + '/hello')).json();
  assert.strictEqual(body.message, 'hi there');
  assert.strictEqual(body.path, '/hello');
}));

test('draining finishes the request in flight', () => withServer(async (server, base) => {
  const slow = fetch(base + '/?delay=1');
  await new Promise((resolve) => setTimeout(resolve, 200));
  const closed = new Promise((resolve) => server.drain(resolve));
  assert.strictEqual(server.state.ready, false);
  assert.strictEqual((await slow).status, 200);
  await closed;
}));
