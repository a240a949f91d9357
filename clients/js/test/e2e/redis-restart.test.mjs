// Redis restarted empty under a live page: the history behind the rooms is gone, and the
// application must be told (a reset / recovered: false through the SDK), then receive
// the new epoch from its first message.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Scope, launchBrowser, openPage, startRedis, startRoomcast, startStatic } from './harness.mjs';

test('Redis restarted empty: the page is told its rooms lost history, then gets the new epoch from seq 1', { timeout: 90_000 }, async (t) => {
  const scope = new Scope();
  t.after(() => scope.cleanup());
  const web = await startStatic(scope);
  const redis = await startRedis(scope);
  const env = {
    ROOMCAST_REDIS_URL: `redis://127.0.0.1:${redis.port}/`,
    ROOMCAST_WEBSOCKET__ALLOWED_ORIGINS: web.origin,
  };
  const [a, b] = await Promise.all([startRoomcast(scope, env), startRoomcast(scope, env)]);
  const browser = await launchBrowser(scope);
  const page = await openPage(browser, web.origin);
  const rooms = ['reset:one', 'reset:two'];

  // A live subscriber on A; a publisher on B.
  await page.evaluate(({ a, b, rooms }) => {
    window.app.makeClient('sub', { urls: [a] });
    window.app.makeClient('pub', { urls: [b] });
    return window.app.subscribeAll('sub', rooms);
  }, { a: a.url, b: b.url, rooms });
  await page.evaluate(async (rooms) => {
    for (let i = 0; i < 3; i++) for (const room of rooms) await window.app.publish(window.app.client('pub'), room, `old-${i}`);
  }, rooms);
  await page.waitForFunction((rooms) => rooms.every((r) => window.record.delivered[r].length === 3), rooms);
  const oldEpochs = await page.evaluate((rooms) => rooms.map((r) => window.record.delivered[r][2].epoch), rooms);

  // Redis loses everything: killed, and a new empty one on the same port.
  await redis.kill('SIGKILL');
  await startRedis(scope, redis.port);

  // The publisher keeps publishing (the SDK retries while Redis is unavailable).
  await page.evaluate(async (rooms) => {
    for (let i = 0; i < 3; i++) for (const room of rooms) await window.app.publish(window.app.client('pub'), room, `new-${i}`);
  }, rooms);
  await page.waitForFunction((rooms) => rooms.every((r) => window.record.delivered[r].filter((d) => String(d.pub).startsWith('new-')).length === 3), rooms, { timeout: 30_000 });

  const record = await page.evaluate(() => window.record);
  assert.deepEqual(record.failed, []);
  rooms.forEach((room, i) => {
    const resets = record.resets.filter((r) => r.room === room);
    assert.ok(resets.length >= 1, `${room}: the application was told continuity was lost`);
    assert.equal(resets[0].reason, 'epoch_changed', `${room}: reason`);
    assert.deepEqual(resets[0].previous, { epoch: oldEpochs[i], seq: 3 });
    const newer = record.delivered[room].filter((d) => d.epoch !== oldEpochs[i]);
    assert.equal(resets[resets.length - 1].epoch, newer[0].epoch, `${room}: the reset names the new epoch`);
    // The new epoch from its first message, in order, once each.
    assert.deepEqual(newer.map((d) => d.seq), [1, 2, 3], `${room}: new epoch from seq 1`);
    assert.deepEqual(newer.map((d) => d.pub), ['new-0', 'new-1', 'new-2']);
    const acks = record.acks.filter((x) => x.room === room && x.pub.startsWith('new-'));
    assert.deepEqual(acks.map((x) => [x.epoch, x.seq]), newer.map((d) => [d.epoch, d.seq]));
  });

  // A page that comes back with a position from before the loss gets recovered: false.
  await page.evaluate(({ a, room, since }) => {
    const c = window.app.makeClient('late', { urls: [a] });
    window.lateSub = c.subscribe(room, { since });
    return window.lateSub.ready.then((info) => (window.lateInfo = info));
  }, { a: a.url, room: rooms[0], since: { epoch: oldEpochs[0], seq: 3 } });
  const late = await page.evaluate(() => window.lateInfo);
  assert.equal(late.resumed, true);
  assert.equal(late.recovered, false);
  assert.equal(late.reason, 'epoch_changed');
  assert.deepEqual(page.pageErrors, []);
});
