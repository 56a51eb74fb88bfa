import {
  createEventChannel,
  isLogger,
  noopLogger,
  timerOption,
  type Logger,
} from "@nuropb/protocol";

/** A change of leadership, as {@link LeaderElection.events} reports it. */
export type LeadershipEvent =
  /** This candidate leads from now on. */
  | { readonly type: "elected" }
  /** This candidate no longer leads: it resigned, lost its lease or could not renew it in time. */
  | { readonly type: "deposed"; readonly error?: Error };

/**
 * Who leads among the instances of a service. A service given one (`createService({ election })`)
 * campaigns once connected and resigns when it disconnects; `isLeader` and its `elected` /
 * `deposed` events follow it. Whoever made the election closes it (`close()`).
 */
export interface LeaderElection extends AsyncDisposable {
  /** True while this candidate leads. */
  readonly isLeader: boolean;
  /** This candidate's id (the service's instance id, say). */
  readonly candidateId: string;
  /**
   * Starts campaigning; resolves once the first round is decided (a broker that cannot answer
   * decides nothing: the next rounds try again). Idempotent.
   * @throws TypeError when the store refuses the election's settings.
   */
  start(): Promise<void>;
  /** Resigns (gives the leadership up at once, when held) and stops campaigning. Idempotent; `start()` may follow. */
  stop(): Promise<void>;
  /** Stops and lets go of what the election holds (its connection). Idempotent. */
  close(): Promise<void>;
  /** Leadership changes; each call gets its own stream, which ends at `close()`. */
  events(): AsyncIterable<LeadershipEvent>;
}

/**
 * A lease that one holder at a time may have, kept by a broker: Redis (`SET NX PX`), a NATS
 * key-value entry, the memory hub. Each call is one round trip; the lease lapses by itself
 * `leaseMs` after it was last taken or extended, on the broker's clock.
 */
export interface LeaseStore {
  /** What the lease is for (the service name), for logs. */
  readonly name: string;
  /** Takes the lease for `holder` when nobody holds it; true when taken. */
  acquire(holder: string, leaseMs: number): Promise<boolean>;
  /** Extends the lease when `holder` holds it (compare and extend); false when it does not. */
  renew(holder: string, leaseMs: number): Promise<boolean>;
  /** Gives the lease up when `holder` holds it (compare and delete). */
  release(holder: string): Promise<void>;
  /** Lets go of the store's connection. */
  close(): Promise<void>;
}

/** Options of {@link createLeaseElection}. */
export interface LeaseElectionOptions {
  /** Where the lease is kept; the election closes it at `close()`. */
  readonly store: LeaseStore;
  /** This candidate's id, unique among the candidates (an instance id). */
  readonly candidateId: string;
  /**
   * How long a lease lasts without renewal, in ms: a leader that dies is replaced within
   * `leaseMs + renewMs` (plus a round trip). @defaultValue 10000
   */
  readonly leaseMs?: number;
  /** How often the leader renews and the others try to take the lease, in ms. Less than `leaseMs / 2`. @defaultValue leaseMs / 3 */
  readonly renewMs?: number;
  readonly logger?: Logger;
}

/**
 * A leader election on a {@link LeaseStore}: every `renewMs` the leader extends its lease and the
 * others try to take it.
 *
 * The lease window: a leader counts its lease from the moment it *sent* the request that took or
 * extended it, and deposes itself when 95 % of `leaseMs` have passed since without a renewal,
 * before the broker (which counts the whole `leaseMs` from when it *received* the request) lets
 * another take it. So two candidates lead at once only when the leader's timer fires more than
 * `leaseMs / 20` late (an event loop blocked that long) or clocks run at rates that far apart; a
 * candidate that is partitioned away steps down on its own. A new leader follows a dead one
 * within `leaseMs + renewMs` plus a round trip.
 * @throws TypeError naming the bad option.
 * @example
 * const election = createLeaseElection({ store: createRedisLeaseStore({ url, name: "orders" }), candidateId });
 * const service = createService({ transport, name: "orders", instance, election });
 */
export function createLeaseElection(options: LeaseElectionOptions): LeaderElection {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("createLeaseElection: options must be an object");
  }
  const { store, candidateId } = options;
  if (
    typeof store !== "object" ||
    store === null ||
    !["acquire", "renew", "release", "close"].every(
      (m) => typeof (store as unknown as Record<string, unknown>)[m] === "function",
    )
  ) {
    throw new TypeError("createLeaseElection: options.store must be a LeaseStore");
  }
  if (typeof candidateId !== "string" || candidateId === "") {
    throw new TypeError("createLeaseElection: options.candidateId must be a non-empty string");
  }
  const leaseMs = timerOption("createLeaseElection", "leaseMs", options.leaseMs, 10_000, 30);
  const renewMs = timerOption(
    "createLeaseElection",
    "renewMs",
    options.renewMs,
    Math.max(1, Math.floor(leaseMs / 3)),
  );
  if (renewMs * 2 >= leaseMs) {
    throw new TypeError("createLeaseElection: 'renewMs' must be less than half of 'leaseMs'");
  }
  const logger = options.logger ?? noopLogger;
  if (!isLogger(logger)) {
    throw new TypeError("createLeaseElection: options.logger must be a Logger");
  }
  return new LeaseElection(
    store,
    candidateId,
    leaseMs,
    renewMs,
    logger.child({ component: "leader-election", lease: store.name, candidateId }),
  );
}

class LeaseElection implements LeaderElection {
  readonly candidateId: string;
  readonly #store: LeaseStore;
  readonly #leaseMs: number;
  readonly #renewMs: number;
  readonly #log: Logger;
  readonly #channel = createEventChannel<LeadershipEvent>();
  #leader = false;
  #running = false;
  #closed = false;
  #tick: ReturnType<typeof setTimeout> | undefined;
  #fence: ReturnType<typeof setTimeout> | undefined;
  /** The last round failed (logged once per streak). */
  #failing = false;
  /** The store's last answer said it holds the lease for this candidate (led on or not). */
  #storeHolds = false;
  /** A misconfiguration a round ran into: campaigning stopped. */
  #fatal: TypeError | undefined;
  /** The round under way: stop() waits for it so that a late answer cannot elect us after. */
  #round: Promise<void> = Promise.resolve();

  constructor(
    store: LeaseStore,
    candidateId: string,
    leaseMs: number,
    renewMs: number,
    log: Logger,
  ) {
    this.#store = store;
    this.candidateId = candidateId;
    this.#leaseMs = leaseMs;
    this.#renewMs = renewMs;
    this.#log = log;
  }

  get isLeader(): boolean {
    return this.#leader;
  }

  events(): AsyncIterable<LeadershipEvent> {
    return this.#channel.iterate();
  }

  async start(): Promise<void> {
    if (this.#closed) throw new TypeError("this election is closed");
    if (this.#running) return this.#round;
    this.#running = true;
    this.#log.info("campaigning", { leaseMs: this.#leaseMs, renewMs: this.#renewMs });
    this.#fatal = undefined;
    this.#round = this.#campaign();
    await this.#round;
    if (this.#fatal !== undefined) throw this.#fatal;
  }

  async stop(): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    clearTimeout(this.#tick);
    await this.#round;
    // The store may hold the lease for us although we do not lead (a renewal answered after
    // stop() began, or too late): it is released all the same, so another leads at once.
    const holding = this.#leader || this.#storeHolds;
    this.#depose(undefined);
    this.#storeHolds = false;
    if (holding) {
      await this.#store.release(this.candidateId).catch((err: unknown) =>
        this.#log.warn("could not release the lease; it lapses by itself", {
          error: String(err),
        }),
      );
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await this.stop();
    this.#closed = true;
    this.#channel.end();
    await this.#store.close().catch(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** One round: the leader renews, the others try to take the lease; then the next is scheduled. */
  async #campaign(): Promise<void> {
    const sentAt = Date.now();
    try {
      // A lease the store holds for us (even one we do not lead on: its grant came too late) is
      // renewed; taking it anew would fail against our own key until it lapsed.
      const held =
        this.#leader || this.#storeHolds
          ? await this.#store.renew(this.candidateId, this.#leaseMs)
          : await this.#store.acquire(this.candidateId, this.#leaseMs);
      this.#storeHolds = held;
      // An answer after the lease would have lapsed (or after stop()) elects nobody.
      // The guard: a twentieth of the lease for a late timer or a clock running fast.
      const validUntil = sentAt + this.#leaseMs - Math.ceil(this.#leaseMs / 20);
      if (held && this.#running && Date.now() < validUntil) this.#hold(validUntil);
      else if (this.#leader && !this.#running) this.#depose(undefined);
      else if (this.#leader) this.#depose(new Error("the lease was lost to another candidate"));
      if (this.#failing) this.#log.info("lease rounds answered again");
      this.#failing = false;
    } catch (err) {
      if (err instanceof TypeError) {
        // Not the broker: a misconfiguration (a store made for another lease, say). Campaigning
        // on cannot help; start() rejects with it, a later round stops and says so.
        this.#log.error("leader election stopped", { error: err.message });
        this.#running = false;
        this.#fatal = err;
        this.#depose(err);
        return;
      }
      // A broker that cannot answer: keep what we have until the lease lapses (the fence).
      if (!this.#failing) {
        this.#log.warn("lease round failed; what is held lapses unless renewed", {
          error: String(err),
        });
      }
      this.#failing = true;
    }
    if (this.#running) this.#tick = setTimeout(() => this.#next(), this.#renewMs);
  }

  #next(): void {
    if (!this.#running) return;
    this.#round = this.#campaign();
  }

  #hold(validUntil: number): void {
    clearTimeout(this.#fence);
    this.#fence = setTimeout(
      () => this.#depose(new Error("the lease could not be renewed in time")),
      validUntil - Date.now(),
    );
    if (this.#leader) return;
    this.#leader = true;
    this.#log.info("elected");
    this.#channel.emit({ type: "elected" });
  }

  #depose(error: Error | undefined): void {
    clearTimeout(this.#fence);
    this.#fence = undefined;
    if (!this.#leader) return;
    this.#leader = false;
    if (error === undefined) this.#log.info("resigned");
    else this.#log.warn("deposed", { error: error.message });
    this.#channel.emit(error === undefined ? { type: "deposed" } : { type: "deposed", error });
  }
}
