import {
  connect,
  type ConnectionOptions,
  type JetStreamManager,
  type JsMsg,
  type NatsConnection,
} from "nats";
import { DEFAULT_MESH, type DeadLetterEntry, type DeadLetterStore } from "@nuropb/protocol";
import { NatsHeader, decodeFrameHeaders } from "./frame-headers.ts";
import { deadLetterStreamName, deadLetterSubject } from "./names.ts";
import { apiErrorCode } from "./nats-errors.ts";

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
 * (`NUROPB-{mesh}-DL`), ids their stream sequences; `list` reads them in batches with an ordered
 * consumer, `remove` deletes messages. Connects on first use; connection and server errors
 * reject (never read as "no dead letter"). A letter whose body the stream could not keep (too
 * large) is listed with `incomplete` set: `nuropb dlq requeue` refuses it.
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
  /** The number of dead letters; undefined when there is no stream (no dead letter yet). */
  const count = async (m: JetStreamManager): Promise<number | undefined> => {
    try {
      return (await m.streams.info(stream)).state.messages;
    } catch (err) {
      if (
        apiErrorCode(err) === STREAM_NOT_FOUND ||
        /stream not found/i.test(String((err as Error)?.message))
      )
        return undefined;
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
      const out: DeadLetterEntry[] = [];
      const total = await count(m);
      if (total === undefined || total === 0) return out;
      // An ordered consumer reads the stream in batches, oldest first, skipping the gaps that
      // removed and expired letters leave (rather than one request per sequence).
      const consumer = await (nc as NatsConnection).jetstream().consumers.get(stream);
      try {
        for (;;) {
          const want = Math.min(limit - out.length, PAGE, Math.max(1, total - out.length));
          const batch = await consumer.fetch({ max_messages: want, expires: FETCH_EXPIRES_MS });
          let got = 0;
          let done = false;
          for await (const msg of batch) {
            got++;
            out.push(entryOf(msg));
            // The last letter there is: stop now rather than wait for the batch to expire.
            if (msg.info.pending === 0 || out.length >= limit) {
              done = true;
              break;
            }
          }
          if (done || got === 0) return out;
        }
      } finally {
        await consumer.delete().catch(() => undefined);
      }
    },
    async remove(ids: readonly string[]): Promise<number> {
      if (ids.length === 0) return 0;
      const m = await manager();
      let removed = 0;
      for (const id of ids) {
        const seq = Number(id);
        if (!/^\d{1,16}$/.test(id) || !Number.isSafeInteger(seq) || seq < 1) continue;
        try {
          if (await m.streams.deleteMessage(stream, seq, false)) removed++;
        } catch (err) {
          // Gone already (removed, expired), or no stream: not removed. Anything else is an error.
          const code = apiErrorCode(err);
          if (code === NO_MESSAGE_FOUND || code === STREAM_NOT_FOUND) continue;
          // "sequence {n} not found" (the server's delete-failed error 10057, which has others).
          if (/^sequence \d+ not found$|no message found/i.test(String((err as Error)?.message)))
            continue;
          throw err;
        }
      }
      return removed;
    },
    close,
    [Symbol.asyncDispose]: close,
  };

  function entryOf(msg: JsMsg): DeadLetterEntry {
    let fields: ReturnType<typeof decodeFrameHeaders> = { headers: {}, correlationId: "" };
    try {
      fields = decodeFrameHeaders(msg.headers);
    } catch {
      // a foreign writer's headers: the body alone
    }
    const service = msg.subject.startsWith(subjectPrefix)
      ? msg.subject.slice(subjectPrefix.length)
      : undefined;
    const dropped = msg.headers?.get(NatsHeader.deadLetterDropped) ?? "";
    const bytes = msg.headers?.get(NatsHeader.deadLetterBodyBytes) ?? "?";
    const { ttlMs: _ttl, sentAtMs: _sent, redelivered: _r, ...frame } = fields;
    return {
      id: String(msg.seq),
      service,
      reason: msg.headers?.get(NatsHeader.deadLetterReason) || undefined,
      frame: { ...frame, body: msg.data },
      ...(dropped === ""
        ? {}
        : {
            incomplete: `the dead-letter stream kept only part of it (${dropped} of ${bytes} bytes left out: the whole did not fit)`,
          }),
    };
  }
}

/** Letters read per fetch by `list`. */
const PAGE = 256;
/** How long one fetch waits for its batch, in milliseconds. */
const FETCH_EXPIRES_MS = 5_000;
/** JetStream API error codes. */
const STREAM_NOT_FOUND = 10059;
const NO_MESSAGE_FOUND = 10037;
