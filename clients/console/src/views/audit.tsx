// The audit log viewer: search, pages, each entry's before/after diff, CSV and JSON
// export of the current filter, and new entries live from the `audit` room.
import { useEffect, useRef, useState } from 'preact/hooks';
import { call, describe, download } from '../lib/api';
import {
  ACTIONS,
  type AuditEntry,
  type AuditFilter,
  EMPTY_FILTER,
  ENTITIES,
  diffRows,
  filterQuery,
  insertEntry,
  matches,
} from '../lib/audit';
import { formatTime, formatValue } from '../lib/format';
import { liveClient } from '../lib/live';
import { Report, Select } from './ui';

const PAGE = 50;

interface Page {
  items: AuditEntry[];
  next_cursor: string | null;
}

export function AuditView() {
  const [draft, setDraft] = useState<AuditFilter>(EMPTY_FILTER);
  const [filter, setFilter] = useState<AuditFilter>(EMPTY_FILTER);
  const [cursors, setCursors] = useState<string[]>(['']);
  const [page, setPage] = useState<Page | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [expanded, setExpanded] = useState<Set<number>>(new Set());
  const [fresh, setFresh] = useState<Set<number>>(new Set());
  const [unseen, setUnseen] = useState(0);
  const [announce, setAnnounce] = useState('');
  const [live, setLive] = useState<'connecting' | 'live' | 'off'>('connecting');
  const state = useRef({ filter, page });
  state.current = { filter, page };

  const cursor = cursors[cursors.length - 1] ?? '';

  useEffect(() => {
    let stale = false;
    const query = filterQuery(filter);
    query.set('limit', String(PAGE));
    if (cursor) query.set('cursor', cursor);
    setError(null);
    call<Page>('/audit?' + query.toString())
      .then(({ data }) => {
        if (!stale) setPage(data);
      })
      .catch((err) => {
        if (!stale) setError(describe(err));
      });
    return () => {
      stale = true;
    };
  }, [filter, cursor]);

  useEffect(() => {
    const sub = liveClient().subscribe<AuditEntry>('audit', {
      onSubscribed: () => setLive('live'),
      onError: () => setLive('off'),
      onMessage: (message) => {
        const entry = message.data;
        const { filter: current, page: shown } = state.current;
        if (!matches(entry, current)) return;
        if (shown && shown.next_cursor === null) {
          setPage({ ...shown, items: insertEntry(shown.items, entry) });
          setFresh((old) => new Set(old).add(entry.id));
          setAnnounce(`New audit entry ${entry.id}: ${entry.actor} ${entry.action} ${entry.entity} ${entry.entity_id}`);
        } else {
          setUnseen((n) => n + 1);
        }
      },
    });
    return () => {
      void sub.unsubscribe().catch(() => {});
    };
  }, []);

  const search = (event: Event) => {
    event.preventDefault();
    setUnseen(0);
    setFresh(new Set());
    setCursors(['']);
    setFilter({ ...draft });
  };
  const reset = () => {
    setDraft(EMPTY_FILTER);
    setFilter(EMPTY_FILTER);
    setCursors(['']);
    setUnseen(0);
  };
  const toggle = (id: number) => {
    const next = new Set(expanded);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setExpanded(next);
  };
  const exportAs = (format: 'csv' | 'json') => {
    const query = filterQuery(filter);
    query.set('format', format);
    download('/audit/export?' + query.toString(), `audit.${format}`).catch((err) => setError(describe(err)));
  };
  const field = (key: keyof AuditFilter) => ({
    value: draft[key],
    onInput: (e: Event) => setDraft({ ...draft, [key]: (e.currentTarget as HTMLInputElement).value }),
  });

  return (
    <section aria-labelledby="audit-title">
      <div class="view-head">
        <h2 id="audit-title">Audit log</h2>
        <span class={`pill ${live === 'live' ? 'ok' : live === 'off' ? 'bad' : 'warn'}`}>
          {live === 'live' ? 'Live' : live === 'off' ? 'Live updates refused' : 'Connecting…'}
        </span>
      </div>
      <form class="filters" onSubmit={search} aria-label="Audit filters">
        <label>
          Actor
          <input name="actor" type="search" data-search autocomplete="off" placeholder="e.g. ana" {...field('actor')} />
        </label>
        <Select label="Entity" name="entity" any options={ENTITIES} value={draft.entity} onChange={(v) => setDraft({ ...draft, entity: v })} />
        <label>
          Entity id
          <input name="entity_id" inputMode="numeric" pattern="[0-9]*" size={6} {...field('entity_id')} />
        </label>
        <Select label="Action" name="action" any options={ACTIONS} value={draft.action} onChange={(v) => setDraft({ ...draft, action: v })} />
        <label>
          Project
          <input name="project_id" inputMode="numeric" pattern="[0-9]*" size={6} {...field('project_id')} />
        </label>
        <label>
          From (UTC)
          <input name="from" type="datetime-local" step={1} {...field('from')} />
        </label>
        <label>
          To (UTC)
          <input name="to" type="datetime-local" step={1} {...field('to')} />
        </label>
        <div class="actions">
          <button type="submit" class="primary">
            Search
          </button>
          <button type="button" onClick={reset}>
            Clear
          </button>
          <button type="button" onClick={() => exportAs('csv')}>
            Export CSV
          </button>
          <button type="button" onClick={() => exportAs('json')}>
            Export JSON
          </button>
        </div>
      </form>
      <Report error={error} announce={announce} />
      {unseen > 0 && (
        <p class="notice" role="status">
          {unseen} new {unseen === 1 ? 'entry matches' : 'entries match'} this filter on a later page.
        </p>
      )}
      {page && page.items.length === 0 && <p class="empty">No audit entries match this filter.</p>}
      {page && page.items.length > 0 && (
        <ol class="entries" aria-label="Audit entries">
          {page.items.map((entry) => {
            const open = expanded.has(entry.id);
            const rows = diffRows(entry.changes);
            return (
              <li key={entry.id} class={fresh.has(entry.id) ? 'fresh' : ''}>
                <button
                  type="button"
                  class="entry"
                  data-item
                  aria-expanded={open}
                  aria-controls={`diff-${entry.id}`}
                  onClick={() => toggle(entry.id)}
                >
                  <span class="entry-id">#{entry.id}</span>
                  <time dateTime={entry.created_at}>{formatTime(entry.created_at)}</time>
                  <span class={`badge action-${entry.action}`}>{entry.action}</span>
                  <span class="entry-what">
                    {entry.entity} {entry.entity_id}
                    {entry.project_id !== null ? ` · project ${entry.project_id}` : ''}
                  </span>
                  <span class="entry-actor">
                    {entry.actor} <small>({entry.actor_kind})</small>
                  </span>
                </button>
                {open && (
                  <div id={`diff-${entry.id}`} class="diff">
                    <table>
                      <caption>
                        Changes of entry {entry.id} · request <code>{entry.request_id}</code>
                      </caption>
                      <thead>
                        <tr>
                          <th scope="col">Field</th>
                          <th scope="col">Before</th>
                          <th scope="col">After</th>
                        </tr>
                      </thead>
                      <tbody>
                        {rows.map((row) => (
                          <tr class={row.kind}>
                            <th scope="row">{row.field}</th>
                            <td>
                              <del>{formatValue(row.before)}</del>
                            </td>
                            <td>
                              <ins>{formatValue(row.after)}</ins>
                            </td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  </div>
                )}
              </li>
            );
          })}
        </ol>
      )}
      <nav class="pager" aria-label="Audit pages">
        <button type="button" disabled={cursors.length <= 1} onClick={() => setCursors(cursors.slice(0, -1))}>
          ← Previous page
        </button>
        <span>Page {cursors.length}</span>
        <button
          type="button"
          disabled={!page?.next_cursor}
          onClick={() => page?.next_cursor && setCursors([...cursors, page.next_cursor])}
        >
          Next page →
        </button>
      </nav>
    </section>
  );
}
