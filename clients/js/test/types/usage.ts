// Compiled (not run) by scripts/test-js.sh: the published declarations must type an
// application's ordinary use under strict mode, with the DOM's own WebSocket.
import { Client, RoomcastError } from '../../dist/index.js';
import type { Ack, HistoryResult, Message, ResetInfo, SubscribedInfo, Welcome } from '../../dist/index.js';

interface Chat {
  from: string;
  text: string;
}

const client = new Client({
  urls: ['ws://a.test/ws', 'ws://b.test/ws'],
  token: async () => 'jwt',
  encoding: 'msgpack',
  WebSocket,
});
client.on('connected', (w: Welcome) => console.log(w.server, w.limits.max_rooms, w.expires_at));
client.on('disconnected', ({ code, reason, willReconnect }) => console.log(code, reason, willReconnect));
client.on('reconnecting', ({ attempt, delayMs, url }) => console.log(attempt + delayMs, url));
client.on('error', (e: RoomcastError) => console.log(e.kind, e.code, e.retryable));

const sub = client.subscribe<Chat>('chat:1', {
  onMessage: (m: Message<Chat>) => console.log(m.seq, m.data.text.toUpperCase()),
  onSubscribed: (i: SubscribedInfo) => console.log(i.recovered, i.replayed, i.reason),
  onReset: (r: ResetInfo) => console.log(r.source, r.previous?.seq),
});
const ack: Promise<Ack> = sub.publish({ from: 'ann', text: 'hi' }, { idempotencyKey: 'k1' });
const page: Promise<HistoryResult<Chat>> = sub.history({ limit: 10 });
void ack;
void page;
// @ts-expect-error: the room's data type is enforced
void sub.publish({ from: 'ann' });
const stop: () => void = sub.on('reset', () => {});
stop();
