import { Redis, type RedisOptions } from "ioredis";
import { DEFAULT_MESH, timerOption } from "@nuropb/protocol";
import { meshKeys } from "./keys.ts";

/** A backlog probe on Redis (for `withLeaderWatch` of `@nuropb/runner`), with its connection. */
export interface RedisBacklogProbe {
  /**
   * `XLEN` of the service stream (settled entries are deleted, so what waits plus what is
   * delivered and unsettled) and `XLEN` of the mesh's dead-letter stream (shared by every service
   * of the mesh).
   */
  (service: string): Promise<{ depth: number; deadLetters: number }>;
  /** Closes the probe's connection. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link createRedisBacklogProbe}. Give `url`, `options`, or both. */
export interface RedisBacklogProbeOptions {
  /** Redis URL, e.g. `"redis://127.0.0.1:6379/0"`. */
  readonly url?: string;
  /** ioredis options (host, port, password, TLS…). */
  readonly options?: RedisOptions;
  /** The mesh, as the transport's. @defaultValue "nuropb" */
  readonly mesh?: string;
  /** Bound of each command, in ms. @defaultValue 2000 */
  readonly commandTimeoutMs?: number;
}

const OWNER = "createRedisBacklogProbe";

/**
 * Creates a backlog probe on a connection of its own, opened at the first probe.
 * @throws TypeError naming the bad option.
 */
export function createRedisBacklogProbe(options: RedisBacklogProbeOptions): RedisBacklogProbe {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`${OWNER}: options are required ({ url })`);
  }
  const { url } = options;
  if (url === undefined && options.options === undefined) {
    throw new TypeError(`${OWNER}: give 'url' or 'options'`);
  }
  if (url !== undefined && (typeof url !== "string" || !/^rediss?:\/\//.test(url))) {
    throw new TypeError(`${OWNER}: 'url' must be a redis:// or rediss:// URL`);
  }
  const mesh = options.mesh ?? DEFAULT_MESH;
  if (typeof mesh !== "string" || !/^[A-Za-z0-9_.-]+$/.test(mesh)) {
    throw new TypeError(`${OWNER}: 'mesh' must be letters, digits, '_', '-' or '.'`);
  }
  const commandTimeoutMs = timerOption(OWNER, "commandTimeoutMs", options.commandTimeoutMs, 2_000);
  const redisOptions: RedisOptions = {
    ...(options.options ?? {}),
    lazyConnect: true,
    connectionName: `nuropb-${mesh}-probe`,
    commandTimeout: commandTimeoutMs,
    connectTimeout: commandTimeoutMs,
    maxRetriesPerRequest: 0,
  };
  const redis = url === undefined ? new Redis(redisOptions) : new Redis(url, redisOptions);
  // ioredis emits connection errors as events; without a listener they would crash the process.
  redis.on("error", () => undefined);
  const keys = meshKeys(mesh);
  const probe = async (service: string): Promise<{ depth: number; deadLetters: number }> => {
    const [depth, deadLetters] = await Promise.all([
      redis.xlen(keys.serviceStream(service)),
      redis.xlen(keys.deadLetters),
    ]);
    return { depth, deadLetters };
  };
  return Object.assign(probe, {
    close: async (): Promise<void> => {
      if (redis.status === "end") return;
      await redis.quit().catch(() => redis.disconnect());
    },
  });
}
