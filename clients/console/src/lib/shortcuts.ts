// Keyboard shortcuts: the list the help dialog shows, and the small state machine that
// turns keys (including two-key sequences such as `g c`) into commands.

export type Command = 'help' | 'search' | 'next' | 'previous' | 'cluster' | 'audit' | 'issues' | 'theme' | 'close';

export interface Shortcut {
  keys: string[];
  command: Command;
  label: string;
}

export const SHORTCUTS: Shortcut[] = [
  { keys: ['?'], command: 'help', label: 'Show the keyboard shortcuts' },
  { keys: ['/'], command: 'search', label: 'Focus the search or filter field' },
  { keys: ['j'], command: 'next', label: 'Next item in the list' },
  { keys: ['k'], command: 'previous', label: 'Previous item in the list' },
  { keys: ['g', 'c'], command: 'cluster', label: 'Go to the cluster view' },
  { keys: ['g', 'a'], command: 'audit', label: 'Go to the audit log' },
  { keys: ['g', 'i'], command: 'issues', label: 'Go to the issue board' },
  { keys: ['t'], command: 'theme', label: 'Switch the theme (system, light, dark)' },
  { keys: ['Escape'], command: 'close', label: 'Close the dialog' },
];

/** How long the second key of a sequence may wait (ms). */
export const SEQUENCE_MS = 1500;

/** Feeds keys; returns a command when a shortcut is complete. */
export class KeyMachine {
  private pending: { key: string; at: number } | null = null;

  feed(key: string, now: number): Command | null {
    const first = this.pending && now - this.pending.at <= SEQUENCE_MS ? this.pending.key : null;
    this.pending = null;
    if (first !== null) {
      const match = SHORTCUTS.find((s) => s.keys.length === 2 && s.keys[0] === first && s.keys[1] === key);
      if (match) return match.command;
    }
    if (SHORTCUTS.some((s) => s.keys.length === 2 && s.keys[0] === key)) {
      this.pending = { key, at: now };
      return null;
    }
    return SHORTCUTS.find((s) => s.keys.length === 1 && s.keys[0] === key)?.command ?? null;
  }
}

/** Whether a key event comes from a field where typing must not trigger shortcuts. */
export function isTyping(target: EventTarget | null): boolean {
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable) return true;
  if (target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) return true;
  if (target instanceof HTMLInputElement) {
    return !['button', 'checkbox', 'radio', 'submit', 'reset'].includes(target.type);
  }
  return false;
}

/** The label of a key for display. */
export function keyLabel(key: string): string {
  return key === 'Escape' ? 'Esc' : key;
}
