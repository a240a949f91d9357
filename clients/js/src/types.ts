/** Wire types of the roomcast.v1 protocol and the values the SDK hands to applications. */

/** Any value of the JSON data model (what a room message may carry). */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** The last (epoch, seq) seen in a room. Epochs are compared for equality only. */
export interface Position {
  epoch: string;
  seq: number;
}

/** Limits announced by the server in `welcome`. */
export interface Limits {
  max_frame_bytes: number;
  max_rooms: number;
  max_history: number;
  heartbeat_ms: number;
  publish_requires_subscription: boolean;
}

/** The first frame of every connection. */
export interface Welcome {
  type: 'welcome';
  protocol: string;
  /** Id of the server instance. */
  server: string;
  /** Id of this connection. */
  session: string;
  limits: Limits;
  features?: string[];
  /** When the connection's token expires (seconds since the Unix epoch). */
  expires_at?: number;
}

/** One message of a room, delivered in `seq` order, exactly once. */
export interface Message<T = unknown> {
  room: string;
  epoch: string;
  seq: number;
  /** Publish time, ms since the Unix epoch (informational). */
  time: number;
  data: T;
}

/** The server's acknowledgement of a publish: the message is sequenced and stored. */
export interface Ack {
  room: string;
  epoch: string;
  seq: number;
  time: number;
  /** True when an earlier attempt with the same idempotency key had been published. */
  duplicate: boolean;
}

/** Why a position could not be honoured, or why continuity was lost. */
export type LossReason = 'epoch_changed' | 'too_far_behind' | 'ahead_of_stream';

/** Reported each time the server confirms a (re)subscription. */
export interface SubscribedInfo {
  room: string;
  epoch: string;
  /** The position the replay brings the room to. */
  seq: number;
  /** True when the position sent was honoured exactly. */
  recovered: boolean;
  /** Replayed messages that follow (they arrive as ordinary messages). */
  replayed: number;
  /** Why the position sent could not be honoured (only when one was sent). */
  reason?: LossReason;
  /** True when a position was sent (a resume), false for a fresh subscribe. */
  resumed: boolean;
}

/**
 * Continuity was lost: some messages of the room will never be delivered. The
 * application must re-fetch the state the room describes, then apply messages after
 * `seq` as usual.
 */
export interface ResetInfo {
  room: string;
  /** The epoch from now on. */
  epoch: string;
  /** Delivery continues after this sequence number. */
  seq: number;
  reason: LossReason;
  /** The position the SDK had before the loss. */
  previous?: Position;
  /**
   * `reset`: the server announced it on a live subscription; `resume`: a resume after a
   * reconnect was answered `recovered: false`; `gap`: a gap seen by the SDK could not be
   * filled from history.
   */
  source: 'reset' | 'resume' | 'gap';
}

/** Reply to a history request. */
export interface HistoryResult<T = unknown> {
  room: string;
  epoch: string;
  /** The room's current top sequence number. */
  seq: number;
  /** Only when `since` was given: whether `messages` continue exactly from it. */
  recovered?: boolean;
  messages: Message<T>[];
}

/** The `since`/`limit` of a history request. */
export interface HistoryOptions {
  since?: Position;
  limit?: number;
}

/** One client in a room's presence set. */
export interface PresenceEntry {
  /** The user: the token's `sub`, `service:{name}`, or `anonymous:{conn}`. */
  user: string;
  /** The connection (its session id). */
  conn: string;
  /** The server instance serving it. */
  node: string;
  /** When it joined, ms since the Unix epoch. */
  joined: number;
  /** What the client attached at subscribe, if anything. */
  info?: Json;
}

/** Counts of a room's presence set. */
export interface PresenceStats {
  room: string;
  /** Entries (connections). */
  clients: number;
  /** Distinct users among them. */
  users: number;
}

/** Minimal shape of a WebSocket as the SDK uses it (browsers' and Node's both fit). */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  binaryType: string;
  onopen: ((ev: any) => void) | null;
  // Event parameters are `any` so that the DOM's, undici's and the `ws` package's
  // WebSocket classes all fit; the SDK reads `data` of messages and `code`/`reason` of closes.
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string | ArrayBufferView | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor (`globalThis.WebSocket` by default). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;
