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
