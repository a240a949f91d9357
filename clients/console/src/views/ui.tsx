import type { ComponentChildren } from 'preact';
import { useEffect, useId, useRef } from 'preact/hooks';

/** A modal dialog (the native one: focus stays inside, Esc closes it). */
export function Dialog(props: { open: boolean; title: string; onClose: () => void; children: ComponentChildren; wide?: boolean }) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (props.open && !dialog.open) dialog.showModal();
    if (!props.open && dialog.open) dialog.close();
  }, [props.open]);
  return (
    <dialog ref={ref} class={props.wide ? 'wide' : ''} aria-labelledby={titleId} onClose={props.onClose}>
      {props.open && (
        <>
          <header class="dialog-head">
            <h2 id={titleId}>{props.title}</h2>
            <button type="button" class="ghost" onClick={props.onClose} aria-label="Close">
              ✕
            </button>
          </header>
          {props.children}
        </>
      )}
    </dialog>
  );
}

/** Asks before an action that cannot be undone. */
export function Confirm(props: {
  open: boolean;
  title: string;
  message: string;
  action: string;
  onConfirm: () => void;
  onClose: () => void;
}) {
  return (
    <Dialog open={props.open} title={props.title} onClose={props.onClose}>
      <p>{props.message}</p>
      <div class="actions">
        <button type="button" class="danger" onClick={props.onConfirm}>
          {props.action}
        </button>
        <button type="button" onClick={props.onClose} autofocus>
          Cancel
        </button>
      </div>
    </Dialog>
  );
}

/** What the view reports: a failure (announced at once) and news for screen readers. */
export function Report(props: { error: string | null; announce?: string }) {
  return (
    <>
      <p class="sr-only" aria-live="polite">
        {props.announce ?? ''}
      </p>
      {props.error && (
        <p class="error" role="alert">
          {props.error}
        </p>
      )}
    </>
  );
}

/** A labelled drop-down; `options` are values, or [value, label] pairs. */
export function Select(props: {
  label: string;
  name?: string;
  value?: string;
  options: readonly (string | readonly [string, string])[];
  any?: boolean;
  defaultValue?: string;
  onChange?: (value: string) => void;
}) {
  return (
    <label>
      {props.label}
      <select
        name={props.name}
        value={props.value}
        onChange={(e) => props.onChange?.(e.currentTarget.value)}
      >
        {props.any && <option value="">any</option>}
        {props.options.map((option) => {
          const [value, text] = typeof option === 'string' ? [option, option] : option;
          return (
            <option value={value} selected={props.value === undefined && value === props.defaultValue}>
              {text}
            </option>
          );
        })}
      </select>
    </label>
  );
}
