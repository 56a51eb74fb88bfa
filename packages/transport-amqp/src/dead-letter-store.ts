import amqplib from "amqplib";
import type { ChannelModel, GetMessage } from "amqplib";
import { DEFAULT_DL_QUEUE, type DeadLetterEntry, type DeadLetterStore } from "@nuropb/protocol";
import { DEAD_LETTER_ID_HEADER } from "./dead-letter.ts";
import { toInboundFrame } from "./frame-codec.ts";

/** Options of {@link createAmqpDeadLetterStore}. */
export interface AmqpDeadLetterStoreOptions {
  /** `amqp://user:password@host:5672/vhost`: the mesh. */
  readonly url: string;
  /** The dead-letter queue, as `configureMesh` declared it. @defaultValue "nuropb-dl-queue" */
  readonly dlQueue?: string;
  /** Most messages read from the queue by one `remove` (it stops once it found every id). @defaultValue 100000 */
  readonly maxScan?: number;
}

const OWNER = "createAmqpDeadLetterStore";

/**
 * The dead letters of a mesh on RabbitMQ: the messages of its dead-letter queue. A queue has no
 * ids and no random access, so `list` takes messages with basic.get and gives them all back (the
 * channel closes unacknowledged: they return to their places, marked redelivered), `remove` reads
 * until it has found every id (at most `maxScan` messages), acknowledges those and gives back the
 * rest, and `take` visits letters one by one in a single pass, acknowledging each one as its
 * visit says so. A letter the transport dead-lettered (core's failure pipeline) has a stable,
 * unique id that the transport stamped on it (`nuropb_dead_letter_id`, not shown in its
 * headers); one the broker dead-lettered itself (plain reject, expiry, a full queue) has none and
 * gets a positional id: its correlation id, with `~2`, `~3`… for later letters that share one in
 * queue order, which shifts when an earlier one goes (its reason says so).
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
  /**
   * Reads up to `limit` messages on a fresh channel, handing each to `visit` (which may ack it)
   * until it returns false; then the channel closes and gives back what was not acked.
   */
  const scan = async (
    limit: number,
    visit: (entry: DeadLetterEntry, ack: () => void) => Promise<boolean> | boolean,
    onlyThoseThere = false,
  ): Promise<void> => {
    const ch = await (await connection()).createChannel();
    try {
      const { messageCount } = await ch.checkQueue(queue);
      // A letter requeued by this pass may fail again and come back behind: not read again.
      const most = onlyThoseThere ? Math.min(limit, messageCount) : limit;
      const seen = new Map<string, number>();
      for (let read = 0; read < most; read++) {
        const msg = await ch.get(queue, { noAck: false });
        if (msg === false) break;
        if (!(await visit(entryOf(msg, seen), () => ch.ack(msg)))) break;
      }
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
  const checkLimit = (limit: number, what: string): void => {
    if (!Number.isSafeInteger(limit) || limit < 1)
      throw new TypeError(`${what}: limit must be a positive integer, got ${String(limit)}`);
  };
  return {
    async list(limit: number): Promise<DeadLetterEntry[]> {
      checkLimit(limit, "list");
      const out: DeadLetterEntry[] = [];
      await scan(limit, (entry) => {
        out.push(entry);
        return true;
      });
      return out;
    },
    async remove(ids: readonly string[]): Promise<number> {
      if (ids.length === 0) return 0;
      const wanted = new Set(ids);
      let removed = 0;
      await scan(maxScan, (entry, ack) => {
        if (wanted.delete(entry.id)) {
          ack();
          removed++;
        }
        return wanted.size > 0;
      });
      return removed;
    },
    async take(
      limit: number,
      visit: (entry: DeadLetterEntry) => Promise<boolean>,
    ): Promise<number> {
      checkLimit(limit, "take");
      let removed = 0;
      await scan(
        limit,
        async (entry, ack) => {
          if (await visit(entry)) {
            ack();
            removed++;
          }
          return true;
        },
        true,
      );
      return removed;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** A dead letter: its id, the frame, the service (its failure record, else its first death's queue). */
function entryOf(msg: GetMessage, seen: Map<string, number>): DeadLetterEntry {
  const { redelivered: _r, ...inbound } = toInboundFrame(msg);
  const { [DEAD_LETTER_ID_HEADER]: stamped, ...headers } = inbound.headers;
  const frame = { ...inbound, headers };
  let id: string;
  if (typeof stamped === "string" && /^[\w-]{1,64}$/.test(stamped)) {
    id = stamped;
  } else {
    const n = (seen.get(frame.correlationId) ?? 0) + 1;
    seen.set(frame.correlationId, n);
    id = n === 1 ? frame.correlationId : `${frame.correlationId}~${String(n)}`;
  }
  const h = (msg.properties.headers ?? {}) as Record<string, unknown>;
  const recorded = h.nuropb_failure_service;
  const death = Array.isArray(h["x-death"]) ? (h["x-death"][0] as Record<string, unknown>) : {};
  const queue = typeof death.queue === "string" ? death.queue : undefined;
  const fromQueue = queue?.match(/^nuropb-(.+)-sq$/)?.[1];
  // A letter with a failure record was rejected by its service (its x-death, if any, tells of
  // the delay queues of its redeliveries); others say why the broker dead-lettered them.
  const reason =
    typeof recorded === "string"
      ? "rejected"
      : typeof death.reason === "string"
        ? death.reason
        : undefined;
  return {
    id,
    service: typeof recorded === "string" ? recorded : fromQueue,
    reason: id === stamped ? reason : `${reason ?? "unknown"} (positional id)`,
    frame,
  };
}
