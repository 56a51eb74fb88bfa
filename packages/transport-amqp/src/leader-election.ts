import { randomBytes } from "node:crypto";
import {
  createEventChannel,
  isLogger,
  noopLogger,
  timerOption,
  type Logger,
} from "@nuropb/protocol";
import type { Channel, ChannelModel, ConsumeMessage } from "amqplib";
import { openConnection } from "./connection.ts";
import {
  DEFAULT_HEARTBEAT_SEC,
  describeTarget,
  resolveTarget,
  type AmqpConnectionSettings,
  type AmqpTlsOptions,
  type ResolvedTarget,
} from "./options.ts";

const OWNER = "createAmqpLeaderElection";

/**
 * A change of leadership. The same shape as `LeadershipEvent` of `@nuropb/core` (a transport
 * does not import core; the election is handed to `createService({ election })` as it is).
 */
export type AmqpLeadershipEvent =
  { readonly type: "elected" } | { readonly type: "deposed"; readonly error?: Error };

/**
 * Leader election among a service's instances on RabbitMQ; structurally a `LeaderElection` of
 * `@nuropb/core`.
 */
export interface AmqpLeaderElection extends AsyncDisposable {
  readonly isLeader: boolean;
  readonly candidateId: string;
  /** The single-active-consumer queue the candidates consume. */
  readonly queue: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  close(): Promise<void>;
  events(): AsyncIterable<AmqpLeadershipEvent>;
}

/** Options of {@link createAmqpLeaderElection}. */
export interface AmqpLeaderElectionOptions {
  /** The mesh's broker: an `amqp(s)://` URL (its vhost is the mesh) or connection settings. */
  readonly url: string | AmqpConnectionSettings;
  readonly tls?: AmqpTlsOptions;
  /** The service the candidates are instances of; the queue is `nuropb-{name}-leader`. */
  readonly name: string;
  /** This candidate's id, unique among the candidates (an instance id). */
  readonly candidateId: string;
  /** How often each candidate sends a probe through the queue, in ms. @defaultValue 1000 */
  readonly probeMs?: number;
  /**
   * How long a leader keeps leading without a probe of its own coming back, in ms; more than
   * `2 × probeMs` and at most `heartbeatSec × 1000`. @defaultValue heartbeatSec × 1000
   */
  readonly leaseMs?: number;
  /** The AMQP heartbeat of the election's connection. @defaultValue the URL's, else 10 */
  readonly heartbeatSec?: number;
  /** @defaultValue 10000 */
  readonly connectTimeoutMs?: number;
  readonly logger?: Logger;
}

/** Arguments every candidate declares the queue with (they must agree, so nothing per candidate). */
const QUEUE_ARGUMENTS = {
  "x-single-active-consumer": true,
  // Deleted a minute after its last consumer left; not auto-delete, which would race a
  // candidate declaring it again while the last one leaves.
  "x-expires": 60_000,
} as const;

/**
 * Leader election on a RabbitMQ single-active-consumer queue, without etcd and without a lease
 * store: every candidate consumes `nuropb-{name}-leader` (declared with
 * `x-single-active-consumer`), RabbitMQ delivers to one consumer only, the active one, and
 * activates the next in line when the active one's channel closes.
 *
 * AMQP 0-9-1 does not tell a consumer that it became active, so each candidate sends a probe
 * (its token and the time it sent it) through the queue every `probeMs`; the probes of all
 * candidates reach the active consumer, and a candidate leads while its *own* probes come back.
 * (The management API's `single_active_consumer_tag` would also say it, but only as fresh as its
 * statistics interval, 5 s by default, and it needs the management plugin.)
 *
 * Bounds:
 * - Takeover: once the broker has dropped the leader's channel, the next consumer leads within
 *   `probeMs` plus a round trip. The broker drops it at once when the leader's connection closes
 *   or is reset (process killed, socket cut); on a silent network, after its heartbeat timeout,
 *   two to three heartbeat intervals (5.8 s measured with `heartbeatSec: 2`).
 * - Two leaders: a leader steps down at once when its connection closes, and on its own when no
 *   probe came back for 95 % of `leaseMs` counted from when the last returning probe was sent.
 *   Since `leaseMs ≤ heartbeatSec × 1000` and the broker waits at least one heartbeat interval of
 *   silence before dropping a connection, a leader cut off silently steps down before the broker
 *   activates another; two lead at once only when the leader's timers run late by more than
 *   `leaseMs / 20` (a blocked event loop) or the broker's heartbeat is set shorter than ours.
 *
 * A lost connection is opened again every `probeMs`; the candidate rejoins at the end of the line.
 * @throws TypeError naming the bad option; a URL's credentials are never echoed.
 * @example
 * const election = createAmqpLeaderElection({ url, name: "orders", candidateId: instanceId });
 * const service = createService({ transport, name: "orders", instance, election });
 */
export function createAmqpLeaderElection(options: AmqpLeaderElectionOptions): AmqpLeaderElection {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`${OWNER}: options must be an object`);
  }
  const target = resolveTarget(options.url, options.tls);
  const { name, candidateId } = options;
  if (typeof name !== "string" || name === "") {
    throw new TypeError(`${OWNER}: options.name must be a non-empty string`);
  }
  if (typeof candidateId !== "string" || candidateId === "") {
    throw new TypeError(`${OWNER}: options.candidateId must be a non-empty string`);
  }
  const heartbeatSec = options.heartbeatSec ?? target.heartbeatSec ?? DEFAULT_HEARTBEAT_SEC;
  if (!Number.isInteger(heartbeatSec) || heartbeatSec < 1 || heartbeatSec > 3600) {
    throw new TypeError(
      `${OWNER}: 'heartbeatSec' must be an integer from 1 to 3600, got ${String(heartbeatSec)}`,
    );
  }
  const probeMs = timerOption(OWNER, "probeMs", options.probeMs, 1_000);
  const leaseMs = timerOption(OWNER, "leaseMs", options.leaseMs, heartbeatSec * 1_000, 30);
  if (probeMs * 2 >= leaseMs) {
    throw new TypeError(`${OWNER}: 'probeMs' must be less than half of 'leaseMs'`);
  }
  if (leaseMs > heartbeatSec * 1_000) {
    throw new TypeError(`${OWNER}: 'leaseMs' must be at most 'heartbeatSec' × 1000`);
  }
  const connectTimeoutMs = timerOption(OWNER, "connectTimeoutMs", options.connectTimeoutMs, 10_000);
  const logger = options.logger ?? noopLogger;
  if (!isLogger(logger)) throw new TypeError(`${OWNER}: options.logger must be a Logger`);
  const queue = `nuropb-${name}-leader`;
  return new SingleActiveConsumerElection({
    target,
    tls: options.tls,
    queue,
    candidateId,
    probeMs,
    leaseMs,
    heartbeatSec,
    connectTimeoutMs,
    log: logger.child({ component: "leader-election", queue, candidateId }),
  });
}

interface Settings {
  readonly target: ResolvedTarget;
  readonly tls: AmqpTlsOptions | undefined;
  readonly queue: string;
  readonly candidateId: string;
  readonly probeMs: number;
  readonly leaseMs: number;
  readonly heartbeatSec: number;
  readonly connectTimeoutMs: number;
  readonly log: Logger;
}

/** One connection's worth of state; a lost one is replaced, never reused. */
interface Link {
  readonly model: ChannelModel;
  readonly channel: Channel;
  lost: boolean;
}

class SingleActiveConsumerElection implements AmqpLeaderElection {
  readonly candidateId: string;
  readonly queue: string;
  readonly #s: Settings;
  /** Tells our probes from the other candidates' (and from an earlier election's). */
  readonly #token = randomBytes(12).toString("hex");
  readonly #channel = createEventChannel<AmqpLeadershipEvent>();
  #leader = false;
  #running = false;
  #closed = false;
  #link: Link | undefined;
  #connecting: Promise<void> | undefined;
  #probeTimer: ReturnType<typeof setInterval> | undefined;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #fence: ReturnType<typeof setTimeout> | undefined;
  #failing = false;
  /** Resolves start() early when the first probe comes back. */
  #firstProbe: (() => void) | undefined;

  constructor(s: Settings) {
    this.#s = s;
    this.candidateId = s.candidateId;
    this.queue = s.queue;
  }

  get isLeader(): boolean {
    return this.#leader;
  }

  events(): AsyncIterable<AmqpLeadershipEvent> {
    return this.#channel.iterate();
  }

  /** Connects and consumes; resolves once a probe came back (leader) or `probeMs` passed without. */
  async start(): Promise<void> {
    if (this.#closed) throw new TypeError("this election is closed");
    if (this.#running) return;
    this.#running = true;
    this.#s.log.info("campaigning", {
      broker: describeTarget(this.#s.target),
      probeMs: this.#s.probeMs,
      leaseMs: this.#s.leaseMs,
    });
    this.#probeTimer = setInterval(() => this.#probe(), this.#s.probeMs);
    await this.#connect();
    if (this.#link === undefined || this.#leader) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, this.#s.probeMs);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#firstProbe = done;
    });
    this.#firstProbe = undefined;
  }

  /** Resigns: steps down, then closes the connection, so that the broker activates the next. */
  async stop(): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    clearInterval(this.#probeTimer);
    clearTimeout(this.#retry);
    this.#firstProbe?.();
    await this.#connecting;
    this.#depose(undefined);
    const link = this.#link;
    this.#link = undefined;
    if (link !== undefined) {
      link.lost = true;
      await link.model.close().catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await this.stop();
    this.#closed = true;
    this.#channel.end();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #connect(): Promise<void> {
    this.#connecting ??= this.#open().finally(() => (this.#connecting = undefined));
    return this.#connecting;
  }

  async #open(): Promise<void> {
    let model: ChannelModel | undefined;
    try {
      model = await openConnection({
        target: this.#s.target,
        tls: this.#s.tls,
        heartbeatSec: this.#s.heartbeatSec,
        timeoutMs: this.#s.connectTimeoutMs,
        connectionName: `nuropb leader election ${this.#s.queue} ${this.candidateId}`,
        clientProperties: {},
      });
      const channel = await model.createChannel();
      const link: Link = { model, channel, lost: false };
      const lose = (err?: Error): void => this.#lose(link, err);
      model.on("error", lose);
      model.on("close", lose);
      channel.on("error", lose);
      channel.on("close", lose);
      await channel.assertQueue(this.#s.queue, {
        durable: false,
        autoDelete: false,
        exclusive: false,
        arguments: QUEUE_ARGUMENTS,
      });
      await channel.consume(this.#s.queue, (msg) => this.#onMessage(link, msg), { noAck: true });
      if (!this.#running) {
        await model.close().catch(() => undefined);
        return;
      }
      // Lost while consume() was answered (a close in the same read as its ConsumeOk): #lose
      // has already scheduled the reconnect; adopting the dead link would stop campaigning.
      if (link.lost) return;
      this.#link = link;
      if (this.#failing) this.#s.log.info("connected again");
      this.#failing = false;
      this.#probe();
    } catch (err) {
      await model?.close().catch(() => undefined);
      if (!this.#failing) {
        this.#s.log.warn("could not join the election; retrying", { error: String(err) });
      }
      this.#failing = true;
      this.#scheduleRetry();
    }
  }

  #lose(link: Link, err: Error | undefined): void {
    if (link.lost) return;
    link.lost = true;
    if (this.#link === link) this.#link = undefined;
    link.model.close().catch(() => undefined);
    this.#depose(new Error(`the election's connection was lost${err ? `: ${err.message}` : ""}`));
    if (!this.#failing) {
      this.#s.log.warn("election connection lost; reconnecting", {
        error: err === undefined ? "closed" : err.message,
      });
    }
    this.#failing = true;
    this.#scheduleRetry();
  }

  #scheduleRetry(): void {
    if (!this.#running) return;
    clearTimeout(this.#retry);
    this.#retry = setTimeout(() => {
      if (this.#running && (this.#link === undefined || this.#link.lost)) void this.#connect();
    }, this.#s.probeMs);
  }

  /** Sends one probe through the queue; it reaches whichever candidate the broker made active. */
  #probe(): void {
    const link = this.#link;
    if (link === undefined || link.lost) return;
    const body = Buffer.from(JSON.stringify({ t: this.#token, at: Date.now() }));
    try {
      // Probes older than the lease are worth nothing: the broker drops them.
      link.channel.sendToQueue(this.#s.queue, body, { expiration: String(this.#s.leaseMs) });
    } catch (err) {
      this.#lose(link, err instanceof Error ? err : new Error(String(err)));
    }
  }

  #onMessage(link: Link, msg: ConsumeMessage | null): void {
    if (msg === null) {
      // The broker cancelled the consumer (the queue was deleted): join again.
      this.#lose(link, new Error("the broker cancelled the consumer"));
      return;
    }
    let probe: { t?: unknown; at?: unknown };
    try {
      probe = JSON.parse(msg.content.toString("utf8")) as { t?: unknown; at?: unknown };
    } catch {
      return;
    }
    if (probe.t !== this.#token || typeof probe.at !== "number") return;
    this.#firstProbe?.();
    if (!this.#running || link.lost) return;
    const validUntil = probe.at + this.#s.leaseMs - Math.ceil(this.#s.leaseMs / 20);
    if (Date.now() < validUntil) this.#hold(validUntil);
  }

  #hold(validUntil: number): void {
    clearTimeout(this.#fence);
    this.#fence = setTimeout(
      () => this.#depose(new Error("no probe came back within the lease")),
      validUntil - Date.now(),
    );
    if (this.#leader) return;
    this.#leader = true;
    this.#s.log.info("elected");
    this.#channel.emit({ type: "elected" });
  }

  #depose(error: Error | undefined): void {
    clearTimeout(this.#fence);
    this.#fence = undefined;
    if (!this.#leader) return;
    this.#leader = false;
    if (error === undefined) this.#s.log.info("resigned");
    else this.#s.log.warn("deposed", { error: error.message });
    this.#channel.emit(error === undefined ? { type: "deposed" } : { type: "deposed", error });
  }
}
