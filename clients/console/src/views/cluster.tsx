// The cluster view: every instance, the broker, the busiest rooms and recent slow
// consumers and recoveries, refreshed every few seconds from the admin API (which any
// instance answers for the whole cluster); drain an instance and disconnect a user,
// each after a confirmation.
import { useEffect, useState } from 'preact/hooks';
import { call, describe } from '../lib/api';
import { type ClusterSnapshot, clusterView } from '../lib/cluster';
import { formatNumber, formatTime } from '../lib/format';
import { Confirm, Report } from './ui';

const REFRESH_MS = 2000;

type Pending = { kind: 'drain'; instance: string } | { kind: 'disconnect'; user: string; reconnect: boolean };

export function ClusterView() {
  const [snapshot, setSnapshot] = useState<ClusterSnapshot | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [pending, setPending] = useState<Pending | null>(null);
  const [result, setResult] = useState('');
  const [user, setUser] = useState('');
  const [reconnect, setReconnect] = useState(false);
  const [tick, setTick] = useState(0);

  useEffect(() => {
    let stale = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const refresh = () => {
      call<ClusterSnapshot>('/admin/cluster')
        .then(({ data }) => {
          if (stale) return;
          setSnapshot(data);
          setError(null);
        })
        .catch((err) => !stale && setError(describe(err)))
        .finally(() => {
          if (!stale) timer = setTimeout(refresh, REFRESH_MS);
        });
    };
    refresh();
    return () => {
      stale = true;
      clearTimeout(timer);
    };
  }, [tick]);

  const confirm = () => {
    const action = pending;
    setPending(null);
    if (!action) return;
    const request =
      action.kind === 'drain'
        ? call('/admin/drain', { method: 'POST', body: { instance: action.instance } }).then(
            () => `Instance ${action.instance} is draining.`,
          )
        : call('/admin/disconnect', { method: 'POST', body: { user: action.user, reconnect: action.reconnect } }).then(
            () => `User ${action.user} was disconnected everywhere.`,
          );
    request
      .then((message) => {
        setResult(message);
        setTick((n) => n + 1);
      })
      .catch((err) => setResult(`Failed: ${describe(err)}`));
  };

  const view = snapshot ? clusterView(snapshot) : null;
  return (
    <section aria-labelledby="cluster-title">
      <div class="view-head">
        <h2 id="cluster-title">Cluster</h2>
        {view && <span class="summary" data-testid="cluster-summary">{view.summary}</span>}
        {view && <span class={`pill ${view.brokerTone}`}>{view.brokerLine}</span>}
      </div>
      <Report error={error} announce={result} />
      {result && <p class="notice">{result}</p>}
      {snapshot && view && (
        <>
          <div class="table-wrap">
            <table class="instances">
              <caption>Instances (an instance not heard from within {formatNumber(snapshot.ttl_ms / 1000, 1)} s is dropped)</caption>
              <thead>
                <tr>
                  <th scope="col">Instance</th>
                  <th scope="col">Address</th>
                  <th scope="col">Version</th>
                  <th scope="col">Uptime</th>
                  <th scope="col">State</th>
                  <th scope="col">Connections</th>
                  <th scope="col">Rooms</th>
                  <th scope="col">CPU</th>
                  <th scope="col">Memory</th>
                  <th scope="col">Broker</th>
                  <th scope="col">
                    <span class="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {view.rows.map((row) => (
                  <tr key={row.id} data-instance={row.id}>
                    <th scope="row">
                      {row.id}
                      {row.self && <small> (answering)</small>}
                    </th>
                    <td class="mono">{row.address}</td>
                    <td>{row.version}</td>
                    <td>{row.uptime}</td>
                    <td>
                      <span class={`pill ${row.tone}`}>{row.state}</span>
                    </td>
                    <td class="num">{row.connections}</td>
                    <td class="num">{row.rooms}</td>
                    <td class="num">{row.cpu}</td>
                    <td class="num">{row.memory}</td>
                    <td>
                      <span class={`pill ${row.brokerTone}`}>{row.broker}</span>
                    </td>
                    <td>
                      <button
                        type="button"
                        data-item
                        disabled={!row.drainable}
                        onClick={() => setPending({ kind: 'drain', instance: row.id })}
                      >
                        Drain<span class="sr-only"> {row.id}</span>
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <div class="grid">
            <RoomTable title="Top rooms by subscribers" rooms={snapshot.top_rooms.by_subscribers} />
            <RoomTable title="Top rooms by message rate" rooms={snapshot.top_rooms.by_message_rate} />
            <section class="panel" aria-labelledby="slow-title">
              <h3 id="slow-title">Recent slow-consumer disconnects</h3>
              {snapshot.recent.slow_consumer_disconnects.length === 0 ? (
                <p class="empty">None recently.</p>
              ) : (
                <ul class="events">
                  {snapshot.recent.slow_consumer_disconnects.map((d) => (
                    <li>
                      <time dateTime={d.at}>{formatTime(d.at)}</time> {d.user} on {d.instance}
                    </li>
                  ))}
                </ul>
              )}
            </section>
            <section class="panel" aria-labelledby="recovery-title">
              <h3 id="recovery-title">Recent recoveries</h3>
              {snapshot.recent.recoveries.length === 0 ? (
                <p class="empty">None recently.</p>
              ) : (
                <ul class="events">
                  {snapshot.recent.recoveries.map((r) => (
                    <li>
                      <time dateTime={r.at}>{formatTime(r.at)}</time> {r.room} on {r.instance}:{' '}
                      <span class={`pill ${r.recovered ? 'ok' : 'bad'}`}>
                        {r.recovered ? `recovered, ${r.replayed} replayed` : 'not recovered'}
                      </span>
                    </li>
                  ))}
                </ul>
              )}
            </section>
          </div>
        </>
      )}
      <form
        class="filters"
        aria-label="Disconnect a user"
        onSubmit={(e) => {
          e.preventDefault();
          if (user.trim()) setPending({ kind: 'disconnect', user: user.trim(), reconnect });
        }}
      >
        <label>
          Disconnect user
          <input type="search" data-search value={user} onInput={(e) => setUser(e.currentTarget.value)} placeholder="user id (token sub)" />
        </label>
        <label class="check">
          <input type="checkbox" checked={reconnect} onChange={(e) => setReconnect(e.currentTarget.checked)} /> let them reconnect
        </label>
        <div class="actions">
          <button type="submit" class="danger" disabled={!user.trim()}>
            Disconnect…
          </button>
        </div>
      </form>
      <Confirm
        open={pending !== null}
        title={pending?.kind === 'drain' ? 'Drain this instance?' : 'Disconnect this user?'}
        message={
          pending?.kind === 'drain'
            ? `Instance ${pending.instance} stops taking connections, moves its clients to other instances and exits.`
            : pending
              ? `Every connection of ${pending.user} on every instance is closed${pending.reconnect ? '; their clients may reconnect' : ''}.`
              : ''
        }
        action={pending?.kind === 'drain' ? 'Drain' : 'Disconnect'}
        onConfirm={confirm}
        onClose={() => setPending(null)}
      />
    </section>
  );
}

function RoomTable(props: { title: string; rooms: { room: string; subscribers: number; messages_per_sec: number }[] }) {
  return (
    <section class="panel">
      <table>
        <caption>{props.title}</caption>
        <thead>
          <tr>
            <th scope="col">Room</th>
            <th scope="col">Subscribers</th>
            <th scope="col">Messages/s</th>
          </tr>
        </thead>
        <tbody>
          {props.rooms.length === 0 && (
            <tr>
              <td colSpan={3} class="empty">
                No rooms.
              </td>
            </tr>
          )}
          {props.rooms.map((r) => (
            <tr>
              <th scope="row" class="mono">
                {r.room}
              </th>
              <td class="num">{formatNumber(r.subscribers)}</td>
              <td class="num">{formatNumber(r.messages_per_sec, 1)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
