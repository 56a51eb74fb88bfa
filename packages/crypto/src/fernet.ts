import { decodeBase64Strict, encodeBase64UrlPadded, toBuffer } from "./base64.ts";
import { DecryptFailure, cryptoError } from "./failure.ts";
import { KERNELS, type FernetOpenFailure } from "./kernels.ts";
import { randomPooled } from "./random.ts";

const VERSION = 0x80;
const HEADER_BYTES = 1 + 8 + 16; // version, timestamp, IV
const MAC_BYTES = 32;
const BLOCK_BYTES = 16;
/** Allowed clock skew for tokens dated in the future, in seconds (Fernet spec). */
const MAX_CLOCK_SKEW_SEC = 60;
const SUITE = "fernet";

/** Options of {@link Fernet.encrypt}. */
export interface FernetEncryptOptions {
  /**
   * The token's time: a `Date` or milliseconds since the Unix epoch (stored in whole seconds).
   * @defaultValue `Date.now()`
   */
  readonly now?: Date | number;
  /** The 16-byte IV. Only for reproducible test vectors. @defaultValue 16 random bytes */
  readonly iv?: Uint8Array;
}

/** Options of {@link Fernet.decrypt}. */
export interface FernetDecryptOptions {
  /**
   * Maximum token age in seconds. When given, older tokens and tokens dated more than 60 s in
   * the future are refused. @defaultValue none: the timestamp is not checked (as NuroPb Python)
   */
  readonly ttlSec?: number;
  /** The current time, as a `Date` or milliseconds since the Unix epoch. @defaultValue `Date.now()` */
  readonly now?: Date | number;
  /**
   * With `ttlSec`: how far in the future a token may be dated, in seconds.
   * @defaultValue 60 (the Fernet spec)
   */
  readonly clockSkewSec?: number;
}

/** A Fernet key ready to encrypt and decrypt tokens (https://github.com/fernet/spec). */
export interface Fernet {
  /**
   * Encrypts `plain` (bytes, or a string taken as UTF-8) into a Fernet token: URL-safe base64
   * with padding, beginning `gAAAAA`.
   * @throws TypeError when `now` is not a valid `Date` or a finite number, or the IV is not 16 bytes.
   */
  encrypt(plain: Uint8Array | string, options?: FernetEncryptOptions): string;
  /**
   * Decrypts a token given as text or as its ASCII bytes.
   * @throws NuropbMessageError with `details.reason` `malformed` (not base64, too short, bad
   *   length), `unsupported` (unknown version byte), `tampered` (MAC or padding), `expired`
   *   (older than `ttlSec`, or too far in the future).
   * @throws TypeError when `token` is not a string or Uint8Array, or an option is invalid:
   *   `ttlSec` (a number >= 0) and `clockSkewSec` (a finite number >= 0) and `now` (a valid
   *   `Date` or a finite number).
   */
  decrypt(token: string | Uint8Array, options?: FernetDecryptOptions): Buffer;
}

/** A new random Fernet key: 32 bytes as 44 characters of URL-safe base64 with padding. */
export function generateFernetKey(): string {
  return encodeBase64UrlPadded(randomPooled(32));
}

/**
 * A {@link Fernet} for `key`, given as its 44-character URL-safe base64 text or as 32 raw bytes.
 * The first 16 bytes sign (HMAC-SHA256), the last 16 encrypt (AES-128-CBC).
 * @throws TypeError when the key is not 32 bytes of URL-safe base64.
 * @example
 * ```ts
 * const f = createFernet(generateFernetKey());
 * const token = f.encrypt("hello");
 * f.decrypt(token).toString(); // "hello"
 * ```
 */
export function createFernet(key: string | Uint8Array): Fernet {
  const raw = typeof key === "string" ? decodeBase64Strict(key, true) : toBuffer(key);
  if (raw === null || raw.length !== 32) {
    throw new TypeError(
      typeof key === "string"
        ? `Fernet key must be 32 bytes as 44 characters of URL-safe base64 with padding (got ${key.length} characters${raw === null ? " that are not canonical URL-safe base64" : ` decoding to ${raw.length} bytes`})`
        : `Fernet key must be 32 bytes (got ${raw?.length ?? 0})`,
    );
  }
  return new FernetKey(Buffer.from(raw));
}

/** `now` in milliseconds since the epoch; TypeError unless a valid `Date` or a finite number. */
function toMs(now: Date | number | undefined, where: string): number {
  if (now === undefined) return Date.now();
  const ms = typeof now === "number" ? now : now instanceof Date ? now.getTime() : NaN;
  if (!Number.isFinite(ms)) {
    throw new TypeError(
      `${where}: now must be a valid Date or a finite number of milliseconds (got ${describe(now)})`,
    );
  }
  return ms;
}

/**
 * `value` as seconds, or `undefined` when absent; TypeError unless a number >= 0. Finite only,
 * except `ttlSec` may be `Infinity` (no age limit): `openRequest` accepts `maxAgeMs: Infinity`
 * and passes it on here divided by 1000.
 */
function seconds(
  name: string,
  value: number | undefined,
  allowInfinity: boolean,
): number | undefined {
  if (value === undefined) return undefined;
  if (
    typeof value !== "number" ||
    Number.isNaN(value) ||
    value < 0 ||
    (!allowInfinity && value === Infinity)
  ) {
    throw new TypeError(
      `Fernet.decrypt: ${name} must be a ${allowInfinity ? "" : "finite "}number >= 0 (got ${describe(value)})`,
    );
  }
  return value;
}

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (value instanceof Date) return "an invalid Date";
  return value === null ? "null" : typeof value === "object" ? "an object" : String(value);
}

class FernetKey implements Fernet {
  /** Signing key (16 bytes) ‖ encryption key (16 bytes), as the Fernet spec lays them out. */
  readonly #key: Buffer;

  constructor(key: Buffer) {
    this.#key = key;
  }

  /** The raw 32-byte key of a Fernet made by {@link createFernet} (cipher threads need it). */
  static keyOf(fernet: Fernet): Buffer | undefined {
    return fernet instanceof FernetKey ? fernet.#key : undefined;
  }

  encrypt(plain: Uint8Array | string, options: FernetEncryptOptions = {}): string {
    const { token, data } = fernetTokenFrame(plain, options);
    KERNELS.fernetSeal(token, data, this.#key);
    return encodeBase64UrlPadded(token);
  }

  decrypt(token: string | Uint8Array, options: FernetDecryptOptions = {}): Buffer {
    const checked = checkFernetToken(token, options);
    return finishFernetOpen(KERNELS.fernetOpen(checked.data, this.#key), checked);
  }
}

/** The raw 32-byte key of `fernet` (made by {@link createFernet}). */
export function fernetKeyBytes(fernet: Fernet): Buffer {
  const key = FernetKey.keyOf(fernet);
  if (key === undefined) throw new TypeError("not a Fernet made by createFernet");
  return key;
}

/**
 * A token's bytes before sealing: version ‖ timestamp ‖ IV written, room for the ciphertext of
 * `data` (the plaintext as bytes) and the MAC. `kernels.fernetSeal(token, data, key)` completes it.
 */
export function fernetTokenFrame(
  plain: Uint8Array | string,
  options: FernetEncryptOptions = {},
): { token: Buffer; data: Buffer } {
  const data = typeof plain === "string" ? Buffer.from(plain, "utf8") : toBuffer(plain);
  const iv = options.iv === undefined ? randomPooled(16) : toBuffer(options.iv);
  if (iv.length !== 16) throw new TypeError(`Fernet IV must be 16 bytes (got ${iv.length})`);
  const timestamp = Math.floor(toMs(options.now, "Fernet.encrypt") / 1000);
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw new TypeError(`Fernet timestamp out of range: ${timestamp}`);
  }
  const ctLength = (Math.floor(data.length / BLOCK_BYTES) + 1) * BLOCK_BYTES;
  // Every byte is written: the header here, ciphertext and MAC by the kernel (pooled, unzeroed).
  const token = Buffer.allocUnsafe(HEADER_BYTES + ctLength + MAC_BYTES);
  token[0] = VERSION;
  token.writeUInt32BE(Math.floor(timestamp / 2 ** 32), 1);
  token.writeUInt32BE(timestamp >>> 0, 5);
  iv.copy(token, 9);
  return { token, data };
}

/** A token that passed the checks made before its MAC, with the decrypt options read. */
export interface CheckedFernetToken {
  /** The raw token bytes (base64 decoded). */
  readonly data: Buffer;
  readonly ttlSec: number | undefined;
  readonly skew: number;
  readonly nowMs: number | undefined;
}

/**
 * Checks the options, then the token's text and shape (everything before the MAC).
 * @throws as {@link Fernet.decrypt} does for those checks.
 */
export function checkFernetToken(
  token: string | Uint8Array,
  options: FernetDecryptOptions = {},
): CheckedFernetToken {
  if (typeof token !== "string" && !(token instanceof Uint8Array)) {
    throw new TypeError(
      `Fernet.decrypt: token must be a string or a Uint8Array (got ${describe(token)})`,
    );
  }
  // Options are checked before the token, so a bad one fails the same way for every token.
  const ttlSec = seconds("ttlSec", options.ttlSec, true);
  const skew = seconds("clockSkewSec", options.clockSkewSec, false) ?? MAX_CLOCK_SKEW_SEC;
  const nowMs = options.now === undefined ? undefined : toMs(options.now, "Fernet.decrypt");
  const text = typeof token === "string" ? token : toBuffer(token).toString("latin1");
  const data = decodeBase64Strict(text, true);
  if (data === null) {
    throw cryptoError(DecryptFailure.malformed, "Fernet token is not URL-safe base64", SUITE);
  }
  if (data.length < HEADER_BYTES + BLOCK_BYTES + MAC_BYTES) {
    throw cryptoError(
      DecryptFailure.malformed,
      `Fernet token too short (${data.length} bytes)`,
      SUITE,
    );
  }
  if (data[0] !== VERSION) {
    throw cryptoError(
      DecryptFailure.unsupported,
      `Unknown Fernet version byte 0x${(data[0] ?? 0).toString(16)}`,
      SUITE,
    );
  }
  if ((data.length - MAC_BYTES - HEADER_BYTES) % BLOCK_BYTES !== 0) {
    throw cryptoError(
      DecryptFailure.malformed,
      "Fernet ciphertext is not a multiple of the block size",
      SUITE,
    );
  }
  return { data, ttlSec, skew, nowMs };
}

/**
 * The plaintext, or the error for what `kernels.fernetOpen` found, in the spec's order: MAC,
 * then age (the timestamp is trusted only once the MAC holds), then padding.
 */
export function finishFernetOpen(
  opened: Uint8Array | FernetOpenFailure,
  checked: CheckedFernetToken,
): Buffer {
  if (opened === "mac") {
    throw cryptoError(
      DecryptFailure.tampered,
      "Fernet token failed authentication (tampered, or encrypted with another key)",
      SUITE,
    );
  }
  const { data, ttlSec, skew, nowMs } = checked;
  if (ttlSec !== undefined) {
    const timestamp = data.readUInt32BE(1) * 2 ** 32 + data.readUInt32BE(5);
    const nowSec = Math.floor((nowMs ?? Date.now()) / 1000);
    if (timestamp + ttlSec < nowSec) {
      throw cryptoError(
        DecryptFailure.expired,
        `Fernet token expired: ${nowSec - timestamp} s old, ttl ${ttlSec} s`,
        SUITE,
      );
    }
    if (nowSec + skew < timestamp) {
      throw cryptoError(
        DecryptFailure.expired,
        `Fernet token dated ${timestamp - nowSec} s in the future (clock skew over ${skew} s)`,
        SUITE,
      );
    }
  }
  if (opened === "padding") {
    throw cryptoError(
      DecryptFailure.tampered,
      "Fernet token has invalid padding after a valid MAC",
      SUITE,
    );
  }
  return toBuffer(opened);
}
