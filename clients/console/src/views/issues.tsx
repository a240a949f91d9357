// The issue board of one project: issues by status, updated live from the project's
// room; create, edit and close through the API, with If-Match so that a change made
// meanwhile by someone else is shown instead of overwritten.
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, call, describe } from '../lib/api';
import { formatTime } from '../lib/format';
import { liveClient } from '../lib/live';
import { Dialog, Report, Select } from './ui';

export interface Issue {
  id: number;
  project_id: number;
  title: string;
  description: string;
  status: string;
  priority: string;
  type: string;
  assignee: string | null;
  reporter: string;
  version: number;
  created_at: string;
  updated_at: string;
}

interface Comment {
  id: number;
  issue_id: number;
  author: string;
  body: string;
  version: number;
  created_at: string;
}

interface TrackerEvent {
  entity: string;
  action: string;
  id: number;
  issue_id: number;
  version: number;
  actor: string;
}

const STATUSES = [
  ['open', 'Open'],
  ['in_progress', 'In progress'],
  ['resolved', 'Resolved'],
  ['closed', 'Closed'],
] as const;
const PRIORITIES = ['low', 'medium', 'high', 'urgent'];
const TYPES = ['bug', 'feature', 'task'];
const PROJECT_KEY = 'roomcast.console.project';

async function loadIssues(project: number): Promise<Issue[]> {
  const all: Issue[] = [];
  let cursor = '';
  for (let round = 0; round < 20; round++) {
    const query = new URLSearchParams({ project_id: String(project), limit: '200' });
    if (cursor) query.set('cursor', cursor);
    const { data } = await call<{ items: Issue[]; next_cursor: string | null }>('/issues?' + query.toString());
    all.push(...data.items);
    if (!data.next_cursor) break;
    cursor = data.next_cursor;
  }
  return all;
}

export function IssuesView() {
  const [projectInput, setProjectInput] = useState(localStorage.getItem(PROJECT_KEY) ?? '1');
  const [project, setProject] = useState(Number(projectInput) || 1);
  const [issues, setIssues] = useState<Map<number, Issue>>(new Map());
  const [error, setError] = useState<string | null>(null);
  const [loaded, setLoaded] = useState(false);
  const [openId, setOpenId] = useState<number | null>(null);
  const [creating, setCreating] = useState(false);
  const [touched, setTouched] = useState<Set<number>>(new Set());
  const [announce, setAnnounce] = useState('');
  const [commentsTick, setCommentsTick] = useState(0);
  const openRef = useRef(openId);
  openRef.current = openId;

  const upsert = (issue: Issue) =>
    setIssues((old) => {
      const current = old.get(issue.id);
      if (current && current.version > issue.version) return old;
      return new Map(old).set(issue.id, issue);
    });

  useEffect(() => {
    let stale = false;
    setLoaded(false);
    setError(null);
    const reload = () =>
      loadIssues(project)
        .then((list) => {
          if (stale) return;
          setIssues(new Map(list.map((i) => [i.id, i])));
          setLoaded(true);
        })
        .catch((err) => !stale && setError(describe(err)));
    void reload();
    const sub = liveClient().subscribe<TrackerEvent>(`project:${project}`, {
      onReset: () => void reload(),
      onError: (err) => !stale && setError(`Live updates of project ${project} refused: ${err.message}`),
      onMessage: (message) => {
        const event = message.data;
        if (event.entity === 'comment') {
          if (openRef.current === event.issue_id) setCommentsTick((n) => n + 1);
          return;
        }
        if (event.entity !== 'issue') return;
        if (event.action === 'delete') {
          setIssues((old) => {
            const next = new Map(old);
            next.delete(event.id);
            return next;
          });
          setAnnounce(`Issue ${event.id} was deleted by ${event.actor}`);
          return;
        }
        call<Issue>(`/issues/${event.id}`)
          .then(({ data }) => {
            if (stale) return;
            upsert(data);
            setTouched((old) => new Set(old).add(data.id));
            setAnnounce(`Issue ${data.id} ${event.action === 'create' ? 'created' : 'updated'} by ${event.actor}: ${data.title}`);
          })
          .catch(() => {});
      },
    });
    return () => {
      stale = true;
      void sub.unsubscribe().catch(() => {});
    };
  }, [project]);

  const choose = (event: Event) => {
    event.preventDefault();
    const id = Number(projectInput);
    if (!Number.isInteger(id) || id <= 0) {
      setError('A project id is a positive whole number.');
      return;
    }
    localStorage.setItem(PROJECT_KEY, String(id));
    setProject(id);
  };

  const list = [...issues.values()].sort((a, b) => a.id - b.id);
  const open = openId === null ? undefined : issues.get(openId);

  return (
    <section aria-labelledby="issues-title">
      <div class="view-head">
        <h2 id="issues-title">Issues of project {project}</h2>
        <button type="button" class="primary" onClick={() => setCreating(true)}>
          New issue
        </button>
      </div>
      <form class="filters" onSubmit={choose} aria-label="Project">
        <label>
          Project id
          <input
            type="search"
            inputMode="numeric"
            data-search
            value={projectInput}
            onInput={(e) => setProjectInput(e.currentTarget.value)}
          />
        </label>
        <div class="actions">
          <button type="submit">Show board</button>
        </div>
      </form>
      <Report error={error} announce={announce} />
      {loaded && list.length === 0 && <p class="empty">Project {project} has no issues yet.</p>}
      <div class="board">
        {STATUSES.map(([status, label]) => {
          const column = list.filter((i) => i.status === status);
          return (
            <section class="column" aria-labelledby={`col-${status}`}>
              <h3 id={`col-${status}`}>
                {label} <span class="count">{column.length}</span>
              </h3>
              {column.length === 0 && <p class="empty">No {label.toLowerCase()} issues.</p>}
              <ul>
                {column.map((issue) => (
                  <li key={issue.id}>
                    <button
                      type="button"
                      class={`card${touched.has(issue.id) ? ' fresh' : ''}`}
                      data-item
                      data-issue={issue.id}
                      onClick={() => setOpenId(issue.id)}
                    >
                      <span class="card-title">
                        #{issue.id} {issue.title}
                      </span>
                      <span class="card-meta">
                        <span class={`badge prio-${issue.priority}`}>{issue.priority}</span>
                        <span class="badge">{issue.type}</span>
                        <span>{issue.assignee ?? 'unassigned'}</span>
                      </span>
                    </button>
                  </li>
                ))}
              </ul>
            </section>
          );
        })}
      </div>
      <Dialog open={creating} title={`New issue in project ${project}`} onClose={() => setCreating(false)}>
        <NewIssue
          project={project}
          onCreated={(issue) => {
            upsert(issue);
            setCreating(false);
          }}
        />
      </Dialog>
      <Dialog open={open !== undefined} title={open ? `Issue #${open.id}` : ''} onClose={() => setOpenId(null)} wide>
        {open && <IssueDetail key={open.id} issue={open} commentsTick={commentsTick} onSaved={upsert} />}
      </Dialog>
    </section>
  );
}

function NewIssue(props: { project: number; onCreated: (issue: Issue) => void }) {
  const [error, setError] = useState<string | null>(null);
  const submit = (event: Event) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    const assignee = String(form.get('assignee') ?? '').trim();
    call<Issue>('/issues', {
      method: 'POST',
      body: {
        project_id: props.project,
        title: String(form.get('title') ?? ''),
        description: String(form.get('description') ?? ''),
        priority: String(form.get('priority')),
        type: String(form.get('type')),
        assignee: assignee || null,
      },
    })
      .then(({ data }) => props.onCreated(data))
      .catch((err) => setError(describe(err)));
  };
  return (
    <form class="stack" onSubmit={submit}>
      <label>
        Title
        <input name="title" required maxLength={200} autofocus />
      </label>
      <div class="row">
        <Select label="Type" name="type" options={TYPES} defaultValue="task" />
        <Select label="Priority" name="priority" options={PRIORITIES} defaultValue="medium" />
        <label>
          Assignee
          <input name="assignee" maxLength={100} />
        </label>
      </div>
      <label>
        Description
        <textarea name="description" rows={4} maxLength={10000} />
      </label>
      <Report error={error} />
      <div class="actions">
        <button type="submit" class="primary">
          Create issue
        </button>
      </div>
    </form>
  );
}

function IssueDetail(props: { issue: Issue; commentsTick: number; onSaved: (issue: Issue) => void }) {
  // The version the form was filled from: a save says "If-Match" it.
  const [base, setBase] = useState(props.issue);
  const [draft, setDraft] = useState(props.issue);
  const [error, setError] = useState<string | null>(null);
  const [conflict, setConflict] = useState<string | null>(null);
  const [saved, setSaved] = useState('');
  const [comments, setComments] = useState<Comment[]>([]);
  const [comment, setComment] = useState('');
  const changedMeanwhile = props.issue.version > base.version;

  useEffect(() => {
    call<{ items: Comment[] }>(`/issues/${props.issue.id}/comments?limit=200`)
      .then(({ data }) => setComments(data.items))
      .catch((err) => setError(describe(err)));
  }, [props.issue.id, props.commentsTick]);

  const patch = (changes: Partial<Issue>) => {
    setError(null);
    setConflict(null);
    setSaved('');
    call<Issue>(`/issues/${base.id}`, { method: 'PATCH', body: changes, ifMatch: `"${base.version}"` })
      .then(({ data }) => {
        props.onSaved(data);
        setBase(data);
        setDraft(data);
        setSaved(`Saved as version ${data.version}.`);
      })
      .catch((err) => {
        if (err instanceof ApiError && err.status === 412) {
          setConflict(
            `Someone else changed this issue since you opened it (now version ${err.etag?.replace(/"/g, '') ?? '?'}); your change was not saved.`,
          );
        } else setError(describe(err));
      });
  };
  const save = (event: Event) => {
    event.preventDefault();
    const changes: Partial<Issue> = {};
    for (const key of ['title', 'description', 'status', 'priority', 'type'] as const) {
      if (draft[key] !== base[key]) changes[key] = draft[key];
    }
    const assignee = draft.assignee?.trim() || null;
    if (assignee !== base.assignee) changes.assignee = assignee;
    patch(changes);
  };
  const reload = () => {
    setBase(props.issue);
    setDraft(props.issue);
    setConflict(null);
  };
  const addComment = (event: Event) => {
    event.preventDefault();
    call<Comment>(`/issues/${props.issue.id}/comments`, { method: 'POST', body: { body: comment } })
      .then(({ data }) => {
        setComments((old) => (old.some((c) => c.id === data.id) ? old : [...old, data]));
        setComment('');
      })
      .catch((err) => setError(describe(err)));
  };
  const set = (key: keyof Issue) => (e: Event) =>
    setDraft({ ...draft, [key]: (e.currentTarget as HTMLInputElement).value });

  return (
    <div class="detail">
      <p class="meta">
        Reported by {base.reporter} · version {base.version} · updated {formatTime(base.updated_at)}
      </p>
      {changedMeanwhile && !conflict && (
        <p class="notice" role="status">
          {`This issue changed since you opened it (version ${props.issue.version}). `}
          <button type="button" class="link" onClick={reload}>
            Show the latest version
          </button>
        </p>
      )}
      {conflict && (
        <div class="conflict" role="alert">
          <p>{conflict}</p>
          <button type="button" onClick={reload}>
            Load the latest version
          </button>
        </div>
      )}
      <form class="stack" onSubmit={save} aria-label="Edit issue">
        <label>
          Title
          <input value={draft.title} onInput={set('title')} required maxLength={200} />
        </label>
        <div class="row">
          <Select label="Status" options={STATUSES} value={draft.status} onChange={(v) => setDraft({ ...draft, status: v })} />
          <Select label="Priority" options={PRIORITIES} value={draft.priority} onChange={(v) => setDraft({ ...draft, priority: v })} />
          <Select label="Type" options={TYPES} value={draft.type} onChange={(v) => setDraft({ ...draft, type: v })} />
          <label>
            Assignee
            <input value={draft.assignee ?? ''} onInput={set('assignee')} maxLength={100} />
          </label>
        </div>
        <label>
          Description
          <textarea value={draft.description} onInput={set('description')} rows={4} maxLength={10000} />
        </label>
        <Report error={error} />
        <p class="ok-text" role="status">
          {saved}
        </p>
        <div class="actions">
          <button type="submit" class="primary">
            Save
          </button>
          {base.status === 'closed' ? (
            <button type="button" onClick={() => patch({ status: 'open' })}>
              Reopen issue
            </button>
          ) : (
            <button type="button" onClick={() => patch({ status: 'closed' })}>
              Close issue
            </button>
          )}
        </div>
      </form>
      <section aria-labelledby="comments-title">
        <h3 id="comments-title">Comments ({comments.length})</h3>
        {comments.length === 0 && <p class="empty">No comments yet.</p>}
        <ol class="comments">
          {comments.map((c) => (
            <li key={c.id}>
              <p class="meta">
                {c.author} · {formatTime(c.created_at)}
              </p>
              <p class="body">{c.body}</p>
            </li>
          ))}
        </ol>
        <form class="stack" onSubmit={addComment} aria-label="Add a comment">
          <label>
            New comment
            <textarea value={comment} onInput={(e) => setComment(e.currentTarget.value)} rows={2} required maxLength={10000} />
          </label>
          <div class="actions">
            <button type="submit">Add comment</button>
          </div>
        </form>
      </section>
    </div>
  );
}
