import { Redis, type RedisOptions } from "ioredis";
import {
  DEFAULT_MESH,
  NuropbTransportError,
  isLogger,
  noopLogger,
  timerOption,
  type Logger,
} from "@nuropb/protocol";

/**
 * A lease one holder at a time may have (the `LeaseStore` of `@nuropb/core`'s
 * `createLeaseElection`), kept in Redis under `{mesh}:leader:{name}`.
 */
export interface RedisLeaseStore {
  readonly name: string;
  /** `SET key holder NX PX leaseMs`: true when taken. */
  acquire(holder: string, leaseMs: number): Promise<boolean>;
  /** Compare and extend (a Lua script): `PEXPIRE` when the key holds `holder`. */
  renew(holder: string, leaseMs: number): Promise<boolean>;
  /** Compare and delete (a Lua script): `DEL` when the key holds `holder`. */
  release(holder: string): Promise<void>;
  /** Closes the store's connection. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link createRedisLeaseStore}. Give `url`, `options`, or both. */
export interface RedisLeaseStoreOptions {
  /** What the lease is for: the service name. */
  readonly name: string;
  /** Redis URL, e.g. `"redis://127.0.0.1:6379/0"`. */
  readonly url?: string;
  /** ioredis options (host, port, password, TLS…). */
  readonly options?: RedisOptions;
  /** The mesh: the key's prefix, as the transport's. @defaultValue "nuropb" */
  readonly mesh?: string;
  /**
   * Bound of each command, in ms. A command that cannot be sent (the connection is down) fails at
   * once instead of waiting for a reconnect: a lease is only worth what it says now.
   * @defaultValue 2000
   */
  readonly commandTimeoutMs?: number;
  /** Logs as `{ component: "redis-lease" }`. @defaultValue noopLogger */
  readonly logger?: Logger;
}

/** Extends the lease when the key holds the holder: KEYS[1] key, ARGV[1] holder, ARGV[2] ms. */
const RENEW_SCRIPT = `if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`;

/** Deletes the key when it holds the holder: KEYS[1] key, ARGV[1] holder. */
const RELEASE_SCRIPT = `if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`;

const OWNER = "createRedisLeaseStore";

/**
 * Creates a lease store in Redis for leader elections: `createLeaseElection({ store:
 * createRedisLeaseStore({ url, name: "orders" }), candidateId })` from `@nuropb/core`. It has a
 * connection of its own, opened at the first call (construction does no I/O). Redis counts the
 * lease on its own clock; a single Redis server is assumed (no Redlock across several).
 * @throws TypeError naming the bad option.
 */
export function createRedisLeaseStore(options: RedisLeaseStoreOptions): RedisLeaseStore {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`${OWNER}: options are required ({ name, url })`);
  }
  const { name, url } = options;
  if (typeof name !== "string" || name === "") {
    throw new TypeError(`${OWNER}: 'name' must be a non-empty string`);
  }
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
  if (options.logger !== undefined && !isLogger(options.logger)) {
    throw new TypeError(`${OWNER}: 'logger' must be a Logger`);
  }
  const commandTimeoutMs = timerOption(OWNER, "commandTimeoutMs", options.commandTimeoutMs, 2_000);
  const logger = (options.logger ?? noopLogger).child({ component: "redis-lease", lease: name });
  const redisOptions: RedisOptions = {
    ...(options.options ?? {}),
    lazyConnect: true,
    connectionName: `nuropb-${mesh}-leader`,
    commandTimeout: commandTimeoutMs,
    connectTimeout: commandTimeoutMs,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: (times: number) => Math.min(1_000, 50 * 2 ** Math.min(times, 5)),
  };
  const redis = url === undefined ? new Redis(redisOptions) : new Redis(url, redisOptions);
  // ioredis emits connection errors as events; without a listener they would crash the process.
  redis.on("error", (err: unknown) => logger.debug("redis connection error", { error: err }));
  return new RedisLease(redis, `${mesh}:leader:${name}`, name);
}

class RedisLease implements RedisLeaseStore {
  readonly name: string;
  readonly #redis: Redis;
  readonly #key: string;
  #connecting: Promise<void> | undefined;
  #closed = false;

  constructor(redis: Redis, key: string, name: string) {
    this.#redis = redis;
    this.#key = key;
    this.name = name;
  }

  async acquire(holder: string, leaseMs: number): Promise<boolean> {
    await this.#ready();
    const answer = await this.#call(() => this.#redis.set(this.#key, holder, "PX", leaseMs, "NX"));
    return answer === "OK";
  }

  async renew(holder: string, leaseMs: number): Promise<boolean> {
    await this.#ready();
    const answer = await this.#call(() =>
      this.#redis.eval(RENEW_SCRIPT, 1, this.#key, holder, String(leaseMs)),
    );
    return answer === 1;
  }

  async release(holder: string): Promise<void> {
    await this.#ready();
    await this.#call(() => this.#redis.eval(RELEASE_SCRIPT, 1, this.#key, holder));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#connecting?.catch(() => undefined);
    if (this.#redis.status === "ready") await this.#redis.quit().catch(() => undefined);
    this.#redis.disconnect();
  }

  /** Connects on first use; later, ioredis reconnects by itself. */
  async #ready(): Promise<void> {
    if (this.#closed) throw new NuropbTransportError("the lease store is closed");
    if (this.#redis.status !== "wait") return;
    this.#connecting ??= this.#redis.connect().finally(() => (this.#connecting = undefined));
    await this.#call(() => this.#connecting as Promise<void>);
  }

  async #call<T>(command: () => Promise<T>): Promise<T> {
    try {
      return await command();
    } catch (err) {
      throw new NuropbTransportError(`redis lease ${this.name}: ${(err as Error).message}`, {
        cause: err,
        retryable: true,
      });
    }
  }
}
