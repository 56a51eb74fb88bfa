import { randomFillSync } from "node:crypto";

const POOL_IDS = 256;
const pool = Buffer.allocUnsafe(16 * POOL_IDS);
let next = POOL_IDS;

/**
 * A fresh UUID4 rendered as 32 lowercase hex characters, the form NuroPb uses for ids.
 * Random bytes come from a pool refilled 4 KiB at a time (one `randomFillSync` per 256 ids).
 */
export function newId(): string {
  if (next === POOL_IDS) {
    randomFillSync(pool);
    next = 0;
  }
  const off = 16 * next++;
  pool[off + 6] = ((pool[off + 6] as number) & 0x0f) | 0x40; // version 4
  pool[off + 8] = ((pool[off + 8] as number) & 0x3f) | 0x80; // RFC 4122 variant
  return pool.toString("hex", off, off + 16);
}
