import { connect, type ConnectionOptions, type JetStreamManager, type NatsConnection } from "nats";
import { DEFAULT_MESH, type DeadLetterEntry, type DeadLetterStore } from "@nuropb/protocol";
import { NatsHeader, decodeFrameHeaders } from "./frame-headers.ts";
import { deadLetterStreamName, deadLetterSubject } from "./names.ts";

/** Options of {@link createNatsDeadLetterStore}. */
export interface NatsDeadLetterStoreOptions {
  /** NATS server URLs, e.g. `"nats://127.0.0.1:4222"`. */
  readonly servers: string | readonly string[];
  /** The mesh. @defaultValue "nuropb" */
  readonly mesh?: string;
  /** How long to try connecting, in milliseconds. @defaultValue 5000 */
  readonly connectTimeoutMs?: number;
  /** Further nats.js connection options (user, pass, token, TLS…). */
  readonly connectionOptions?: Partial<ConnectionOptions>;
}

/**
 * The dead letters of a mesh on NATS: the messages of its dead-letter stream
 * (`NUROPB-{mesh}-DL`), ids their stream sequences; `remove` deletes messages. Connects on first use.
 * @throws TypeError for a bad option.
 * @example
 * ```ts
 * await using store = createNatsDeadLetterStore({ servers: "nats://127.0.0.1:4222", mesh: "shop" });
 * for (const d of await store.list(100)) console.log(d.id, d.service, d.frame.headers);
 * ```
 */
export function createNatsDeadLetterStore(options: NatsDeadLetterStoreOptions): DeadLetterStore {
  if (typeof options !== "object" || options === null)
    throw new TypeError("createNatsDeadLetterStore needs an options object");
  const mesh = options.mesh ?? DEFAULT_MESH;
  if (typeof mesh !== "string" || mesh === "")
    throw new TypeError("createNatsDeadLetterStore: mesh must be a non-empty string");
  const stream = deadLetterStreamName(mesh);
  const subjectPrefix = deadLetterSubject(mesh, "");
  let nc: NatsConnection | undefined;
  let jsm: JetStreamManager | undefined;
  const manager = async (): Promise<JetStreamManager> => {
    if (jsm !== undefined) return jsm;
    nc = await connect({
      ...options.connectionOptions,
      servers: [...(typeof options.servers === "string" ? [options.servers] : options.servers)],
      timeout: options.connectTimeoutMs ?? 5_000,
      maxReconnectAttempts: 0,
    });
    jsm = await nc.jetstreamManager();
    return jsm;
  };
  /** The stream's first and last sequences; undefined when there is no stream (no dead letter yet). */
  const bounds = async (m: JetStreamManager): Promise<[number, number] | undefined> => {
    try {
      const { state } = await m.streams.info(stream);
      return [state.first_seq, state.last_seq];
    } catch (err) {
      if (/stream not found/i.test(String((err as Error)?.message ?? err))) return undefined;
      throw err;
    }
  };
  const close = async (): Promise<void> => {
    const c = nc;
    nc = undefined;
    jsm = undefined;
    if (c !== undefined) await c.close().catch(() => undefined);
  };
  return {
    async list(limit: number): Promise<DeadLetterEntry[]> {
      if (!Number.isSafeInteger(limit) || limit < 1)
        throw new TypeError(`list: limit must be a positive integer, got ${String(limit)}`);
      const m = await manager();
      const b = await bounds(m);
      const out: DeadLetterEntry[] = [];
      if (b === undefined) return out;
      for (let seq = b[0]; seq <= b[1] && out.length < limit; seq++) {
        // A deleted sequence (removed, or expired) has no message: skipped.
        const msg = await m.streams.getMessage(stream, { seq }).catch(() => undefined);
        if (msg === undefined) continue;
        let fields: ReturnType<typeof decodeFrameHeaders> = { headers: {}, correlationId: "" };
        try {
          fields = decodeFrameHeaders(msg.header);
        } catch {
          // a foreign writer's headers: the body alone
        }
        const service = msg.subject.startsWith(subjectPrefix)
          ? msg.subject.slice(subjectPrefix.length)
          : undefined;
        out.push({
          id: String(seq),
          service,
          reason: msg.header.get(NatsHeader.deadLetterReason) || undefined,
          frame: { ...fields, body: msg.data },
        });
      }
      return out;
    },
    async remove(ids: readonly string[]): Promise<number> {
      if (ids.length === 0) return 0;
      const m = await manager();
      let removed = 0;
      for (const id of ids) {
        const seq = Number(id);
        if (!Number.isSafeInteger(seq) || seq < 1) continue;
        if (await m.streams.deleteMessage(stream, seq, false).catch(() => false)) removed++;
      }
      return removed;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
