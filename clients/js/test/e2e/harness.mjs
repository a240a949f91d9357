// Real processes for the browser tests: redis-server, roomcast instances, a static file
// server and headless Chromium. Everything started here is tracked by PID and killed by
// PID when the test ends (also when it fails, and when the runner exits).
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const pkgRoot = path.resolve(here, '../..');
export const repoRoot = path.resolve(pkgRoot, '../..');
export const ROOMCAST_BIN = process.env.ROOMCAST_BIN ?? path.join(repoRoot, 'target/debug/roomcast');
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Every child still running, by PID. */
const running = new Map();
function killAll() {
  for (const pid of running.keys()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
}
process.on('exit', killAll);
// A runner stopped by a timeout (SIGTERM) or by hand still leaves nothing behind.
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.once(signal, () => {
    killAll();
    process.exit(1);
  });
}

/** Resources of one test, released by `cleanup()` in reverse order. */
export class Scope {
  constructor() {
    this.undo = [];
  }
  defer(fn) {
    this.undo.push(fn);
  }
  async cleanup() {
    while (this.undo.length) {
      const fn = this.undo.pop();
      try {
        await fn();
      } catch (err) {
        console.error('cleanup:', err);
      }
    }
  }
}

export async function freePort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]);
}

/** A child process whose stdout/stderr lines are kept and can be waited for. */
class Proc {
  constructor(name, command, args, env) {
    this.name = name;
    this.lines = [];
    this.waiters = [];
    this.child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.pid = this.child.pid;
    running.set(this.pid, this);
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        running.delete(this.pid);
        this.exitCode = code;
        this.exitSignal = signal;
        for (const w of this.waiters.splice(0)) w.reject(new Error(`${name} exited (${code ?? signal}) before: ${w.what}`));
        resolve({ code, signal });
      });
    });
    for (const stream of [this.child.stdout, this.child.stderr]) {
      createInterface({ input: stream }).on('line', (line) => {
        this.lines.push(line);
        for (const w of this.waiters.slice()) {
          const value = w.match(line);
          if (value !== undefined) {
            this.waiters.splice(this.waiters.indexOf(w), 1);
            w.resolve(value);
          }
        }
      });
    }
  }

  /** Resolves with match(line) for the first line (seen or to come) where it is defined. */
  waitForLine(match, ms, what) {
    for (const line of this.lines) {
      const value = match(line);
      if (value !== undefined) return Promise.resolve(value);
    }
    if (this.exitCode !== undefined || this.exitSignal) return Promise.reject(new Error(`${this.name} is not running`));
    const p = new Promise((resolve, reject) => this.waiters.push({ match, resolve, reject, what }));
    return withTimeout(p, ms, `${this.name}: ${what}`).catch((err) => {
      err.message += `\n--- ${this.name} output ---\n${this.lines.slice(-30).join('\n')}`;
      throw err;
    });
  }

  /**
   * Sends a signal by PID; with SIGKILL/SIGTERM, waits for the exit; with SIGSTOP, until
   * every thread is stopped (the kernel stops each one at its next return from the
   * kernel: on a loaded machine a thread can run on for a while after kill() returns,
   * and a test that freezes a server must not see it answer afterwards).
   */
  async kill(signal = 'SIGKILL', ms = 10_000) {
    if (!running.has(this.pid)) return;
    process.kill(this.pid, signal);
    if (signal === 'SIGKILL' || signal === 'SIGTERM') await withTimeout(this.exited, ms, `${this.name} exit`);
    if (signal === 'SIGSTOP') await allThreadsStopped(this.pid, ms);
  }
}

/**
 * Resolves once every thread of `pid` is stopped (`T`, or `t` under a tracer, in /proc;
 * a thread that is gone or a zombie counts as stopped); rejects after `ms`.
 */
async function allThreadsStopped(pid, ms) {
  const stopped = (task) => {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${task}/stat`, 'utf8');
      return 'TtZX'.includes(stat.charAt(stat.lastIndexOf(')') + 2));
    } catch {
      return true; // the thread is gone
    }
  };
  const deadline = Date.now() + ms;
  for (;;) {
    let tasks;
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      return; // the process is gone
    }
    if (tasks.every(stopped)) return;
    if (Date.now() > deadline) throw new Error(`pid ${pid}: not every thread stopped within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** redis-server on `port` (a free one by default), nothing persisted. */
export async function startRedis(scope, port) {
  port ??= await freePort();
  const proc = new Proc(`redis:${port}`, 'redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
  ], process.env);
  scope.defer(() => proc.kill());
  await proc.waitForLine((l) => (l.includes('Ready to accept connections') ? true : undefined), 15_000, 'ready');
  proc.port = port;
  return proc;
}

/** A roomcast instance on an ephemeral port; resolves once it listens. */
export async function startRoomcast(scope, env = {}) {
  if (!existsSync(ROOMCAST_BIN)) throw new Error(`roomcast binary not found at ${ROOMCAST_BIN} (build it, or set ROOMCAST_BIN)`);
  const node = 'e2e-' + randomBytes(4).toString('hex');
  const db = path.join(tmpdir(), `roomcast-js-${node}.db`);
  const childEnv = { ...process.env };
  // The server reads every ROOMCAST_* variable as configuration and refuses unknown keys
  // (ROOMCAST_BIN among them): pass only the ones set here.
  for (const key of Object.keys(childEnv)) if (key.startsWith('ROOMCAST_')) delete childEnv[key];
  delete childEnv.RUST_LOG;
  delete childEnv.DATABASE_URL;
  Object.assign(childEnv, {
    ROOMCAST_LISTEN: '127.0.0.1:0',
    ROOMCAST_LOG__FORMAT: 'json',
    ROOMCAST_LOG__LEVEL: 'info',
    ROOMCAST_DATABASE_URL: `sqlite://${db}?mode=rwc`,
    ROOMCAST_NODE_ID: node,
    ...env,
  });
  const proc = new Proc(`roomcast ${node}`, ROOMCAST_BIN, [], childEnv);
  scope.defer(async () => {
    await proc.kill();
    for (const f of [db, db + '-wal', db + '-shm']) rmSync(f, { force: true });
  });
  proc.node = node;
  proc.addr = await proc.waitForLine((line) => {
    try {
      const v = JSON.parse(line);
      const message = v.message ?? v.fields?.message;
      const addr = v.addr ?? v.fields?.addr;
      return message === 'roomcast listening' ? addr : undefined;
    } catch {
      return undefined;
    }
  }, 30_000, 'listening');
  proc.url = `ws://${proc.addr}/ws`;
  proc.http = `http://${proc.addr}`;
  return proc;
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.map': 'application/json', '.css': 'text/css' };

/**
 * Serves the built SDK (/dist), its MessagePack codec (/msgpack) and the test pages
 * (/pages) on a loopback port.
 */
export async function startStatic(scope) {
  const roots = {
    '/dist/': path.join(pkgRoot, 'dist'),
    '/msgpack/': path.join(pkgRoot, 'node_modules/@msgpack/msgpack/dist.esm'),
    '/pages/': path.join(here, 'pages'),
  };
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const prefix = Object.keys(roots).find((p) => url.pathname.startsWith(p));
    const file = prefix && path.join(roots[prefix], path.normalize(decodeURIComponent(url.pathname.slice(prefix.length))));
    if (!file || !file.startsWith(roots[prefix]) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    createReadStream(file).pipe(res);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  scope.defer(() => new Promise((resolve) => server.close(resolve)).then(() => server.closeAllConnections?.()));
  const { port } = server.address();
  return { port, origin: `http://127.0.0.1:${port}`, otherOrigin: `http://localhost:${port}` };
}

/** Headless Debian Chromium (never a downloaded browser). */
export async function launchBrowser(scope) {
  const { chromium } = await import('playwright-core');
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_PATH)`);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu'], timeout: 30_000 });
  scope.defer(() => browser.close());
  return browser;
}

/** Opens a page of the harness and waits until the SDK is loaded in it. */
export async function openPage(browser, origin, name = 'app.html') {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && process.env.E2E_VERBOSE) console.error('[page]', msg.text());
  });
  page.setDefaultTimeout(30_000);
  await page.goto(`${origin}/pages/${name}`);
  await page.waitForFunction(() => window.appReady === true, null, { timeout: 15_000 });
  page.pageErrors = errors;
  return page;
}

/** An HS256 JWT signed with node:crypto. */
export function signJwt(claims, secret) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

export function percentile(values, p) {
  const sorted = values.slice().sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))];
}
