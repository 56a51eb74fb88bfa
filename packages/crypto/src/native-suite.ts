// The `x25519-aes-gcm` suite: X25519 key agreement and HKDF-SHA256 from node:crypto, and two
// envelopes. Both authenticate every byte before the ciphertext as associated data.
//
// Version 2, sealed for bodies up to STREAM_MAX_PLAIN bytes (most calls): AES-256-CTR keystream
// read from a long-lived stream per key, and Poly1305 (tweetnacl) with a one-time key taken from
// that keystream, as RFC 8439 builds ChaCha20-Poly1305 from ChaCha20. A per-message cipher object
// of node:crypto (what AES-256-GCM needs) costs ~3 µs whatever the size; here one cipher call
// makes the keystream of dozens of messages, and no nonce needs getrandom.
//   request:  0x02 ‖ KIND_REQUEST ‖ sent-at ms (8, BE) ‖ recipient key id (8) ‖
//             sender public key (32) ‖ stream salt (12) ‖ block counter (4, BE) ‖ ciphertext ‖ tag (16)
//   response: 0x02 ‖ KIND_RESPONSE ‖ sent-at ms (8, BE) ‖ stream salt (12) ‖ block counter (4, BE) ‖
//             ciphertext ‖ tag (16)
//   keystream = AES-256-CTR(direction key, initial counter block = salt ‖ counter); its first 32
//   bytes are the Poly1305 key (never used again), the rest is XORed with the plaintext; a message
//   uses 2 + ceil(length / 16) blocks and the next message of the stream starts after them.
//   tag = Poly1305(one-time key, head ‖ ciphertext), a response's followed by its request's nonce
//   (salt ‖ counter of a version-2 request, the 12-byte nonce of a version-1 one).
//   keys: HKDF-SHA256(X25519, "nuropb x25519-aes-gcm v2", sender key ‖ recipient key, 64 bytes) =
//   request key ‖ response key: each direction has its own. A counter block is never used twice
//   under one key: every stream starts at a fresh random 96-bit salt (instances sharing a static
//   key each pick their own), and a stream ends before its 32-bit block counter would wrap.
//
// Version 1, sealed for larger bodies (native AES-GCM is faster there than Poly1305 in
// JavaScript) and what earlier builds sealed for every body: AES-256-GCM, random 12-byte nonce.
//   request:  0x01 ‖ KIND_REQUEST ‖ sent-at ms (8, BE) ‖ recipient key id (8) ‖
//             sender public key (32) ‖ nonce (12) ‖ AES-256-GCM ciphertext ‖ tag (16)
//   response: 0x01 ‖ KIND_RESPONSE ‖ sent-at ms (8, BE) ‖ nonce (12) ‖ ciphertext ‖ tag (16),
//             the request's nonce appended to the associated data (binds it to its request)
//   key (both directions): HKDF-SHA256(X25519, "nuropb x25519-aes-gcm v1", sender ‖ recipient, 32).
//
// The key id and sender key travel in the body, not in headers: on AMQP every header costs the
// broker and both peers per message.
import {
  createCipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomFillSync,
  type Cipher,
  type KeyObject,
} from "node:crypto";
import nacl from "tweetnacl";
import { toBuffer } from "./base64.ts";
import type { CipherPool } from "./cipher-pool.ts";
import { DecryptFailure, cryptoError } from "./failure.ts";
import { KERNELS } from "./kernels.ts";
import { fillRandom } from "./random.ts";

/** The suite's name, as in the `nuropb_enc` header. */
export const NATIVE = "x25519-aes-gcm";

/** Envelope version 1: AES-256-GCM, random nonce. */
export const NATIVE_GCM_VERSION = 0x01;
/** Envelope version 2: AES-256-CTR keystream of a stream + Poly1305. */
export const NATIVE_STREAM_VERSION = 0x02;
export const NATIVE_KIND_REQUEST = 0x01;
export const NATIVE_KIND_RESPONSE = 0x02;
/**
 * Largest plaintext sealed as version 2; larger bodies are sealed as version 1. Measured on the
 * development machine: seal of 300 B 1.6 µs (v2) against 2.9 µs (v1); the two meet near 800 B,
 * as Poly1305 in JavaScript costs ~3 ns a byte and AES-GCM in OpenSSL well under 1.
 */
export const STREAM_MAX_PLAIN = 1024;
const KEY_BYTES = 32;
const KID_BYTES = 8;
const GCM_NONCE_BYTES = 12;
const TAG_BYTES = 16;
const BLOCK_BYTES = 16;
const SALT_BYTES = 12;
/** Salt ‖ counter: what a version-2 message carries instead of a nonce. */
const STREAM_NONCE_BYTES = SALT_BYTES + 4;
/** Blocks of keystream that key Poly1305 for one message. */
const POLY_KEY_BLOCKS = 2;
/** A stream's 32-bit counter ends here: the stream is replaced before any block would wrap. */
const STREAM_BLOCKS = 2 ** 32;
/** Keystream made per cipher call: by a sender for its stream, by a receiver per window. */
const SEND_CHUNK_BYTES = 8192;
const OPEN_CHUNK_BYTES = 4096;
/** Streams of one key whose keystream a receiver keeps (instances of one sender, restarts). */
const OPEN_WINDOWS = 4;
const ZEROS = Buffer.alloc(SEND_CHUNK_BYTES);

/** Offsets in a request envelope (both versions up to the nonce). */
const AT_KID = 10;
const AT_SENDER = AT_KID + KID_BYTES; // 18
const AT_REQUEST_NONCE = AT_SENDER + KEY_BYTES; // 50
const GCM_REQUEST_HEAD = AT_REQUEST_NONCE + GCM_NONCE_BYTES; // 62
const STREAM_REQUEST_HEAD = AT_REQUEST_NONCE + STREAM_NONCE_BYTES; // 66
/** Offsets in a response envelope. */
const AT_RESPONSE_NONCE = 10;
const GCM_RESPONSE_HEAD = AT_RESPONSE_NONCE + GCM_NONCE_BYTES; // 22
const STREAM_RESPONSE_HEAD = AT_RESPONSE_NONCE + STREAM_NONCE_BYTES; // 26

const HKDF_SALT = Buffer.from("nuropb x25519-aes-gcm v1", "latin1");
const HKDF_SALT_V2 = Buffer.from("nuropb x25519-aes-gcm v2", "latin1");
const STATIC_KEY_INFO = Buffer.from("nuropb x25519-aes-gcm static key v1", "latin1");
/** PKCS#8 DER of an X25519 private key, up to the 32 raw bytes (RFC 8410). */
const PKCS8_X25519_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");

interface PolyLowLevel {
  crypto_onetimeauth(
    out: Uint8Array,
    outPos: number,
    m: Uint8Array,
    mPos: number,
    n: number,
    k: Uint8Array,
  ): number;
  crypto_onetimeauth_verify(
    h: Uint8Array,
    hPos: number,
    m: Uint8Array,
    mPos: number,
    n: number,
    k: Uint8Array,
  ): number;
}
const POLY = (nacl as unknown as { readonly lowlevel: PolyLowLevel }).lowlevel;

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

/** Which end of a (sender, recipient) pair of keys this participant is. */
export type NativeSide = "sender" | "recipient";

/**
 * The keys and streams of one (sender key, recipient key) pair, at either end: the sender seals
 * requests and opens responses, the recipient the other way round. Holds key material: kept in
 * the encryptor's private caches and reply keys only, never logged.
 */
export class NativePair {
  /** Version 1 (AES-256-GCM) key, both directions. */
  readonly gcmKey: Uint8Array;
  /** The recipient key's id (8 bytes), written in requests. */
  readonly kid: Uint8Array;
  /** Seals this end's version-2 messages (requests at the sender, responses at the recipient). */
  readonly sending: SendStream;
  /** Opens the other end's version-2 messages. */
  readonly opening: OpenWindows;

  /**
   * @throws Error from node:crypto when the peer key is of small order (shared secret all zero).
   */
  constructor(
    privateKey: KeyObject,
    peerPublic: KeyObject,
    senderPublic: Uint8Array,
    recipientPublic: Uint8Array,
    side: NativeSide,
  ) {
    const shared = diffieHellman({ privateKey, publicKey: peerPublic });
    const info = Buffer.concat([senderPublic, recipientPublic]);
    this.gcmKey = new Uint8Array(hkdfSync("sha256", shared, HKDF_SALT, info, KEY_BYTES));
    const keys = Buffer.from(hkdfSync("sha256", shared, HKDF_SALT_V2, info, 2 * KEY_BYTES));
    shared.fill(0);
    const request = Uint8Array.from(keys.subarray(0, KEY_BYTES));
    const response = Uint8Array.from(keys.subarray(KEY_BYTES));
    keys.fill(0);
    this.kid = Buffer.from(nativeKeyId(recipientPublic), "hex");
    this.sending = new SendStream(side === "sender" ? request : response);
    this.opening = new OpenWindows(side === "sender" ? response : request);
  }
}

/**
 * The sending end of version-2 keystream under one key: blocks are handed out forward, each
 * once. A stream starts at a random 96-bit salt and counter 0 and is replaced by a new one
 * before its 32-bit counter would wrap.
 */
export class SendStream {
  readonly #key: Uint8Array;
  readonly #streamBlocks: number;
  readonly #salt = Buffer.alloc(SALT_BYTES);
  #cipher: Cipher | undefined;
  /** Keystream made and not yet handed out from `#at`; block `#block` starts at `#at`. */
  #keystream: Buffer = Buffer.alloc(0);
  #at = 0;
  #block = 0;

  /** `streamBlocks`: where a stream ends (2³², the counter's range; tests make it shorter). */
  constructor(key: Uint8Array, streamBlocks = STREAM_BLOCKS) {
    this.#key = key;
    this.#streamBlocks = Math.min(streamBlocks, STREAM_BLOCKS);
  }

  /**
   * `blocks` blocks of keystream never handed out before (a view, to be used once); their salt
   * and first counter are written into `into` at `at` (16 bytes).
   */
  take(blocks: number, into: Uint8Array, at: number): Buffer {
    const bytes = blocks * BLOCK_BYTES;
    if (bytes > SEND_CHUNK_BYTES) throw new RangeError(`${String(blocks)} blocks asked at once`);
    if (this.#at + bytes > this.#keystream.length) {
      // The unused tail of the last chunk is skipped, never handed out.
      this.#block += (this.#keystream.length - this.#at) / BLOCK_BYTES;
      if (
        this.#cipher === undefined ||
        this.#block + SEND_CHUNK_BYTES / BLOCK_BYTES > this.#streamBlocks
      ) {
        randomFillSync(this.#salt);
        this.#block = 0;
        this.#cipher = createCipheriv("aes-256-ctr", this.#key, counterBlock(this.#salt, 0));
      }
      this.#keystream = this.#cipher.update(ZEROS);
      this.#at = 0;
    }
    into.set(this.#salt, at);
    writeUint32(into, at + SALT_BYTES, this.#block);
    const keystream = this.#keystream.subarray(this.#at, this.#at + bytes);
    this.#at += bytes;
    this.#block += blocks;
    return keystream;
  }
}

interface OpenWindow {
  readonly salt: Buffer;
  readonly cipher: Cipher;
  /** Counter of the first block of `keystream`, and of the block after its last. */
  start: number;
  end: number;
  keystream: Buffer;
}

/**
 * The receiving end of version-2 keystream under one key: for each of the last few streams
 * seen, a window of keystream made ahead by one long-lived cipher, so the messages of a stream,
 * arriving in order (or with gaps, when several instances share its sender's messages), cost
 * one cipher call per few kilobytes instead of one cipher object each. A window is kept only
 * once a message of its stream has authenticated ({@link confirm}), and never for a message
 * longer than a window: forged or oversized bodies cannot fill memory or evict real streams.
 */
export class OpenWindows {
  readonly #key: Uint8Array;
  readonly #windows: OpenWindow[] = [];
  /** The window made for the last message, kept if it authenticates. */
  #pending: OpenWindow | undefined;

  constructor(key: Uint8Array) {
    this.#key = key;
  }

  /** The keystream of blocks [counter, counter + blocks) of the stream `salt` (a view). */
  keystream(salt: Uint8Array, counter: number, blocks: number): Buffer {
    this.#pending = undefined;
    const chunk = OPEN_CHUNK_BYTES / BLOCK_BYTES;
    const w = this.#windows.find((x) => x.salt.equals(salt));
    if (w !== undefined) {
      if (counter >= w.start && counter + blocks <= w.end) {
        return w.keystream.subarray(
          (counter - w.start) * BLOCK_BYTES,
          (counter + blocks - w.start) * BLOCK_BYTES,
        );
      }
      if (counter >= w.start && counter + blocks <= w.end + chunk) {
        // Next in the stream (or a few messages on): the cipher goes on from the window's end;
        // a message across the end keeps the window's tail in front of the new keystream.
        const fresh = w.cipher.update(ZEROS.subarray(0, OPEN_CHUNK_BYTES));
        if (counter < w.end) {
          const tail = w.keystream.subarray((counter - w.start) * BLOCK_BYTES);
          w.keystream = Buffer.concat([tail, fresh]);
          w.start = counter;
        } else {
          w.keystream = fresh;
          w.start = w.end;
        }
        w.end += chunk;
        return w.keystream.subarray(
          (counter - w.start) * BLOCK_BYTES,
          (counter + blocks - w.start) * BLOCK_BYTES,
        );
      }
    }
    // A new stream, a jump ahead, an older message of a known stream (redelivered or late), or
    // a message longer than a window (made for it alone).
    const cipher = createCipheriv("aes-256-ctr", this.#key, counterBlock(salt, counter));
    if (blocks > chunk) return cipher.update(Buffer.alloc(blocks * BLOCK_BYTES));
    const keystream = cipher.update(ZEROS.subarray(0, OPEN_CHUNK_BYTES));
    if (w === undefined || counter > w.start) {
      this.#pending = {
        salt: Buffer.from(salt),
        cipher,
        start: counter,
        end: counter + chunk,
        keystream,
      };
    }
    return keystream.subarray(0, blocks * BLOCK_BYTES);
  }

  /** The last {@link keystream}'s message authenticated: its new window (if any) is kept. */
  confirm(): void {
    const w = this.#pending;
    if (w === undefined) return;
    this.#pending = undefined;
    const old = this.#windows.findIndex((x) => x.salt.equals(w.salt));
    if (old >= 0) this.#windows.splice(old, 1);
    else if (this.#windows.length >= OPEN_WINDOWS) this.#windows.shift();
    this.#windows.push(w);
  }

  /** How many windows are kept (for tests). */
  get size(): number {
    return this.#windows.length;
  }
}

/** The 16-byte initial counter block of AES-CTR: salt ‖ counter (32 bits, big-endian). */
function counterBlock(salt: Uint8Array, counter: number): Buffer {
  const iv = Buffer.allocUnsafe(BLOCK_BYTES);
  iv.set(salt, 0);
  writeUint32(iv, SALT_BYTES, counter);
  return iv;
}

/** Poly1305 input of a response (head ‖ ciphertext ‖ request nonce), grown as needed. */
let scratch = Buffer.alloc(2048);
const tagScratch = new Uint8Array(TAG_BYTES);

/**
 * Seals `plain` as version 2 into `body` (head written up to the nonce): salt ‖ counter at
 * `nonceAt`, ciphertext at `head`, then the tag over head ‖ ciphertext ‖ `binding`.
 */
function sealStream(
  body: Buffer,
  head: number,
  nonceAt: number,
  plain: Uint8Array,
  stream: SendStream,
  binding: Uint8Array | undefined,
): void {
  const n = plain.length;
  const keystream = stream.take(POLY_KEY_BLOCKS + Math.ceil(n / BLOCK_BYTES), body, nonceAt);
  xor(body, head, plain, 0, keystream, POLY_KEY_BLOCKS * BLOCK_BYTES, n);
  const macEnd = head + n;
  // The tag's place holds the binding while the tag is computed (16 bytes at most).
  if (binding !== undefined) body.set(binding, macEnd);
  POLY.crypto_onetimeauth(tagScratch, 0, body, 0, macEnd + (binding?.length ?? 0), keystream);
  body.set(tagScratch, macEnd);
  keystream.fill(0); // handed out once: the one-time key and pad are never needed again
}

/** Opens a version-2 body (checked for shape): tag first, then the plaintext. */
function openStream(
  body: Uint8Array,
  head: number,
  nonceAt: number,
  windows: OpenWindows,
  binding: Uint8Array | undefined,
): Buffer {
  const b = toBuffer(body);
  const n = b.length - head - TAG_BYTES;
  const counter = b.readUInt32BE(nonceAt + SALT_BYTES);
  const blocks = POLY_KEY_BLOCKS + Math.ceil(n / BLOCK_BYTES);
  if (counter + blocks > STREAM_BLOCKS) {
    throw cryptoError(
      DecryptFailure.malformed,
      `${NATIVE} body runs past the end of its stream (counter ${String(counter)})`,
      NATIVE,
    );
  }
  const keystream = windows.keystream(b.subarray(nonceAt, nonceAt + SALT_BYTES), counter, blocks);
  let mac: Uint8Array = b;
  let macLength = head + n;
  if (binding !== undefined) {
    if (scratch.length < macLength + binding.length)
      scratch = Buffer.alloc(2 * (macLength + binding.length));
    scratch.set(b.subarray(0, macLength), 0);
    scratch.set(binding, macLength);
    mac = scratch;
    macLength += binding.length;
  }
  if (POLY.crypto_onetimeauth_verify(b, head + n, mac, 0, macLength, keystream) !== 0) {
    throw tamperedError();
  }
  windows.confirm();
  const plain = Buffer.allocUnsafe(n);
  xor(plain, 0, b, head, keystream, POLY_KEY_BLOCKS * BLOCK_BYTES, n);
  return plain;
}

/** out[o..o+n) = a[ai..ai+n) XOR k[ki..ki+n), four bytes at a time (a byte loop costs 4×). */
function xor(
  out: Uint8Array,
  o: number,
  a: Uint8Array,
  ai: number,
  k: Uint8Array,
  ki: number,
  n: number,
): void {
  const od = new DataView(out.buffer, out.byteOffset + o, n);
  const ad = new DataView(a.buffer, a.byteOffset + ai, n);
  const kd = new DataView(k.buffer, k.byteOffset + ki, n);
  const words = n & ~3;
  for (let i = 0; i < words; i += 4) od.setInt32(i, ad.getInt32(i) ^ kd.getInt32(i));
  for (let i = words; i < n; i++) od.setUint8(i, ad.getUint8(i) ^ kd.getUint8(i));
}

/** Writes a request head up to its nonce. */
function writeRequestHead(
  body: Buffer,
  version: number,
  kid: Uint8Array,
  senderPublic: Uint8Array,
  nowMs: number,
): void {
  body[0] = version;
  body[1] = NATIVE_KIND_REQUEST;
  writeUint64(body, 2, nowMs);
  body.set(kid, AT_KID);
  body.set(senderPublic, AT_SENDER);
}

function writeResponseHead(body: Buffer, version: number, nowMs: number): void {
  body[0] = version;
  body[1] = NATIVE_KIND_RESPONSE;
  writeUint64(body, 2, nowMs);
}

/** A version-1 request envelope for everything but the ciphertext: head written, nonce fresh. */
function gcmRequestFrame(
  plainLength: number,
  pair: NativePair,
  senderPublic: Uint8Array,
  nowMs: number,
): Buffer {
  const body = Buffer.allocUnsafe(GCM_REQUEST_HEAD + plainLength + TAG_BYTES);
  writeRequestHead(body, NATIVE_GCM_VERSION, pair.kid, senderPublic, nowMs);
  fillRandom(body, AT_REQUEST_NONCE, GCM_NONCE_BYTES);
  return body;
}

function gcmResponseFrame(plainLength: number, nowMs: number): Buffer {
  const body = Buffer.allocUnsafe(GCM_RESPONSE_HEAD + plainLength + TAG_BYTES);
  writeResponseHead(body, NATIVE_GCM_VERSION, nowMs);
  fillRandom(body, AT_RESPONSE_NONCE, GCM_NONCE_BYTES);
  return body;
}

/** Associated data of a version-1 response: its head and the request's nonce. */
function gcmResponseAad(body: Uint8Array, requestNonce: Uint8Array): Buffer {
  return Buffer.concat([body.subarray(0, GCM_RESPONSE_HEAD), requestNonce]);
}

/** Whether a body of `plainLength` bytes is sealed as version 1 (AES-256-GCM). */
function sealsAsGcm(plainLength: number): boolean {
  return plainLength > STREAM_MAX_PLAIN;
}

/**
 * Seals a request (version 2, or 1 for a large body); returns the body and a copy of its nonce
 * (bound into the response).
 */
export function sealNativeRequest(
  plain: Uint8Array,
  pair: NativePair,
  senderPublic: Uint8Array,
  nowMs: number,
): { body: Buffer; nonce: Uint8Array } {
  if (sealsAsGcm(plain.length)) {
    const body = gcmRequestFrame(plain.length, pair, senderPublic, nowMs);
    const nonce = body.subarray(AT_REQUEST_NONCE, GCM_REQUEST_HEAD);
    KERNELS.aeadSeal(
      body.subarray(GCM_REQUEST_HEAD),
      plain,
      nonce,
      body.subarray(0, GCM_REQUEST_HEAD),
      pair.gcmKey,
    );
    return { body, nonce: Uint8Array.from(nonce) };
  }
  const body = Buffer.allocUnsafe(STREAM_REQUEST_HEAD + plain.length + TAG_BYTES);
  writeRequestHead(body, NATIVE_STREAM_VERSION, pair.kid, senderPublic, nowMs);
  sealStream(body, STREAM_REQUEST_HEAD, AT_REQUEST_NONCE, plain, pair.sending, undefined);
  return { body, nonce: Uint8Array.from(body.subarray(AT_REQUEST_NONCE, STREAM_REQUEST_HEAD)) };
}

/**
 * {@link sealNativeRequest} with a version-1 cipher on a cipher thread (version 2 costs less
 * than the hop to a thread: it runs here).
 */
export async function sealNativeRequestOn(
  pool: CipherPool,
  plain: Uint8Array,
  pair: NativePair,
  senderPublic: Uint8Array,
  nowMs: number,
): Promise<{ body: Buffer; nonce: Uint8Array }> {
  if (!sealsAsGcm(plain.length)) return sealNativeRequest(plain, pair, senderPublic, nowMs);
  const body = gcmRequestFrame(plain.length, pair, senderPublic, nowMs);
  const nonceAad = Buffer.concat([
    body.subarray(AT_REQUEST_NONCE, GCM_REQUEST_HEAD),
    body.subarray(0, GCM_REQUEST_HEAD),
  ]);
  body.set(await pool.aeadSeal(pair.gcmKey, nonceAad, plain), GCM_REQUEST_HEAD);
  return { body, nonce: Uint8Array.from(body.subarray(AT_REQUEST_NONCE, GCM_REQUEST_HEAD)) };
}

/**
 * Seals the response to a request whose nonce was `requestNonce`: version 2, or version 1 for a
 * large body or when the request was version 1 (its sender may read nothing else).
 */
export function sealNativeResponse(
  plain: Uint8Array,
  pair: NativePair,
  requestNonce: Uint8Array,
  nowMs: number,
): Buffer {
  if (sealsAsGcm(plain.length) || requestNonce.length === GCM_NONCE_BYTES) {
    const body = gcmResponseFrame(plain.length, nowMs);
    const nonce = body.subarray(AT_RESPONSE_NONCE, GCM_RESPONSE_HEAD);
    KERNELS.aeadSeal(
      body.subarray(GCM_RESPONSE_HEAD),
      plain,
      nonce,
      gcmResponseAad(body, requestNonce),
      pair.gcmKey,
    );
    return body;
  }
  const body = Buffer.allocUnsafe(STREAM_RESPONSE_HEAD + plain.length + TAG_BYTES);
  writeResponseHead(body, NATIVE_STREAM_VERSION, nowMs);
  sealStream(body, STREAM_RESPONSE_HEAD, AT_RESPONSE_NONCE, plain, pair.sending, requestNonce);
  return body;
}

/** {@link sealNativeResponse} with a version-1 cipher on a cipher thread. */
export async function sealNativeResponseOn(
  pool: CipherPool,
  plain: Uint8Array,
  pair: NativePair,
  requestNonce: Uint8Array,
  nowMs: number,
): Promise<Buffer> {
  if (!sealsAsGcm(plain.length) && requestNonce.length !== GCM_NONCE_BYTES) {
    return sealNativeResponse(plain, pair, requestNonce, nowMs);
  }
  const body = gcmResponseFrame(plain.length, nowMs);
  const nonceAad = Buffer.concat([
    body.subarray(AT_RESPONSE_NONCE, GCM_RESPONSE_HEAD),
    gcmResponseAad(body, requestNonce),
  ]);
  body.set(await pool.aeadSeal(pair.gcmKey, nonceAad, plain), GCM_RESPONSE_HEAD);
  return body;
}

/** The clear head of a request envelope, checked for shape (not yet authenticated). */
export interface NativeRequestHead {
  /** Hex key id of the recipient key it names (computed when asked: only a cache miss needs it). */
  readonly kid: () => string;
  /** The sender's public key (a view into the body). */
  readonly senderPublic: Uint8Array;
  /** A cache key for (recipient key, sender key): the 40 bytes as latin1 text. */
  readonly pairId: string;
  readonly sentAtMs: number;
  /** A copy of the nonce (the body may be reused by the caller once an open returns). */
  readonly nonce: Uint8Array;
}

/** Reads and checks the head of a request envelope (either version) before any cipher work. */
export function readNativeRequestHead(body: Uint8Array): NativeRequestHead {
  const head = checkEnvelope(body, NATIVE_KIND_REQUEST);
  const b = toBuffer(body);
  const senderPublic = b.subarray(AT_SENDER, AT_REQUEST_NONCE);
  if (((senderPublic[31] ?? 0) & 0x80) !== 0) {
    // X25519 ignores the top bit (RFC 7748 §5): a key with it set is refused, never opened.
    throw cryptoError(
      DecryptFailure.malformed,
      `${NATIVE} request carries a non-canonical sender key (top bit set)`,
      NATIVE,
    );
  }
  return {
    kid: () => b.toString("hex", AT_KID, AT_SENDER),
    senderPublic,
    pairId: b.toString("latin1", AT_KID, AT_REQUEST_NONCE),
    sentAtMs: readUint64(b, 2),
    nonce: Uint8Array.from(b.subarray(AT_REQUEST_NONCE, head)),
  };
}

/** Opens a request envelope whose head was read with {@link readNativeRequestHead}. */
export function openNativeRequest(body: Uint8Array, pair: NativePair): Uint8Array {
  if (body[0] === NATIVE_STREAM_VERSION) {
    return openStream(body, STREAM_REQUEST_HEAD, AT_REQUEST_NONCE, pair.opening, undefined);
  }
  return opened(
    KERNELS.aeadOpen(
      body.subarray(GCM_REQUEST_HEAD),
      body.subarray(AT_REQUEST_NONCE, GCM_REQUEST_HEAD),
      body.subarray(0, GCM_REQUEST_HEAD),
      pair.gcmKey,
    ),
  );
}

/** {@link openNativeRequest} with a version-1 cipher on a cipher thread. */
export async function openNativeRequestOn(
  pool: CipherPool,
  body: Uint8Array,
  pair: NativePair,
): Promise<Uint8Array> {
  if (body[0] === NATIVE_STREAM_VERSION) return openNativeRequest(body, pair);
  const nonceAad = Buffer.concat([
    body.subarray(AT_REQUEST_NONCE, GCM_REQUEST_HEAD),
    body.subarray(0, GCM_REQUEST_HEAD),
  ]);
  return opened(await pool.aeadOpen(pair.gcmKey, nonceAad, body.subarray(GCM_REQUEST_HEAD)));
}

/** Opens a response envelope (either version) to the request whose nonce was `requestNonce`. */
export function openNativeResponse(
  body: Uint8Array,
  pair: NativePair,
  requestNonce: Uint8Array,
): Uint8Array {
  if (checkEnvelope(body, NATIVE_KIND_RESPONSE) === STREAM_RESPONSE_HEAD) {
    return openStream(body, STREAM_RESPONSE_HEAD, AT_RESPONSE_NONCE, pair.opening, requestNonce);
  }
  return opened(
    KERNELS.aeadOpen(
      body.subarray(GCM_RESPONSE_HEAD),
      body.subarray(AT_RESPONSE_NONCE, GCM_RESPONSE_HEAD),
      gcmResponseAad(body, requestNonce),
      pair.gcmKey,
    ),
  );
}

/** {@link openNativeResponse} with a version-1 cipher on a cipher thread. */
export async function openNativeResponseOn(
  pool: CipherPool,
  body: Uint8Array,
  pair: NativePair,
  requestNonce: Uint8Array,
): Promise<Uint8Array> {
  if (checkEnvelope(body, NATIVE_KIND_RESPONSE) === STREAM_RESPONSE_HEAD) {
    return openNativeResponse(body, pair, requestNonce);
  }
  const nonceAad = Buffer.concat([
    body.subarray(AT_RESPONSE_NONCE, GCM_RESPONSE_HEAD),
    gcmResponseAad(body, requestNonce),
  ]);
  return opened(await pool.aeadOpen(pair.gcmKey, nonceAad, body.subarray(GCM_RESPONSE_HEAD)));
}

function tamperedError() {
  return cryptoError(
    DecryptFailure.tampered,
    `${NATIVE} body failed authentication (tampered, truncated, sealed with another key, or the response of another request)`,
    NATIVE,
  );
}

/** The plaintext as a Buffer (as the calling thread's decipher gives), or the typed failure. */
function opened(plain: Uint8Array | null): Buffer {
  if (plain === null) throw tamperedError();
  return toBuffer(plain);
}

/**
 * Refuses a body too short, of an unknown version or of the other kind, before any cipher work.
 * @returns the length of its head (which says its version).
 */
function checkEnvelope(body: Uint8Array, kind: number): number {
  const version = body[0];
  const request = kind === NATIVE_KIND_REQUEST;
  const head =
    version === NATIVE_STREAM_VERSION
      ? request
        ? STREAM_REQUEST_HEAD
        : STREAM_RESPONSE_HEAD
      : request
        ? GCM_REQUEST_HEAD
        : GCM_RESPONSE_HEAD;
  if (body.length < head + TAG_BYTES) {
    throw cryptoError(
      DecryptFailure.malformed,
      `${NATIVE} body too short (${body.length} bytes)`,
      NATIVE,
    );
  }
  if (version !== NATIVE_STREAM_VERSION && version !== NATIVE_GCM_VERSION) {
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
  return head;
}

function writeUint32(target: Uint8Array, offset: number, value: number): void {
  target[offset] = value >>> 24;
  target[offset + 1] = (value >>> 16) & 0xff;
  target[offset + 2] = (value >>> 8) & 0xff;
  target[offset + 3] = value & 0xff;
}

function writeUint64(target: Buffer, offset: number, value: number): void {
  const ms = Math.max(0, Math.floor(value));
  target.writeUInt32BE(Math.floor(ms / 2 ** 32), offset);
  target.writeUInt32BE(ms >>> 0, offset + 4);
}

function readUint64(source: Uint8Array, offset: number): number {
  const b = toBuffer(source);
  return b.readUInt32BE(offset) * 2 ** 32 + b.readUInt32BE(offset + 4);
}
