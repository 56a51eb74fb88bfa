import type { Redis } from "ioredis";
import type { PendingCalls } from "./pending.ts";

/**
 * The client side both raw Redis echoes share: pops batches of `{ id, result }` replies from
 * `list` with BLMPOP (COUNT 64, waiting up to `blockSec`) on its own blocking connection and
 * settles the matching calls, until `stopping()`. A failed pop is reported to `fail` unless the
 * echo is stopping (closing disconnects the connection under the pop).
 */
export async function receiveReplies(
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
