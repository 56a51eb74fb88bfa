import { DEFAULT_MESH, NuropbTransportError, type Transport } from "@nuropb/protocol";
import type { MemoryHub } from "./memory-hub.ts";

/**
 * A lease one holder at a time may have (the `LeaseStore` of `@nuropb/core`'s
 * `createLeaseElection`), kept on a memory hub.
 */
export interface MemoryLeaseStore {
  readonly name: string;
  /** Takes the lease for `holder` when nobody holds it (or it lapsed); true when taken. */
  acquire(holder: string, leaseMs: number): Promise<boolean>;
  /** Extends the lease when `holder` holds it; false when it does not. */
  renew(holder: string, leaseMs: number): Promise<boolean>;
  /** Gives the lease up when `holder` holds it. */
  release(holder: string): Promise<void>;
  /** Stops watching the transport. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link createMemoryLeaseStore}. */
export interface MemoryLeaseStoreOptions {
  /** The hub the lease lives on. */
  readonly hub: MemoryHub;
  /** What the lease is for: the service name. */
  readonly name: string;
  /** The mesh; leases of two meshes never meet. @defaultValue "nuropb" */
  readonly mesh?: string;
  /**
   * The connection the lease travels on, as a broker's would: while it is down (a
   * `hub.disconnect()` or `hub.fail()`), every call rejects, so the holder cannot renew and its
   * lease lapses. @defaultValue none (always reachable)
   */
  readonly transport?: Transport;
}

interface Lease {
  holder: string;
  /** `Date.now()` at which it lapses. */
  expiresAt: number;
}

const LEASES = new WeakMap<MemoryHub, Map<string, Lease>>();

/**
 * Creates a lease store on a memory hub, for leader elections between participants of one process
 * (tests, examples): `createLeaseElection({ store: createMemoryLeaseStore({ hub, name: "orders",
 * transport }), candidateId })` from `@nuropb/core`.
 * @throws TypeError when an option is invalid.
 */
export function createMemoryLeaseStore(options: MemoryLeaseStoreOptions): MemoryLeaseStore {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("createMemoryLeaseStore needs an options object with a hub and a name");
  }
  const { hub, name, transport } = options;
  if (typeof hub !== "object" || hub === null || typeof hub.queueNames !== "function") {
    throw new TypeError("options.hub must be a hub returned by createMemoryHub()");
  }
  if (typeof name !== "string" || name === "") {
    throw new TypeError("options.name must be a non-empty string");
  }
  const mesh = options.mesh ?? DEFAULT_MESH;
  if (typeof mesh !== "string" || mesh === "")
    throw new TypeError("mesh must be a non-empty string");
  let leases = LEASES.get(hub);
  if (leases === undefined) LEASES.set(hub, (leases = new Map()));
  return new HubLeaseStore(leases, `${mesh}\u0000${name}`, name, transport);
}

class HubLeaseStore implements MemoryLeaseStore {
  readonly name: string;
  readonly #leases: Map<string, Lease>;
  readonly #key: string;
  readonly #transport: Transport | undefined;
  #linkUp = true;
  #stopWatching: (() => void) | undefined;

  constructor(
    leases: Map<string, Lease>,
    key: string,
    name: string,
    transport: Transport | undefined,
  ) {
    this.#leases = leases;
    this.#key = key;
    this.name = name;
    this.#transport = transport;
    if (transport !== undefined) this.#watch(transport);
  }

  async acquire(holder: string, leaseMs: number): Promise<boolean> {
    this.#assertReachable();
    const now = Date.now();
    const lease = this.#leases.get(this.#key);
    if (lease !== undefined && lease.expiresAt > now) return false;
    this.#leases.set(this.#key, { holder, expiresAt: now + leaseMs });
    return true;
  }

  async renew(holder: string, leaseMs: number): Promise<boolean> {
    this.#assertReachable();
    const now = Date.now();
    const lease = this.#leases.get(this.#key);
    if (lease === undefined || lease.holder !== holder || lease.expiresAt <= now) return false;
    lease.expiresAt = now + leaseMs;
    return true;
  }

  async release(holder: string): Promise<void> {
    this.#assertReachable();
    if (this.#leases.get(this.#key)?.holder === holder) this.#leases.delete(this.#key);
  }

  async close(): Promise<void> {
    this.#stopWatching?.();
    this.#stopWatching = undefined;
  }

  #assertReachable(): void {
    const t = this.#transport;
    if (t !== undefined && (!this.#linkUp || t.state !== "open")) {
      throw new NuropbTransportError("the lease's connection is down", { retryable: true });
    }
  }

  #watch(transport: Transport): void {
    const iterator = transport.events()[Symbol.asyncIterator]();
    let stopped = false;
    const loop = async (): Promise<void> => {
      for (;;) {
        const next = await iterator.next();
        if (next.done === true || stopped) return;
        const type = next.value.type;
        if (type === "disconnected" || type === "closed") this.#linkUp = false;
        else if (type === "reconnected") this.#linkUp = true;
      }
    };
    void loop().catch(() => (this.#linkUp = false));
    this.#stopWatching = () => {
      stopped = true;
      void iterator.return?.();
    };
  }
}
