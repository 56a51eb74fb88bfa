import { createHash } from "node:crypto";
import {
  NuropbCallAgain,
  fromErrorPayload,
  schedulingOf,
  type ClaimOutcome,
  type Context,
  type DecodedMessageOf,
  type Delivery,
  type Frame,
  type NuropbError,
  type ResponsePayload,
  type TransportScheduling,
} from "@nuropb/protocol";
import {
  CALL_LATER_CONTEXT_KEY,
  callLaterRecordOf,
  type CallLaterFunction,
  type CallLaterRecord,
} from "./call-later.ts";
import type { DispatcherParts } from "./dispatcher.ts";
import type { MessageFlow } from "./message-lifecycle.ts";
import { withoutKeys } from "./options.ts";
import { FailurePipeline } from "./failure-pipeline.ts";
import { activePipeline, type ServiceAnswerCall } from "./middleware.ts";
import { isCallAgain, outcomeOfThrown, settle, type Outcome } from "./outcomes.ts";
import { OnwardCalls, type RequestContextFields } from "./request-context.ts";
import { findMethod } from "./service-definition.ts";
import type { CommandOptions, PublishEventOptions, RequestOptions } from "./types.ts";

/**
 * What an answer handler gets besides the result (or the error): the call's `state`, its ids,
 * the context it was sent with (without credentials), and calls that carry its trace id along.
 */
export interface AnswerContext {
  /** The call's id: what `callLater` resolved with (the request's correlation id). */
  readonly callId: string;
  /** The remote service that was called. */
  readonly service: string;
  /** The remote method that was called. */
  readonly method: string;
  /** The `state` given to `callLater` (JSON), or null. */
  readonly state: unknown;
  readonly traceId: string | null;
  /**
   * The context the call was sent with, as the responder echoed it, without `Authorization`,
   * the methods' token keys and the service's `secretContextKeys`.
   */
  readonly context: Context;
  /** True when the broker delivered this answer before: handlers run at least once. */
  readonly redelivered: boolean;
  /** Another asynchronous call (trace id and context default to this answer's). */
  callLater: CallLaterFunction;
  /** Like `service.request`, with this answer's trace id and context by default. */
  request<TResult = unknown>(
    service: string,
    method: string,
    params?: Readonly<Record<string, unknown>>,
    context?: Context,
    options?: RequestOptions & { readonly rpcResponse?: true },
  ): Promise<TResult>;
  /** Like `service.command`, with this answer's trace id and context by default. */
  command(
    service: string,
    method: string,
    params?: Readonly<Record<string, unknown>>,
    context?: Context,
    options?: CommandOptions,
  ): Promise<void>;
  /** Like `service.publishEvent`, with this answer's trace id and context by default. */
  publishEvent(
    topic: string,
    event: unknown,
    context?: Context,
    options?: PublishEventOptions,
  ): Promise<void>;
}

/** Handles the result of an asynchronous call (see {@link onAnswer}). */
export type AnswerHandler = (result: unknown, ctx: AnswerContext) => unknown;
/** Handles the error of an asynchronous call, or its deadline (`NuropbTimeoutError`). */
export type AnswerErrorHandler = (error: NuropbError, ctx: AnswerContext) => unknown;

/** The plain-JavaScript form of {@link onAnswer} / {@link onAnswerError}: `createService({ answerHandlers })`. */
export interface AnswerHandlerOption {
  /** The remote service called. */
  readonly service: string;
  /** The remote method called. */
  readonly method: string;
  /** Name of the instance method handling its results. */
  readonly onResult?: string;
  /** Name of the instance method handling its errors and its deadline. */
  readonly onError?: string;
}

type AnswerKind = "result" | "error";
interface AnswerMark {
  readonly service: string;
  readonly method: string;
  readonly kind: AnswerKind;
}

const ANSWER_MARKS: unique symbol = Symbol.for("@nuropb/answer-handler");

/** The answer handlers of a service, by remote method. */
export interface AnswerTable {
  /** Key: {@link answerKey}. */
  readonly handlers: ReadonlyMap<string, { result?: AnswerHandler; error?: AnswerErrorHandler }>;
  /** The instance methods that handle answers: never served as mesh methods. */
  readonly methodNames: ReadonlySet<string>;
}

/**
 * When the claim store fails while an answer takes its call's claim, the answer is sent again
 * (a delayed copy, held by the broker) after each of these delays in turn, then dead-lettered.
 */
export const CLAIM_RETRY_DELAYS_MS: readonly number[] = Object.freeze([1_000, 5_000, 30_000]);

/** The header counting an answer's claim retries so far (see {@link CLAIM_RETRY_DELAYS_MS}). */
export const CLAIM_RETRY_HEADER = "nuropb_claim_retries";

function claimRetriesOf(headers: Readonly<Record<string, unknown>>): number {
  const v = headers[CLAIM_RETRY_HEADER];
  const n = typeof v === "string" && /^\d{1,3}$/.test(v) ? Number(v) : 0;
  return Math.min(n, CLAIM_RETRY_DELAYS_MS.length);
}

/**
 * The method name under which answer handlers' failures go through the service's `failurePolicy`
 * (its failure record, delayed copies and `nuropb.fault.{service}.handleAnswer` events).
 */
export const ANSWER_HOOK = "handleAnswer" as const;

/** The table key of a remote method. */
export function answerKey(service: string, method: string): string {
  return `${service}\u0000${method}`;
}

function marker(kind: AnswerKind, name: string, service: string, method: string) {
  if (typeof service !== "string" || service === "")
    throw new TypeError(`${name}: service must be a non-empty string`);
  if (typeof method !== "string" || method === "")
    throw new TypeError(`${name}: method must be a non-empty string`);
  return function decorate<T extends (...args: never[]) => unknown>(
    fn: T,
    context?: ClassMethodDecoratorContext,
  ): T {
    if (typeof fn !== "function") throw new TypeError(`${name} decorates methods only`);
    if (context !== undefined && context.kind !== "method") {
      throw new TypeError(`${name} decorates methods, not a ${context.kind}`);
    }
    const marks = (fn as unknown as Record<symbol, AnswerMark[] | undefined>)[ANSWER_MARKS] ?? [];
    Object.defineProperty(fn, ANSWER_MARKS, {
      value: [...marks, { service, method, kind }],
      configurable: true,
    });
    return fn;
  };
}

/**
 * Declares the method handling the results of asynchronous calls to `service.method` (made with
 * `ctx.callLater` or `service.callLater`): a standard (TC39) method decorator. The method is
 * called as `(result, ctx: AnswerContext)` by whichever instance of the service takes the answer,
 * at least once; it is not served as a mesh method.
 *
 * ```ts
 * class Orders {
 *   @onAnswer("payments", "charge")
 *   charged(result: Receipt, ctx: AnswerContext) { ... }
 * }
 * ```
 * Plain JavaScript: `onAnswer("payments", "charge")(Orders.prototype.charged)`, or pass
 * `answerHandlers: [{ service: "payments", method: "charge", onResult: "charged" }]` to `createService`.
 * @throws TypeError for a missing service or method name.
 */
export function onAnswer(service: string, method: string) {
  return marker("result", "onAnswer", service, method);
}

/**
 * Declares the method handling the errors of asynchronous calls to `service.method`, called as
 * `(error: NuropbError, ctx: AnswerContext)`; a call's deadline arrives here once as
 * `NuropbTimeoutError`. See {@link onAnswer}.
 * @throws TypeError for a missing service or method name.
 */
export function onAnswerError(service: string, method: string) {
  return marker("error", "onAnswerError", service, method);
}

/**
 * The answer handlers of `instance`: methods marked with {@link onAnswer} / {@link onAnswerError}
 * and those named by `option`.
 * @throws TypeError for a bad option or two handlers of the same kind for one remote method.
 */
export function collectAnswerHandlers(instance: object, option: unknown): AnswerTable {
  const handlers = new Map<string, { result?: AnswerHandler; error?: AnswerErrorHandler }>();
  const methodNames = new Set<string>();
  const add = (mark: AnswerMark, fn: unknown, name: string): void => {
    const k = answerKey(mark.service, mark.method);
    const entry = handlers.get(k) ?? {};
    if (entry[mark.kind] !== undefined) {
      throw new TypeError(
        `createService: two ${mark.kind} handlers for answers of ${mark.service}.${mark.method} ('${name}' is the second)`,
      );
    }
    entry[mark.kind] = fn as AnswerHandler;
    handlers.set(k, entry);
    methodNames.add(name);
  };
  const names = new Set<string>();
  for (
    let o: object | null = instance;
    o !== null && o !== Object.prototype;
    o = Object.getPrototypeOf(o) as object | null
  ) {
    for (const name of Object.getOwnPropertyNames(o)) names.add(name);
  }
  for (const name of names) {
    if (name === "constructor") continue;
    const fn = findMethod(instance, name);
    const marks = (fn as unknown as Record<symbol, AnswerMark[] | undefined> | undefined)?.[
      ANSWER_MARKS
    ];
    for (const mark of marks ?? []) add(mark, fn, name);
  }
  if (option === undefined) return { handlers, methodNames };
  if (!Array.isArray(option))
    throw new TypeError("createService: options.answerHandlers must be an array");
  for (const [i, item] of (option as unknown[]).entries()) {
    const where = `createService: answerHandlers[${String(i)}]`;
    if (typeof item !== "object" || item === null)
      throw new TypeError(`${where} must be an object`);
    const o = item as Record<string, unknown>;
    for (const key of Object.keys(o)) {
      if (!["service", "method", "onResult", "onError"].includes(key))
        throw new TypeError(`${where}: unknown option '${key}'`);
    }
    if (typeof o.service !== "string" || o.service === "")
      throw new TypeError(`${where}.service must be a non-empty string`);
    if (typeof o.method !== "string" || o.method === "")
      throw new TypeError(`${where}.method must be a non-empty string`);
    if (o.onResult === undefined && o.onError === undefined)
      throw new TypeError(`${where} names neither onResult nor onError`);
    for (const [key, kind] of [
      ["onResult", "result"],
      ["onError", "error"],
    ] as const) {
      const name = o[key];
      if (name === undefined) continue;
      const fn = typeof name === "string" ? findMethod(instance, name) : undefined;
      if (fn === undefined) {
        throw new TypeError(`${where}.${key} names no method of the service instance`);
      }
      add({ service: o.service, method: o.method, kind }, fn, name as string);
    }
  }
  return { handlers, methodNames };
}

/** One answer handler's context. */
class AnswerContextImpl extends OnwardCalls implements AnswerContext {
  readonly callId: string;
  readonly service: string;
  readonly method: string;
  readonly state: unknown;
  readonly traceId: string | null;
  readonly context: Context;
  readonly redelivered: boolean;

  constructor(
    f: Omit<AnswerContext, "callLater" | "request" | "command" | "publishEvent">,
    calls: RequestContextFields["participant"],
  ) {
    super(calls);
    this.callId = f.callId;
    this.service = f.service;
    this.method = f.method;
    this.state = f.state;
    this.traceId = f.traceId;
    this.context = f.context;
    this.redelivered = f.redelivered;
  }
}

/**
 * The responses arriving on a service's queue: answers of its asynchronous calls (and their
 * deadlines). Each goes to the handler declared for its remote method once it has won its call's
 * claim (one answer per call, or the deadline); it is acked after the handler; when the handler
 * throws it goes through the service's `failurePolicy` (immediate retries, delayed copies, the
 * failure record and fault event, as method `handleAnswer`) or, without one, is dead-lettered
 * (requeued once for `NuropbCallAgain`). A response is dead-lettered with a logged reason when
 * nothing should handle it: no record, a record without a claim, no handler, or the claim went to
 * the deadline or to another answer (late, or a duplicate). A deadline that lost to an answer is
 * acked silently. The service's middleware runs around each run of an answer handler (a
 * `ServiceAnswerCall`, kind `"answer"`); a middleware's refusal fails the answer as a throwing
 * handler does. Per-method middleware does not apply: an answer is not a mesh method.
 */
export class AnswerDispatcher<TService extends object> {
  readonly #p: DispatcherParts<TService>;
  /** Undefined: the service has no failure policy (a failing handler is dead-lettered at once). */
  readonly #failures: FailurePipeline | undefined;
  /**
   * Claims in flight per call key: this instance takes a call's claims in the order its answers
   * arrived. Python sends the error response, then a duplicate whose `result` is the error's
   * text (PROTOCOL.md §7.3); raced, the duplicate could claim first and reach the result handler.
   */
  readonly #claiming = new Map<string, Promise<ClaimOutcome>>();

  constructor(parts: DispatcherParts<TService>) {
    this.#p = parts;
    this.#failures =
      parts.service.failurePolicy === undefined ? undefined : FailurePipeline.of(parts);
  }

  /** Handles one response delivered to the service queue; settles it exactly once, never throws. */
  async handle(
    delivery: Delivery,
    decoded: DecodedMessageOf<ResponsePayload>,
    flow: MessageFlow | undefined,
  ): Promise<void> {
    const payload = decoded.payload;
    const record = callLaterRecordOf(payload.context);
    if (record === undefined) {
      await this.#deadLetter(
        delivery,
        decoded,
        `a response that answers no asynchronous call (no ${CALL_LATER_CONTEXT_KEY} record in its context)`,
        flow,
      );
      return;
    }
    const { service, method } = record;
    const failed = payload.error !== null && payload.error !== undefined;
    const entry = this.#p.service.answers.handlers.get(answerKey(service, method));
    const handler = failed ? entry?.error : entry?.result;
    if (handler === undefined) {
      const what = record.deadline === true ? "deadline" : failed ? "error" : "result";
      await this.#deadLetter(
        delivery,
        decoded,
        `no ${failed ? "onAnswerError" : "onAnswer"} handler for the ${what} of ${service}.${method}`,
        flow,
      );
      return;
    }
    if (record.claim === undefined) {
      // callLater always sets one: a record without it is forged or garbled.
      await this.#deadLetter(
        delivery,
        decoded,
        `a ${record.deadline === true ? "deadline" : "response"} whose ${CALL_LATER_CONTEXT_KEY} record has no claim (forged or garbled)`,
        flow,
      );
      return;
    }
    const won = await this.#claim(delivery, decoded, record, record.claim, flow);
    if (!won) return;
    const { [CALL_LATER_CONTEXT_KEY]: _record, ...rest } = payload.context;
    const context = withoutKeys(rest, this.#p.service.contextSecretKeys);
    const error = failed
      ? fromErrorPayload(payload.error as NonNullable<typeof payload.error>)
      : undefined;
    const argument = failed ? error : payload.result;
    const invoke = async (ctxContext: Context): Promise<void> => {
      const ctx = new AnswerContextImpl(
        {
          callId: decoded.correlationId,
          service,
          method,
          state: record.state,
          traceId: decoded.traceId,
          context: ctxContext,
          redelivered: delivery.redelivered,
        },
        this.#p.handlerCalls,
      );
      await (handler as (a: unknown, c: AnswerContext) => unknown).call(
        this.#p.service.instance,
        argument,
        ctx,
      );
    };
    const run = async (): Promise<Outcome> => {
      try {
        // The service's middleware, chosen per run (as for requests and events); an answer is
        // not a mesh method, so no per-method middleware applies.
        const pipeline = activePipeline(this.#p.service.pipeline);
        if (pipeline === undefined) {
          await invoke(context);
        } else {
          const call: ServiceAnswerCall = {
            kind: "answer",
            method: ANSWER_HOOK,
            service: this.#p.service.name,
            calledService: service,
            calledMethod: method,
            answer: record.deadline === true ? "deadline" : failed ? "error" : "result",
            result: failed ? undefined : payload.result,
            error,
            callState: record.state,
            userClaims: undefined,
            context,
            headers: delivery.headers,
            traceId: decoded.traceId,
            correlationId: decoded.correlationId,
            encrypted: decoded.encrypted,
            redelivered: delivery.redelivered,
            bodyBytes: delivery.body.byteLength,
            state: {},
          };
          await pipeline(call, async () => {
            await invoke(call.context);
            return undefined;
          });
        }
        return { kind: "success", result: null, events: [] };
      } catch (err) {
        return outcomeOfThrown(err, [], service, method);
      }
    };
    const receivedAt = Date.now();
    let outcome = await run();
    const policy = this.#failures === undefined ? undefined : this.#p.service.failurePolicy;
    let runs = 1;
    if (outcome.kind === "failure" && policy !== undefined) {
      ({ outcome, runs } = await (this.#failures as FailurePipeline).retryImmediately(
        policy,
        outcome,
        run,
      ));
    }
    switch (outcome.kind) {
      case "success":
        await settle(delivery, "ack", flow);
        return;
      case "call-again":
        await this.#failed(delivery, decoded, new NuropbCallAgain(), service, method, flow);
        return;
      case "failure":
        if (policy === undefined) {
          await this.#failed(delivery, decoded, outcome.thrown, service, method, flow);
          return;
        }
        this.#p.log.warn("answer handler failed", {
          correlationId: decoded.correlationId,
          service,
          method,
          error: outcome.error.wireName,
        });
        await (this.#failures as FailurePipeline).settle(
          policy,
          {
            delivery,
            kind: "command",
            method: ANSWER_HOOK,
            error: outcome.error,
            thrown: outcome.thrown,
            runs,
            receivedAt,
            traceId: decoded.traceId,
            correlationId: decoded.correlationId,
            params: null,
          },
          flow,
        );
        return;
    }
  }

  /**
   * Takes the call's claim for the answer or the deadline; settles the delivery and returns
   * false when it is not this message's to handle. A claim another message holds ("lost") lets
   * nothing through; an expired one ("absent") lets an answer through unless its call's deadline
   * has passed (see `ANSWER_CLAIM_MARGIN_MS`), never a deadline.
   */
  async #claim(
    delivery: Delivery,
    decoded: DecodedMessageOf<ResponsePayload>,
    record: CallLaterRecord,
    key: string,
    flow: MessageFlow | undefined,
  ): Promise<boolean> {
    const isDeadline = record.deadline === true;
    const scheduling = schedulingOf(this.#p.transport);
    if (scheduling === undefined) {
      await this.#deadLetter(
        delivery,
        decoded,
        "the call has a claim but the transport has no scheduling to take it",
        flow,
      );
      return false;
    }
    let outcome: ClaimOutcome;
    try {
      // An answer's taker is its body's digest: a redelivered copy claims again, another answer
      // to the same call (Python's duplicate after an exception, PROTOCOL.md §7.3) cannot.
      const taker = isDeadline
        ? "deadline"
        : `answer:${createHash("sha256").update(delivery.body).digest("hex")}`;
      outcome = await this.#claimInOrder(scheduling, key, taker);
    } catch (err) {
      await this.#retryClaimLater(delivery, decoded, scheduling, err, flow);
      return false;
    }
    if (outcome === "won") return true;
    if (isDeadline) {
      this.#p.log.debug(
        outcome === "lost"
          ? "deadline passed after its answer was handled; dropped"
          : "deadline found its claim expired; dropped",
        { correlationId: decoded.correlationId },
      );
      await settle(delivery, "ack", flow);
      return false;
    }
    if (outcome === "absent") {
      if (record.deadlineAt === undefined || Date.now() < record.deadlineAt) {
        this.#p.log.debug("the call's claim has expired; its answer is handled", {
          correlationId: decoded.correlationId,
        });
        return true;
      }
      await this.#deadLetter(
        delivery,
        decoded,
        "a late answer: the call's deadline has passed and its claim has expired",
        flow,
      );
      return false;
    }
    await this.#deadLetter(
      delivery,
      decoded,
      "a late or duplicate answer: the call's deadline fired or another answer came first",
      flow,
    );
    return false;
  }

  /** `scheduling.claim(key, taker)` once this instance's earlier claims of `key` have settled. */
  #claimInOrder(
    scheduling: TransportScheduling,
    key: string,
    taker: string,
  ): Promise<ClaimOutcome> {
    const take = (): Promise<ClaimOutcome> => scheduling.claim(key, taker);
    const before = this.#claiming.get(key);
    const mine = before === undefined ? take() : before.then(take, take);
    this.#claiming.set(key, mine);
    const forget = (): void => {
      if (this.#claiming.get(key) === mine) this.#claiming.delete(key);
    };
    mine.then(forget, forget);
    return mine;
  }

  /**
   * The claim store failed (briefly unavailable, say): sends the answer again after the next of
   * {@link CLAIM_RETRY_DELAYS_MS} (the count rides in {@link CLAIM_RETRY_HEADER}) and acks this
   * copy once the broker holds the new one; dead-letters it with the reason once they are spent
   * or the copy cannot be sent.
   */
  async #retryClaimLater(
    delivery: Delivery,
    decoded: DecodedMessageOf<ResponsePayload>,
    scheduling: TransportScheduling,
    err: unknown,
    flow: MessageFlow | undefined,
  ): Promise<void> {
    const error = String((err as Error)?.message ?? err);
    const retries = claimRetriesOf(delivery.headers);
    const delayMs = CLAIM_RETRY_DELAYS_MS[retries];
    if (delayMs !== undefined) {
      const frame: Frame = {
        headers: { ...delivery.headers, [CLAIM_RETRY_HEADER]: String(retries + 1) },
        body: delivery.body,
        correlationId: delivery.correlationId,
        ...(delivery.replyTo === undefined ? {} : { replyTo: delivery.replyTo }),
      };
      try {
        await scheduling.sendDelayed(this.#p.service.name, frame, delayMs);
        this.#p.log.warn("could not claim an asynchronous call's answer; trying again later", {
          correlationId: decoded.correlationId,
          error,
          retry: retries + 1,
          delayMs,
        });
        await settle(delivery, "ack", flow);
        return;
      } catch (e) {
        this.#p.log.warn("could not schedule another try at an answer's claim", {
          correlationId: decoded.correlationId,
          error: String((e as Error)?.message ?? e),
        });
      }
    }
    await this.#deadLetter(
      delivery,
      decoded,
      `the call's claim could not be taken (${String(retries)} retries): ${error}`,
      flow,
    );
  }

  async #failed(
    delivery: Delivery,
    decoded: DecodedMessageOf<ResponsePayload>,
    err: unknown,
    service: string,
    method: string,
    flow: MessageFlow | undefined,
  ): Promise<void> {
    if (isCallAgain(err) && !delivery.redelivered && this.#p.transport.capabilities.redelivery) {
      this.#p.log.debug("answer handler asked to be called again: requeued once", {
        correlationId: decoded.correlationId,
      });
      await settle(delivery, "requeue", flow);
      return;
    }
    this.#p.log.warn("answer handler failed; the answer is dead-lettered", {
      correlationId: decoded.correlationId,
      service,
      method,
      error: err instanceof Error ? err.name : typeof err,
    });
    await settle(delivery, "reject", flow);
  }

  async #deadLetter(
    delivery: Delivery,
    decoded: DecodedMessageOf<ResponsePayload>,
    reason: string,
    flow: MessageFlow | undefined,
  ): Promise<void> {
    this.#p.log.warn("a response on the service queue was dead-lettered", {
      correlationId: decoded.correlationId,
      reason,
    });
    await settle(delivery, "reject", flow);
  }
}
