// The audit log viewer's model: filters as query strings, the before/after diff of an
// entry, and whether a live entry belongs to the current filter.

export interface Change {
  before: unknown;
  after: unknown;
}

export interface AuditEntry {
  id: number;
  created_at: string;
  actor: string;
  actor_kind: string;
  entity: string;
  entity_id: number;
  action: string;
  changes: Record<string, Change>;
  request_id: string;
  project_id: number | null;
}

export interface AuditFilter {
  entity: string;
  entity_id: string;
  actor: string;
  action: string;
  project_id: string;
  /** `datetime-local` values, read as UTC. */
  from: string;
  to: string;
}

export const EMPTY_FILTER: AuditFilter = { entity: '', entity_id: '', actor: '', action: '', project_id: '', from: '', to: '' };

export const ENTITIES = ['issue', 'comment', 'membership', 'user'];
export const ACTIONS = ['create', 'update', 'delete', 'erase'];

/** A `datetime-local` value (`2026-12-01T10:30` or with seconds) as the API's UTC time. */
export function toApiTime(local: string): string {
  const value = local.trim();
  if (!value) return '';
  return (value.length === 16 ? value + ':00' : value) + 'Z';
}

/** The API's query parameters of a filter (empty fields left out). */
export function filterQuery(filter: AuditFilter): URLSearchParams {
  const query = new URLSearchParams();
  for (const key of ['entity', 'entity_id', 'actor', 'action', 'project_id'] as const) {
    const value = filter[key].trim();
    if (value) query.set(key, value);
  }
  const from = toApiTime(filter.from);
  const to = toApiTime(filter.to);
  if (from) query.set('from', from);
  if (to) query.set('to', to);
  return query;
}

/** Whether a live entry is one the current filter would have found. */
export function matches(entry: AuditEntry, filter: AuditFilter): boolean {
  const eq = (wanted: string, actual: string | number | null) => !wanted.trim() || String(actual) === wanted.trim();
  if (!eq(filter.entity, entry.entity) || !eq(filter.entity_id, entry.entity_id)) return false;
  if (!eq(filter.actor, entry.actor) || !eq(filter.action, entry.action)) return false;
  if (!eq(filter.project_id, entry.project_id)) return false;
  const at = Date.parse(entry.created_at);
  const from = toApiTime(filter.from);
  const to = toApiTime(filter.to);
  if (from && at < Date.parse(from)) return false;
  if (to && at >= Date.parse(to)) return false;
  return true;
}

export type DiffKind = 'added' | 'removed' | 'changed';

export interface DiffRow {
  field: string;
  before: unknown;
  after: unknown;
  kind: DiffKind;
}

/** The rows of an entry's before/after diff, by field name. */
export function diffRows(changes: Record<string, Change> | null | undefined): DiffRow[] {
  if (!changes || typeof changes !== 'object') return [];
  return Object.entries(changes)
    .map(([field, change]) => {
      const before = change?.before ?? null;
      const after = change?.after ?? null;
      const kind: DiffKind = before === null ? 'added' : after === null ? 'removed' : 'changed';
      return { field, before, after, kind };
    })
    .sort((a, b) => a.field.localeCompare(b.field));
}

/** Adds `entry` to `entries` (kept in id order, without duplicates). */
export function insertEntry(entries: AuditEntry[], entry: AuditEntry): AuditEntry[] {
  if (entries.some((e) => e.id === entry.id)) return entries;
  return [...entries, entry].sort((a, b) => a.id - b.id);
}
