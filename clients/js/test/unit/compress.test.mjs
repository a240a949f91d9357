// Subscriptions with `compress: 'deflate'`: message data deflated (raw DEFLATE, base64,
// as the server sends it) is inflated with the runtime's DecompressionStream, in order
// with the frames around it; data that does not inflate (or inflates past the bound)
// leads to a resubscribe, never to a wrong value.
import assert from 'node:assert/strict';
import { deflateRawSync } from 'node:zlib';
import { describe, it, mock } from 'node:test';
import { Client } from '../../dist/index.js';
import { inflateText } from '../../dist/compress.js';
import { FakeSocket, withFakeSocketAndClock, flush } from './fake-socket.mjs';

const pack = (text) => deflateRawSync(Buffer.from(text, 'utf8'), { level: 1 }).toString('base64');
const track = withFakeSocketAndClock();


// Inflating runs on the runtime's zlib threads: turn the event loop until `done` holds
// (the timers are mocked, so no wall-clock wait is involved), at most 100,000 turns.
async function settle(done) {
  for (let i = 0; i < 100_000 && !done(); i++) await flush();
}

describe('inflateText', () => {
  it('inflates what DEFLATE made and refuses a bomb at the limit', async () => {
    const text = JSON.stringify({ body: 'één paragraaf, nog eens '.repeat(100) });
    assert.equal(await inflateText(pack(text)), text);
    const bomb = deflateRawSync(Buffer.alloc(8 << 20)).toString('base64');
    await assert.rejects(inflateText(bomb, 1 << 20), /more than 1048576 bytes/);
    await assert.rejects(inflateText('@@@'), /not base64/);
    await assert.rejects(inflateText(Buffer.from('not deflate').toString('base64')), /not valid DEFLATE/);
  });
});

for (const encoding of ['json', 'msgpack']) {
  describe(`a compressed subscription (${encoding})`, () => {
    async function subscribed(extra = {}) {
      const c = new Client({ urls: ['ws://a.test/ws'], WebSocket: FakeSocket, random: () => 0.5, encoding });
      track(c);
      await flush();
      const ws = FakeSocket.last();
      ws.accept();
      const sub = c.subscribe('doc:1', { compress: 'deflate', ...extra });
      const log = { messages: [], errors: [] };
      sub.on('message', (m) => log.messages.push(m));
      sub.on('error', (e) => log.errors.push(e));
      const [frame] = ws.sent('subscribe');
      assert.equal(frame.compress, 'deflate');
      ws.push({ type: 'subscribed', id: frame.id, room: 'doc:1', epoch: 'e1', seq: 0, recovered: false, replayed: 0, compress: 'deflate' });
      return { ws, sub, log };
    }
    const big = (n) => ({ n, body: 'a long paragraph of the document '.repeat(60) });

    it('delivers inflated values in order with the plain ones around them', async () => {
      const { ws, log } = await subscribed();
      ws.push({ type: 'message', room: 'doc:1', epoch: 'e1', seq: 1, time: 1, data: big(1), });
      ws.push({ type: 'message', room: 'doc:1', epoch: 'e1', seq: 2, time: 1, data: pack(JSON.stringify(big(2))), compressed: true });
      ws.push({ type: 'message', room: 'doc:1', epoch: 'e1', seq: 3, time: 1, data: { n: 3 } });
      await settle(() => log.messages.length >= 3);
      assert.deepEqual(log.errors, []);
      assert.deepEqual(log.messages.map((m) => m.data), [big(1), big(2), { n: 3 }]);
    });

    it('inflates whole texts on a delta subscription too', async () => {
      const { ws, log } = await subscribed({ delta: 'fossil' });
      ws.push({ type: 'message', room: 'doc:1', epoch: 'e1', seq: 1, time: 1, data: pack(JSON.stringify(big(1))), delta: false, compressed: true });
      await settle(() => log.messages.length >= 1);
      assert.deepEqual(log.messages.map((m) => m.data), [big(1)]);
    });

    it('resubscribes from its position when data does not inflate', async () => {
      const { ws, log } = await subscribed();
      ws.push({ type: 'message', room: 'doc:1', epoch: 'e1', seq: 1, time: 1, data: { n: 1 } });
      ws.push({ type: 'message', room: 'doc:1', epoch: 'e1', seq: 2, time: 1, data: 'bm90IGRlZmxhdGU=', compressed: true });
      await settle(() => log.errors.length >= 1);
      assert.deepEqual(log.messages.map((m) => m.data), [{ n: 1 }]);
      assert.equal(log.errors.length, 1);
      assert.match(log.errors[0].message, /cannot decode doc:1 seq 2/);
      const again = ws.sent('subscribe').at(-1);
      assert.deepEqual(again.since, { epoch: 'e1', seq: 1 });
      assert.equal(again.compress, 'deflate');
    });
  });
}
