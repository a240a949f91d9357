// Browser origins: a page on a listed origin may call the HTTP API (CORS, with a
// preflight) and open the WebSocket; a page on an unlisted origin is refused by both.
// The static server answers on two origins: http://127.0.0.1:P (listed) and
// http://localhost:P (not listed).
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { Scope, launchBrowser, openPage, startRoomcast, startStatic } from './harness.mjs';

/** The HTTP status a WebSocket upgrade from `origin` gets. */
function upgradeStatus(addr, origin) {
  const [host, port] = addr.split(':');
  return new Promise((resolve, reject) => {
    const req = http.request({
      host, port, path: '/ws', timeout: 5_000,
      headers: { Origin: origin, Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('timeout', () => req.destroy(new Error('no answer to the upgrade')));
    req.on('error', reject);
    req.end();
  });
}

describe('origins', { timeout: 90_000 }, () => {
  const scope = new Scope();
  let web;
  let rc;
  let browser;
  before(async () => {
    web = await startStatic(scope);
    rc = await startRoomcast(scope, {
      ROOMCAST_CORS__ALLOWED_ORIGINS: web.origin,
      ROOMCAST_WEBSOCKET__ALLOWED_ORIGINS: web.origin,
    });
    browser = await launchBrowser(scope);
  });
  after(() => scope.cleanup());

  it('a listed origin fetch()es the API: simple GET and a POST with a preflight, exposed headers readable', async () => {
    const page = await openPage(browser, web.origin, 'blank.html');
    const result = await page.evaluate(async (api) => {
      const list = await fetch(`${api}/api/v1/issues?limit=1`);
      const listBody = await list.json();
      const pub = await fetch(`${api}/api/v1/publish`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Idempotency-Key': 'cors-test-1' },
        body: JSON.stringify({ room: 'cors:room', data: { hello: 'browser' } }),
      });
      return {
        listStatus: list.status,
        listItems: Array.isArray(listBody.items),
        listRequestId: list.headers.get('x-request-id'),
        pubStatus: pub.status,
        pubBody: await pub.json(),
        pubRequestId: pub.headers.get('x-request-id'),
        rateLimit: pub.headers.get('x-ratelimit-limit'),
      };
    }, rc.http);
    assert.equal(result.listStatus, 200);
    assert.equal(result.listItems, true);
    assert.ok(result.listRequestId, 'X-Request-Id is exposed to the page');
    assert.equal(result.pubStatus, 200);
    assert.equal(result.pubBody.room, 'cors:room');
    assert.equal(result.pubBody.seq, 1);
    assert.ok(result.pubRequestId, 'X-Request-Id is exposed on the POST');
    await page.close();
  });

  it('the preflight names the allowed methods and headers', async () => {
    const res = await fetch(`${rc.http}/api/v1/publish`, {
      method: 'OPTIONS',
      headers: {
        Origin: web.origin,
        'Access-Control-Request-Method': 'POST',
        'Access-Control-Request-Headers': 'content-type,idempotency-key,authorization',
      },
    });
    assert.ok(res.status === 200 || res.status === 204, `preflight status ${res.status}`);
    assert.equal(res.headers.get('access-control-allow-origin'), web.origin);
    const allowed = (res.headers.get('access-control-allow-headers') ?? '').toLowerCase();
    for (const h of ['authorization', 'idempotency-key', 'if-match', 'content-type']) assert.ok(allowed.includes(h), `allows ${h}: ${allowed}`);
    assert.match(res.headers.get('access-control-allow-methods') ?? '', /POST/);
    assert.match((res.headers.get('vary') ?? '').toLowerCase(), /origin/);
  });

  it('an unlisted origin is blocked by the browser', async () => {
    const page = await openPage(browser, web.otherOrigin, 'blank.html');
    const outcome = await page.evaluate(async (api) => {
      try {
        const res = await fetch(`${api}/api/v1/issues?limit=1`);
        return `answered ${res.status}`;
      } catch (err) {
        return `blocked: ${err.name}`;
      }
    }, rc.http);
    assert.equal(outcome, 'blocked: TypeError');
    const post = await page.evaluate(async (api) => {
      try {
        await fetch(`${api}/api/v1/publish`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ room: 'cors:refused', data: 1 }),
        });
        return 'answered';
      } catch (err) {
        return `blocked: ${err.name}`;
      }
    }, rc.http);
    assert.equal(post, 'blocked: TypeError');
    // The refused preflight published nothing.
    const history = await (await fetch(`${rc.http}/api/v1/rooms/cors:refused/history`)).json();
    assert.equal(history.seq ?? 0, 0, JSON.stringify(history));
    await page.close();
  });

  it('the WebSocket opens from a listed origin and is refused from an unlisted one', async () => {
    const open = (page) => page.evaluate((url) => new Promise((resolve) => {
      const ws = new WebSocket(url, ['roomcast.v1.json']);
      ws.onmessage = (ev) => {
        resolve({ opened: true, first: JSON.parse(ev.data).type, protocol: ws.protocol });
        ws.close();
      };
      ws.onclose = (ev) => resolve({ opened: false, code: ev.code });
    }), rc.url);
    const listed = await openPage(browser, web.origin, 'blank.html');
    assert.deepEqual(await open(listed), { opened: true, first: 'welcome', protocol: 'roomcast.v1.json' });
    const unlisted = await openPage(browser, web.otherOrigin, 'blank.html');
    assert.deepEqual(await open(unlisted), { opened: false, code: 1006 });
    // The refusal is the server's 403, not a network failure.
    assert.equal(await upgradeStatus(rc.addr, web.otherOrigin), 403);
    assert.equal(await upgradeStatus(rc.addr, web.origin), 101);
    await listed.close();
    await unlisted.close();
  });
});
