import type { Frame } from "./transport.ts";

/** One dead letter of a mesh, as an operator's tool reads it (`nuropb dlq`). */
export interface DeadLetterEntry {
  /**
   * Its id in the store, for {@link DeadLetterStore.remove}: a stream sequence (NATS), an entry
   * id (Redis), the correlation id (RabbitMQ, whose queue has no ids: `~2`, `~3`… tell apart
   * letters that share one, in queue order).
   */
  readonly id: string;
  /** The service whose queue it was dead-lettered from, when the store can tell. */
  readonly service: string | undefined;
  /** Why: `rejected`, `expired`… as the broker or transport recorded it, when it did. */
  readonly reason: string | undefined;
  /** The message as it was dead-lettered, with the failure record in its headers if any. */
  readonly frame: Frame;
}

/**
 * Reading and removing a mesh's dead letters, one implementation per broker
 * (`createAmqpDeadLetterStore`, `createNatsDeadLetterStore`, `createRedisDeadLetterStore`).
 * Requeueing is `transport.scheduling.sendDelayed(service, frame, 0)` then `remove`: at least
 * once, never lost.
 */
export interface DeadLetterStore extends AsyncDisposable {
  /** The oldest `limit` dead letters, oldest first; nothing is removed. */
  list(limit: number): Promise<DeadLetterEntry[]>;
  /** Removes the dead letters with these ids; resolves with how many were removed. */
  remove(ids: readonly string[]): Promise<number>;
  /** Lets go of the connection. Idempotent. */
  close(): Promise<void>;
}
