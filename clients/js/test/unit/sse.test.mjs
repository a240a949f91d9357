// The sse transport with a scripted EventSource and fetch: the fallback from a WebSocket
// that never opens, posts in order, resume with `since`, and the `close` event.
import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import { Client } from '../../dist/index.js';
import { FakeSocket, flush, message } from './fake-socket.mjs';

class FakeEventSource {
  static instances = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.onmessage = null;
    this.onerror = null;
    this.closed = false;
    FakeEventSource.instances.push(this);
  }
  close() {
    this.closed = true;
    this.readyState = 2;
  }
  push(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  welcome(session) {
    this.push({ type: 'welcome', protocol: 'roomcast.v1', server: 'node-a', session, limits: { max_frame_bytes: 65536, max_rooms: 128, max_history: 100, heartbeat_ms: 25000, publish_requires_subscription: false } });
  }
}

function fakeFetch() {
  const posts = [];
  const fetch = async (url, init) => {
    posts.push({ url, headers: init.headers, frames: init.body.split('\n').map((l) => JSON.parse(l)) });
    return { ok: true, status: 202 };
  };
  return { posts, fetch };
}

const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

describe('sse transport', () => {
  beforeEach(() => {
    FakeSocket.reset();
    FakeEventSource.instances = [];
  });

  it('falls back to sse when the WebSocket fails before a welcome, and stays there', async () => {
    const { posts, fetch } = fakeFetch();
    const client = new Client({ urls: ['ws://a.test/ws', 'ws://b.test/ws'], token: 'tok', WebSocket: FakeSocket, EventSource: FakeEventSource, fetch, reconnectDelayMs: 1, encoding: 'msgpack' });
    assert.equal(client.transport, 'websocket');
    await flush();
    FakeSocket.last().serverClose(1006);
    await wait(10);
    assert.equal(client.transport, 'sse');
    const es = FakeEventSource.instances[0];
    assert.equal(es.url, 'http://a.test/sse?access_token=tok', 'the same address, over sse');
    const sub = client.subscribe('r');
    es.welcome('S1');
    await flush();
    assert.equal(client.state, 'connected');
    assert.equal(posts.length, 1);
    assert.equal(posts[0].url, 'http://a.test/sse/S1');
    assert.equal(posts[0].headers.authorization, 'Bearer tok');
    const subscribe = posts[0].frames[0];
    assert.equal(subscribe.type, 'subscribe', 'JSON frames whatever the encoding');
    es.push({ type: 'subscribed', id: subscribe.id, room: 'r', epoch: 'e', seq: 0, recovered: false, replayed: 0 });
    es.push(message('r', 'e', 1));
    await flush();
    assert.deepEqual(sub.position, { epoch: 'e', seq: 1 });

    // The stream fails: the client comes back over sse (it worked) on the next URL and resumes.
    es.onerror({});
    await wait(10);
    assert.equal(FakeSocket.instances.length, 1, 'no WebSocket again once sse was welcomed');
    const again = FakeEventSource.instances[1];
    assert.equal(again.url, 'http://b.test/sse?access_token=tok');
    again.welcome('S2');
    await flush();
    const resume = posts[1].frames[0];
    assert.equal(posts[1].url, 'http://b.test/sse/S2');
    assert.deepEqual(resume.since, { epoch: 'e', seq: 1 });

    // A close event ends the session like a close frame: 1012 after a drain.
    const closes = [];
    client.on('disconnected', (info) => closes.push(info.code));
    again.push({ type: 'close', code: 1012, reason: 'service_restart' });
    await wait(5);
    assert.deepEqual(closes, [1012]);
    assert.ok(again.closed);
    client.close();
  });

  it('posts one request at a time, in order', async () => {
    const posts = [];
    let release;
    const fetch = (url, init) => {
      posts.push(init.body.split('\n').map((l) => JSON.parse(l).id));
      return new Promise((resolve) => {
        release = () => resolve({ ok: true, status: 202 });
      });
    };
    const client = new Client({ urls: 'ws://a.test/ws', transports: ['sse'], EventSource: FakeEventSource, fetch });
    await flush();
    FakeEventSource.instances[0].welcome('S');
    await flush();
    const acks = [client.publish('r', 1), client.publish('r', 2), client.publish('r', 3)];
    await flush();
    assert.equal(posts.length, 1, 'one post in flight');
    release();
    await flush();
    await flush();
    assert.equal(posts.length, 2);
    assert.deepEqual(posts.flat(), [1, 2, 3]);
    client.close();
    await Promise.allSettled(acks);
  });
});
