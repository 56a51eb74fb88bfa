import type { Context, DecodedMessage, Delivery, EventPayload } from "@nuropb/protocol";
import type { DispatcherParts } from "./dispatcher.ts";
import { FailurePipeline } from "./failure-pipeline.ts";
import type { MessageFlow } from "./message-lifecycle.ts";
import { activePipeline, type ServiceEventCall } from "./middleware.ts";
import type { EventHook } from "./options.ts";
import {
  isSuccessSignal,
  outcomeOfThrown,
  publishRaised,
  settle,
  type Outcome,
} from "./outcomes.ts";
import { createRequestContext, type HandlerContext } from "./request-context.ts";
import { EVENT_HOOK } from "./service-definition.ts";

type Mutable<T> = { -readonly [K in keyof T]: T[K] };
/** The handler context of a piped event, once made (its raised events are read from it). */
interface Raised {
  ctx: HandlerContext | undefined;
}

/**
 * The events a service receives: the service's middleware, then `handleEvent`; the event is
 * acked (then the events the handler raised go out), requeued once for `NuropbCallAgain`, or
 * dead-lettered when it fails. Events are never answered.
 */
export class EventHandler<TService extends object> {
  readonly #p: DispatcherParts<TService>;
  readonly #name: string;
  /** Undefined: no failure policy anywhere (failures are dead-lettered at once). */
  readonly #failures: FailurePipeline | undefined;

  constructor(parts: DispatcherParts<TService>) {
    this.#p = parts;
    this.#name = parts.service.name;
    this.#failures = FailurePipeline.of(parts);
  }

  /** Handles a decoded event: runs `handleEvent`, settles, publishes raised events. */
  async handle(
    delivery: Delivery,
    decoded: DecodedMessage<EventPayload>,
    flow: MessageFlow | undefined,
  ): Promise<void> {
    const hook = this.#p.service.eventHook;
    if (hook === undefined) {
      this.#p.log.warn(`no ${EVENT_HOOK} for an event; dead-lettering it`, {
        topic: decoded.payload.topic,
      });
      await settle(delivery, "reject", flow);
      return;
    }
    flow?.emit("service-handle");
    const t0 = this.#p.stats.started();
    const receivedAt = this.#failures === undefined ? 0 : Date.now();
    const p = decoded.payload;
    let { outcome, context } = await this.#runOnce(hook, delivery, decoded);
    const policy = this.#failures?.policyFor(EVENT_HOOK);
    let runs = 1;
    if (outcome.kind === "failure" && policy !== undefined) {
      ({ outcome, runs } = await (this.#failures as FailurePipeline).retryImmediately(
        policy,
        outcome,
        async () => {
          const again = await this.#runOnce(hook, delivery, decoded);
          context = again.context;
          return again.outcome;
        },
      ));
    }
    const failed = outcome.kind === "failure" ? outcome.error : undefined;
    this.#p.stats.finished(EVENT_HOOK, t0, failed, context);
    switch (outcome.kind) {
      case "success":
        await settle(delivery, "ack", flow);
        await publishRaised(outcome.events, context, decoded, this.#p.sendEvent, this.#p.log);
        return;
      case "call-again":
        if (!delivery.redelivered && this.#p.transport.capabilities.redelivery)
          await settle(delivery, "requeue", flow);
        else await settle(delivery, "reject", flow);
        return;
      case "failure":
        if (policy === undefined) {
          this.#p.log.warn("event handler failed; dead-lettering the event", {
            topic: p.topic,
            error: outcome.error.description,
          });
          await settle(delivery, "reject", flow);
          return;
        }
        this.#p.log.warn("event handler failed", {
          topic: p.topic,
          error: outcome.error.description,
        });
        await (this.#failures as FailurePipeline).settle(
          policy,
          {
            delivery,
            kind: "event",
            method: EVENT_HOOK,
            error: outcome.error,
            thrown: outcome.thrown,
            runs,
            receivedAt,
            traceId: decoded.traceId,
            correlationId: decoded.correlationId,
            params: p.event,
            topic: p.topic,
          },
          flow,
        );
        return;
    }
  }

  /** Runs the service's middleware and `handleEvent` once; never throws. */
  async #runOnce(
    hook: EventHook,
    delivery: Delivery,
    decoded: DecodedMessage<EventPayload>,
  ): Promise<{ outcome: Outcome; context: Context }> {
    const p = decoded.payload;
    let context = p.context;
    let outcome: Outcome;
    const pipeline = activePipeline(this.#p.service.pipeline);
    if (pipeline === undefined) {
      try {
        const ctx = await this.#invokeEvent(hook, delivery, decoded, p.event, context, undefined);
        outcome = { kind: "success", result: undefined, events: ctx.events };
      } catch (err) {
        outcome = outcomeOfThrown(err, [], this.#name, EVENT_HOOK);
      }
    } else {
      const call: Mutable<ServiceEventCall> = {
        kind: "event",
        service: this.#name,
        topic: p.topic,
        event: p.event,
        target: p.target,
        context,
        headers: delivery.headers,
        traceId: decoded.traceId,
        correlationId: decoded.correlationId,
        encrypted: false,
        redelivered: delivery.redelivered,
        bodyBytes: delivery.body.byteLength,
        state: {},
      };
      const raised: Raised = { ctx: undefined };
      try {
        await pipeline(call, async () => {
          await this.#invokeEvent(hook, delivery, decoded, call.event, call.context, raised);
          return undefined;
        });
        outcome = { kind: "success", result: undefined, events: raised.ctx?.events ?? [] };
      } catch (err) {
        outcome = outcomeOfThrown(err, raised.ctx?.events ?? [], this.#name, EVENT_HOOK);
      }
      context = call.context;
    }
    return { outcome, context };
  }

  /**
   * Runs `handleEvent` and returns its context (with the events it raised); `NuropbSuccess` is a
   * success with its events, any other error is thrown.
   */
  async #invokeEvent(
    hook: EventHook,
    delivery: Delivery,
    decoded: DecodedMessage<EventPayload>,
    event: unknown,
    context: Context,
    raised: Raised | undefined,
  ): Promise<HandlerContext> {
    const p = decoded.payload;
    const ctx = createRequestContext({
      participant: this.#p.handlerCalls,
      context,
      userClaims: undefined,
      traceId: decoded.traceId,
      correlationId: decoded.correlationId,
      service: this.#name,
      method: EVENT_HOOK,
      encrypted: false,
      redelivered: delivery.redelivered,
    });
    if (raised !== undefined) raised.ctx = ctx;
    try {
      await hook.call(
        this.#p.service.instance,
        { topic: p.topic, event, target: p.target, context, traceId: decoded.traceId },
        ctx,
      );
    } catch (err) {
      if (!isSuccessSignal(err)) throw err;
      ctx.events.push(...(err.events ?? []));
    }
    return ctx;
  }
}
