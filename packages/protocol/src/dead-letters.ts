import type { Frame } from "./transport.ts";

/** One dead letter of a mesh, as an operator's tool reads it (`nuropb dlq`). */
export interface DeadLetterEntry {
  /**
   * Its id in the store, for {@link DeadLetterStore.remove}: a stream sequence (NATS), an entry
   * id (Redis), on RabbitMQ (whose queue has no ids) the id the transport stamped on the letter
   * as it dead-lettered it, else (a letter the broker dead-lettered itself: plain reject,
   * expiry) a positional fallback: its correlation id, `~2`, `~3`… for later letters sharing
   * one, which shifts when an earlier letter goes.
   */
  readonly id: string;
  /** The service whose queue it was dead-lettered from, when the store can tell. */
  readonly service: string | undefined;
  /** Why: `rejected`, `expired`… as the broker or transport recorded it, when it did. */
  readonly reason: string | undefined;
  /** The message as it was dead-lettered, with the failure record in its headers if any. */
  readonly frame: Frame;
  /**
   * Set when the letter is not the whole message (a store too small for it kept only its headers
   * and left the body out, say): why. Such a letter is shown but never requeued.
   */
  readonly incomplete?: string;
}

/**
 * Reading and removing a mesh's dead letters, one implementation per broker
 * (`createAmqpDeadLetterStore`, `createNatsDeadLetterStore`, `createRedisDeadLetterStore`).
 * Requeueing is a mandatory `transport.send({ kind: "rpc", service }, frame)` (it rejects
 * `NuropbNotDeliveredError` when the service has no queue) and only then `remove` (or `take`):
 * at least once, never lost.
 */
export interface DeadLetterStore extends AsyncDisposable {
  /** The oldest `limit` dead letters, oldest first; nothing is removed. */
  list(limit: number): Promise<DeadLetterEntry[]>;
  /** Removes the dead letters with these ids; resolves with how many were removed. */
  remove(ids: readonly string[]): Promise<number>;
  /**
   * Optional, for a store without random access (a RabbitMQ queue): visits up to `limit` dead
   * letters oldest first in one pass and removes each one for which `visit` resolves true, as
   * soon as it does; resolves with how many were removed. A `visit` that throws stops the pass
   * (the error is rethrown) and keeps that letter and the rest.
   */
  take?(limit: number, visit: (entry: DeadLetterEntry) => Promise<boolean>): Promise<number>;
  /** Lets go of the connection. Idempotent. */
  close(): Promise<void>;
}
