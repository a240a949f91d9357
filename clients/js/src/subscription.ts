import { RoomcastError } from './errors.js';
import type {
  Ack,
  HistoryOptions,
  HistoryResult,
  Json,
  LossReason,
  Message,
  Position,
  PresenceEntry,
  PresenceStats,
  ResetInfo,
  SubscribedInfo,
} from './types.js';
import { applyTextDelta } from './fossil.js';
import { Emitter } from './util.js';

/** Events of one subscription. */
export interface SubscriptionEvents<T> {
  /** A message, in `seq` order, never twice. */
  message: (message: Message<T>) => void;
  /** The server confirmed the (re)subscription. */
  subscribed: (info: SubscribedInfo) => void;
  /** Continuity was lost (new epoch, or messages gone from the replay buffer): re-fetch state. */
  reset: (info: ResetInfo) => void;
  /** The subscription failed for good (e.g. 107 forbidden), or a gap fill failed. */
  error: (error: RoomcastError) => void;
  /**
   * The subscription ended: `byServer` when the server removed it by itself (an operator
   * took the user out of the room, or their membership ended; do not subscribe again
   * by yourself), otherwise after `unsubscribe()`.
   */
  unsubscribed: (info: { room: string; byServer: boolean }) => void;
  /**
   * The room's presence set (with `presence` asked for): after every (re)subscribe,
   * and after every change.
   */
  presence: (entries: PresenceEntry[]) => void;
  /** Clients that joined the room (with `presence` asked for). */
  join: (entries: PresenceEntry[]) => void;
  /** Clients that left the room, or whose instance died (with `presence` asked for). */
  leave: (entries: PresenceEntry[]) => void;
}

/** Handlers given to `Client.subscribe`. */
export interface SubscriptionHandlers<T> {
  onMessage?: SubscriptionEvents<T>['message'];
  onSubscribed?: SubscriptionEvents<T>['subscribed'];
  onReset?: SubscriptionEvents<T>['reset'];
  onError?: SubscriptionEvents<T>['error'];
  onUnsubscribed?: SubscriptionEvents<T>['unsubscribed'];
  /** Resume from this position instead of starting at the room's top. */
  since?: Position;
  /**
   * Follow the room's presence (a room the server has presence for): `true`, or
   * `{ info }` to show `info` (at most 256 bytes of JSON by default) in the set.
   */
  presence?: boolean | { info?: Json };
  /**
   * `'fossil'`: the server sends each message as a Fossil delta against the previous one
   * where that is smaller; the SDK applies it, so `message` events carry whole values as
   * usual. A delta that cannot be applied makes the SDK subscribe again from its position.
   */
  delta?: 'fossil';
  /**
   * `'deflate'`: the server sends large message data (1 KiB and up by default) deflated;
   * the SDK inflates it with the runtime's `DecompressionStream`, so `message` events
   * carry whole values as usual. Data that cannot be inflated makes the SDK subscribe
   * again from its position.
   */
  compress?: 'deflate';
  onPresence?: SubscriptionEvents<T>['presence'];
  onJoin?: SubscriptionEvents<T>['join'];
  onLeave?: SubscriptionEvents<T>['leave'];
}

/** What a subscription needs from its client. @internal */
export interface SubscriptionHost {
  publish(room: string, data: unknown, options?: PublishOptions): Promise<Ack>;
  history(room: string, options?: HistoryOptions): Promise<HistoryResult>;
  presence(room: string): Promise<PresenceEntry[]>;
  presenceStats(room: string): Promise<PresenceStats>;
  gapFill(sub: Subscription<any>, since: Position, limit: number, attempt: number): void;
  detach(sub: Subscription<any>): Promise<void>;
  /** Unsubscribe and subscribe again from the subscription's position. */
  resubscribe(sub: Subscription<any>): void;
}

export interface PublishOptions {
  /** Idempotency key; the SDK generates a UUID when none is given. */
  idempotencyKey?: string;
  /** Give up (reject with `publish_timeout`) after this long; default: the client's. */
  timeoutMs?: number;
}

/** Subscription states: `pending` waits for a connection, `subscribing` for the reply. */
export type SubscriptionState = 'pending' | 'subscribing' | 'active' | 'closed';

/** Most messages kept beyond a gap while the gap is being filled. */
const MAX_BUFFERED = 10_000;

/**
 * One room the application follows. The SDK keeps its position across reconnects and
 * delivers every message once, in order.
 */
export class Subscription<T = unknown> extends Emitter<SubscriptionEvents<T>> {
  readonly room: string;
  /** @internal */ state: SubscriptionState = 'pending';
  private pos: Position | undefined;
  /** Messages received beyond a gap, by seq, waiting for the gap to be filled. */
  private buffered = new Map<number, Message<T>>();
  private filling = false;
  /** Fills in a row that brought nothing. */
  private fruitlessFills = 0;
  private confirmed = false;
  /** The first `subscribed`, held until the first presence snapshot (with `presence`). */
  private unconfirmed: SubscribedInfo | undefined;
  /** The presence set by connection; undefined until the first snapshot. */
  private members_: Map<string, PresenceEntry> | undefined;
  /** Whether presence events were asked for, and the `info` to send. @internal */
  readonly presenceRequest: { info?: Json } | undefined;
  /** The delta format asked for. @internal */
  readonly deltaRequest: 'fossil' | undefined;
  /** The compression asked for. @internal */
  readonly compressRequest: 'deflate' | undefined;
  /** With `delta`: the last message received and its JSON text, the base of the next delta. */
  private base: { epoch: string; seq: number; text: string } | undefined;
  private resolveReady!: (info: SubscribedInfo) => void;
  private rejectReady!: (err: RoomcastError) => void;
  /**
   * Settles on the first `subscribed` (or a definitive subscribe error); with
   * `presence` asked for, once the first presence snapshot arrived too.
   */
  readonly ready: Promise<SubscribedInfo>;

  /** @internal */
  constructor(
    private readonly host: SubscriptionHost,
    room: string,
    handlers: SubscriptionHandlers<T> = {},
  ) {
    super();
    this.room = room;
    this.pos = handlers.since ? { ...handlers.since } : undefined;
    if (handlers.onMessage) this.on('message', handlers.onMessage);
    if (handlers.onSubscribed) this.on('subscribed', handlers.onSubscribed);
    if (handlers.onReset) this.on('reset', handlers.onReset);
    if (handlers.onError) this.on('error', handlers.onError);
    if (handlers.onUnsubscribed) this.on('unsubscribed', handlers.onUnsubscribed);
    if (handlers.onPresence) this.on('presence', handlers.onPresence);
    if (handlers.onJoin) this.on('join', handlers.onJoin);
    if (handlers.onLeave) this.on('leave', handlers.onLeave);
    const p = handlers.presence;
    this.presenceRequest = p === true ? {} : p ? { ...p } : undefined;
    this.deltaRequest = handlers.delta;
    this.compressRequest = handlers.compress;
    this.ready = new Promise<SubscribedInfo>((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    // An application that only uses handlers must not see an unhandled rejection.
    this.ready.catch(() => {});
  }

  /** The last position delivered to the application (undefined before the first reply). */
  get position(): Position | undefined {
    return this.pos ? { ...this.pos } : undefined;
  }

  /** Whether the subscription is confirmed on the current connection. */
  get active(): boolean {
    return this.state === 'active';
  }

  get closed(): boolean {
    return this.state === 'closed';
  }

  /** Publishes to this room; resolves with the ack. Re-sent with the same key across reconnects. */
  publish(data: T, options?: PublishOptions): Promise<Ack> {
    return this.host.publish(this.room, data, options);
  }

  /** Reads the room's replay buffer. */
  history(options?: HistoryOptions): Promise<HistoryResult<T>> {
    return this.host.history(this.room, options) as Promise<HistoryResult<T>>;
  }

  /**
   * The room's presence set as last reported by the server (with `presence` asked for;
   * empty before the first snapshot), ordered by join time.
   */
  get members(): PresenceEntry[] {
    return sortEntries([...(this.members_?.values() ?? [])]);
  }

  /** Asks the server who is in the room now (no `presence` subscription needed). */
  presence(): Promise<PresenceEntry[]> {
    return this.host.presence(this.room);
  }

  /** Asks the server how many are in the room now. */
  presenceStats(): Promise<PresenceStats> {
    return this.host.presenceStats(this.room);
  }

  /** Stops the subscription; resolves when the server confirmed (or the connection is gone). */
  unsubscribe(): Promise<void> {
    if (this.state === 'closed') return Promise.resolve();
    return this.host.detach(this);
  }

  // ---- driven by the client ----

  /** The position to send with `subscribe`. @internal */
  resumeFrom(): Position | undefined {
    return this.pos ? { ...this.pos } : undefined;
  }

  /** The connection is gone: forget what belonged to it. @internal */
  connectionLost(): void {
    this.base = undefined;
    this.buffered.clear();
    this.filling = false;
    if (this.state !== 'closed') this.state = 'pending';
  }

  /** @internal */
  close(error?: RoomcastError): void {
    this.state = 'closed';
    this.buffered.clear();
    this.filling = false;
    if (error) {
      if (!this.confirmed) this.rejectReady(error);
      this.emit('error', error);
    }
  }

  /** `unsubscribe()` completed. @internal */
  unsubscribed(): void {
    this.emit('unsubscribed', { room: this.room, byServer: false });
  }

  /** The server ended the subscription by itself. @internal */
  removedByServer(): void {
    this.close();
    this.emit('unsubscribed', { room: this.room, byServer: true });
  }

  /** The client stopped before the first confirmation. @internal */
  failReady(error: RoomcastError): void {
    if (!this.confirmed) this.rejectReady(error);
  }

  /** Reply to our subscribe. @internal */
  handleSubscribed(frame: Record<string, any>, sentSince: Position | undefined): void {
    if (this.state === 'closed') return;
    this.state = 'active';
    this.base = undefined; // a new subscription: its first message comes whole
    const previous = this.pos ? { ...this.pos } : undefined;
    const recovered = frame.recovered === true;
    const replayed = Number(frame.replayed ?? 0);
    if (!(recovered && replayed > 0 && this.pos)) {
      // Position stays where it is while replayed messages arrive; otherwise it is the reply's.
      this.pos = { epoch: String(frame.epoch), seq: Number(frame.seq) };
    }
    const info: SubscribedInfo = {
      room: this.room,
      epoch: String(frame.epoch),
      seq: Number(frame.seq),
      recovered,
      replayed,
      resumed: sentSince !== undefined,
    };
    if (typeof frame.reason === 'string') info.reason = frame.reason as LossReason;
    this.emit('subscribed', info);
    if (sentSince !== undefined && !recovered) {
      this.emit('reset', {
        room: this.room,
        epoch: info.epoch,
        seq: info.seq,
        reason: info.reason ?? 'epoch_changed',
        previous,
        source: 'resume',
      });
    }
    if (!this.confirmed) {
      // With presence asked for, `ready` waits for the set too (the server sends it
      // right after `subscribed`): a join that happens after `ready` then always
      // arrives as a `join`, never hidden inside the first snapshot.
      if (this.presenceRequest && !this.members_) this.unconfirmed = info;
      else this.confirm(info);
    }
  }

  private confirm(info: SubscribedInfo): void {
    this.confirmed = true;
    this.unconfirmed = undefined;
    this.resolveReady(info);
  }

  /**
   * A `presence` snapshot (after each subscribe). After a reconnect, what differs from
   * the set held before is reported as joins and leaves too. @internal
   */
  handlePresence(frame: Record<string, any>): void {
    if (this.state === 'closed' || !this.presenceRequest) return;
    const next = new Map<string, PresenceEntry>();
    for (const entry of (frame.clients ?? []) as PresenceEntry[]) next.set(entry.conn, entry);
    const before = this.members_;
    this.members_ = next;
    if (before) {
      const leaves = [...before.values()].filter((e) => !next.has(e.conn));
      const joins = [...next.values()].filter((e) => !before.has(e.conn));
      if (leaves.length) this.emit('leave', sortEntries(leaves));
      if (joins.length) this.emit('join', sortEntries(joins));
    }
    this.emit('presence', this.members);
    if (this.unconfirmed) this.confirm(this.unconfirmed);
  }

  /** A `presence_diff` frame: joins and leaves since the last presence frame. @internal */
  handlePresenceDiff(frame: Record<string, any>): void {
    if (this.state === 'closed' || !this.members_) return;
    const leaves = (frame.leaves ?? []) as PresenceEntry[];
    const joins = (frame.joins ?? []) as PresenceEntry[];
    for (const entry of leaves) this.members_.delete(entry.conn);
    for (const entry of joins) this.members_.set(entry.conn, entry);
    if (leaves.length) this.emit('leave', leaves);
    if (joins.length) this.emit('join', joins);
    this.emit('presence', this.members);
  }

  /** A `reset` frame. @internal */
  handleReset(frame: Record<string, any>): void {
    if (this.state !== 'active') return;
    const previous = this.pos ? { ...this.pos } : undefined;
    this.pos = { epoch: String(frame.epoch), seq: Number(frame.seq) };
    this.base = undefined; // the next message comes whole
    // What was buffered beyond a gap belongs to the stream before the reset.
    this.buffered.clear();
    this.filling = false;
    this.emit('reset', {
      room: this.room,
      epoch: this.pos.epoch,
      seq: this.pos.seq,
      reason: (frame.reason as LossReason) ?? 'epoch_changed',
      previous,
      source: 'reset',
    });
  }

  /** A `message` frame. @internal */
  handleMessage(frame: Record<string, any>): void {
    if (this.state !== 'active') return;
    const message: Message<T> = {
      room: this.room,
      epoch: String(frame.epoch),
      seq: Number(frame.seq),
      time: Number(frame.time),
      data: frame.data as T,
    };
    if (frame.inflateError !== undefined) return this.undecodable(message, String(frame.inflateError));
    if (frame.delta !== undefined) {
      const data = this.undelta(message, frame.data, frame.delta === true);
      if (data === undefined) return;
      message.data = data;
    } else if (frame.inflated === true) {
      // The inflated data of a subscription without `delta` is the value's JSON text.
      try {
        message.data = JSON.parse(frame.data as string) as T;
      } catch (err) {
        return this.undecodable(message, (err as Error).message);
      }
    }
    if (!this.pos) {
      this.pos = { epoch: message.epoch, seq: message.seq - 1 };
    } else if (message.epoch !== this.pos.epoch) {
      // A new epoch without a `reset` first: continuity is lost, say so, and take the new
      // epoch from its beginning (filling from history whatever came before this message).
      const previous = { ...this.pos };
      this.pos = { epoch: message.epoch, seq: 0 };
      this.buffered.clear();
      this.filling = false;
      this.emit('reset', { room: this.room, epoch: message.epoch, seq: 0, reason: 'epoch_changed', previous, source: 'gap' });
    }
    this.accept(message);
  }

  /**
   * The value of a message on a subscription with `delta`: its data is JSON text, whole
   * or a delta against the text of the message just before it. When that cannot be
   * applied (no such base, a wrong checksum), the subscription starts again from its
   * position instead of delivering anything wrong.
   */
  private undelta(message: Message<T>, data: unknown, isDelta: boolean): T | undefined {
    try {
      if (typeof data !== 'string') throw new Error('message data is not text');
      let text = data;
      if (isDelta) {
        const base = this.base;
        if (!base || base.epoch !== message.epoch || base.seq + 1 !== message.seq) throw new Error('no base message for the delta');
        text = applyTextDelta(base.text, data);
      }
      const value = JSON.parse(text) as T;
      this.base = { epoch: message.epoch, seq: message.seq, text };
      return value;
    } catch (err) {
      this.undecodable(message, (err as Error).message);
      return undefined;
    }
  }

  /**
   * A message that cannot be turned into a value (a delta without its base, data that
   * does not inflate): subscribe again from the position instead of delivering anything
   * wrong.
   */
  private undecodable(message: Message<T>, reason: string): void {
    this.base = undefined;
    this.emit('error', new RoomcastError('bad_frame', `cannot decode ${this.room} seq ${message.seq}: ${reason}; subscribing again`));
    this.host.resubscribe(this);
  }

  private accept(message: Message<T>): void {
    const pos = this.pos!;
    if (message.seq <= pos.seq) return; // already delivered
    if (message.seq === pos.seq + 1) {
      this.deliver(message);
      this.drain();
      return;
    }
    // A gap: keep the message and fetch what is missing rather than skipping ahead.
    if (this.buffered.size < MAX_BUFFERED) this.buffered.set(message.seq, message);
    this.requestFill();
  }

  private deliver(message: Message<T>): void {
    this.pos = { epoch: message.epoch, seq: message.seq };
    this.emit('message', message);
  }

  private drain(): void {
    let next: Message<T> | undefined;
    while (this.pos && (next = this.buffered.get(this.pos.seq + 1))) {
      this.buffered.delete(next.seq);
      if (this.state !== 'active') return;
      this.deliver(next);
    }
    // Anything at or below the position is stale.
    for (const seq of this.buffered.keys()) if (this.pos && seq <= this.pos.seq) this.buffered.delete(seq);
  }

  private requestFill(): void {
    if (this.filling || this.buffered.size === 0 || !this.pos) return;
    const first = Math.min(...this.buffered.keys());
    this.filling = true;
    this.host.gapFill(this, { ...this.pos }, first - this.pos.seq - 1, this.fruitlessFills);
  }

  /** The reply to a gap fill (or null when it failed). @internal */
  handleGapFill(since: Position, reply: HistoryResult<T> | null, error?: RoomcastError): void {
    if (this.state !== 'active' || !this.pos || this.pos.epoch !== since.epoch || this.pos.seq !== since.seq) {
      // Superseded by a reset, a reconnect or messages that arrived meanwhile.
      this.filling = false;
      if (this.state === 'active') this.requestFill();
      return;
    }
    this.filling = false;
    if (reply && reply.recovered === true && reply.epoch === this.pos.epoch) {
      for (const m of reply.messages) {
        if (m.seq === this.pos.seq + 1) this.deliver({ ...m, room: this.room, epoch: reply.epoch });
      }
      this.drain();
      if (this.pos.seq === since.seq) {
        // Nothing new (the instance's buffer lags the live stream): ask again, a few times.
        if (++this.fruitlessFills >= 3) {
          this.fruitlessFills = 0;
          this.skipToBuffered('too_far_behind');
          return;
        }
      } else {
        this.fruitlessFills = 0;
      }
      this.requestFill();
      return;
    }
    if (error) this.emit('error', error);
    this.fruitlessFills = 0;
    this.skipToBuffered(reply && reply.epoch !== since.epoch ? 'epoch_changed' : 'too_far_behind');
  }

  /** The gap cannot be filled: announce the loss and continue from what was received. */
  private skipToBuffered(reason: LossReason): void {
    if (this.buffered.size === 0 || !this.pos) return;
    const first = Math.min(...this.buffered.keys());
    const previous = { ...this.pos };
    this.pos = { epoch: this.pos.epoch, seq: first - 1 };
    this.emit('reset', { room: this.room, epoch: this.pos.epoch, seq: this.pos.seq, reason, previous, source: 'gap' });
    this.drain();
  }
}

/** Entries by join time, then connection (the order the server uses). */
function sortEntries(entries: PresenceEntry[]): PresenceEntry[] {
  return entries.sort((a, b) => a.joined - b.joined || (a.conn < b.conn ? -1 : a.conn > b.conn ? 1 : 0));
}
