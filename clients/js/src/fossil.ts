/**
 * Applying Fossil deltas (the format of Fossil SCM's `delta.c`, which roomcast sends on
 * subscriptions with `delta: 'fossil'`): `size "\n"`, then copies `count "@" offset ","`
 * and inserts `count ":" bytes`, then `checksum ";"`; numbers in the base-64 alphabet
 * `0-9 A-Z _ a-z ~`. Every bound is checked: a malformed delta throws, never reads
 * outside its input, and never makes more than `limit` bytes.
 * @internal
 */

const VALUES = new Int8Array(128).fill(-1);
'0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~'
  .split('')
  .forEach((c, i) => (VALUES[c.charCodeAt(0)] = i));

/** Most bytes a delta may make (a bound against a delta that expands without end). */
export const MAX_DELTA_OUTPUT = 64 * 1024 * 1024;

/** Applies `delta` to `source`; throws an Error saying why when it cannot. */
export function applyDelta(source: Uint8Array, delta: Uint8Array, limit = MAX_DELTA_OUTPUT): Uint8Array {
  let at = 0;
  const int = (): number => {
    let value = 0;
    const start = at;
    while (at < delta.length && delta[at]! < 128 && VALUES[delta[at]!]! >= 0) {
      if (at - start >= 8) throw new Error('malformed delta: number too large');
      value = value * 64 + VALUES[delta[at]!]!;
      at++;
    }
    if (at === start) throw new Error('malformed delta: number expected');
    return value;
  };
  const size = int();
  if (size > limit) throw new Error(`delta output of ${size} bytes exceeds the limit of ${limit}`);
  if (delta[at++] !== 0x0a) throw new Error('malformed delta: no newline after the size');
  const out = new Uint8Array(size);
  let total = 0;
  while (at < delta.length) {
    const count = int();
    const op = delta[at++];
    if (op === 0x40 /* @ */) {
      const offset = int();
      if (delta[at++] !== 0x2c /* , */) throw new Error("malformed delta: copy not terminated by ','");
      if (offset + count > source.length) throw new Error('malformed delta: copy extends past the end of the source');
      if (total + count > size) throw new Error('malformed delta: copy exceeds the announced size');
      out.set(source.subarray(offset, offset + count), total);
      total += count;
    } else if (op === 0x3a /* : */) {
      if (total + count > size) throw new Error('malformed delta: insert exceeds the announced size');
      if (at + count > delta.length) throw new Error('malformed delta: insert longer than the delta');
      out.set(delta.subarray(at, at + count), total);
      total += count;
      at += count;
    } else if (op === 0x3b /* ; */) {
      if (count !== checksum(out.subarray(0, total))) throw new Error('delta checksum mismatch: made against another source');
      if (total !== size) throw new Error('malformed delta: output differs from the announced size');
      return out;
    } else {
      throw new Error('malformed delta: unknown command');
    }
  }
  throw new Error('malformed delta: unterminated');
}

/** Wrapping sum of big-endian 32-bit words, the last padded with zeros. */
function checksum(bytes: Uint8Array): number {
  let sum = 0;
  let i = 0;
  for (; i + 4 <= bytes.length; i += 4) {
    sum = (sum + ((bytes[i]! << 24) | (bytes[i + 1]! << 16) | (bytes[i + 2]! << 8) | bytes[i + 3]!)) >>> 0;
  }
  let last = 0;
  for (let shift = 24; i < bytes.length; i++, shift -= 8) last |= bytes[i]! << shift;
  return (sum + (last >>> 0)) >>> 0;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** Applies a delta between two JSON texts (as they travel in frames). */
export function applyTextDelta(base: string, delta: string): string {
  return decoder.decode(applyDelta(encoder.encode(base), encoder.encode(delta)));
}
