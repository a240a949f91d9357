import { decode, encode } from '@msgpack/msgpack';

export type Encoding = 'json' | 'msgpack';

export const SUBPROTOCOL: Record<Encoding, string> = {
  json: 'roomcast.v1.json',
  msgpack: 'roomcast.v1.msgpack',
};

/** Prefix of the subprotocol that carries a token in the upgrade request. */
export const TOKEN_SUBPROTOCOL_PREFIX = 'roomcast.token.';

/** Characters a subprotocol may contain (an RFC 7230 token). */
const TOKEN_CHARS = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Whether `token` can travel inside the `Sec-WebSocket-Protocol` header. */
export function fitsSubprotocol(token: string): boolean {
  return TOKEN_CHARS.test(token);
}

export function encodeFrame(encoding: Encoding, frame: object): string | Uint8Array {
  return encoding === 'json' ? JSON.stringify(frame) : encode(frame);
}

/** Decodes a received frame; null when it is not a map with a string `type`. */
export function decodeFrame(data: unknown): Record<string, any> | null {
  let value: unknown;
  if (typeof data === 'string') {
    value = JSON.parse(data);
  } else if (data instanceof ArrayBuffer) {
    value = decode(new Uint8Array(data));
  } else if (ArrayBuffer.isView(data)) {
    value = decode(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  } else {
    return null;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  const frame = value as Record<string, any>;
  return typeof frame.type === 'string' ? frame : null;
}

/** Encoded size in bytes (UTF-8 for text frames). */
export function byteSize(frame: string | Uint8Array): number {
  if (typeof frame !== 'string') return frame.byteLength;
  // Every UTF-16 unit is at most 3 UTF-8 bytes: skip the count when that fits anyway.
  return frame.length * 3 <= 256 ? frame.length * 3 : new TextEncoder().encode(frame).length;
}

/**
 * Exponential backoff with full jitter: a uniformly random delay in
 * [0, min(maxMs, initialMs * 2^attempt)).
 */
export function backoffDelay(attempt: number, initialMs: number, maxMs: number, random: () => number): number {
  const ceiling = Math.min(maxMs, initialMs * Math.pow(2, Math.min(attempt, 30)));
  return Math.floor(random() * ceiling);
}

/** A random version-4 UUID; works outside secure contexts, where randomUUID is absent. */
export function randomKey(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') {
    c.getRandomValues(bytes);
  } else {
    for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  }
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A tiny typed event emitter. */
export class Emitter<Events extends { [K in keyof Events]: (...args: any[]) => void }> {
  private listeners = new Map<keyof Events, Set<Function>>();

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(event: K, listener: Events[K]): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => this.off(event, listener);
  }

  off<K extends keyof Events>(event: K, listener: Events[K]): void {
    this.listeners.get(event)?.delete(listener);
  }

  protected emit<K extends keyof Events>(event: K, ...args: Parameters<Events[K]>): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of Array.from(set)) {
      try {
        listener(...args);
      } catch (err) {
        // A throwing listener must not break the protocol state machine.
        setTimeout(() => {
          throw err;
        }, 0);
      }
    }
  }
}
