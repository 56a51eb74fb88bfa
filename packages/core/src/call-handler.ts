import {
  DESCRIBE_METHOD,
  toErrorPayload,
  type CommandPayload,
  type Context,
  type DecodedMessage,
  type Delivery,
  type ErrorPayload,
  type RequestPayload,
  type WireHeaders,
} from "@nuropb/protocol";
import type { ReplyKey } from "@nuropb/crypto";
import { admitMethod, authorise, validateParams } from "./admission.ts";
import type { DispatcherParts } from "./dispatcher.ts";
import { FailurePipeline } from "./failure-pipeline.ts";
import type { MessageFlow } from "./message-lifecycle.ts";
import { activePipeline, createOutgoingHeaders, type OutgoingHeaders } from "./middleware.ts";
import {
  callAgainRejected,
  isSuccessSignal,
  outcomeOfThrown,
  publishRaised,
  settle,
  type Outcome,
} from "./outcomes.ts";
import { createRequestContext, type HandlerContext } from "./request-context.ts";
import type { MethodEntry } from "./service-definition.ts";
import { STATS_METHOD } from "./service-stats.ts";

/**
 * A request or command as its middleware sees it. A class rather than a literal: one is made
 * per handled call when there is middleware, and its response headers and state are made only
 * when a middleware asks for them (a command's response headers are never sent).
 */
class Call {
  readonly kind: "request" | "command";
  readonly service: string;
  readonly method: string;
  params: Record<string, unknown>;
  context: Context;
  readonly headers: WireHeaders;
  readonly traceId: string | null;
  readonly correlationId: string;
  readonly encrypted: boolean;
  readonly redelivered: boolean;
  readonly bodyBytes: number;
  userClaims: unknown = undefined;
  #responseHeaders: OutgoingHeaders | undefined;
  #state: Record<string, unknown> | undefined;

  constructor(
    service: string,
    delivery: Delivery,
    decoded: DecodedMessage<RequestPayload | CommandPayload>,
  ) {
    const payload = decoded.payload;
    this.kind = decoded.type;
    this.service = service;
    this.method = payload.method;
    this.params = payload.params as Record<string, unknown>;
    this.context = payload.context;
    this.headers = delivery.headers;
    this.traceId = decoded.traceId;
    this.correlationId = decoded.correlationId;
    this.encrypted = decoded.encrypted;
    this.redelivered = delivery.redelivered;
    this.bodyBytes = delivery.body.byteLength;
  }

  get responseHeaders(): OutgoingHeaders {
    return (this.#responseHeaders ??= createOutgoingHeaders());
  }

  get state(): Record<string, unknown> {
    return (this.#state ??= {});
  }

  /** The response headers middleware set, or undefined when none asked for them. */
  static responseHeadersOf(call: Call): OutgoingHeaders | undefined {
    return call.#responseHeaders;
  }
}

/** The handler context of a piped call, once made (its raised events are read from it). */
interface Raised {
  ctx: HandlerContext | undefined;
}

/**
 * The requests and commands of a service: the service's middleware, then the method admitted
 * and its caller authorised, then the method's middleware, then the params validated and the
 * handler run; the message is settled and answered by the outcome, and the events the handler
 * raised go out last. Without any active middleware the steps run directly (chosen per call).
 */
export class CallHandler<TService extends object> {
  readonly #p: DispatcherParts<TService>;
  readonly #name: string;
  /** Undefined: no failure policy anywhere (failures are dead-lettered at once). */
  readonly #failures: FailurePipeline | undefined;

  constructor(parts: DispatcherParts<TService>) {
    this.#p = parts;
    this.#name = parts.service.name;
    this.#failures = FailurePipeline.of(parts);
  }

  /** Whether any middleware (the service's or the method's) is active for a call of `method`. */
  #piped(method: string): boolean {
    const service = this.#p.service;
    if (activePipeline(service.pipeline) !== undefined) return true;
    return (
      service.methodPipelines && activePipeline(service.methods.get(method)?.pipeline) !== undefined
    );
  }

  /** Handles a decoded request or command: runs it, settles, answers, publishes raised events. */
  async handle(
    delivery: Delivery,
    decoded: DecodedMessage<RequestPayload | CommandPayload>,
    replyKey: ReplyKey | undefined,
    flow: MessageFlow | undefined,
  ): Promise<void> {
    const payload = decoded.payload;
    flow?.emit("service-handle");
    // A delayed redelivery whose caller's ttl has passed is dead-lettered unrun.
    if (
      this.#failures !== undefined &&
      (await this.#failures.settleIfExpired(
        {
          delivery,
          kind: decoded.type,
          method: payload.method,
          traceId: decoded.traceId,
          correlationId: decoded.correlationId,
          params: payload.params,
        },
        flow,
      ))
    ) {
      return;
    }
    const t0 = this.#p.stats.started();
    const t0Wall = this.#failures === undefined ? 0 : Date.now();
    let outcome: Outcome;
    let call: Call | undefined;
    if (this.#piped(payload.method)) {
      call = new Call(this.#name, delivery, decoded);
      outcome = await this.#runPiped(call, delivery);
    } else {
      // Synchronous when the handler is (and no authorize): no await, no promise of its own.
      const ran = this.#run(delivery, decoded);
      outcome = isPromiseLike(ran) ? await ran : ran;
    }
    const policy = this.#failures?.policyFor(payload.method);
    let runs = 1;
    if (outcome.kind === "failure" && policy !== undefined) {
      const piped = call !== undefined;
      ({ outcome, runs } = await (this.#failures as FailurePipeline).retryImmediately(
        policy,
        outcome,
        () => {
          if (!piped) return Promise.resolve(this.#run(delivery, decoded));
          call = new Call(this.#name, delivery, decoded);
          return this.#runPiped(call, delivery);
        },
      ));
    }
    const context = call?.context ?? payload.context;
    const headers = call === undefined ? undefined : Call.responseHeadersOf(call);
    switch (outcome.kind) {
      case "success":
        this.#p.stats.finished(payload.method, t0, undefined, context);
        await settle(delivery, "ack", flow);
        await this.#answer(delivery, decoded, replyKey, outcome.result, null, headers, flow);
        // Events go out after the response, in plaintext with `encrypted: ""` even when the
        // call was encrypted (never plaintext marked "yes": that kills Python subscribers).
        if (outcome.events.length > 0)
          await publishRaised(outcome.events, context, decoded, this.#p.sendEvent, this.#p.log);
        return;
      case "call-again": {
        if (!delivery.redelivered && this.#p.transport.capabilities.redelivery) {
          this.#p.stats.finished(payload.method, t0, undefined, context);
          this.#p.log.debug("call again: requeued once", { correlationId: decoded.correlationId });
          await settle(delivery, "requeue", flow);
          return;
        }
        const rejected = callAgainRejected(decoded.traceId, decoded.correlationId);
        this.#p.stats.finished(payload.method, t0, rejected, context);
        await settle(delivery, "reject", flow);
        const error = toErrorPayload(rejected);
        await this.#answer(delivery, decoded, replyKey, null, error, headers, flow);
        return;
      }
      case "failure": {
        this.#p.stats.finished(payload.method, t0, outcome.error, context);
        this.#p.log.debug("handler failed", {
          method: payload.method,
          error: outcome.error.wireName,
        });
        if (policy === undefined) {
          await settle(delivery, "reject", flow);
        } else {
          const failed = {
            delivery,
            kind: decoded.type,
            method: payload.method,
            error: outcome.error,
            thrown: outcome.thrown,
            runs,
            receivedAt: t0Wall,
            traceId: decoded.traceId,
            correlationId: decoded.correlationId,
            params: payload.params,
          };
          const how = await (this.#failures as FailurePipeline).settle(policy, failed, flow);
          if (how === "scheduled") return; // a later delivery answers
        }
        const error = toErrorPayload(outcome.error);
        await this.#answer(delivery, decoded, replyKey, null, error, headers, flow);
        return;
      }
    }
  }

  /**
   * Admits, authorises, validates and runs a request or command (no middleware); never throws.
   * The outcome itself when nothing on the way is asynchronous (no authorize, the handler
   * returns a value): most calls then take no promise and no await here.
   */
  #run(
    delivery: Delivery,
    decoded: DecodedMessage<RequestPayload | CommandPayload>,
  ): Outcome | Promise<Outcome> {
    const payload = decoded.payload;
    let ctx: HandlerContext | undefined;
    try {
      if (payload.method === DESCRIBE_METHOD)
        return { kind: "success", result: this.#p.describe(), events: [] };
      if (payload.method === STATS_METHOD)
        return { kind: "success", result: this.#p.stats.report(), events: [] };
      const entry = admitMethod(
        this.#p.service.methods,
        this.#name,
        payload.method,
        decoded.encrypted,
      );
      if (entry.options.authorize !== undefined)
        return this.#runAuthorised(entry, delivery, decoded);
      validateParams(entry, payload.params, this.#name, payload.method);
      ctx = this.#context(delivery, decoded, undefined);
      const result: unknown = entry.fn.call(this.#p.service.instance, payload.params, ctx);
      if (isPromiseLike(result)) return this.#awaitResult(result, ctx, payload.method);
      return { kind: "success", result, events: ctx.events };
    } catch (err) {
      return outcomeOfThrown(err, ctx?.events ?? [], this.#name, payload.method);
    }
  }

  /** {@link #run} for a method with `authorize`. */
  async #runAuthorised(
    entry: MethodEntry,
    delivery: Delivery,
    decoded: DecodedMessage<RequestPayload | CommandPayload>,
  ): Promise<Outcome> {
    const payload = decoded.payload;
    let ctx: HandlerContext | undefined;
    try {
      const userClaims = await authorise(entry, payload.context, this.#name, payload.method);
      validateParams(entry, payload.params, this.#name, payload.method);
      ctx = this.#context(delivery, decoded, userClaims);
      const result: unknown = await entry.fn.call(this.#p.service.instance, payload.params, ctx);
      return { kind: "success", result, events: ctx.events };
    } catch (err) {
      return outcomeOfThrown(err, ctx?.events ?? [], this.#name, payload.method);
    }
  }

  /** The outcome of a handler that returned a promise (or another thenable). */
  async #awaitResult(
    pending: PromiseLike<unknown>,
    ctx: HandlerContext,
    method: string,
  ): Promise<Outcome> {
    try {
      const result: unknown = await pending;
      return { kind: "success", result, events: ctx.events };
    } catch (err) {
      return outcomeOfThrown(err, ctx.events, this.#name, method);
    }
  }

  /** The handler context of an unpiped call. */
  #context(
    delivery: Delivery,
    decoded: DecodedMessage<RequestPayload | CommandPayload>,
    userClaims: unknown,
  ): HandlerContext {
    const payload = decoded.payload;
    return createRequestContext({
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
  }

  /**
   * The service's middleware, then admission and authorisation, then the method's middleware,
   * then validation and the handler; never throws.
   */
  async #runPiped(call: Call, delivery: Delivery): Promise<Outcome> {
    const raised: Raised = { ctx: undefined };
    try {
      const admit = (): Promise<unknown> => this.#admit(call, delivery, raised);
      const pipeline = this.#p.service.pipeline;
      const result = await (pipeline === undefined ? admit() : pipeline(call, admit));
      return { kind: "success", result, events: raised.ctx?.events ?? [] };
    } catch (err) {
      return outcomeOfThrown(err, raised.ctx?.events ?? [], this.#name, call.method);
    }
  }

  async #admit(call: Call, delivery: Delivery, raised: Raised): Promise<unknown> {
    if (call.method === DESCRIBE_METHOD) return this.#p.describe();
    if (call.method === STATS_METHOD) return this.#p.stats.report();
    const entry = admitMethod(this.#p.service.methods, this.#name, call.method, call.encrypted);
    if (entry.options.authorize !== undefined)
      call.userClaims = await authorise(entry, call.context, this.#name, call.method);
    const handle = (): Promise<unknown> => this.#handle(entry, call, delivery, raised);
    return entry.pipeline === undefined ? handle() : entry.pipeline(call, handle);
  }

  /** Validates the params and runs the handler; `NuropbSuccess` is its result (a success). */
  async #handle(
    entry: MethodEntry,
    call: Call,
    delivery: Delivery,
    raised: Raised,
  ): Promise<unknown> {
    validateParams(entry, call.params, this.#name, call.method);
    const ctx = createRequestContext({
      participant: this.#p.handlerCalls,
      context: call.context,
      userClaims: call.userClaims,
      traceId: call.traceId,
      correlationId: call.correlationId,
      service: this.#name,
      method: call.method,
      encrypted: call.encrypted,
      redelivered: delivery.redelivered,
    });
    raised.ctx = ctx;
    try {
      return await entry.fn.call(this.#p.service.instance, call.params, ctx);
    } catch (err) {
      if (!isSuccessSignal(err)) throw err;
      ctx.events.push(...(err.events ?? []));
      return err.result;
    }
  }

  /** Requests get exactly one response; commands none. */
  async #answer(
    delivery: Delivery,
    decoded: DecodedMessage<RequestPayload | CommandPayload>,
    replyKey: ReplyKey | undefined,
    result: unknown,
    error: ErrorPayload | null,
    headers: OutgoingHeaders | undefined,
    flow: MessageFlow | undefined,
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
        headers,
      },
      replyKey,
      flow,
    );
  }
}

/** Whether `await` would wait for `value` (an object or function with a `then` method). */
function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return (
    ((typeof value === "object" && value !== null) || typeof value === "function") &&
    typeof (value as { then?: unknown }).then === "function"
  );
}
