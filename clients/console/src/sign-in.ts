// The sign-in page: the token is checked by the server (POST /console/session), which
// answers with the console's cookie; the page keeps the token for the API and the
// WebSocket and opens the console.
import { setToken } from './lib/session';

const form = document.getElementById('sign-in') as HTMLFormElement;
const field = document.getElementById('token') as HTMLTextAreaElement;
const message = document.getElementById('message') as HTMLElement;

const reason = new URLSearchParams(location.search).get('reason');
if (reason) {
  message.textContent = reason;
  message.hidden = false;
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const token = field.value.trim();
  message.hidden = true;
  fetch('/console/session', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token }),
  })
    .then(async (response) => {
      if (response.ok) {
        setToken(token);
        location.assign('/console/');
        return;
      }
      let text = `Sign-in failed (${response.status}).`;
      try {
        const body = (await response.json()) as { error?: { message?: string } };
        if (body.error?.message) text = body.error.message;
      } catch {
        // not JSON
      }
      message.textContent = text;
      message.hidden = false;
      field.focus();
    })
    .catch((err: unknown) => {
      message.textContent = `The server cannot be reached: ${String(err)}`;
      message.hidden = false;
    });
});
