/**
 * The Server-Sent Events transport: a `WebSocketLike` over one `EventSource` (server →
 * client frames, JSON) and `POST`s to the session (client → server frames), so that the
 * client's protocol code is the same for both transports. The SDK resumes rooms itself
 * (`subscribe` with `since` after each welcome), as over WebSocket: the `EventSource` is
 * opened without rooms and never reconnects by itself.
 */
import type { WebSocketLike } from './types.js';

/** Minimal shape of an `EventSource` (the browser's; Node 22+ has one too). */
export interface EventSourceLike {
  readonly readyState: number;
  onmessage: ((ev: { data: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  close(): void;
}

/** An `EventSource` constructor (`globalThis.EventSource` by default). */
export type EventSourceConstructor = new (url: string, init?: { withCredentials?: boolean }) => EventSourceLike;

/** A `fetch` as the transport uses it. */
export type FetchLike = (
  url: string,
  init: { method: string; headers: Record<string, string>; body: string; keepalive?: boolean },
) => Promise<{ ok: boolean; status: number }>;

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;
/** Frames one POST carries at most (the server's bound). */
const MAX_FRAMES_PER_POST = 16;

/** The event stream URL of a WebSocket URL: `ws(s)://host/ws` → `http(s)://host/sse`. */
export function sseUrl(wsUrl: string): string {
  const url = new URL(wsUrl);
  if (url.protocol === 'ws:') url.protocol = 'http:';
  else if (url.protocol === 'wss:') url.protocol = 'https:';
  url.pathname = url.pathname.replace(/\/ws\/?$/, '') + '/sse';
  return url.toString();
}

/** One Server-Sent Events session, shaped like a WebSocket. */
export class SseSocket implements WebSocketLike {
  readyState = CONNECTING;
  readonly protocol = 'roomcast.v1.json';
  binaryType = 'arraybuffer';
  onopen: ((ev: any) => void) | null = null;
  onmessage: ((ev: any) => void) | null = null;
  onclose: ((ev: any) => void) | null = null;
  onerror: ((ev: any) => void) | null = null;

  private readonly source: EventSourceLike;
  private readonly postUrl: (session: string) => string;
  private readonly headers: Record<string, string>;
  private session: string | undefined;
  private queue: string[] = [];
  private posting = false;

  /**
   * Opens `GET {url}` (an `http(s)://…/sse` URL); `token` travels as `access_token` on
   * the stream (an `EventSource` cannot set headers) and as `Authorization` on posts.
   */
  constructor(url: string, token: string | undefined, EventSourceCtor: EventSourceConstructor, private readonly fetcher: FetchLike) {
    const streamUrl = new URL(url);
    if (token !== undefined) streamUrl.searchParams.set('access_token', token);
    this.headers = { 'content-type': 'text/plain' };
    if (token !== undefined) this.headers.authorization = `Bearer ${token}`;
    const base = new URL(url);
    this.postUrl = (session) => `${base.origin}${base.pathname.replace(/\/$/, '')}/${encodeURIComponent(session)}`;
    this.source = new EventSourceCtor(streamUrl.toString());
    this.source.onmessage = (ev) => this.received(ev.data);
    // The SDK reconnects (and resumes) by itself: an EventSource error ends this session.
    this.source.onerror = () => this.end(1006, 'event stream failed');
  }

  send(data: string | ArrayBufferView | ArrayBuffer): void {
    if (this.readyState !== OPEN) return;
    if (typeof data !== 'string') throw new TypeError('roomcast: Server-Sent Events carry JSON frames only');
    this.queue.push(data);
    void this.flush();
  }

  close(_code?: number, _reason?: string): void {
    this.end(1000, 'normal');
  }

  private received(data: string): void {
    if (this.readyState === CLOSED) return;
    let type: unknown;
    let frame: Record<string, unknown> | undefined;
    try {
      frame = JSON.parse(data) as Record<string, unknown>;
      type = frame.type;
    } catch {
      // Handed on: the client reports frames it cannot decode.
    }
    if (type === 'close' && frame) {
      // The server ends the session (a drain: 1012): like a WebSocket close frame.
      this.end(Number(frame.code) || 1006, String(frame.reason ?? ''));
      return;
    }
    if (type === 'welcome' && frame && this.readyState === CONNECTING) {
      this.session = String(frame.session);
      this.readyState = OPEN;
      this.onopen?.({});
    }
    this.onmessage?.({ data });
  }

  /** Posts queued frames, one request at a time so that they arrive in order. */
  private async flush(): Promise<void> {
    if (this.posting || this.session === undefined) return;
    this.posting = true;
    try {
      while (this.queue.length > 0 && this.readyState === OPEN) {
        const batch = this.queue.splice(0, MAX_FRAMES_PER_POST);
        let ok = false;
        try {
          const response = await this.fetcher(this.postUrl(this.session), { method: 'POST', headers: this.headers, body: batch.join('\n') });
          ok = response.ok;
        } catch {
          ok = false;
        }
        // A lost post is like a lost socket: reconnect, resume, re-send what is unanswered.
        if (!ok) return this.end(1006, 'post failed');
      }
    } finally {
      this.posting = false;
    }
  }

  private end(code: number, reason: string): void {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    this.queue = [];
    this.source.close();
    // Asynchronous, as a WebSocket's close event.
    setTimeout(() => this.onclose?.({ code, reason }), 0);
  }
}
