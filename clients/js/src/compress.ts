/**
 * Inflating compressed message data (subscriptions with `compress: 'deflate'`): `data`
 * is the standard base64 (with padding) of raw DEFLATE (RFC 1951), which the runtime's
 * own `DecompressionStream('deflate-raw')` inflates — no inflater ships in the SDK.
 */

/** Most bytes one message's data may inflate to (a bound against a decompression bomb). */
export const MAX_INFLATED = 64 * 1024 * 1024;

/** Whether this runtime can inflate (browsers and Node 18+ can). */
export function canInflate(): boolean {
  return typeof (globalThis as any).DecompressionStream === 'function' && typeof Blob === 'function';
}

/** The text of a compressed `data`; rejects, saying why, when it cannot be inflated. */
export async function inflateText(packed: unknown, limit = MAX_INFLATED): Promise<string> {
  if (typeof packed !== 'string') throw new Error('compressed data is not text');
  let binary: string;
  try {
    binary = atob(packed);
  } catch {
    throw new Error('compressed data is not base64');
  }
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  const Ctor = (globalThis as any).DecompressionStream;
  if (typeof Ctor !== 'function') throw new Error('this runtime has no DecompressionStream');
  const reader = (new Blob([bytes]).stream().pipeThrough(new Ctor('deflate-raw')) as ReadableStream<Uint8Array>).getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > limit) {
        void reader.cancel();
        throw new Error(`compressed data inflates to more than ${limit} bytes`);
      }
      chunks.push(value);
    }
  } catch (err) {
    if ((err as Error).message.startsWith('compressed data')) throw err;
    throw new Error(`compressed data is not valid DEFLATE: ${(err as Error).message}`);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return new TextDecoder('utf-8', { fatal: true }).decode(out);
}
