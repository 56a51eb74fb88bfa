import {
  createNoopMeter,
  metrics as otelMetrics,
  ValueType,
  type Attributes,
  type Counter,
  type Histogram,
  type Meter,
  type MeterProvider,
  type UpDownCounter,
} from "@opentelemetry/api";
import type {
  ClientMiddleware,
  LifecycleListener,
  LifecycleTransition,
  MeshParticipant,
  ServiceMiddleware,
} from "@nuropb/core";
import {
  Attr,
  Outcome,
  callAttributes,
  errorTypeOf,
  outcomeOfError,
  type Outcome as OutcomeValue,
} from "./attributes.ts";
import { checkOptions, INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION } from "./options.ts";
import { systemOf } from "./tracing.ts";

/** Metric names, as the exporter shows them. */
export const MetricName = {
  clientCalls: "nuropb.client.calls",
  clientDuration: "nuropb.client.duration",
  serverCalls: "nuropb.server.calls",
  serverDuration: "nuropb.server.duration",
  serverInFlight: "nuropb.server.in_flight",
  deadLetters: "nuropb.server.dead_letters",
  lifecycleDuration: "nuropb.lifecycle.duration",
  reconnects: "nuropb.participant.reconnects",
  disconnects: "nuropb.participant.disconnects",
} as const;

/** Options of {@link metrics}. */
export interface MetricsOptions {
  /** As {@link TracingOptions.transport}: gives the `messaging.system` attribute. */
  readonly transport?: { readonly kind: string } | string;
  /** `messaging.system` as it is. */
  readonly messagingSystem?: string;
  /** Where the meter comes from. @defaultValue the global provider (`metrics.getMeterProvider()`) */
  readonly meterProvider?: MeterProvider;
  /**
   * Most messages whose lifecycle is being timed at once (a message whose last state never comes,
   * such as a request whose client gave up, is forgotten first when this is reached).
   * @defaultValue 10000
   */
  readonly maxTrackedMessages?: number;
}

/** Metrics of one participant's calls; give each part where its name says. */
export interface NuropbMetrics {
  /**
   * Counts and times the calls sent (`middleware` / a service's `clientMiddleware`). Inactive
   * (skipped by core) when the meter is the API's no-op one: no meter provider was registered
   * when `metrics()` was called (the meter is taken then).
   */
  readonly client: ClientMiddleware & { readonly active: () => boolean };
  /** Counts and times the messages handled, and how many are in flight (`middleware`). */
  readonly service: ServiceMiddleware & { readonly active: () => boolean };
  /** Times the NuroPb lifecycle phases and counts dead-letters (`onLifecycle`). */
  readonly onLifecycle: LifecycleListener;
  /**
   * Counts a participant's disconnects and reconnects, until it closes or the returned
   * function is called.
   */
  watch(participant: Pick<MeshParticipant, "events">): () => void;
}

/** The state that ends a side of a message's lifecycle, per message type. */
const CLIENT_END = "client-end";

/**
 * Metrics of NuroPb calls through the OpenTelemetry metrics API (a Meter from the given or the
 * global provider; with none registered every instrument is a no-op):
 *
 * - `nuropb.client.calls` / `nuropb.server.calls` (counters) and `nuropb.client.duration` /
 *   `nuropb.server.duration` (histograms, seconds), by `nuropb.kind` (request, command, event),
 *   `rpc.service`, `rpc.method` (or `messaging.destination.name` for an event's topic),
 *   `nuropb.outcome` (ok, error, call_again) and `error.type`;
 * - `nuropb.server.in_flight` (up-down counter): messages being handled;
 * - `nuropb.server.dead_letters` (counter): messages a service rejected without requeueing;
 * - `nuropb.lifecycle.duration` (histogram, seconds): for each lifecycle state of Python
 *   NuroPb (`client-send`, `service-handle`, `service-reply`…), the time since the message's
 *   previous state, by `nuropb.lifecycle.state` and `nuropb.kind`;
 * - `nuropb.participant.reconnects` / `.disconnects` (counters), through `watch()`.
 * @throws TypeError for bad options.
 * @example
 * const m = metrics({ transport });
 * const service = createService({ transport, name: "orders", instance,
 *   middleware: [m.service], clientMiddleware: [m.client], onLifecycle: m.onLifecycle });
 * m.watch(service);
 */
export function metrics(options: MetricsOptions = {}): NuropbMetrics {
  const o = checkOptions(options, "metrics", [
    "transport",
    "messagingSystem",
    "meterProvider",
    "maxTrackedMessages",
  ]);
  const system = systemOf(o, "metrics");
  const provider = o.meterProvider as MeterProvider | undefined;
  if (
    provider !== undefined &&
    (typeof provider !== "object" || provider === null || typeof provider.getMeter !== "function")
  ) {
    throw new TypeError("metrics: options.meterProvider must be a MeterProvider (getMeter)");
  }
  const maxTracked = o.maxTrackedMessages ?? 10_000;
  if (typeof maxTracked !== "number" || !Number.isSafeInteger(maxTracked) || maxTracked < 1) {
    throw new TypeError("metrics: options.maxTrackedMessages must be a positive integer");
  }
  const meter: Meter = (provider ?? otelMetrics.getMeterProvider()).getMeter(
    INSTRUMENTATION_NAME,
    INSTRUMENTATION_VERSION,
  );
  const i = instruments(meter);
  // Every instrument of the no-op meter does nothing: then so does the middleware.
  const recording = meter !== createNoopMeter();
  const active = (): boolean => recording;

  const client: ClientMiddleware = (call, next) => {
    const attrs = callAttributes(call, system);
    return timed(next, attrs, i.clientCalls, i.clientDuration);
  };

  const service: ServiceMiddleware = (call, next) => {
    const attrs = callAttributes(call, system);
    i.serverInFlight.add(1, attrs);
    const run = timed(next, attrs, i.serverCalls, i.serverDuration);
    const done = (): void => i.serverInFlight.add(-1, attrs);
    run.then(done, done);
    return run;
  };

  const onLifecycle = lifecycleTimer(i, system, maxTracked);

  const watch = (participant: Pick<MeshParticipant, "events">): (() => void) => {
    const stream = participant.events()[Symbol.asyncIterator]();
    let stopped = false;
    const pump = async (): Promise<void> => {
      while (!stopped) {
        const r = await stream.next();
        if (r.done === true) return;
        if (r.value.type === "reconnected") i.reconnects.add(1, { [Attr.messagingSystem]: system });
        if (r.value.type === "disconnected")
          i.disconnects.add(1, { [Attr.messagingSystem]: system });
      }
    };
    pump().catch(() => undefined);
    return () => {
      stopped = true;
      void stream.return?.(undefined);
    };
  };

  return Object.freeze({
    client: Object.assign(client, { active }),
    service: Object.assign(service, { active }),
    onLifecycle,
    watch,
  });
}

interface Instruments {
  readonly clientCalls: Counter;
  readonly clientDuration: Histogram;
  readonly serverCalls: Counter;
  readonly serverDuration: Histogram;
  readonly serverInFlight: UpDownCounter;
  readonly deadLetters: Counter;
  readonly lifecycleDuration: Histogram;
  readonly reconnects: Counter;
  readonly disconnects: Counter;
}

function instruments(meter: Meter): Instruments {
  const seconds = { unit: "s", valueType: ValueType.DOUBLE };
  return {
    clientCalls: meter.createCounter(MetricName.clientCalls, {
      description: "Requests, commands and events sent",
      unit: "{message}",
    }),
    clientDuration: meter.createHistogram(MetricName.clientDuration, {
      description: "From sending a call to its response (requests) or to the broker taking it",
      ...seconds,
    }),
    serverCalls: meter.createCounter(MetricName.serverCalls, {
      description: "Requests, commands and events handled",
      unit: "{message}",
    }),
    serverDuration: meter.createHistogram(MetricName.serverDuration, {
      description: "Time a service took to handle a message (its middleware and handler)",
      ...seconds,
    }),
    serverInFlight: meter.createUpDownCounter(MetricName.serverInFlight, {
      description: "Messages being handled",
      unit: "{message}",
    }),
    deadLetters: meter.createCounter(MetricName.deadLetters, {
      description: "Messages a service rejected without requeueing (dead-lettered)",
      unit: "{message}",
    }),
    lifecycleDuration: meter.createHistogram(MetricName.lifecycleDuration, {
      description: "Time from a message's previous NuroPb lifecycle state to this one",
      ...seconds,
    }),
    reconnects: meter.createCounter(MetricName.reconnects, {
      description: "Times the participant's transport came back after losing its link",
      unit: "{reconnect}",
    }),
    disconnects: meter.createCounter(MetricName.disconnects, {
      description: "Times the participant's transport lost its link",
      unit: "{disconnect}",
    }),
  };
}

/** Runs `next`, then counts it and records its duration with its outcome. */
function timed(
  next: () => Promise<unknown>,
  attrs: Attributes,
  count: Counter,
  duration: Histogram,
): Promise<unknown> {
  const t0 = performance.now();
  const record = (outcome: OutcomeValue, err?: unknown): void => {
    const a =
      err === undefined
        ? { ...attrs, [Attr.outcome]: outcome }
        : { ...attrs, [Attr.outcome]: outcome, [Attr.errorType]: errorTypeOf(err) };
    count.add(1, a);
    duration.record((performance.now() - t0) / 1000, a);
  };
  let run: Promise<unknown>;
  try {
    run = next();
  } catch (err) {
    run = Promise.reject(err);
  }
  return run.then(
    (value) => {
      record(Outcome.ok);
      return value;
    },
    (err: unknown) => {
      record(outcomeOfError(err), err);
      throw err;
    },
  );
}

/**
 * The `onLifecycle` listener: the time from each message's previous state to this one, and the
 * dead-letters. A message is known by its side and correlation id; its entry is dropped at its
 * last state, and the oldest entries go first when there are `maxTracked`.
 */
function lifecycleTimer(i: Instruments, system: string, maxTracked: number): LifecycleListener {
  const previous = new Map<string, number>();
  return (t: LifecycleTransition) => {
    const client = t.state.startsWith("client-");
    const key = `${client ? "c" : "s"}:${t.correlationId}`;
    if (t.state === "service-ack" && t.settlement === "reject") {
      i.deadLetters.add(1, {
        [Attr.messagingSystem]: system,
        [Attr.kind]: t.type ?? "unknown",
        ...(t.service !== undefined ? { [Attr.rpcService]: t.service } : {}),
      });
    }
    const before = previous.get(key);
    if (before !== undefined) {
      i.lifecycleDuration.record((t.at - before) / 1000, {
        [Attr.messagingSystem]: system,
        [Attr.lifecycleState]: t.state,
        [Attr.kind]: t.type ?? "unknown",
      });
    }
    if (isLast(t)) {
      previous.delete(key);
      return;
    }
    if (before !== undefined)
      previous.delete(key); // re-inserted last: the map stays in age order
    else if (previous.size >= maxTracked) {
      const oldest = previous.keys().next();
      if (oldest.done !== true) previous.delete(oldest.value);
    }
    previous.set(key, t.at);
  };
}

/** Whether `t` is the last state its side of the message goes through. */
function isLast(t: LifecycleTransition): boolean {
  if (t.state === CLIENT_END) return true;
  // A service answers a request after settling it: its reply is last; other messages end at the ack.
  if (t.state === "service-reply") return true;
  return t.state === "service-ack" && (t.type !== "request" || t.settlement === "requeue");
}
