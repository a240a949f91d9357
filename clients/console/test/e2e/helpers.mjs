// Shared by the console's browser tests: the SDK's harness (real roomcast and
// redis-server processes, Debian's Chromium), a signed-in console page, API calls.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export { Scope, freePort, launchBrowser, signJwt, startRedis, startRoomcast } from '../../../js/test/e2e/harness.mjs';
import { signJwt } from '../../../js/test/e2e/harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
/** Screenshots of the views, kept as test artifacts (git-ignored). */
export const ARTIFACTS = path.resolve(here, '../artifacts');
mkdirSync(ARTIFACTS, { recursive: true });

export const SECRET = 'console-e2e-' + Math.random().toString(36).slice(2);
export const SERVICE = 'svc-console-e2e-0123456789';

export function adminToken(sub = 'olga') {
  return signJwt({ sub, roles: ['admin'], exp: Math.floor(Date.now() / 1000) + 3600 }, SECRET);
}

export function userToken(sub = 'ann') {
  return signJwt({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }, SECRET);
}

/** The environment of an instance with authentication on. */
export function authEnv(extra = {}) {
  return {
    ROOMCAST_AUTH__JWT_HS256_SECRET: SECRET,
    ROOMCAST_AUTH__SERVICE_TOKENS: `ops:${SERVICE}`,
    ...extra,
  };
}

/** Calls the API as the `ops` service; returns { status, body, etag }. */
export async function api(rc, method, route, body, headers = {}) {
  const response = await fetch(`${rc.http}/api/v1${route}`, {
    method,
    headers: { authorization: `Bearer ${SERVICE}`, ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null, etag: response.headers.get('etag') };
}

/** A new page, signed in to the console of `rc` through its sign-in page. */
export async function signedInPage(browser, rc, { token = adminToken(), colorScheme = 'light', route = '' } = {}) {
  const context = await browser.newContext({ colorScheme, acceptDownloads: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.pageErrors = [];
  page.on('pageerror', (err) => page.pageErrors.push(err));
  await page.goto(`${rc.http}/console/`);
  await page.waitForURL('**/console/sign-in');
  await page.fill('#token', token);
  await page.click('button[type=submit]');
  await page.waitForURL('**/console/');
  await page.waitForSelector('main#main');
  if (route) await page.goto(`${rc.http}/console/#/${route}`);
  return page;
}
