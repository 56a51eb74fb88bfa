import { Redis, type RedisOptions } from "ioredis";
import {
  DEFAULT_MESH,
  type DeadLetterEntry,
  type DeadLetterStore,
  type Frame,
} from "@nuropb/protocol";
import { fieldsToFrame } from "./frame-codec.ts";
import { meshKeys } from "./keys.ts";

/** Options of {@link createRedisDeadLetterStore}. */
export interface RedisDeadLetterStoreOptions {
  /** Redis URL, e.g. `"redis://127.0.0.1:6379/0"`. */
  readonly url?: string;
  /** ioredis options (host, port, password, TLS…). */
  readonly redis?: RedisOptions;
  /** The mesh. @defaultValue "nuropb" */
  readonly mesh?: string;
  /** How long to try connecting, in milliseconds. @defaultValue 5000 */
  readonly connectTimeoutMs?: number;
}

/**
 * The dead letters of a mesh on Redis: the entries of its dead-letter stream (`{mesh}:dl`), ids
 * the entries' ids; `remove` deletes entries (XDEL). Connects on first use.
 * @throws TypeError for a bad option.
 * @example
 * ```ts
 * await using store = createRedisDeadLetterStore({ url: "redis://127.0.0.1:6379/0", mesh: "shop" });
 * for (const d of await store.list(100)) console.log(d.id, d.service, d.frame.headers);
 * ```
 */
export function createRedisDeadLetterStore(options: RedisDeadLetterStoreOptions): DeadLetterStore {
  if (typeof options !== "object" || options === null)
    throw new TypeError("createRedisDeadLetterStore needs an options object");
  const mesh = options.mesh ?? DEFAULT_MESH;
  if (typeof mesh !== "string" || mesh === "")
    throw new TypeError("createRedisDeadLetterStore: mesh must be a non-empty string");
  const key = meshKeys(mesh).deadLetters;
  const redisOptions: RedisOptions = {
    ...options.redis,
    lazyConnect: true,
    connectTimeout: options.connectTimeoutMs ?? 5_000,
    maxRetriesPerRequest: 1,
    // An operator's tool: a broker that cannot be reached is an error now, not a reconnect loop.
    retryStrategy: () => null,
  };
  let redis: Redis | undefined;
  const connection = async (): Promise<Redis> => {
    if (redis !== undefined) return redis;
    const r =
      options.url === undefined ? new Redis(redisOptions) : new Redis(options.url, redisOptions);
    r.on("error", () => undefined); // reported by the command that fails
    try {
      await r.connect();
    } catch (err) {
      r.disconnect();
      throw err;
    }
    redis = r;
    return r;
  };
  const close = async (): Promise<void> => {
    const r = redis;
    redis = undefined;
    if (r !== undefined) await r.quit().catch(() => r.disconnect());
  };
  return {
    async list(limit: number): Promise<DeadLetterEntry[]> {
      checkLimit(limit);
      const r = await connection();
      const entries = await r.xrangeBuffer(key, "-", "+", "COUNT", limit);
      return entries.map(([id, fields]) => entryOf(id.toString("latin1"), fields));
    },
    async remove(ids: readonly string[]): Promise<number> {
      if (ids.length === 0) return 0;
      const r = await connection();
      return r.xdel(key, ...ids);
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** A dead-letter entry: the frame (a foreign entry's fields as its body), service and reason. */
function entryOf(id: string, fields: readonly Buffer[]): DeadLetterEntry {
  let service: string | undefined;
  let reason: string | undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = (fields[i] as Buffer).toString("latin1");
    if (name === "service") service = (fields[i + 1] as Buffer).toString("utf8");
    else if (name === "reason") reason = (fields[i + 1] as Buffer).toString("utf8");
  }
  let frame: Frame;
  try {
    const { requeued: _r, storedAtMs: _s, ...read } = fieldsToFrame(fields);
    frame = read;
  } catch {
    const raw = fields.map((f) => f.toString("utf8"));
    frame = { headers: {}, body: Buffer.from(JSON.stringify(raw)), correlationId: "" };
  }
  return { id, service, reason, frame };
}

function checkLimit(limit: number): void {
  if (!Number.isSafeInteger(limit) || limit < 1)
    throw new TypeError(`list: limit must be a positive integer, got ${String(limit)}`);
}
