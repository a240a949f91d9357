// Calls of the HTTP API with the console's token, and the errors they end with.
import { getToken, signOut } from './session';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly etag: string | null = null,
  ) {
    super(message);
  }
}

export interface Reply<T> {
  data: T;
  etag: string | null;
}

export interface CallOptions {
  method?: string;
  body?: unknown;
  ifMatch?: string | null;
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const token = getToken();
  return token ? { authorization: `Bearer ${token}`, ...extra } : extra;
}

async function failure(response: Response): Promise<ApiError> {
  let code = 'http_' + response.status;
  let message = response.statusText || `HTTP ${response.status}`;
  try {
    const body = (await response.json()) as { error?: { code?: string; message?: string } };
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch {
    // not JSON
  }
  if (response.status === 401) void signOut('Your session has ended: sign in again.');
  return new ApiError(response.status, code, message, response.headers.get('etag'));
}

/** Calls `path` (under /api/v1) and reads its JSON answer. */
export async function call<T>(path: string, options: CallOptions = {}): Promise<Reply<T>> {
  const extra: Record<string, string> = {};
  if (options.body !== undefined) extra['content-type'] = 'application/json';
  if (options.ifMatch) extra['if-match'] = options.ifMatch;
  const response = await fetch('/api/v1' + path, {
    method: options.method ?? 'GET',
    headers: headers(extra),
    body: options.body === undefined ? null : JSON.stringify(options.body),
  });
  if (!response.ok) throw await failure(response);
  const data = (response.status === 204 ? null : await response.json()) as T;
  return { data, etag: response.headers.get('etag') };
}

/** Downloads `path` as the file the server names (an export). */
export async function download(path: string, fallbackName: string): Promise<void> {
  const response = await fetch('/api/v1' + path, { headers: headers() });
  if (!response.ok) throw await failure(response);
  const blob = await response.blob();
  const disposition = response.headers.get('content-disposition') ?? '';
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? fallbackName;
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** The message to show for a failed call. */
export function describe(err: unknown): string {
  if (err instanceof ApiError) return `${err.message} (${err.status} ${err.code})`;
  if (err instanceof Error) return err.message;
  return String(err);
}
