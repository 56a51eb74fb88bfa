import {
  NuropbMessageError,
  decodeFrame,
  fromErrorPayload,
  isNuropbError,
  type DecodedMessage,
  type InboundFrame,
  type Logger,
} from "@nuropb/protocol";
import type { ReplyKey } from "@nuropb/crypto";
import { tooLargeError } from "./outcomes.ts";
import { isSealed, type Sealing } from "./sealing.ts";

/** A request waiting for its response. */
export interface Pending {
  readonly service: string;
  readonly method: string;
  readonly rpcResponse: boolean;
  readonly replyKey: ReplyKey | undefined;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: Error) => void;
  /** Clears the request's timer and abort listener. */
  readonly cleanup: () => void;
}

/**
 * The requests of one participant that wait for their response, by correlation id, and what
 * happens when a response arrives: the first one for a pending request completes it (opened
 * first when it is encrypted), duplicates, late and unknown ones are ignored.
 */
export class PendingResponses {
  readonly #pending = new Map<string, Pending>();
  /** Requests whose first (encrypted) response is being opened, by correlation id. */
  readonly #opening = new Map<string, Promise<void>>();
  readonly #sealing: Sealing;
  readonly #maxInboundBodyBytes: number;
  readonly #log: Logger;

  constructor(sealing: Sealing, maxInboundBodyBytes: number, log: Logger) {
    this.#sealing = sealing;
    this.#maxInboundBodyBytes = maxInboundBodyBytes;
    this.#log = log;
  }

  get size(): number {
    return this.#pending.size;
  }

  add(correlationId: string, pending: Pending): void {
    this.#pending.set(correlationId, pending);
  }

  /** Removes and returns the pending request `correlationId` (undefined: already settled). */
  take(correlationId: string): Pending | undefined {
    const p = this.#pending.get(correlationId);
    if (p !== undefined) this.#pending.delete(correlationId);
    return p;
  }

  /** Forgets `correlationId`; true when it was still pending. */
  drop(correlationId: string): boolean {
    return this.#pending.delete(correlationId);
  }

  /** Rejects every pending request with an error from `make`. */
  failAll(make: () => Error): void {
    for (const [id, p] of this.#pending) {
      this.#pending.delete(id);
      p.cleanup();
      p.reject(make());
    }
  }

  /** A frame arrived on the response queue. */
  onResponse(frame: InboundFrame): void {
    const pending = this.#pending.get(frame.correlationId);
    if (pending === undefined) {
      this.#log.debug("ignoring unpaired response", { correlationId: frame.correlationId });
      return;
    }
    const id = frame.correlationId;
    const opening = this.#opening.get(id);
    if (opening !== undefined) {
      // Another response to this request is being opened: the first to arrive wins, so this one
      // is looked at only after it (by then usually an unpaired duplicate).
      void opening.then(() => this.onResponse(frame));
      return;
    }
    const bytes = frame.body.byteLength;
    if (bytes > this.#maxInboundBodyBytes) {
      // Never opened nor parsed: the request fails now, with a reason, rather than at its ttl.
      this.#log.warn("response body too large; the request fails", {
        correlationId: id,
        bytes,
        maxInboundBodyBytes: this.#maxInboundBodyBytes,
      });
      this.#fail(id, pending, tooLargeError("response", bytes, this.#maxInboundBodyBytes));
      return;
    }
    if (isSealed(frame.headers) && pending.replyKey !== undefined) {
      // Opened possibly on a cipher thread: the request may time out meanwhile.
      const opened = this.#sealing
        .openResponse(frame, pending.replyKey)
        .then(
          (body) => {
            if (this.#pending.get(id) === pending) this.#complete(frame, pending, body);
          },
          (err: unknown) => {
            if (this.#pending.get(id) === pending) this.#fail(id, pending, err);
          },
        )
        .finally(() => this.#opening.delete(id));
      this.#opening.set(id, opened);
      return;
    }
    this.#complete(frame, pending, undefined);
  }

  /** An undecodable response for a pending request: fail the request now rather than at ttl. */
  #fail(correlationId: string, pending: Pending, err: unknown): void {
    this.#pending.delete(correlationId);
    pending.cleanup();
    pending.reject(isNuropbError(err) ? err : new NuropbMessageError(String(err), { cause: err }));
  }

  /** Completes `pending` with `frame`; `opened`: its body decrypted, when it came encrypted. */
  #complete(frame: InboundFrame, pending: Pending, opened: Uint8Array | undefined): void {
    let decoded: DecodedMessage;
    try {
      if (opened === undefined && isSealed(frame.headers))
        throw new NuropbMessageError("encrypted response to a plaintext request");
      decoded = decodeFrame({
        headers: frame.headers,
        body: opened ?? frame.body,
        correlationId: frame.correlationId,
      });
    } catch (err) {
      this.#fail(frame.correlationId, pending, err);
      return;
    }
    if (decoded.type !== "response") {
      this.#log.warn("ignoring a non-response message on the response queue", {
        type: decoded.type,
      });
      return;
    }
    const response = decoded.payload;
    this.#pending.delete(frame.correlationId);
    pending.cleanup();
    if (pending.replyKey !== undefined && !decoded.encrypted && response.error === null) {
      // A plaintext success answering an encrypted request would be a downgrade; refuse it.
      pending.reject(new NuropbMessageError("plaintext response to an encrypted request"));
      return;
    }
    if (!pending.rpcResponse) pending.resolve(response);
    else if (response.error !== null)
      pending.reject(fromErrorPayload(response.error, { payload: response }));
    else pending.resolve(response.result);
  }
}
