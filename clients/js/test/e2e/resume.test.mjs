// A page in headless Chromium follows rooms through the SDK on one of two instances
// sharing a Redis; that instance dies (`kill -9`) or drains (SIGTERM) while the page
// publishes; the page must resume on the other one with nothing missing, repeated or out
// of order, judged from the page's own record.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { Scope, launchBrowser, openPage, percentile, pkgRoot, startRedis, startRoomcast, startStatic } from './harness.mjs';

const SUBSCRIBERS = 8;
const ROOMS_EACH = 3;
const roomsOf = (prefix, i) => Array.from({ length: ROOMS_EACH }, (_, j) => `${prefix}:${i}.${j}`);

/**
 * Two instances A and B on one Redis; a page with SUBSCRIBERS clients on A (URL list
 * [A, B], half of them speaking MessagePack), each following ROOMS_EACH rooms, and a
 * publisher client on B. Everyone publishes continuously.
 */
async function cluster(t, prefix, extraEnv = {}, { subscribers = SUBSCRIBERS, clientOptions = {} } = {}) {
  const scope = new Scope();
  t.after(() => scope.cleanup());
  const web = await startStatic(scope);
  const redis = await startRedis(scope);
  const env = {
    ROOMCAST_REDIS_URL: `redis://127.0.0.1:${redis.port}/`,
    ROOMCAST_WEBSOCKET__ALLOWED_ORIGINS: web.origin,
    ...extraEnv,
  };
  const [a, b] = await Promise.all([startRoomcast(scope, env), startRoomcast(scope, env)]);
  const browser = await launchBrowser(scope);
  const page = await openPage(browser, web.origin);
  const rooms = Array.from({ length: subscribers }, (_, i) => roomsOf(prefix, i));
  const allRooms = rooms.flat();

  await page.evaluate(({ a, b, n, extra }) => {
    for (let i = 0; i < n; i++) window.app.makeClient(`s${i}`, { urls: [a, b], encoding: i % 2 ? 'msgpack' : 'json', ...extra });
    window.app.makeClient('p', { urls: [b, a], ...extra });
  }, { a: a.url, b: b.url, n: subscribers, extra: clientOptions });
  await page.evaluate(async ({ n, rooms }) => {
    await Promise.all(Array.from({ length: n }, (_, i) => window.app.subscribeAll(`s${i}`, rooms[i])));
  }, { n: subscribers, rooms });
  await page.waitForFunction(() => window.app.servers().every((c) => c.server !== null));
  for (const c of await page.evaluate(() => window.app.servers())) {
    assert.equal(c.server, c.name === 'p' ? b.node : a.node, `${c.name} on its first URL`);
  }
  await page.evaluate(({ n, rooms, all }) => {
    for (let i = 0; i < n; i++) window.app.publishLoop(`s${i}`, rooms[i], 20);
    window.app.publishLoop('p', all, 10);
  }, { n: subscribers, rooms, all: allRooms });
  await page.waitForFunction(() => window.record.acks.length >= 150, null, { timeout: 20_000 });
  return { a, b, page, rooms, allRooms };
}

/** Waits until every room resumed after `since`, keeps traffic going a while, stops it. */
async function resumeAndSettle(page, since) {
  await page.waitForFunction((since) => {
    return Object.values(window.record.subscribed).every((list) => list.some((s) => s.resumed && s.at >= since));
  }, since, { timeout: 20_000 });
  const acks = await page.evaluate(() => window.record.acks.length);
  await page.waitForFunction((n) => window.record.acks.length >= n + 150, acks, { timeout: 20_000 });
  await page.evaluate(() => window.app.stopPublishing());
  // Let every acknowledged publish reach its room's subscriber (bounded; judged below).
  await page.waitForFunction(() => {
    const r = window.record;
    return r.acks.every((x) => r.delivered[x.room].some((d) => d.seq === x.seq && d.epoch === x.epoch));
  }, null, { timeout: 20_000 }).catch(() => {});
  return page.evaluate(() => window.record);
}

/** Counts what the page's record says went wrong; returns the per-room resume times. */
function judge(record, allRooms, since) {
  assert.deepEqual(record.failed, [], 'no publish failed');
  assert.deepEqual(record.resets, [], 'no loss was reported');
  const counts = { missing: 0, duplicated: 0, outOfOrder: 0, delivered: 0 };
  const resumeMs = [];
  for (const room of allRooms) {
    const list = record.delivered[room];
    const subs = record.subscribed[room];
    const first = subs[0];
    const resumed = subs.find((s) => s.resumed && s.at >= since);
    assert.ok(resumed, `${room} resumed`);
    assert.equal(resumed.recovered, true, `${room} resumed exactly`);
    resumeMs.push(resumed.at - since);
    counts.delivered += list.length;
    // In order, without gaps, in the one epoch, from the first subscribe on.
    list.forEach((d, i) => {
      if (d.epoch !== first.epoch || d.seq !== first.seq + 1 + i) counts.outOfOrder++;
    });
    const pubs = list.map((d) => d.pub);
    counts.duplicated += pubs.length - new Set(pubs).size;
    const bySeq = new Map(list.map((d) => [d.seq, d]));
    const acked = record.acks.filter((x) => x.room === room);
    for (const ack of acked) {
      const d = bySeq.get(ack.seq);
      if (!d || d.pub !== ack.pub || d.epoch !== ack.epoch) counts.missing++;
    }
    // Every delivered message is one of the page's acknowledged publishes.
    assert.equal(new Set(pubs).size, new Set(acked.map((x) => x.pub)).size, `${room}: delivered = acknowledged`);
  }
  return { counts, resumeMs };
}

function assertClean(summary) {
  assert.equal(summary.missing, 0, 'missing');
  assert.equal(summary.duplicated, 0, 'duplicated');
  assert.equal(summary.outOfOrder, 0, 'out of order');
}

/** kill -9 of the instance of every subscriber, in the middle of publishing. */
async function killScenario(t, prefix, options = {}) {
  const { a, b, page, rooms, allRooms } = await cluster(t, prefix, {}, options);

  // Freeze A so that publishes sent to it now are certainly in flight, then kill it.
  await a.kill('SIGSTOP');
  const marked = await page.evaluate(({ rooms }) => {
    const pubs = [];
    rooms.forEach((list, i) => {
      for (const room of list) {
        const pub = `inflight-s${i}-${room}`;
        window.app.publish(window.app.client(`s${i}`), room, pub);
        pubs.push(pub);
      }
    });
    return pubs;
  }, { rooms });
  for (const c of await page.evaluate(() => window.app.servers())) {
    if (c.name !== 'p') assert.ok(c.pending >= ROOMS_EACH, `${c.name} has publishes in flight at the kill (${c.pending})`);
  }
  const killedAt = Date.now();
  await a.kill('SIGKILL');

  await page.waitForFunction((marked) => {
    const acked = new Set(window.record.acks.map((x) => x.pub));
    return marked.every((p) => acked.has(p));
  }, marked, { timeout: 30_000 });
  const record = await resumeAndSettle(page, killedAt);
  for (const c of await page.evaluate(() => window.app.servers())) assert.equal(c.server, b.node, `${c.name} ended on B`);
  assert.deepEqual(page.pageErrors, []);

  const { counts, resumeMs } = judge(record, allRooms, killedAt);
  const delivered = Object.values(record.delivered).flat();
  const inflightDeliveries = marked.map((pub) => delivered.filter((d) => d.pub === pub).length);
  assert.deepEqual(inflightDeliveries, marked.map(() => 1), 'each publish in flight across the kill is delivered exactly once');
  const summary = {
    rooms: allRooms.length,
    acked: record.acks.length,
    ...counts,
    inflightAtKill: marked.length,
    duplicateAcks: record.acks.filter((x) => x.duplicate).length,
    resumeMs: { p50: percentile(resumeMs, 50), p99: percentile(resumeMs, 99), max: Math.max(...resumeMs) },
  };
  console.log(`${prefix} resume summary`, JSON.stringify(summary));
  mkdirSync(path.join(pkgRoot, 'test-results'), { recursive: true });
  writeFileSync(path.join(pkgRoot, `test-results/resume-${prefix}.json`), JSON.stringify(summary, null, 2) + '\n');
  assertClean(summary);
  assert.ok(record.acks.length > 300, 'publishes kept flowing');
  return page;
}

test('kill -9 of the page\'s instance: every room resumes on the other, 0 missing, 0 duplicated, 0 out of order', { timeout: 120_000 }, async (t) => {
  await killScenario(t, 'kill');
});

test('the same over Server-Sent Events: kill -9, every room resumes on the other, 0 missing, 0 duplicated, 0 out of order', { timeout: 120_000 }, async (t) => {
  // A browser holds at most 6 HTTP/1.1 connections per origin, and each event stream
  // keeps one open: 3 subscribers and the publisher leave room for the posts.
  const page = await killScenario(t, 'sse', { subscribers: 3, clientOptions: { transports: ['sse'] } });
  const transports = await page.evaluate(() => window.app.transports());
  assert.deepEqual([...new Set(transports)], ['sse'], 'every client spoke Server-Sent Events');
});

test('drain (SIGTERM) of the page\'s instance: every client gets the reconnect frame, moves at once and resumes on the other, nothing lost', { timeout: 120_000 }, async (t) => {
  const { a, b, page, allRooms } = await cluster(t, 'drain', { ROOMCAST_DRAIN__WINDOW_MS: '1000', ROOMCAST_DRAIN__DEADLINE_MS: '5000' });
  const drainedAt = Date.now();
  await a.kill('SIGTERM', 15_000);
  assert.equal((await a.exited).code, 0, 'the drained instance exits cleanly');
  const record = await resumeAndSettle(page, drainedAt);
  for (const c of await page.evaluate(() => window.app.servers())) assert.equal(c.server, b.node, `${c.name} ended on B`);
  // Every client on A was asked to move (the `reconnect` frame), left, and came back
  // within the drain reconnect delay rather than a backoff.
  const unclean = [];
  for (let i = 0; i < SUBSCRIBERS; i++) {
    const events = record.events.filter((e) => e.client === `s${i}` && e.at >= drainedAt);
    assert.deepEqual(events.map((e) => e.event).slice(0, 4), ['draining', 'disconnected', 'reconnecting', 'connected'], `s${i}: ${JSON.stringify(events)}`);
    const [, disconnected, reconnecting] = events;
    assert.equal(disconnected.willReconnect, true);
    assert.ok(reconnecting.delayMs < 100, `s${i} reconnects at once after a drain (${reconnecting.delayMs} ms)`);
    if (disconnected.code !== 1012) unclean.push(`s${i}: ${disconnected.code}`);
  }
  // The server should close with 1012 after the reconnect frame; report when a browser
  // saw the connection end without that close frame (the SDK handles both the same way).
  if (unclean.length) console.log(`drain: ${unclean.length} of ${SUBSCRIBERS} connections ended without a 1012 close frame (${unclean.join(', ')})`);
  const { counts } = judge(record, allRooms, drainedAt);
  console.log('drain summary', JSON.stringify({ acked: record.acks.length, ...counts }));
  assertClean(counts);
  assert.deepEqual(page.pageErrors, []);
});

test('a frozen instance (SIGSTOP, sockets open): the SDK notices the silence by its own pings and resumes on the other', { timeout: 120_000 }, async (t) => {
  // heartbeat_ms 500: a client hears nothing for 500 ms, pings, and gives up 500 ms later.
  const { a, b, page, allRooms } = await cluster(t, 'frozen', { ROOMCAST_CONNECTION__HEARTBEAT_MS: '500' });
  const frozenAt = Date.now();
  await a.kill('SIGSTOP');
  const record = await resumeAndSettle(page, frozenAt);
  for (const c of await page.evaluate(() => window.app.servers())) assert.equal(c.server, b.node, `${c.name} ended on B`);
  const { counts, resumeMs } = judge(record, allRooms, frozenAt);
  for (let i = 0; i < SUBSCRIBERS; i++) {
    const gone = record.events.find((e) => e.client === `s${i}` && e.event === 'disconnected' && e.at >= frozenAt);
    assert.equal(gone.reason, 'heartbeat timeout', `s${i} left because of the silence`);
    // Two heartbeats of silence (ping, then no answer), plus up to a quarter each (the check period).
    assert.ok(gone.at - frozenAt >= 900 && gone.at - frozenAt < 2_000, `s${i} detected the frozen server after ${gone.at - frozenAt} ms`);
  }
  console.log('frozen summary', JSON.stringify({ acked: record.acks.length, ...counts, resumeMs: { p50: percentile(resumeMs, 50), p99: percentile(resumeMs, 99) } }));
  assertClean(counts);
  assert.deepEqual(page.pageErrors, []);
});
