// A scriptable stand-in for a WebSocket: the test plays the server.
import { afterEach, beforeEach, mock } from 'node:test';
import { decode, encode } from '@msgpack/msgpack';

export class FakeSocket {
  static instances = [];

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.protocol = '';
    this.binaryType = 'blob';
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    this.sentRaw = [];
    this.closedByClient = null;
    FakeSocket.instances.push(this);
  }

  static reset() {
    FakeSocket.instances = [];
  }

  static last() {
    return FakeSocket.instances[FakeSocket.instances.length - 1];
  }

  get msgpack() {
    return Array.isArray(this.protocols) && this.protocols[0] === 'roomcast.v1.msgpack';
  }

  // ---- client side (what the SDK calls) ----
  send(data) {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    this.sentRaw.push(data);
  }

  close(code, reason) {
    this.closedByClient = { code, reason };
    this.readyState = 3;
  }

  // ---- server side (what the test calls) ----
  /** Frames the client sent, decoded. */
  sent(type) {
    const frames = this.sentRaw.map((d) => (typeof d === 'string' ? JSON.parse(d) : decode(d)));
    return type ? frames.filter((f) => f.type === type) : frames;
  }

  open() {
    this.readyState = 1;
    this.protocol = this.protocols[0];
    this.onopen?.({});
  }

  push(frame) {
    const data = this.msgpack ? toArrayBuffer(encode(frame)) : JSON.stringify(frame);
    this.onmessage?.({ data });
  }

  welcome(extra = {}) {
    this.push({
      type: 'welcome',
      protocol: 'roomcast.v1',
      server: 'node-a',
      session: 's-' + FakeSocket.instances.length,
      limits: { max_frame_bytes: 65536, max_rooms: 128, max_history: 100, heartbeat_ms: 25000, publish_requires_subscription: false },
      ...extra,
    });
  }

  /** Opens and welcomes. */
  accept(extra) {
    this.open();
    this.welcome(extra);
  }

  serverClose(code = 1006, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

function toArrayBuffer(u8) {
  return u8.buffer.slice(u8.byteOffset, u8.byteOffset + u8.byteLength);
}

/** Lets pending promise callbacks and microtasks run (timers stay mocked). */
export function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}

export function message(room, epoch, seq, data = { n: seq }) {
  return { type: 'message', room, epoch, seq, time: 1700000000000 + seq, data };
}

/**
 * Gives every test of the file a fresh set of fake sockets and fake timers (the clock
 * starts at 1,000,000 ms). Returns `track(client)`: tracked clients are closed after
 * their test.
 */
export function withFakeSocketAndClock() {
  let clients = [];
  beforeEach(() => {
    FakeSocket.reset();
    mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: 1_000_000 });
  });
  afterEach(() => {
    for (const c of clients) c.close();
    clients = [];
    mock.timers.reset();
  });
  return (client) => {
    clients.push(client);
    return client;
  };
}
