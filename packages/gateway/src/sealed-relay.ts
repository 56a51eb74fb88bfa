import {
  NuropbMessageError,
  NuropbTimeoutError,
  NuropbTransportError,
  NuropbValidationError,
  buildHeaders,
  newId,
  responseQueueName,
} from "@nuropb/protocol";
import type { InboundFrame, Listener, Logger, Transport } from "@nuropb/protocol";

/** A call sealed end to end by the client, as the gateway forwards it. */
export interface SealedCall {
  readonly service: string;
  /** The correlation id sealed inside the body (the response carries it). */
  readonly correlationId: string;
  /** The encrypted body, as its text (rsa-fernet bodies are ASCII). */
  readonly body: string;
  readonly ttlMs: number;
  readonly traceId: string | undefined;
}

/** A service's answer to a sealed request, forwarded unopened. */
export interface SealedAnswer {
  /** False when the service answered in plaintext (it could not open the call). */
  readonly encrypted: boolean;
  readonly body: string;
}

interface Pending {
  readonly resolve: (answer: SealedAnswer) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

const CORRELATION_ID = /^[A-Za-z0-9_-]{16,64}$/;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8");

/**
 * Forwards calls a client sealed end to end: the ciphertext goes on the mesh as the body of a
 * NuroPb request or command (`encrypted: yes`), the service's answer comes back on the relay's
 * own response queue and goes to the client unopened. The gateway holds no key and never sees
 * the plaintext.
 *
 * Core's public API seals and opens bodies itself and has no way to send a body sealed by
 * someone else, so the relay speaks the `Transport` contract directly, as any participant may.
 */
export class SealedRelay {
  readonly #transport: Transport;
  readonly #address: string;
  readonly #logger: Logger;
  readonly #pending = new Map<string, Pending>();
  #listener: Listener | undefined;
  #starting: Promise<void> | undefined;
  #events: AsyncIterator<unknown> | undefined;
  #stopped = false;

  constructor(transport: Transport, name: string, logger: Logger) {
    this.#transport = transport;
    this.#address = responseQueueName(`${name}-sealed`, newId(), transport.mesh);
    this.#logger = logger;
  }

  /** Sealed requests waiting for their answer. */
  get pending(): number {
    return this.#pending.size;
  }

  /**
   * Sends a sealed request and resolves with the service's answer, unopened.
   * @throws NuropbValidationError for a bad correlation id or one already in flight;
   *   NuropbNotDeliveredError; NuropbTimeoutError after `ttlMs`; NuropbTransportError.
   */
  async request(call: SealedCall, signal?: AbortSignal): Promise<SealedAnswer> {
    this.#check(call);
    await this.#start();
    if (this.#pending.has(call.correlationId)) {
      throw new NuropbValidationError("a sealed call with this correlation id is in flight");
    }
    signal?.throwIfAborted();
    const answer = new Promise<SealedAnswer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(call.correlationId);
        reject(
          new NuropbTimeoutError(`no answer from ${call.service} within ${String(call.ttlMs)} ms`, {
            retryable: true,
          }),
        );
      }, call.ttlMs);
      this.#pending.set(call.correlationId, { resolve, reject, timer });
    });
    const onAbort = (): void => this.#fail(call.correlationId, signal?.reason as Error);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await this.#transport.send(
        { kind: "rpc", service: call.service },
        this.#frame("request", call, this.#address),
      );
    } catch (err) {
      this.#fail(call.correlationId, err as Error);
    }
    try {
      return await answer;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Sends a sealed command; resolves when the transport has it.
   * @throws as {@link request}, but never times out.
   */
  async command(call: SealedCall): Promise<void> {
    this.#check(call);
    await this.#start();
    await this.#transport.send(
      { kind: "rpc", service: call.service },
      this.#frame("command", call, this.#address),
    );
  }

  /** Stops the response consumer and fails what is pending. Idempotent. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const id of [...this.#pending.keys()]) {
      this.#fail(id, new NuropbTransportError("the gateway is closing", { retryable: true }));
    }
    void this.#events?.return?.();
    const listener = this.#listener;
    this.#listener = undefined;
    await listener?.stop().catch(() => undefined);
  }

  #check(call: SealedCall): void {
    if (!CORRELATION_ID.test(call.correlationId)) {
      throw new NuropbValidationError(
        "'correlationId' must be 16 to 64 letters, digits, '_' or '-' (a fresh random id per call)",
      );
    }
  }

  #frame(kind: "request" | "command", call: SealedCall, replyTo: string) {
    return {
      headers: buildHeaders(kind, call.traceId ?? newId(), true),
      body: encoder.encode(call.body),
      correlationId: call.correlationId,
      replyTo,
      ttlMs: call.ttlMs,
    };
  }

  #start(): Promise<void> {
    if (this.#stopped) {
      return Promise.reject(new NuropbTransportError("the gateway is closed"));
    }
    this.#starting ??= (async () => {
      this.#listener = await this.#transport.consumeResponses({ address: this.#address }, (f) =>
        this.#onResponse(f),
      );
      void this.#watch();
    })().catch((err: unknown) => {
      this.#starting = undefined;
      throw err;
    });
    return this.#starting;
  }

  /** A lost link loses the answers in flight: fail them at once, as core does. */
  async #watch(): Promise<void> {
    const it = this.#transport.events()[Symbol.asyncIterator]();
    this.#events = it;
    for (;;) {
      const next = await it.next();
      if (next.done === true) return;
      const e = next.value;
      if (e.type === "disconnected" || e.type === "closed") {
        for (const id of [...this.#pending.keys()]) {
          this.#fail(
            id,
            new NuropbTransportError("the link to the mesh was lost; the outcome is unknown", {
              retryable: true,
            }),
          );
        }
      }
    }
  }

  #onResponse(frame: InboundFrame): void {
    const pending = this.#pending.get(frame.correlationId);
    if (pending === undefined) {
      this.#logger.debug("sealed answer for no pending call", {
        correlationId: frame.correlationId,
      });
      return;
    }
    this.#pending.delete(frame.correlationId);
    clearTimeout(pending.timer);
    let body: string;
    try {
      body = decoder.decode(frame.body);
    } catch {
      pending.reject(new NuropbMessageError("the service's answer is not text"));
      return;
    }
    pending.resolve({ encrypted: frame.headers.encrypted === "yes", body });
  }

  #fail(correlationId: string, err: Error): void {
    const pending = this.#pending.get(correlationId);
    if (pending === undefined) return;
    this.#pending.delete(correlationId);
    clearTimeout(pending.timer);
    pending.reject(err);
  }
}
