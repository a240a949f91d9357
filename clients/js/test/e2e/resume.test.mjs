// A page in headless Chromium follows rooms through the SDK on one of two instances
// sharing a Redis; that instance is killed with `kill -9` while the page publishes; the
// page must resume on the other one with nothing missing, repeated or out of order.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { Scope, launchBrowser, openPage, percentile, pkgRoot, startRedis, startRoomcast, startStatic } from './harness.mjs';

const SUBSCRIBERS = 8;
const ROOMS_EACH = 3;

test('kill -9 of the page\'s instance: every room resumes on the other, 0 missing, 0 duplicated, 0 out of order', { timeout: 120_000 }, async (t) => {
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

  const rooms = (i) => Array.from({ length: ROOMS_EACH }, (_, j) => `resume:${i}.${j}`);
  const allRooms = Array.from({ length: SUBSCRIBERS }, (_, i) => rooms(i)).flat();
  // Subscribers list A first, so they are on A; the extra publisher is on B.
  await page.evaluate(({ a, b, n }) => {
    for (let i = 0; i < n; i++) window.app.makeClient(`s${i}`, { urls: [a, b] });
    window.app.makeClient('p', { urls: [b, a] });
  }, { a: a.url, b: b.url, n: SUBSCRIBERS });
  await page.evaluate(async ({ n, rooms }) => {
    await Promise.all(Array.from({ length: n }, (_, i) => window.app.subscribeAll(`s${i}`, rooms[i])));
  }, { n: SUBSCRIBERS, rooms: Array.from({ length: SUBSCRIBERS }, (_, i) => rooms(i)) });
  await page.waitForFunction(() => window.app.servers().every((c) => c.server !== null));
  const before = await page.evaluate(() => window.app.servers());
  for (const c of before) assert.equal(c.server, c.name === 'p' ? b.node : a.node, `${c.name} on its first URL`);

  // Publishers: every subscriber publishes to its own rooms, p to all of them.
  await page.evaluate(({ n, rooms, all }) => {
    for (let i = 0; i < n; i++) window.app.publishLoop(`s${i}`, rooms[i], 20);
    window.app.publishLoop('p', all, 10);
  }, { n: SUBSCRIBERS, rooms: Array.from({ length: SUBSCRIBERS }, (_, i) => rooms(i)), all: allRooms });
  await page.waitForFunction(() => window.record.acks.length >= 150, null, { timeout: 20_000 });

  // Freeze A so that publishes sent to it now are certainly in flight, then kill it.
  await a.kill('SIGSTOP');
  const marked = await page.evaluate(({ n, rooms }) => {
    const pubs = [];
    for (let i = 0; i < n; i++) {
      for (const room of rooms[i]) {
        const pub = `inflight-s${i}-${room}`;
        window.app.publish(window.app.client(`s${i}`), room, pub);
        pubs.push(pub);
      }
    }
    return pubs;
  }, { n: SUBSCRIBERS, rooms: Array.from({ length: SUBSCRIBERS }, (_, i) => rooms(i)) });
  const pendingAtKill = await page.evaluate(() => window.app.servers());
  for (const c of pendingAtKill) if (c.name !== 'p') assert.ok(c.pending >= ROOMS_EACH, `${c.name} has publishes in flight at the kill (${c.pending})`);
  const killedAt = Date.now();
  await a.kill('SIGKILL');

  // Every room resumes on B; the publishes that were in flight are acknowledged.
  await page.waitForFunction((killedAt) => {
    return Object.values(window.record.subscribed).every((list) => list.some((s) => s.resumed && s.at >= killedAt));
  }, killedAt, { timeout: 20_000 });
  await page.waitForFunction((marked) => {
    const acked = new Set(window.record.acks.map((x) => x.pub));
    return marked.every((p) => acked.has(p));
  }, marked, { timeout: 30_000 });
  const acksAfterResume = await page.evaluate(() => window.record.acks.length);
  await page.waitForFunction((n) => window.record.acks.length >= n + 150, acksAfterResume, { timeout: 20_000 });
  await page.evaluate(() => window.app.stopPublishing());
  // Let every acknowledged publish reach its room's subscriber (bounded).
  await page.waitForFunction(() => {
    const r = window.record;
    return r.acks.every((x) => r.delivered[x.room].some((d) => d.seq === x.seq && d.epoch === x.epoch));
  }, null, { timeout: 20_000 }).catch(() => {});

  const record = await page.evaluate(() => window.record);
  const after = await page.evaluate(() => window.app.servers());
  for (const c of after) assert.equal(c.server, b.node, `${c.name} ended on B`);
  assert.deepEqual(record.failed, [], 'no publish failed');
  assert.deepEqual(record.resets, [], 'no loss was reported');
  assert.deepEqual(page.pageErrors, []);

  let missing = 0;
  let duplicated = 0;
  let outOfOrder = 0;
  let delivered = 0;
  const resumeMs = [];
  for (const room of allRooms) {
    const list = record.delivered[room];
    const subs = record.subscribed[room];
    const first = subs[0];
    const resumed = subs.find((s) => s.resumed && s.at >= killedAt);
    assert.ok(resumed, `${room} resumed`);
    assert.equal(resumed.recovered, true, `${room} resumed exactly`);
    resumeMs.push(resumed.at - killedAt);
    delivered += list.length;
    // In order, without gaps, in the one epoch, from the first subscribe on.
    list.forEach((d, i) => {
      if (d.epoch !== first.epoch || d.seq !== first.seq + 1 + i) outOfOrder++;
    });
    const pubs = list.map((d) => d.pub);
    duplicated += pubs.length - new Set(pubs).size;
    const bySeq = new Map(list.map((d) => [d.seq, d]));
    for (const ack of record.acks.filter((x) => x.room === room)) {
      const d = bySeq.get(ack.seq);
      if (!d || d.pub !== ack.pub || d.epoch !== ack.epoch) missing++;
    }
    // Every delivered message is one of the page's acknowledged publishes.
    assert.equal(new Set(pubs).size, new Set(record.acks.filter((x) => x.room === room).map((x) => x.pub)).size, `${room}: delivered = acknowledged`);
  }
  const inflightDeliveries = marked.map((pub) => Object.values(record.delivered).flat().filter((d) => d.pub === pub).length);
  assert.deepEqual(inflightDeliveries, marked.map(() => 1), 'each publish in flight across the kill is delivered exactly once');
  const duplicateAcks = record.acks.filter((x) => x.duplicate).length;
  const summary = {
    rooms: allRooms.length,
    acked: record.acks.length,
    delivered,
    missing,
    duplicated,
    outOfOrder,
    inflightAtKill: marked.length,
    duplicateAcks,
    resumeMs: { p50: percentile(resumeMs, 50), p99: percentile(resumeMs, 99), max: Math.max(...resumeMs) },
  };
  console.log('resume summary', JSON.stringify(summary));
  mkdirSync(path.join(pkgRoot, 'test-results'), { recursive: true });
  writeFileSync(path.join(pkgRoot, 'test-results/resume.json'), JSON.stringify(summary, null, 2) + '\n');
  assert.equal(missing, 0, 'missing');
  assert.equal(duplicated, 0, 'duplicated');
  assert.equal(outOfOrder, 0, 'out of order');
  assert.ok(record.acks.length > 300, 'publishes kept flowing');
});
