// Presence in the SDK: the subscribe flag and info, snapshots, coalesced diffs, the
// set across a reconnect, and the presence / presence_stats requests.
import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';
import { Client } from '../../dist/index.js';
import { FakeSocket, withFakeSocketAndClock, flush } from './fake-socket.mjs';

const A = 'ws://a.test/ws';
const B = 'ws://b.test/ws';
const track = withFakeSocketAndClock();

function entry(conn, user = 'u-' + conn, node = 'node-a') {
  return { user, conn, node, joined: 1000 + conn.charCodeAt(0) };
}

async function connected(options = {}) {
  const c = new Client({ urls: [A, B], WebSocket: FakeSocket, random: () => 0.5, ...options });
  track(c);
  await flush();
  const ws = FakeSocket.last();
  ws.accept();
  return { c, ws };
}

function subscribedReply(ws, frame) {
  ws.push({ type: 'subscribed', id: frame.id, room: frame.room, epoch: 'e1', seq: 0, recovered: false, replayed: 0 });
}


describe('presence', () => {
  it('sends presence and info on subscribe, and only when asked', async () => {
    const { c, ws } = await connected();
    c.subscribe('issue:1', { presence: { info: { name: 'Ana' } } });
    c.subscribe('issue:2', { presence: true });
    c.subscribe('lobby');
    const [one, two, lobby] = ws.sent('subscribe');
    assert.equal(one.presence, true);
    assert.deepEqual(one.info, { name: 'Ana' });
    assert.equal(two.presence, true);
    assert.equal('info' in two, false);
    assert.equal('presence' in lobby, false);
  });

  it('tracks the set from the snapshot and diffs, with join and leave handlers', async () => {
    const { c, ws } = await connected();
    const log = { presence: [], joins: [], leaves: [] };
    const sub = c.subscribe('issue:1', {
      presence: true,
      onPresence: (set) => log.presence.push(set.map((e) => e.conn)),
      onJoin: (entries) => log.joins.push(entries.map((e) => e.conn)),
      onLeave: (entries) => log.leaves.push(entries.map((e) => e.conn)),
    });
    subscribedReply(ws, ws.sent('subscribe')[0]);
    ws.push({ type: 'presence', room: 'issue:1', clients: [entry('a'), entry('b')] });
    assert.deepEqual(sub.members.map((e) => e.conn), ['a', 'b']);
    assert.deepEqual(log.joins, [], 'the first snapshot is not a join');
    // One coalesced frame for several changes.
    ws.push({ type: 'presence_diff', room: 'issue:1', joins: [entry('c'), entry('d')], leaves: [entry('a')] });
    assert.deepEqual(sub.members.map((e) => e.conn), ['b', 'c', 'd']);
    assert.deepEqual(log.joins, [['c', 'd']]);
    assert.deepEqual(log.leaves, [['a']]);
    assert.deepEqual(log.presence.at(-1), ['b', 'c', 'd']);
    // Frames of other rooms do not touch this one.
    ws.push({ type: 'presence_diff', room: 'issue:9', joins: [entry('z')], leaves: [] });
    assert.equal(sub.members.length, 3);
  });

  it('with presence, ready waits for the first snapshot as well as subscribed', async () => {
    const { c, ws } = await connected();
    const sub = c.subscribe('issue:1', { presence: true });
    const plain = c.subscribe('lobby');
    let settled = false;
    sub.ready.then(() => (settled = true));
    const [withPresence, lobby] = ws.sent('subscribe');
    subscribedReply(ws, withPresence);
    subscribedReply(ws, lobby);
    await flush();
    assert.equal((await plain.ready).room, 'lobby', 'no presence: ready on subscribed');
    assert.equal(settled, false, 'the set is not known yet');
    ws.push({ type: 'presence', room: 'issue:1', clients: [entry('a')] });
    const info = await sub.ready;
    assert.equal(info.room, 'issue:1');
    assert.deepEqual(sub.members.map((e) => e.conn), ['a'], 'the set is there when ready settles');
  });

  it('after a reconnect, reports what changed between the old set and the new snapshot', async () => {
    const { c, ws } = await connected();
    const log = { joins: [], leaves: [] };
    const sub = c.subscribe('issue:1', {
      presence: true,
      onJoin: (entries) => log.joins.push(entries.map((e) => e.conn)),
      onLeave: (entries) => log.leaves.push(entries.map((e) => e.conn)),
    });
    subscribedReply(ws, ws.sent('subscribe')[0]);
    ws.push({ type: 'presence', room: 'issue:1', clients: [entry('a'), entry('b')] });
    ws.serverClose(1006);
    mock.timers.tick(1_000);
    await flush();
    const next = FakeSocket.last();
    assert.notEqual(next, ws);
    next.accept();
    const [again] = next.sent('subscribe');
    assert.equal(again.presence, true, 'presence is asked for again on resubscribe');
    subscribedReply(next, again);
    next.push({ type: 'presence', room: 'issue:1', clients: [entry('b'), entry('e', 'u-e', 'node-b')] });
    assert.deepEqual(sub.members.map((e) => e.conn), ['b', 'e']);
    assert.deepEqual(log.leaves, [['a']]);
    assert.deepEqual(log.joins, [['e']]);
  });

  it('answers presence and presence_stats requests, also across a reconnect', async () => {
    const { c, ws } = await connected();
    const who = c.presence('issue:1');
    const counts = c.presenceStats('issue:1');
    const [p] = ws.sent('presence');
    const [s] = ws.sent('presence_stats');
    assert.equal(p.room, 'issue:1');
    ws.push({ type: 'presence', id: p.id, room: 'issue:1', clients: [entry('a')] });
    assert.deepEqual((await who).map((e) => e.conn), ['a']);
    // The stats request is lost with the connection and sent again on the next one.
    ws.serverClose(1006);
    mock.timers.tick(1_000);
    await flush();
    const next = FakeSocket.last();
    next.accept();
    const [s2] = next.sent('presence_stats');
    assert.ok(s2, 'the unanswered request is re-sent');
    assert.notEqual(s2.id, s.id);
    next.push({ type: 'presence_stats', id: s2.id, room: 'issue:1', clients: 3, users: 2 });
    assert.deepEqual(await counts, { room: 'issue:1', clients: 3, users: 2 });
  });

  it('rejects a request the server refuses for good', async () => {
    const { c, ws } = await connected();
    const who = c.presence('lobby');
    const [p] = ws.sent('presence');
    ws.push({ type: 'error', id: p.id, code: 102, name: 'invalid_frame', message: 'presence is not enabled for lobby' });
    await assert.rejects(who, (err) => err.kind === 'invalid_frame' && err.code === 102 && err.room === 'lobby');
  });
});
