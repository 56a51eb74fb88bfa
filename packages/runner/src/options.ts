import { isLogger, noopLogger, timerOption, type Logger, type Transport } from "@nuropb/protocol";
import {
  MAX_STATUS_HEARTBEAT_MS,
  type LeaderElection,
  type MeshClient,
  type MeshService,
} from "@nuropb/core";

/** What a participant factory gets from the runner. */
export interface ParticipantContext {
  /** A fresh transport, made for this participant by {@link RunnerOptions.transport}. */
  readonly transport: Transport;
  /** A fresh instance id: pass it to `createService({ instanceId })`, it is the election's candidate id. */
  readonly instanceId: string;
  /**
   * The election for `service` from {@link RunnerOptions.election} (undefined without one), with
   * `instanceId` as candidate: pass it to `createService({ election })`. The runner closes it.
   */
  readonly elect: (service: string) => LeaderElection | undefined;
  /** The runner's logger. */
  readonly logger: Logger;
}

/** What {@link RunnerOptions.election} gets to make a service instance's election. */
export interface ElectionContext {
  /** The service name: what the lease is for. */
  readonly service: string;
  /** The candidate: the instance id the factory got. */
  readonly candidateId: string;
  /** The participant's transport. */
  readonly transport: Transport;
  readonly logger: Logger;
}

/** Makes one service; called again (with a new transport) when the service is restarted. */
export type ServiceFactory = (context: ParticipantContext) => MeshService;
/** Makes one client; called again (with a new transport) when the client is restarted. */
export type ClientFactory = (context: ParticipantContext) => MeshClient;

/** What {@link RunnerOptions.onReady} gets once every participant is connected. */
export interface ReadyContext {
  /** The connected services, in the order of `options.services`. */
  readonly services: readonly MeshService[];
  /** The connected clients, in the order of `options.clients`. */
  readonly clients: readonly MeshClient[];
  /** Aborted when the runner starts stopping. */
  readonly signal: AbortSignal;
  readonly logger: Logger;
}

/**
 * When a participant's transport closes for good (it gave up reconnecting), the runner makes a new
 * transport and participant, waiting `initialDelayMs`, then twice as long each attempt, at most
 * `maxDelayMs`. An attempt that connects ends the series (the count starts again at the next
 * closure). After `maxAttempts` failed attempts the runner stops with
 * {@link RunnerExitCode.restartsExhausted}.
 */
export interface RestartPolicy {
  /** Connect attempts per closure; 0: never restart, stop at once. @defaultValue 5 */
  readonly maxAttempts?: number;
  /** Wait before the first attempt, in ms. @defaultValue 500 */
  readonly initialDelayMs?: number;
  /** Longest wait between attempts, in ms. @defaultValue 30000 */
  readonly maxDelayMs?: number;
}

/** Options of {@link createRunner}. */
export interface RunnerOptions {
  /**
   * Makes a transport. Each participant gets its own, made (again) at each start, and the runner
   * closes the transports it made.
   */
  readonly transport: () => Transport;
  /** The services, started (connected) first, in order. @defaultValue [] */
  readonly services?: readonly ServiceFactory[];
  /** The clients, started once every service is connected. @defaultValue [] */
  readonly clients?: readonly ClientFactory[];
  /** Called once when everything is connected; a rejection is logged. */
  readonly onReady?: (context: ReadyContext) => void | Promise<void>;
  /**
   * How long `stop()` lets handlers in flight finish, in ms, for all participants together.
   * Past it the transports close and unsettled messages go back to their queues.
   * @defaultValue 10000
   */
  readonly drainTimeoutMs?: number;
  /** Restarts after a transport closed for good; `false`: stop instead. @defaultValue {} (the defaults) */
  readonly restart?: RestartPolicy | false;
  /**
   * Serve `/healthz` (liveness: no participant given up on) and `/readyz` (readiness: every
   * participant connected, the runner not stopping) on this port (0: a free one).
   * @defaultValue none
   */
  readonly health?: { readonly port: number; readonly host?: string };
  /**
   * Makes the leader election of a service instance (`createLeaseElection` of `@nuropb/core` on a
   * transport's lease store), when its factory asks (`elect(name)`). The runner closes it after
   * the service disconnects. @defaultValue none (`elect` gives undefined)
   */
  readonly election?: (context: ElectionContext) => LeaderElection;
  /**
   * Status reports: each participant publishes its state (`starting`, `operational`, `leader`,
   * `stopping`, `stopped`) as an event on topic `nuropb.status` at each change and every
   * `heartbeatMs`, so a watcher can drop an instance that went silent. `false`: none. At most
   * `MAX_STATUS_HEARTBEAT_MS` (5 minutes): watchers take no longer heartbeat from a report.
   * @defaultValue { heartbeatMs: 5000 }
   */
  readonly status?: { readonly heartbeatMs?: number } | false;
  /** Lifecycle at info, restarts at warn. @defaultValue noopLogger */
  readonly logger?: Logger;
}

/** {@link RunnerOptions} checked, with defaults. */
export interface RunnerConfig {
  readonly transport: () => Transport;
  readonly services: readonly ServiceFactory[];
  readonly clients: readonly ClientFactory[];
  readonly onReady: RunnerOptions["onReady"];
  readonly election: RunnerOptions["election"];
  /** Undefined: no status reports. */
  readonly status: { readonly heartbeatMs: number } | undefined;
  readonly drainTimeoutMs: number;
  readonly restart: Required<RestartPolicy>;
  readonly health: RunnerOptions["health"];
  readonly logger: Logger;
}

const OWNER = "createRunner";

/**
 * Checks the options of {@link createRunner}.
 * @throws TypeError naming the bad option.
 */
export function normaliseRunnerOptions(options: RunnerOptions): RunnerConfig {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`${OWNER}: options must be an object`);
  }
  if (typeof options.transport !== "function") {
    throw new TypeError(`${OWNER}: options.transport must be a function that makes a transport`);
  }
  const services = factories(options.services, "services");
  const clients = factories(options.clients, "clients");
  if (services.length + clients.length === 0) {
    throw new TypeError(`${OWNER}: give at least one service or client to run`);
  }
  if (options.election !== undefined && typeof options.election !== "function") {
    throw new TypeError(`${OWNER}: options.election must be a function that makes an election`);
  }
  if (options.onReady !== undefined && typeof options.onReady !== "function") {
    throw new TypeError(`${OWNER}: options.onReady must be a function`);
  }
  const logger = options.logger ?? noopLogger;
  if (!isLogger(logger)) {
    throw new TypeError(`${OWNER}: options.logger must implement the Logger of @nuropb/protocol`);
  }
  const health = options.health;
  if (health !== undefined && (typeof health !== "object" || health === null)) {
    throw new TypeError(`${OWNER}: options.health must be { port, host? }`);
  }
  return {
    transport: options.transport,
    services,
    clients,
    onReady: options.onReady,
    election: options.election,
    status: statusOption(options.status),
    drainTimeoutMs: timerOption(OWNER, "drainTimeoutMs", options.drainTimeoutMs, 10_000),
    restart: restartPolicy(options.restart),
    health,
    logger: logger.child({ component: "runner" }),
  };
}

function statusOption(
  status: RunnerOptions["status"],
): { readonly heartbeatMs: number } | undefined {
  if (status === false) return undefined;
  if (status !== undefined && (typeof status !== "object" || status === null)) {
    throw new TypeError(`${OWNER}: options.status must be { heartbeatMs? } or false`);
  }
  const heartbeatMs = timerOption(OWNER, "status.heartbeatMs", status?.heartbeatMs, 5_000);
  if (heartbeatMs > MAX_STATUS_HEARTBEAT_MS) {
    throw new TypeError(
      `${OWNER}: 'status.heartbeatMs' must be at most ${String(MAX_STATUS_HEARTBEAT_MS)} ms (what watchers take), got ${String(heartbeatMs)}`,
    );
  }
  return { heartbeatMs };
}

function factories<T>(value: readonly T[] | undefined, name: string): readonly T[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((f) => typeof f === "function")) {
    throw new TypeError(`${OWNER}: options.${name} must be an array of factory functions`);
  }
  return [...(value as T[])];
}

function restartPolicy(policy: RestartPolicy | false | undefined): Required<RestartPolicy> {
  if (policy === false) return { maxAttempts: 0, initialDelayMs: 1, maxDelayMs: 1 };
  if (policy !== undefined && (typeof policy !== "object" || policy === null)) {
    throw new TypeError(`${OWNER}: options.restart must be an object or false`);
  }
  const p = policy ?? {};
  const maxAttempts = p.maxAttempts ?? 5;
  if (!Number.isSafeInteger(maxAttempts) || maxAttempts < 0) {
    throw new TypeError(`${OWNER}: 'restart.maxAttempts' must be an integer >= 0`);
  }
  const initialDelayMs = timerOption(OWNER, "restart.initialDelayMs", p.initialDelayMs, 500);
  const maxDelayMs = timerOption(OWNER, "restart.maxDelayMs", p.maxDelayMs, 30_000);
  if (maxDelayMs < initialDelayMs) {
    throw new TypeError(`${OWNER}: 'restart.maxDelayMs' must be >= 'restart.initialDelayMs'`);
  }
  return { maxAttempts, initialDelayMs, maxDelayMs };
}

/** The wait before restart attempt `attempt` (1-based): doubling from the initial delay, capped. */
export function restartDelayMs(policy: Required<RestartPolicy>, attempt: number): number {
  return Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** Math.min(attempt - 1, 30));
}
