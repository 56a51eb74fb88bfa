import type { RedisOptions } from "ioredis";
import {
  DEFAULT_MESH,
  isLogger,
  noopLogger,
  positiveIntOption,
  timerOption,
  type Logger,
} from "@nuropb/protocol";

/** Options of {@link createRedisTransport}. Give `url`, `options`, or both (`options` then adds to the URL). */
export interface RedisTransportOptions {
  /** Redis URL, e.g. `"redis://127.0.0.1:6379/0"`. */
  readonly url?: string;
  /** ioredis options (host, port, password, TLS…). Reconnection settings are the transport's own. */
  readonly options?: RedisOptions;
  /**
   * The mesh: prefix of every key (`{mesh}:sq:{service}`…). Letters, digits, `_`, `-` and `.`.
   * @defaultValue `"nuropb"`
   */
  readonly mesh?: string;
  /**
   * Read window for a service queue whose spec asks for `prefetch: 0` (unlimited): entries are
   * read in batches, so "unlimited" still needs a bound. Deliveries, not bytes.
   * @defaultValue 256
   */
  readonly prefetch?: number;
  /** Logger; the transport logs as `{ component: "transport-redis" }`. @defaultValue noopLogger */
  readonly logger?: Logger;
  /** Time to establish the first connection, in milliseconds. @defaultValue 5000 */
  readonly connectTimeoutMs?: number;
  /**
   * How long `send` waits for Redis (including a reconnect), in milliseconds; it then rejects a
   * retryable `NuropbTransportError` (the frame may still arrive).
   * @defaultValue 10000
   */
  readonly sendTimeoutMs?: number;
  /**
   * A delivery held this long, in milliseconds, by a consumer that stopped answering (it died,
   * or lost a read reply with its connection) is claimed by another consumer and redelivered.
   * Live consumers renew what they hold, so a slow handler is never claimed behind its back.
   * @defaultValue 30000
   */
  readonly claimIdleMs?: number;
  /** How long an unread response stays in a response list, in milliseconds. @defaultValue 60000 */
  readonly responseTtlMs?: number;
  /**
   * Lease on a response address, in milliseconds: renewed every third of it while consumed; after
   * a crash the address is free again once it lapses.
   * @defaultValue 15000
   */
  readonly addressLeaseMs?: number;
  /** Approximate cap on entries kept in the dead-letter stream. @defaultValue 100000 */
  readonly deadLetterMaxLen?: number;
  /** Largest body `send` accepts, in bytes. @defaultValue 16777216 (16 MiB) */
  readonly maxFrameBytes?: number;
}

/** {@link RedisTransportOptions} with defaults applied. */
export interface ResolvedRedisOptions {
  readonly url: string | undefined;
  readonly redisOptions: RedisOptions;
  readonly mesh: string;
  readonly prefetch: number;
  readonly logger: Logger;
  readonly connectTimeoutMs: number;
  readonly sendTimeoutMs: number;
  readonly claimIdleMs: number;
  readonly responseTtlMs: number;
  readonly addressLeaseMs: number;
  readonly deadLetterMaxLen: number;
  readonly maxFrameBytes: number;
}

/** Default of {@link RedisTransportOptions.maxFrameBytes}. */
export const DEFAULT_REDIS_MAX_FRAME_BYTES = 16 * 1024 * 1024;

const OWNER = "createRedisTransport";
const positiveInt = (name: string, value: number | undefined, fallback: number): number =>
  positiveIntOption(OWNER, name, value, fallback);
const durationMs = (name: string, value: number | undefined, fallback: number, min = 1): number =>
  timerOption(OWNER, name, value, fallback, min);

/**
 * Validates options once, at the factory, and applies defaults.
 * @throws TypeError naming the first bad option.
 */
export function resolveRedisOptions(options: RedisTransportOptions): ResolvedRedisOptions {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("createRedisTransport: options are required ({ url } or { options })");
  }
  if (options.url === undefined && options.options === undefined) {
    throw new TypeError("createRedisTransport: give 'url' or 'options'");
  }
  if (
    options.url !== undefined &&
    (typeof options.url !== "string" || !/^rediss?:\/\//.test(options.url))
  ) {
    throw new TypeError(`createRedisTransport: 'url' must be a redis:// or rediss:// URL`);
  }
  const mesh = options.mesh ?? DEFAULT_MESH;
  if (typeof mesh !== "string" || !/^[A-Za-z0-9_.-]+$/.test(mesh)) {
    throw new TypeError(
      `createRedisTransport: 'mesh' must be letters, digits, '_', '-' or '.', got '${String(mesh)}'`,
    );
  }
  if (options.logger !== undefined && !isLogger(options.logger)) {
    throw new TypeError(
      "createRedisTransport: 'logger' must be a Logger (debug/info/warn/error/child)",
    );
  }
  if (
    options.options !== undefined &&
    (typeof options.options !== "object" || options.options === null)
  ) {
    throw new TypeError("createRedisTransport: 'options' must be an ioredis options object");
  }
  // Held entries are renewed every 200 ms at least: a shorter claim time lets another instance
  // take a delivery that is still being handled.
  const claimIdleMs = durationMs("claimIdleMs", options.claimIdleMs, 30_000, 500);
  return {
    url: options.url,
    redisOptions: { ...(options.options ?? {}) },
    mesh,
    prefetch: positiveInt("prefetch", options.prefetch, 256),
    logger: (options.logger ?? noopLogger).child({ component: "transport-redis" }),
    connectTimeoutMs: durationMs("connectTimeoutMs", options.connectTimeoutMs, 5_000),
    sendTimeoutMs: durationMs("sendTimeoutMs", options.sendTimeoutMs, 10_000),
    claimIdleMs,
    responseTtlMs: durationMs("responseTtlMs", options.responseTtlMs, 60_000),
    // Renewed every third of itself: shorter leases lapse between renewals.
    addressLeaseMs: durationMs("addressLeaseMs", options.addressLeaseMs, 15_000, 1_000),
    deadLetterMaxLen: positiveInt("deadLetterMaxLen", options.deadLetterMaxLen, 100_000),
    maxFrameBytes: positiveInt(
      "maxFrameBytes",
      options.maxFrameBytes,
      DEFAULT_REDIS_MAX_FRAME_BYTES,
    ),
  };
}
