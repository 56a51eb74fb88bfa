import {
  NuropbConnectionClosedError,
  NuropbTransportError,
  createDeferred,
  createEventChannel,
  type Listener,
  type Logger,
  type Transport,
} from "@nuropb/protocol";
import type { LeaderElection } from "./leader-election.ts";
import type { ParticipantEvent } from "./types.ts";

type State = "idle" | "connecting" | "open" | "closing" | "closed";

/** What the lifecycle needs of its participant. */
export interface LifecycleParts {
  readonly transport: Transport;
  readonly log: Logger;
  readonly responseAddress: string;
  /** How long `disconnect()` waits for in-flight handlers, in ms. */
  readonly drainTimeoutMs: number;
  /** Starts consuming the participant's responses. */
  readonly consumeResponses: () => Promise<Listener>;
  /** Starts consuming the service queue; undefined for a client. */
  readonly consumeService: (() => Promise<Listener>) | undefined;
  /** Rejects every pending request with an error from `make`. */
  readonly failPending: (make: () => Error) => void;
  /** Releases what the participant holds once nothing is sent or received (cipher threads). */
  readonly release: () => Promise<void>;
  /** The service's election: campaigned in once connected, resigned from when disconnecting. */
  readonly election: LeaderElection | undefined;
  /**
   * With an election: a follower's wait for the leader's topology before it consumes (see
   * `topologyWaitMs`); the campaign then starts before consuming. Undefined: consume at once.
   * `signal` aborts when `disconnect()` is called meanwhile.
   */
  readonly awaitTopology?: ((signal: AbortSignal) => Promise<unknown>) | undefined;
}

/**
 * A participant's lifecycle: connect (the transport, then its consumers), watching the transport
 * (pending requests fail when the link drops), the handlers in flight, and disconnect: stop
 * taking messages, drain the handlers (bounded), stop the responses, fail what is pending. It
 * reports itself as a transport does: `events()` and `closed()`. A transport that closes under
 * the participant closes the participant too, with the reason.
 */
export class ParticipantLifecycle {
  readonly #p: LifecycleParts;
  readonly #inflight = new Set<Promise<void>>();
  #state: State = "idle";
  /** disconnect() is waiting for in-flight handlers: their own calls still go out. */
  #draining = false;
  /** connect() is probing for the leader's topology: its probes may go out. */
  #probing = false;
  /** Aborts connect()'s wait for the topology when disconnect() comes first. */
  #connectAbort: AbortController | undefined;
  #transportUp = true;
  #connecting: Promise<void> | undefined;
  /** The running (or finished) disconnect, shared by concurrent disconnect() calls. */
  #closing: Promise<void> = Promise.resolve();
  #listeners: Listener[] = [];
  #stopEvents: (() => void) | undefined;
  #stopLeadership: (() => void) | undefined;
  readonly #channel = createEventChannel<ParticipantEvent>();
  readonly #closed = createDeferred<Error | undefined>();

  constructor(parts: LifecycleParts) {
    this.#p = parts;
  }

  /** See {@link MeshParticipant.closed}: settles once, never rejects. */
  closed(): Promise<Error | undefined> {
    return this.#closed.promise;
  }

  /** See {@link MeshParticipant.events}: each call gets its own stream. */
  events(): AsyncIterable<ParticipantEvent> {
    return this.#channel.iterate();
  }

  /** True between a successful `connect()` and `disconnect()`, while the transport is up. */
  get connected(): boolean {
    return this.#state === "open" && this.#transportUp;
  }

  /** True once `disconnect()` (or a transport closing under it) has begun. */
  get closing(): boolean {
    return this.#state === "closing" || this.#state === "closed";
  }

  /** Throws unless calls may go out; `fromHandler`: a handler's own call during the drain may. */
  assertOpen(fromHandler: boolean): void {
    if (this.#state === "open" || (fromHandler && (this.#draining || this.#probing))) return;
    if (this.#state === "closing" || this.#state === "closed") {
      throw new NuropbConnectionClosedError("this participant is disconnected");
    }
    throw new NuropbConnectionClosedError("call connect() first");
  }

  /** Counts `work` (one service message being handled) until it settles, and returns it. */
  track(work: Promise<void>): Promise<void> {
    this.#inflight.add(work);
    // The caller (the transport) gets `work` and its outcome; the bookkeeping copy must not
    // turn a failure into an unhandled rejection.
    const done = (): void => void this.#inflight.delete(work);
    work.then(done, done);
    return work;
  }

  async connect(): Promise<void> {
    if (this.#state === "open") return;
    if (this.#state === "connecting" && this.#connecting !== undefined) return this.#connecting;
    if (this.#state === "closing" || this.#state === "closed") {
      throw new NuropbConnectionClosedError("this participant was disconnected; create a new one");
    }
    this.#state = "connecting";
    this.#connecting = this.#doConnect();
    try {
      await this.#connecting;
      this.#state = "open";
      this.#p.log.info("connected", { responseAddress: this.#p.responseAddress });
      this.#channel.emit({ type: "connected" });
    } catch (err) {
      this.#state = "idle";
      await this.#stopListeners();
      throw err;
    } finally {
      this.#connecting = undefined;
    }
  }

  async #doConnect(): Promise<void> {
    await this.#p.transport.connect();
    this.#stopEvents?.();
    this.#stopEvents = this.#watchTransport();
    this.#listeners.push(await this.#p.consumeResponses());
    const { awaitTopology, election } = this.#p;
    if (awaitTopology !== undefined && election !== undefined) {
      // The leader declares first: campaign, then a follower waits for the topology (bounded).
      await this.#campaign();
      if (!election.isLeader) {
        const abort = (this.#connectAbort = new AbortController());
        this.#probing = true;
        try {
          await awaitTopology(abort.signal);
        } finally {
          this.#probing = false;
          this.#connectAbort = undefined;
        }
        if (abort.signal.aborted) {
          throw new NuropbConnectionClosedError(
            "disconnected while waiting for the leader's topology",
          );
        }
      }
      if (this.#p.consumeService !== undefined)
        this.#listeners.push(await this.#p.consumeService());
      return;
    }
    if (this.#p.consumeService !== undefined) this.#listeners.push(await this.#p.consumeService());
    await this.#campaign();
  }

  /** Relays the election's changes as participant events and starts campaigning. */
  async #campaign(): Promise<void> {
    const election = this.#p.election;
    if (election === undefined) return;
    this.#stopLeadership?.();
    const iterator = election.events()[Symbol.asyncIterator]();
    let stopped = false;
    const relay = async (): Promise<void> => {
      for (;;) {
        const next = await iterator.next();
        if (next.done === true || stopped) return;
        this.#channel.emit(next.value);
      }
    };
    relay().catch((err: unknown) =>
      this.#p.log.error("leadership relay failed", { error: String(err) }),
    );
    this.#stopLeadership = () => {
      stopped = true;
      void iterator.return?.();
    };
    await election.start();
  }

  /** Resigns: another instance may lead while this one drains. Never throws. */
  async #resign(): Promise<void> {
    const election = this.#p.election;
    if (election === undefined) return;
    await election
      .stop()
      .catch((err: unknown) => this.#p.log.warn("could not resign", { error: String(err) }));
    // The deposed event of the resignation is relayed before the relay stops.
    await Promise.resolve();
    this.#stopLeadership?.();
    this.#stopLeadership = undefined;
  }

  #watchTransport(): () => void {
    const iterator = this.#p.transport.events()[Symbol.asyncIterator]();
    const log = this.#p.log;
    let stopped = false;
    const loop = async (): Promise<void> => {
      for (;;) {
        const next = await iterator.next();
        if (next.done === true || stopped) return;
        const event = next.value;
        switch (event.type) {
          case "disconnected":
            this.#transportUp = false;
            log.warn("transport disconnected", { error: event.error?.message });
            this.#channel.emit(
              event.error === undefined
                ? { type: "disconnected" }
                : { type: "disconnected", error: event.error },
            );
            this.#p.failPending(
              () =>
                new NuropbTransportError(
                  "connection lost while waiting for the response; the outcome is unknown",
                  {
                    retryable: true,
                    ...(event.error !== undefined ? { cause: event.error } : {}),
                  },
                ),
            );
            break;
          case "reconnected":
            this.#transportUp = true;
            log.info("transport reconnected");
            this.#channel.emit({ type: "reconnected" });
            break;
          case "closed": {
            this.#transportUp = false;
            this.#p.failPending(
              () => new NuropbConnectionClosedError("the transport closed", { retryable: true }),
            );
            // Nothing more can be sent or received: the participant closes too, and says why.
            const reason =
              event.error ??
              new NuropbConnectionClosedError("the transport was closed under the participant");
            log.warn("transport closed; closing", { error: reason.message });
            void this.#close(reason);
            return;
          }
          case "errored":
            log.warn("transport error", { error: event.error.message });
            this.#channel.emit({ type: "errored", error: event.error });
            break;
        }
      }
    };
    loop().catch((err: unknown) =>
      log.error("transport event loop failed", { error: String(err) }),
    );
    return () => {
      stopped = true;
      void iterator.return?.();
    };
  }

  disconnect(): Promise<void> {
    return this.#close(undefined);
  }

  /** Closes once; `reason`: why, when the participant was not asked to (the first close's counts). */
  async #close(reason: Error | undefined): Promise<void> {
    if (this.#state === "closed") return;
    if (this.#state === "closing") return this.#closing;
    if (this.#state === "connecting" && this.#connecting !== undefined) {
      this.#connectAbort?.abort();
      await this.#connecting.catch(() => undefined);
    }
    // A close that started meanwhile (while connect() settled) is the one.
    if ((this.#state as State) === "closing" || (this.#state as State) === "closed")
      return this.#closing;
    this.#state = "closing";
    this.#closing = this.#doDisconnect(reason);
    return this.#closing;
  }

  async #doDisconnect(reason: Error | undefined): Promise<void> {
    // 1. stop taking service messages; 2. let in-flight handlers finish (bounded), they still
    // respond and settle; 3. stop responses and fail what is still pending.
    const [responses, ...service] = this.#listeners;
    await this.#resign();
    await Promise.allSettled(service.map((l) => l.stop()));
    this.#draining = true;
    if (this.#inflight.size > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">(
        (r) => (timer = setTimeout(() => r("timeout"), this.#p.drainTimeoutMs)),
      );
      const result = await Promise.race([
        Promise.allSettled([...this.#inflight]).then(() => "done" as const),
        timeout,
      ]);
      clearTimeout(timer);
      if (result === "timeout")
        this.#p.log.warn("drain timed out; unsettled messages return to the queue", {
          inflight: this.#inflight.size,
        });
    }
    this.#draining = false;
    await responses?.stop().catch(() => undefined);
    this.#listeners = [];
    this.#stopEvents?.();
    this.#stopEvents = undefined;
    this.#p.failPending(
      () =>
        new NuropbTransportError("the client disconnected before the response arrived", {
          retryable: true,
        }),
    );
    // Nothing is sealed or opened any more: stop the cipher threads, if any.
    await this.#p.release();
    this.#state = "closed";
    this.#p.log.info("disconnected");
    this.#channel.emit(
      reason === undefined ? { type: "closed" } : { type: "closed", error: reason },
    );
    this.#channel.end();
    this.#closed.resolve(reason);
  }

  async #stopListeners(): Promise<void> {
    await this.#resign();
    await Promise.allSettled(this.#listeners.map((l) => l.stop()));
    this.#listeners = [];
    this.#stopEvents?.();
    this.#stopEvents = undefined;
  }
}
