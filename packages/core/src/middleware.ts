import {
  Header,
  type Context,
  type Frame,
  type NuropbError,
  type ResponsePayload,
  type WireHeaders,
} from "@nuropb/protocol";

/**
 * Extra wire headers a middleware sends with a message (a request, command or event, or a
 * service's response). They travel in plaintext beside the body, even when the body is
 * encrypted. NuroPb's own names (`trace_id`, `encrypted`, `nuropb_…`) are refused.
 */
export type OutgoingHeaders = Map<string, string>;

/** A response as it arrived for a client's request: its payload and its wire headers. */
export interface IncomingResponse {
  readonly payload: ResponsePayload;
  readonly headers: WireHeaders;
}

/** What every outgoing call shows its middleware. */
interface ClientCallBase {
  /** The context sent with the call; replace it to change what is sent. */
  context: Context;
  /** Extra wire headers to send (see {@link OutgoingHeaders}). */
  readonly headers: OutgoingHeaders;
  /** Trace id sent in the headers and the body. */
  traceId: string;
  readonly correlationId: string;
  /** Room for the middleware of one call to share values (as Koa's `ctx.state`). */
  readonly state: Record<string, unknown>;
}

/** A client's outgoing request; `next()` resolves with what `request()` resolves with. */
export interface ClientRequestCall extends ClientCallBase {
  readonly kind: "request";
  readonly service: string;
  readonly method: string;
  /** The params sent; replace the object (it is the caller's) to change them. */
  params: Readonly<Record<string, unknown>>;
  /** Time-to-live in ms: the message's expiry and the client's timeout. */
  ttlMs: number;
  /** Whether the call is sealed end to end. */
  encrypted: boolean;
  /** False: `request()` (and so `next()`) resolves with the whole response payload. */
  readonly rpcResponse: boolean;
  /** The response, once it has arrived (after `next()` settled with the service's answer). */
  readonly response: IncomingResponse | undefined;
}

/** A client's outgoing command; `next()` resolves when the transport has it. */
export interface ClientCommandCall extends ClientCallBase {
  readonly kind: "command";
  readonly service: string;
  readonly method: string;
  params: Readonly<Record<string, unknown>>;
  ttlMs: number;
  encrypted: boolean;
}

/** An event the participant publishes; `next()` resolves when the transport has it. */
export interface ClientEventCall extends ClientCallBase {
  readonly kind: "event";
  readonly topic: string;
  event: unknown;
  target: readonly string[] | null;
}

/** A call a client (or a service, for its own outgoing calls) makes, as middleware sees it. */
export type ClientCall = ClientRequestCall | ClientCommandCall | ClientEventCall;

/**
 * An interceptor of a participant's outgoing calls: onion-shaped, as Koa and tRPC do it. Before
 * `await next()` it sees and may change the call (params, context, headers, ttl…); `next()` sends
 * it and settles with the outcome (for a request: the result, or the remote error rebuilt).
 * Return `next()`'s value (or another) as the call's result; return without calling `next()` to
 * short-circuit; throw to fail the call. Middlewares run in the order given, the first outermost.
 * @example
 * const timing: ClientMiddleware = async (call, next) => {
 *   const t0 = performance.now();
 *   try { return await next(); } finally { metrics.observe(call.kind, performance.now() - t0); }
 * };
 */
export interface ClientMiddleware extends MiddlewareActivity {
  (call: ClientCall, next: () => Promise<unknown>): Promise<unknown>;
}

/**
 * What a middleware may say of itself besides running. `active()`, when given, is asked before
 * each call: while it returns false the middleware is skipped (as if it were not in its list),
 * and while no middleware of a list is active core takes the same direct path as with no
 * middleware at all (no call object, no closures). It must be cheap and synchronous, and must
 * not throw. Without `active`, a middleware always runs.
 * @example
 * const audit: ServiceMiddleware = Object.assign(
 *   (call: ServiceCall, next: () => Promise<unknown>) => (log(call), next()),
 *   { active: () => auditing },
 * );
 */
export interface MiddlewareActivity {
  readonly active?: () => boolean;
}

/** What every message a service handles shows its middleware. */
interface ServiceCallBase {
  /** This service's name. */
  readonly service: string;
  /**
   * The caller's context; replace it to change what authorisation and the handler see. For an
   * answer: the context its call was sent with, as its handler sees it (without credentials).
   */
  context: Context;
  /** The message's wire headers, as received. */
  readonly headers: WireHeaders;
  readonly traceId: string | null;
  readonly correlationId: string;
  /** True when the message arrived encrypted (middleware sees it opened). */
  readonly encrypted: boolean;
  /** True when the broker delivered this message before (e.g. after `NuropbCallAgain`). */
  readonly redelivered: boolean;
  /** The message body's size in bytes, as it arrived (sealed, when it was encrypted). */
  readonly bodyBytes: number;
  /** Room for the middleware of one message to share values (as Koa's `ctx.state`). */
  readonly state: Record<string, unknown>;
}

/**
 * A request a service handles; `next()` resolves with the handler's result (the response's
 * `result`) or rejects with its error (the response's `error`).
 */
export interface ServiceRequestCall extends ServiceCallBase {
  readonly kind: "request";
  readonly method: string;
  /** The params, decoded (and opened); validated against the method's schema after all middleware. */
  params: Record<string, unknown>;
  /**
   * What the method's `authorize` returned: undefined in service middleware before `next()`
   * (authorisation runs after it), set for per-method middleware and after `next()`.
   */
  readonly userClaims: unknown;
  /** Extra wire headers for the response (see {@link OutgoingHeaders}). */
  readonly responseHeaders: OutgoingHeaders;
}

/** A command a service handles (no response); `next()` settles with the handler's outcome. */
export interface ServiceCommandCall extends ServiceCallBase {
  readonly kind: "command";
  readonly method: string;
  params: Record<string, unknown>;
  /** As {@link ServiceRequestCall.userClaims}. */
  readonly userClaims: unknown;
}

/** An event a service receives; `next()` settles when `handleEvent` has. */
export interface ServiceEventCall extends ServiceCallBase {
  readonly kind: "event";
  readonly topic: string;
  event: unknown;
  readonly target: readonly string[] | null;
}

/**
 * An answer to one of the service's asynchronous calls (`callLater`), or its deadline, about to
 * go to its answer handler; `next()` settles when the handler has (with undefined). Only the
 * service's middleware sees answers: an answer is not a mesh method, so no per-method middleware
 * applies. `service` is this service and `method` is always `"handleAnswer"` (the name its
 * failures go under in the `failurePolicy`); the remote method is `calledService.calledMethod`.
 * A middleware that throws fails the answer as a throwing handler does (the `failurePolicy`, or
 * the dead-letter queue); `NuropbCallAgain` requeues it once; one that returns without calling
 * `next()` acks it unhandled.
 */
export interface ServiceAnswerCall extends ServiceCallBase {
  readonly kind: "answer";
  readonly method: "handleAnswer";
  /** The remote service that was called. */
  readonly calledService: string;
  /** The remote method that was called. */
  readonly calledMethod: string;
  /** What arrived: the remote method's result, its error, or the call's deadline. */
  readonly answer: "result" | "error" | "deadline";
  /** The remote method's result (undefined unless `answer` is `"result"`). */
  readonly result: unknown;
  /** The remote error, or `NuropbTimeoutError` at the deadline (undefined for a result). */
  readonly error: NuropbError | undefined;
  /** The `state` given to `callLater` (JSON), or null. */
  readonly callState: unknown;
  /** Always undefined: an answer is not authorised (no method's `authorize` runs for it). */
  readonly userClaims: undefined;
}

/** A message a service handles, as its middleware sees it. */
export type ServiceCall =
  ServiceRequestCall | ServiceCommandCall | ServiceEventCall | ServiceAnswerCall;
/** A request or command for one method, as per-method middleware sees it. */
export type MethodCall = ServiceRequestCall | ServiceCommandCall;

/**
 * An interceptor of the messages a service handles, onion-shaped like {@link ClientMiddleware}.
 * It runs after the message is decoded and opened, before authorisation: see
 * {@link MethodMiddleware} for one that sees the caller's claims. What it returns is the
 * outcome, treated exactly as a handler's: a value answers the request; a thrown NuroPb error is
 * answered as itself and any other exception as `NuropbException`; `NuropbCallAgain` asks for a
 * redelivery. The handler does not run unless `next()` is called.
 */
export interface ServiceMiddleware extends MiddlewareActivity {
  (call: ServiceCall, next: () => Promise<unknown>): Promise<unknown>;
}

/**
 * An interceptor of one method's calls (`publishToMesh({ middleware })` or
 * `methods: { name: { middleware } }`): it runs after the service's middleware and after
 * authorisation (`call.userClaims` is set), before params are validated and the handler runs.
 */
export interface MethodMiddleware extends MiddlewareActivity {
  (call: MethodCall, next: () => Promise<unknown>): Promise<unknown>;
}

/**
 * A composed list of middleware: runs `call` through each active one, then `terminal`. `active`
 * is there when every middleware of the list says when it is active (see
 * {@link MiddlewareActivity}): it is true while any of them is.
 */
export interface Pipeline<TCall> {
  (call: TCall, terminal: () => Promise<unknown>): Promise<unknown>;
  readonly active?: () => boolean;
}

/** A middleware as {@link composeMiddleware} takes it. */
type AnyMiddleware<TCall> = ((call: TCall, next: () => Promise<unknown>) => unknown) &
  MiddlewareActivity;

/**
 * `pipeline` if it should run for this call, undefined when there is none or none of its
 * middleware is active (the caller then takes its direct path).
 */
export function activePipeline<TCall>(
  pipeline: Pipeline<TCall> | undefined,
): Pipeline<TCall> | undefined {
  return pipeline === undefined || (pipeline.active !== undefined && !pipeline.active())
    ? undefined
    : pipeline;
}

/**
 * Checks a list of middleware given to a factory and returns a frozen copy.
 * @throws TypeError naming the bad entry (`${where}[i]`).
 */
export function checkMiddleware(list: unknown, where: string): readonly unknown[] {
  if (list === undefined) return [];
  if (!Array.isArray(list)) {
    throw new TypeError(`${where} must be an array of middleware functions (call, next) => …`);
  }
  list.forEach((m: unknown, i) => {
    if (typeof m !== "function") {
      throw new TypeError(
        `${where}[${String(i)}] must be a middleware function (call, next) => …, got ${m === null ? "null" : typeof m}`,
      );
    }
    const active: unknown = (m as MiddlewareActivity).active;
    if (active !== undefined && typeof active !== "function") {
      throw new TypeError(
        `${where}[${String(i)}].active must be a function () => boolean, got ${active === null ? "null" : typeof active}`,
      );
    }
  });
  return Object.freeze([...(list as unknown[])]);
}

/**
 * Composes middleware into one {@link Pipeline}, or undefined for an empty list (the caller then
 * runs its terminal directly: no pipeline, no closure). Each middleware may call `next()` once;
 * one whose `active()` says false is skipped for that call.
 */
export function composeMiddleware<TCall>(
  list: readonly AnyMiddleware<TCall>[],
): Pipeline<TCall> | undefined {
  if (list.length === 0) return undefined;
  const mws = [...list];
  const run: Pipeline<TCall> = (call, terminal) => {
    let reached = -1;
    const dispatch = (i: number): Promise<unknown> => {
      if (i <= reached) {
        return Promise.reject(new Error("a middleware called next() more than once"));
      }
      try {
        // An inactive middleware is skipped: the next one (or the terminal) runs in its place.
        let j = i;
        let mw = mws[j];
        while (mw?.active !== undefined && !mw.active()) mw = mws[++j];
        reached = j;
        return Promise.resolve(mw === undefined ? terminal() : mw(call, () => dispatch(j + 1)));
      } catch (err) {
        return Promise.reject(err);
      }
    };
    return dispatch(0);
  };
  if (!mws.every((m) => m.active !== undefined)) return run;
  return Object.assign(run, {
    active: () => mws.some((m) => m.active !== undefined && m.active()),
  });
}

/** A {@link OutgoingHeaders} map that refuses NuroPb's own header names and non-string values. */
class OutgoingHeaderMap extends Map<string, string> {
  override set(name: string, value: string): this {
    if (typeof name !== "string" || name === "") {
      throw new TypeError("a header name must be a non-empty string");
    }
    const lower = name.toLowerCase();
    if (lower === Header.traceId || lower === Header.encrypted || lower.startsWith("nuropb_")) {
      throw new TypeError(
        `the header '${name}' is NuroPb's own: set call.traceId or call.encrypted instead, or use another name`,
      );
    }
    if (typeof value !== "string") {
      throw new TypeError(`the header '${name}' must have a string value, got ${typeof value}`);
    }
    return super.set(name, value);
  }
}

/** An empty {@link OutgoingHeaders} map. */
export function createOutgoingHeaders(): OutgoingHeaders {
  return new OutgoingHeaderMap();
}

/** `frame` with `extra` headers added (the same frame when there are none). */
export function withHeaders(frame: Frame, extra: OutgoingHeaders | undefined): Frame {
  if (extra === undefined || extra.size === 0) return frame;
  const headers: Record<string, string | null> = Object.assign({}, frame.headers);
  for (const [k, v] of extra) headers[k] = v;
  return { ...frame, headers };
}
