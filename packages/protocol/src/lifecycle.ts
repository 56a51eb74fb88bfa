import { LifecycleState } from "./constants.ts";
import { NuropbConnectionClosedError, NuropbTransportError } from "./errors.ts";
import { createEventChannel } from "./event-channel.ts";
import { noopLogger } from "./logger.ts";
import type { Logger } from "./logger.ts";
import type { TransportEvent } from "./transport.ts";

/**
 * The lifecycle bookkeeping every {@link Transport} repeats: its state, the `events()` channel,
 * the `closed()` promise, a `connect()` that callers share, and a `close()` that runs once. The
 * transport keeps its broker work (opening sockets, stopping consumers) and hands it in as
 * functions. Transports outside this repo may use it.
 */
export interface TransportLifecycle {
  /**
   * The current state. It changes only through these methods: {@link connect}, {@link opened},
   * {@link reconnecting}, {@link close} and {@link finish}.
   */
  readonly state: LifecycleState;
  /** `closing` or `closed`: nothing new may start. */
  readonly ending: boolean;
  /**
   * Shares one connect attempt between callers: resolves at once when `open`, rejects with
   * {@link NuropbConnectionClosedError} when ending, joins the attempt under way when
   * `connecting`, and otherwise enters `connecting` and runs `attempt`. When the attempt
   * resolves the state becomes `open`; when it rejects while still `connecting` it goes back to
   * `idle`, so connect() may be tried again.
   */
  connect(attempt: () => Promise<void>): Promise<void>;
  /** Settles (never rejects) once no connect attempt is under way. */
  connectSettled(): Promise<void>;
  /**
   * The link is up: `connecting` → `open` now, before the connect attempt (or a reconnect of
   * the transport's own) returns, for a transport whose link events need `open` at once. A
   * no-op in any other state.
   */
  opened(): void;
  /**
   * The link was lost and the transport reconnects it itself (AMQP): `open` → `connecting`
   * until {@link opened}; `connect()` callers wait for the reconnect. A no-op unless `open`.
   */
  reconnecting(): void;
  /**
   * Closes once: enters `closing`, runs `shutdown` (its rejection is ignored: closing goes on),
   * then {@link finish}es with `reason`. Later calls, and calls after `finish`, return the
   * first close's promise or a resolved one.
   */
  close(shutdown: () => Promise<void>, reason?: Error): Promise<void>;
  /**
   * Marks the transport `closed` now: emits `closed` (with `reason` when there is one), ends
   * every `events()` stream and resolves `closed()`. Only the first call counts.
   */
  finish(reason?: Error): void;
  /**
   * The broker link dropped: reports `disconnected` (and logs it, with `fields`) unless this
   * outage was already reported. Only while `open`.
   */
  linkDown(fields?: Record<string, unknown>): void;
  /**
   * After the broker link is back: runs `redeclare` until it succeeds, while the transport stays
   * `open` (waiting 100 ms, doubling up to 2 s, between tries; each failure is logged, the first
   * one is also reported as `errored`). Then, if `isUp()` and an outage was reported by
   * {@link linkDown}, reports `reconnected`. A call while one runs joins it.
   */
  recover(redeclare: () => Promise<void>, isUp: () => boolean): Promise<void>;
  /** Reports an event to every `events()` stream (ignored once finished). */
  emit(event: TransportEvent): void;
  /** The `Transport.events()` stream: each call gets its own buffered iterator. */
  events(): AsyncIterable<TransportEvent>;
  /** The `Transport.closed()` promise: resolves with the reason, `undefined` for a plain close. */
  closed(): Promise<Error | undefined>;
  /** "the {name} transport is closed" (or `message`), for operations refused after a close. */
  closedError(
    message?: string,
    options?: { readonly cause?: unknown },
  ): NuropbConnectionClosedError;
}

/**
 * Creates a {@link TransportLifecycle} in state `idle`. `name` is the broker's name in messages
 * ("NATS" → "the NATS transport is closed"); `logger` gets the link's ups and downs.
 * @example
 * ```ts
 * readonly #life = createTransportLifecycle("NATS");
 * get state() { return this.#life.state; }
 * connect() { return this.#life.connect(() => this.#openSocket()); }
 * close() { return this.#life.close(() => this.#drainAndQuit()); }
 * ```
 */
export function createTransportLifecycle(
  name: string,
  logger: Logger = noopLogger,
): TransportLifecycle {
  if (typeof name !== "string" || name === "") {
    throw new TypeError("createTransportLifecycle: name must be a non-empty string");
  }
  return new Lifecycle(name, logger);
}

const ignore = (): void => undefined;

class Lifecycle implements TransportLifecycle {
  #state: LifecycleState = LifecycleState.idle;
  readonly #name: string;
  readonly #log: Logger;
  /** `disconnected` was reported and `reconnected` not yet. */
  #reportedDown = false;
  #recovering: Promise<void> | undefined;
  readonly #channel = createEventChannel<TransportEvent>();
  readonly #closed: Promise<Error | undefined>;
  #resolveClosed!: (reason: Error | undefined) => void;
  #finished = false;
  #connecting: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  get state(): LifecycleState {
    return this.#state;
  }

  constructor(name: string, logger: Logger) {
    this.#name = name;
    this.#log = logger;
    this.#closed = new Promise((resolve) => (this.#resolveClosed = resolve));
  }

  get ending(): boolean {
    return this.#state === LifecycleState.closing || this.#state === LifecycleState.closed;
  }

  connect(attempt: () => Promise<void>): Promise<void> {
    switch (this.#state) {
      case LifecycleState.open:
        return Promise.resolve();
      case LifecycleState.closing:
      case LifecycleState.closed:
        return Promise.reject(this.closedError());
      case LifecycleState.connecting:
        if (this.#connecting !== undefined) return this.#connecting;
        break;
      case LifecycleState.idle:
        break;
    }
    this.#state = LifecycleState.connecting;
    const run = (async () => {
      try {
        await attempt();
      } catch (err) {
        if (this.#state === LifecycleState.connecting) this.#state = LifecycleState.idle;
        throw err;
      }
      if (this.#state === LifecycleState.connecting) this.#state = LifecycleState.open;
      else if (this.#state !== LifecycleState.open) {
        throw this.closedError(`the ${this.#name} transport was closed while connecting`);
      }
    })().finally(() => {
      if (this.#connecting === run) this.#connecting = undefined;
    });
    this.#connecting = run;
    return run;
  }

  connectSettled(): Promise<void> {
    return this.#connecting === undefined ? Promise.resolve() : this.#connecting.catch(ignore);
  }

  opened(): void {
    if (this.#state === LifecycleState.connecting) this.#state = LifecycleState.open;
  }

  reconnecting(): void {
    if (this.#state === LifecycleState.open) this.#state = LifecycleState.connecting;
  }

  close(shutdown: () => Promise<void>, reason?: Error): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    if (this.#finished) return Promise.resolve();
    this.#state = LifecycleState.closing;
    this.#closing = (async () => {
      try {
        await shutdown();
      } catch {
        // Closing goes on whatever the broker said: the caller asked for the transport to end.
      }
      this.finish(reason);
    })();
    return this.#closing;
  }

  finish(reason?: Error): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#state = LifecycleState.closed;
    this.#channel.emit(
      reason === undefined ? { type: "closed" } : { type: "closed", error: reason },
    );
    this.#channel.end();
    this.#resolveClosed(reason);
  }

  linkDown(fields: Record<string, unknown> = {}): void {
    if (this.#state !== LifecycleState.open || this.#reportedDown) return;
    this.#reportedDown = true;
    this.#log.warn("disconnected", fields);
    this.#channel.emit({ type: "disconnected" });
  }

  recover(redeclare: () => Promise<void>, isUp: () => boolean): Promise<void> {
    this.#recovering ??= (async () => {
      for (let attempt = 0; this.#state === LifecycleState.open; attempt++) {
        try {
          await redeclare();
          break;
        } catch (err) {
          this.#log.warn("re-declaring after reconnect failed; retrying", { attempt, error: err });
          if (attempt === 0) {
            this.#channel.emit({
              type: "errored",
              error: new NuropbTransportError("re-declaring after reconnect failed", {
                cause: err,
              }),
            });
          }
          await new Promise((r) => setTimeout(r, Math.min(2_000, 100 * 2 ** attempt)));
        }
      }
      if (this.#state !== LifecycleState.open || !isUp() || !this.#reportedDown) return;
      this.#reportedDown = false;
      this.#log.info("reconnected");
      this.#channel.emit({ type: "reconnected" });
    })().finally(() => (this.#recovering = undefined));
    return this.#recovering;
  }

  emit(event: TransportEvent): void {
    this.#channel.emit(event);
  }

  events(): AsyncIterable<TransportEvent> {
    return this.#channel.iterate();
  }

  closed(): Promise<Error | undefined> {
    return this.#closed;
  }

  closedError(
    message?: string,
    options: { readonly cause?: unknown } = {},
  ): NuropbConnectionClosedError {
    return new NuropbConnectionClosedError(
      message ?? `the ${this.#name} transport is closed`,
      options,
    );
  }
}
