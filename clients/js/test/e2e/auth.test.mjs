// Authentication from a browser: the SDK carries an HS256 JWT in the
// `roomcast.token.<token>` subprotocol (never in the URL), the token's `rooms` claim
// decides which rooms the page may use, a refused token gets no connection, and a token
// about to expire is replaced on the live connection with `refresh`.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { Scope, launchBrowser, openPage, signJwt, startRoomcast, startStatic } from './harness.mjs';

const SECRET = 'e2e-secret-' + Math.random().toString(36).slice(2);
const CHAT = { subscribe: ['chat:*'], publish: ['chat:*'] };

function token({ rooms = CHAT, ttl = 600, sub = 'ann' } = {}) {
  const claims = { sub, exp: Math.floor(Date.now() / 1000) + ttl };
  if (rooms !== null) claims.rooms = rooms;
  return { token: signJwt(claims, SECRET), exp: claims.exp };
}

/** Status and echoed subprotocol of a raw upgrade offering `protocols`. */
function upgrade(addr, origin, protocols) {
  const [host, port] = addr.split(':');
  return new Promise((resolve, reject) => {
    const req = http.request({
      host, port, path: '/ws', timeout: 5_000,
      headers: {
        Origin: origin, Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Protocol': protocols.join(', '),
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode, protocol: res.headers['sec-websocket-protocol'] });
    });
    req.on('response', (res) => {
      res.resume();
      resolve({ status: res.statusCode, protocol: res.headers['sec-websocket-protocol'] });
    });
    req.on('timeout', () => req.destroy(new Error('no answer to the upgrade')));
    req.on('error', reject);
    req.end();
  });
}

describe('tokens from the browser', { timeout: 90_000 }, () => {
  const scope = new Scope();
  let web;
  let rc;
  let browser;
  before(async () => {
    web = await startStatic(scope);
    rc = await startRoomcast(scope, {
      ROOMCAST_AUTH__JWT_HS256_SECRET: SECRET,
      // No clock skew tolerated: a short-lived token ends its connection at its exp.
      ROOMCAST_AUTH__CLOCK_SKEW_SECS: '0',
      ROOMCAST_WEBSOCKET__ALLOWED_ORIGINS: web.origin,
    });
    browser = await launchBrowser(scope);
  });
  after(() => scope.cleanup());

  /** A page whose `mintToken(kind)` asks the test for a token. */
  async function pageWithTokens(kinds) {
    const page = await openPage(browser, web.origin);
    const urls = [];
    page.on('websocket', (ws) => urls.push(ws.url()));
    page.wsUrls = urls;
    page.minted = [];
    await page.exposeFunction('mintToken', (kind) => {
      const t = kinds[kind]();
      page.minted.push({ kind, exp: t.exp });
      return t.token;
    });
    return page;
  }

  it('the token travels in the subprotocol; the rooms claim is enforced', async () => {
    const page = await pageWithTokens({ chat: () => token() });
    const out = await page.evaluate(async (url) => {
      const c = window.app.makeClient('c', { urls: [url], token: () => window.mintToken('chat') });
      await window.app.subscribeAll('c', ['chat:general']);
      const ack = await c.publish('chat:general', { pub: 'hello' });
      const forbidden = c.subscribe('secret:x');
      const subErr = await forbidden.ready.then(() => null, (e) => ({ code: e.code, kind: e.kind }));
      const pubErr = await c.publish('secret:x', { pub: 'no' }).then(() => null, (e) => ({ code: e.code, kind: e.kind }));
      return { welcome: c.welcome, ack, subErr, pubErr };
    }, rc.url);
    await page.waitForFunction(() => window.record.delivered['chat:general'].length === 1);
    assert.equal(out.ack.seq, 1);
    assert.deepEqual(out.subErr, { code: 107, kind: 'forbidden' });
    assert.deepEqual(out.pubErr, { code: 107, kind: 'forbidden' });
    assert.equal(out.welcome.expires_at, page.minted[0].exp, 'welcome carries the token expiry');
    assert.ok(page.wsUrls.length >= 1);
    for (const u of page.wsUrls) assert.ok(!u.includes('access_token') && !u.includes(page.minted[0].exp.toString(36)), `no token in ${u}`);
    const delivered = await page.evaluate(() => window.record.delivered['chat:general']);
    assert.deepEqual(delivered.map((d) => d.pub), ['hello']);
    await page.evaluate(() => window.app.closeAll());
    await page.close();
  });

  it('the server echoes only the encoding subprotocol, and refuses a bad token with 401', async () => {
    const good = token();
    assert.deepEqual(await upgrade(rc.addr, web.origin, ['roomcast.v1.json', 'roomcast.token.' + good.token]), { status: 101, protocol: 'roomcast.v1.json' });
    const forged = signJwt({ sub: 'ann', exp: good.exp, rooms: CHAT }, 'not-the-secret');
    assert.equal((await upgrade(rc.addr, web.origin, ['roomcast.v1.json', 'roomcast.token.' + forged])).status, 401);
    assert.equal((await upgrade(rc.addr, web.origin, ['roomcast.v1.json'])).status, 401);
  });

  it('a page without a valid token never connects, and the SDK stops after its attempts', async () => {
    const page = await openPage(browser, web.origin);
    const forged = signJwt({ sub: 'ann', exp: Math.floor(Date.now() / 1000) + 600, rooms: CHAT }, 'not-the-secret');
    const closed = await page.evaluate((args) => new Promise((resolve) => {
      const c = window.app.makeClient('bad', { urls: [args.url], token: args.forged, maxReconnectAttempts: 2, reconnectDelayMs: 50 });
      c.on('closed', (info) => resolve(info.reason));
    }), { url: rc.url, forged });
    assert.equal(closed, 'reconnect attempts exhausted');
    const events = await page.evaluate(() => window.record.events.map((e) => e.event));
    assert.ok(!events.includes('connected'), events.join(','));
    await page.close();
  });

  it('a token without a rooms claim grants no room', async () => {
    const page = await pageWithTokens({ bare: () => token({ rooms: null }) });
    const err = await page.evaluate(async (url) => {
      const c = window.app.makeClient('bare', { urls: [url], token: () => window.mintToken('bare') });
      return c.subscribe('chat:general').ready.then(() => null, (e) => e.code);
    }, rc.url);
    assert.equal(err, 107);
    await page.evaluate(() => window.app.closeAll());
    await page.close();
  });

  it('?access_token= works as the fallback carrier', async () => {
    const page = await pageWithTokens({ chat: () => token() });
    const info = await page.evaluate(async (url) => {
      const c = window.app.makeClient('q', { urls: [url], token: () => window.mintToken('chat'), tokenTransport: 'query' });
      return c.subscribe('chat:query').ready;
    }, rc.url);
    assert.equal(info.room, 'chat:query');
    assert.ok(page.wsUrls.some((u) => u.includes('access_token=')));
    await page.evaluate(() => window.app.closeAll());
    await page.close();
  });

  it('a token about to expire is refreshed on the live connection', { timeout: 30_000 }, async () => {
    let n = 0;
    const page = await pageWithTokens({ short: () => token({ ttl: n++ === 0 ? 3 : 600 }) });
    const outcome = await page.evaluate(async (url) => {
      const c = window.app.makeClient('r', { urls: [url], token: () => window.mintToken('short') });
      await window.app.subscribeAll('r', ['chat:refresh']);
      return new Promise((resolve) => {
        c.on('refreshed', (info) => resolve({ expiresAt: info.expiresAt }));
        setTimeout(() => resolve({ timedOut: true, events: window.record.events.filter((e) => e.client === 'r') }), 10_000);
      });
    }, rc.url);
    assert.ok(!outcome.timedOut, `no refreshed event within 10 s: ${JSON.stringify(outcome.events)}`);
    assert.equal(page.minted.length, 2);
    assert.equal(outcome.expiresAt, page.minted[1].exp, 'the new expiry is the new token\'s');
    const events = await page.evaluate(() => window.record.events.filter((e) => e.client === 'r').map((e) => e.event));
    assert.deepEqual(events, ['connected', 'refreshed'], 'the connection stayed up');
    // The connection still works after the refresh.
    const ack = await page.evaluate(() => window.app.client('r').publish('chat:refresh', { pub: 'after' }));
    assert.equal(ack.seq, 1);
    await page.evaluate(() => window.app.closeAll());
    await page.close();
  });

  it('a fixed token that expires: the server closes with 4101 and the SDK stops', { timeout: 30_000 }, async () => {
    const page = await openPage(browser, web.origin);
    const short = token({ ttl: 2 });
    const outcome = await page.evaluate((args) => new Promise((resolve) => {
      const c = window.app.makeClient('x', { urls: [args.url], token: args.token });
      c.subscribe('chat:expiring');
      c.on('closed', (info) => resolve({ reason: info.reason, kind: info.error && info.error.kind }));
      setTimeout(() => resolve({ timedOut: true }), 15_000);
    }), { url: rc.url, token: short.token });
    assert.deepEqual(outcome, { reason: 'token expired', kind: 'token_expired' });
    const disconnects = await page.evaluate(() => window.record.events.filter((e) => e.event === 'disconnected'));
    assert.deepEqual(disconnects.map((d) => [d.code, d.willReconnect]), [[4101, false]]);
    await page.close();
  });
});
