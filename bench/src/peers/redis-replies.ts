import { Redis } from "ioredis";
import { PendingCalls } from "./pending.ts";

/**
 * The client side of both raw Redis echoes: pops batches of `{ id, result }` replies from
 * `list` with BLMPOP (COUNT 64, waiting up to `blockSec`) on its own blocking connection and
 * settles the matching calls, until `stopping()`. A failed pop is reported to `fail` unless the
 * echo is stopping (closing disconnects the connection under the pop).
 */
async function receiveReplies(
  blocking: Redis,
  list: string,
  pending: PendingCalls,
  options: {
    readonly blockSec: number;
    readonly stopping: () => boolean;
    readonly fail: (err: unknown) => void;
  },
): Promise<void> {
  while (!options.stopping()) {
    let batch: string[];
    try {
      // BLMPOP reply: [key, [element, ...]] or null on timeout.
      const res = (await blocking.blmpop(options.blockSec, 1, list, "LEFT", "COUNT", 64)) as
        [string, string[]] | null;
      batch = res === null ? [] : res[1];
    } catch (err) {
      if (!options.stopping()) options.fail(err);
      return;
    }
    for (const text of batch) {
      const reply = JSON.parse(text) as { id: string; result: unknown };
      pending.resolve(reply.id, reply.result);
    }
  }
}

/**
 * The parts both raw Redis echoes share: their connections, the calls in flight, the stop flag
 * and the first failure (which fails every call in flight and every later one), the client's
 * reply loop and the client's side of a call.
 */
export class RedisEchoParts {
  readonly pending: PendingCalls;
  readonly conns: Redis[] = [];
  readonly loops: Promise<void>[] = [];
  stopping = false;
  failure: Error | undefined;
  readonly #url: string;
  readonly #label: string;

  constructor(url: string, label: string) {
    this.#url = url;
    this.#label = label;
    this.pending = new PendingCalls(label);
  }

  /** A new connection of this echo's (closed by the caller's close). */
  connection(): Redis {
    const r = new Redis(this.#url, { maxRetriesPerRequest: 1, lazyConnect: false });
    this.conns.push(r);
    return r;
  }

  /** Records the first failure and fails every call in flight with it. */
  readonly fail = (err: unknown): void => {
    this.failure = err instanceof Error ? err : new Error(String(err));
    this.pending.rejectAll(this.failure);
  };

  /** Starts the client's reply loop: BLMPOP on `blocking` from `list` (see receiveReplies). */
  receive(blocking: Redis, list: string, blockSec: number): void {
    this.loops.push(
      receiveReplies(blocking, list, this.pending, {
        blockSec,
        stopping: () => this.stopping,
        fail: this.fail,
      }).catch(this.fail),
    );
  }

  /** One call: rejected at once after a failure, else opened and sent with `send(id)`. */
  call(send: (id: string) => Promise<unknown>): Promise<unknown> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const { id, promise } = this.pending.open();
    send(id).catch((err: unknown) => this.pending.reject(id, err as Error));
    return promise;
  }

  /** Starts stopping: false when already stopping, else sets the flag and fails the calls. */
  beginClose(): boolean {
    if (this.stopping) return false;
    this.stopping = true;
    this.pending.rejectAll(new Error(`${this.#label} closed`));
    return true;
  }
}
