import {
  NuropbMessageError,
  NuropbTimeoutError,
  decodeFrame,
  fromErrorPayload,
  isNuropbError,
  type DecodedMessage,
  type InboundFrame,
  type Logger,
  type ResponsePayload,
} from "@nuropb/protocol";
import type { ReplyKey } from "@nuropb/crypto";
import { errorName, type MessageFlow } from "./message-lifecycle.ts";
import type { IncomingResponse } from "./middleware.ts";
import { sendError, tooLargeError } from "./outcomes.ts";
import { isSealed, type Sealing } from "./sealing.ts";
import type { RequestOptions } from "./types.ts";

/** What a request aborted by `signal` fails with: its reason when an Error. */
export function abortError(signal: AbortSignal | undefined): Error {
  const reason: unknown = signal?.reason;
  return reason instanceof Error ? reason : new NuropbTimeoutError("request aborted");
}

/** A request waiting for its response. */
export interface Pending {
  readonly service: string;
  readonly method: string;
  readonly rpcResponse: boolean;
  readonly replyKey: ReplyKey | undefined;
  /** Both become a no-op once the request is completed (see {@link PendingResponses}). */
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  /** The ttl timer; cleared with {@link cleanup}. */
  timer: ReturnType<typeof setTimeout> | undefined;
  /** The caller's signal and the listener it holds, when the request has one. */
  readonly signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  /** The call its middleware sees, to show the response to; undefined without middleware. */
  readonly call: { response: IncomingResponse | undefined } | undefined;
  /** Reports the response's transitions; undefined without a lifecycle listener. */
  readonly flow: MessageFlow | undefined;
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

  /**
   * Registers a request about to be sent and returns its outcome: what its response says (see
   * {@link onResponse}), or a retryable `NuropbTimeoutError` when `ttlMs` passes first, or the
   * reason of `options.signal` when it aborts first.
   */
  expect(
    correlationId: string,
    service: string,
    method: string,
    ttlMs: number,
    options: RequestOptions,
    replyKey: ReplyKey | undefined,
    call: Pending["call"],
    flow: MessageFlow | undefined,
  ): Promise<unknown> {
    // One record per request and no closures beyond the promise's own (the timer gets its
    // arguments, the abort listener exists only with a signal): this runs once per request.
    const signal = options.signal;
    // An "abort" listener added to an aborted signal never fires: fail now, register nothing.
    if (signal?.aborted === true) return Promise.reject(abortError(signal));
    return new Promise<unknown>((resolve, reject) => {
      const p: Pending = {
        service,
        method,
        rpcResponse: options.rpcResponse !== false,
        replyKey,
        resolve,
        reject,
        timer: undefined,
        signal,
        onAbort: undefined,
        call,
        flow,
      };
      p.timer = setTimeout(this.#expire, ttlMs, correlationId, p, ttlMs);
      if (signal !== undefined) {
        p.onAbort = () => this.#abort(correlationId, p);
        signal.addEventListener("abort", p.onAbort, { once: true });
      }
      this.#pending.set(correlationId, p);
    });
  }

  /** The ttl of the request `correlationId` passed without a response. */
  readonly #expire = (correlationId: string, p: Pending, ttlMs: number): void => {
    if (this.#pending.get(correlationId) !== p) return;
    this.#pending.delete(correlationId);
    p.timer = undefined;
    cleanup(p);
    const { service, method } = p;
    p.reject(
      new NuropbTimeoutError(`no response from ${service}.${method} within ${String(ttlMs)} ms`, {
        retryable: true,
        details: { service, method, correlationId, ttlMs },
      }),
    );
  };

  /** The caller's signal aborted the request `correlationId`. */
  #abort(correlationId: string, p: Pending): void {
    if (this.#pending.get(correlationId) !== p) return;
    this.#pending.delete(correlationId);
    p.onAbort = undefined; // a once listener, gone already
    cleanup(p);
    p.reject(abortError(p.signal));
  }

  /** Sending the request `correlationId` failed with `err`: it fails (unless settled already). */
  sendFailed(correlationId: string, err: unknown): void {
    const p = this.#pending.get(correlationId);
    if (p === undefined) return;
    this.#pending.delete(correlationId);
    cleanup(p);
    p.reject(sendError(err, p.service, p.method));
  }

  /** Rejects every pending request with an error from `make`. */
  failAll(make: () => Error): void {
    for (const [id, p] of this.#pending) {
      this.#pending.delete(id);
      cleanup(p);
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
    pending.flow?.emit("client-receive");
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
    pending.flow?.emit("client-decode");
    if (isSealed(frame.headers) && pending.replyKey !== undefined) {
      if (this.#sealing.inline) {
        // No cipher thread: opened here and now, no promise and no bookkeeping of the opening.
        let opened: Uint8Array;
        try {
          opened = this.#sealing.openResponseNow(frame, pending.replyKey);
        } catch (err) {
          this.#fail(id, pending, err);
          return;
        }
        this.#complete(frame, pending, opened);
        return;
      }
      // Opened on a cipher thread: the request may time out meanwhile.
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
    cleanup(pending);
    this.#handled(
      pending,
      isNuropbError(err) ? err : new NuropbMessageError(String(err), { cause: err }),
    );
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
    cleanup(pending);
    if (pending.call !== undefined)
      pending.call.response = { payload: response, headers: frame.headers };
    if (pending.replyKey !== undefined && !decoded.encrypted && response.error === null) {
      // A plaintext success answering an encrypted request would be a downgrade; refuse it.
      this.#handled(pending, new NuropbMessageError("plaintext response to an encrypted request"));
      return;
    }
    if (response.error === null) this.#handled(pending, undefined, response);
    else this.#handled(pending, fromErrorPayload(response.error, { payload: response }), response);
  }

  /**
   * Hands the outcome to the waiting caller: `err`, or (`rpcResponse: false`) the whole
   * `response`, or its result. The response queue needs no settling (the broker acknowledges
   * on delivery): `client-ack` follows `client-handle` at once.
   */
  #handled(pending: Pending, err: Error | undefined, response?: ResponsePayload): void {
    if (pending.flow !== undefined) {
      pending.flow.emit("client-handle", err === undefined ? undefined : { error: errorName(err) });
      pending.flow.emit("client-ack");
    }
    if (response !== undefined && !pending.rpcResponse) pending.resolve(response);
    else if (err !== undefined) pending.reject(err);
    else pending.resolve(response?.result);
    // The record may outlive the request in an old table of `#pending` (a long-lived Map keeps
    // the entries of each table it outgrows until the next full collection): holding the
    // resolvers, it would keep the caller's promise and the result promoted with it.
    pending.resolve = pending.reject = settledAlready;
  }
}

/** A completed request's resolvers. */
function settledAlready(): void {}

/** Clears the request's timer (and lets go of it) and abort listener. */
function cleanup(p: Pending): void {
  if (p.timer !== undefined) clearTimeout(p.timer);
  p.timer = undefined;
  if (p.onAbort !== undefined) p.signal?.removeEventListener("abort", p.onAbort);
}
