import {
  ENCRYPTED_YES,
  Header,
  NuropbMessageError,
  type Delivery,
  type Frame,
  type InboundFrame,
  type Transport,
  type WireHeaders,
} from "@nuropb/protocol";
import {
  createPayloadEncryptor,
  type PayloadEncryptor,
  type PeerKeys,
  type ReplyKey,
} from "@nuropb/crypto";
import type { ServiceDescription } from "./describe.ts";
import type { ParticipantOptions } from "./types.ts";

/** Clock skew allowed beyond a message's ttl before its ciphertext counts as a replay. */
const REPLAY_SKEW_MS = 60_000;
const NO_OPTIONS = Object.freeze({});

/** A sealed request: the frame to send and the key its response will be sealed with. */
export interface SealedRequest {
  readonly frame: Frame;
  readonly replyKey: ReplyKey;
}

/**
 * End-to-end encryption of one participant: seals its requests and commands and opens their
 * responses (calling side), opens the requests it serves and seals their responses (dispatching
 * side). Wraps the `@nuropb/crypto` encryptor, which may run on cipher threads.
 */
export class Sealing {
  readonly #encryptor: PayloadEncryptor;
  /**
   * No cipher thread: everything is sealed and opened here, synchronously, with no promise on
   * the way (each async hop cost allocations a request could not spare, measured).
   */
  readonly inline: boolean;
  /** The ttl of the last request opened, and its open options (see #openOptions). */
  #lastTtlMs: number | undefined;
  #lastOpenOptions: { readonly maxAgeMs?: number } = NO_OPTIONS;

  /** @throws TypeError for bad `keys` or `encryption` options. */
  constructor(options: Pick<ParticipantOptions, "keys" | "encryption">) {
    try {
      this.#encryptor = createPayloadEncryptor({
        ...options.encryption,
        ...(options.keys === undefined ? {} : { keys: options.keys }),
      });
    } catch (err) {
      throw new TypeError(`options.keys / options.encryption: ${(err as Error).message}`);
    }
    this.inline = (options.encryption?.cipherThreads ?? 0) === 0;
  }

  /** This participant's public keys (for its description). */
  get publicKeys(): PayloadEncryptor["publicKeys"] {
    return this.#encryptor.publicKeys;
  }

  /** Whether this participant has a key pair at all (RSA, nacl or x25519-aes-gcm). */
  get hasKeys(): boolean {
    const k = this.publicKeys;
    return k.rsaPem !== null || k.nacl !== null || k.native !== null;
  }

  /** `frame` sealed for the peer whose keys are `peer`. */
  async sealRequest(frame: Frame, peer: PeerKeys): Promise<SealedRequest> {
    if (this.inline) return this.sealRequestNow(frame, peer);
    const sealed = await this.#encryptor.sealRequestAsync(frame.body, peer);
    return { frame: sealedFrame(frame, sealed), replyKey: sealed.replyKey };
  }

  /**
   * {@link sealRequest} here and now: only when {@link inline}.
   * @throws NuropbMessageError as sealRequest rejects.
   */
  sealRequestNow(frame: Frame, peer: PeerKeys): SealedRequest {
    const sealed = this.#encryptor.sealRequest(frame.body, peer);
    return { frame: sealedFrame(frame, sealed), replyKey: sealed.replyKey };
  }

  /**
   * The plaintext body of an encrypted request or command, and the key to seal its response
   * with. Ciphertext older than the message's ttl (plus clock skew) counts as a replay.
   * When {@link inline}, the result itself (or the error thrown), not a promise.
   * @throws NuropbMessageError when it does not open; NuropbTransportError (retryable) when a
   *   cipher thread stopped while opening it.
   */
  openRequest(
    delivery: Delivery,
  ):
    { plain: Uint8Array; replyKey: ReplyKey } | Promise<{ plain: Uint8Array; replyKey: ReplyKey }> {
    const options = this.#openOptions(delivery.ttlMs);
    return this.inline
      ? this.#encryptor.openRequest(delivery.body, delivery.headers, options)
      : this.#encryptor.openRequestAsync(delivery.body, delivery.headers, options);
  }

  /**
   * The open options of a request of ttl `ttlMs`: one object per distinct ttl in a row (callers
   * mostly send one), not one per request.
   */
  #openOptions(ttlMs: number | undefined): { readonly maxAgeMs?: number } {
    if (ttlMs === undefined) return NO_OPTIONS;
    if (ttlMs !== this.#lastTtlMs) {
      this.#lastTtlMs = ttlMs;
      this.#lastOpenOptions = Object.freeze({ maxAgeMs: ttlMs + REPLAY_SKEW_MS });
    }
    return this.#lastOpenOptions;
  }

  /**
   * {@link openResponse} here and now: only when {@link inline}.
   * @throws NuropbMessageError as openResponse rejects.
   */
  openResponseNow(frame: InboundFrame, replyKey: ReplyKey): Uint8Array {
    return this.#encryptor.openResponse(frame.body, frame.headers, replyKey);
  }

  /** The plaintext body of a response to a request sealed with `replyKey`. */
  openResponse(frame: InboundFrame, replyKey: ReplyKey): Promise<Uint8Array> {
    if (!this.inline) return this.#encryptor.openResponseAsync(frame.body, frame.headers, replyKey);
    try {
      return Promise.resolve(this.#encryptor.openResponse(frame.body, frame.headers, replyKey));
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  /** A response frame sealed with the request's `replyKey`. */
  async sealResponse(frame: Frame, replyKey: ReplyKey): Promise<Frame> {
    if (this.inline) return this.sealResponseNow(frame, replyKey);
    return sealedFrame(frame, await this.#encryptor.sealResponseAsync(frame.body, replyKey));
  }

  /**
   * {@link sealResponse} here and now: only when {@link inline}.
   * @throws NuropbMessageError as sealResponse rejects.
   */
  sealResponseNow(frame: Frame, replyKey: ReplyKey): Frame {
    return sealedFrame(frame, this.#encryptor.sealResponse(frame.body, replyKey));
  }

  /** Stops the cipher threads, if any (nothing is sealed or opened any more). */
  close(): Promise<void> {
    return this.#encryptor.close();
  }
}

/** Whether a frame's `encrypted` header says its body is ciphertext. */
export function isSealed(headers: WireHeaders): boolean {
  return headers[Header.encrypted] === ENCRYPTED_YES;
}

/**
 * Whether a request, command or response body goes slim (`EncodeOptions.slim`): when `transport`
 * allows it and the body is not sealed. Inside a sealed body the correlation id binds an answer
 * to its call (rsa-fernet has nothing else to), so a sealed body stays whole.
 */
export function goesSlim(transport: Transport, sealed: boolean): boolean {
  return !sealed && transport.capabilities.slimBodies === true;
}

/** Whether a description announces any public key (RSA, nacl or x25519-aes-gcm). */
export function hasAnnouncedKey(d: ServiceDescription): boolean {
  return (
    d.public_key !== null ||
    (d.nacl_public_key ?? null) !== null ||
    (d.native_public_key ?? null) !== null
  );
}

/**
 * The public keys a service announces in its description. The encryptor picks the suite from
 * them: `x25519-aes-gcm` when announced (TypeScript services), then nacl, then rsa-fernet
 * (Python services announce only `public_key`).
 * @throws NuropbMessageError when it announces none.
 */
export function peerKeysOf(d: ServiceDescription, service: string): PeerKeys {
  if (!hasAnnouncedKey(d)) {
    throw new NuropbMessageError(`Service public key not found for service: ${service}`);
  }
  return {
    rsaPublicKeyPem: d.public_key,
    naclPublicKey: d.nacl_public_key ?? null,
    nativePublicKey: d.native_public_key ?? null,
  };
}

/**
 * `frame` carrying `sealed`'s body, its headers added to the frame's and `encrypted: yes`.
 * Not `{ ...a, ...b, [k]: v }`: V8 builds that literal the slow way (≈ 1.7 µs against 0.1 µs for
 * these eight headers, measured), and it ran twice per encrypted call. A lone spread of the
 * frame's headers is a clone of their shape, and the suite's headers (none for the native
 * suite's version 3) are added only when there are any: 45 ns against 97 ns for
 * `Object.assign({}, a, b)` (500,000 frames of five headers, medians of 9 interleaved rounds).
 */
function sealedFrame(
  frame: Frame,
  sealed: { readonly body: Uint8Array; readonly headers: Readonly<Record<string, string>> },
): Frame {
  const headers: Record<string, string | null> = { ...frame.headers };
  for (const _ in sealed.headers) {
    Object.assign(headers, sealed.headers);
    break;
  }
  headers[Header.encrypted] = ENCRYPTED_YES;
  return { ...frame, body: sealed.body, headers };
}
