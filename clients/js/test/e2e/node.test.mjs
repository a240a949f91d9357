// The SDK in Node (20+), against a real roomcast, in both encodings.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Scope, startRoomcast } from './harness.mjs';

const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'node/client.mjs');
const major = Number(process.versions.node.split('.')[0]);
const flags = major < 22 ? ['--experimental-websocket', '--no-warnings'] : ['--no-warnings'];

for (const encoding of ['json', 'msgpack']) {
  test(`Node ${process.versions.node}, ${encoding}: subscribe, publish, idempotent retry, history`, { timeout: 60_000 }, async (t) => {
    const scope = new Scope();
    t.after(() => scope.cleanup());
    const rc = await startRoomcast(scope);
    const out = await new Promise((resolve, reject) => {
      execFile(process.execPath, [...flags, script, rc.url, encoding], { timeout: 30_000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${err.message}\n${stderr}`));
        else resolve(JSON.parse(stdout.trim().split('\n').pop()));
      });
    });
    assert.equal(out.server, null, 'closed at the end');
    assert.deepEqual(out.ackSeqs.slice().sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i + 1));
    // Delivered in seq order, once each; publishes of one room are sequenced in send order.
    assert.deepEqual(out.seen, [...Array.from({ length: 20 }, (_, i) => [i + 1, i]), [21, 0]]);
    assert.deepEqual(out.keyed, [21, false, 21, true]);
    assert.deepEqual(out.history, [true, [0, 1, 2, 3, 4].map((n) => 2 ** 40 + n)]);
  });
}
