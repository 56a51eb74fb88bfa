import {
  connect as natsConnect,
  StorageType,
  type ConnectionOptions,
  type KV,
  type NatsConnection,
} from "nats";
import {
  DEFAULT_MESH,
  NuropbTransportError,
  isLogger,
  noopLogger,
  timerOption,
  type Logger,
} from "@nuropb/protocol";
import { isSubjectToken } from "./names.ts";

/**
 * A lease one holder at a time may have (the `LeaseStore` of `@nuropb/core`'s
 * `createLeaseElection`), kept as an entry of a JetStream key-value bucket whose entries live
 * `leaseMs` (the bucket's TTL, counted by the server from the entry's last write).
 */
export interface NatsLeaseStore {
  readonly name: string;
  /** Creates the entry (only when there is none): true when taken. */
  acquire(holder: string, leaseMs: number): Promise<boolean>;
  /** Rewrites the entry at its revision when it holds `holder` (compare and extend). */
  renew(holder: string, leaseMs: number): Promise<boolean>;
  /** Deletes the entry at its revision when it holds `holder` (compare and delete). */
  release(holder: string): Promise<void>;
  /** Closes the store's connection. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link createNatsLeaseStore}. */
export interface NatsLeaseStoreOptions {
  /** What the lease is for: the service name. */
  readonly name: string;
  /** NATS server URL(s), with JetStream enabled. */
  readonly servers: string | readonly string[];
  /** The mesh, part of the bucket's name. @defaultValue "nuropb" */
  readonly mesh?: string;
  /**
   * The lease, in ms: the bucket's TTL, so every election on this store must use the same
   * `leaseMs` (the bucket's name carries it: `nuropb_{mesh}_leases_{leaseMs}`).
   * @defaultValue 10000
   */
  readonly leaseMs?: number;
  /** Bound of each request, in ms. @defaultValue 2000 */
  readonly requestTimeoutMs?: number;
  /**
   * Replicas of the bucket when this store creates it (1 to 5; 3 on a cluster, as the
   * transport's `replicas`), so a lease outlives the loss of a server. An existing bucket keeps
   * its own. @defaultValue 1
   */
  readonly replicas?: number;
  /** Further `connect()` options of the nats client (credentials, TLS). */
  readonly connectionOptions?: Partial<ConnectionOptions>;
  /** Logs as `{ component: "nats-lease" }`. @defaultValue noopLogger */
  readonly logger?: Logger;
}

const OWNER = "createNatsLeaseStore";

/**
 * Creates a lease store in a JetStream key-value bucket for leader elections:
 * `createLeaseElection({ store: createNatsLeaseStore({ servers, name: "orders", leaseMs }),
 * candidateId, leaseMs })` from `@nuropb/core`. It has a connection of its own, opened (and the
 * bucket made) at the first call; construction does no I/O.
 * @throws TypeError naming the bad option.
 */
export function createNatsLeaseStore(options: NatsLeaseStoreOptions): NatsLeaseStore {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`${OWNER}: options are required ({ name, servers })`);
  }
  const { name } = options;
  if (typeof name !== "string" || name === "") {
    throw new TypeError(`${OWNER}: 'name' must be a non-empty string`);
  }
  const servers = typeof options.servers === "string" ? [options.servers] : options.servers;
  if (
    !Array.isArray(servers) ||
    servers.length === 0 ||
    !servers.every((s) => typeof s === "string" && s !== "")
  ) {
    throw new TypeError(`${OWNER}: 'servers' must be a URL or a non-empty array of URLs`);
  }
  const mesh = options.mesh ?? DEFAULT_MESH;
  if (typeof mesh !== "string" || !isSubjectToken(mesh)) {
    throw new TypeError(`${OWNER}: 'mesh' must be one subject token (letters, digits, '_', '-')`);
  }
  if (options.logger !== undefined && !isLogger(options.logger)) {
    throw new TypeError(`${OWNER}: 'logger' must be a Logger`);
  }
  const leaseMs = timerOption(OWNER, "leaseMs", options.leaseMs, 10_000, 100);
  const requestTimeoutMs = timerOption(OWNER, "requestTimeoutMs", options.requestTimeoutMs, 2_000);
  const replicas = options.replicas ?? 1;
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5) {
    throw new TypeError(
      `${OWNER}: 'replicas' must be an integer from 1 to 5, got ${String(replicas as unknown)}`,
    );
  }
  return new NatsLease({
    name,
    servers: [...(servers as string[])],
    bucket: `nuropb_${mesh.replace(/-/g, "_")}_leases_${String(leaseMs)}`,
    key: leaseKey(name),
    leaseMs,
    requestTimeoutMs,
    replicas,
    connectionOptions: { ...(options.connectionOptions ?? {}) },
    logger: (options.logger ?? noopLogger).child({ component: "nats-lease", lease: name }),
  });
}

/** A KV key for a service name: as is when it is a valid key, else hex (service names may hold ':'). */
function leaseKey(name: string): string {
  return /^[-_A-Za-z0-9]+$/.test(name) ? name : `x-${Buffer.from(name).toString("hex")}`;
}

interface LeaseSettings {
  readonly name: string;
  readonly servers: readonly string[];
  readonly bucket: string;
  readonly key: string;
  readonly leaseMs: number;
  readonly requestTimeoutMs: number;
  readonly replicas: number;
  readonly connectionOptions: Partial<ConnectionOptions>;
  readonly logger: Logger;
}

class NatsLease implements NatsLeaseStore {
  readonly name: string;
  readonly #s: LeaseSettings;
  #opening: Promise<{ nc: NatsConnection; kv: KV }> | undefined;
  #closed = false;

  constructor(settings: LeaseSettings) {
    this.#s = settings;
    this.name = settings.name;
  }

  async acquire(holder: string, leaseMs: number): Promise<boolean> {
    const { kv } = await this.#open(leaseMs);
    try {
      await kv.create(this.#s.key, holder);
      return true;
    } catch (err) {
      // Someone holds it (the entry exists: "wrong last sequence"), or the server is unreachable.
      if (isWrongSequence(err)) return false;
      throw transportError(this.name, err);
    }
  }

  async renew(holder: string, leaseMs: number): Promise<boolean> {
    const { kv } = await this.#open(leaseMs);
    try {
      const entry = await kv.get(this.#s.key);
      if (entry === null || entry.operation !== "PUT" || entry.string() !== holder) return false;
      await kv.update(this.#s.key, holder, entry.revision);
      return true;
    } catch (err) {
      if (isWrongSequence(err)) return false;
      throw transportError(this.name, err);
    }
  }

  async release(holder: string): Promise<void> {
    const { kv } = await this.#open(this.#s.leaseMs);
    try {
      const entry = await kv.get(this.#s.key);
      if (entry === null || entry.operation !== "PUT" || entry.string() !== holder) return;
      await kv.delete(this.#s.key, { previousSeq: entry.revision });
    } catch (err) {
      if (isWrongSequence(err)) return;
      throw transportError(this.name, err);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const opened = await this.#opening?.catch(() => undefined);
    await opened?.nc.close().catch(() => undefined);
  }

  /** Connects and binds (or makes) the bucket at the first call. */
  async #open(leaseMs: number): Promise<{ nc: NatsConnection; kv: KV }> {
    if (this.#closed) throw new NuropbTransportError("the lease store is closed");
    if (leaseMs !== this.#s.leaseMs) {
      throw new TypeError(
        `${OWNER}: this store's lease is ${String(this.#s.leaseMs)} ms (its bucket's TTL); the election asked for ${String(leaseMs)} ms`,
      );
    }
    const opening = (this.#opening ??= this.#connect());
    try {
      return await opening;
    } catch (err) {
      if (this.#opening === opening) this.#opening = undefined;
      throw transportError(this.name, err);
    }
  }

  async #connect(): Promise<{ nc: NatsConnection; kv: KV }> {
    const s = this.#s;
    const nc = await natsConnect({
      ...s.connectionOptions,
      servers: [...s.servers],
      name: `nuropb-lease-${s.name}`,
      timeout: s.requestTimeoutMs,
      reconnect: true,
      maxReconnectAttempts: -1,
      waitOnFirstConnect: false,
    });
    try {
      const js = nc.jetstream({ timeout: s.requestTimeoutMs });
      const kv = await js.views.kv(s.bucket, {
        history: 1,
        ttl: s.leaseMs,
        storage: StorageType.Memory,
        replicas: s.replicas,
        timeout: s.requestTimeoutMs,
      });
      s.logger.info("lease bucket ready", { bucket: s.bucket });
      return { nc, kv };
    } catch (err) {
      await nc.close().catch(() => undefined);
      throw err;
    }
  }
}

function isWrongSequence(err: unknown): boolean {
  const e = err as { message?: unknown; api_error?: { err_code?: number } };
  return (
    e?.api_error?.err_code === 10071 ||
    (typeof e?.message === "string" && /wrong last sequence/i.test(e.message))
  );
}

function transportError(name: string, err: unknown): NuropbTransportError {
  if (err instanceof NuropbTransportError) return err;
  return new NuropbTransportError(`nats lease ${name}: ${(err as Error)?.message ?? String(err)}`, {
    cause: err,
    retryable: true,
  });
}
