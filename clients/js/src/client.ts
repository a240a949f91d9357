import { RoomcastError } from './errors.js';
import { canInflate, inflateText } from './compress.js';
import { SseSocket, sseUrl } from './sse.js';
import type { EventSourceConstructor, FetchLike } from './sse.js';
import { Subscription } from './subscription.js';
import type { PublishOptions, SubscriptionHandlers, SubscriptionHost } from './subscription.js';
import type {
  Ack,
  HistoryOptions,
  HistoryResult,
  Message,
  Position,
  PresenceEntry,
  PresenceStats,
  Welcome,
  WebSocketConstructor,
  WebSocketLike,
} from './types.js';
import {
  SUBPROTOCOL,
  TOKEN_SUBPROTOCOL_PREFIX,
  backoffDelay,
  byteSize,
  decodeFrame,
  Emitter,
  encodeFrame,
  fitsSubprotocol,
  randomKey,
} from './util.js';
import type { Encoding } from './util.js';

/** A token, or a function that fetches a fresh one (called again when it is needed). */
export type TokenSource = string | (() => string | Promise<string>);

/** How the client reaches the server: a WebSocket, or Server-Sent Events plus POSTs. */
export type Transport = 'websocket' | 'sse';

export interface ClientOptions {
  /** One URL (e.g. behind a load balancer) or several instances, tried in turn on failure. */
  urls: string | string[];
  /** Credentials; a function is called for each new token (expiry, 4101, refused handshakes). */
  token?: TokenSource;
  /**
   * How the token travels in the upgrade request: `subprotocol` (default; the
   * `roomcast.token.<token>` entry of `Sec-WebSocket-Protocol`, kept out of URLs and logs)
   * or `query` (`?access_token=`). A token with characters a subprotocol cannot carry
   * falls back to `query`.
   */
  tokenTransport?: 'subprotocol' | 'query';
  /** Frame encoding: JSON text frames (default) or MessagePack binary frames. */
  encoding?: Encoding;
  /** WebSocket implementation; default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /**
   * Transports in the order they are tried (default `['websocket', 'sse']`, or only
   * `['websocket']` where there is no `EventSource`, as in Node 20). When a
   * connection fails before the server's welcome, the next transport is tried on the
   * same URL (a proxy that blocks WebSocket upgrades); once one works, the client stays
   * on it. Over `sse` frames are JSON whatever `encoding` says, and the event stream
   * URL is the WebSocket URL with `http(s)` and `/sse` for `/ws`.
   */
  transports?: Transport[];
  /** EventSource implementation for the `sse` transport; default `globalThis.EventSource`. */
  EventSource?: EventSourceConstructor;
  /** fetch implementation for the `sse` transport's posts; default `globalThis.fetch`. */
  fetch?: FetchLike;
  /** First reconnect delay ceiling (ms, default 250); doubles per failed attempt. */
  reconnectDelayMs?: number;
  /** Largest reconnect delay ceiling (ms, default 30000). */
  maxReconnectDelayMs?: number;
  /** Give up reconnecting after this many failed attempts in a row (default: never). */
  maxReconnectAttempts?: number;
  /** After a drain (`reconnect` frame, close 1012), reconnect within this (ms, default 100). */
  drainReconnectMs?: number;
  /** A socket that is not welcomed within this is abandoned (ms, default 10000). */
  connectTimeoutMs?: number;
  /** Default deadline of a publish, retries included (ms, default 60000; keep it below the server's 120 s idempotency window). */
  publishTimeoutMs?: number;
  /** Deadline of history requests (ms, default 15000). */
  requestTimeoutMs?: number;
  /** Refresh the token this long before it expires at most (ms, default 30000; never more than 10 % of its lifetime). */
  refreshLeadMs?: number;
  /** Connect at construction (default true); otherwise call `connect()`. */
  autoConnect?: boolean;
  /** Random source in [0, 1) used for jitter (tests). */
  random?: () => number;
}

/** Client-level events. */
export interface ClientEvents {
  /** A connection was established and welcomed. */
  connected: (welcome: Welcome) => void;
  /** The connection ended; `willReconnect` says whether the client goes on. */
  disconnected: (info: { code: number; reason: string; willReconnect: boolean }) => void;
  /**
   * The server asked this client to move (it is draining, or shedding load); a reconnect
   * follows, to the `hint` addresses first (in order) when the server named any.
   */
  draining: (info: { reason: string; hint: string[] }) => void;
  /** A reconnect is scheduled. */
  reconnecting: (info: { attempt: number; delayMs: number; url: string }) => void;
  /** The token was replaced on the live connection. */
  refreshed: (info: { expiresAt: number }) => void;
  /** Something went wrong that no single request owns. */
  error: (error: RoomcastError) => void;
  /** The client stopped for good (`close()`, refused credentials, attempts exhausted). */
  closed: (info: { reason: string; error?: RoomcastError }) => void;
}

export type ClientState = 'idle' | 'connecting' | 'connected' | 'closed';

interface PendingPublish {
  room: string;
  data: unknown;
  key: string;
  /** Request id on the current connection; 0 when not sent on it. */
  id: number;
  attempts: number;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
  deadline: ReturnType<typeof setTimeout> | undefined;
  resolve: (ack: Ack) => void;
  reject: (err: RoomcastError) => void;
}

interface PendingHistory {
  room: string;
  options: HistoryOptions;
  id: number;
  attempts: number;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
  deadline: ReturnType<typeof setTimeout> | undefined;
  resolve: (result: HistoryResult) => void;
  reject: (err: RoomcastError) => void;
}

/** A `presence` or `presence_stats` request, re-sent after reconnects until answered. */
interface PendingPresence {
  room: string;
  stats: boolean;
  id: number;
  attempts: number;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
  deadline: ReturnType<typeof setTimeout> | undefined;
  resolve: (frame: Record<string, any>) => void;
  reject: (err: RoomcastError) => void;
}

type Inflight =
  | { kind: 'subscribe'; sub: Subscription<any>; since: Position | undefined }
  | { kind: 'unsubscribe'; done: () => void }
  | { kind: 'publish'; pub: PendingPublish }
  | { kind: 'history'; req: PendingHistory }
  | { kind: 'presence'; req: PendingPresence }
  | { kind: 'ping' }
  | { kind: 'refresh' };

const WS_OPEN = 1;
/** Longest idempotency key the server takes. */
const MAX_KEY_BYTES = 255;

/**
 * A roomcast client: one WebSocket at a time, rotated over the configured URLs, that
 * resumes every subscribed room from its last position after any reconnect and re-sends
 * unacknowledged publishes under their idempotency keys.
 */
export class Client extends Emitter<ClientEvents> implements SubscriptionHost {
  private readonly urls: string[];
  private readonly encoding: Encoding;
  private readonly opts: Required<
    Omit<ClientOptions, 'urls' | 'token' | 'encoding' | 'WebSocket' | 'autoConnect' | 'random' | 'maxReconnectAttempts' | 'transports' | 'EventSource' | 'fetch'>
  > & { maxReconnectAttempts: number };
  private readonly tokenSource: TokenSource | undefined;
  private readonly random: () => number;
  private readonly WS: WebSocketConstructor | undefined;
  private readonly ES: EventSourceConstructor | undefined;
  private readonly fetcher: FetchLike | undefined;
  private readonly transports: Transport[];
  /** The transport of the next (or current) connection, an index into `transports`. */
  private transportIndex = 0;
  /** The encoding of the current connection (JSON over `sse`). */
  private wire: Encoding = 'json';
  /** A transport was welcomed once: the client stays on it from then on. */
  private settled = false;

  private _state: ClientState = 'idle';
  private ws: WebSocketLike | null = null;
  /** Frames waiting behind a compressed message that is being inflated, in order. */
  private held: Record<string, any>[] = [];
  /** Bumped for every socket: events of older sockets are ignored. */
  private generation = 0;
  private urlIndex = 0;
  /** Addresses named by the last `reconnect` frame, tried before `urls`. */
  private hint: string[] = [];
  /** The hint arrived on the connection that is closing: its first address is next. */
  private hintFresh = false;
  private attempt = 0;
  private token: string | undefined;
  private tokenStale = true;
  private authFailures = 0;
  private draining = false;
  private welcomeFrame: Welcome | undefined;
  private nextId = 1;
  private readonly subs = new Map<string, Subscription<any>>();
  private readonly outbox: PendingPublish[] = [];
  private readonly requests: PendingHistory[] = [];
  private readonly presenceRequests: PendingPresence[] = [];
  private readonly inflight = new Map<number, Inflight>();
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private drainTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  private lastReceived = 0;
  private pingSentAt = 0;
  private refreshing = false;

  constructor(options: ClientOptions) {
    super();
    this.urls = (Array.isArray(options.urls) ? options.urls : [options.urls]).slice();
    if (this.urls.length === 0) throw new TypeError('roomcast: at least one URL is needed');
    this.encoding = options.encoding ?? 'json';
    if (this.encoding !== 'json' && this.encoding !== 'msgpack') throw new TypeError(`roomcast: unknown encoding ${String(this.encoding)}`);
    this.tokenSource = options.token;
    this.random = options.random ?? Math.random;
    this.WS = options.WebSocket;
    this.ES = options.EventSource;
    this.fetcher = options.fetch;
    const eventSourceHere = options.EventSource !== undefined || typeof (globalThis as { EventSource?: unknown }).EventSource === 'function';
    this.transports = (options.transports ?? (eventSourceHere ? ['websocket', 'sse'] : ['websocket'])).slice();
    if (this.transports.length === 0 || this.transports.some((t) => t !== 'websocket' && t !== 'sse')) {
      throw new TypeError(`roomcast: transports must list 'websocket' and/or 'sse'`);
    }
    this.opts = {
      tokenTransport: options.tokenTransport ?? 'subprotocol',
      reconnectDelayMs: options.reconnectDelayMs ?? 250,
      maxReconnectDelayMs: options.maxReconnectDelayMs ?? 30_000,
      maxReconnectAttempts: options.maxReconnectAttempts ?? Infinity,
      drainReconnectMs: options.drainReconnectMs ?? 100,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      publishTimeoutMs: options.publishTimeoutMs ?? 60_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 15_000,
      refreshLeadMs: options.refreshLeadMs ?? 30_000,
    };
    if (options.autoConnect !== false) this.connect();
  }

  /** `idle`, `connecting` (also while waiting to reconnect), `connected` or `closed`. */
  get state(): ClientState {
    return this._state;
  }

  /** The transport of the current connection (or of the next attempt). */
  get transport(): Transport {
    return this.transports[this.transportIndex]!;
  }

  /** The current connection's `welcome`, when connected. */
  get welcome(): Welcome | undefined {
    return this.welcomeFrame;
  }

  /** Publishes not yet acknowledged (sent or waiting for a connection). */
  get pendingPublishes(): number {
    return this.outbox.length;
  }

  /** The subscription of a room, if any. */
  subscription<T = unknown>(room: string): Subscription<T> | undefined {
    return this.subs.get(room) as Subscription<T> | undefined;
  }

  /** Starts (or restarts, after `close()`) connecting. */
  connect(): void {
    if (this._state === 'connecting' || this._state === 'connected') return;
    this._state = 'connecting';
    this.authFailures = 0;
    this.attempt = 0;
    void this.open();
  }

  /**
   * Closes the connection and stops reconnecting. Pending publishes and requests are
   * rejected with `client_closed`; subscriptions keep their positions, so a later
   * `connect()` resumes them.
   */
  close(): void {
    this.stop('closed by the application', new RoomcastError('client_closed', 'the client was closed'), false);
  }

  /** Follows a room. Throws when the room is already followed by this client. */
  subscribe<T = unknown>(room: string, handlers: SubscriptionHandlers<T> = {}): Subscription<T> {
    const existing = this.subs.get(room);
    if (existing && !existing.closed) throw new Error(`roomcast: already subscribed to ${room}`);
    const sub = new Subscription<T>(this, room, handlers);
    if (this._state === 'closed') {
      sub.close(new RoomcastError('client_closed', 'the client is closed', null, room));
      return sub;
    }
    this.subs.set(room, sub);
    if (this.welcomeFrame) this.sendSubscribe(sub);
    return sub;
  }

  /**
   * Publishes `data` to `room` (no subscription needed); resolves with the ack. If the
   * connection fails first, the publish is re-sent after reconnecting with the same
   * idempotency key, so it is published once.
   */
  publish(room: string, data: unknown, options: PublishOptions = {}): Promise<Ack> {
    return new Promise<Ack>((resolve, reject) => {
      if (this._state === 'closed') return reject(new RoomcastError('client_closed', 'the client is closed', null, room));
      if (data === null || data === undefined) return reject(new RoomcastError('invalid_frame', 'data must not be null', null, room));
      if (options.idempotencyKey !== undefined && new TextEncoder().encode(options.idempotencyKey).length > MAX_KEY_BYTES) {
        return reject(new RoomcastError('invalid_frame', `an idempotency key has at most ${MAX_KEY_BYTES} bytes`, null, room));
      }
      const pub: PendingPublish = {
        room,
        data,
        key: options.idempotencyKey ?? randomKey(),
        id: 0,
        attempts: 0,
        retryTimer: undefined,
        deadline: undefined,
        resolve,
        reject,
      };
      const timeoutMs = options.timeoutMs ?? this.opts.publishTimeoutMs;
      pub.deadline = setTimeout(() => {
        this.finishPublish(pub);
        reject(new RoomcastError('publish_timeout', `publish to ${room} not acknowledged within ${timeoutMs} ms (outcome unknown; retry with the same key)`, null, room));
      }, timeoutMs);
      this.outbox.push(pub);
      if (this.welcomeFrame) this.sendPublish(pub);
    });
  }

  /** Reads a room's replay buffer (waits for a connection if there is none). */
  history(room: string, options: HistoryOptions = {}): Promise<HistoryResult> {
    return new Promise<HistoryResult>((resolve, reject) => {
      if (this._state === 'closed') return reject(new RoomcastError('client_closed', 'the client is closed', null, room));
      const req: PendingHistory = { room, options, id: 0, attempts: 0, retryTimer: undefined, deadline: undefined, resolve, reject };
      req.deadline = setTimeout(() => {
        this.finishHistory(req);
        reject(new RoomcastError('request_timeout', `history of ${room} not answered within ${this.opts.requestTimeoutMs} ms`, null, room));
      }, this.opts.requestTimeoutMs);
      this.requests.push(req);
      if (this.welcomeFrame) this.sendHistory(req);
    });
  }

  /** Who is in `room` now (a room the server has presence for). */
  presence(room: string): Promise<PresenceEntry[]> {
    return this.presenceRequest(room, false).then((frame) => (frame.clients ?? []) as PresenceEntry[]);
  }

  /** How many are in `room` now: connections and distinct users. */
  presenceStats(room: string): Promise<PresenceStats> {
    return this.presenceRequest(room, true).then((frame) => ({
      room: String(frame.room),
      clients: Number(frame.clients),
      users: Number(frame.users),
    }));
  }

  private presenceRequest(room: string, stats: boolean): Promise<Record<string, any>> {
    return new Promise((resolve, reject) => {
      if (this._state === 'closed') return reject(new RoomcastError('client_closed', 'the client is closed', null, room));
      const req: PendingPresence = { room, stats, id: 0, attempts: 0, retryTimer: undefined, deadline: undefined, resolve, reject };
      req.deadline = setTimeout(() => {
        this.finishPresence(req);
        reject(new RoomcastError('request_timeout', `presence of ${room} not answered within ${this.opts.requestTimeoutMs} ms`, null, room));
      }, this.opts.requestTimeoutMs);
      this.presenceRequests.push(req);
      if (this.welcomeFrame) this.sendPresence(req);
    });
  }

  private sendPresence(req: PendingPresence): void {
    const id = this.nextId++;
    req.id = id;
    this.inflight.set(id, { kind: 'presence', req });
    this.send({ type: req.stats ? 'presence_stats' : 'presence', id, room: req.room });
  }

  private finishPresence(req: PendingPresence): void {
    clearTimeout(req.deadline);
    clearTimeout(req.retryTimer);
    const i = this.presenceRequests.indexOf(req);
    if (i >= 0) this.presenceRequests.splice(i, 1);
    if (req.id) this.inflight.delete(req.id);
  }

  // ---- SubscriptionHost ----

  /** @internal */
  gapFill(sub: Subscription<any>, since: Position, limit: number, attempt: number): void {
    const max = this.welcomeFrame?.limits.max_history ?? 100;
    const run = () => {
      if (sub.state !== 'active') return sub.handleGapFill(since, null);
      this.history(sub.room, { since, limit: Math.max(1, Math.min(limit, max)) }).then(
        (reply) => sub.handleGapFill(since, reply),
        (err: RoomcastError) => sub.handleGapFill(since, null, err),
      );
    };
    if (attempt > 0) setTimeout(run, 50 * attempt);
    else run();
  }

  /** @internal */
  resubscribe(sub: Subscription<any>): void {
    if (sub.state !== 'active' || !this.ws || !this.welcomeFrame) return;
    // Messages of the old subscription that are still on their way are dropped (the
    // subscription is `subscribing` until the new `subscribed`), and the replay resumes
    // right after the last message delivered.
    const id = this.nextId++;
    this.inflight.set(id, { kind: 'unsubscribe', done: () => {} });
    this.send({ type: 'unsubscribe', id, room: sub.room });
    this.sendSubscribe(sub);
  }

  /** @internal */
  detach(sub: Subscription<any>): Promise<void> {
    const wasOnServer = sub.state === 'active' || sub.state === 'subscribing';
    sub.close();
    if (this.subs.get(sub.room) === sub) this.subs.delete(sub.room);
    const done = new Promise<void>((resolve) => {
      if (!wasOnServer || !this.ws || !this.welcomeFrame) return resolve();
      const id = this.nextId++;
      this.inflight.set(id, { kind: 'unsubscribe', done: resolve });
      this.send({ type: 'unsubscribe', id, room: sub.room });
    });
    return done.then(() => sub.unsubscribed());
  }

  // ---- connection ----

  private async open(): Promise<void> {
    const generation = ++this.generation;
    let token: string | undefined;
    try {
      token = await this.currentToken();
    } catch (err) {
      if (generation !== this.generation || this._state === 'closed') return;
      this.emit('error', new RoomcastError('token_unavailable', `the token callback failed: ${String(err)}`));
      this.scheduleReconnect(false, false);
      return;
    }
    if (generation !== this.generation || this._state === 'closed') return;
    const url = this.nextUrl();
    if (this.transport === 'sse') return this.openEventStream(generation, url, token);
    this.wire = this.encoding;
    const protocols = [SUBPROTOCOL[this.encoding]];
    let target = url;
    if (token !== undefined) {
      if (this.opts.tokenTransport === 'subprotocol' && fitsSubprotocol(token)) {
        protocols.push(TOKEN_SUBPROTOCOL_PREFIX + token);
      } else {
        target += (url.includes('?') ? '&' : '?') + 'access_token=' + encodeURIComponent(token);
      }
    }
    const Ctor = this.WS ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Ctor) {
      this.stop('no WebSocket implementation', new RoomcastError('connection', 'no WebSocket: pass the WebSocket option (Node 20 needs --experimental-websocket or a library)'), true);
      return;
    }
    let ws: WebSocketLike;
    try {
      ws = new Ctor(target, protocols);
    } catch (err) {
      this.emit('error', new RoomcastError('connection', `cannot open ${url}: ${String(err)}`));
      this.scheduleReconnect(false, false);
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.attach(generation, ws);
  }

  /** Opens a Server-Sent Events session on the instance of `url` (a WebSocket URL). */
  private openEventStream(generation: number, url: string, token: string | undefined): void {
    const ES = this.ES ?? (globalThis as { EventSource?: EventSourceConstructor }).EventSource;
    const fetcher = this.fetcher ?? (globalThis as { fetch?: FetchLike }).fetch?.bind(globalThis);
    if (!ES || !fetcher) {
      this.emit('error', new RoomcastError('connection', 'no EventSource or fetch here: the sse transport cannot be used'));
      this.socketClosed(1006, 'sse unavailable');
      return;
    }
    this.wire = 'json';
    let socket: SseSocket;
    try {
      socket = new SseSocket(sseUrl(url), token, ES, fetcher);
    } catch (err) {
      this.emit('error', new RoomcastError('connection', `cannot open ${url} over sse: ${String(err)}`));
      this.socketClosed(1006, 'sse failed');
      return;
    }
    this.attach(generation, socket);
  }

  /** Makes `ws` the current connection and listens to it. */
  private attach(generation: number, ws: WebSocketLike): void {
    this.ws = ws;
    this.held = [];
    this.welcomeFrame = undefined;
    this.draining = false;
    this.connectTimer = setTimeout(() => {
      if (generation === this.generation) this.abandon('no welcome in time');
    }, this.opts.connectTimeoutMs);
    ws.onmessage = (ev: { data: unknown }) => {
      if (generation === this.generation) this.receive(ev.data);
    };
    ws.onclose = (ev: { code?: number; reason?: string }) => {
      if (generation === this.generation) this.socketClosed(Number(ev?.code ?? 1006), String(ev?.reason ?? ''));
    };
    ws.onerror = () => {
      // A close event follows.
    };
  }

  private async currentToken(): Promise<string | undefined> {
    const source = this.tokenSource;
    if (source === undefined) return undefined;
    if (typeof source === 'string') return source;
    if (this.token === undefined || this.tokenStale) {
      const token = await source();
      if (typeof token !== 'string' || token === '') throw new Error('the token callback returned no token');
      this.token = token;
      this.tokenStale = false;
    }
    return this.token;
  }

  /** Gives up on the current socket without waiting for its close handshake. */
  private abandon(reason: string): void {
    const ws = this.ws;
    if (!ws) return;
    this.generation++;
    try {
      ws.close(1000, reason);
    } catch {
      // already closing
    }
    this.socketClosed(1006, reason);
  }

  private send(frame: Record<string, unknown>): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== WS_OPEN) return false;
    ws.send(encodeFrame(this.wire, frame));
    return true;
  }

  private receive(data: unknown): void {
    let frame: Record<string, any> | null;
    try {
      frame = decodeFrame(data);
    } catch (err) {
      frame = null;
    }
    this.lastReceived = Date.now();
    this.pingSentAt = 0;
    if (!frame) {
      this.emit('error', new RoomcastError('bad_frame', 'the server sent a frame that could not be decoded'));
      return;
    }
    // A compressed message inflates asynchronously: it, and every frame after it, wait
    // in order until it is done.
    if (this.held.length > 0 || (frame.type === 'message' && frame.compressed === true)) {
      this.held.push(frame);
      if (this.held.length === 1) void this.releaseHeld(this.generation);
      return;
    }
    this.dispatch(frame);
  }

  /** Dispatches held frames in order, inflating compressed messages first. */
  private async releaseHeld(generation: number): Promise<void> {
    while (this.held.length > 0) {
      const frame = this.held[0]!;
      if (frame.type === 'message' && frame.compressed === true) {
        try {
          frame.data = await inflateText(frame.data);
          frame.inflated = true;
        } catch (err) {
          frame.inflateError = (err as Error).message;
        }
        frame.compressed = false;
      }
      // A new connection dropped what the old one still held.
      if (generation !== this.generation) return;
      this.held.shift();
      this.dispatch(frame);
    }
  }

  private dispatch(frame: Record<string, any>): void {
    switch (frame.type) {
      case 'welcome':
        return this.welcomed(frame as unknown as Welcome);
      case 'message': {
        const sub = this.subs.get(frame.room);
        if (sub) sub.handleMessage(frame);
        return;
      }
      case 'subscribed': {
        const entry = this.take(frame.id);
        if (entry?.kind === 'subscribe') entry.sub.handleSubscribed(frame, entry.since);
        return;
      }
      case 'unsubscribed': {
        if (frame.id === undefined || frame.id === null) {
          // The server removed the subscription by itself (an operator, or membership
          // ended): do not subscribe again.
          const sub = this.subs.get(frame.room);
          if (sub && sub.state === 'active') {
            this.subs.delete(sub.room);
            sub.removedByServer();
          }
          return;
        }
        const entry = this.take(frame.id);
        if (entry?.kind === 'unsubscribe') entry.done();
        return;
      }
      case 'ack': {
        const entry = this.take(frame.id);
        if (entry?.kind === 'publish') {
          const pub = entry.pub;
          this.finishPublish(pub);
          pub.resolve({
            room: String(frame.room),
            epoch: String(frame.epoch),
            seq: Number(frame.seq),
            time: Number(frame.time),
            duplicate: frame.duplicate === true,
          });
        }
        return;
      }
      case 'history': {
        const entry = this.take(frame.id);
        if (entry?.kind === 'history') {
          this.finishHistory(entry.req);
          const epoch = String(frame.epoch);
          const result: HistoryResult = {
            room: String(frame.room),
            epoch,
            seq: Number(frame.seq),
            messages: ((frame.messages ?? []) as Array<Record<string, any>>).map(
              (m): Message => ({ room: String(frame.room), epoch, seq: Number(m.seq), time: Number(m.time), data: m.data }),
            ),
          };
          if (typeof frame.recovered === 'boolean') result.recovered = frame.recovered;
          entry.req.resolve(result);
        }
        return;
      }
      case 'reset': {
        const sub = this.subs.get(frame.room);
        if (sub) sub.handleReset(frame);
        return;
      }
      case 'presence':
      case 'presence_stats': {
        if (frame.id === undefined || frame.id === null) {
          // The snapshot that follows a subscribe with `presence: true`.
          this.subs.get(frame.room)?.handlePresence(frame);
          return;
        }
        const entry = this.take(frame.id);
        if (entry?.kind === 'presence') {
          this.finishPresence(entry.req);
          entry.req.resolve(frame);
        }
        return;
      }
      case 'presence_diff':
        this.subs.get(frame.room)?.handlePresenceDiff(frame);
        return;
      case 'reconnect': {
        // The instance drains (or sheds load): it closes with 1012 after what it queued;
        // go elsewhere soon, to the instances it named when it named any.
        this.draining = true;
        const hint = Array.isArray(frame.hint) ? frame.hint.filter((u): u is string => typeof u === 'string') : [];
        this.hint = hint;
        this.hintFresh = hint.length > 0;
        clearTimeout(this.drainTimer);
        this.drainTimer = setTimeout(() => this.abandon('drain'), 2_000);
        this.emit('draining', { reason: String(frame.reason ?? 'draining'), hint: hint.slice() });
        return;
      }
      case 'refreshed': {
        const entry = this.take(frame.id);
        if (entry?.kind === 'refresh' || entry === undefined) {
          this.refreshing = false;
          const expiresAt = Number(frame.expires_at);
          this.emit('refreshed', { expiresAt });
          this.scheduleRefresh(expiresAt);
        }
        return;
      }
      case 'pong':
        this.take(frame.id);
        return;
      case 'error':
        return this.serverError(frame);
      default:
        return; // a frame type of a later revision
    }
  }

  private take(id: unknown): Inflight | undefined {
    if (typeof id !== 'number') return undefined;
    const entry = this.inflight.get(id);
    this.inflight.delete(id);
    return entry;
  }

  private welcomed(welcome: Welcome): void {
    clearTimeout(this.connectTimer);
    this.welcomeFrame = welcome;
    this.settled = true;
    this.hint = [];
    this.hintFresh = false;
    this._state = 'connected';
    this.attempt = 0;
    this.lastReceived = Date.now();
    this.pingSentAt = 0;
    this.startHeartbeat(Number(welcome.limits?.heartbeat_ms) || 25_000);
    if (typeof welcome.expires_at === 'number') this.scheduleRefresh(welcome.expires_at);
    this.emit('connected', welcome);
    if (this.ws === null || this.welcomeFrame !== welcome) return; // a listener closed it
    // Resume every room, then re-send what was not acknowledged, then pending reads.
    for (const sub of this.subs.values()) if (sub.state === 'pending') this.sendSubscribe(sub);
    for (const pub of this.outbox.slice()) if (pub.id === 0 && pub.retryTimer === undefined) this.sendPublish(pub);
    for (const req of this.requests.slice()) if (req.id === 0 && req.retryTimer === undefined) this.sendHistory(req);
    for (const req of this.presenceRequests.slice()) if (req.id === 0 && req.retryTimer === undefined) this.sendPresence(req);
  }

  private sendSubscribe(sub: Subscription<any>): void {
    const id = this.nextId++;
    const since = sub.resumeFrom();
    const frame: Record<string, unknown> = { type: 'subscribe', id, room: sub.room };
    if (since) frame.since = since;
    if (sub.deltaRequest) frame.delta = sub.deltaRequest;
    if (sub.compressRequest && canInflate()) frame.compress = sub.compressRequest;
    if (sub.presenceRequest) {
      frame.presence = true;
      if (sub.presenceRequest.info !== undefined) frame.info = sub.presenceRequest.info;
    }
    sub.state = 'subscribing';
    this.inflight.set(id, { kind: 'subscribe', sub, since });
    this.send(frame);
  }

  private sendPublish(pub: PendingPublish): void {
    const id = this.nextId++;
    const encoded = encodeFrame(this.wire, { type: 'publish', id, room: pub.room, data: pub.data, key: pub.key });
    const max = this.welcomeFrame?.limits.max_frame_bytes;
    if (max !== undefined && byteSize(encoded) > max) {
      this.finishPublish(pub);
      pub.reject(new RoomcastError('frame_too_big', `the publish frame is larger than the server's max_frame_bytes (${max})`, null, pub.room));
      return;
    }
    const ws = this.ws;
    if (!ws || ws.readyState !== WS_OPEN) return;
    pub.id = id;
    this.inflight.set(id, { kind: 'publish', pub });
    ws.send(encoded);
  }

  private sendHistory(req: PendingHistory): void {
    const id = this.nextId++;
    const frame: Record<string, unknown> = { type: 'history', id, room: req.room };
    if (req.options.since) frame.since = { epoch: req.options.since.epoch, seq: req.options.since.seq };
    if (req.options.limit !== undefined) frame.limit = req.options.limit;
    req.id = id;
    this.inflight.set(id, { kind: 'history', req });
    this.send(frame);
  }

  private finishPublish(pub: PendingPublish): void {
    clearTimeout(pub.deadline);
    clearTimeout(pub.retryTimer);
    const i = this.outbox.indexOf(pub);
    if (i >= 0) this.outbox.splice(i, 1);
    if (pub.id) this.inflight.delete(pub.id);
  }

  private finishHistory(req: PendingHistory): void {
    clearTimeout(req.deadline);
    clearTimeout(req.retryTimer);
    const i = this.requests.indexOf(req);
    if (i >= 0) this.requests.splice(i, 1);
    if (req.id) this.inflight.delete(req.id);
  }

  /** Delay before retrying a request that got a 2xx error. */
  private retryDelay(attempt: number, err: RoomcastError): number {
    if (err.retryAfterMs !== undefined) return err.retryAfterMs;
    return 50 + backoffDelay(attempt, 100, 5_000, this.random);
  }

  private serverError(frame: Record<string, any>): void {
    const entry = this.take(frame.id);
    const room = entry && 'sub' in entry ? entry.sub.room : entry?.kind === 'publish' ? entry.pub.room : entry?.kind === 'history' || entry?.kind === 'presence' ? entry.req.room : undefined;
    const err = new RoomcastError(
      String(frame.name ?? 'error'),
      String(frame.message ?? frame.name ?? 'error'),
      Number(frame.code),
      room,
      typeof frame.retry_after_ms === 'number' ? frame.retry_after_ms : undefined,
    );
    if (!entry) {
      this.emit('error', err);
      return;
    }
    switch (entry.kind) {
      case 'subscribe': {
        const sub = entry.sub;
        if (sub.state === 'closed') return;
        if (err.retryable) {
          sub.state = 'pending';
          const generation = this.generation;
          setTimeout(() => {
            if (generation === this.generation && sub.state === 'pending' && this.welcomeFrame) this.sendSubscribe(sub);
          }, this.retryDelay(0, err));
        } else {
          if (this.subs.get(sub.room) === sub) this.subs.delete(sub.room);
          sub.close(err);
        }
        return;
      }
      case 'unsubscribe':
        entry.done();
        return;
      case 'publish': {
        const pub = entry.pub;
        pub.id = 0;
        if (!err.retryable) {
          this.finishPublish(pub);
          pub.reject(err);
          return;
        }
        // Retry with the same key: `timeout` means the outcome is unknown.
        pub.retryTimer = setTimeout(() => {
          pub.retryTimer = undefined;
          if (this.welcomeFrame && pub.id === 0 && this.outbox.includes(pub)) this.sendPublish(pub);
        }, this.retryDelay(pub.attempts++, err));
        return;
      }
      case 'history': {
        const req = entry.req;
        req.id = 0;
        if (!err.retryable) {
          this.finishHistory(req);
          req.reject(err);
          return;
        }
        req.retryTimer = setTimeout(() => {
          req.retryTimer = undefined;
          if (this.welcomeFrame && req.id === 0 && this.requests.includes(req)) this.sendHistory(req);
        }, this.retryDelay(req.attempts++, err));
        return;
      }
      case 'presence': {
        const req = entry.req;
        req.id = 0;
        if (!err.retryable) {
          this.finishPresence(req);
          req.reject(err);
          return;
        }
        req.retryTimer = setTimeout(() => {
          req.retryTimer = undefined;
          if (this.welcomeFrame && req.id === 0 && this.presenceRequests.includes(req)) this.sendPresence(req);
        }, this.retryDelay(req.attempts++, err));
        return;
      }
      case 'refresh':
        this.refreshing = false;
        this.emit('error', err);
        // Try again while the token has not expired; at expiry the server closes with 4101.
        this.refreshTimer = setTimeout(() => void this.refresh(), 1_000);
        return;
      case 'ping':
        return;
    }
  }

  // ---- heartbeat and token refresh ----

  private startHeartbeat(heartbeatMs: number): void {
    clearInterval(this.heartbeatTimer);
    const generation = this.generation;
    // Browsers cannot see WebSocket pings: after a heartbeat of silence ask with a `ping`
    // frame, and give the connection up after another one without any frame.
    this.heartbeatTimer = setInterval(() => {
      if (generation !== this.generation) return;
      const now = Date.now();
      if (this.pingSentAt !== 0) {
        if (now - this.pingSentAt >= heartbeatMs) this.abandon('heartbeat timeout');
      } else if (now - this.lastReceived >= heartbeatMs) {
        const id = this.nextId++;
        this.inflight.set(id, { kind: 'ping' });
        this.pingSentAt = now;
        this.send({ type: 'ping', id });
      }
    }, Math.max(50, Math.floor(heartbeatMs / 4)));
  }

  private scheduleRefresh(expiresAt: number): void {
    clearTimeout(this.refreshTimer);
    if (typeof this.tokenSource !== 'function' || !Number.isFinite(expiresAt)) return;
    const remaining = expiresAt * 1000 - Date.now();
    const lead = Math.min(this.opts.refreshLeadMs, Math.max(0, remaining) * 0.1);
    const delay = Math.max(0, remaining - lead);
    const generation = this.generation;
    this.refreshTimer = setTimeout(() => {
      if (generation === this.generation) void this.refresh();
    }, delay);
  }

  private async refresh(): Promise<void> {
    if (this.refreshing || typeof this.tokenSource !== 'function' || !this.welcomeFrame) return;
    const generation = this.generation;
    this.refreshing = true;
    let token: string;
    try {
      token = await this.tokenSource();
      if (typeof token !== 'string' || token === '') throw new Error('the token callback returned no token');
    } catch (err) {
      this.refreshing = false;
      this.emit('error', new RoomcastError('token_unavailable', `the token callback failed: ${String(err)}`));
      if (generation === this.generation) this.refreshTimer = setTimeout(() => void this.refresh(), 1_000);
      return;
    }
    if (generation !== this.generation || !this.welcomeFrame) {
      this.refreshing = false;
      return;
    }
    this.token = token;
    this.tokenStale = false;
    const id = this.nextId++;
    this.inflight.set(id, { kind: 'refresh' });
    this.send({ type: 'refresh', id, token });
  }

  // ---- disconnects ----

  private socketClosed(code: number, reason: string): void {
    const wasWelcomed = this.welcomeFrame !== undefined;
    const drained = this.draining || code === 1012;
    this.ws = null;
    this.welcomeFrame = undefined;
    this.draining = false;
    this.refreshing = false;
    this.generation++;
    clearTimeout(this.connectTimer);
    clearTimeout(this.drainTimer);
    clearTimeout(this.refreshTimer);
    clearInterval(this.heartbeatTimer);
    // What was in flight on this connection is sent again on the next one.
    for (const entry of this.inflight.values()) {
      if (entry.kind === 'publish') entry.pub.id = 0;
      else if (entry.kind === 'history' || entry.kind === 'presence') entry.req.id = 0;
      else if (entry.kind === 'unsubscribe') entry.done();
    }
    this.inflight.clear();
    for (const sub of this.subs.values()) sub.connectionLost();

    if (this._state === 'closed') {
      this.emit('disconnected', { code, reason, willReconnect: false });
      return;
    }
    if (code === 4100) {
      // Unauthorized: never again with the same credentials.
      this.authFailures++;
      if (typeof this.tokenSource !== 'function' || this.authFailures >= 2) {
        this.emit('disconnected', { code, reason, willReconnect: false });
        this.stop('unauthorized', new RoomcastError('unauthorized', 'the server refused the credentials (4100)'), true);
        return;
      }
      this.tokenStale = true;
    } else if (code === 4101) {
      if (typeof this.tokenSource !== 'function') {
        this.emit('disconnected', { code, reason, willReconnect: false });
        this.stop('token expired', new RoomcastError('token_expired', 'the token expired and no token callback can renew it (4101)'), true);
        return;
      }
      this.tokenStale = true;
    } else if (code >= 4100 && code <= 4999) {
      // 4102: an operator disconnected this user; others: do not come back with these credentials.
      this.emit('disconnected', { code, reason, willReconnect: false });
      const kind = code === 4102 ? 'disconnected' : 'unauthorized';
      this.stop(`closed by the server (${code} ${reason})`, new RoomcastError(kind, `the server closed the connection with ${code} ${reason}`), true);
      return;
    } else if (wasWelcomed) {
      this.authFailures = 0;
    } else if (typeof this.tokenSource === 'function') {
      // A refused handshake looks like any failed connection in a browser: the token may
      // be what was refused, so the next attempt fetches a new one.
      this.tokenStale = true;
    }
    this.emit('disconnected', { code, reason, willReconnect: true });
    if (this.hintFresh) {
      // Closed by the server that named the hint: its first address is next.
      this.hintFresh = false;
    } else if (!wasWelcomed && !this.settled && this.transportIndex + 1 < this.transports.length) {
      // The connection failed before a welcome, and no transport has worked yet: maybe
      // this one is blocked on the way (a proxy refusing WebSocket upgrades); the next
      // one, on the same address.
      this.transportIndex++;
    } else {
      if (!wasWelcomed && !this.settled) this.transportIndex = 0;
      if (this.hint.length > 0) {
        // A hinted address did not work: the next one, then the configured list.
        this.hint.shift();
      } else {
        this.urlIndex = (this.urlIndex + 1) % this.urls.length;
      }
    }
    this.scheduleReconnect(drained, code === 4101);
  }

  /** Where the next connection goes: the first hinted address, else the next of `urls`. */
  private nextUrl(): string {
    return this.hint[0] ?? this.urls[this.urlIndex % this.urls.length]!;
  }

  private scheduleReconnect(drained: boolean, immediate: boolean): void {
    if (this._state === 'closed') return;
    this._state = 'connecting';
    if (this.attempt >= this.opts.maxReconnectAttempts) {
      this.stop('reconnect attempts exhausted', new RoomcastError('connection', `no connection after ${this.attempt} attempts`), true);
      return;
    }
    const delayMs = immediate
      ? 0
      : drained
        ? Math.floor(this.random() * this.opts.drainReconnectMs)
        : backoffDelay(this.attempt, this.opts.reconnectDelayMs, this.opts.maxReconnectDelayMs, this.random);
    this.attempt++;
    const url = this.nextUrl();
    this.emit('reconnecting', { attempt: this.attempt, delayMs, url });
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this._state === 'connecting') void this.open();
    }, delayMs);
  }

  private stop(reason: string, error: RoomcastError, emitError: boolean): void {
    if (this._state === 'closed') return;
    this._state = 'closed';
    clearTimeout(this.reconnectTimer);
    const ws = this.ws;
    if (ws) {
      this.generation++;
      try {
        ws.close(1000, 'normal');
      } catch {
        // already closing
      }
      this.socketClosed(1000, 'normal');
    }
    for (const pub of this.outbox.slice()) {
      this.finishPublish(pub);
      pub.reject(error);
    }
    for (const req of this.requests.slice()) {
      this.finishHistory(req);
      req.reject(error);
    }
    for (const req of this.presenceRequests.slice()) {
      this.finishPresence(req);
      req.reject(error);
    }
    if (emitError) {
      for (const sub of this.subs.values()) sub.failReady(error);
      this.emit('error', error);
    }
    this.emit('closed', { reason, error });
  }
}
