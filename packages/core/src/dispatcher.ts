import {
  Header,
  NuropbMessageError,
  NuropbTransportError,
  decodeFrame,
  type Context,
  type DecodedMessage,
  type Delivery,
  type Logger,
  type Transport,
} from "@nuropb/protocol";
import type { ReplyKey } from "@nuropb/crypto";
import { CallHandler } from "./call-handler.ts";
import { AnswerDispatcher } from "./call-later-handlers.ts";
import type { ServiceDescription } from "./describe.ts";
import { EventHandler } from "./event-handler.ts";
import { MessageFlow, type LifecycleListener } from "./message-lifecycle.ts";
import type { ServiceConfig } from "./options.ts";
import { asMessageError, settle, tooLargeError } from "./outcomes.ts";
import type { RequestContextFields } from "./request-context.ts";
import type { Responder } from "./responder.ts";
import type { ServiceStats } from "./service-stats.ts";
import { isSealed, type Sealing } from "./sealing.ts";
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
  /** Undefined: no message is measured. */
  readonly onLifecycle: LifecycleListener | undefined;
  /** Counts the calls handled (answers `nuropb_stats`). */
  readonly stats: ServiceStats;
}

/**
 * The dispatching side of a service: each delivery is refused unread when too large, decoded
 * (opened first when encrypted), dead-lettered (and answered) when it cannot be read, and
 * handed to the requests-and-commands handler (call-handler.ts) or the events handler
 * (event-handler.ts).
 */
export class Dispatcher<TService extends object> {
  readonly #p: DispatcherParts<TService>;
  readonly #name: string;
  readonly #calls: CallHandler<TService>;
  readonly #events: EventHandler<TService>;
  readonly #answers: AnswerDispatcher<TService>;

  constructor(parts: DispatcherParts<TService>) {
    this.#p = parts;
    this.#name = parts.service.name;
    this.#calls = new CallHandler(parts);
    this.#events = new EventHandler(parts);
    this.#answers = new AnswerDispatcher(parts);
  }

  /** Handles one service-queue delivery; settles it exactly once. */
  async onDelivery(delivery: Delivery): Promise<void> {
    const flow = this.#flowOf(delivery);
    flow?.emit("service-receive");
    if (delivery.body.byteLength > this.#p.maxInboundBodyBytes) {
      await this.#refuseTooLarge(delivery, flow);
      return;
    }
    flow?.emit("service-decode");
    let decoded: DecodedMessage;
    let replyKey: ReplyKey | undefined;
    try {
      let body = delivery.body;
      const type = delivery.headers[Header.type];
      if (isSealed(delivery.headers)) {
        if (type === "event" && body[0] === 0x7b /* { */) {
          // Python quirk (WIRE-SAMPLES.md note 3): events marked encrypted carry a plaintext body.
        } else if (type === "request" || type === "command") {
          // Synchronous without cipher threads: no await, no microtask hop.
          const opening = this.#p.sealing.openRequest(delivery);
          ({ plain: body, replyKey } = opening instanceof Promise ? await opening : opening);
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
        await settle(delivery, "requeue", flow);
        return;
      }
      await this.#undecodable(delivery, err, replyKey, flow);
      return;
    }
    if (flow !== undefined) describeFlow(flow, decoded);
    switch (decoded.type) {
      case "request":
      case "command":
        await this.#calls.handle(delivery, decoded, replyKey, flow);
        return;
      case "event":
        await this.#events.handle(delivery, decoded, flow);
        return;
      case "response":
        // Answers of this service's asynchronous calls (call-later-handlers.ts).
        await this.#answers.handle(delivery, decoded, flow);
        return;
    }
  }

  /**
   * Dead-letters a service message whose body is over `maxInboundBodyBytes` without reading it,
   * and answers it when it is a request (in plaintext: it is never decrypted).
   */
  async #refuseTooLarge(delivery: Delivery, flow: MessageFlow | undefined): Promise<void> {
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
    await settle(delivery, "reject", flow);
    if (kind === "request") {
      const error = tooLargeError(kind, bytes, max);
      await this.#p.responder.answerUnread(delivery, error, undefined, flow);
    }
  }

  /**
   * Dead-letters a message that cannot be handled and, when it has a reply address and its type
   * header does not say response, answers it. A response is never answered: its `reply_to` can be
   * this service's own queue.
   */
  async #undecodable(
    delivery: Delivery,
    err: unknown,
    replyKey: ReplyKey | undefined,
    flow: MessageFlow | undefined,
  ): Promise<void> {
    const error = asMessageError(err);
    this.#p.log.warn("undecodable message dead-lettered", {
      correlationId: delivery.correlationId,
      reason: error.description,
    });
    await settle(delivery, "reject", flow);
    // PROTOCOL.md §5 answers whatever carries a reply address, except a response: its reply_to
    // can be this service's own queue (asynchronous calls), where an answer would breed another.
    if (delivery.headers[Header.type] === "response") return;
    await this.#p.responder.answerUnread(delivery, error, replyKey, flow);
  }

  /** A flow for one delivery, when there is a lifecycle listener. */
  #flowOf(delivery: Delivery): MessageFlow | undefined {
    const listener = this.#p.onLifecycle;
    if (listener === undefined) return undefined;
    const type = delivery.headers[Header.type];
    const trace = delivery.headers[Header.traceId];
    return new MessageFlow(listener, this.#p.log, {
      type: type === "request" || type === "command" || type === "event" ? type : undefined,
      correlationId: delivery.correlationId,
      traceId: typeof trace === "string" ? trace : null,
      service: this.#name,
      method: undefined,
      topic: undefined,
      encrypted: isSealed(delivery.headers),
    });
  }
}

/** What a decoded message tells its flow. */
function describeFlow(flow: MessageFlow, decoded: DecodedMessage): void {
  const f = flow.fields;
  f.correlationId = decoded.correlationId;
  f.traceId = decoded.traceId;
  f.encrypted = decoded.encrypted;
  if (decoded.type === "event") {
    f.type = "event";
    f.topic = decoded.payload.topic;
  } else if (decoded.type !== "response") {
    f.type = decoded.type;
    f.method = decoded.payload.method;
  }
}
