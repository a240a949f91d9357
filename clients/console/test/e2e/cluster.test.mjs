// The cluster view in headless Chromium against two roomcast instances on one
// redis-server: both are listed; after `kill -9` of one the view shows one within the
// membership TTL; draining an instance and disconnecting a user go through a
// confirmation and take effect.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import AxeBuilder from '@axe-core/playwright';
import { ARTIFACTS, Scope, authEnv, launchBrowser, signedInPage, startRedis, startRoomcast, userToken } from './helpers.mjs';

const ANNOUNCE_MS = 300;
const TTL_MS = 1500;

test('the cluster view follows the instances, drains one and disconnects a user', { timeout: 120_000 }, async (t) => {
  const scope = new Scope();
  t.after(() => scope.cleanup());
  const redis = await startRedis(scope);
  const env = authEnv({
    ROOMCAST_REDIS_URL: `redis://127.0.0.1:${redis.port}/`,
    ROOMCAST_CLUSTER__ANNOUNCE_INTERVAL_MS: String(ANNOUNCE_MS),
    ROOMCAST_CLUSTER__MEMBER_TTL_MS: String(TTL_MS),
  });
  const [a, b] = await Promise.all([startRoomcast(scope, env), startRoomcast(scope, env)]);
  const browser = await launchBrowser(scope);
  const page = await signedInPage(browser, a, { route: 'cluster' });
  const summary = page.getByTestId('cluster-summary');
  const row = (node) => page.locator(`tr[data-instance="${node}"]`);

  await summary.getByText(/^2 instances,/).waitFor();
  await row(a.node).getByText('(answering)').waitFor();
  await row(b.node).getByText('ready').waitFor();
  assert.match(await row(b.node).locator('td.mono').textContent(), new RegExp(`ws://${b.addr}/ws`));
  for (const scheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme: scheme });
    await page.waitForFunction((s) => document.documentElement.dataset.theme === s, scheme);
    await page.screenshot({ path: path.join(ARTIFACTS, `console-cluster-two-${scheme}.png`) });
    const result = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa']).analyze();
    assert.deepEqual(result.violations.filter((v) => ['serious', 'critical'].includes(v.impact)).map((v) => v.id), [], scheme);
  }

  // kill -9 of B: the view shows one instance within the TTL (plus a refresh).
  const killed = Date.now();
  await b.kill('SIGKILL');
  await summary.getByText(/^1 instance,/).waitFor({ timeout: TTL_MS + 5_000 });
  assert.ok(Date.now() - killed < TTL_MS + 5_000);
  assert.equal(await row(b.node).count(), 0);

  // A new instance C: draining it asks first; Cancel changes nothing, Drain drains it.
  const c = await startRoomcast(scope, env);
  await summary.getByText(/^2 instances,/).waitFor();
  await row(c.node).getByRole('button', { name: `Drain ${c.node}` }).click();
  const confirm = page.getByRole('dialog', { name: 'Drain this instance?' });
  await confirm.getByText(c.node).waitFor();
  await confirm.getByRole('button', { name: 'Cancel' }).click();
  await confirm.waitFor({ state: 'hidden' });
  await row(c.node).getByText('ready').waitFor();
  await row(c.node).getByRole('button', { name: `Drain ${c.node}` }).click();
  await confirm.getByRole('button', { name: 'Drain' }).click();
  await page.getByText(`Instance ${c.node} is draining.`).first().waitFor();
  const exit = await c.exited;
  assert.equal(exit.code, 0, 'a drained instance exits cleanly');
  await summary.getByText(/^1 instance,/).waitFor({ timeout: TTL_MS + 5_000 });

  // Disconnect a user: their socket on A is closed with 4102 once confirmed.
  const victim = await browser.newPage();
  await victim.goto(`${a.http}/console/sign-in`);
  await victim.evaluate(
    ({ url, token }) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(url, ['roomcast.v1.json', `roomcast.token.${token}`]);
        window.closeCode = new Promise((done) => ws.addEventListener('close', (e) => done(e.code)));
        ws.addEventListener('message', () => resolve(), { once: true });
        ws.addEventListener('error', () => reject(new Error('no connection')));
      }),
    { url: a.url, token: userToken('mallory') },
  );
  await page.getByLabel('Disconnect user').fill('mallory');
  await page.getByRole('button', { name: 'Disconnect…' }).click();
  const ask = page.getByRole('dialog', { name: 'Disconnect this user?' });
  await ask.getByText('Every connection of mallory').waitFor();
  await ask.getByRole('button', { name: 'Disconnect' }).click();
  await page.getByText('User mallory was disconnected everywhere.').first().waitFor();
  assert.equal(await victim.evaluate(() => window.closeCode), 4102);
  assert.deepEqual(page.pageErrors, []);
});
