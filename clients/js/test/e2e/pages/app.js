// The application the browser tests drive: it uses the SDK like an app would and keeps
// its own record of everything the SDK delivered, for the test to check.
import * as roomcast from '/dist/index.js';

const record = {
  /** room -> [{epoch, seq, pub}] in delivery order */
  delivered: {},
  /** acks of this page's publishes: {room, pub, epoch, seq, duplicate} */
  acks: [],
  /** publishes that were rejected: {room, pub, kind, message} */
  failed: [],
  /** room -> [SubscribedInfo + at] */
  subscribed: {},
  /** [ResetInfo + at] */
  resets: [],
  /** [{client, event, ...}] client-level events */
  events: [],
  errors: [],
};

const clients = [];
const timers = [];
let publishing = 0;
const inflight = new Set();

function follow(client, room) {
  record.delivered[room] ??= [];
  record.subscribed[room] ??= [];
  return client.subscribe(room, {
    onMessage: (m) => record.delivered[room].push({ epoch: m.epoch, seq: m.seq, pub: m.data && m.data.pub }),
    onSubscribed: (info) => record.subscribed[room].push({ ...info, at: Date.now() }),
    onReset: (info) => record.resets.push({ ...info, at: Date.now() }),
    onError: (err) => record.errors.push({ room, kind: err.kind, code: err.code, message: err.message }),
  });
}

function makeClient(name, options) {
  const client = new roomcast.Client(options);
  client.name = name;
  for (const event of ['connected', 'disconnected', 'draining', 'reconnecting', 'refreshed', 'closed', 'error']) {
    client.on(event, (info) => {
      const entry = { client: name, event, at: Date.now() };
      if (event === 'connected') entry.server = info.server;
      else if (event === 'error') Object.assign(entry, { kind: info.kind, code: info.code, message: info.message });
      else if (info && typeof info === 'object') Object.assign(entry, info, info.error ? { error: info.error.kind } : {});
      record.events.push(entry);
    });
  }
  clients.push(client);
  return client;
}

function publish(client, room, pub, options) {
  const p = client.publish(room, { pub }, options).then(
    (ack) => record.acks.push({ room, pub, epoch: ack.epoch, seq: ack.seq, duplicate: ack.duplicate }),
    (err) => record.failed.push({ room, pub, kind: err.kind, message: err.message }),
  );
  inflight.add(p);
  p.finally(() => inflight.delete(p));
  return p;
}

window.roomcast = roomcast;
window.record = record;
window.app = {
  makeClient,
  follow,
  publish,
  client: (name) => clients.find((c) => c.name === name),
  /** Subscribes `client` to `rooms`; resolves when all are confirmed. */
  async subscribeAll(name, rooms) {
    const client = clients.find((c) => c.name === name);
    await Promise.all(rooms.map((room) => follow(client, room).ready));
  },
  /** Every `intervalMs`, `name` publishes to the next of `rooms` (round robin). */
  publishLoop(name, rooms, intervalMs) {
    const client = clients.find((c) => c.name === name);
    let n = 0;
    publishing++;
    timers.push(setInterval(() => {
      const room = rooms[n % rooms.length];
      publish(client, room, `${name}-${n++}`);
    }, intervalMs));
  },
  /** Stops the loops; resolves when every publish they made has settled. */
  async stopPublishing() {
    for (const t of timers.splice(0)) clearInterval(t);
    publishing = 0;
    await Promise.all(Array.from(inflight));
  },
  transports: () => clients.map((c) => c.transport),
  servers: () => clients.map((c) => ({ name: c.name, server: c.welcome ? c.welcome.server : null, state: c.state, pending: c.pendingPublishes })),
  closeAll() {
    for (const c of clients) c.close();
  },
};
window.appReady = true;
