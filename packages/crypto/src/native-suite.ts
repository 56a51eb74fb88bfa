// The `x25519-aes-gcm` suite (named for its first envelope; the name stays, as peers announce
// and send it): X25519 key agreement and HKDF-SHA256 from node:crypto, and two envelopes of one
// layout that differ in their AEAD. Both authenticate every byte before the ciphertext as
// associated data, a response's followed by its request's nonce (which binds it to its request).
//   request:  version ‖ KIND_REQUEST ‖ sent-at ms (8, BE) ‖ recipient key id (8) ‖
//             sender public key (32) ‖ nonce (12) ‖ ciphertext ‖ tag (16)
//   response: version ‖ KIND_RESPONSE ‖ sent-at ms (8, BE) ‖ nonce (12) ‖ ciphertext ‖ tag (16)
//   nonce: 12 random bytes (from the pooled random source).
//
// Version 3, sealed by this build for every body: ChaCha20-Poly1305 of RFC 8439 (libsodium
// through sodium-native, or node:crypto's `chacha20-poly1305` when it does not load: the same
// bytes), key HKDF-SHA256(X25519, "nuropb x25519-chacha20-poly1305 v3", sender ‖ recipient, 32).
// It goes without the `nuropb_enc` header: its first byte (below 0x20) names it.
//
// Version 1, what earlier builds seal and read: AES-256-GCM, key HKDF-SHA256(X25519,
// "nuropb x25519-aes-gcm v1", sender ‖ recipient, 32), with the `nuropb_enc` header. Read still,
// and sealed for the response to a version-1 request (its sender reads nothing else).
//
// The two salts keep the keys of the versions apart. The key id and sender key travel in the
// body, not in headers: on AMQP every header costs the broker and both peers per message.
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
} from "node:crypto";
import { toBuffer } from "./base64.ts";
import { CHACHA_AEAD, type ChachaAead } from "./chacha-aead.ts";
import type { CipherPool } from "./cipher-pool.ts";
import { DecryptFailure, cryptoError } from "./failure.ts";
import { KERNELS } from "./kernels.ts";
import { fillRandom } from "./random.ts";

/** The suite's name, as in the `nuropb_enc` header. */
export const NATIVE = "x25519-aes-gcm";

/** Envelope version 1: AES-256-GCM. */
export const NATIVE_GCM_VERSION = 0x01;
/** Envelope version 3: ChaCha20-Poly1305 (RFC 8439). */
export const NATIVE_CHACHA_VERSION = 0x03;
export const NATIVE_KIND_REQUEST = 0x01;
export const NATIVE_KIND_RESPONSE = 0x02;
const KEY_BYTES = 32;
const KID_BYTES = 8;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/** Offsets in a request envelope. */
const AT_KID = 10;
const AT_SENDER = AT_KID + KID_BYTES; // 18
const AT_REQUEST_NONCE = AT_SENDER + KEY_BYTES; // 50
const REQUEST_HEAD = AT_REQUEST_NONCE + NONCE_BYTES; // 62
/** Offsets in a response envelope. */
const AT_RESPONSE_NONCE = 10;
const RESPONSE_HEAD = AT_RESPONSE_NONCE + NONCE_BYTES; // 22
/** Recipient key id ‖ sender key: what names a request's pair of keys. */
const PAIR_ID_BYTES = KID_BYTES + KEY_BYTES; // 40

// Scratch heads of the calling thread. A seal or open writes the head it authenticates here (the
// associated data and the nonce the AEAD reads), runs the cipher and copies what the body or the
// reply key needs, synchronously, before it returns: nothing else ever holds them, and nothing in
// them is secret (heads travel in clear). They spare what each message cost before: a Buffer
// object per view of the body (three per seal or open) and a fresh associated-data buffer per
// response. The cipher-thread paths (version 1 with threads) build their own, as they await.
const REQUEST_AAD = Buffer.alloc(REQUEST_HEAD);
const REQUEST_AAD_NONCE = REQUEST_AAD.subarray(AT_REQUEST_NONCE, REQUEST_HEAD);
/** A response's head, then its request's nonce: the response's associated data. */
const RESPONSE_AAD = Buffer.alloc(RESPONSE_HEAD + NONCE_BYTES);
const RESPONSE_AAD_NONCE = RESPONSE_AAD.subarray(AT_RESPONSE_NONCE, RESPONSE_HEAD);

const HKDF_SALT = Buffer.from("nuropb x25519-aes-gcm v1", "latin1");
const HKDF_SALT_V3 = Buffer.from("nuropb x25519-chacha20-poly1305 v3", "latin1");
const STATIC_KEY_INFO = Buffer.from("nuropb x25519-aes-gcm static key v1", "latin1");
/** PKCS#8 DER of an X25519 private key, up to the 32 raw bytes (RFC 8410). */
const PKCS8_X25519_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");

/** The ChaCha20-Poly1305 backend in use (libsodium when it loads). */
let chacha: ChachaAead = CHACHA_AEAD;

/**
 * Makes version 3 run on `backend` from now on; returns the one in use before. For tests, which
 * force each backend: they compute the same bytes.
 */
export function useChachaAead(backend: ChachaAead): ChachaAead {
  const before = chacha;
  chacha = backend;
  return before;
}

/** An X25519 key pair of this suite. The private key stays in a KeyObject. */
export interface NativeKeyPair {
  readonly publicKey: Uint8Array;
  /** Standard base64 of the public key, as announced in describe (`native_public_key`). */
  readonly publicKeyText: string;
  /** First 8 bytes of SHA-256 of the public key, hex: names the recipient key in a request. */
  readonly kid: string;
  readonly privateKey: KeyObject;
}
/** A fresh X25519 key pair (a sender without keys of its own). */
export function generateNativeKeyPair(): NativeKeyPair {
  return nativePair(generateKeyPairSync("x25519").privateKey);
}

/**
 * The suite's static key pair of a participant, derived from its 32-byte X25519 (`nacl`) secret
 * key by HKDF: every instance holding that key holds this one too, and the two suites never
 * share a key.
 */
export function deriveNativeKeyPair(naclSecretKey: Uint8Array): NativeKeyPair {
  const secret = Buffer.from(hkdfSync("sha256", naclSecretKey, HKDF_SALT, STATIC_KEY_INFO, 32));
  const der = Buffer.concat([PKCS8_X25519_PREFIX, secret]);
  secret.fill(0);
  const privateKey = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
  der.fill(0);
  return nativePair(privateKey);
}

function nativePair(privateKey: KeyObject): NativeKeyPair {
  const x = createPublicKey(privateKey).export({ format: "jwk" }).x;
  if (typeof x !== "string") throw new TypeError("X25519 public key could not be exported");
  const publicKey = Buffer.from(x, "base64url");
  return Object.freeze({
    publicKey,
    publicKeyText: publicKey.toString("base64"),
    kid: nativeKeyId(publicKey),
    privateKey,
  });
}

/** Hex of the first 8 bytes of SHA-256 of an X25519 public key. */
export function nativeKeyId(publicKey: Uint8Array): string {
  return createHash("sha256")
    .update(publicKey)
    .digest("hex")
    .slice(0, 2 * KID_BYTES);
}

/** A public KeyObject from 32 raw bytes (the caller has checked the length and top bit). */
export function x25519PublicKey(raw: Uint8Array): KeyObject {
  return createPublicKey({
    key: { kty: "OKP", crv: "X25519", x: toBuffer(raw).toString("base64url") },
    format: "jwk",
  });
}

/** The AEAD key of a pair for an envelope version (1 or 3), read by this module only. */
let keyOf: (pair: NativePair, version: number) => Uint8Array;
/** Whether a checked request body names a pair: its recipient key id and sender key. */
let namesPair: (body: Uint8Array, pair: NativePair) => boolean;

/**
 * The keys of one (sender key, recipient key) pair, the same at either end. They sit in private
 * fields: `util.inspect` and `JSON.stringify` show only the recipient key id.
 */
export class NativePair {
  /** The recipient key's id (8 bytes), written in requests. */
  readonly kid: Uint8Array;
  /** Version-1 (AES-256-GCM) key. */
  readonly #v1: Uint8Array;
  /** Version-3 (ChaCha20-Poly1305) key. */
  readonly #v3: Uint8Array;
  /** Recipient key id ‖ sender public key: bytes 10-50 of every request of this pair (public). */
  readonly #id: Uint8Array;

  static {
    keyOf = (pair, version) => (version === NATIVE_CHACHA_VERSION ? pair.#v3 : pair.#v1);
    namesPair = (body, pair) => {
      // Public bytes (they travel in clear): an early exit leaks nothing.
      const id = pair.#id;
      for (let i = 0; i < PAIR_ID_BYTES; i++) if (body[AT_KID + i] !== id[i]) return false;
      return true;
    };
  }

  /**
   * @throws Error from node:crypto when the peer key is of small order (shared secret all zero).
   */
  constructor(
    privateKey: KeyObject,
    peerPublic: KeyObject,
    senderPublic: Uint8Array,
    recipientPublic: Uint8Array,
  ) {
    const shared = diffieHellman({ privateKey, publicKey: peerPublic });
    const info = Buffer.concat([senderPublic, recipientPublic]);
    this.#v1 = new Uint8Array(hkdfSync("sha256", shared, HKDF_SALT, info, KEY_BYTES));
    this.#v3 = new Uint8Array(hkdfSync("sha256", shared, HKDF_SALT_V3, info, KEY_BYTES));
    shared.fill(0);
    this.kid = Buffer.from(nativeKeyId(recipientPublic), "hex");
    this.#id = new Uint8Array(PAIR_ID_BYTES);
    this.#id.set(this.kid, 0);
    this.#id.set(senderPublic.subarray(0, KEY_BYTES), KID_BYTES);
  }
}

/** Writes a response head into `target`: version, kind, time and a fresh nonce. */
function writeResponseHead(target: Uint8Array, version: number, nowMs: number): void {
  target[0] = version;
  target[1] = NATIVE_KIND_RESPONSE;
  writeUint64(target, 2, nowMs);
  fillRandom(target, AT_RESPONSE_NONCE, NONCE_BYTES);
}

/** A response's frame, head written and a fresh nonce, for the cipher-thread path. */
function responseFrame(plainLength: number, version: number, nowMs: number): Buffer {
  const body = Buffer.allocUnsafe(RESPONSE_HEAD + plainLength + TAG_BYTES);
  writeResponseHead(body, version, nowMs);
  return body;
}

/** Associated data of a response: its head and the request's nonce (cipher-thread path). */
function responseAad(body: Uint8Array, requestNonce: Uint8Array): Buffer {
  const aad = Buffer.allocUnsafe(RESPONSE_HEAD + requestNonce.length);
  aad.set(body.subarray(0, RESPONSE_HEAD), 0);
  aad.set(requestNonce, RESPONSE_HEAD);
  return aad;
}

/** The AEAD of a version (1 or 3; the caller has checked it) over the pair's key of it. */
function sealAs(
  version: number,
  out: Uint8Array,
  plain: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  pair: NativePair,
): void {
  const key = keyOf(pair, version);
  if (version === NATIVE_CHACHA_VERSION) chacha.seal(out, plain, nonce, aad, key);
  else KERNELS.aeadSeal(out, plain, nonce, aad, key);
}

function openAs(
  version: number,
  sealed: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  pair: NativePair,
): Buffer {
  const key = keyOf(pair, version);
  return opened(
    version === NATIVE_CHACHA_VERSION
      ? chacha.open(sealed, nonce, aad, key)
      : KERNELS.aeadOpen(sealed, nonce, aad, key),
  );
}

/**
 * Seals a request as version 3; returns the body and a copy of its nonce (bound into the
 * response). Runs on the calling thread, with or without cipher threads (~1 µs for 300 B).
 * One allocation for the body, and the nonce's copy: the head is written in scratch, which the
 * AEAD reads as associated data, then copied in front of the ciphertext.
 */
export function sealNativeRequest(
  plain: Uint8Array,
  pair: NativePair,
  senderPublic: Uint8Array,
  nowMs: number,
): { body: Buffer; nonce: Uint8Array } {
  const head = REQUEST_AAD;
  head[0] = NATIVE_CHACHA_VERSION;
  head[1] = NATIVE_KIND_REQUEST;
  writeUint64(head, 2, nowMs);
  head.set(pair.kid, AT_KID);
  head.set(senderPublic, AT_SENDER);
  fillRandom(head, AT_REQUEST_NONCE, NONCE_BYTES);
  const body = Buffer.allocUnsafe(REQUEST_HEAD + plain.length + TAG_BYTES);
  sealAs(NATIVE_CHACHA_VERSION, body.subarray(REQUEST_HEAD), plain, REQUEST_AAD_NONCE, head, pair);
  copyBytes(head, 0, body, 0, REQUEST_HEAD);
  return { body, nonce: new Uint8Array(REQUEST_AAD_NONCE) };
}

/**
 * Seals the response to a request of envelope `requestVersion` whose nonce was `requestNonce`,
 * in that version (a version-1 request may come from an earlier build, which reads only it).
 */
export function sealNativeResponse(
  plain: Uint8Array,
  pair: NativePair,
  requestNonce: Uint8Array,
  requestVersion: number,
  nowMs: number,
): Buffer {
  const version = responseVersion(requestVersion);
  const aad = responseAadOf(requestNonce);
  writeResponseHead(aad, version, nowMs);
  const body = Buffer.allocUnsafe(RESPONSE_HEAD + plain.length + TAG_BYTES);
  sealAs(version, body.subarray(RESPONSE_HEAD), plain, RESPONSE_AAD_NONCE, aad, pair);
  copyBytes(aad, 0, body, 0, RESPONSE_HEAD);
  return body;
}

/**
 * The response scratch with `requestNonce` in place after the head (the caller writes the head).
 * @throws TypeError when it is no 12-byte nonce (a reply key not issued for a native request).
 */
function responseAadOf(requestNonce: Uint8Array): Buffer {
  if (requestNonce.length !== NONCE_BYTES) {
    throw new TypeError(`${NATIVE}: a request nonce is ${String(NONCE_BYTES)} bytes`);
  }
  RESPONSE_AAD.set(requestNonce, RESPONSE_HEAD);
  return RESPONSE_AAD;
}

/**
 * {@link sealNativeResponse}, a version-1 response's AES-256-GCM on a cipher thread (version 3
 * costs less than the hop to a thread: it runs here).
 */
export async function sealNativeResponseOn(
  pool: CipherPool,
  plain: Uint8Array,
  pair: NativePair,
  requestNonce: Uint8Array,
  requestVersion: number,
  nowMs: number,
): Promise<Buffer> {
  if (responseVersion(requestVersion) !== NATIVE_GCM_VERSION) {
    return sealNativeResponse(plain, pair, requestNonce, requestVersion, nowMs);
  }
  const body = responseFrame(plain.length, NATIVE_GCM_VERSION, nowMs);
  const nonceAad = Buffer.concat([
    body.subarray(AT_RESPONSE_NONCE, RESPONSE_HEAD),
    responseAad(body, requestNonce),
  ]);
  body.set(await pool.aeadSeal(keyOf(pair, NATIVE_GCM_VERSION), nonceAad, plain), RESPONSE_HEAD);
  return body;
}

function responseVersion(requestVersion: number): number {
  return requestVersion === NATIVE_GCM_VERSION ? NATIVE_GCM_VERSION : NATIVE_CHACHA_VERSION;
}

/**
 * Checks the clear head of a request envelope (either version) for shape before any cipher
 * work: length, version, kind, and a canonical sender key. Nothing in it is authenticated yet.
 * @returns its version (1 or 3): its response is sealed in the same.
 */
export function checkNativeRequest(body: Uint8Array): number {
  const version = checkEnvelope(body, NATIVE_KIND_REQUEST);
  if (((body[AT_REQUEST_NONCE - 1] ?? 0) & 0x80) !== 0) {
    // X25519 ignores the top bit (RFC 7748 §5): a key with it set is refused, never opened.
    throw cryptoError(
      DecryptFailure.malformed,
      `${NATIVE} request carries a non-canonical sender key (top bit set)`,
      NATIVE,
    );
  }
  return version;
}

/** Whether a request checked by {@link checkNativeRequest} was sealed with `pair`'s keys' names. */
export function isRequestOfPair(body: Uint8Array, pair: NativePair): boolean {
  return namesPair(body, pair);
}

/** A cache key for a checked request's (recipient key, sender key): the 40 bytes as latin1 text. */
export function nativeRequestPairId(body: Uint8Array): string {
  return toBuffer(body).toString("latin1", AT_KID, AT_REQUEST_NONCE);
}

/** Hex key id of the recipient key a checked request names. */
export function nativeRequestKid(body: Uint8Array): string {
  return toBuffer(body).toString("hex", AT_KID, AT_SENDER);
}

/** A copy of a checked request's sender public key. */
export function nativeRequestSender(body: Uint8Array): Uint8Array {
  return Uint8Array.from(body.subarray(AT_SENDER, AT_REQUEST_NONCE));
}

/** When a checked request says it was sealed, in ms since the epoch (authenticated once opened). */
export function nativeRequestSentAt(body: Uint8Array): number {
  return readUint64(body, 2);
}

/** A copy of a checked request's nonce (the caller may reuse the body once an open returns). */
export function nativeRequestNonce(body: Uint8Array): Uint8Array {
  const nonce = new Uint8Array(NONCE_BYTES);
  copyBytes(body, AT_REQUEST_NONCE, nonce, 0, NONCE_BYTES);
  return nonce;
}

/**
 * Opens a request envelope checked by {@link checkNativeRequest}: its head is copied to scratch
 * (the AEAD's associated data and nonce), so the ciphertext is the one view of the body made.
 */
export function openNativeRequest(body: Uint8Array, pair: NativePair): Uint8Array {
  copyBytes(body, 0, REQUEST_AAD, 0, REQUEST_HEAD);
  return openAs(
    REQUEST_AAD[0] ?? 0,
    body.subarray(REQUEST_HEAD),
    REQUEST_AAD_NONCE,
    REQUEST_AAD,
    pair,
  );
}

/** {@link openNativeRequest}, a version-1 body's AES-256-GCM on a cipher thread. */
export async function openNativeRequestOn(
  pool: CipherPool,
  body: Uint8Array,
  pair: NativePair,
): Promise<Uint8Array> {
  if (body[0] !== NATIVE_GCM_VERSION) return openNativeRequest(body, pair);
  const nonceAad = Buffer.concat([
    body.subarray(AT_REQUEST_NONCE, REQUEST_HEAD),
    body.subarray(0, REQUEST_HEAD),
  ]);
  return opened(
    await pool.aeadOpen(keyOf(pair, NATIVE_GCM_VERSION), nonceAad, body.subarray(REQUEST_HEAD)),
  );
}

/** Opens a response envelope (either version) to the request whose nonce was `requestNonce`. */
export function openNativeResponse(
  body: Uint8Array,
  pair: NativePair,
  requestNonce: Uint8Array,
  requestVersion?: number,
): Uint8Array {
  const version = checkEnvelope(body, NATIVE_KIND_RESPONSE);
  checkResponseVersion(version, requestVersion);
  const aad = responseAadOf(requestNonce);
  copyBytes(body, 0, aad, 0, RESPONSE_HEAD);
  return openAs(version, body.subarray(RESPONSE_HEAD), RESPONSE_AAD_NONCE, aad, pair);
}

/** {@link openNativeResponse}, a version-1 body's AES-256-GCM on a cipher thread. */
export async function openNativeResponseOn(
  pool: CipherPool,
  body: Uint8Array,
  pair: NativePair,
  requestNonce: Uint8Array,
  requestVersion?: number,
): Promise<Uint8Array> {
  const version = checkEnvelope(body, NATIVE_KIND_RESPONSE);
  checkResponseVersion(version, requestVersion);
  if (version !== NATIVE_GCM_VERSION) return openNativeResponse(body, pair, requestNonce);
  const nonceAad = Buffer.concat([
    body.subarray(AT_RESPONSE_NONCE, RESPONSE_HEAD),
    responseAad(body, requestNonce),
  ]);
  return opened(
    await pool.aeadOpen(keyOf(pair, NATIVE_GCM_VERSION), nonceAad, body.subarray(RESPONSE_HEAD)),
  );
}

/** A response is sealed in its request's envelope version: any other is refused. */
function checkResponseVersion(version: number, requestVersion: number | undefined): void {
  if (requestVersion !== undefined && version !== requestVersion) {
    throw cryptoError(
      DecryptFailure.malformed,
      `${NATIVE} response in envelope version ${String(version)} to a version-${String(requestVersion)} request`,
      NATIVE,
    );
  }
}

/** The plaintext as a Buffer (as the calling thread's decipher gives), or the typed failure. */
function opened(plain: Uint8Array | null): Buffer {
  if (plain === null) {
    throw cryptoError(
      DecryptFailure.tampered,
      `${NATIVE} body failed authentication (tampered, truncated, sealed with another key, or the response of another request)`,
      NATIVE,
    );
  }
  return toBuffer(plain);
}

/**
 * Refuses a body too short, of an unknown version or of the other kind, before any cipher work.
 * @returns its version (1 or 3).
 */
function checkEnvelope(body: Uint8Array, kind: number): number {
  const version = body[0];
  const request = kind === NATIVE_KIND_REQUEST;
  const head = request ? REQUEST_HEAD : RESPONSE_HEAD;
  if (body.length < head + TAG_BYTES) {
    throw cryptoError(
      DecryptFailure.malformed,
      `${NATIVE} body too short (${body.length} bytes)`,
      NATIVE,
    );
  }
  if (version !== NATIVE_CHACHA_VERSION && version !== NATIVE_GCM_VERSION) {
    throw cryptoError(
      DecryptFailure.unsupported,
      `Unknown ${NATIVE} envelope version ${version ?? 0}`,
      NATIVE,
    );
  }
  if (body[1] !== kind) {
    throw cryptoError(
      DecryptFailure.tampered,
      request
        ? `A ${NATIVE} response was replayed as a request`
        : `A ${NATIVE} request was replayed as a response`,
      NATIVE,
    );
  }
  return version;
}

/**
 * Copies `length` bytes of a head (at most 62): a loop costs less than `Buffer#copy`, which
 * makes a view of the source, or `set` of a `subarray`, which makes a Buffer. The caller has
 * checked both ranges.
 */
function copyBytes(
  source: Uint8Array,
  from: number,
  target: Uint8Array,
  to: number,
  length: number,
): void {
  for (let i = 0; i < length; i++) target[to + i] = source[from + i] as number;
}

/** Writes `value` (ms, clamped to 0 and below 2^53) as 8 bytes big-endian, byte by byte. */
function writeUint64(target: Uint8Array, offset: number, value: number): void {
  const ms = Math.max(0, Math.floor(value));
  const high = Math.floor(ms / 2 ** 32);
  const low = ms >>> 0;
  target[offset] = high >>> 24;
  target[offset + 1] = high >>> 16;
  target[offset + 2] = high >>> 8;
  target[offset + 3] = high;
  target[offset + 4] = low >>> 24;
  target[offset + 5] = low >>> 16;
  target[offset + 6] = low >>> 8;
  target[offset + 7] = low;
}

function readUint64(source: Uint8Array, offset: number): number {
  const high =
    (((source[offset] ?? 0) << 24) |
      ((source[offset + 1] ?? 0) << 16) |
      ((source[offset + 2] ?? 0) << 8) |
      (source[offset + 3] ?? 0)) >>>
    0;
  const low =
    (((source[offset + 4] ?? 0) << 24) |
      ((source[offset + 5] ?? 0) << 16) |
      ((source[offset + 6] ?? 0) << 8) |
      (source[offset + 7] ?? 0)) >>>
    0;
  return high * 2 ** 32 + low;
}
