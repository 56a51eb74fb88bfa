import { randomFillSync } from "node:crypto";

// Nonces and IVs are drawn from a pool refilled in one call: a randomFillSync per message costs
// more than the secretbox of a small body. Bytes are handed out once and never reused.
const POOL_BYTES = 4096;
const pool = Buffer.allocUnsafe(POOL_BYTES);
let used = POOL_BYTES;
/** Up to this many bytes are handed out in a loop (see fillRandom). */
const SMALL_BYTES = 32;

/** Writes `length` (at most 4096) cryptographically random bytes into `target` at `offset`. */
export function fillRandom(target: Uint8Array, offset: number, length: number): void {
  if (!Number.isSafeInteger(length) || length < 0 || length > POOL_BYTES) {
    throw new RangeError(
      `fillRandom: length must be 0-${String(POOL_BYTES)}, got ${String(length)}`,
    );
  }
  if (used + length > POOL_BYTES) {
    randomFillSync(pool);
    used = 0;
  }
  if (!(offset >= 0 && offset + length <= target.length)) {
    throw new RangeError(
      `fillRandom: ${String(length)} bytes at ${String(offset)} overrun the target`,
    );
  }
  if (length <= SMALL_BYTES) {
    // A nonce or an IV: copied and wiped byte by byte, cheaper than a view and two native calls.
    for (let i = 0; i < length; i++) {
      target[offset + i] = pool[used + i] as number;
      pool[used + i] = 0;
    }
  } else {
    target.set(pool.subarray(used, used + length), offset);
    pool.fill(0, used, used + length);
  }
  used += length;
}

/** `length` fresh random bytes (at most 4096). */
export function randomPooled(length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  fillRandom(out, 0, length);
  return out;
}
