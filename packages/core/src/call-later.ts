import {
  NuropbTimeoutError,
  encodePayload,
  newId,
  schedulingOf,
  toErrorPayload,
  type Context,
  type Frame,
  type Logger,
  type Transport,
  type TransportScheduling,
} from "@nuropb/protocol";
import { checkCallOptions, checkName, checkPlainObject, checkTtl, withoutKeys } from "./options.ts";
import { requestPayload } from "./outgoing-calls.ts";
import { sendError } from "./outcomes.ts";

/**
 * The context key under which an asynchronous call carries what its answer handler needs (the
 * remote service and method, the caller's `state`, the deadline). A responder echoes a request's
 * context in its response unchanged (PROTOCOL.md §4.4), Python NuroPb included, so the record
 * comes back with the answer to whichever instance of the calling service takes it. Answer
 * handlers never see it in their `context`.
 */
export const CALL_LATER_CONTEXT_KEY = "nuropb_call_later";

/** Largest `state` of an asynchronous call, as JSON text in UTF-8 bytes: it rides on the wire twice. */
export const MAX_CALL_LATER_STATE_BYTES = 4096;

/**
 * How much longer than the call's deadline (or, without one, its request's time-to-live) the
 * claim of an asynchronous call lives. The claim lets exactly one answer through: the first of
 * its answers (Python services send a second, wrong one after an exception, PROTOCOL.md §7.3) or
 * its deadline. An answer taken later than this finds the claim expired ("absent"): a call
 * without a deadline still handles it (at least once; a duplicate that late is no longer told
 * apart), a call with a deadline handles it while its deadline (`deadlineAt`, the sender's clock)
 * has not passed and dead-letters it after (the deadline had its turn). A deadline finding its
 * claim expired is dropped.
 */
export const ANSWER_CLAIM_MARGIN_MS = 10 * 60_000;

/** The record carried in the context (see {@link CALL_LATER_CONTEXT_KEY}). */
export interface CallLaterRecord {
  /** The remote service called. */
  readonly service: string;
  /** The remote method called. */
  readonly method: string;
  /** The caller's state (JSON), or null. */
  readonly state: unknown;
  /** The claim key letting one answer (or the deadline) through; a response without one is dead-lettered. */
  readonly claim?: string;
  /** Set only on the deadline's own message (never on an answer). */
  readonly deadline?: true;
  /** When the call has a deadline: when it passes, in ms since the epoch (the sender's clock). */
  readonly deadlineAt?: number;
}

/** Options of {@link MeshService.callLater} and `ctx.callLater`. */
export interface CallLaterOptions {
  /**
   * Small JSON value given back to the answer handler (carried in the call's context), at most
   * {@link MAX_CALL_LATER_STATE_BYTES} bytes as JSON. @defaultValue null
   */
  readonly state?: unknown;
  /**
   * The context sent with the call. @defaultValue `{}`, or inside a handler the handler's context
   */
  readonly context?: Context;
  /**
   * Milliseconds after which, when no answer has come, the error handler runs once with
   * `NuropbTimeoutError` (a message the broker holds, never a timer of this instance); an answer
   * arriving later is dead-lettered. Also the request's time-to-live. At most `MAX_TIMER_MS`
   * (a TypeError naming it otherwise), so its claim (10 min longer) stays within
   * `MAX_MESSAGE_TTL_MS`. @defaultValue none
   */
  readonly deadlineMs?: number;
  /** Trace id. @defaultValue a fresh id, or inside a handler the handler's */
  readonly traceId?: string;
  /**
   * The request's time-to-live in ms (it is dead-lettered unread after it).
   * @defaultValue `deadlineMs`, else the participant's `defaultTtlMs`
   */
  readonly ttlMs?: number;
}

/** The signature shared by `service.callLater` and `ctx.callLater`. */
export type CallLaterFunction = (
  service: string,
  method: string,
  params?: Readonly<Record<string, unknown>>,
  options?: CallLaterOptions,
) => Promise<string>;

const KNOWN_OPTIONS = new Set(["state", "context", "deadlineMs", "traceId", "ttlMs"]);

/** The record in a response's context, or undefined when there is none or it is malformed. */
export function callLaterRecordOf(context: unknown): CallLaterRecord | undefined {
  if (typeof context !== "object" || context === null) return undefined;
  const r = (context as Record<string, unknown>)[CALL_LATER_CONTEXT_KEY];
  if (typeof r !== "object" || r === null || Array.isArray(r)) return undefined;
  const o = r as Record<string, unknown>;
  if (typeof o.service !== "string" || typeof o.method !== "string") return undefined;
  if (o.claim !== undefined && typeof o.claim !== "string") return undefined;
  if (o.deadlineAt !== undefined && !Number.isFinite(o.deadlineAt)) return undefined;
  return {
    service: o.service,
    method: o.method,
    state: o.state ?? null,
    ...(typeof o.claim === "string" ? { claim: o.claim } : {}),
    ...(o.deadline === true ? { deadline: true as const } : {}),
    ...(typeof o.deadlineAt === "number" ? { deadlineAt: o.deadlineAt } : {}),
  };
}

/** The transport's scheduling capability. @throws TypeError when it has none. */
export function requireScheduling(transport: Transport, what: string): TransportScheduling {
  const scheduling = schedulingOf(transport);
  if (scheduling === undefined) {
    throw new TypeError(
      `${what} needs a transport with the scheduling capability (transport.scheduling); the ${transport.kind} transport given has none`,
    );
  }
  return scheduling;
}

/** What the sending side of asynchronous calls needs of its service. */
export interface CallLaterParts {
  readonly transport: Transport;
  /** The calling service's name: answers go to its queue. */
  readonly serviceName: string;
  readonly defaultTtlMs: number;
  /** Context keys holding credentials, left out of the deadline's message. */
  readonly secretKeys: readonly string[];
  /** Throws unless calls may go out; `fromHandler`: a handler's own call during the drain may. */
  readonly assertOpen: (fromHandler: boolean) => void;
  readonly log: Logger;
}

/** Defaults a handler's `ctx.callLater` fills in from the message it handles. */
export interface CallLaterDefaults {
  readonly context: Context;
  readonly traceId: string | null;
}

/**
 * Sends asynchronous calls: ordinary NuroPb requests whose `reply_to` is the calling service's
 * own queue, with the answer handler's record in their context, a claim that lets one answer
 * through and, with a deadline, a delayed deadline message. Requests go out in plaintext and without the client
 * middleware (the answer is not awaited here: there is no response for middleware to see).
 */
export class CallLaterSender {
  readonly #p: CallLaterParts;

  constructor(parts: CallLaterParts) {
    this.#p = parts;
  }

  /**
   * Sends `service.method(params)` with its answer addressed to this service; resolves with the
   * call id (the request's correlation id) once the broker has the request.
   * @throws TypeError for a bad argument or a transport without scheduling (before sending).
   * @throws NuropbNotDeliveredError when no service is there.
   */
  async callLater(
    service: string,
    method: string,
    params: Readonly<Record<string, unknown>> | undefined,
    options: CallLaterOptions | undefined,
    defaults: CallLaterDefaults | undefined,
    fromHandler: boolean,
  ): Promise<string> {
    const scheduling = requireScheduling(this.#p.transport, "callLater");
    checkName(service, "service");
    if (typeof method !== "string" || method === "")
      throw new TypeError("method must be a non-empty string");
    const p = checkPlainObject(params, "params");
    const o = checkOptions(options);
    const given = o.context === undefined ? defaults?.context : o.context;
    const context = checkPlainObject(given, "options.context");
    const state = checkState(o.state);
    const deadlineMs =
      o.deadlineMs === undefined ? undefined : checkTtl(o.deadlineMs, "options.deadlineMs");
    const ttlMs =
      o.ttlMs === undefined
        ? (deadlineMs ?? this.#p.defaultTtlMs)
        : checkTtl(o.ttlMs, "options.ttlMs");
    // Both are at most MAX_TIMER_MS (checkTtl): the claim's ttl stays under MAX_MESSAGE_TTL_MS.
    const claimTtlMs = (deadlineMs ?? ttlMs) + ANSWER_CLAIM_MARGIN_MS;
    this.#p.assertOpen(fromHandler);

    const callId = newId();
    const traceId = o.traceId ?? defaults?.traceId ?? newId();
    const claim = `nuropb-call-later:${callId}`;
    const record: CallLaterRecord = {
      service,
      method,
      state,
      claim,
      ...(deadlineMs === undefined ? {} : { deadlineAt: Date.now() + deadlineMs }),
    };
    const replyTo = scheduling.serviceReplyAddress(this.#p.serviceName);
    const frame = encodePayload(
      requestPayload(
        service,
        method,
        p,
        callId,
        { ...context, [CALL_LATER_CONTEXT_KEY]: record },
        traceId,
      ),
      { replyTo, ttlMs },
    );
    // Claim first, deadline next, request last: an answer always finds its claim open, and a
    // request that cannot be sent leaves a deadline that finds its claim taken.
    await scheduling.openClaim(claim, claimTtlMs);
    if (deadlineMs !== undefined) {
      const deadline = deadlineFrame(
        callId,
        traceId,
        context,
        record,
        replyTo,
        deadlineMs,
        this.#p,
      );
      await scheduling.sendDelayed(this.#p.serviceName, deadline, deadlineMs);
    }
    try {
      await this.#p.transport.send({ kind: "rpc", service }, frame);
    } catch (err) {
      if (deadlineMs !== undefined) {
        await scheduling.claim(claim, "unsent").catch((e: unknown) => {
          this.#p.log.warn("could not cancel the deadline of an unsent asynchronous call", {
            correlationId: callId,
            error: String((e as Error)?.message ?? e),
          });
        });
      }
      throw sendError(err, service, method);
    }
    this.#p.log.debug("asynchronous call sent", { correlationId: callId, service, method });
    return callId;
  }
}

/** The deadline's message: a response-shaped frame with `NuropbTimeoutError`, marked as the deadline. */
function deadlineFrame(
  callId: string,
  traceId: string,
  context: Context,
  record: CallLaterRecord,
  replyTo: string,
  deadlineMs: number,
  p: CallLaterParts,
): Frame {
  const error = new NuropbTimeoutError(
    `no answer from ${record.service}.${record.method} within its deadline of ${String(deadlineMs)} ms`,
  );
  return encodePayload({
    tag: "response",
    result: null,
    error: toErrorPayload(error),
    correlation_id: callId,
    trace_id: traceId,
    // Held by the broker until the deadline: without credentials.
    context: {
      ...withoutKeys(context, p.secretKeys),
      [CALL_LATER_CONTEXT_KEY]: { ...record, deadline: true },
    },
    warning: null,
    reply_to: replyTo,
  });
}

function checkOptions(options: unknown): CallLaterOptions {
  if (options === undefined) return {};
  checkCallOptions(options);
  for (const key of Object.keys(options as object)) {
    if (!KNOWN_OPTIONS.has(key)) throw new TypeError(`callLater: unknown option '${key}'`);
  }
  return options as CallLaterOptions;
}

/** `state` as it will arrive (its JSON round trip). @throws TypeError when not small JSON. */
function checkState(state: unknown): unknown {
  if (state === undefined || state === null) return null;
  let text: string | undefined;
  try {
    text = JSON.stringify(state);
  } catch (err) {
    throw new TypeError(`options.state must be JSON: ${(err as Error).message}`);
  }
  if (text === undefined) throw new TypeError("options.state must be JSON");
  const bytes = new TextEncoder().encode(text).byteLength;
  if (bytes > MAX_CALL_LATER_STATE_BYTES) {
    throw new TypeError(
      `options.state is ${String(bytes)} bytes as JSON; at most ${String(MAX_CALL_LATER_STATE_BYTES)} are carried (keep larger data in your store and pass its key)`,
    );
  }
  return JSON.parse(text) as unknown;
}
