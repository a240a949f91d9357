// The console in headless Chromium against a real roomcast: sign-in, the issue board and
// the audit viewer updated live by API changes made elsewhere, an edit conflict, audit
// filters and CSV export, the themes, every keyboard shortcut, and axe-core's
// accessibility check of every view in both themes (with screenshots as artifacts).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import AxeBuilder from '@axe-core/playwright';
import { ARTIFACTS, Scope, adminToken, api, authEnv, launchBrowser, signedInPage, startRoomcast, userToken } from './helpers.mjs';

describe('the web console', { timeout: 180_000 }, () => {
  const scope = new Scope();
  let rc;
  let browser;
  before(async () => {
    rc = await startRoomcast(scope, authEnv());
    browser = await launchBrowser(scope);
  });
  after(() => scope.cleanup());

  it('opens only for an administrator; nothing of the app is served without the session cookie', async () => {
    const page0 = await fetch(`${rc.http}/console/`, { redirect: 'manual' });
    assert.equal(page0.status, 303);
    assert.equal(page0.headers.get('location'), '/console/sign-in');

    // A user without the admin role is refused; an invalid token too.
    for (const [token, status] of [[userToken(), 403], ['not-a-token', 401]]) {
      const res = await fetch(`${rc.http}/console/session`, { method: 'POST', body: JSON.stringify({ token }) });
      assert.equal(res.status, status);
      assert.equal(res.headers.get('set-cookie'), null);
    }
    // Another origin's page cannot sign in.
    const foreign = await fetch(`${rc.http}/console/session`, {
      method: 'POST',
      headers: { origin: 'http://evil.example' },
      body: JSON.stringify({ token: adminToken() }),
    });
    assert.equal(foreign.status, 403);

    const session = await fetch(`${rc.http}/console/session`, { method: 'POST', body: JSON.stringify({ token: adminToken() }) });
    assert.equal(session.status, 204);
    const cookie = session.headers.get('set-cookie');
    assert.match(cookie, /^roomcast_console=[^;]+; Path=\/console; Max-Age=\d+; HttpOnly; SameSite=Strict$/);
    const jar = cookie.split(';')[0];
    const index = await fetch(`${rc.http}/console/`, { headers: { cookie: jar } });
    assert.equal(index.status, 200);
    assert.equal(index.headers.get('cache-control'), 'no-cache');
    const csp = index.headers.get('content-security-policy');
    assert.match(csp, /script-src 'self';/);
    assert.match(csp, new RegExp(`connect-src 'self' ws://${rc.addr} wss://${rc.addr};`));
    assert.doesNotMatch(csp, /unsafe/);
    const html = await index.text();
    const app = /src="(\/console\/assets\/app\.[0-9a-f]{16}\.js)"/.exec(html)[1];
    const css = /href="(\/console\/assets\/console\.[0-9a-f]{16}\.css)"/.exec(html)[1];
    assert.equal((await fetch(rc.http + app)).status, 401);
    const script = await fetch(rc.http + app, { headers: { cookie: jar } });
    assert.equal(script.status, 200);
    assert.equal(script.headers.get('content-type'), 'text/javascript; charset=utf-8');
    assert.equal(script.headers.get('cache-control'), 'private, max-age=31536000, immutable');
    const style = await fetch(rc.http + css);
    assert.equal(style.headers.get('content-type'), 'text/css; charset=utf-8');
    assert.equal(style.headers.get('cache-control'), 'public, max-age=31536000, immutable');
    // A user's token in the cookie opens nothing.
    const asUser = await fetch(rc.http + app, { headers: { cookie: `roomcast_console=${userToken()}` } });
    assert.equal(asUser.status, 401);

    // In the browser: the sign-in page refuses the user, then lets the administrator in.
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${rc.http}/console/`);
    await page.waitForURL('**/console/sign-in');
    await page.fill('#token', userToken());
    await page.click('button[type=submit]');
    await page.getByText('the console needs a global administrator').waitFor();
    await page.fill('#token', adminToken());
    await page.click('button[type=submit]');
    await page.waitForURL('**/console/');
    await page.getByRole('heading', { name: 'Cluster' }).waitFor();
    // Signing out ends the session: the console sends back to the sign-in page.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL('**/console/sign-in');
    await page.goto(`${rc.http}/console/`);
    await page.waitForURL('**/console/sign-in');
    await context.close();
  });

  it('an API change appears on the board and in the audit viewer without reload; a conflicting edit is shown', async () => {
    const page = await signedInPage(browser, rc, { route: 'issues' });
    await page.fill('main input[type=search]', '41');
    await page.getByRole('button', { name: 'Show board' }).click();
    await page.getByText('Project 41 has no issues yet.').waitFor();

    // Created elsewhere: the card appears in the Open column.
    const created = await api(rc, 'POST', '/issues', { project_id: 41, title: 'Checkout times out', priority: 'high', type: 'bug' });
    assert.equal(created.status, 201);
    const card = page.locator(`[data-issue="${created.body.id}"]`);
    await card.getByText('Checkout times out').waitFor();
    assert.equal(await page.locator('#col-open ~ ul [data-issue]').count(), 1);

    // Changed elsewhere: it moves to In progress.
    const moved = await api(rc, 'PATCH', `/issues/${created.body.id}`, { status: 'in_progress', assignee: 'ana' });
    assert.equal(moved.status, 200);
    await page.locator(`#col-in_progress ~ ul [data-issue="${created.body.id}"]`).waitFor();

    // Opened in the console, changed elsewhere meanwhile, then saved: the conflict is shown.
    await card.click();
    const dialog = page.getByRole('dialog', { name: `Issue #${created.body.id}` });
    await dialog.waitFor();
    await api(rc, 'PATCH', `/issues/${created.body.id}`, { priority: 'urgent' }, { 'if-match': '"2"' });
    await dialog.getByLabel('Title').fill('Checkout times out on Safari');
    await dialog.getByRole('button', { name: 'Save' }).click();
    await dialog.getByText('Someone else changed this issue since you opened it (now version 3)').waitFor();
    await dialog.getByRole('button', { name: 'Load the latest version' }).click();
    assert.equal(await dialog.getByLabel('Priority').inputValue(), 'urgent');
    await dialog.getByLabel('Title').fill('Checkout times out on Safari');
    await dialog.getByRole('button', { name: 'Save' }).click();
    await dialog.getByText('Saved as version 4.').waitFor();
    // A comment added elsewhere shows up in the open dialog.
    await api(rc, 'POST', `/issues/${created.body.id}/comments`, { body: 'Seen on Safari 17 too.' });
    await dialog.getByText('Seen on Safari 17 too.').waitFor();
    // Close the issue from the console.
    await dialog.getByRole('button', { name: 'Close issue' }).click();
    await dialog.getByText('Saved as version 5.').waitFor();
    await page.keyboard.press('Escape');
    await page.locator(`#col-closed ~ ul [data-issue="${created.body.id}"]`).waitFor();
    const stored = await api(rc, 'GET', `/issues/${created.body.id}`);
    assert.equal(stored.body.title, 'Checkout times out on Safari');
    assert.equal(stored.body.status, 'closed');

    // The audit viewer, on its last page, receives new entries live.
    await page.goto(`${rc.http}/console/#/audit`);
    await page.getByText('Live', { exact: true }).first().waitFor();
    await page.locator('.entries').waitFor();
    const before = await page.locator('.entries > li').count();
    const other = await api(rc, 'POST', '/issues', { project_id: 41, title: 'Live audit entry' });
    const row = page.locator('.entries > li.fresh', { hasText: `issue ${other.body.id}` });
    await row.waitFor();
    assert.equal(await page.locator('.entries > li').count(), before + 1);
    await row.getByRole('button').click();
    await row.locator('tr.added', { hasText: 'Live audit entry' }).waitFor();
    assert.deepEqual(page.pageErrors, []);
    await page.context().close();
  });

  it('filters the audit log and exports the filter as CSV and JSON', async () => {
    for (const title of ['Filter one', 'Filter two']) {
      await api(rc, 'POST', '/issues', { project_id: 42, title });
    }
    const page = await signedInPage(browser, rc, { route: 'audit' });
    await page.locator('.entries').waitFor();
    await page.getByLabel('Project').fill('42');
    await page.getByLabel('Action').selectOption('create');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.waitForFunction(() => document.querySelectorAll('.entries > li').length === 2);
    const texts = await page.locator('.entries > li').allTextContents();
    assert.ok(texts.every((t) => t.includes('project 42') && t.includes('create')), texts.join('\n'));

    const [csv] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export CSV' }).click()]);
    assert.equal(csv.suggestedFilename(), 'audit.csv');
    const lines = readFileSync(await csv.path(), 'utf8').trim().split('\n');
    assert.equal(lines[0], 'id,created_at,actor,actor_kind,entity,entity_id,action,request_id,changes,project_id');
    assert.equal(lines.length, 3);
    assert.ok(lines.slice(1).every((l) => l.endsWith(',42') && l.includes(',create,')));
    const [json] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export JSON' }).click()]);
    const entries = JSON.parse(readFileSync(await json.path(), 'utf8'));
    assert.deepEqual(entries.map((e) => e.changes.title.after), ['Filter one', 'Filter two']);

    // Paging: one entry per page through the URL the view builds is not exposed; check
    // the pager moves through a filter with more entries than a page holds.
    await page.getByRole('button', { name: 'Clear' }).click();
    await page.getByLabel('Actor').fill('nobody-at-all');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByText('No audit entries match this filter.').waitFor();
    await page.context().close();
  });

  it('follows the system theme until one is chosen, and keeps the choice across reloads', async () => {
    const page = await signedInPage(browser, rc, { colorScheme: 'dark' });
    const theme = () => page.evaluate(() => document.documentElement.dataset.theme);
    const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(await theme(), 'dark');
    assert.equal(await background(), 'rgb(15, 18, 23)');
    await page.emulateMedia({ colorScheme: 'light' });
    await page.waitForFunction(() => document.documentElement.dataset.theme === 'light');
    assert.equal(await background(), 'rgb(255, 255, 255)');

    const toggle = page.getByRole('button', { name: /^Theme: / });
    await toggle.click(); // system → light
    await toggle.click(); // light → dark
    assert.equal(await theme(), 'dark');
    await page.reload();
    await page.waitForSelector('main#main');
    assert.equal(await theme(), 'dark', 'the choice survives a reload');
    assert.match(await toggle.textContent(), /Theme: dark/);
    // The system says light, the user said dark: dark it stays.
    assert.equal(await background(), 'rgb(15, 18, 23)');
    await toggle.click(); // dark → system
    assert.equal(await theme(), 'light');
    await page.reload();
    await page.waitForSelector('main#main');
    assert.equal(await theme(), 'light');
    await page.context().close();
  });

  it('every shortcut listed in ? works', async () => {
    await api(rc, 'POST', '/issues', { project_id: 43, title: 'Shortcut target one' });
    await api(rc, 'POST', '/issues', { project_id: 43, title: 'Shortcut target two' });
    const page = await signedInPage(browser, rc);
    const press = async (...keys) => {
      for (const key of keys) await page.keyboard.press(key);
    };
    await press('?');
    const help = page.getByRole('dialog', { name: 'Keyboard shortcuts' });
    await help.waitFor();
    const listed = await help.locator('tr[data-shortcut]').evaluateAll((rows) => rows.map((r) => r.dataset.shortcut));
    assert.deepEqual(listed, ['help', 'search', 'next', 'previous', 'cluster', 'audit', 'issues', 'theme', 'close']);
    await press('Escape');
    await help.waitFor({ state: 'hidden' });

    await press('g', 'a');
    await page.waitForURL('**#/audit');
    await page.getByRole('heading', { name: 'Audit log' }).waitFor();
    await page.locator('.entries').waitFor();
    await press('/');
    assert.equal(await page.evaluate(() => document.activeElement.name), 'actor');
    // Typing in a field does not trigger shortcuts; Esc leaves it alone.
    await page.keyboard.type('g i');
    assert.ok(page.url().endsWith('#/audit'));
    await page.getByLabel('Actor').fill('');
    await page.locator('main').focus();

    await press('j');
    const first = await page.evaluate(() => document.activeElement.textContent);
    await press('j');
    const second = await page.evaluate(() => document.activeElement.textContent);
    assert.notEqual(first, second);
    assert.match(first, /^#1/);
    assert.match(second, /^#2/);
    await press('k');
    assert.equal(await page.evaluate(() => document.activeElement.textContent), first);
    // Enter opens the focused entry's diff: no mouse needed.
    await press('Enter');
    assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-expanded')), 'true');

    await press('g', 'i');
    await page.waitForURL('**#/issues');
    // The URL changes before the view renders: '/' must find the board's field, not the
    // audit view's on its way out.
    await page.getByRole('heading', { name: /^Issues of project/ }).waitFor();
    await press('/');
    assert.equal(await page.evaluate(() => document.activeElement.closest('form')?.getAttribute('aria-label')), 'Project');
    await page.keyboard.press('Control+A');
    await page.keyboard.type('43');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Issues of project 43' }).waitFor();
    await page.getByText('Shortcut target two').waitFor();
    await page.locator('main').focus();
    await press('j', 'j');
    assert.match(await page.evaluate(() => document.activeElement.textContent), /Shortcut target two/);
    await press('Enter');
    const detail = page.getByRole('dialog', { name: /^Issue #/ });
    await detail.waitFor();
    await press('Escape');
    await detail.waitFor({ state: 'hidden' });

    await press('g', 'c');
    await page.waitForURL('**#/cluster');
    await page.getByRole('heading', { name: 'Cluster' }).waitFor();

    const theme = () => page.evaluate(() => document.documentElement.dataset.theme);
    await press('t'); // system → light
    assert.equal(await theme(), 'light');
    await press('t'); // light → dark
    assert.equal(await theme(), 'dark');
    await press('t');
    await page.context().close();
  });

  it('has no serious accessibility violations in either theme (screenshots of every view)', async () => {
    const long = 'A very long issue title that goes on and on to see how the board wraps text without breaking its layout at all';
    const seeded = await api(rc, 'POST', '/issues', { project_id: 44, title: long, priority: 'urgent', type: 'bug', assignee: 'ana' });
    await api(rc, 'POST', '/issues', { project_id: 44, title: 'Add dark mode to the mobile app', type: 'feature' });
    const third = await api(rc, 'POST', '/issues', { project_id: 44, title: 'Rotate the signing keys', priority: 'low' });
    await api(rc, 'PATCH', `/issues/${third.body.id}`, { status: 'resolved' });
    await api(rc, 'POST', `/issues/${seeded.body.id}/comments`, { body: 'Reproduced.' });
    for (const colorScheme of ['light', 'dark']) {
      const page = await signedInPage(browser, rc, { colorScheme });
      await page.evaluate(() => localStorage.setItem('roomcast.console.project', '44'));
      const views = [
        ['cluster', 'Cluster', null],
        ['audit', 'Audit log', '.entries'],
        ['issues', 'Issues of project 44', '.card'],
      ];
      for (const [route, heading, ready] of views) {
        await page.goto(`${rc.http}/console/#/${route}`);
        await page.getByRole('heading', { name: heading }).waitFor();
        if (ready) await page.locator(ready).first().waitFor();
        if (route === 'audit') await page.locator('.entries .entry', { hasText: 'update' }).first().click();
        await page.screenshot({ path: path.join(ARTIFACTS, `console-${route}-${colorScheme}.png`), fullPage: false });
        const result = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']).analyze();
        const serious = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
        assert.deepEqual(
          serious.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`),
          [],
          `${route} in the ${colorScheme} theme`,
        );
      }
      // The dialogs too.
      await page.locator('.card').first().click();
      await page.getByRole('dialog').waitFor();
      await page.screenshot({ path: path.join(ARTIFACTS, `console-issue-${colorScheme}.png`) });
      const dialog = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa']).analyze();
      assert.deepEqual(dialog.violations.filter((v) => ['serious', 'critical'].includes(v.impact)).map((v) => v.id), []);
      await page.context().close();
    }
    const signIn = await (await browser.newContext()).newPage();
    await signIn.goto(`${rc.http}/console/sign-in`);
    await signIn.screenshot({ path: path.join(ARTIFACTS, 'console-sign-in-light.png') });
    const result = await new AxeBuilder({ page: signIn }).analyze();
    assert.deepEqual(result.violations.filter((v) => ['serious', 'critical'].includes(v.impact)).map((v) => v.id), []);
    await signIn.context().close();
  });
});
