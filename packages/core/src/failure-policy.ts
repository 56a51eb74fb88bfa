import {
  MAX_MESSAGE_TTL_MS,
  NuropbAuthenticationError,
  NuropbAuthorizationError,
  NuropbMessageError,
  NuropbValidationError,
} from "@nuropb/protocol";

/**
 * What a service (`createService({ failurePolicy })`) or one method (`publishToMesh({
 * failurePolicy })`) does with a handler's failure. Without a policy nothing changes: a failed
 * message is dead-lettered (`reject`) and a request answered with the error, as before.
 *
 * With one, a **retryable** failure is run again at once up to `immediateRetries` times, then
 * redelivered later through the broker (`transport.scheduling.sendDelayed`) once per entry of
 * `delays`, each delivery again with its immediate retries. A failure that is not retryable, or
 * the last one, is dead-lettered with its failure record in the message's headers
 * ({@link FailureHeader}), a request answered with the error, and a fault event
 * `nuropb.fault.{service}.{method}` published when `faultEvents` is set.
 *
 * An error is retryable when it says so (`retryable: true`, as `new NuropbError(text, {
 * retryable: true })` or any error with that property), unless `retryable` is given: then that
 * predicate decides, for the error the handler threw. Validation, authentication, authorisation
 * and malformed-message errors, and a call of a method the service does not have, are never
 * retried, whatever the predicate says: running them again cannot succeed.
 *
 * Requests and commands have a ttl: a delayed redelivery that would start after the caller's
 * ttl has passed is not scheduled; the failure is final at once (a request is answered with it).
 *
 * @example
 * ```ts
 * createService({ name: "orders", instance, transport,
 *   failurePolicy: { immediateRetries: 2, delays: [1_000, 10_000, 60_000], faultEvents: true } });
 * ```
 */
export interface FailurePolicy {
  /** Runs of the handler again at once, in this process, for a retryable failure (0–100). @defaultValue 0 */
  readonly immediateRetries?: number;
  /**
   * Delays in milliseconds of the delayed redeliveries, one per redelivery, in order (at most 100
   * entries, each an integer from 0 to `MAX_MESSAGE_TTL_MS`). Needs a transport with
   * `scheduling`. @defaultValue [] (no delayed redelivery)
   */
  readonly delays?: readonly number[];
  /**
   * Whether an error (as the handler threw it) is worth trying again; a predicate that throws
   * says no. Never asked about validation, authentication, authorisation or malformed-message
   * errors (never retried). @defaultValue errors marked `retryable: true`
   */
  readonly retryable?: (err: unknown) => boolean;
  /** Publish `nuropb.fault.{service}.{method}` after the final failure. @defaultValue false */
  readonly faultEvents?: boolean;
  /**
   * The fault event also carries the call's `params` (an event's `event`), which may hold
   * personal data. @defaultValue false
   */
  readonly faultParams?: boolean;
}

/** A checked {@link FailurePolicy} with its defaults filled in. */
export interface ResolvedFailurePolicy {
  readonly immediateRetries: number;
  readonly delays: readonly number[];
  readonly retryable: ((err: unknown) => boolean) | undefined;
  readonly faultEvents: boolean;
  readonly faultParams: boolean;
}

/**
 * Headers of the failure record, on a dead-lettered message and on the copies scheduled for a
 * delayed redelivery (string values; times are ISO 8601).
 */
export const FailureHeader = {
  /** Wire name of the last error, e.g. `NuropbException`. */
  error: "nuropb_failure_error",
  /** Its description (at most 1,000 characters). */
  description: "nuropb_failure_description",
  service: "nuropb_failure_service",
  /** The method, or `handleEvent` for an event. */
  method: "nuropb_failure_method",
  /** Handler runs so far, over every delivery. */
  attempts: "nuropb_failure_attempts",
  firstAt: "nuropb_failure_first_at",
  lastAt: "nuropb_failure_last_at",
  /** Delayed redeliveries so far (1 on the first scheduled copy). */
  redeliveries: "nuropb_failure_redeliveries",
  /** Requests and commands: when the caller's ttl passes, in ms since the epoch. */
  deadline: "nuropb_failure_deadline",
} as const;

/** A failure as it is recorded in dead-letter headers and fault events. */
export interface FailureRecord {
  /** Wire name of the last error. */
  readonly error: string;
  readonly description: string;
  readonly service: string;
  readonly method: string;
  /** Handler runs, over every delivery. */
  readonly attempts: number;
  /** ISO 8601. */
  readonly firstFailureAt: string;
  /** ISO 8601. */
  readonly lastFailureAt: string;
}

/** Longest description kept in a failure record. */
export const MAX_FAILURE_DESCRIPTION = 1_000;
const MAX_RETRIES = 100;
const MAX_DELAYS = 100;
const KNOWN = new Set(["immediateRetries", "delays", "retryable", "faultEvents", "faultParams"]);

/**
 * Checks a failure policy and fills in its defaults; `undefined` stays undefined (no policy).
 * @throws TypeError naming the bad field (`{where}.failurePolicy.delays[1]`, say).
 */
export function checkFailurePolicy(
  value: unknown,
  where: string,
): ResolvedFailurePolicy | undefined {
  if (value === undefined) return undefined;
  const at = `${where}.failurePolicy`;
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new TypeError(`${at} must be an object`);
  const o = value as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!KNOWN.has(key)) throw new TypeError(`${at}: unknown field '${key}'`);
  }
  const retries = o.immediateRetries ?? 0;
  if (
    typeof retries !== "number" ||
    !Number.isInteger(retries) ||
    retries < 0 ||
    retries > MAX_RETRIES
  ) {
    throw new TypeError(
      `${at}.immediateRetries must be an integer from 0 to ${String(MAX_RETRIES)}, got ${String(retries)}`,
    );
  }
  const delays = o.delays ?? [];
  if (!Array.isArray(delays) || delays.length > MAX_DELAYS) {
    throw new TypeError(
      `${at}.delays must be an array of at most ${String(MAX_DELAYS)} delays in ms`,
    );
  }
  delays.forEach((d: unknown, i) => {
    if (typeof d !== "number" || !Number.isInteger(d) || d < 0 || d > MAX_MESSAGE_TTL_MS) {
      throw new TypeError(
        `${at}.delays[${String(i)}] must be an integer of ms from 0 to ${String(MAX_MESSAGE_TTL_MS)}, got ${String(d)}`,
      );
    }
  });
  if (o.retryable !== undefined && typeof o.retryable !== "function")
    throw new TypeError(`${at}.retryable must be a function (err) => boolean`);
  for (const key of ["faultEvents", "faultParams"]) {
    if (o[key] !== undefined && typeof o[key] !== "boolean")
      throw new TypeError(`${at}.${key} must be a boolean`);
  }
  return Object.freeze({
    immediateRetries: retries,
    delays: Object.freeze([...(delays as number[])]),
    retryable: o.retryable as ((err: unknown) => boolean) | undefined,
    faultEvents: o.faultEvents === true,
    faultParams: o.faultParams === true,
  });
}

/**
 * Errors that running the handler again cannot cure: never retried, whatever the policy says.
 * Matched by class and, for errors that crossed the wire, by wire name.
 */
const NEVER_RETRIED = [
  NuropbValidationError,
  NuropbAuthenticationError,
  NuropbAuthorizationError,
  NuropbMessageError,
] as const;
const NEVER_RETRIED_NAMES = new Set<string>(NEVER_RETRIED.map((c) => c.wireName));

/** Whether `err` is of a class that is never retried (see {@link NEVER_RETRIED}). */
export function isNeverRetried(err: unknown): boolean {
  if (NEVER_RETRIED.some((c) => err instanceof c)) return true;
  const wireName = (err as { wireName?: unknown } | null)?.wireName;
  return typeof wireName === "string" && NEVER_RETRIED_NAMES.has(wireName);
}

/**
 * Whether `policy` takes `err` (as the handler threw it) as retryable: never for the classes of
 * {@link isNeverRetried}; else its predicate when it has one (a throw is a no), else the error's
 * own `retryable: true`.
 */
export function isRetryable(policy: ResolvedFailurePolicy, err: unknown): boolean {
  if (typeof err === "object" && err !== null && isNeverRetried(err)) return false;
  if (policy.retryable !== undefined) {
    try {
      return policy.retryable(err) === true;
    } catch {
      return false;
    }
  }
  return (
    typeof err === "object" && err !== null && (err as { retryable?: unknown }).retryable === true
  );
}

/** The headers that carry `record` (and the redelivery count, and the deadline when there is one). */
export function failureHeaders(
  record: FailureRecord,
  redeliveries: number,
  deadline: number | undefined,
): Record<string, string> {
  const h: Record<string, string> = {
    [FailureHeader.error]: record.error,
    [FailureHeader.description]: record.description,
    [FailureHeader.service]: record.service,
    [FailureHeader.method]: record.method,
    [FailureHeader.attempts]: String(record.attempts),
    [FailureHeader.firstAt]: record.firstFailureAt,
    [FailureHeader.lastAt]: record.lastFailureAt,
    [FailureHeader.redeliveries]: String(redeliveries),
  };
  if (deadline !== undefined) h[FailureHeader.deadline] = String(deadline);
  return h;
}

/**
 * The failure record in a message's headers, or undefined when it has none (never failed here,
 * or dead-lettered without a policy). Read by `nuropb dlq`.
 */
export function failureRecordOf(
  headers: Readonly<Record<string, string | null | undefined>>,
): (FailureRecord & { readonly redeliveries: number }) | undefined {
  const error = headers[FailureHeader.error];
  if (typeof error !== "string") return undefined;
  const text = (k: string): string => {
    const v = headers[k];
    return typeof v === "string" ? v : "";
  };
  return {
    error,
    description: text(FailureHeader.description),
    service: text(FailureHeader.service),
    method: text(FailureHeader.method),
    attempts: countOf(headers[FailureHeader.attempts]),
    firstFailureAt: text(FailureHeader.firstAt),
    lastFailureAt: text(FailureHeader.lastAt),
    redeliveries: countOf(headers[FailureHeader.redeliveries]),
  };
}

/** Longest `_first_at`/`_last_at` accepted from a header (an ISO 8601 time is 24 to 30). */
export const MAX_FAILURE_TIME_LENGTH = 40;
/** Longest error wire name kept in a failure record. */
export const MAX_FAILURE_ERROR = 200;
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/;

/** Whether `value` is an ISO 8601 time of at most {@link MAX_FAILURE_TIME_LENGTH} characters. */
export function isFailureTime(value: unknown): value is string {
  return (
    typeof value === "string" &&
    value.length <= MAX_FAILURE_TIME_LENGTH &&
    ISO_TIME.test(value) &&
    !Number.isNaN(Date.parse(value))
  );
}

/** The failure so far, as a scheduled copy carries it (see {@link carriedFailureOf}). */
export interface CarriedFailure {
  /** Handler runs over the earlier deliveries. */
  readonly attempts: number;
  /** Delayed redeliveries so far (this delivery is redelivery number `redeliveries`). */
  readonly redeliveries: number;
  /** ISO 8601. */
  readonly firstFailureAt: string;
  /** The last failure's wire name and description, as recorded. */
  readonly error: string;
  readonly description: string;
  /** Requests and commands: when the caller's ttl passes (ms since the epoch). */
  readonly deadline: number | undefined;
}

/**
 * The failure record a delivery carries, when it reads as a copy that this pipeline scheduled for
 * `service`'s `method` under `policy`; undefined otherwise (a first delivery, or headers that
 * anyone could have set: then they count for nothing). A copy that the pipeline scheduled has
 * every field, its service and method, `1 <= redeliveries <= delays.length` and
 * `redeliveries <= attempts <= redeliveries * (immediateRetries + 1)`, ISO times of at most
 * {@link MAX_FAILURE_TIME_LENGTH} characters, and for a request or command a deadline (if any: a
 * first delivery without a ttl has none) no further than `MAX_MESSAGE_TTL_MS` ahead. Events
 * carry no deadline (one is ignored).
 */
export function carriedFailureOf(
  headers: Readonly<Record<string, string | null | undefined>>,
  policy: ResolvedFailurePolicy,
  where: { readonly service: string; readonly method: string; readonly kind: string },
  now: number,
): CarriedFailure | undefined {
  const h = headers;
  if (h[FailureHeader.service] !== where.service || h[FailureHeader.method] !== where.method)
    return undefined;
  const redeliveries = strictCount(h[FailureHeader.redeliveries]);
  const attempts = strictCount(h[FailureHeader.attempts]);
  if (redeliveries === undefined || attempts === undefined) return undefined;
  if (redeliveries < 1 || redeliveries > policy.delays.length) return undefined;
  if (attempts < redeliveries || attempts > redeliveries * (policy.immediateRetries + 1))
    return undefined;
  const firstAt = h[FailureHeader.firstAt];
  const error = h[FailureHeader.error];
  if (!isFailureTime(firstAt) || !isFailureTime(h[FailureHeader.lastAt])) return undefined;
  if (typeof error !== "string" || error === "" || error.length > MAX_FAILURE_ERROR)
    return undefined;
  const description = h[FailureHeader.description];
  let deadline: number | undefined;
  if (where.kind !== "event") {
    // Absent when the first delivery had no ttl.
    const carried = h[FailureHeader.deadline];
    if (carried !== undefined && carried !== null) {
      if (!/^\d{1,16}$/.test(carried)) return undefined;
      deadline = Number(carried);
      if (deadline > now + MAX_MESSAGE_TTL_MS) return undefined;
    }
  }
  return {
    attempts,
    redeliveries,
    firstFailureAt: firstAt,
    error,
    description:
      typeof description === "string" ? description.slice(0, MAX_FAILURE_DESCRIPTION) : "",
    deadline,
  };
}

function strictCount(value: string | null | undefined): number | undefined {
  return typeof value === "string" && /^\d{1,9}$/.test(value) ? Number(value) : undefined;
}

/** A non-negative integer header, 0 when absent or malformed (a header from anyone). */
export function countOf(value: string | null | undefined): number {
  if (typeof value !== "string" || !/^\d{1,9}$/.test(value)) return 0;
  return Number(value);
}

/** `headers` without the failure record (for a message requeued from the dead letters). */
export function withoutFailureHeaders<T extends string | null>(
  headers: Readonly<Record<string, T>>,
): Record<string, T> {
  const names = new Set<string>(Object.values(FailureHeader));
  const out: Record<string, T> = {};
  for (const [k, v] of Object.entries(headers)) if (!names.has(k)) out[k] = v;
  return out;
}
