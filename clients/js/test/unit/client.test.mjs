// The protocol state machine against a fake socket, with mocked timers and clock.
import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';
import { Client, RoomcastError, backoffDelay } from '../../dist/index.js';
import { FakeSocket, withFakeSocketAndClock, flush, message } from './fake-socket.mjs';

const A = 'ws://a.test/ws';
const B = 'ws://b.test/ws';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const track = withFakeSocketAndClock();
function client(options = {}) {
  const c = new Client({ urls: [A, B], WebSocket: FakeSocket, random: () => 0.5, ...options });
  track(c);
  return c;
}

/** Records a subscription's events in arrival order. */
function record(sub) {
  const log = { messages: [], subscribed: [], resets: [], errors: [] };
  sub.on('message', (m) => log.messages.push(m));
  sub.on('subscribed', (i) => log.subscribed.push(i));
  sub.on('reset', (r) => log.resets.push(r));
  sub.on('error', (e) => log.errors.push(e));
  return log;
}

/** A connected client subscribed to `room` at (epoch, seq). */
async function subscribed(room = 'r', epoch = 'e1', seq = 0, options) {
  const c = client(options);
  await flush();
  const ws = FakeSocket.last();
  ws.accept();
  const sub = c.subscribe(room);
  const log = record(sub);
  const [frame] = ws.sent('subscribe');
  ws.push({ type: 'subscribed', id: frame.id, room, epoch, seq, recovered: false, replayed: 0 });
  return { c, ws, sub, log };
}


describe('backoff', () => {
  it('draws a full-jitter delay below an exponentially growing, capped ceiling', () => {
    assert.equal(backoffDelay(0, 250, 30_000, () => 0), 0);
    assert.equal(backoffDelay(0, 250, 30_000, () => 0.5), 125);
    assert.equal(backoffDelay(3, 250, 30_000, () => 0.5), 1000);
    assert.equal(backoffDelay(20, 250, 30_000, () => 0.5), 15_000);
    assert.ok(backoffDelay(0, 250, 30_000, () => 0.999999) < 250);
    const seen = new Set();
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(2, 100, 30_000, Math.random);
      assert.ok(d >= 0 && d < 400, `delay ${d}`);
      seen.add(Math.floor(d / 100));
    }
    assert.equal(seen.size, 4, 'delays spread over the whole range');
  });

  it('grows over failed attempts, rotates URLs, and starts over once welcomed', async () => {
    const c = client({ urls: [A, B] });
    const delays = [];
    c.on('reconnecting', (r) => delays.push([r.attempt, r.delayMs, r.url]));
    await flush();
    for (let i = 0; i < 4; i++) {
      const ws = FakeSocket.last();
      ws.serverClose(1006); // refused before any welcome
      mock.timers.tick(delays[delays.length - 1][1]);
      await flush();
    }
    assert.deepEqual(delays, [
      [1, 125, B],
      [2, 250, A],
      [3, 500, B],
      [4, 1000, A],
    ]);
    assert.deepEqual(
      FakeSocket.instances.map((s) => s.url),
      [A, B, A, B, A],
    );
    FakeSocket.last().accept();
    FakeSocket.last().serverClose(1006);
    assert.deepEqual(delays[4], [1, 125, B]);
  });
});

describe('positions and delivery', () => {
  it('subscribes without since, then delivers in order, dropping duplicates', async () => {
    const { ws, sub, log } = await subscribed('r', 'e1', 5);
    assert.deepEqual(ws.sent('subscribe')[0].since, undefined);
    assert.deepEqual(sub.position, { epoch: 'e1', seq: 5 });
    assert.equal(log.subscribed[0].recovered, false);
    assert.equal(log.subscribed[0].resumed, false);
    ws.push(message('r', 'e1', 5)); // at the position: already seen
    ws.push(message('r', 'e1', 6));
    ws.push(message('r', 'e1', 6)); // duplicate
    ws.push(message('r', 'e1', 7));
    ws.push(message('r', 'e1', 4)); // below
    assert.deepEqual(log.messages.map((m) => m.seq), [6, 7]);
    assert.deepEqual(sub.position, { epoch: 'e1', seq: 7 });
    assert.deepEqual(log.messages[0], { room: 'r', epoch: 'e1', seq: 6, time: 1700000000006, data: { n: 6 } });
  });

  it('on a gap asks for history from its position and delivers the missing messages first', async () => {
    const { ws, sub, log } = await subscribed('r', 'e1', 1);
    ws.push(message('r', 'e1', 2));
    ws.push(message('r', 'e1', 5)); // 3 and 4 missing
    ws.push(message('r', 'e1', 6));
    assert.deepEqual(log.messages.map((m) => m.seq), [2]);
    const [h] = ws.sent('history');
    assert.deepEqual(h.since, { epoch: 'e1', seq: 2 });
    assert.equal(h.limit, 2);
    assert.equal(h.room, 'r');
    assert.equal(ws.sent('history').length, 1, 'one fill at a time');
    ws.push({
      type: 'history', id: h.id, room: 'r', epoch: 'e1', seq: 6, recovered: true,
      messages: [3, 4, 5, 6].map((s) => ({ seq: s, time: 1, data: { n: s } })),
    });
    await flush(); // the reply settles a promise
    ws.push(message('r', 'e1', 7));
    assert.deepEqual(log.messages.map((m) => m.seq), [2, 3, 4, 5, 6, 7]);
    assert.equal(log.resets.length, 0);
    assert.deepEqual(sub.position, { epoch: 'e1', seq: 7 });
  });

  it('reports a gap that history cannot fill as a reset, then goes on from what arrived', async () => {
    const { ws, log } = await subscribed('r', 'e1', 10);
    ws.push(message('r', 'e1', 20));
    const [h] = ws.sent('history');
    ws.push({ type: 'history', id: h.id, room: 'r', epoch: 'e1', seq: 20, recovered: false, messages: [] });
    await flush();
    ws.push(message('r', 'e1', 21));
    assert.deepEqual(log.messages.map((m) => m.seq), [20, 21]);
    assert.equal(log.resets.length, 1);
    assert.deepEqual(
      { ...log.resets[0] },
      { room: 'r', epoch: 'e1', seq: 19, reason: 'too_far_behind', previous: { epoch: 'e1', seq: 10 }, source: 'gap' },
    );
  });

  it('takes a reset frame as the new position and tells the application', async () => {
    const { ws, sub, log } = await subscribed('r', 'e1', 3);
    ws.push({ type: 'reset', room: 'r', epoch: 'e2', seq: 0, reason: 'epoch_changed' });
    ws.push(message('r', 'e2', 1));
    ws.push(message('r', 'e2', 2));
    assert.equal(log.resets[0].reason, 'epoch_changed');
    assert.equal(log.resets[0].source, 'reset');
    assert.deepEqual(log.resets[0].previous, { epoch: 'e1', seq: 3 });
    assert.deepEqual(log.messages.map((m) => [m.epoch, m.seq]), [['e2', 1], ['e2', 2]]);
    assert.deepEqual(sub.position, { epoch: 'e2', seq: 2 });
    assert.equal(ws.sent('history').length, 0);
  });

  it('ignores messages of a room after unsubscribe', async () => {
    const { c, ws, sub, log } = await subscribed('r', 'e1', 0);
    const done = sub.unsubscribe();
    const [u] = ws.sent('unsubscribe');
    assert.equal(u.room, 'r');
    ws.push(message('r', 'e1', 1));
    ws.push({ type: 'unsubscribed', id: u.id, room: 'r' });
    await done;
    assert.equal(log.messages.length, 0);
    assert.equal(sub.closed, true);
    assert.equal(c.subscription('r'), undefined);
  });
});

describe('server-side removal', () => {
  it('an unsubscribed without id ends the subscription for good: no resubscribe after a reconnect', async () => {
    const { c, ws, sub, log } = await subscribed('r', 'e1', 0);
    const ended = [];
    sub.on('unsubscribed', (i) => ended.push(i));
    ws.push({ type: 'unsubscribed', room: 'r' });
    ws.push(message('r', 'e1', 1));
    assert.deepEqual(ended, [{ room: 'r', byServer: true }]);
    assert.equal(sub.closed, true);
    assert.equal(c.subscription('r'), undefined);
    assert.equal(log.messages.length, 0);
    ws.serverClose(1006);
    mock.timers.tick(125);
    await flush();
    FakeSocket.last().accept();
    assert.equal(FakeSocket.last().sent('subscribe').length, 0);
  });

  it('4102 (an operator disconnected the user): does not reconnect', async () => {
    const { c, ws } = await subscribed('r', 'e1', 0);
    const closed = [];
    c.on('closed', (x) => closed.push(x.error.kind));
    c.on('error', () => {});
    ws.serverClose(4102, 'disconnected');
    mock.timers.tick(60_000);
    await flush();
    assert.deepEqual(closed, ['disconnected']);
    assert.equal(FakeSocket.instances.length, 1);
  });

  it('refuses an idempotency key longer than 255 bytes before sending it', async () => {
    const { c, ws } = await subscribed('r', 'e1', 0);
    await assert.rejects(c.publish('r', 1, { idempotencyKey: 'k'.repeat(256) }), (e) => e.kind === 'invalid_frame');
    await assert.rejects(c.publish('r', null), (e) => e.kind === 'invalid_frame');
    assert.equal(ws.sent('publish').length, 0);
  });
});

describe('reconnect and resume', () => {
  it('resumes every room from its last position on the next URL, keeping the position through the replay', async () => {
    const { c, ws, sub, log } = await subscribed('r', 'e1', 0);
    const other = c.subscribe('q');
    const qlog = record(other);
    ws.push({ type: 'subscribed', id: ws.sent('subscribe')[1].id, room: 'q', epoch: 'f1', seq: 9, recovered: false, replayed: 0 });
    ws.push(message('r', 'e1', 1));
    ws.push(message('r', 'e1', 2));
    const disconnects = [];
    c.on('disconnected', (d) => disconnects.push(d));
    ws.serverClose(1006, '');
    assert.deepEqual(disconnects, [{ code: 1006, reason: '', willReconnect: true }]);
    assert.equal(sub.active, false);
    mock.timers.tick(125);
    await flush();
    const ws2 = FakeSocket.last();
    assert.notEqual(ws2, ws);
    assert.equal(ws2.url, B);
    ws2.accept();
    const subs = ws2.sent('subscribe');
    assert.deepEqual(subs.map((s) => [s.room, s.since]), [['r', { epoch: 'e1', seq: 2 }], ['q', { epoch: 'f1', seq: 9 }]]);
    ws2.push({ type: 'subscribed', id: subs[0].id, room: 'r', epoch: 'e1', seq: 4, recovered: true, replayed: 2 });
    assert.deepEqual(sub.position, { epoch: 'e1', seq: 2 }, 'kept until the replayed messages arrive');
    ws2.push(message('r', 'e1', 3));
    ws2.push(message('r', 'e1', 4));
    ws2.push({ type: 'subscribed', id: subs[1].id, room: 'q', epoch: 'f1', seq: 9, recovered: true, replayed: 0 });
    assert.deepEqual(log.messages.map((m) => m.seq), [1, 2, 3, 4]);
    assert.deepEqual(log.subscribed.map((s) => [s.resumed, s.recovered, s.replayed]), [[false, false, 0], [true, true, 2]]);
    assert.equal(qlog.subscribed[1].recovered, true);
    assert.equal(log.resets.length + qlog.resets.length, 0);
  });

  it('surfaces recovered: false on a resume as a reset the application must act on', async () => {
    const { ws, sub, log } = await subscribed('r', 'e1', 7);
    ws.serverClose(1011);
    mock.timers.tick(125);
    await flush();
    const ws2 = FakeSocket.last();
    ws2.accept();
    const [s] = ws2.sent('subscribe');
    assert.deepEqual(s.since, { epoch: 'e1', seq: 7 });
    ws2.push({ type: 'subscribed', id: s.id, room: 'r', epoch: 'e2', seq: 3, recovered: false, replayed: 0, reason: 'epoch_changed' });
    assert.deepEqual(log.subscribed[1], { room: 'r', epoch: 'e2', seq: 3, recovered: false, replayed: 0, reason: 'epoch_changed', resumed: true });
    assert.deepEqual(
      { ...log.resets[0] },
      { room: 'r', epoch: 'e2', seq: 3, reason: 'epoch_changed', previous: { epoch: 'e1', seq: 7 }, source: 'resume' },
    );
    ws2.push(message('r', 'e2', 4));
    assert.deepEqual(sub.position, { epoch: 'e2', seq: 4 });
  });

  it('re-sends unacknowledged publishes after reconnecting, in order, with the same keys', async () => {
    const { c, ws } = await subscribed('r', 'e1', 0);
    const p1 = c.publish('r', { a: 1 });
    const p2 = c.publish('r', { a: 2 }, { idempotencyKey: 'my-key' });
    const first = ws.sent('publish');
    assert.equal(first.length, 2);
    assert.match(first[0].key, UUID);
    assert.equal(first[1].key, 'my-key');
    ws.push({ type: 'ack', id: first[0].id, room: 'r', epoch: 'e1', seq: 1, time: 5, duplicate: false });
    assert.equal(c.pendingPublishes, 1);
    ws.serverClose(1006);
    const p3 = c.publish('r', { a: 3 }); // while disconnected: queued
    mock.timers.tick(125);
    await flush();
    const ws2 = FakeSocket.last();
    ws2.accept();
    const again = ws2.sent('publish');
    assert.deepEqual(again.map((f) => [f.key, f.data]), [['my-key', { a: 2 }], [again[1].key, { a: 3 }]]);
    assert.notEqual(again[0].id, first[1].id, 'a new request id on the new connection');
    const order = ws2.sent().map((f) => f.type);
    assert.deepEqual(order, ['subscribe', 'publish', 'publish'], 'rooms are resumed before publishes are re-sent');
    ws2.push({ type: 'ack', id: again[0].id, room: 'r', epoch: 'e1', seq: 2, time: 6, duplicate: true });
    ws2.push({ type: 'ack', id: again[1].id, room: 'r', epoch: 'e1', seq: 3, time: 7, duplicate: false });
    assert.deepEqual((await p1).seq, 1);
    assert.deepEqual(await p2, { room: 'r', epoch: 'e1', seq: 2, time: 6, duplicate: true });
    assert.equal((await p3).seq, 3);
    assert.equal(c.pendingPublishes, 0);
  });

  it('retries a publish that failed with a 2xx error under the same key, and rejects a 1xx error', async () => {
    const { c, ws } = await subscribed('r', 'e1', 0);
    const retried = c.publish('r', 1);
    const refused = c.publish('x', 2);
    const [f1, f2] = ws.sent('publish');
    ws.push({ type: 'error', id: f1.id, code: 202, name: 'timeout', message: 'no answer' });
    ws.push({ type: 'error', id: f2.id, code: 107, name: 'forbidden', message: 'not allowed' });
    await assert.rejects(refused, (e) => e instanceof RoomcastError && e.code === 107 && e.kind === 'forbidden' && e.room === 'x');
    assert.equal(ws.sent('publish').length, 2, 'no immediate retry');
    mock.timers.tick(5_100);
    const again = ws.sent('publish');
    assert.equal(again.length, 3);
    assert.equal(again[2].key, f1.key);
    ws.push({ type: 'ack', id: again[2].id, room: 'r', epoch: 'e1', seq: 1, time: 1, duplicate: false });
    assert.equal((await retried).seq, 1);
  });

  it('waits as long as a rate_limited error says', async () => {
    const { c, ws } = await subscribed('r', 'e1', 0);
    const p = c.publish('r', 1);
    const [f] = ws.sent('publish');
    ws.push({ type: 'error', id: f.id, code: 203, name: 'rate_limited', message: 'slow down', retry_after_ms: 700 });
    mock.timers.tick(699);
    assert.equal(ws.sent('publish').length, 1);
    mock.timers.tick(1);
    const [, f2] = ws.sent('publish');
    assert.equal(f2.key, f.key);
    ws.push({ type: 'ack', id: f2.id, room: 'r', epoch: 'e1', seq: 1, time: 1, duplicate: false });
    await p;
  });

  it('gives up on a publish at its deadline', async () => {
    const { c } = await subscribed('r', 'e1', 0);
    const p = c.publish('r', 1, { timeoutMs: 1000 });
    mock.timers.tick(1000);
    await assert.rejects(p, (e) => e.kind === 'publish_timeout');
    assert.equal(c.pendingPublishes, 0);
  });

  it('refuses locally a publish larger than the server accepts', async () => {
    const { c, ws } = await subscribed('r', 'e1', 0);
    await assert.rejects(c.publish('r', 'x'.repeat(70_000)), (e) => e.kind === 'frame_too_big');
    assert.equal(ws.sent('publish').length, 0);
  });
});

describe('close codes', () => {
  it('1012 after a reconnect frame: reconnects within the drain window and resumes', async () => {
    const { c, ws } = await subscribed('r', 'e1', 4, { random: () => 0.9 });
    const reconnecting = [];
    c.on('reconnecting', (r) => reconnecting.push(r));
    const draining = [];
    c.on('draining', (d) => draining.push(d));
    ws.push({ type: 'reconnect', reason: 'draining' });
    assert.deepEqual(draining, [{ reason: 'draining', hint: [] }]);
    ws.serverClose(1012, 'service_restart');
    assert.equal(reconnecting[0].delayMs, 90);
    mock.timers.tick(90);
    await flush();
    const ws2 = FakeSocket.last();
    ws2.accept();
    assert.deepEqual(ws2.sent('subscribe')[0].since, { epoch: 'e1', seq: 4 });
  });

  it('a reconnect hint is followed: its addresses first, in order, then the configured list', async () => {
    const C = 'ws://c.test/ws';
    const D = 'ws://d.test/ws';
    const { c, ws } = await subscribed('r', 'e1', 4);
    const draining = [];
    c.on('draining', (d) => draining.push(d));
    const reconnecting = [];
    c.on('reconnecting', (r) => reconnecting.push(r.url));
    ws.push({ type: 'reconnect', reason: 'rebalancing', hint: [C, D] });
    assert.deepEqual(draining, [{ reason: 'rebalancing', hint: [C, D] }]);
    ws.serverClose(1012, 'service_restart');
    mock.timers.tick(100);
    await flush();
    // The first hinted address, not the next configured one (B).
    assert.equal(FakeSocket.last().url.split('?')[0], C);
    // It fails: the second hinted address.
    FakeSocket.last().serverClose(1006);
    mock.timers.tick(1_000);
    await flush();
    assert.equal(FakeSocket.last().url.split('?')[0], D);
    FakeSocket.last().accept();
    assert.deepEqual(FakeSocket.last().sent('subscribe')[0].since, { epoch: 'e1', seq: 4 });
    assert.deepEqual(reconnecting, [C, D]);
    // Once connected the hint is spent: a later loss goes on through the configured list.
    FakeSocket.last().serverClose(1006);
    mock.timers.tick(1_000);
    await flush();
    assert.ok([A, B].includes(FakeSocket.last().url.split('?')[0]), FakeSocket.last().url);
  });

  it('a reconnect frame without a close is followed by leaving the instance anyway, and the connection cut after it counts as a drain', async () => {
    const { c, ws } = await subscribed('r', 'e1', 4);
    ws.push({ type: 'reconnect', reason: 'draining' });
    mock.timers.tick(2_000);
    assert.ok(ws.closedByClient);
    mock.timers.tick(100);
    await flush();
    assert.equal(FakeSocket.instances.length, 2);
    // A drain whose close frame got lost (1006): still the drain delay, not a backoff.
    const reconnecting = [];
    c.on('reconnecting', (r) => reconnecting.push(r));
    FakeSocket.last().accept();
    FakeSocket.last().push({ type: 'reconnect', reason: 'draining' });
    FakeSocket.last().serverClose(1006);
    assert.equal(reconnecting[0].delayMs, 50);
    mock.timers.tick(50);
    await flush();
    assert.equal(FakeSocket.instances.length, 3);
  });

  it('4000 slow consumer: reconnects and resumes from the last message received', async () => {
    const { ws } = await subscribed('r', 'e1', 0);
    ws.push(message('r', 'e1', 1));
    ws.serverClose(4000, 'slow_consumer');
    mock.timers.tick(125);
    await flush();
    FakeSocket.last().accept();
    assert.deepEqual(FakeSocket.last().sent('subscribe')[0].since, { epoch: 'e1', seq: 1 });
  });

  it('4100 unauthorized with a fixed token: stops, never retries', async () => {
    const { c, ws, sub } = await subscribed('r', 'e1', 0, { token: 'tok' });
    const closed = [];
    c.on('closed', (x) => closed.push(x));
    c.on('error', () => {});
    const p = c.publish('r', 1);
    ws.serverClose(4100, 'unauthorized');
    await assert.rejects(p, (e) => e.kind === 'unauthorized');
    assert.equal(c.state, 'closed');
    assert.equal(closed.length, 1);
    mock.timers.tick(120_000);
    await flush();
    assert.equal(FakeSocket.instances.length, 1);
    assert.equal(sub.closed, false, 'subscriptions keep their position for a later connect()');
  });

  it('4100 with a token callback: one new token, then stops if refused again', async () => {
    let n = 0;
    const c = client({ token: async () => `t${++n}` });
    c.on('error', () => {});
    await flush();
    FakeSocket.last().accept();
    FakeSocket.last().serverClose(4100);
    mock.timers.tick(125);
    await flush();
    await flush();
    assert.equal(FakeSocket.instances.length, 2);
    assert.deepEqual(FakeSocket.last().protocols, ['roomcast.v1.json', 'roomcast.token.t2']);
    FakeSocket.last().accept();
    FakeSocket.last().serverClose(4100);
    mock.timers.tick(60_000);
    await flush();
    assert.equal(FakeSocket.instances.length, 2);
    assert.equal(c.state, 'closed');
  });

  it('4101 token expired: fetches a new token through the callback and reconnects at once', async () => {
    let n = 0;
    const c = client({ token: async () => `t${++n}` });
    await flush();
    await flush();
    const ws = FakeSocket.last();
    assert.deepEqual(ws.protocols, ['roomcast.v1.json', 'roomcast.token.t1']);
    ws.accept();
    const sub = c.subscribe('r');
    ws.push({ type: 'subscribed', id: ws.sent('subscribe')[0].id, room: 'r', epoch: 'e', seq: 2, recovered: false, replayed: 0 });
    const reconnecting = [];
    c.on('reconnecting', (r) => reconnecting.push(r));
    ws.serverClose(4101, 'token_expired');
    assert.equal(reconnecting[0].delayMs, 0);
    mock.timers.tick(0);
    await flush();
    await flush();
    const ws2 = FakeSocket.last();
    assert.deepEqual(ws2.protocols, ['roomcast.v1.json', 'roomcast.token.t2']);
    ws2.accept();
    assert.deepEqual(ws2.sent('subscribe')[0].since, { epoch: 'e', seq: 2 });
    assert.equal(sub.closed, false);
  });

  it('4101 with a fixed token: stops', async () => {
    const c = client({ token: 'fixed' });
    c.on('error', () => {});
    await flush();
    FakeSocket.last().accept();
    FakeSocket.last().serverClose(4101);
    assert.equal(c.state, 'closed');
    mock.timers.tick(60_000);
    await flush();
    assert.equal(FakeSocket.instances.length, 1);
  });

  it('close() ends the connection, rejects pending publishes and does not reconnect', async () => {
    const { c, ws } = await subscribed('r', 'e1', 0);
    const p = c.publish('r', 1);
    c.close();
    await assert.rejects(p, (e) => e.kind === 'client_closed');
    assert.ok(ws.closedByClient);
    mock.timers.tick(60_000);
    await flush();
    assert.equal(FakeSocket.instances.length, 1);
  });

  it('gives up after maxReconnectAttempts failures in a row', async () => {
    const c = client({ maxReconnectAttempts: 2 });
    const closed = [];
    c.on('closed', (x) => closed.push(x));
    c.on('error', () => {});
    for (let i = 0; i < 3; i++) {
      await flush();
      FakeSocket.last().serverClose(1006);
      mock.timers.tick(1000);
    }
    await flush();
    assert.equal(FakeSocket.instances.length, 3);
    assert.equal(closed[0].reason, 'reconnect attempts exhausted');
  });
});

describe('tokens', () => {
  it('carries the token in the subprotocol list by default, in ?access_token= on request', async () => {
    client({ token: 'abc.def-ghi_j' });
    await flush();
    assert.equal(FakeSocket.last().url, A);
    assert.deepEqual(FakeSocket.last().protocols, ['roomcast.v1.json', 'roomcast.token.abc.def-ghi_j']);
    client({ urls: 'ws://lb.test/ws?x=1', token: 'a b', encoding: 'msgpack' });
    await flush();
    assert.equal(FakeSocket.last().url, 'ws://lb.test/ws?x=1&access_token=a%20b', 'a token a subprotocol cannot carry');
    assert.deepEqual(FakeSocket.last().protocols, ['roomcast.v1.msgpack']);
    client({ token: 'tok', tokenTransport: 'query' });
    await flush();
    assert.equal(FakeSocket.last().url, A + '?access_token=tok');
  });

  it('refreshes before expiry: 10 % of the lifetime ahead, at most 30 s ahead', async () => {
    let n = 0;
    const c = client({ token: async () => `t${++n}` });
    const refreshed = [];
    c.on('refreshed', (r) => refreshed.push(r.expiresAt));
    await flush();
    await flush();
    const ws = FakeSocket.last();
    const now = Date.now() / 1000;
    ws.accept({ expires_at: now + 100 }); // 100 s left: refresh 10 s ahead
    mock.timers.tick(89_999);
    await flush();
    assert.equal(ws.sent('refresh').length, 0);
    mock.timers.tick(1);
    await flush();
    const [r] = ws.sent('refresh');
    assert.equal(r.token, 't2');
    ws.push({ type: 'refreshed', id: r.id, expires_at: now + 90 + 1000 }); // 1000 s left: 30 s ahead
    assert.deepEqual(refreshed, [now + 1090]);
    mock.timers.tick(969_999);
    await flush();
    assert.equal(ws.sent('refresh').length, 1);
    mock.timers.tick(1);
    await flush();
    assert.equal(ws.sent('refresh')[1].token, 't3');
  });

  it('retries a refused refresh, and does not refresh without a callback', async () => {
    let n = 0;
    const c = client({ token: async () => `t${++n}` });
    const errors = [];
    c.on('error', (e) => errors.push(e.kind));
    await flush();
    await flush();
    const ws = FakeSocket.last();
    ws.accept({ expires_at: Date.now() / 1000 + 10 });
    mock.timers.tick(9_000);
    await flush();
    const [r] = ws.sent('refresh');
    ws.push({ type: 'error', id: r.id, code: 100, name: 'bad_frame', message: 'no' });
    assert.deepEqual(errors, ['bad_frame']);
    mock.timers.tick(1_000);
    await flush();
    assert.equal(ws.sent('refresh').length, 2);

    client({ token: 'fixed' });
    await flush();
    const fixed = FakeSocket.last();
    fixed.accept({ expires_at: Date.now() / 1000 + 10 });
    mock.timers.tick(20_000);
    await flush();
    assert.equal(fixed.sent('refresh').length, 0);
  });
});

describe('heartbeat and encodings', () => {
  it('pings a silent server after a heartbeat and gives it up after another', async () => {
    const c = client();
    await flush();
    const ws = FakeSocket.last();
    ws.accept({ limits: { max_frame_bytes: 65536, max_rooms: 128, max_history: 100, heartbeat_ms: 1000, publish_requires_subscription: false } });
    mock.timers.tick(750);
    assert.equal(ws.sent('ping').length, 0);
    mock.timers.tick(250);
    const [p] = ws.sent('ping');
    ws.push({ type: 'pong', id: p.id }); // alive
    mock.timers.tick(1000);
    assert.equal(ws.sent('ping').length, 2);
    const disconnects = [];
    c.on('disconnected', (d) => disconnects.push(d));
    mock.timers.tick(1000);
    assert.equal(disconnects.length, 1);
    assert.ok(ws.closedByClient);
  });

  it('speaks MessagePack in binary frames', async () => {
    const c = client({ encoding: 'msgpack' });
    await flush();
    const ws = FakeSocket.last();
    assert.deepEqual(ws.protocols, ['roomcast.v1.msgpack']);
    ws.accept();
    assert.equal(ws.binaryType, 'arraybuffer');
    const got = [];
    const sub = c.subscribe('m', { onMessage: (m) => got.push(m.data) });
    assert.ok(ws.sentRaw[0] instanceof Uint8Array);
    ws.push({ type: 'subscribed', id: ws.sent('subscribe')[0].id, room: 'm', epoch: 'e', seq: 0, recovered: false, replayed: 0 });
    ws.push(message('m', 'e', 1, { list: [1, 'two', null] }));
    await sub.ready;
    assert.deepEqual(got, [{ list: [1, 'two', null] }]);
  });

  it('rejects a subscription the server refuses (1xx) through ready and the error event', async () => {
    const c = client();
    await flush();
    const ws = FakeSocket.last();
    ws.accept();
    const sub = c.subscribe('secret');
    const log = record(sub);
    ws.push({ type: 'error', id: ws.sent('subscribe')[0].id, code: 107, name: 'forbidden', message: 'no' });
    await assert.rejects(sub.ready, (e) => e.code === 107);
    assert.equal(log.errors.length, 1);
    assert.equal(sub.closed, true);
    assert.throws(() => c.subscribe('x') && c.subscribe('x'), /already subscribed/);
  });

  it('retries a subscribe that failed with 200 unavailable, from the same position', async () => {
    const c = client();
    await flush();
    const ws = FakeSocket.last();
    ws.accept();
    const sub = c.subscribe('r', { since: { epoch: 'e', seq: 3 } });
    ws.push({ type: 'error', id: ws.sent('subscribe')[0].id, code: 200, name: 'unavailable', message: 'broker' });
    mock.timers.tick(5_100);
    const again = ws.sent('subscribe');
    assert.equal(again.length, 2);
    assert.deepEqual(again[1].since, { epoch: 'e', seq: 3 });
    ws.push({ type: 'subscribed', id: again[1].id, room: 'r', epoch: 'e', seq: 3, recovered: true, replayed: 0 });
    assert.equal((await sub.ready).recovered, true);
  });
});
