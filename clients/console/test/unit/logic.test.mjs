// The console's pure parts: the cluster view function (against the admin API's
// contract), the audit diff and filters, the shortcut machine, the theme choice.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
let dir;
let lib;
before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'console-unit-'));
  const entries = ['cluster', 'audit', 'shortcuts', 'theme', 'format'];
  await esbuild.build({
    entryPoints: Object.fromEntries(entries.map((e) => [e, path.join(root, 'src/lib', e + '.ts')])),
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    outdir: dir,
    outExtension: { '.js': '.mjs' },
    logLevel: 'warning',
  });
  lib = Object.fromEntries(await Promise.all(entries.map(async (e) => [e, await import(pathToFileURL(path.join(dir, e + '.mjs')))])));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const instance = (id, extra = {}) => ({
  id,
  advertise_url: `ws://10.0.0.${id.length}:8080/ws`,
  version: '0.1.0',
  started_at: '2026-12-06T10:00:00Z',
  uptime_secs: 3725,
  state: 'ready',
  connections: 1200,
  rooms: 40,
  subscriptions: 2400,
  cpu_percent: 12.34,
  memory_bytes: 52428800,
  last_seen_ms: 300,
  broker: { reachable: true, pubsub_probe_age_ms: 900, pubsub_lag_seconds: 0.01 },
  ...extra,
});

const snapshot = (instances) => ({
  generated_at: '2026-12-06T11:00:00Z',
  self_id: 'rc-b',
  ttl_ms: 6000,
  instances,
  broker: { kind: 'redis', reachable: true },
  top_rooms: { by_subscribers: [], by_message_rate: [] },
  recent: { slow_consumer_disconnects: [], recoveries: [] },
});

describe('cluster view', () => {
  it('lists the instances by id with their figures, and totals', () => {
    const view = lib.cluster.clusterView(
      snapshot([
        instance('rc-b'),
        instance('rc-a', { state: 'draining', cpu_percent: null, memory_bytes: null, broker: { reachable: false, pubsub_probe_age_ms: null, pubsub_lag_seconds: null } }),
      ]),
    );
    assert.deepEqual(view.rows.map((r) => r.id), ['rc-a', 'rc-b']);
    assert.equal(view.summary, '2 instances, 2,400 connections, 80 rooms');
    const [a, b] = view.rows;
    assert.equal(b.self, true);
    assert.equal(b.uptime, '1h 2m');
    assert.equal(b.cpu, '12.3 %');
    assert.equal(b.memory, '50 MiB');
    assert.equal(b.broker, 'reachable, probe 0s ago, lag 0.01 s');
    assert.equal(b.tone, 'ok');
    assert.equal(b.drainable, true);
    assert.equal(a.tone, 'warn');
    assert.equal(a.drainable, false, 'a draining instance cannot be drained again');
    assert.equal(a.cpu, '–');
    assert.equal(a.memory, '–');
    assert.equal(a.broker, 'unreachable');
    assert.equal(a.brokerTone, 'bad');
    assert.equal(view.brokerLine, 'redis broker reachable');
  });

  it('says 1 instance in the singular', () => {
    assert.equal(lib.cluster.clusterView(snapshot([instance('x')])).summary, '1 instance, 1,200 connections, 40 rooms');
  });
});

describe('audit', () => {
  const entry = {
    id: 7,
    created_at: '2026-12-02T05:32:56.022Z',
    actor: 'ana',
    actor_kind: 'user',
    entity: 'issue',
    entity_id: 3,
    action: 'update',
    changes: { title: { before: 'a', after: 'b' }, assignee: { before: null, after: 'ana' }, status: { before: 'open', after: null } },
    request_id: 'r',
    project_id: 42,
  };

  it('diffs before and after by field', () => {
    assert.deepEqual(lib.audit.diffRows(entry.changes), [
      { field: 'assignee', before: null, after: 'ana', kind: 'added' },
      { field: 'status', before: 'open', after: null, kind: 'removed' },
      { field: 'title', before: 'a', after: 'b', kind: 'changed' },
    ]);
    assert.deepEqual(lib.audit.diffRows(null), []);
  });

  it('builds the query of a filter and matches live entries against it', () => {
    const filter = { ...lib.audit.EMPTY_FILTER, actor: ' ana ', project_id: '42', from: '2026-12-02T05:00', to: '2026-12-02T06:00:30' };
    assert.equal(lib.audit.filterQuery(filter).toString(), 'actor=ana&project_id=42&from=2026-12-02T05%3A00%3A00Z&to=2026-12-02T06%3A00%3A30Z');
    assert.equal(lib.audit.matches(entry, filter), true);
    assert.equal(lib.audit.matches(entry, { ...filter, action: 'create' }), false);
    assert.equal(lib.audit.matches(entry, { ...filter, to: '2026-12-02T05:32' }), false);
    assert.equal(lib.audit.matches({ ...entry, project_id: null }, filter), false);
    assert.equal(lib.audit.matches(entry, lib.audit.EMPTY_FILTER), true);
  });

  it('keeps entries in id order without duplicates', () => {
    const list = [{ ...entry, id: 1 }, { ...entry, id: 5 }];
    assert.deepEqual(lib.audit.insertEntry(list, { ...entry, id: 3 }).map((e) => e.id), [1, 3, 5]);
    assert.equal(lib.audit.insertEntry(list, { ...entry, id: 5 }), list);
  });
});

describe('shortcuts', () => {
  it('turns keys and two-key sequences into commands', () => {
    const m = new lib.shortcuts.KeyMachine();
    assert.equal(m.feed('?', 0), 'help');
    assert.equal(m.feed('g', 0), null);
    assert.equal(m.feed('a', 100), 'audit');
    assert.equal(m.feed('g', 200), null);
    assert.equal(m.feed('c', 5000), null, 'too late for the second key');
    assert.equal(m.feed('g', 6000), null);
    assert.equal(m.feed('x', 6100), null);
    assert.equal(m.feed('j', 6200), 'next');
    assert.equal(m.feed('g', 7000), null);
    assert.equal(m.feed('i', 7100), 'issues');
    assert.equal(m.feed('Escape', 8000), 'close');
  });

  it('lists every command once', () => {
    const commands = lib.shortcuts.SHORTCUTS.map((s) => s.command);
    assert.equal(new Set(commands).size, commands.length);
    assert.equal(lib.shortcuts.keyLabel('Escape'), 'Esc');
  });
});

describe('theme', () => {
  it('cycles system, light, dark and resolves the system choice', () => {
    assert.equal(lib.theme.nextChoice('system'), 'light');
    assert.equal(lib.theme.nextChoice('light'), 'dark');
    assert.equal(lib.theme.nextChoice('dark'), 'system');
    assert.equal(lib.theme.resolve('system', true), 'dark');
    assert.equal(lib.theme.resolve('system', false), 'light');
    assert.equal(lib.theme.resolve('light', true), 'light');
  });

  it('formats sizes and durations', () => {
    assert.equal(lib.format.formatBytes(512), '512 B');
    assert.equal(lib.format.formatBytes(1536), '1.5 KiB');
    assert.equal(lib.format.formatDuration(90061), '1d 1h');
    assert.equal(lib.format.formatDuration(59), '59s');
    assert.equal(lib.format.formatValue(null), '∅');
    assert.equal(lib.format.formatValue({ a: 1 }), '{"a":1}');
  });
});
