import {
  Header,
  NuropbMessageError,
  encodePayload,
  toErrorPayload,
  type Context,
  type Delivery,
  type ErrorPayload,
  type Frame,
  type Logger,
  type ResponsePayload,
  type Transport,
} from "@nuropb/protocol";
import type { ReplyKey } from "@nuropb/crypto";
import type { MessageFlow } from "./message-lifecycle.ts";
import { withHeaders, type OutgoingHeaders } from "./middleware.ts";
import { goesSlim, type Sealing } from "./sealing.ts";

/** What a response says, before it is written. */
export interface ResponseFields {
  readonly correlationId: string;
  readonly traceId: string | null;
  readonly context: Context;
  readonly result: unknown;
  readonly error: ErrorPayload | null;
  /** Extra wire headers (a middleware's `responseHeaders`). */
  readonly headers?: OutgoingHeaders | undefined;
}

/**
 * Writes and sends a service's responses: encoded (a result that cannot become JSON is answered
 * with that error), sealed with the request's reply key when it came encrypted, and replaced by
 * an error when it is larger than the transport takes. Sending never throws: a response that
 * cannot be sent is logged.
 */
export class Responder {
  readonly #transport: Transport;
  readonly #sealing: Sealing;
  readonly #log: Logger;

  constructor(transport: Transport, sealing: Sealing, log: Logger) {
    this.#transport = transport;
    this.#sealing = sealing;
    this.#log = log;
  }

  /**
   * Sends one response to `replyTo`; never throws (the promise settles once the transport took
   * it, never rejects). `flow`: the handled message's, if measured.
   */
  respond(
    replyTo: string,
    r: ResponseFields,
    replyKey: ReplyKey | undefined,
    flow?: MessageFlow,
  ): Promise<void> {
    try {
      flow?.emit("service-encode");
      // A plaintext response is written synchronously: no promise until the transport's send.
      if (replyKey !== undefined) {
        if (!this.#sealing.inline) return this.#respondSealed(replyTo, r, replyKey, flow);
        // No cipher thread: sealed here, synchronously, as a plaintext response is written.
        let frame = this.#sealing.sealResponseNow(this.#plainFrame(replyTo, r, true), replyKey);
        const tooLarge = this.#tooLarge(frame, r);
        if (tooLarge !== undefined) {
          frame = this.#sealing.sealResponseNow(
            this.#plainFrame(replyTo, tooLarge, true),
            replyKey,
          );
        }
        return this.#send(replyTo, r, frame, flow);
      }
      let frame = this.#plainFrame(replyTo, r, false);
      const tooLarge = this.#tooLarge(frame, r);
      if (tooLarge !== undefined) frame = this.#plainFrame(replyTo, tooLarge, false);
      return this.#send(replyTo, r, frame, flow);
    } catch (err) {
      this.#sendFailed(r, err);
      return Promise.resolve();
    }
  }

  async #respondSealed(
    replyTo: string,
    r: ResponseFields,
    replyKey: ReplyKey,
    flow: MessageFlow | undefined,
  ): Promise<void> {
    try {
      let frame = await this.#sealing.sealResponse(this.#plainFrame(replyTo, r, true), replyKey);
      const tooLarge = this.#tooLarge(frame, r);
      if (tooLarge !== undefined) {
        frame = await this.#sealing.sealResponse(
          this.#plainFrame(replyTo, tooLarge, true),
          replyKey,
        );
      }
      await this.#send(replyTo, r, frame, flow);
    } catch (err) {
      this.#sendFailed(r, err);
    }
  }

  /**
   * The response to send instead when `frame` is larger than the transport takes (the handler
   * ran and its message is settled: say why there is no result, rather than let the caller time
   * out and retry it); undefined when it fits.
   */
  #tooLarge(frame: Frame, r: ResponseFields): ResponseFields | undefined {
    const max = this.#transport.capabilities.maxFrameBytes;
    if (frame.body.byteLength <= max) return undefined;
    const tooBig = new NuropbMessageError(
      `the response of ${frame.body.byteLength} bytes exceeds the transport's maxFrameBytes (${max})`,
      { details: { bytes: frame.body.byteLength, maxFrameBytes: max } },
    );
    this.#log.warn("response too large; answering with an error", {
      correlationId: r.correlationId,
      bytes: frame.body.byteLength,
    });
    return { ...r, result: null, error: toErrorPayload(tooBig) };
  }

  #send(
    replyTo: string,
    r: ResponseFields,
    frame: Frame,
    flow: MessageFlow | undefined,
  ): Promise<void> {
    flow?.emit("service-reply", r.error === null ? undefined : { error: r.error.error });
    return this.#transport
      .send({ kind: "reply", address: replyTo }, frame)
      .then(undefined, (err: unknown) => this.#sendFailed(r, err));
  }

  #sendFailed(r: ResponseFields, err: unknown): void {
    this.#log.error("could not send a response", {
      correlationId: r.correlationId,
      error: String((err as Error)?.message ?? err),
    });
  }

  /**
   * Answers a service message that was refused before it could be read (too large, undecodable)
   * with `error`, when it can be answered: it has a reply address and a correlation id. The
   * context is not known: it is sent empty.
   */
  async answerUnread(
    delivery: Delivery,
    error: NuropbMessageError,
    replyKey: ReplyKey | undefined,
    flow: MessageFlow | undefined,
  ): Promise<void> {
    if (delivery.replyTo === undefined || delivery.replyTo === "" || delivery.correlationId === "")
      return;
    const trace = delivery.headers[Header.traceId];
    await this.respond(
      delivery.replyTo,
      {
        correlationId: delivery.correlationId,
        traceId: typeof trace === "string" ? trace : "unknown",
        context: {},
        result: null,
        error: toErrorPayload(error),
      },
      replyKey,
      flow,
    );
  }

  /** The plaintext frame of a response (a result that cannot become JSON: answered with that error). */
  #plainFrame(replyTo: string, r: ResponseFields, sealed: boolean): Frame {
    const payload: ResponsePayload = {
      tag: "response",
      result: r.result,
      error: r.error,
      correlation_id: r.correlationId,
      trace_id: r.traceId,
      context: r.context,
      warning: null,
      reply_to: replyTo,
    };
    const options = { slim: goesSlim(this.#transport, sealed) };
    let frame: Frame;
    try {
      frame = encodePayload(payload, options);
    } catch (err) {
      // The result cannot become JSON (cycle, too deep): answer with that error instead, and
      // without the context when the caller's own context is what cannot be written back.
      const error = toErrorPayload(err);
      try {
        frame = encodePayload({ ...payload, result: null, error }, options);
      } catch {
        frame = encodePayload({ ...payload, result: null, error, context: {} }, options);
      }
    }
    return withHeaders(frame, r.headers);
  }
}
