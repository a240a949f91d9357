// Subscriptions with `delta: 'fossil'`: deltas made by the server's own code
// (fossil-fixture.json, written by `cargo test --lib fossil`) applied by the SDK, and a
// delta the SDK cannot apply leading to a resubscribe, never to a wrong value.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { Client } from '../../dist/index.js';
import { applyDelta, applyTextDelta } from '../../dist/fossil.js';
import { FakeSocket, withFakeSocketAndClock, flush } from './fake-socket.mjs';

const steps = JSON.parse(readFileSync(new URL('./fossil-fixture.json', import.meta.url), 'utf8'));
const encoder = new TextEncoder();

const track = withFakeSocketAndClock();


describe('fossil deltas', () => {
  it('applies deltas made by the server, multi-byte text included', () => {
    assert.ok(steps.length >= 5);
    for (const { base, delta, target } of steps) {
      assert.ok(delta.length < target.length, 'a delta is smaller than the text');
      assert.equal(applyTextDelta(base, delta), target);
    }
  });

  it('refuses a delta applied to another base, a truncated one, and one that expands past the limit', () => {
    const [first, second] = steps;
    assert.throws(() => applyTextDelta(second.target, first.delta), /checksum|malformed/);
    assert.throws(() => applyTextDelta(first.base, first.delta.slice(0, -1)), /malformed|checksum/);
    assert.throws(() => applyTextDelta(first.base, ''), /malformed/);
    // A bomb: 2 bytes of source copied into a claimed ~16 GiB output.
    assert.throws(() => applyDelta(encoder.encode('ab'), encoder.encode('~~~~~~\n2@0,0;')), /exceeds the limit/);
    assert.throws(() => applyDelta(encoder.encode('ab'), encoder.encode('8\n2@0,2@0,2@0,2@0,2@0,0;')), /exceeds the announced size/);
  });
});

for (const encoding of ['json', 'msgpack']) {
  describe(`a delta subscription (${encoding})`, () => {
    async function subscribedWithDelta() {
      const c = new Client({ urls: ['ws://a.test/ws'], WebSocket: FakeSocket, random: () => 0.5, encoding });
      track(c);
      await flush();
      const ws = FakeSocket.last();
      ws.accept();
      const sub = c.subscribe('issue:1', { delta: 'fossil' });
      const log = { messages: [], errors: [] };
      sub.on('message', (m) => log.messages.push(m));
      sub.on('error', (e) => log.errors.push(e));
      const [frame] = ws.sent('subscribe');
      assert.equal(frame.delta, 'fossil');
      ws.push({ type: 'subscribed', id: frame.id, room: 'issue:1', epoch: 'e1', seq: 0, recovered: false, replayed: 0, delta: 'fossil' });
      return { ws, sub, log };
    }
    const msg = (seq, data, delta) => ({ type: 'message', room: 'issue:1', epoch: 'e1', seq, time: 1, data, delta });

    it('delivers whole values rebuilt from deltas', async () => {
      const { ws, log } = await subscribedWithDelta();
      ws.push(msg(1, steps[0].base, false));
      steps.forEach((step, i) => ws.push(msg(i + 2, step.delta, true)));
      assert.deepEqual(log.errors, []);
      assert.deepEqual(
        log.messages.map((m) => m.data),
        [JSON.parse(steps[0].base), ...steps.map((s) => JSON.parse(s.target))],
      );
    });

    it('resubscribes from its position when a delta has no base, and drops what follows until then', async () => {
      const { ws, sub, log } = await subscribedWithDelta();
      ws.push(msg(1, steps[0].base, false));
      ws.push(msg(2, steps[0].delta, true));
      // seq 3 is missing: the delta of seq 4 is against a base the SDK does not have.
      ws.push(msg(4, steps[2].delta, true));
      assert.equal(log.messages.length, 2);
      assert.equal(log.errors.length, 1);
      assert.match(log.errors[0].message, /no base/);
      const sent = ws.sent().slice(-2);
      assert.deepEqual(sent.map((f) => f.type), ['unsubscribe', 'subscribe']);
      assert.deepEqual(sent[1].since, { epoch: 'e1', seq: 2 });
      assert.equal(sent[1].delta, 'fossil');
      // Messages of the old subscription still on their way are dropped.
      ws.push(msg(5, steps[3].delta, true));
      assert.equal(log.messages.length, 2);
      ws.push({ type: 'unsubscribed', id: sent[0].id, room: 'issue:1' });
      ws.push({ type: 'subscribed', id: sent[1].id, room: 'issue:1', epoch: 'e1', seq: 4, recovered: true, replayed: 2, delta: 'fossil' });
      ws.push(msg(3, steps[1].target, false));
      ws.push(msg(4, steps[2].delta, true));
      assert.deepEqual(log.messages.map((m) => m.seq), [1, 2, 3, 4]);
      assert.deepEqual(log.messages[3].data, JSON.parse(steps[2].target));
      assert.equal(sub.active, true);
    });

    it('refuses a delta against a wrong base instead of delivering a wrong value', async () => {
      const { ws, log } = await subscribedWithDelta();
      ws.push(msg(1, steps[3].base, false));
      ws.push(msg(2, steps[0].delta, true)); // made against another text
      assert.equal(log.messages.length, 1);
      assert.equal(log.errors.length, 1);
      assert.deepEqual(ws.sent().slice(-2).map((f) => f.type), ['unsubscribe', 'subscribe']);
    });
  });
}
