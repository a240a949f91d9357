// The console's page: the navigation, the three views, the theme switch, keyboard
// shortcuts and their help.
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { liveClient } from './lib/live';
import { signOut } from './lib/session';
import { KeyMachine, SHORTCUTS, isTyping, keyLabel } from './lib/shortcuts';
import { type ThemeChoice, chooseTheme, followSystem, nextChoice, storedChoice } from './lib/theme';
import { AuditView } from './views/audit';
import { ClusterView } from './views/cluster';
import { Dialog } from './views/ui';
import { IssuesView } from './views/issues';

type Route = 'cluster' | 'audit' | 'issues';
const ROUTES: { route: Route; label: string }[] = [
  { route: 'cluster', label: 'Cluster' },
  { route: 'audit', label: 'Audit log' },
  { route: 'issues', label: 'Issues' },
];

/** The icon's hashed address, as the page's `<link rel="icon">` names it. */
const ICON = document.querySelector<HTMLLinkElement>('link[rel="icon"]')?.href ?? '';

function currentRoute(): Route {
  const name = location.hash.replace(/^#\/?/, '');
  return ROUTES.some((r) => r.route === name) ? (name as Route) : 'cluster';
}

function go(route: Route) {
  location.hash = '#/' + route;
}

/** Moves the focus to the next (or previous) item of the current view's list. */
function moveFocus(step: 1 | -1) {
  const items = [...document.querySelectorAll<HTMLElement>('main [data-item]:not([disabled])')];
  if (items.length === 0) return;
  const at = items.indexOf(document.activeElement as HTMLElement);
  const next = at === -1 ? (step === 1 ? 0 : items.length - 1) : Math.min(items.length - 1, Math.max(0, at + step));
  items[next]?.focus();
  items[next]?.scrollIntoView({ block: 'nearest' });
}

function App() {
  const [route, setRoute] = useState<Route>(currentRoute());
  const [help, setHelp] = useState(false);
  const [choice, setChoice] = useState<ThemeChoice>(storedChoice());
  const [connection, setConnection] = useState('connecting');
  const main = useRef<HTMLElement>(null);
  const machine = useRef(new KeyMachine());

  useEffect(() => {
    const onHash = () => {
      setRoute(currentRoute());
      main.current?.focus();
    };
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  useEffect(() => followSystem(() => {}), []);

  useEffect(() => {
    const client = liveClient();
    const offs = [
      client.on('connected', () => setConnection('connected')),
      client.on('disconnected', () => setConnection('reconnecting')),
      client.on('closed', () => setConnection('closed')),
    ];
    if (client.state === 'connected') setConnection('connected');
    return () => offs.forEach((off) => off());
  }, []);

  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.key !== 'Escape' && isTyping(event.target)) return;
      // Inside an open dialog only Esc counts (the dialog closes itself).
      if (document.querySelector('dialog[open]')) return;
      const command = machine.current.feed(event.key, Date.now());
      if (!command) return;
      event.preventDefault();
      switch (command) {
        case 'help':
          setHelp(true);
          break;
        case 'search':
          document.querySelector<HTMLElement>('main [data-search]')?.focus();
          break;
        case 'next':
          moveFocus(1);
          break;
        case 'previous':
          moveFocus(-1);
          break;
        case 'cluster':
        case 'audit':
        case 'issues':
          go(command);
          break;
        case 'theme':
          setChoice((old) => {
            const next = nextChoice(old);
            chooseTheme(next);
            return next;
          });
          break;
        case 'close':
          setHelp(false);
          break;
      }
    };
    document.addEventListener('keydown', onKey);
    return () => document.removeEventListener('keydown', onKey);
  }, []);

  const switchTheme = () => {
    const next = nextChoice(choice);
    chooseTheme(next);
    setChoice(next);
  };

  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <h1>
          <img src={ICON} alt="" width={22} height={22} /> roomcast console
        </h1>
        <nav aria-label="Views">
          {ROUTES.map((r) => (
            <a href={'#/' + r.route} aria-current={route === r.route ? 'page' : undefined}>
              {r.label}
            </a>
          ))}
        </nav>
        <div class="tools">
          <span class={`pill ${connection === 'connected' ? 'ok' : 'warn'}`} title="Live updates (WebSocket)">
            {connection === 'connected' ? 'Live' : connection}
          </span>
          <button type="button" onClick={switchTheme} aria-label={`Theme: ${choice}. Switch theme`}>
            Theme: {choice}
          </button>
          <button type="button" onClick={() => setHelp(true)} aria-keyshortcuts="?">
            Shortcuts <kbd>?</kbd>
          </button>
          <button type="button" onClick={() => void signOut()}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" ref={main} tabIndex={-1}>
        {route === 'cluster' && <ClusterView />}
        {route === 'audit' && <AuditView />}
        {route === 'issues' && <IssuesView />}
      </main>
      <Dialog open={help} title="Keyboard shortcuts" onClose={() => setHelp(false)}>
        <table class="shortcuts">
          <thead>
            <tr>
              <th scope="col">Keys</th>
              <th scope="col">Does</th>
            </tr>
          </thead>
          <tbody>
            {SHORTCUTS.map((s) => (
              <tr data-shortcut={s.command}>
                <td>
                  {s.keys.map((k, i) => (
                    <>
                      {i > 0 && ' then '}
                      <kbd>{keyLabel(k)}</kbd>
                    </>
                  ))}
                </td>
                <td>{s.label}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <p class="meta">Shortcuts are off while you type in a field; Esc works everywhere.</p>
      </Dialog>
    </>
  );
}

const root = document.getElementById('app');
if (root) render(<App />, root);
