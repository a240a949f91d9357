// Runs the SDK in Node against a real server (argv: WebSocket URL, encoding) and prints
// a JSON report. Node 20 needs --experimental-websocket for its WebSocket; the
// constructor is passed explicitly, as the SDK's option allows.
import { Client } from '../../../dist/index.js';

const [url, encoding] = process.argv.slice(2);
const client = new Client({ urls: url, encoding, WebSocket: globalThis.WebSocket });
const room = `node:${encoding}`;
const seen = [];
const sub = client.subscribe(room, { onMessage: (m) => seen.push([m.seq, m.data.n]) });
await sub.ready;
const acks = await Promise.all(Array.from({ length: 20 }, (_, n) => sub.publish({ n, big: 2 ** 40 + n, text: 'é' })));
const again = await sub.publish({ n: 0 }, { idempotencyKey: 'fixed-key' });
const dup = await sub.publish({ n: 0 }, { idempotencyKey: 'fixed-key' });
const history = await sub.history({ since: { epoch: acks[0].epoch, seq: 0 }, limit: 5 });
while (seen.length < 21) await new Promise((r) => setTimeout(r, 10));
await sub.unsubscribe();
client.close();
console.log(JSON.stringify({
  server: client.welcome?.server ?? null,
  ackSeqs: acks.map((a) => a.seq),
  seen,
  keyed: [again.seq, again.duplicate, dup.seq, dup.duplicate],
  history: [history.recovered, history.messages.map((m) => m.data.big)],
}));
