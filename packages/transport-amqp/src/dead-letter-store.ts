import amqplib from "amqplib";
import type { ChannelModel, GetMessage } from "amqplib";
import { DEFAULT_DL_QUEUE, type DeadLetterEntry, type DeadLetterStore } from "@nuropb/protocol";
import { toInboundFrame } from "./frame-codec.ts";

/** Options of {@link createAmqpDeadLetterStore}. */
export interface AmqpDeadLetterStoreOptions {
  /** `amqp://user:password@host:5672/vhost`: the mesh. */
  readonly url: string;
  /** The dead-letter queue, as `configureMesh` declared it. @defaultValue "nuropb-dl-queue" */
  readonly dlQueue?: string;
  /** Most messages read from the queue by one `remove`. @defaultValue 100000 */
  readonly maxScan?: number;
}

const OWNER = "createAmqpDeadLetterStore";

/**
 * The dead letters of a mesh on RabbitMQ: the messages of its dead-letter queue. A queue has no
 * ids and no random access, so `list` takes messages with basic.get and gives them all back (the
 * channel closes unacknowledged: they return to their places, marked redelivered), and `remove`
 * reads up to `maxScan` messages, acknowledges those with a matching id and gives back the rest.
 * Ids are correlation ids, with `~2`, `~3`… for later letters that share one (queue order).
 * Meant for an operator on a quiet dead-letter queue, not for a hot path.
 * @throws TypeError naming the bad option.
 */
export function createAmqpDeadLetterStore(options: AmqpDeadLetterStoreOptions): DeadLetterStore {
  if (typeof options !== "object" || options === null)
    throw new TypeError(`${OWNER}: options are required ({ url })`);
  const { url } = options;
  if (typeof url !== "string" || !/^amqps?:\/\//.test(url))
    throw new TypeError(`${OWNER}: 'url' must be an amqp:// or amqps:// URL`);
  const queue = options.dlQueue ?? DEFAULT_DL_QUEUE;
  if (typeof queue !== "string" || queue === "")
    throw new TypeError(`${OWNER}: 'dlQueue' must be a non-empty string`);
  const maxScan = options.maxScan ?? 100_000;
  if (!Number.isSafeInteger(maxScan) || maxScan < 1)
    throw new TypeError(`${OWNER}: 'maxScan' must be a positive integer`);
  let model: ChannelModel | undefined;
  const connection = async (): Promise<ChannelModel> => {
    if (model !== undefined) return model;
    const m = await amqplib.connect(url);
    m.on("error", () => undefined); // reported by the operation that fails
    model = m;
    return m;
  };
  /** Reads up to `limit` messages on a fresh channel; `settle` decides, then the channel closes. */
  const scan = async <T>(
    limit: number,
    settle: (read: readonly [DeadLetterEntry, GetMessage][], ack: (m: GetMessage) => void) => T,
  ): Promise<T> => {
    const ch = await (await connection()).createChannel();
    try {
      await ch.checkQueue(queue);
      const read: [DeadLetterEntry, GetMessage][] = [];
      const seen = new Map<string, number>();
      while (read.length < limit) {
        const msg = await ch.get(queue, { noAck: false });
        if (msg === false) break;
        read.push([entryOf(msg, seen), msg]);
      }
      return settle(read, (m) => ch.ack(m));
    } finally {
      // Unacknowledged messages go back to the queue as the channel closes.
      await ch.close().catch(() => undefined);
    }
  };
  const close = async (): Promise<void> => {
    const m = model;
    model = undefined;
    if (m !== undefined) await m.close().catch(() => undefined);
  };
  return {
    async list(limit: number): Promise<DeadLetterEntry[]> {
      if (!Number.isSafeInteger(limit) || limit < 1)
        throw new TypeError(`list: limit must be a positive integer, got ${String(limit)}`);
      return scan(limit, (read) => read.map(([entry]) => entry));
    },
    async remove(ids: readonly string[]): Promise<number> {
      if (ids.length === 0) return 0;
      const wanted = new Set(ids);
      return scan(maxScan, (read, ack) => {
        let removed = 0;
        for (const [entry, msg] of read) {
          if (!wanted.has(entry.id)) continue;
          ack(msg);
          removed++;
        }
        return removed;
      });
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** A dead letter: the frame, the service (its failure record, else its first death's queue). */
function entryOf(msg: GetMessage, seen: Map<string, number>): DeadLetterEntry {
  const { redelivered: _r, ...frame } = toInboundFrame(msg);
  const n = (seen.get(frame.correlationId) ?? 0) + 1;
  seen.set(frame.correlationId, n);
  const id = n === 1 ? frame.correlationId : `${frame.correlationId}~${String(n)}`;
  const h = (msg.properties.headers ?? {}) as Record<string, unknown>;
  const recorded = h.nuropb_failure_service;
  const death = Array.isArray(h["x-death"]) ? (h["x-death"][0] as Record<string, unknown>) : {};
  const queue = typeof death.queue === "string" ? death.queue : undefined;
  const fromQueue = queue?.match(/^nuropb-(.+)-sq$/)?.[1];
  return {
    id,
    service: typeof recorded === "string" ? recorded : fromQueue,
    // A letter with a failure record was rejected by its service (its x-death, if any, tells of
    // the delay queues of its redeliveries); others say why the broker dead-lettered them.
    reason:
      typeof recorded === "string"
        ? "rejected"
        : typeof death.reason === "string"
          ? death.reason
          : undefined,
    frame,
  };
}
