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
   * TTL delay queue per bucket on RabbitMQ); it never delivers early.
   * @throws RangeError for a delay that is not a finite number of milliseconds in [0, MAX_MESSAGE_TTL_MS].
   */
  sendDelayed(service: string, frame: Frame, delayMs: number): Promise<void>;
  /** Opens a claim named `key` (printable, ≤ 200 characters) that lives at most `ttlMs`. Idempotent. */
  openClaim(key: string, ttlMs: number): Promise<void>;
  /**
   * Takes the open claim `key` for `taker`. True when the claim was open and is now `taker`'s, or
   * was already `taker`'s (so a redelivered message claims again); false when another taker holds
   * it, or it expired, or it was never opened. Atomic across every participant of the mesh.
   */
  claim(key: string, taker: string): Promise<boolean>;
}

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
