import {
  DESCRIBE_METHOD,
  Header,
  NuropbMessageError,
  NuropbTransportError,
  decodeFrame,
  toErrorPayload,
  type CommandPayload,
  type Context,
  type DecodedMessage,
  type Delivery,
  type ErrorPayload,
  type EventPayload,
  type Logger,
  type RequestPayload,
  type Transport,
} from "@nuropb/protocol";
import type { ReplyKey } from "@nuropb/crypto";
import { admitMethod, authorise, validateParams } from "./admission.ts";
import type { ServiceDescription } from "./describe.ts";
import type { ServiceConfig } from "./options.ts";
import {
  asMessageError,
  callAgainRejected,
  isCallAgain,
  isSuccessSignal,
  outcomeOfThrown,
  tooLargeError,
  type Outcome,
} from "./outcomes.ts";
import {
  createRequestContext,
  type HandlerContext,
  type RequestContextFields,
} from "./request-context.ts";
import type { Responder } from "./responder.ts";
import { isSealed, type Sealing } from "./sealing.ts";
import { EVENT_HOOK } from "./service-definition.ts";
import type { EventToPublish } from "./types.ts";

/** What the dispatching side needs of its participant. */
export interface DispatcherParts<TService extends object> {
  readonly transport: Transport;
  readonly service: ServiceConfig<TService>;
  readonly maxInboundBodyBytes: number;
  readonly log: Logger;
  readonly sealing: Sealing;
  readonly responder: Responder;
  /** Where handler contexts' calls go (still allowed while the participant drains). */
  readonly handlerCalls: RequestContextFields["participant"];
  /** The service's description (answers `nuropb_describe`). */
  readonly describe: () => ServiceDescription;
  /** Publishes an event a handler raised, with the ids of the message it handled. */
  readonly sendEvent: (
    e: EventToPublish,
    context: Context,
    traceId: string | null,
    correlationId: string,
  ) => Promise<void>;
}

/**
 * The dispatching side of a service: each delivery is decoded (opened first when encrypted),
 * its method admitted, its caller authorised and its params validated, the handler run, and
 * the message settled and answered by its outcome; events the handler raised go out last.
 */
export class Dispatcher<TService extends object> {
  readonly #p: DispatcherParts<TService>;
  readonly #name: string;

  constructor(parts: DispatcherParts<TService>) {
    this.#p = parts;
    this.#name = parts.service.name;
  }

  /** Handles one service-queue delivery; settles it exactly once. */
  async onDelivery(delivery: Delivery): Promise<void> {
    if (delivery.body.byteLength > this.#p.maxInboundBodyBytes) {
      await this.#refuseTooLarge(delivery);
      return;
    }
    let decoded: DecodedMessage;
    let replyKey: ReplyKey | undefined;
    try {
      let body = delivery.body;
      const type = delivery.headers[Header.type];
      if (isSealed(delivery.headers)) {
        if (type === "event" && body[0] === 0x7b /* { */) {
          // Python quirk (WIRE-SAMPLES.md note 3): events marked encrypted carry a plaintext body.
        } else if (type === "request" || type === "command") {
          ({ plain: body, replyKey } = await this.#p.sealing.openRequest(delivery));
        } else {
          throw new NuropbMessageError(`a ${String(type)} message cannot be encrypted`);
        }
      }
      decoded = decodeFrame({
        headers: delivery.headers,
        body,
        correlationId: delivery.correlationId,
      });
    } catch (err) {
      if (
        err instanceof NuropbTransportError &&
        err.retryable &&
        !delivery.redelivered &&
        this.#p.transport.capabilities.redelivery
      ) {
        // Not the message's fault (a cipher thread stopped while opening it): back to the queue,
        // once; failing so again on the redelivered copy, it is dead-lettered like any other.
        this.#p.log.warn("could not open a message now; requeued", {
          correlationId: delivery.correlationId,
          reason: err.description,
        });
        await delivery.requeue();
        return;
      }
      await this.#undecodable(delivery, err, replyKey);
      return;
    }
    switch (decoded.type) {
      case "request":
      case "command":
        await this.#handleCall(delivery, decoded, replyKey);
        return;
      case "event":
        await this.#handleEvent(delivery, decoded);
        return;
      case "response":
        this.#p.log.warn("a response arrived on the service queue; dead-lettering it", {
          correlationId: decoded.correlationId,
        });
        await delivery.reject();
        return;
    }
  }

  /**
   * Dead-letters a service message whose body is over `maxInboundBodyBytes` without reading it,
   * and answers it when it is a request (in plaintext: it is never decrypted).
   */
  async #refuseTooLarge(delivery: Delivery): Promise<void> {
    const type = delivery.headers[Header.type];
    const kind = type === "request" || type === "command" || type === "event" ? type : "message";
    const bytes = delivery.body.byteLength;
    const max = this.#p.maxInboundBodyBytes;
    this.#p.log.warn("message body too large; dead-lettered unread", {
      correlationId: delivery.correlationId,
      type: kind,
      bytes,
      maxInboundBodyBytes: max,
    });
    await delivery.reject();
    if (kind === "request")
      await this.#p.responder.answerUnread(delivery, tooLargeError(kind, bytes, max), undefined);
  }

  /** Dead-letters a message that cannot be handled and, when it can be answered, answers it. */
  async #undecodable(
    delivery: Delivery,
    err: unknown,
    replyKey: ReplyKey | undefined,
  ): Promise<void> {
    const error = asMessageError(err);
    this.#p.log.warn("undecodable message dead-lettered", {
      correlationId: delivery.correlationId,
      reason: error.description,
    });
    await delivery.reject();
    await this.#p.responder.answerUnread(delivery, error, replyKey);
  }

  async #handleCall(
    delivery: Delivery,
    decoded: DecodedMessage<RequestPayload | CommandPayload>,
    replyKey: ReplyKey | undefined,
  ): Promise<void> {
    const payload = decoded.payload;
    const outcome = await this.#run(delivery, decoded);
    switch (outcome.kind) {
      case "success":
        await delivery.ack();
        await this.#answer(delivery, decoded, replyKey, outcome.result, null);
        // Events go out after the response, in plaintext with `encrypted: ""` even when the
        // call was encrypted (never plaintext marked "yes": that kills Python subscribers).
        await this.#publishRaised(outcome.events, payload.context, decoded);
        return;
      case "call-again":
        if (!delivery.redelivered && this.#p.transport.capabilities.redelivery) {
          this.#p.log.debug("call again: requeued once", { correlationId: decoded.correlationId });
          await delivery.requeue();
          return;
        }
        await delivery.reject();
        await this.#answer(
          delivery,
          decoded,
          replyKey,
          null,
          toErrorPayload(callAgainRejected(decoded.traceId, decoded.correlationId)),
        );
        return;
      case "failure":
        this.#p.log.debug("handler failed", {
          method: payload.method,
          error: outcome.error.wireName,
        });
        await delivery.reject();
        await this.#answer(delivery, decoded, replyKey, null, toErrorPayload(outcome.error));
        return;
    }
  }

  /** Admits, authorises, validates and runs a request or command; never throws. */
  async #run(
    delivery: Delivery,
    decoded: DecodedMessage<RequestPayload | CommandPayload>,
  ): Promise<Outcome> {
    const payload = decoded.payload;
    let ctx: HandlerContext | undefined;
    try {
      if (payload.method === DESCRIBE_METHOD)
        return { kind: "success", result: this.#p.describe(), events: [] };
      const entry = admitMethod(
        this.#p.service.methods,
        this.#name,
        payload.method,
        decoded.encrypted,
      );
      const userClaims =
        entry.options.authorize === undefined
          ? undefined
          : await authorise(entry, payload.context, this.#name, payload.method);
      validateParams(entry, payload.params, this.#name, payload.method);
      ctx = createRequestContext({
        participant: this.#p.handlerCalls,
        context: payload.context,
        userClaims,
        traceId: decoded.traceId,
        correlationId: decoded.correlationId,
        service: this.#name,
        method: payload.method,
        encrypted: decoded.encrypted,
        redelivered: delivery.redelivered,
      });
      const result = await entry.fn.call(this.#p.service.instance, payload.params, ctx);
      return { kind: "success", result, events: ctx.events };
    } catch (err) {
      return outcomeOfThrown(err, ctx?.events ?? [], this.#name, payload.method);
    }
  }

  /** Requests get exactly one response; commands none. */
  async #answer(
    delivery: Delivery,
    decoded: DecodedMessage<RequestPayload | CommandPayload>,
    replyKey: ReplyKey | undefined,
    result: unknown,
    error: ErrorPayload | null,
  ): Promise<void> {
    if (decoded.type !== "request" || delivery.replyTo === undefined) return;
    await this.#p.responder.respond(
      delivery.replyTo,
      {
        correlationId: decoded.correlationId,
        traceId: decoded.traceId,
        context: decoded.payload.context,
        result,
        error,
      },
      replyKey,
    );
  }

  /** Publishes the events a handler raised, with the ids of the message it handled. */
  async #publishRaised(
    events: readonly EventToPublish[],
    context: Context,
    handled: DecodedMessage,
  ): Promise<void> {
    for (const e of events) {
      try {
        await this.#p.sendEvent(e, context, handled.traceId, handled.correlationId);
      } catch (err) {
        this.#p.log.error("could not publish an event raised by a handler", {
          topic: e.topic,
          error: String((err as Error)?.message ?? err),
        });
      }
    }
  }

  async #handleEvent(delivery: Delivery, decoded: DecodedMessage<EventPayload>): Promise<void> {
    const hook = this.#p.service.eventHook;
    if (hook === undefined) {
      this.#p.log.warn(`no ${EVENT_HOOK} for an event; dead-lettering it`, {
        topic: decoded.payload.topic,
      });
      await delivery.reject();
      return;
    }
    const p = decoded.payload;
    const ctx = createRequestContext({
      participant: this.#p.handlerCalls,
      context: p.context,
      userClaims: undefined,
      traceId: decoded.traceId,
      correlationId: decoded.correlationId,
      service: this.#name,
      method: EVENT_HOOK,
      encrypted: false,
      redelivered: delivery.redelivered,
    });
    try {
      await hook.call(
        this.#p.service.instance,
        {
          topic: p.topic,
          event: p.event,
          target: p.target,
          context: p.context,
          traceId: decoded.traceId,
        },
        ctx,
      );
    } catch (err) {
      if (isCallAgain(err)) {
        if (!delivery.redelivered && this.#p.transport.capabilities.redelivery)
          await delivery.requeue();
        else await delivery.reject();
        return;
      }
      if (!isSuccessSignal(err)) {
        this.#p.log.warn("event handler failed; dead-lettering the event", {
          topic: p.topic,
          error: String((err as Error)?.message ?? err),
        });
        await delivery.reject();
        return;
      }
      ctx.events.push(...(err.events ?? []));
    }
    await delivery.ack();
    await this.#publishRaised(ctx.events, p.context, decoded);
  }
}
