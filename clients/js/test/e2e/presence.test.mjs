// Presence in a browser: a page follows a room's presence on instance B while another
// client joins on instance A (with info) and leaves, and while A is killed (its client's
// entry expires with a leave).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Scope, launchBrowser, openPage, startRedis, startRoomcast, startStatic } from './harness.mjs';

test('a page sees joins and leaves of clients on another instance, and the entries of a killed instance expire', { timeout: 90_000 }, async (t) => {
  const scope = new Scope();
  t.after(() => scope.cleanup());
  const web = await startStatic(scope);
  const redis = await startRedis(scope);
  const env = {
    ROOMCAST_REDIS_URL: `redis://127.0.0.1:${redis.port}/`,
    ROOMCAST_WEBSOCKET__ALLOWED_ORIGINS: web.origin,
    ROOMCAST_PRESENCE__ROOMS: 'issue:*',
    ROOMCAST_PRESENCE__HEARTBEAT_MS: '300',
    ROOMCAST_PRESENCE__TTL_MS: '900',
    ROOMCAST_PRESENCE__WINDOW_MS: '100',
  };
  const [a, b] = await Promise.all([startRoomcast(scope, env), startRoomcast(scope, env)]);
  const browser = await launchBrowser(scope);
  const page = await openPage(browser, web.origin);

  await page.evaluate(async ({ a, b }) => {
    const log = (window.presenceLog = { joins: [], leaves: [], members: [] });
    const watcher = new window.roomcast.Client({ urls: [b] });
    window.watcherSub = watcher.subscribe('issue:e2e', {
      presence: { info: { name: 'watcher' } },
      onJoin: (entries) => log.joins.push(...entries),
      onLeave: (entries) => log.leaves.push(...entries),
      onPresence: (set) => (log.members = set),
    });
    await window.watcherSub.ready;
    window.other = new window.roomcast.Client({ urls: [a] });
    window.otherSub = window.other.subscribe('issue:e2e', { presence: { info: { name: 'Ana' } } });
    await window.otherSub.ready;
  }, { a: a.url, b: b.url });

  // The join from A, with its info, reaches the page's watcher on B.
  await page.waitForFunction(() => window.presenceLog.joins.some((e) => e.info && e.info.name === 'Ana'));
  const joined = await page.evaluate(() => window.presenceLog.joins.find((e) => e.info.name === 'Ana'));
  assert.equal(joined.node, a.node);
  const stats = await page.evaluate(() => window.watcherSub.presenceStats());
  assert.deepEqual({ clients: stats.clients, users: stats.users }, { clients: 2, users: 2 });

  // It leaves: the leave arrives too.
  await page.evaluate(() => window.otherSub.unsubscribe());
  await page.waitForFunction((conn) => window.presenceLog.leaves.some((e) => e.conn === conn), joined.conn);
  assert.equal(await page.evaluate(() => window.presenceLog.members.length), 1);

  // It comes back on A, and A is killed: its entry expires and is announced as a leave.
  await page.evaluate(async () => {
    window.otherSub = window.other.subscribe('issue:e2e', { presence: { info: { name: 'Ana' } } });
    await window.otherSub.ready;
  });
  await page.waitForFunction(() => window.presenceLog.members.length === 2);
  const killedAt = Date.now();
  await a.kill('SIGKILL');
  await page.waitForFunction(() => window.presenceLog.members.length === 1, null, { timeout: 10_000 });
  assert.ok(Date.now() - killedAt < 5_000, 'the entry went within the TTL (plus slack)');
  const members = await page.evaluate(() => window.presenceLog.members);
  assert.equal(members[0].node, b.node);
  assert.deepEqual(await page.evaluate(() => window.watcherSub.members.map((e) => e.info)), [{ name: 'watcher' }]);
  await page.evaluate(() => window.other.close());
  assert.deepEqual(page.pageErrors, []);
});
