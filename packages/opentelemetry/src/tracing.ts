import {
  ProxyTracerProvider,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context,
  isSpanContextValid,
  propagation,
  trace,
  type Attributes,
  type Context as OtelContext,
  type SpanOptions,
  type Span,
  type Tracer,
  type TracerProvider,
} from "@opentelemetry/api";
import type { ClientCall, ClientMiddleware, ServiceCall, ServiceMiddleware } from "@nuropb/core";
import {
  Attr,
  Outcome,
  destinationOf,
  errorTypeOf,
  messagingSystemOf,
  outcomeOfError,
} from "./attributes.ts";
import { headerGetter, headerSetter } from "./header-carrier.ts";
import { checkOptions, INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION } from "./options.ts";

/** Options of {@link tracing}. */
export interface TracingOptions {
  /**
   * The transport the participant uses (only its `kind` is read), or its kind: it gives
   * `messaging.system` (`amqp` → `rabbitmq`, `nats`, `redis`, `memory` → `nuropb_memory`).
   * @defaultValue "nuropb" when neither this nor `messagingSystem` is given
   */
  readonly transport?: { readonly kind: string } | string;
  /** `messaging.system` as it is, instead of one derived from `transport`. */
  readonly messagingSystem?: string;
  /** Where tracers come from. @defaultValue the global provider (`trace.getTracerProvider()`) */
  readonly tracerProvider?: TracerProvider;
}

/**
 * The two sides of tracing: give `client` to the client's (or service's `clientMiddleware`).
 * Each is active (`active()`) only while a tracer provider is registered (or the one given in
 * the options is not the API's no-op): until then core skips them, as if they were not there.
 */
export interface NuropbTracing {
  /** Producer spans for requests, commands and events sent; injects the trace context. */
  readonly client: ClientMiddleware & { readonly active: () => boolean };
  /** Consumer (process) spans for the messages a service handles, in the sender's trace. */
  readonly service: ServiceMiddleware & { readonly active: () => boolean };
}

/**
 * Traces NuroPb calls through `@opentelemetry/api`, as the messaging semantic conventions
 * describe: a PRODUCER span (`send {destination}`) for each request, command and event sent, and
 * a CONSUMER span (`process {destination}`) for each one a service handles, parented by the
 * sender's span and linked to it. The trace context crosses in the W3C `traceparent` and
 * `tracestate` headers, written by the globally registered propagator and only when there is a
 * trace to continue (a message without one carries no extra header). A message without
 * `traceparent` (from a Python peer) still gets its consumer span, a root one with the NuroPb
 * `trace_id` as `nuropb.trace_id`. A handler runs with its consumer span active, so the calls it
 * makes (through a service's `clientMiddleware`) continue the trace — given a context manager
 * (`AsyncLocalStorageContextManager`, which the Node SDK registers).
 *
 * With no tracer provider registered, both middleware say they are inactive, so core skips them
 * (no span, no header, no cost); a provider registered later is used from the next call on.
 * @throws TypeError for bad options.
 * @example
 * const t = tracing({ transport });
 * const service = createService({ transport, name: "orders", instance,
 *   middleware: [t.service], clientMiddleware: [t.client] });
 * const client = createClient({ transport, middleware: [t.client] });
 */
export function tracing(options: TracingOptions = {}): NuropbTracing {
  const { system, provider } = checkTracingOptions(options);
  let tracer: Tracer | undefined;
  let tracerFrom: TracerProvider | undefined;
  // Asked per call, so that a provider registered after `tracing()` is used (and the global one
  // replaced after `trace.disable()` too); the tracer is kept while the provider stays.
  const tracerOf = (): Tracer => {
    const from = provider ?? trace.getTracerProvider();
    if (tracer === undefined || from !== tracerFrom) {
      tracer = from.getTracer(INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION);
      tracerFrom = from;
    }
    return tracer;
  };
  const active = (): boolean => isRealProvider(provider ?? trace.getTracerProvider());

  // The process contexts of the latest messages handled, by correlation id: the events a handler
  // raises are published by core after the handler's middleware has returned (with the handled
  // message's correlation id), outside its context. Bounded: the oldest go first.
  const handled = new Map<string, OtelContext>();

  const client = (call: ClientCall, next: () => Promise<unknown>): Promise<unknown> => {
    const parent =
      (call.kind === "event" ? handled.get(call.correlationId) : undefined) ?? context.active();
    const span = tracerOf().startSpan(`send ${destinationOf(call)}`, PRODUCER, parent);
    const spanContext = span.spanContext();
    // No tracer (or a no-op span without a trace to continue): nothing to record or carry.
    if (!span.isRecording() && !isSpanContextValid(spanContext)) return next();
    if (span.isRecording()) span.setAttributes(producerAttributes(call, system));
    const ctx = trace.setSpan(parent, span);
    propagation.inject(ctx, call.headers, headerSetter);
    return finish(span, context.with(ctx, next));
  };

  const service = (call: ServiceCall, next: () => Promise<unknown>): Promise<unknown> => {
    // From the message alone: the context a transport delivers in (the memory hub delivers in
    // the sender's) is not the message's.
    const creation = propagation.extract(ROOT_CONTEXT, call.headers, headerGetter);
    const creationSpan = trace.getSpanContext(creation);
    const linked = creationSpan !== undefined && isSpanContextValid(creationSpan);
    const span = tracerOf().startSpan(
      `process ${destinationOf(call)}`,
      linked ? { kind: SpanKind.CONSUMER, links: [{ context: creationSpan }] } : ROOT_CONSUMER,
      creation,
    );
    // No tracer and no trace to carry on: the handler runs as it would without tracing.
    if (!linked && !span.isRecording()) return next();
    if (span.isRecording()) span.setAttributes(consumerAttributes(call, system));
    const ctx: OtelContext = trace.setSpan(creation, span);
    if (handled.size >= MAX_HANDLED) handled.delete(handled.keys().next().value as string);
    handled.set(call.correlationId, ctx);
    return finish(span, context.with(ctx, next));
  };

  return Object.freeze({
    client: Object.assign(client, { active }),
    service: Object.assign(service, { active }),
  });
}

/** The API's no-op tracer provider: what a ProxyTracerProvider delegates to until one is set. */
const NOOP_PROVIDER: TracerProvider = new ProxyTracerProvider().getDelegate();

/**
 * Whether spans from `provider` may record: false for the global ProxyTracerProvider while no
 * provider is registered behind it (two property reads; the global is looked up by the caller).
 */
function isRealProvider(provider: TracerProvider): boolean {
  return provider instanceof ProxyTracerProvider
    ? provider.getDelegate() !== NOOP_PROVIDER
    : provider !== NOOP_PROVIDER;
}

/** How many handled messages' contexts are kept for the events their handlers raise. */
const MAX_HANDLED = 1024;

const PRODUCER: SpanOptions = Object.freeze({ kind: SpanKind.PRODUCER });
const ROOT_CONSUMER: SpanOptions = Object.freeze({ kind: SpanKind.CONSUMER, root: true });

/** Ends `span` when `run` settles, with the outcome; passes the outcome on. */
function finish(span: Span, run: Promise<unknown>): Promise<unknown> {
  return run.then(
    (value) => {
      if (span.isRecording()) span.setAttribute(Attr.outcome, Outcome.ok);
      span.end();
      return value;
    },
    (err: unknown) => {
      if (span.isRecording()) {
        const outcome = outcomeOfError(err);
        span.setAttributes({ [Attr.outcome]: outcome, [Attr.errorType]: errorTypeOf(err) });
        // The type only: an error's description may quote what the caller sent.
        if (outcome === Outcome.error) span.setStatus({ code: SpanStatusCode.ERROR });
      }
      span.end();
      throw err;
    },
  );
}

function commonAttributes(call: ClientCall | ServiceCall, system: string): Attributes {
  const a: Attributes = {
    [Attr.messagingSystem]: system,
    [Attr.messagingDestination]: destinationOf(call),
    [Attr.messagingMessageId]: call.correlationId,
    [Attr.kind]: call.kind,
  };
  if (call.traceId !== null && call.traceId !== "") {
    a[Attr.traceId] = call.traceId;
    a[Attr.messagingConversationId] = call.traceId;
  }
  if (call.kind !== "event") {
    a[Attr.rpcSystem] = "nuropb";
    a[Attr.rpcService] = call.service;
    a[Attr.rpcMethod] = call.method;
    a[Attr.encrypted] = call.encrypted;
  }
  return a;
}

function producerAttributes(call: ClientCall, system: string): Attributes {
  const a = commonAttributes(call, system);
  a[Attr.messagingOperation] = "publish";
  a[Attr.messagingOperationType] = "send";
  a[Attr.messagingOperationName] = "send";
  return a;
}

function consumerAttributes(call: ServiceCall, system: string): Attributes {
  const a = commonAttributes(call, system);
  a[Attr.messagingOperation] = "process";
  a[Attr.messagingOperationType] = "process";
  a[Attr.messagingOperationName] = "process";
  a[Attr.redelivered] = call.redelivered;
  a[Attr.messagingBodySize] = call.bodyBytes;
  if (call.kind === "event") a[Attr.rpcService] = call.service;
  return a;
}

function checkTracingOptions(options: TracingOptions): {
  system: string;
  provider: TracerProvider | undefined;
} {
  const o = checkOptions(options, "tracing", ["transport", "messagingSystem", "tracerProvider"]);
  const provider = o.tracerProvider;
  if (
    provider !== undefined &&
    (typeof provider !== "object" ||
      provider === null ||
      typeof (provider as TracerProvider).getTracer !== "function")
  ) {
    throw new TypeError("tracing: options.tracerProvider must be a TracerProvider (getTracer)");
  }
  return { system: systemOf(o, "tracing"), provider: provider as TracerProvider | undefined };
}

/** `messaging.system` from `messagingSystem` or `transport`. @throws TypeError */
export function systemOf(o: Record<string, unknown>, where: string): string {
  const explicit = o.messagingSystem;
  if (explicit !== undefined) {
    if (typeof explicit !== "string" || explicit === "")
      throw new TypeError(`${where}: options.messagingSystem must be a non-empty string`);
    return explicit;
  }
  const t = o.transport;
  if (t === undefined) return "nuropb";
  const kind = typeof t === "string" ? t : (t as { kind?: unknown } | null)?.kind;
  if (typeof kind !== "string" || kind === "") {
    throw new TypeError(
      `${where}: options.transport must be a transport (with a kind) or its kind, such as "amqp"`,
    );
  }
  return messagingSystemOf(kind);
}
