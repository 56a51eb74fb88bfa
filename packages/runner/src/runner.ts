import { createDeferred, type Logger } from "@nuropb/protocol";
import { serveHealth, type HealthServer, type MeshClient, type MeshService } from "@nuropb/core";
import { normaliseRunnerOptions, type RunnerConfig, type RunnerOptions } from "./options.ts";
import { ParticipantSlot } from "./participant-slot.ts";

/** Process exit codes a runner ends with; {@link RunnerExit.code}. */
export const RunnerExitCode = {
  /** Stopped and drained: every handler finished. */
  stopped: 0,
  /** Something failed to start (a participant could not connect, the health port was taken). */
  startFailed: 1,
  /** Stopped, but the drain bound passed with handlers still running (their messages requeued). */
  drainTimedOut: 3,
  /** A transport closed for good and the restarts ran out (or restarts are off). */
  restartsExhausted: 4,
  /** A second signal cut the drain short. */
  forced: 130,
} as const;
/** One of {@link RunnerExitCode}. */
export type RunnerExitCode = (typeof RunnerExitCode)[keyof typeof RunnerExitCode];

/** How a runner ended. */
export interface RunnerExit {
  readonly code: RunnerExitCode;
  readonly reason: "stopped" | "start-failed" | "drain-timed-out" | "restarts-exhausted" | "forced";
  /** The failure behind `start-failed` and `restarts-exhausted`. */
  readonly error?: Error;
}

/** A runner's state. */
export type RunnerState = "idle" | "starting" | "running" | "stopping" | "stopped";

/** Services and clients run as one unit; see {@link createRunner}. */
export interface Runner extends AsyncDisposable {
  readonly state: RunnerState;
  /** The current services (a restarted one is a new object), in the order of `options.services`. */
  readonly services: readonly MeshService[];
  /** The current clients, in the order of `options.clients`. */
  readonly clients: readonly MeshClient[];
  /** The health server's port, when `options.health` was given and the runner started. */
  readonly healthPort: number | undefined;
  /**
   * Connects the services (in order), then the clients, then serves health. On failure everything
   * started is let go of and the runner ends with {@link RunnerExitCode.startFailed}.
   * @throws what failed (a `NuropbTransportError` from a connect, say); `TypeError` if not idle.
   */
  start(): Promise<void>;
  /**
   * Drains and stops: services stop taking deliveries and their handlers finish (bounded by
   * `drainTimeoutMs`), then the clients disconnect and the transports close. Idempotent;
   * `force: true` closes the transports at once (a drain under way is cut short).
   */
  stop(options?: { readonly force?: boolean }): Promise<RunnerExit>;
  /** Settles once, when the runner has stopped, with how it ended. Never rejects. */
  done(): Promise<RunnerExit>;
}

/**
 * Creates a runner for services and clients. Construction does no I/O; call `start()`, or use
 * {@link runUntilSignalled} in a process's main module.
 * @throws TypeError naming the bad option.
 * @example
 * const runner = createRunner({
 *   transport: () => createAmqpTransport({ url }),
 *   services: [({ transport }) => createService({ transport, name: "orders", instance })],
 *   health: { port: 8080 },
 * });
 * await runner.start();
 * process.once("SIGTERM", () => void runner.stop());
 * process.exitCode = (await runner.done()).code;
 */
export function createRunner(options: RunnerOptions): Runner {
  return new ServiceRunner(normaliseRunnerOptions(options));
}

class ServiceRunner implements Runner {
  readonly #config: RunnerConfig;
  readonly #log: Logger;
  readonly #services: ParticipantSlot[];
  readonly #clients: ParticipantSlot[];
  readonly #abort = new AbortController();
  readonly #done = createDeferred<RunnerExit>();
  #state: RunnerState = "idle";
  #health: HealthServer | undefined;
  #stopping: Promise<RunnerExit> | undefined;
  /** The start under way (or done): a stop waits for it, then drains what it connected. */
  #starting: Promise<void> | undefined;
  #forced = false;
  /** Why the runner stops when it was not asked to. */
  #failure: RunnerExit | undefined;

  constructor(config: RunnerConfig) {
    this.#config = config;
    this.#log = config.logger;
    const slot = (
      kind: "service" | "client",
      make: (typeof config.services)[number] | (typeof config.clients)[number],
      index: number,
    ): ParticipantSlot =>
      new ParticipantSlot({
        kind,
        index,
        config,
        make,
        running: () => this.#state === "running" || this.#state === "starting",
        operational: () => this.#state === "running",
        signal: this.#abort.signal,
        gaveUp: (error) => {
          this.#failure ??= {
            code: RunnerExitCode.restartsExhausted,
            reason: "restarts-exhausted",
            error,
          };
          void this.stop();
        },
      });
    this.#services = config.services.map((make, i) => slot("service", make, i));
    this.#clients = config.clients.map((make, i) => slot("client", make, i));
  }

  get state(): RunnerState {
    return this.#state;
  }

  get services(): readonly MeshService[] {
    return this.#services.flatMap((s) =>
      s.participant === undefined ? [] : [s.participant as MeshService],
    );
  }

  get clients(): readonly MeshClient[] {
    return this.#clients.flatMap((s) => (s.participant === undefined ? [] : [s.participant]));
  }

  get healthPort(): number | undefined {
    return this.#health?.port;
  }

  done(): Promise<RunnerExit> {
    return this.#done.promise;
  }

  async start(): Promise<void> {
    if (this.#state !== "idle") throw new TypeError(`runner.start(): the runner is ${this.#state}`);
    this.#state = "starting";
    this.#log.info("starting", { services: this.#services.length, clients: this.#clients.length });
    this.#starting = this.#connectAll();
    try {
      await this.#starting;
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.#log.error("start failed", { error: error.message });
      this.#failure = { code: RunnerExitCode.startFailed, reason: "start-failed", error };
      await this.stop();
      throw err;
    }
    // stop() may have begun while starting (a signal): it drains what is there.
    if (this.#state !== "starting") return;
    this.#state = "running";
    this.#log.info("running");
    for (const slot of [...this.#services, ...this.#clients]) slot.markOperational();
    this.#ready();
  }

  async #connectAll(): Promise<void> {
    // Services first, one at a time: a later one may call an earlier one as it starts.
    for (const slot of [...this.#services, ...this.#clients]) {
      if (this.#abort.signal.aborted) return;
      await slot.start();
    }
    const health = this.#config.health;
    if (health !== undefined && !this.#abort.signal.aborted) {
      this.#health = await serveHealth({
        participants: [...this.#services, ...this.#clients],
        port: health.port,
        ...(health.host !== undefined ? { host: health.host } : {}),
      });
      this.#log.info("serving health", { port: this.#health.port });
    }
  }

  #ready(): void {
    const onReady = this.#config.onReady;
    if (onReady === undefined) return;
    Promise.resolve()
      .then(() =>
        onReady({
          services: this.services,
          clients: this.clients,
          signal: this.#abort.signal,
          logger: this.#log,
        }),
      )
      .catch((err: unknown) => this.#log.error("onReady failed", { error: String(err) }));
  }

  stop(options: { readonly force?: boolean } = {}): Promise<RunnerExit> {
    if (options.force === true && !this.#forced && this.#state !== "stopped") {
      this.#forced = true;
      this.#log.warn("forced stop: closing the transports now");
      void Promise.all([...this.#services, ...this.#clients].map((s) => s.close()));
    }
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<RunnerExit> {
    this.#state = "stopping";
    this.#abort.abort();
    await this.#starting?.catch(() => undefined);
    const deadline = Date.now() + this.#config.drainTimeoutMs;
    this.#log.info("draining", { drainTimeoutMs: this.#config.drainTimeoutMs });
    // Services stop taking deliveries and finish their handlers; their calls out still answer.
    const serviceOutcomes = await Promise.all(this.#services.map((s) => s.drain(deadline)));
    const clientOutcomes = await Promise.all(this.#clients.map((s) => s.drain(deadline)));
    await Promise.all([...this.#services, ...this.#clients].map((s) => s.close()));
    await this.#health?.close();
    const timedOut = [...serviceOutcomes, ...clientOutcomes].includes("timed-out");
    const exit: RunnerExit =
      this.#failure ??
      (this.#forced
        ? { code: RunnerExitCode.forced, reason: "forced" }
        : timedOut
          ? { code: RunnerExitCode.drainTimedOut, reason: "drain-timed-out" }
          : { code: RunnerExitCode.stopped, reason: "stopped" });
    this.#state = "stopped";
    this.#log.info("stopped", { reason: exit.reason, code: exit.code });
    this.#done.resolve(exit);
    return exit;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
