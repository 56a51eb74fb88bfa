import { Buffer } from "node:buffer";

// Small message bodies live in views of shared slabs, as Node's own Buffer pool does: a
// Uint8Array with an ArrayBuffer of its own costs about 600 ns, several times the copy or the
// UTF-8 encoding of a body of a few hundred bytes. Views never overlap and a slab is never
// written again where a view lies; like any pooled Buffer, a view's `buffer` must not be
// transferred or detached (readers honour `byteOffset` and `byteLength`).

const SLAB_BYTES = 16 * 1024;
/** Largest view made in a slab; larger bodies get an ArrayBuffer of their own. */
const MAX_IN_SLAB = SLAB_BYTES >>> 2;
let slab: Buffer | undefined;
/** The slab's ArrayBuffer and offset, read once per slab: the getters cost ~15 ns a view. */
let slabBuffer: ArrayBufferLike = new ArrayBuffer(0);
let slabOffset = 0;
let slabUsed = 0;
const utf8Encoder = new TextEncoder();

/** The slab, with at least `bytes` free from `slabUsed` on (a fresh one when it has not). */
function slabWithRoom(bytes: number): Buffer {
  if (slab === undefined || bytes > SLAB_BYTES - slabUsed) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    slabBuffer = slab.buffer;
    slabOffset = slab.byteOffset;
    slabUsed = 0;
  }
  return slab;
}

/** Hands out the next `bytes` of the slab (written already) as a plain Uint8Array view. */
function take(bytes: number): Uint8Array {
  const view = new Uint8Array(slabBuffer, slabOffset + slabUsed, bytes);
  slabUsed = (slabUsed + bytes + 7) & ~7; // 8-byte aligned, as Node's pool
  return view;
}

/**
 * A copy of `bytes` that nothing else writes to: up to 4 KB a view into a shared slab (see
 * above), larger an array of its own.
 */
export function copyBytes(bytes: Uint8Array): Uint8Array {
  const n = bytes.byteLength;
  if (n > MAX_IN_SLAB) return new Uint8Array(bytes);
  const s = slabWithRoom(n);
  s.set(bytes, slabUsed);
  return take(n);
}

/** UTF-8 bytes of `text`: up to 4 KB a view into a shared slab (see above). */
export function utf8Bytes(text: string): Uint8Array {
  const max = text.length * 3; // UTF-8 needs at most 3 bytes per UTF-16 code unit
  if (max > MAX_IN_SLAB) return utf8Encoder.encode(text);
  const s = slabWithRoom(max);
  return take(s.write(text, slabUsed, max, "utf8"));
}
