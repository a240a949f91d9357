// The console's credential: the token the sign-in page verified, kept for this tab in
// sessionStorage (the session cookie is HttpOnly, so scripts cannot read it; it only
// opens the console's own pages). API calls send it as a bearer token, the SDK as its
// WebSocket token.

const TOKEN_KEY = 'roomcast.console.token';

export function getToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token: string): void {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Ends the console session (the cookie and the token) and shows the sign-in page. */
export async function signOut(reason?: string): Promise<void> {
  sessionStorage.removeItem(TOKEN_KEY);
  try {
    await fetch('/console/session', { method: 'DELETE', credentials: 'same-origin' });
  } finally {
    location.assign('/console/sign-in' + (reason ? '?reason=' + encodeURIComponent(reason) : ''));
  }
}
