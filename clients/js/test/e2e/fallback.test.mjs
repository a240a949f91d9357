// A proxy on the way that refuses WebSocket upgrades (as some corporate proxies do): the
// SDK in headless Chromium falls back to Server-Sent Events by itself and works —
// subscribe, publish, receive, and resume after the proxy drops every connection.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { test } from 'node:test';
import { Scope, launchBrowser, openPage, startRoomcast, startStatic } from './harness.mjs';

/**
 * A TCP proxy to `upstream` (host:port) that answers any request carrying an `Upgrade`
 * header with 403 and closes, and passes everything else through. `cut()` drops every
 * open connection.
 */
async function upgradeBlockingProxy(scope, upstream) {
  const [host, port] = upstream.split(':');
  const sockets = new Set();
  let refused = 0;
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    let head = Buffer.alloc(0);
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      client.off('data', onData);
      const headers = head.subarray(0, end).toString('latin1');
      if (/^upgrade:/im.test(headers)) {
        refused++;
        client.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
        return;
      }
      const server = net.connect(Number(port), host);
      sockets.add(server);
      server.on('close', () => sockets.delete(server));
      server.on('error', () => client.destroy());
      client.on('error', () => server.destroy());
      server.write(head);
      client.pipe(server);
      server.pipe(client);
    };
    client.on('data', onData);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const cut = () => {
    for (const socket of sockets) socket.destroy();
  };
  scope.defer(() => {
    cut();
    return new Promise((resolve) => server.close(resolve));
  });
  return { addr: `127.0.0.1:${server.address().port}`, refused: () => refused, cut };
}

test('a proxy that refuses WebSocket upgrades: the SDK falls back to Server-Sent Events and works', { timeout: 90_000 }, async (t) => {
  const scope = new Scope();
  t.after(() => scope.cleanup());
  const web = await startStatic(scope);
  const server = await startRoomcast(scope, { ROOMCAST_WEBSOCKET__ALLOWED_ORIGINS: web.origin });
  const proxy = await upgradeBlockingProxy(scope, server.addr);
  const browser = await launchBrowser(scope);
  const page = await openPage(browser, web.origin);

  await page.evaluate(({ url }) => {
    window.app.makeClient('s', { urls: [url], reconnectDelayMs: 50, encoding: 'msgpack' });
    window.app.makeClient('p', { urls: [url], reconnectDelayMs: 50 });
  }, { url: `ws://${proxy.addr}/ws` });
  await page.evaluate(() => window.app.subscribeAll('s', ['fallback:1']));
  assert.ok(proxy.refused() >= 2, 'the WebSocket upgrades were refused on the way');
  assert.deepEqual(await page.evaluate(() => window.app.transports()), ['sse', 'sse']);

  const publishAll = (from, to) => page.evaluate(async ({ from, to }) => {
    const client = window.app.client('p');
    for (let n = from; n < to; n++) await window.app.publish(client, 'fallback:1', `m${n}`);
  }, { from, to });
  await publishAll(0, 20);
  await page.waitForFunction(() => window.record.delivered['fallback:1'].length >= 20);

  // The proxy drops every connection: the clients come back (over SSE again) and resume.
  proxy.cut();
  await page.waitForFunction(() => window.record.subscribed['fallback:1'].some((s) => s.resumed), null, { timeout: 20_000 });
  await publishAll(20, 40);
  await page.waitForFunction(() => window.record.delivered['fallback:1'].length >= 40, null, { timeout: 20_000 });

  const record = await page.evaluate(() => window.record);
  assert.deepEqual(record.failed, []);
  assert.deepEqual(record.resets, []);
  const delivered = record.delivered['fallback:1'];
  assert.deepEqual(delivered.map((d) => d.pub), Array.from({ length: 40 }, (_, n) => `m${n}`), 'every message once, in order');
  const resumed = record.subscribed['fallback:1'].filter((s) => s.resumed);
  assert.ok(resumed.every((s) => s.recovered), 'resumed exactly');
  assert.deepEqual(await page.evaluate(() => window.app.transports()), ['sse', 'sse']);
  assert.deepEqual(page.pageErrors, []);
});
