import { constants, privateDecrypt, publicEncrypt, type KeyObject } from "node:crypto";
import nacl from "tweetnacl";
import { decodeBase64Strict, encodeBase64UrlPadded, toBuffer } from "./base64.ts";
import { CipherPool } from "./cipher-pool.ts";
import { DecryptFailure, cryptoError, guardOpen, guardOpenAsync } from "./failure.ts";
import {
  checkFernetToken,
  createFernet,
  fernetKeyBytes,
  fernetTokenFrame,
  finishFernetOpen,
  generateFernetKey,
  type Fernet,
  type FernetDecryptOptions,
} from "./fernet.ts";
import { KERNELS } from "./kernels.ts";
import {
  encodeNaclPublicKey,
  generateNaclKeyPair,
  naclKeyId,
  parseRsaPublicKey,
  type NaclKeyPair,
  type RsaKeyPair,
  type ServiceKeys,
} from "./keys.ts";
import { LruCache } from "./lru.ts";
import {
  NATIVE,
  NATIVE_CHACHA_VERSION,
  NATIVE_GCM_VERSION,
  NativePair,
  checkNativeRequest,
  deriveNativeKeyPair,
  generateNativeKeyPair,
  isRequestOfPair,
  nativeRequestKid,
  nativeRequestNonce,
  nativeRequestPairId,
  nativeRequestSender,
  nativeRequestSentAt,
  openNativeRequest,
  openNativeRequestOn,
  openNativeResponse,
  openNativeResponseOn,
  sealNativeRequest,
  sealNativeResponse,
  sealNativeResponseOn,
  x25519PublicKey,
  type NativeKeyPair,
} from "./native-suite.ts";
import { fillRandom } from "./random.ts";

/** The cipher suites. */
export const CipherSuite = {
  /**
   * X25519 + HKDF-SHA256 (node:crypto) + ChaCha20-Poly1305 (libsodium, or node:crypto where
   * sodium-native does not load), TypeScript peers only; preferred when the peer announces a
   * `native_public_key`. Its name is that of its first envelope (AES-256-GCM), still read.
   */
  native: "x25519-aes-gcm",
  /** Python NuroPb's format: RSA-OAEP-SHA256 wrapping a Fernet key. */
  rsaFernet: "rsa-fernet",
  /** X25519 + XSalsa20-Poly1305 (tweetnacl), TypeScript peers only. */
  nacl: "nacl",
} as const;
/** One of {@link CipherSuite}. */
export type CipherSuite = (typeof CipherSuite)[keyof typeof CipherSuite];

/**
 * Headers this package adds to a `nacl` message (besides `encrypted: "yes"`, which core sets).
 * An `x25519-aes-gcm` message carries none (envelope version 3, named by its first byte) or only
 * `nuropb_enc` (version 1): its key id and sender key are in the body.
 */
export const EncryptionHeader = {
  /**
   * The suite; absent means `rsa-fernet` (the Python format), or `x25519-aes-gcm` for a binary
   * body (first byte below 0x20, as its version-3 envelope; a Python body is base64 text).
   */
  suite: "nuropb_enc",
  /** Key id of the recipient's nacl public key the request was sealed for. */
  keyId: "nuropb_enc_kid",
  /** The sender's nacl public key, standard base64. Requests only. */
  senderKey: "nuropb_enc_pk",
} as const;

/** What a peer announced in its `nuropb_describe`. */
export interface PeerKeys {
  /** PEM SubjectPublicKeyInfo RSA public key (`public_key` in the Python describe). */
  readonly rsaPublicKeyPem?: string | null;
  /** Standard base64 of the peer's 32-byte X25519 public key. */
  readonly naclPublicKey?: string | null;
  /** Standard base64 of the peer's 32-byte X25519 public key for `x25519-aes-gcm`. */
  readonly nativePublicKey?: string | null;
}

/**
 * Remembered by core per correlation id to open (client) or seal (service) the response.
 * Opaque: the key material is held privately and never appears when the object is logged.
 */
export interface ReplyKey {
  readonly suite: CipherSuite;
}

/** The encryption side of one participant (client, service, or both). */
export interface PayloadEncryptor {
  /**
   * Public keys to announce in describe: PEM for Python-compatible `public_key`, base64 for nacl
   * and for `x25519-aes-gcm` (`native`, derived from the nacl key).
   */
  readonly publicKeys: PublicKeys;
  /**
   * The first enabled suite the peer announced a key for: `x25519-aes-gcm`, then `nacl`, then
   * `rsa-fernet`.
   * @throws NuropbMessageError (`details.reason` `unsupported`) when no enabled suite fits.
   */
  chooseSuite(peer: PeerKeys): CipherSuite;
  /**
   * Client: encrypts a request or command body for `peer`. `headers` are the extra headers to
   * send besides `encrypted: "yes"` (none for `rsa-fernet`, so the wire stays Python's).
   * @throws NuropbMessageError (`unsupported`) when the peer has no key for the suite, or
   *   (`malformed`) when its announced key cannot be read.
   */
  sealRequest(
    plain: Uint8Array,
    peer: PeerKeys,
    options?: { readonly suite?: CipherSuite },
  ): { body: Uint8Array; headers: Record<string, string>; replyKey: ReplyKey };
  /**
   * Client: opens the response to a request sealed with `replyKey`.
   * @throws NuropbMessageError whose `details.reason` says why it could not be opened.
   */
  openResponse(
    body: Uint8Array,
    headers: Readonly<Record<string, unknown>>,
    replyKey: ReplyKey,
  ): Uint8Array;
  /**
   * Service: opens a received request or command. The suite comes from the `nuropb_enc` header
   * (absent: `rsa-fernet`). `maxAgeMs` refuses a ciphertext older than that, or dated further in
   * the future than the clock skew allows.
   * @throws NuropbMessageError whose `details.reason` is `tampered`, `malformed`, `wrong-key`,
   *   `expired` or `unsupported`.
   */
  openRequest(
    body: Uint8Array,
    headers: Readonly<Record<string, unknown>>,
    options?: { readonly maxAgeMs?: number },
  ): { plain: Uint8Array; replyKey: ReplyKey };
  /**
   * Service: seals the response to a request opened with `replyKey` (same key as the request).
   * @throws NuropbMessageError (`unsupported`) when `replyKey` was not issued by this package.
   */
  sealResponse(
    plain: Uint8Array,
    replyKey: ReplyKey,
  ): { body: Uint8Array; headers: Record<string, string> };
  /**
   * {@link sealRequest}, with the cipher work on a cipher thread when `cipherThreads` > 0 (else
   * here). Same arguments, results and errors (as rejections), same wire.
   */
  sealRequestAsync(
    plain: Uint8Array,
    peer: PeerKeys,
    options?: { readonly suite?: CipherSuite },
  ): Promise<{ body: Uint8Array; headers: Record<string, string>; replyKey: ReplyKey }>;
  /** {@link openResponse}, on a cipher thread when there are any (see {@link sealRequestAsync}). */
  openResponseAsync(
    body: Uint8Array,
    headers: Readonly<Record<string, unknown>>,
    replyKey: ReplyKey,
  ): Promise<Uint8Array>;
  /** {@link openRequest}, on a cipher thread when there are any (see {@link sealRequestAsync}). */
  openRequestAsync(
    body: Uint8Array,
    headers: Readonly<Record<string, unknown>>,
    options?: { readonly maxAgeMs?: number },
  ): Promise<{ plain: Uint8Array; replyKey: ReplyKey }>;
  /** {@link sealResponse}, on a cipher thread when there are any (see {@link sealRequestAsync}). */
  sealResponseAsync(
    plain: Uint8Array,
    replyKey: ReplyKey,
  ): Promise<{ body: Uint8Array; headers: Record<string, string> }>;
  /**
   * Stops the cipher threads, if any, once they have finished what was handed to them; the
   * `*Async` methods then run on the calling thread. Safe to call twice.
   */
  close(): Promise<void>;
}

/** What a participant announces: each `null` when it has no key for that suite (or it is off). */
export interface PublicKeys {
  readonly rsaPem: string | null;
  readonly nacl: string | null;
  readonly native: string | null;
}

/** Options of {@link createPayloadEncryptor}. */
export interface PayloadEncryptorOptions {
  /** This participant's keys. @defaultValue none: it can seal requests and open their responses only */
  readonly keys?: ServiceKeys;
  /** Older keys still accepted when opening requests (key rotation); never announced. @defaultValue [] */
  readonly previousKeys?: readonly ServiceKeys[];
  /**
   * Suites this participant uses, to seal and to open.
   * @defaultValue ["x25519-aes-gcm", "nacl", "rsa-fernet"]
   */
  readonly suites?: readonly CipherSuite[];
  /**
   * `rsa-fernet` sender: how long one RSA-wrapped Fernet key is reused for the same target, in
   * milliseconds. 0 makes a fresh key per message, like Python. @defaultValue 30000
   */
  readonly rsaKeyReuseMs?: number;
  /** `rsa-fernet` sender: how many messages one wrapped key may serve. @defaultValue 1000 */
  readonly rsaKeyReuseMaxUses?: number;
  /** `rsa-fernet` receiver: how many unwrapped keys to remember by their RSA ciphertext. @defaultValue 1024 */
  readonly rsaUnwrapCacheSize?: number;
  /** How many peers' parsed keys and derived (nacl, x25519-aes-gcm) keys to remember. @defaultValue 1024 */
  readonly peerCacheSize?: number;
  /** With `maxAgeMs`: how far in the future a ciphertext may be dated, in milliseconds. @defaultValue 60000 */
  readonly clockSkewMs?: number;
  /** Clock, in milliseconds since the Unix epoch. @defaultValue `Date.now` */
  readonly now?: () => number;
  /**
   * Worker threads for the cipher work of the `*Async` methods (XSalsa20-Poly1305, AES + HMAC,
   * AES-GCM of x25519-aes-gcm's version 1; its version 3 always runs on the calling thread);
   * 0 does it on the calling thread. Threads help a process whose event loop is the bottleneck
   * and cost a thread hop (tens of µs) per operation; see the package README.
   * An integer from 0 to 16. @defaultValue 0
   */
  readonly cipherThreads?: number;
}

type ReplySecret =
  | { readonly suite: "rsa-fernet"; readonly fernet: Fernet; readonly keyPart: string }
  | {
      readonly suite: "nacl";
      readonly shared: Uint8Array;
      readonly requestNonce: Uint8Array;
      readonly kid: string;
    }
  | {
      readonly suite: "x25519-aes-gcm";
      readonly pair: NativePair;
      readonly requestNonce: Uint8Array;
      /** Envelope version of the request: its response is sealed in the same. */
      readonly version: number;
    };

/** The {@link ReplyKey} handed out: its secret sits in a private field, invisible to logging. */
class IssuedReplyKey implements ReplyKey {
  readonly suite: CipherSuite;
  readonly #secret: ReplySecret;

  constructor(secret: ReplySecret) {
    this.suite = secret.suite;
    this.#secret = secret;
    Object.freeze(this);
  }

  static secretOf(key: unknown): ReplySecret | undefined {
    return typeof key === "object" && key !== null && #secret in key
      ? (key as IssuedReplyKey).#secret
      : undefined;
  }
}

function issueReplyKey(secret: ReplySecret): ReplyKey {
  return new IssuedReplyKey(secret);
}

function replySecret(replyKey: ReplyKey): ReplySecret {
  const secret = IssuedReplyKey.secretOf(replyKey);
  if (secret === undefined) {
    throw cryptoError(DecryptFailure.unsupported, "Reply key was not issued by @nuropb/crypto");
  }
  return secret;
}

// nacl envelope: body = VERSION ‖ nonce(24) ‖ secretbox(shared, nonce, inner), where
// inner = kind(1) ‖ timestamp ms (8, big-endian) ‖ binding ‖ plaintext, and the binding is the
// recipient's public key (32) in a request, the request's nonce (24) in a response. The shared
// key is the same in both directions between two static keys: without the recipient inside,
// A's request to B could be sent back to A as a request "from B" (version 1 had that hole).
const NACL_VERSION = 0x02;
const RECIPIENT_BYTES = nacl.box.publicKeyLength; // 32
const KIND_REQUEST = 0x01;
const KIND_RESPONSE = 0x02;
const NONCE_BYTES = nacl.secretbox.nonceLength; // 24
const TAG_BYTES = nacl.secretbox.overheadLength; // 16
const INNER_HEAD = 1 + 8;
const NACL_MIN_BODY = 1 + NONCE_BYTES + TAG_BYTES + INNER_HEAD;

/** The options of a call that passes none: one object, not one per call. */
const NO_OPTIONS: Readonly<Record<string, never>> = Object.freeze({});
const OAEP = constants.RSA_PKCS1_OAEP_PADDING;
const RSA = CipherSuite.rsaFernet;
const NACL = CipherSuite.nacl;
const ALL_SUITES: readonly string[] = [NATIVE, NACL, RSA];
/** `nuropb_enc` of an `x25519-aes-gcm` message, request or response. */
const NATIVE_V1_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  [EncryptionHeader.suite]: NATIVE,
});

interface WrappedKey {
  readonly fernet: Fernet;
  /** Standard base64 of the RSA-OAEP ciphertext of the key text: the first part of the body. */
  readonly keyPart: string;
  readonly expiresAtMs: number;
  usesLeft: number;
}
interface RsaPeer {
  readonly publicKey: KeyObject;
  current: WrappedKey | undefined;
}
interface NaclPeer {
  readonly kid: string;
  readonly publicKey: Uint8Array;
  readonly shared: Uint8Array;
}

function nonNegative(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new TypeError(`${name} must be a finite number >= 0 (got ${String(value)})`);
  }
  return value;
}

/**
 * Creates the payload encryptor core uses to seal and open message bodies.
 * @throws TypeError for invalid options.
 * @example
 * ```ts
 * const service = createPayloadEncryptor({ keys: createServiceKeys() });
 * const client = createPayloadEncryptor({});
 * const peer = { rsaPublicKeyPem: service.publicKeys.rsaPem, naclPublicKey: service.publicKeys.nacl };
 * const sent = client.sealRequest(body, peer);                  // nacl: the peer announced a key
 * const got = service.openRequest(sent.body, sent.headers, { maxAgeMs: 30_000 });
 * const reply = service.sealResponse(answer, got.replyKey);
 * client.openResponse(reply.body, reply.headers, sent.replyKey); // answer
 * ```
 */
export function createPayloadEncryptor(options: PayloadEncryptorOptions = {}): PayloadEncryptor {
  return new Encryptor(options);
}

class Encryptor implements PayloadEncryptor {
  readonly publicKeys: PublicKeys;
  readonly #keys: ServiceKeys | undefined;
  readonly #rsaKeys: readonly RsaKeyPair[];
  readonly #naclKeys: ReadonlyMap<string, NaclKeyPair>;
  readonly #suites: ReadonlySet<CipherSuite>;
  readonly #reuseMs: number;
  readonly #reuseMaxUses: number;
  readonly #clockSkewMs: number;
  readonly #now: () => number;
  readonly #unwrapped: LruCache<string, Fernet>;
  readonly #rsaPeers: LruCache<string, RsaPeer>;
  readonly #naclPeers: LruCache<string, NaclPeer>;
  readonly #naclSenders: LruCache<string, Uint8Array>;
  readonly #pool: CipherPool | undefined;
  /** x25519-aes-gcm: own key pairs by key id, derived from the nacl keys. */
  readonly #nativeKeys: ReadonlyMap<string, NativeKeyPair>;
  /** x25519-aes-gcm sender: per announced recipient key, the pair's keys. */
  readonly #nativePeers: LruCache<string, NativePair>;
  /** x25519-aes-gcm receiver: per (own key id, sender key), the pair's keys. */
  readonly #nativeSenders: LruCache<string, NativePair>;
  /**
   * x25519-aes-gcm receiver: the pair of the last request opened. A request of the same pair
   * (the usual case: a service hears from few clients) finds it by comparing 40 bytes, with no
   * cache key made from the body.
   */
  #nativeLastSender: NativePair | undefined;
  #sendingNative: NativeKeyPair | undefined;
  #sendingNacl: { readonly pair: NaclKeyPair; readonly header: string } | undefined;

  constructor(options: PayloadEncryptorOptions) {
    const suites = options.suites ?? [NATIVE, NACL, RSA];
    if (
      !Array.isArray(suites) ||
      suites.length === 0 ||
      suites.some((s) => !ALL_SUITES.includes(s))
    ) {
      throw new TypeError(
        `suites must be a non-empty list of "x25519-aes-gcm", "nacl" and "rsa-fernet"`,
      );
    }
    this.#suites = new Set(suites);
    checkServiceKeys(options.keys, "keys");
    if (options.previousKeys !== undefined) {
      if (!Array.isArray(options.previousKeys))
        throw new TypeError("previousKeys must be an array of ServiceKeys");
      options.previousKeys.forEach((k, i) => checkServiceKeys(k, `previousKeys[${i}]`));
    }
    this.#keys = options.keys;
    const all = [options.keys, ...(options.previousKeys ?? [])].filter((k) => k !== undefined);
    this.#rsaKeys = all.flatMap((k) => (k.rsa === null ? [] : [k.rsa]));
    this.#naclKeys = new Map(
      all.flatMap((k) => (k.nacl === null ? [] : [[k.nacl.kid, k.nacl] as const])),
    );
    this.#reuseMs = nonNegative("rsaKeyReuseMs", options.rsaKeyReuseMs, 30_000);
    this.#reuseMaxUses = Math.floor(
      nonNegative("rsaKeyReuseMaxUses", options.rsaKeyReuseMaxUses, 1000),
    );
    this.#clockSkewMs = nonNegative("clockSkewMs", options.clockSkewMs, 60_000);
    const peerCache = Math.floor(nonNegative("peerCacheSize", options.peerCacheSize, 1024));
    this.#unwrapped = new LruCache(
      Math.floor(nonNegative("rsaUnwrapCacheSize", options.rsaUnwrapCacheSize, 1024)),
    );
    this.#rsaPeers = new LruCache(peerCache);
    this.#naclPeers = new LruCache(peerCache);
    this.#naclSenders = new LruCache(peerCache);
    this.#nativePeers = new LruCache(peerCache);
    this.#nativeSenders = new LruCache(peerCache);
    this.#nativeKeys = new Map(
      this.#suites.has(NATIVE)
        ? [...this.#naclKeys.values()].map((k) => {
            const pair = deriveNativeKeyPair(k.secretKey);
            return [pair.kid, pair] as const;
          })
        : [],
    );
    const ownNative =
      options.keys?.nacl === null || options.keys?.nacl === undefined
        ? undefined
        : [...this.#nativeKeys.values()][0];
    if (options.now !== undefined && typeof options.now !== "function") {
      throw new TypeError("now must be a function returning milliseconds");
    }
    this.#now = options.now ?? Date.now;
    const threads: unknown = options.cipherThreads ?? 0;
    if (!Number.isInteger(threads) || (threads as number) < 0 || (threads as number) > 16) {
      throw new TypeError(`cipherThreads must be an integer from 0 to 16 (got ${String(threads)})`);
    }
    this.#pool = threads === 0 ? undefined : new CipherPool(threads as number);
    const keys = options.keys;
    this.publicKeys = Object.freeze({
      rsaPem: this.#suites.has(RSA) ? (keys?.rsa?.publicKeyPem ?? null) : null,
      nacl:
        this.#suites.has(NACL) && keys?.nacl !== null && keys?.nacl !== undefined
          ? encodeNaclPublicKey(keys.nacl.publicKey)
          : null,
      native: ownNative?.publicKeyText ?? null,
    });
    this.#sendingNative = ownNative;
  }

  chooseSuite(peer: PeerKeys): CipherSuite {
    if (this.#suites.has(NATIVE) && hasText(peer.nativePublicKey)) return NATIVE;
    if (this.#suites.has(NACL) && hasText(peer.naclPublicKey)) return NACL;
    if (this.#suites.has(RSA) && hasText(peer.rsaPublicKeyPem)) return RSA;
    throw cryptoError(
      DecryptFailure.unsupported,
      `Peer announced no public key for an enabled suite (enabled: ${[...this.#suites].join(", ")}; ` +
        `peer has rsa: ${hasText(peer.rsaPublicKeyPem)}, nacl: ${hasText(peer.naclPublicKey)}, ` +
        `${NATIVE}: ${hasText(peer.nativePublicKey)})`,
    );
  }

  sealRequest(
    plain: Uint8Array,
    peer: PeerKeys,
    options: { readonly suite?: CipherSuite } = NO_OPTIONS,
  ): { body: Uint8Array; headers: Record<string, string>; replyKey: ReplyKey } {
    const suite = this.#sealingSuite(plain, peer, options);
    if (suite === NATIVE) {
      const { pair, own } = this.#nativePeer(peer);
      const { body, nonce } = sealNativeRequest(plain, pair, own.publicKey, this.#now());
      return nativeRequestResult(pair, body, nonce);
    }
    return suite === NACL ? this.#sealNaclRequest(plain, peer) : this.#sealRsaRequest(plain, peer);
  }

  async sealRequestAsync(
    plain: Uint8Array,
    peer: PeerKeys,
    options: { readonly suite?: CipherSuite } = NO_OPTIONS,
  ): Promise<{ body: Uint8Array; headers: Record<string, string>; replyKey: ReplyKey }> {
    const pool = this.#pool;
    if (pool === undefined) return this.sealRequest(plain, peer, options);
    const suite = this.#sealingSuite(plain, peer, options);
    if (suite === RSA) {
      const wrapped = this.#rsaSendingKey(peer);
      const token = await fernetEncryptOn(pool, wrapped.fernet, plain, this.#now());
      return this.#rsaRequestResult(wrapped, token);
    }
    if (suite === NATIVE) {
      // Version 3 costs less than the hop to a cipher thread: it runs here.
      const { pair, own } = this.#nativePeer(peer);
      const { body, nonce } = sealNativeRequest(plain, pair, own.publicKey, this.#now());
      return nativeRequestResult(pair, body, nonce);
    }
    const { entry, own } = this.#naclPeer(peer);
    const sealed = await sealNaclOn(
      pool,
      plain,
      entry.shared,
      KIND_REQUEST,
      this.#now(),
      entry.publicKey,
    );
    return this.#naclRequestResult(entry, own, sealed.nonce, sealed.body);
  }

  #sealingSuite(
    plain: Uint8Array,
    peer: PeerKeys,
    options: { readonly suite?: CipherSuite },
  ): CipherSuite {
    checkPlain(plain);
    const suite = options.suite ?? this.chooseSuite(peer);
    if (!this.#suites.has(suite)) {
      throw cryptoError(DecryptFailure.unsupported, `Suite ${String(suite)} is not enabled`, suite);
    }
    return suite;
  }

  async close(): Promise<void> {
    await this.#pool?.close();
  }

  openResponse(
    body: Uint8Array,
    headers: Readonly<Record<string, unknown>>,
    replyKey: ReplyKey,
  ): Uint8Array {
    const secret = replySecret(replyKey);
    return guardOpen(secret.suite, () => {
      checkResponseSuite(headers, body, secret);
      if (secret.suite === RSA) return secret.fernet.decrypt(splitRsaBody(body).token);
      if (secret.suite === NATIVE) {
        return openNativeResponse(body, secret.pair, secret.requestNonce, secret.version);
      }
      return responseInner(openNacl(body, secret.shared, KIND_RESPONSE), secret.requestNonce);
    });
  }

  async openResponseAsync(
    body: Uint8Array,
    headers: Readonly<Record<string, unknown>>,
    replyKey: ReplyKey,
  ): Promise<Uint8Array> {
    const pool = this.#pool;
    if (pool === undefined) return this.openResponse(body, headers, replyKey);
    const secret = replySecret(replyKey);
    return guardOpenAsync(secret.suite, async () => {
      checkResponseSuite(headers, body, secret);
      if (secret.suite === RSA) {
        return fernetDecryptOn(pool, secret.fernet, splitRsaBody(body).token);
      }
      if (secret.suite === NATIVE) {
        return openNativeResponseOn(pool, body, secret.pair, secret.requestNonce, secret.version);
      }
      const inner = await openNaclOn(pool, body, secret.shared, KIND_RESPONSE);
      return responseInner(inner, secret.requestNonce);
    });
  }

  openRequest(
    body: Uint8Array,
    headers: Readonly<Record<string, unknown>>,
    options: { readonly maxAgeMs?: number } = NO_OPTIONS,
  ): { plain: Uint8Array; replyKey: ReplyKey } {
    checkMaxAge(options.maxAgeMs);
    return guardOpen(undefined, () => {
      const maxAgeMs = options.maxAgeMs;
      const suite = this.#openingSuite(headers, body);
      if (suite === NATIVE) {
        const { version, pair } = this.#nativeSender(body);
        const plain = openNativeRequest(body, pair);
        return this.#nativeRequestOpened(plain, body, version, pair, maxAgeMs);
      }
      return suite === NACL
        ? this.#openNaclRequest(body, headers, maxAgeMs)
        : this.#openRsaRequest(body, maxAgeMs);
    });
  }

  async openRequestAsync(
    body: Uint8Array,
    headers: Readonly<Record<string, unknown>>,
    options: { readonly maxAgeMs?: number } = NO_OPTIONS,
  ): Promise<{ plain: Uint8Array; replyKey: ReplyKey }> {
    const pool = this.#pool;
    if (pool === undefined) return this.openRequest(body, headers, options);
    checkMaxAge(options.maxAgeMs);
    return guardOpenAsync(undefined, async () => {
      const maxAgeMs = options.maxAgeMs;
      const suite = this.#openingSuite(headers, body);
      if (suite === NATIVE) {
        const { version, pair } = this.#nativeSender(body);
        // Read before the await: the caller may reuse `body`.
        const sentAtMs = nativeRequestSentAt(body);
        const nonce = nativeRequestNonce(body);
        const plain = await openNativeRequestOn(pool, body, pair);
        return this.#nativeRequestReplied(plain, sentAtMs, nonce, version, pair, maxAgeMs);
      }
      if (suite === RSA) {
        const { keyPart, token } = splitRsaBody(body);
        const fernet = this.#unwrapCached(keyPart);
        const plain = await fernetDecryptOn(pool, fernet, token, this.#fernetAge(maxAgeMs));
        return { plain, replyKey: issueReplyKey({ suite: RSA, fernet, keyPart }) };
      }
      const { own, kid, shared } = this.#naclSender(headers);
      const nonce = requestNonce(body); // before the await: the caller may reuse `body`
      const inner = await openNaclOn(pool, body, shared, KIND_REQUEST);
      return this.#naclRequestOpened(nonce, inner, own, kid, shared, maxAgeMs);
    });
  }

  #openingSuite(headers: Readonly<Record<string, unknown>>, body: Uint8Array): CipherSuite {
    const suite = suiteOf(headers, body);
    if (!this.#suites.has(suite)) {
      throw cryptoError(DecryptFailure.unsupported, `Suite ${suite} is not enabled here`, suite);
    }
    return suite;
  }

  sealResponse(
    plain: Uint8Array,
    replyKey: ReplyKey,
  ): { body: Uint8Array; headers: Record<string, string> } {
    checkPlain(plain);
    const secret = replySecret(replyKey);
    const now = this.#now();
    if (secret.suite === RSA) {
      // Python wraps the key again with the service's own public key; the request's key part is
      // exactly that (the same key under the same public key), so it is reused at no RSA cost.
      return { body: rsaBody(secret.keyPart, secret.fernet.encrypt(plain, { now })), headers: {} };
    }
    if (secret.suite === NATIVE) {
      const body = sealNativeResponse(plain, secret.pair, secret.requestNonce, secret.version, now);
      return { body, headers: nativeHeaders(body) };
    }
    const body = sealNacl(plain, secret.shared, KIND_RESPONSE, now, secret.requestNonce).body;
    return { body, headers: naclResponseHeaders(secret.kid) };
  }

  async sealResponseAsync(
    plain: Uint8Array,
    replyKey: ReplyKey,
  ): Promise<{ body: Uint8Array; headers: Record<string, string> }> {
    const pool = this.#pool;
    if (pool === undefined) return this.sealResponse(plain, replyKey);
    checkPlain(plain);
    const secret = replySecret(replyKey);
    const now = this.#now();
    if (secret.suite === RSA) {
      const token = await fernetEncryptOn(pool, secret.fernet, plain, now);
      return { body: rsaBody(secret.keyPart, token), headers: {} };
    }
    if (secret.suite === NATIVE) {
      const body = await sealNativeResponseOn(
        pool,
        plain,
        secret.pair,
        secret.requestNonce,
        secret.version,
        now,
      );
      return { body, headers: nativeHeaders(body) };
    }
    const sealed = await sealNaclOn(
      pool,
      plain,
      secret.shared,
      KIND_RESPONSE,
      now,
      secret.requestNonce,
    );
    return { body: sealed.body, headers: naclResponseHeaders(secret.kid) };
  }

  // ---- rsa-fernet ----

  #sealRsaRequest(plain: Uint8Array, peer: PeerKeys) {
    const wrapped = this.#rsaSendingKey(peer);
    return this.#rsaRequestResult(wrapped, wrapped.fernet.encrypt(plain, { now: this.#now() }));
  }

  #rsaRequestResult(wrapped: WrappedKey, token: string) {
    return {
      body: rsaBody(wrapped.keyPart, token),
      headers: {},
      replyKey: issueReplyKey({ suite: RSA, fernet: wrapped.fernet, keyPart: wrapped.keyPart }),
    };
  }

  /** The wrapped Fernet key to use for `peer` now (one use counted). */
  #rsaSendingKey(peer: PeerKeys): WrappedKey {
    const pem = peer.rsaPublicKeyPem;
    if (!hasText(pem)) {
      throw cryptoError(DecryptFailure.unsupported, "Peer announced no RSA public key", RSA);
    }
    let entry = this.#rsaPeers.get(pem);
    if (entry === undefined) {
      let publicKey: KeyObject;
      try {
        publicKey = parseRsaPublicKey(pem);
      } catch (err) {
        throw cryptoError(
          DecryptFailure.malformed,
          `Peer's RSA public key: ${err instanceof Error ? err.message : String(err)}`,
          RSA,
          err,
        );
      }
      entry = { publicKey, current: undefined };
      this.#rsaPeers.set(pem, entry);
    }
    const now = this.#now();
    let wrapped = entry.current;
    if (wrapped === undefined || wrapped.usesLeft <= 0 || now >= wrapped.expiresAtMs) {
      const keyText = generateFernetKey();
      const keyPart = publicEncrypt(
        { key: entry.publicKey, padding: OAEP, oaepHash: "sha256" },
        Buffer.from(keyText, "latin1"),
      ).toString("base64");
      wrapped = {
        fernet: createFernet(keyText),
        keyPart,
        expiresAtMs: now + this.#reuseMs,
        usesLeft: this.#reuseMaxUses,
      };
      entry.current = this.#reuseMs > 0 && this.#reuseMaxUses > 1 ? wrapped : undefined;
    }
    wrapped.usesLeft -= 1;
    return wrapped;
  }

  #openRsaRequest(
    body: Uint8Array,
    maxAgeMs: number | undefined,
  ): { plain: Uint8Array; replyKey: ReplyKey } {
    const { keyPart, token } = splitRsaBody(body);
    const fernet = this.#unwrapCached(keyPart);
    const plain = fernet.decrypt(token, this.#fernetAge(maxAgeMs));
    return { plain, replyKey: issueReplyKey({ suite: RSA, fernet, keyPart }) };
  }

  #unwrapCached(keyPart: string): Fernet {
    let fernet = this.#unwrapped.get(keyPart);
    if (fernet === undefined) {
      fernet = this.#unwrap(keyPart);
      this.#unwrapped.set(keyPart, fernet);
    }
    return fernet;
  }

  /** Fernet decrypt options for a request that may be `maxAgeMs` old (none: no age check). */
  #fernetAge(maxAgeMs: number | undefined): FernetDecryptOptions {
    return maxAgeMs === undefined
      ? {}
      : { ttlSec: maxAgeMs / 1000, now: this.#now(), clockSkewSec: this.#clockSkewMs / 1000 };
  }

  #unwrap(keyPart: string): Fernet {
    if (this.#rsaKeys.length === 0) {
      throw cryptoError(
        DecryptFailure.unsupported,
        "This participant holds no RSA private key",
        RSA,
      );
    }
    const wrapped = decodeBase64Strict(keyPart);
    if (wrapped === null) {
      throw cryptoError(
        DecryptFailure.malformed,
        "Key part of the body is not standard base64",
        RSA,
      );
    }
    let keyText: Buffer | undefined;
    for (const pair of this.#rsaKeys) {
      if (wrapped.length !== Math.ceil(pair.modulusBits / 8)) continue;
      try {
        keyText = privateDecrypt(
          { key: pair.privateKey, padding: OAEP, oaepHash: "sha256" },
          wrapped,
        );
        break;
      } catch {
        // Not for this key (or damaged); try the next one.
      }
    }
    if (keyText === undefined) {
      throw cryptoError(
        DecryptFailure.wrongKey,
        `Cannot unwrap the key part (${wrapped.length} bytes): encrypted for another RSA key, or damaged`,
        RSA,
      );
    }
    try {
      return createFernet(keyText.toString("latin1"));
    } catch (err) {
      throw cryptoError(DecryptFailure.malformed, "Unwrapped key is not a Fernet key", RSA, err);
    }
  }

  // ---- x25519-aes-gcm ----

  /** The pair's keys (cached), and the key pair this participant sends from. */
  #nativePeer(peer: PeerKeys): { pair: NativePair; own: NativeKeyPair } {
    const announced = peer.nativePublicKey;
    if (!hasText(announced)) {
      throw cryptoError(
        DecryptFailure.unsupported,
        `Peer announced no ${NATIVE} public key`,
        NATIVE,
      );
    }
    // A participant without keys of its own sends from an ephemeral key pair, made once: its
    // public key rides in each request, so the recipient needs nothing in advance.
    const own = (this.#sendingNative ??= generateNativeKeyPair());
    let pair = this.#nativePeers.get(announced);
    if (pair === undefined) {
      const publicKey = decodeBase64Strict(announced);
      if (publicKey === null || !isCanonicalX25519Key(publicKey)) {
        throw cryptoError(
          DecryptFailure.malformed,
          `Peer's ${NATIVE} public key must be 32 bytes as standard base64, top bit clear`,
          NATIVE,
        );
      }
      pair = guardOpen(
        NATIVE,
        () => new NativePair(own.privateKey, x25519PublicKey(publicKey), own.publicKey, publicKey),
      );
      this.#nativePeers.set(announced, pair);
    }
    return { pair, own };
  }

  /**
   * The version of a native request, its head checked, and the pair of keys shared with its
   * sender (cached).
   */
  #nativeSender(body: Uint8Array): { version: number; pair: NativePair } {
    if (this.#nativeKeys.size === 0) {
      throw cryptoError(
        DecryptFailure.unsupported,
        `This participant holds no ${NATIVE} key (it derives from a nacl key)`,
        NATIVE,
      );
    }
    const version = checkNativeRequest(body);
    const last = this.#nativeLastSender;
    if (last !== undefined && isRequestOfPair(body, last)) return { version, pair: last };
    const pairId = nativeRequestPairId(body);
    let pair = this.#nativeSenders.get(pairId);
    if (pair === undefined) {
      const kid = nativeRequestKid(body);
      const own = this.#nativeKeys.get(kid);
      if (own === undefined) {
        throw cryptoError(
          DecryptFailure.wrongKey,
          `${NATIVE} request sealed for key id ${kid}; this participant holds ${[...this.#nativeKeys.keys()].join(", ")}`,
          NATIVE,
        );
      }
      const sender = nativeRequestSender(body);
      pair = new NativePair(own.privateKey, x25519PublicKey(sender), sender, own.publicKey);
      this.#nativeSenders.set(pairId, pair);
    }
    this.#nativeLastSender = pair;
    return { version, pair };
  }

  /** The age checks on a native request just opened from `body`, and its reply key. */
  #nativeRequestOpened(
    plain: Uint8Array,
    body: Uint8Array,
    version: number,
    pair: NativePair,
    maxAgeMs: number | undefined,
  ): { plain: Uint8Array; replyKey: ReplyKey } {
    return this.#nativeRequestReplied(
      plain,
      nativeRequestSentAt(body),
      nativeRequestNonce(body),
      version,
      pair,
      maxAgeMs,
    );
  }

  /** The age checks on an opened native request, and its reply key. */
  #nativeRequestReplied(
    plain: Uint8Array,
    sentAtMs: number,
    requestNonce: Uint8Array,
    version: number,
    pair: NativePair,
    maxAgeMs: number | undefined,
  ): { plain: Uint8Array; replyKey: ReplyKey } {
    if (maxAgeMs !== undefined) this.#checkAge(sentAtMs, maxAgeMs, NATIVE);
    return {
      plain,
      replyKey: issueReplyKey({ suite: NATIVE, pair, requestNonce, version }),
    };
  }

  /** Refuses a request sent more than `maxAgeMs` ago, or dated beyond the allowed clock skew. */
  #checkAge(sentAt: number, maxAgeMs: number, suite: CipherSuite): void {
    const now = this.#now();
    if (now - sentAt > maxAgeMs) {
      throw cryptoError(
        DecryptFailure.expired,
        `${suite} request is ${now - sentAt} ms old (max ${maxAgeMs} ms)`,
        suite,
      );
    }
    if (sentAt - now > this.#clockSkewMs) {
      throw cryptoError(
        DecryptFailure.expired,
        `${suite} request dated ${sentAt - now} ms in the future (clock skew over ${this.#clockSkewMs} ms)`,
        suite,
      );
    }
  }

  // ---- nacl ----

  #sendingKey(): { readonly pair: NaclKeyPair; readonly header: string } {
    // A participant without its own nacl key sends from an ephemeral one: its public key rides in
    // the request header, so the recipient needs nothing in advance. It is never announced.
    if (this.#sendingNacl === undefined) {
      const pair = this.#keys?.nacl ?? generateNaclKeyPair();
      this.#sendingNacl = { pair, header: encodeNaclPublicKey(pair.publicKey) };
    }
    return this.#sendingNacl;
  }

  #sealNaclRequest(plain: Uint8Array, peer: PeerKeys) {
    const { entry, own } = this.#naclPeer(peer);
    const { body, nonce } = sealNacl(
      plain,
      entry.shared,
      KIND_REQUEST,
      this.#now(),
      entry.publicKey,
    );
    return this.#naclRequestResult(entry, own, nonce, body);
  }

  /** The peer's parsed key and shared key (cached), and the key this participant sends from. */
  #naclPeer(peer: PeerKeys): {
    entry: NaclPeer;
    own: { readonly pair: NaclKeyPair; readonly header: string };
  } {
    const announced = peer.naclPublicKey;
    if (!hasText(announced)) {
      throw cryptoError(DecryptFailure.unsupported, "Peer announced no nacl public key", NACL);
    }
    const own = this.#sendingKey();
    let entry = this.#naclPeers.get(announced);
    if (entry === undefined) {
      const publicKey = decodeBase64Strict(announced);
      if (publicKey === null || !isCanonicalX25519Key(publicKey)) {
        throw cryptoError(
          DecryptFailure.malformed,
          `Peer's nacl public key must be ${nacl.box.publicKeyLength} bytes as standard base64, top bit clear`,
          NACL,
        );
      }
      entry = {
        kid: naclKeyId(publicKey),
        publicKey: Uint8Array.from(publicKey),
        shared: nacl.box.before(publicKey, own.pair.secretKey),
      };
      this.#naclPeers.set(announced, entry);
    }
    return { entry, own };
  }

  #naclRequestResult(
    entry: NaclPeer,
    own: { readonly header: string },
    nonce: Uint8Array,
    body: Uint8Array,
  ) {
    return {
      body,
      headers: {
        [EncryptionHeader.suite]: NACL,
        [EncryptionHeader.keyId]: entry.kid,
        [EncryptionHeader.senderKey]: own.header,
      },
      replyKey: issueReplyKey({
        suite: NACL,
        shared: entry.shared,
        requestNonce: nonce,
        kid: entry.kid,
      }),
    };
  }

  #openNaclRequest(
    body: Uint8Array,
    headers: Readonly<Record<string, unknown>>,
    maxAgeMs: number | undefined,
  ): { plain: Uint8Array; replyKey: ReplyKey } {
    const { own, kid, shared } = this.#naclSender(headers);
    const inner = openNacl(body, shared, KIND_REQUEST);
    return this.#naclRequestOpened(requestNonce(body), inner, own, kid, shared, maxAgeMs);
  }

  /** Which of this participant's keys a nacl request names, and the key shared with its sender. */
  #naclSender(headers: Readonly<Record<string, unknown>>): {
    own: NaclKeyPair;
    kid: string;
    shared: Uint8Array;
  } {
    if (this.#naclKeys.size === 0) {
      throw cryptoError(DecryptFailure.unsupported, "This participant holds no nacl key", NACL);
    }
    const kid = headerText(headers, EncryptionHeader.keyId);
    const sender = headerText(headers, EncryptionHeader.senderKey);
    if (kid === undefined || sender === undefined) {
      throw cryptoError(
        DecryptFailure.malformed,
        `nacl request lacks the ${EncryptionHeader.keyId} or ${EncryptionHeader.senderKey} header`,
        NACL,
      );
    }
    const own = this.#naclKeys.get(kid);
    if (own === undefined) {
      throw cryptoError(
        DecryptFailure.wrongKey,
        `nacl request sealed for key id ${JSON.stringify(kid.slice(0, 64))}; this participant holds ${[...this.#naclKeys.keys()].join(", ")}`,
        NACL,
      );
    }
    const cacheKey = `${kid}:${sender}`;
    let shared = this.#naclSenders.get(cacheKey);
    if (shared === undefined) {
      const senderKey = decodeBase64Strict(sender);
      if (senderKey === null || !isCanonicalX25519Key(senderKey)) {
        throw cryptoError(
          DecryptFailure.malformed,
          `${EncryptionHeader.senderKey} must be a ${nacl.box.publicKeyLength}-byte key as standard base64, top bit clear`,
          NACL,
        );
      }
      shared = nacl.box.before(senderKey, own.secretKey);
      this.#naclSenders.set(cacheKey, shared);
    }
    return { own, kid, shared };
  }

  /** The checks on an opened nacl request (recipient, age) and what it carries. */
  #naclRequestOpened(
    nonce: Uint8Array,
    inner: Uint8Array,
    own: NaclKeyPair,
    kid: string,
    shared: Uint8Array,
    maxAgeMs: number | undefined,
  ): { plain: Uint8Array; replyKey: ReplyKey } {
    if (
      inner.length < INNER_HEAD + RECIPIENT_BYTES ||
      !equalBytes(inner.subarray(INNER_HEAD, INNER_HEAD + RECIPIENT_BYTES), own.publicKey)
    ) {
      // Sealed by this sender for another recipient: a request reflected or redirected here.
      throw cryptoError(
        DecryptFailure.tampered,
        "nacl request was sealed for another recipient (reflected or redirected)",
        NACL,
      );
    }
    if (maxAgeMs !== undefined) this.#checkAge(readUint64(inner, 1), maxAgeMs, NACL);
    return {
      plain: inner.subarray(INNER_HEAD + RECIPIENT_BYTES),
      replyKey: issueReplyKey({ suite: NACL, shared, requestNonce: nonce, kid }),
    };
  }
}

function hasText(value: string | null | undefined): value is string {
  return typeof value === "string" && value.length > 0;
}

function headerText(headers: Readonly<Record<string, unknown>>, name: string): string | undefined {
  const value: unknown = headers[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value;
  if (value instanceof Uint8Array) return toBuffer(value).toString("utf8");
  throw cryptoError(DecryptFailure.malformed, `Header ${name} is not text`);
}

/**
 * The suite of a sealed body: its `nuropb_enc` header, or without one, `x25519-aes-gcm` for a
 * binary envelope (first byte below 0x20, as version 3 writes 0x03: an `rsa-fernet` body is
 * base64 text, never that) and `rsa-fernet` (Python's wire) for anything else.
 */
function suiteOf(headers: Readonly<Record<string, unknown>>, body: Uint8Array): CipherSuite {
  const value = headerText(headers, EncryptionHeader.suite);
  if (value === undefined || value === "") {
    const first = body[0];
    if (first === undefined || first >= 0x20) return RSA; // base64 text, as Python writes
    if (first === NATIVE_GCM_VERSION || first === NATIVE_CHACHA_VERSION) return NATIVE;
    // A binary body that is no native envelope: say so rather than name a suite it is not.
    throw cryptoError(
      DecryptFailure.unsupported,
      `an encrypted body of no known suite (first byte ${String(first)}, no ${EncryptionHeader.suite} header${
        first === NACL_VERSION ? `: a ${NACL} body sent without its header?` : ""
      })`,
    );
  }
  if (value === RSA) return RSA;
  if (value === NACL) return NACL;
  if (value === NATIVE) return NATIVE;
  throw cryptoError(
    DecryptFailure.unsupported,
    `Unknown encryption suite ${JSON.stringify(value.slice(0, 64))} in header ${EncryptionHeader.suite}`,
  );
}

function rsaBody(keyPart: string, token: string): Uint8Array {
  return Buffer.from(`${keyPart}.${Buffer.from(token, "latin1").toString("base64")}`, "latin1");
}

function splitRsaBody(body: Uint8Array): { keyPart: string; token: Buffer } {
  const text = toBuffer(body).toString("latin1");
  const dot = text.indexOf(".");
  if (dot < 0) {
    throw cryptoError(
      DecryptFailure.malformed,
      "Encrypted body has no '.' between key part and token",
      RSA,
    );
  }
  const token = decodeBase64Strict(text.slice(dot + 1));
  if (token === null) {
    throw cryptoError(
      DecryptFailure.malformed,
      "Token part of the body is not standard base64",
      RSA,
    );
  }
  return { keyPart: text.slice(0, dot), token };
}

// tweetnacl's `secretbox`/`secretbox.open` copy the message into a zero-padded array, allocate
// the output and are sliced and copied again into the envelope: for a few hundred bytes that
// costs a third of the cipher itself. The same XSalsa20-Poly1305 of the same library is called
// here through `nacl.lowlevel` (kernels.ts) on the envelope's own bytes (ZEROBYTES = 32 leading
// zero bytes of message, BOXZEROBYTES = 16 of ciphertext, as NaCl's crypto_secretbox defines them).
const ZERO_BYTES = 32;
const BOX_ZERO_BYTES = ZERO_BYTES - TAG_BYTES; // 16
/** Where crypto_secretbox's output starts in the body so its tag lands right after the nonce. */
const BOX_AT = 1 + NONCE_BYTES - BOX_ZERO_BYTES;

/** m = 32 zero bytes ‖ inner, and a fresh nonce: what crypto_secretbox takes. */
function naclMessage(
  plain: Uint8Array,
  kind: number,
  nowMs: number,
  binding: Uint8Array,
): { m: Uint8Array; nonce: Uint8Array } {
  const innerLength = INNER_HEAD + binding.length + plain.length;
  const m = new Uint8Array(ZERO_BYTES + innerLength);
  m[ZERO_BYTES] = kind;
  writeUint64(m, ZERO_BYTES + 1, nowMs);
  m.set(binding, ZERO_BYTES + INNER_HEAD);
  m.set(plain, ZERO_BYTES + INNER_HEAD + binding.length);
  const nonce = new Uint8Array(NONCE_BYTES);
  fillRandom(nonce, 0, NONCE_BYTES);
  return { m, nonce };
}

/** `binding`: the recipient's public key (request) or the request's nonce (response). */
function sealNacl(
  plain: Uint8Array,
  shared: Uint8Array,
  kind: number,
  nowMs: number,
  binding: Uint8Array,
): { body: Uint8Array; nonce: Uint8Array } {
  const { m, nonce } = naclMessage(plain, kind, nowMs, binding);
  // body = VERSION ‖ nonce ‖ tag ‖ ciphertext. crypto_secretbox writes 16 zero bytes ‖ tag ‖
  // ciphertext; written at BOX_AT, its zeros fall on the nonce's place, filled in afterwards.
  const body = Buffer.allocUnsafe(BOX_AT + m.length);
  KERNELS.box(body.subarray(BOX_AT), m, nonce, shared);
  body[0] = NACL_VERSION;
  body.set(nonce, 1);
  return { body, nonce };
}

/** {@link sealNacl} with the cipher on a cipher thread. */
async function sealNaclOn(
  pool: CipherPool,
  plain: Uint8Array,
  shared: Uint8Array,
  kind: number,
  nowMs: number,
  binding: Uint8Array,
): Promise<{ body: Uint8Array; nonce: Uint8Array }> {
  const { m, nonce } = naclMessage(plain, kind, nowMs, binding);
  const c = await pool.box(shared, nonce, m);
  const body = Buffer.allocUnsafe(BOX_AT + c.length);
  body.set(c.subarray(BOX_ZERO_BYTES), 1 + NONCE_BYTES);
  body[0] = NACL_VERSION;
  body.set(nonce, 1);
  return { body, nonce };
}

/** A copy of a nacl request's nonce (bound into its response). Checked bodies only. */
function requestNonce(body: Uint8Array): Uint8Array {
  return Uint8Array.from(body.subarray(1, 1 + NONCE_BYTES));
}

/** Refuses a nacl body too short or of another version before any cipher work. */
function checkNaclBody(body: Uint8Array): void {
  if (body.length < NACL_MIN_BODY) {
    throw cryptoError(DecryptFailure.malformed, `nacl body too short (${body.length} bytes)`, NACL);
  }
  if (body[0] !== NACL_VERSION) {
    throw cryptoError(
      DecryptFailure.unsupported,
      body[0] === 0x01
        ? "nacl envelope version 1 is refused: it did not bind the recipient (update the sender)"
        : `Unknown nacl envelope version ${body[0] ?? 0}`,
      NACL,
    );
  }
}

function openNacl(body: Uint8Array, shared: Uint8Array, kind: number): Uint8Array {
  checkNaclBody(body);
  // crypto_secretbox_open reads the tag at c[16..32] and the ciphertext from c[32..]: the body
  // seen from BOX_AT. It never writes c, and c[0..16] (nonce bytes here) only fill m's zeros.
  const m = new Uint8Array(body.length - BOX_AT);
  const opened = KERNELS.unbox(m, body.subarray(BOX_AT), body.subarray(1, 1 + NONCE_BYTES), shared);
  return naclInner(opened ? m : null, kind);
}

/** {@link openNacl} with the cipher on a cipher thread. */
async function openNaclOn(
  pool: CipherPool,
  body: Uint8Array,
  shared: Uint8Array,
  kind: number,
): Promise<Uint8Array> {
  checkNaclBody(body);
  const m = await pool.unbox(shared, body.subarray(1, 1 + NONCE_BYTES), body.subarray(BOX_AT));
  return naclInner(m, kind);
}

/** The inner bytes of an opened box (`null`: it did not authenticate), checked to be `kind`. */
function naclInner(m: Uint8Array | null, kind: number): Uint8Array {
  if (m === null) {
    throw cryptoError(
      DecryptFailure.tampered,
      "nacl body failed authentication (tampered, truncated, or sealed with another key)",
      NACL,
    );
  }
  const inner = m.subarray(ZERO_BYTES);
  if (inner[0] !== kind) {
    throw cryptoError(
      DecryptFailure.tampered,
      kind === KIND_REQUEST
        ? "A nacl response was replayed as a request"
        : "A nacl request was replayed as a response",
      NACL,
    );
  }
  return inner;
}

/** A nacl response's plaintext, once its inner bytes name the request's nonce. */
function responseInner(inner: Uint8Array, requestNonce: Uint8Array): Uint8Array {
  const nonce = inner.subarray(INNER_HEAD, INNER_HEAD + NONCE_BYTES);
  if (inner.length < INNER_HEAD + NONCE_BYTES || !equalBytes(nonce, requestNonce)) {
    throw cryptoError(DecryptFailure.tampered, "nacl response belongs to another request", NACL);
  }
  return inner.subarray(INNER_HEAD + NONCE_BYTES);
}

function nativeRequestResult(
  pair: NativePair,
  body: Uint8Array,
  nonce: Uint8Array,
): { body: Uint8Array; headers: Record<string, string>; replyKey: ReplyKey } {
  return {
    body,
    headers: nativeHeaders(body),
    replyKey: issueReplyKey({
      suite: NATIVE,
      pair,
      requestNonce: nonce,
      version: body[0] ?? NATIVE_CHACHA_VERSION,
    }),
  };
}

/**
 * Headers of a native body: none for a version-3 envelope (its first byte names it, and on AMQP
 * each header costs both peers and the broker per message), `nuropb_enc` for version 1 (as
 * earlier builds, which read only version 1 and require the header, sent and expect).
 */
function nativeHeaders(body: Uint8Array): Record<string, string> {
  return body[0] === NATIVE_CHACHA_VERSION ? {} : { ...NATIVE_V1_HEADERS };
}

function naclResponseHeaders(kid: string): Record<string, string> {
  return { [EncryptionHeader.suite]: NACL, [EncryptionHeader.keyId]: kid };
}

/** A response must come back in the suite its request went out in. */
function checkResponseSuite(
  headers: Readonly<Record<string, unknown>>,
  body: Uint8Array,
  secret: { readonly suite: CipherSuite },
): void {
  const suite = suiteOf(headers, body);
  if (suite !== secret.suite) {
    throw cryptoError(
      DecryptFailure.unsupported,
      `Response sealed with ${suite} but the request used ${secret.suite}`,
      secret.suite,
    );
  }
}

/** A caller's mistake, not a bad message: thrown as it is, not as a refusal of the message. */
function checkMaxAge(maxAge: unknown): void {
  if (
    maxAge !== undefined &&
    (typeof maxAge !== "number" || !Number.isFinite(maxAge) || maxAge < 0)
  ) {
    throw new TypeError(`maxAgeMs must be a finite number >= 0 (got ${String(maxAge)})`);
  }
}

/** `fernet.encrypt(plain, { now })` with AES + HMAC on a cipher thread. */
async function fernetEncryptOn(
  pool: CipherPool,
  fernet: Fernet,
  plain: Uint8Array,
  now: number,
): Promise<string> {
  const { token, data } = fernetTokenFrame(plain, { now });
  return encodeBase64UrlPadded(await pool.fernetSeal(fernetKeyBytes(fernet), data, token));
}

/** `fernet.decrypt(token, options)` with HMAC + AES on a cipher thread. */
async function fernetDecryptOn(
  pool: CipherPool,
  fernet: Fernet,
  token: Uint8Array,
  options: FernetDecryptOptions = {},
): Promise<Buffer> {
  const checked = checkFernetToken(token, options);
  return finishFernetOpen(await pool.fernetOpen(fernetKeyBytes(fernet), checked.data), checked);
}

function writeUint64(target: Uint8Array, offset: number, value: number): void {
  const view = new DataView(target.buffer, target.byteOffset, target.byteLength);
  const ms = Math.max(0, Math.floor(value));
  view.setUint32(offset, Math.floor(ms / 2 ** 32));
  view.setUint32(offset + 4, ms >>> 0);
}

function readUint64(source: Uint8Array, offset: number): number {
  const view = new DataView(source.buffer, source.byteOffset, source.byteLength);
  return view.getUint32(offset) * 2 ** 32 + view.getUint32(offset + 4);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

/** Checks key material handed to the factory: a ServiceKeys object or undefined. */
function checkServiceKeys(keys: unknown, name: string): void {
  if (keys === undefined) return;
  const k = keys as { rsa?: unknown; nacl?: unknown } | null;
  if (typeof k !== "object" || k === null || !("rsa" in k) || !("nacl" in k)) {
    throw new TypeError(
      `${name} must be ServiceKeys ({ rsa, nacl }, e.g. from createServiceKeys or loadOrCreateKeyFile)`,
    );
  }
  const rsa = k.rsa as { privateKey?: unknown; publicKeyPem?: unknown } | null;
  if (
    rsa !== null &&
    (typeof rsa !== "object" ||
      typeof rsa.publicKeyPem !== "string" ||
      typeof rsa.privateKey !== "object")
  ) {
    throw new TypeError(`${name}.rsa must be null or an RsaKeyPair`);
  }
  const pair = k.nacl as { publicKey?: unknown; secretKey?: unknown; kid?: unknown } | null;
  if (
    pair !== null &&
    (typeof pair !== "object" ||
      !(pair.publicKey instanceof Uint8Array) ||
      !(pair.secretKey instanceof Uint8Array) ||
      typeof pair.kid !== "string")
  ) {
    throw new TypeError(`${name}.nacl must be null or a NaclKeyPair`);
  }
}

/** Plaintext must be bytes: every suite then seals exactly the same thing. */
function checkPlain(plain: unknown): void {
  if (!(plain instanceof Uint8Array)) {
    throw new TypeError(
      `plain must be a Uint8Array (the body bytes), got ${plain === null ? "null" : typeof plain}`,
    );
  }
}

/**
 * An X25519 public key as honest peers write it: 32 bytes with the top bit clear. X25519 ignores
 * that bit (RFC 7748 §5), so a key with it set names the same key: refused, a damaged header
 * must never open.
 */
function isCanonicalX25519Key(key: Uint8Array): boolean {
  return key.length === nacl.box.publicKeyLength && ((key[31] ?? 0) & 0x80) === 0;
}
