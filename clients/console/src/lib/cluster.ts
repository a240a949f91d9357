// The cluster view's model: `GET /api/v1/admin/cluster` (answered by any instance for
// the whole cluster) turned into what the view shows.
import { formatBytes, formatDuration, formatNumber } from './format';

export interface InstanceBroker {
  reachable: boolean;
  pubsub_probe_age_ms: number | null;
  pubsub_lag_seconds: number | null;
}

export interface Instance {
  id: string;
  advertise_url: string | null;
  version: string;
  started_at: string;
  uptime_secs: number;
  state: 'starting' | 'ready' | 'draining' | string;
  connections: number;
  rooms: number;
  subscriptions: number;
  cpu_percent: number | null;
  memory_bytes: number | null;
  last_seen_ms: number;
  broker: InstanceBroker;
}

export interface RoomRate {
  room: string;
  subscribers: number;
  messages_per_sec: number;
}

export interface ClusterSnapshot {
  generated_at: string;
  self_id: string;
  ttl_ms: number;
  instances: Instance[];
  broker: { kind: string; reachable: boolean };
  top_rooms: { by_subscribers: RoomRate[]; by_message_rate: RoomRate[] };
  recent: {
    slow_consumer_disconnects: { at: string; instance: string; user: string }[];
    recoveries: { at: string; instance: string; room: string; recovered: boolean; replayed: number }[];
  };
}

export interface InstanceRow {
  id: string;
  self: boolean;
  address: string;
  version: string;
  uptime: string;
  state: string;
  tone: 'ok' | 'warn' | 'bad';
  connections: string;
  rooms: string;
  cpu: string;
  memory: string;
  broker: string;
  brokerTone: 'ok' | 'warn' | 'bad';
  drainable: boolean;
}

export interface ClusterView {
  summary: string;
  brokerLine: string;
  brokerTone: 'ok' | 'bad';
  rows: InstanceRow[];
  totals: { instances: number; connections: number; rooms: number };
}

/** What the view shows of a snapshot. */
export function clusterView(snapshot: ClusterSnapshot): ClusterView {
  const instances = [...snapshot.instances].sort((a, b) => a.id.localeCompare(b.id));
  const rows = instances.map((i): InstanceRow => {
    const tone = i.state === 'ready' ? 'ok' : i.state === 'draining' ? 'warn' : 'warn';
    const lag = i.broker.pubsub_lag_seconds;
    const probe = i.broker.pubsub_probe_age_ms;
    const brokerTone = !i.broker.reachable ? 'bad' : (lag ?? 0) > 1 ? 'warn' : 'ok';
    const parts = [i.broker.reachable ? 'reachable' : 'unreachable'];
    if (probe !== null && probe !== undefined) parts.push(`probe ${formatDuration(probe / 1000)} ago`);
    if (lag !== null && lag !== undefined) parts.push(`lag ${formatNumber(lag, 2)} s`);
    return {
      id: i.id,
      self: i.id === snapshot.self_id,
      address: i.advertise_url ?? '–',
      version: i.version,
      uptime: formatDuration(i.uptime_secs),
      state: i.state,
      tone,
      connections: formatNumber(i.connections),
      rooms: formatNumber(i.rooms),
      cpu: i.cpu_percent === null || i.cpu_percent === undefined ? '–' : `${formatNumber(i.cpu_percent, 1)} %`,
      memory: formatBytes(i.memory_bytes),
      broker: parts.join(', '),
      brokerTone,
      drainable: i.state !== 'draining',
    };
  });
  const connections = instances.reduce((sum, i) => sum + i.connections, 0);
  const rooms = instances.reduce((sum, i) => sum + i.rooms, 0);
  const n = instances.length;
  return {
    summary: `${n} ${n === 1 ? 'instance' : 'instances'}, ${formatNumber(connections)} connections, ${formatNumber(rooms)} rooms`,
    brokerLine: `${snapshot.broker.kind} broker ${snapshot.broker.reachable ? 'reachable' : 'unreachable'}`,
    brokerTone: snapshot.broker.reachable ? 'ok' : 'bad',
    rows,
    totals: { instances: n, connections, rooms },
  };
}
