/**
 * An error reported by the server (`error` frame: `code` is its number, `kind` its
 * name, e.g. 107 / `forbidden`) or by the SDK itself (`code` is null; `kind` is one of
 * `publish_timeout`, `request_timeout`, `frame_too_big`, `client_closed`,
 * `unauthorized`, `token_expired`, `token_unavailable`, `connection`, `bad_frame`).
 */
export class RoomcastError extends Error {
  readonly code: number | null;
  readonly kind: string;
  readonly room: string | undefined;
  /** With `rate_limited` (203): how long the server asks to wait (ms). */
  readonly retryAfterMs: number | undefined;

  constructor(kind: string, message: string, code: number | null = null, room?: string, retryAfterMs?: number) {
    super(message);
    this.name = 'RoomcastError';
    this.kind = kind;
    this.code = code;
    this.room = room;
    this.retryAfterMs = retryAfterMs;
  }

  /** 2xx server errors: the request may be retried after a delay. */
  get retryable(): boolean {
    return this.code !== null && this.code >= 200 && this.code < 300;
  }
}
