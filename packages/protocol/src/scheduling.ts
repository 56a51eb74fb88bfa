import { MAX_MESSAGE_TTL_MS } from "./limits.ts";
import type { Frame } from "./transport.ts";

/**
 * Optional transport capability: the broker holds a frame and hands it to a service queue later,
 * and answers for a call can be addressed to a service's own queue. Used by the failure pipeline
 * (delayed redelivery with backoff) and by asynchronous calls (answers to the calling service,
 * deadlines). Everything here lives in the broker, never in an in-memory timer of the sender: a
 * frame scheduled by an instance that dies is still delivered.
 *
 * A transport offers it as `transport.scheduling`; core checks for it and says clearly, with a typed
 * error, when a feature needs it and the transport has none.
 */
export interface TransportScheduling {
  /**
   * The reply address (a frame's `replyTo`) at which a response lands on `service`'s own queue,
   * as an ordinary delivery that any instance of the service may take (on AMQP the service queue's
   * name, reached through the default exchange, so Python peers answer there unchanged).
   */
  serviceReplyAddress(service: string): string;
  /**
   * Delivers `frame` to `service`'s queue no sooner than `delayMs` from now. Resolves once the broker
   * holds it. A transport may round the delay up to a granularity it documents (for example to one
   * TTL delay queue per bucket on RabbitMQ); it never delivers early. The frame's `ttlMs` is dropped:
   * it neither runs while the frame waits nor after it lands (the delivery carries no `ttlMs`), since
   * RabbitMQ strips the expiration of a dead-lettered message anyway. A frame that comes due while
   * `service` has no queue is dropped, as RabbitMQ's default exchange drops it.
   * @throws TypeError for a service that is not a non-empty string.
   * @throws RangeError for a delay that is not a finite number of milliseconds in [0, MAX_MESSAGE_TTL_MS].
   */
  sendDelayed(service: string, frame: Frame, delayMs: number): Promise<void>;
  /**
   * Opens a claim named `key` (visible ASCII `!`..`~`, 1 to 200 characters) that lives `ttlMs`.
   * Idempotent: opening a claim that is open (or taken) changes neither its taker nor, except on
   * RabbitMQ where a queue's `x-expires` counts from its last use, its expiry.
   * @throws TypeError for a malformed key; RangeError for a ttl that is not an integer in
   *   [1, MAX_MESSAGE_TTL_MS].
   */
  openClaim(key: string, ttlMs: number): Promise<void>;
  /**
   * Takes the open claim `key` for `taker`. Atomic across every participant of the mesh.
   * - `"won"`: the claim was open and is now `taker`'s, or was already `taker`'s (so a redelivered
   *   message claims again);
   * - `"lost"`: another taker holds it;
   * - `"absent"`: no such claim is open: it expired, or was never opened. A caller decides what
   *   that means (an asynchronous call without a deadline still handles its answer).
   *
   * A transport that cannot tell "absent" from a store that is briefly unavailable (for example a
   * RabbitMQ cluster node down) throws a retryable error rather than answer `"absent"`.
   * @throws TypeError for a malformed key, or a taker that is not a non-empty string of at most
   *   {@link MAX_CLAIM_TAKER_LENGTH} characters.
   */
  claim(key: string, taker: string): Promise<ClaimOutcome>;
}

/** What {@link TransportScheduling.claim} found: see there. */
export type ClaimOutcome = "won" | "lost" | "absent";

/** The transport's scheduling capability, or undefined when it has none. */
export function schedulingOf(transport: object): TransportScheduling | undefined {
  const value = (transport as { scheduling?: unknown }).scheduling;
  if (value === undefined || value === null) return undefined;
  const s = value as Partial<TransportScheduling>;
  if (
    typeof s.serviceReplyAddress !== "function" ||
    typeof s.sendDelayed !== "function" ||
    typeof s.openClaim !== "function" ||
    typeof s.claim !== "function"
  ) {
    throw new TypeError("transport.scheduling must implement TransportScheduling");
  }
  return value as TransportScheduling;
}

/** Longest claim key, in characters. */
export const MAX_CLAIM_KEY_LENGTH = 200;
/** Longest claim taker, in characters. */
export const MAX_CLAIM_TAKER_LENGTH = 1024;

const CLAIM_KEY = /^[\x21-\x7e]+$/;

/**
 * Checks the service of `serviceReplyAddress`/`sendDelayed` (for transports).
 * @throws TypeError `service must be a non-empty string`
 */
export function assertScheduledService(service: unknown): asserts service is string {
  if (typeof service !== "string" || service === "") {
    throw new TypeError(`service must be a non-empty string, got ${describe(service)}`);
  }
}

/**
 * Checks the delay of `sendDelayed` and returns it as whole milliseconds (rounded up).
 * @throws RangeError naming `delayMs`.
 */
export function scheduledDelayMs(delayMs: unknown): number {
  if (
    typeof delayMs !== "number" ||
    !Number.isFinite(delayMs) ||
    delayMs < 0 ||
    delayMs > MAX_MESSAGE_TTL_MS
  ) {
    throw new RangeError(
      `delayMs must be a finite number of milliseconds from 0 to ${MAX_MESSAGE_TTL_MS}, got ${describe(delayMs)}`,
    );
  }
  return Math.ceil(delayMs);
}

/**
 * Checks a claim key.
 * @throws TypeError naming `key`.
 */
export function assertClaimKey(key: unknown): asserts key is string {
  if (typeof key !== "string" || key.length > MAX_CLAIM_KEY_LENGTH || !CLAIM_KEY.test(key)) {
    throw new TypeError(
      `key must be 1 to ${MAX_CLAIM_KEY_LENGTH} visible ASCII characters (! to ~), got ${describe(key)}`,
    );
  }
}

/**
 * Checks the ttl of `openClaim`.
 * @throws RangeError naming `ttlMs`.
 */
export function assertClaimTtl(ttlMs: unknown): asserts ttlMs is number {
  if (
    typeof ttlMs !== "number" ||
    !Number.isSafeInteger(ttlMs) ||
    ttlMs < 1 ||
    ttlMs > MAX_MESSAGE_TTL_MS
  ) {
    throw new RangeError(
      `ttlMs must be an integer number of milliseconds from 1 to ${MAX_MESSAGE_TTL_MS}, got ${describe(ttlMs)}`,
    );
  }
}

/**
 * Checks the taker of `claim`.
 * @throws TypeError naming `taker`.
 */
export function assertClaimTaker(taker: unknown): asserts taker is string {
  if (typeof taker !== "string" || taker === "" || taker.length > MAX_CLAIM_TAKER_LENGTH) {
    throw new TypeError(
      `taker must be a non-empty string of at most ${MAX_CLAIM_TAKER_LENGTH} characters, got ${describe(taker)}`,
    );
  }
}

function describe(value: unknown): string {
  if (typeof value === "string")
    return value.length > 40 ? `a string of ${value.length} characters` : JSON.stringify(value);
  if (typeof value === "number") return String(value);
  return value === null ? "null" : typeof value;
}
