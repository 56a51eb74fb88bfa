import { DESCRIBE_METHOD, type Context, type NuropbError, type Transport } from "@nuropb/protocol";
import type { MethodEntry } from "./service-definition.ts";

/**
 * The reserved method every service answers with its {@link ServiceStatsReport}, beside
 * `nuropb_describe` (NATS services' `$SRV.STATS` is the model). Python NuroPb services do not
 * answer it: they reply `NuropbHandlingError` (unknown method).
 */
export const STATS_METHOD = "nuropb_stats";

/** How many of the latest processing times of a method the percentiles are taken over. */
const RESERVOIR_SIZE = 512;
/** Longest error description kept, in characters. */
const MAX_DESCRIPTION = 240;

/** One method's figures in a {@link ServiceStatsReport}. */
export interface MethodStats {
  /** Calls handled (requests and commands; events for `handleEvent`), failed ones included. */
  readonly num_requests: number;
  /** Calls that ended in an error (answered with one, or dead-lettered). */
  readonly num_errors: number;
  /**
   * The latest error: its NuroPb class and description, credential-like parts and the caller's
   * context values blanked, at most 240 characters.
   */
  readonly last_error: {
    readonly error: string;
    readonly description: string;
    /** When, as an ISO 8601 string. */
    readonly at: string;
  } | null;
  /** Processing time in ms: total and average over all calls, p50 and p99 over the latest 512. */
  readonly processing_time_ms: {
    readonly total: number;
    readonly average: number;
    readonly p50: number;
    readonly p99: number;
  };
}

/** What `nuropb_stats` answers. Field names are snake_case like the describe's. */
export interface ServiceStatsReport {
  readonly type: "nuropb_stats_response";
  readonly service_name: string;
  readonly instance_id: string;
  readonly service_version: string | null;
  /** When the service was created, as an ISO 8601 string. */
  readonly started: string;
  readonly uptime_ms: number;
  /** Whether the service consumes its queue now. */
  readonly connected: boolean;
  readonly transport: { readonly kind: string; readonly state: string };
  /** Requests, commands and events being handled now (a `nuropb_stats` request counts itself). */
  readonly in_flight: number;
  /**
   * Calls of a method not in the description: hidden ones, and names this service does not
   * have (answered `NuropbHandlingError`). Counted together, so that no name is shown.
   */
  readonly other_method_calls: number;
  /** Per method (and `handleEvent` for events), in the order they were first called. */
  readonly methods: Readonly<Record<string, MethodStats>>;
}

/** What the stats need of their service. */
export interface ServiceStatsParts {
  readonly serviceName: string;
  readonly instanceId: string;
  readonly serviceVersion: string | undefined;
  /** The methods served: only these (not hidden) are counted by name. */
  readonly methods: ReadonlyMap<string, MethodEntry>;
  /** The name events are counted under, when the service handles events. */
  readonly eventHook: string | undefined;
  readonly transport: Pick<Transport, "kind" | "state">;
  readonly connected: () => boolean;
}

/** Figures of one method. */
class MethodFigures {
  count = 0;
  errors = 0;
  totalMs = 0;
  lastError: MethodStats["last_error"] = null;
  readonly #latest = new Float64Array(RESERVOIR_SIZE);
  #next = 0;

  add(ms: number): void {
    this.count++;
    this.totalMs += ms;
    this.#latest[this.#next % RESERVOIR_SIZE] = ms;
    this.#next++;
  }

  report(): MethodStats {
    const n = Math.min(this.#next, RESERVOIR_SIZE);
    const sorted = this.#latest.slice(0, n).sort();
    return {
      num_requests: this.count,
      num_errors: this.errors,
      last_error: this.lastError,
      processing_time_ms: {
        total: round(this.totalMs),
        average: this.count === 0 ? 0 : round(this.totalMs / this.count),
        p50: percentile(sorted, 0.5),
        p99: percentile(sorted, 0.99),
      },
    };
  }
}

/**
 * Counts a service's calls as it handles them, and answers `nuropb_stats`. Bounded: only the
 * service's own methods are kept by name (any other name adds to one counter), each with at
 * most 512 timings.
 */
export class ServiceStats {
  readonly #p: ServiceStatsParts;
  readonly #started = Date.now();
  readonly #figures = new Map<string, MethodFigures>();
  #other = 0;
  #inFlight = 0;

  constructor(parts: ServiceStatsParts) {
    this.#p = parts;
  }

  /** A call starts being handled; returns its start time for {@link finished}. */
  started(): number {
    this.#inFlight++;
    return performance.now();
  }

  /**
   * A call handled since `t0` is done: counted under `method` (when it is one of the service's),
   * with `error` when it failed. Reserved methods are not counted.
   */
  finished(method: string, t0: number, error: NuropbError | undefined, context: Context): void {
    this.#inFlight--;
    if (method === STATS_METHOD || method === DESCRIBE_METHOD) return;
    const entry = this.#p.methods.get(method);
    if (method !== this.#p.eventHook && (entry === undefined || entry.options.hide === true)) {
      this.#other++;
      return;
    }
    let f = this.#figures.get(method);
    if (f === undefined) this.#figures.set(method, (f = new MethodFigures()));
    f.add(performance.now() - t0);
    if (error !== undefined) {
      f.errors++;
      f.lastError = {
        error: error.wireName,
        description: redactDescription(error.description, context),
        at: new Date().toISOString(),
      };
    }
  }

  /** The report `nuropb_stats` answers with. */
  report(): ServiceStatsReport {
    const methods: Record<string, MethodStats> = {};
    for (const [name, f] of this.#figures) methods[name] = f.report();
    return {
      type: "nuropb_stats_response",
      service_name: this.#p.serviceName,
      instance_id: this.#p.instanceId,
      service_version: this.#p.serviceVersion ?? null,
      started: new Date(this.#started).toISOString(),
      uptime_ms: Date.now() - this.#started,
      connected: this.#p.connected(),
      transport: { kind: this.#p.transport.kind, state: this.#p.transport.state },
      in_flight: this.#inFlight,
      other_method_calls: this.#other,
      methods,
    };
  }
}

/** Patterns of credentials an error description might quote. */
const CREDENTIALS: readonly [RegExp, string][] = [
  // An HTTP authorisation scheme and its credentials. "Token" is also an English word ("needs a
  // token in context"): after it only what looks like a credential (a digit, or 16+ characters).
  [/\b(Bearer|Basic)\s+[\w\-.~+/=]+/gi, "$1 [redacted]"],
  [/\b(Token)\s+(?=[\w\-.~+/=]*\d|[\w\-.~+/=]{16})[\w\-.~+/=]+/gi, "$1 [redacted]"],
  [/\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*/g, "[redacted]"],
  [/(\/\/)[^/\s:@]+:[^/\s@]+@/g, "$1[redacted]@"],
  [
    /\b(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|authorization|cookie|session)(\s*[=:]\s*)("[^"]*"|'[^']*'|\S+)/gi,
    "$1$2[redacted]",
  ],
];

/**
 * An error description fit to show any caller: the caller's context values (tokens, session ids)
 * and credential-like parts blanked, cut to 240 characters.
 */
export function redactDescription(description: string, context: Context): string {
  let d = description;
  for (const value of Object.values(context)) {
    if (typeof value === "string" && value.length >= 6) d = d.split(value).join("[redacted]");
  }
  for (const [pattern, replacement] of CREDENTIALS) d = d.replace(pattern, replacement);
  return d.length > MAX_DESCRIPTION ? `${d.slice(0, MAX_DESCRIPTION - 1)}…` : d;
}

/** Nearest-rank percentile of sorted values, rounded to µs; 0 when there are none. */
function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return round(sorted[rank - 1] as number);
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
