import { Redis, type RedisOptions } from "ioredis";
import {
  assertTopicPattern,
  createTransportLifecycle,
  LifecycleState,
  newId,
  NuropbMessageError,
  assertFrameTtl,
  NuropbNotDeliveredError,
  NuropbTransportError,
  type DeliveryHandler,
  type Destination,
  type Frame,
  type Listener,
  type ResponseHandler,
  type ResponseQueueSpec,
  type ServiceQueueSpec,
  type Transport,
  type TransportCapabilities,
  type TransportEvent,
  type TransportEventLog,
  type TransportLifecycle,
  type TransportScheduling,
} from "@nuropb/protocol";
import { isKeyName, meshKeys, type MeshKeys } from "./keys.ts";
import {
  resolveRedisOptions,
  type RedisTransportOptions,
  type ResolvedRedisOptions,
} from "./options.ts";
import { ResponseConsumer } from "./response-consumer.ts";
import { HOLD_LEASE, REGISTER_SERVICE, runScript } from "./scripts.ts";
import { SendBatcher, type SendErrors } from "./send-batcher.ts";
import { RedisEventLog } from "./event-log.ts";
import { createRedisScheduling, type RedisScheduling } from "./scheduling.ts";
import { AckBatcher, ServiceConsumer, TransientKeys } from "./service-consumer.ts";
import { SERVICE_GROUP } from "./keys.ts";

interface ServiceRegistration {
  readonly service: string;
  readonly rpcNames: readonly string[];
  readonly eventBindings: readonly string[];
  /** A transient queue's keys (expiring, removed at stop); undefined for a durable one. */
  readonly transient?: TransientKeys;
}

/** Oldest Redis with every command used here (XAUTOCLAIM: 6.2, BLMPOP: 7.0). */
const MIN_REDIS_MAJOR = 7;

class RedisTransport implements Transport {
  readonly kind = "redis";
  readonly mesh: string;
  readonly #opts: ResolvedRedisOptions;
  readonly capabilities: TransportCapabilities;
  readonly #keys: MeshKeys;
  readonly #instance = newId();
  #consumerSeq = 0;
  readonly #life: TransportLifecycle;
  #redis: Redis | undefined;
  #acks: AckBatcher | undefined;
  #sends: SendBatcher | undefined;
  #linkUp = false;
  /** Server clock minus ours, in ms (for ttl checks against the ids Redis gives entries). */
  #clockOffsetMs = 0;
  readonly #services = new Map<ServiceConsumer, ServiceRegistration>();
  readonly #responses = new Map<string, ResponseConsumer>();
  readonly #scheduler: RedisScheduling;
  readonly scheduling: TransportScheduling;
  readonly eventLog: TransportEventLog;

  constructor(opts: ResolvedRedisOptions) {
    this.#opts = opts;
    this.capabilities = Object.freeze({
      notDelivered: true,
      redelivery: true,
      deadLetter: true,
      messageTtl: true,
      maxFrameBytes: opts.maxFrameBytes,
      // Only nuropb-ts reads a Redis mesh: no Python NuroPb runs on Redis.
      slimBodies: true,
    });
    this.#life = createTransportLifecycle("Redis", opts.logger);
    this.mesh = opts.mesh;
    this.#keys = meshKeys(opts.mesh);
    this.#scheduler = createRedisScheduling({
      prefix: this.#keys.prefix,
      logger: opts.logger,
      maxFrameBytes: opts.maxFrameBytes,
      redis: () => this.#requireOpen().redis,
      translate: (err, what) => this.#translate(err, what),
    });
    this.scheduling = this.#scheduler.scheduling;
    this.eventLog = new RedisEventLog({
      keys: this.#keys,
      logger: opts.logger,
      maxFrameBytes: opts.maxFrameBytes,
      open: () => this.#requireOpen(),
      newConnection: (name) => this.#newConnection(name, false),
      translate: (err, what) => this.#translate(err, what),
      closed: () => this.#life.closed(),
    });
  }

  get state(): LifecycleState {
    return this.#life.state;
  }

  #redisOptions(): RedisOptions {
    return {
      ...this.#opts.redisOptions,
      lazyConnect: true,
      connectTimeout: this.#opts.connectTimeoutMs,
      maxRetriesPerRequest: null,
      enableOfflineQueue: true,
      autoResendUnfulfilledCommands: true,
      retryStrategy: (times: number) => Math.min(1_000, 50 * 2 ** Math.min(times, 5)),
    };
  }

  /**
   * A connection. The shared command connection pipelines automatically and bounds every
   * command by `sendTimeoutMs` (including time spent waiting for a reconnect); blocking
   * connections do neither.
   */
  #newConnection(name: string, shared: boolean): Redis {
    const options: RedisOptions = {
      ...this.#redisOptions(),
      connectionName: `nuropb-${this.mesh}-${name}`,
      enableAutoPipelining: false,
      ...(shared ? { commandTimeout: this.#opts.sendTimeoutMs } : {}),
    };
    const redis =
      this.#opts.url === undefined ? new Redis(options) : new Redis(this.#opts.url, options);
    // ioredis emits connection errors as events; without a listener they would crash the process.
    redis.on("error", (err: unknown) =>
      this.#opts.logger.debug("redis connection error", { connection: name, error: err }),
    );
    return redis;
  }

  connect(options: { readonly signal?: AbortSignal } = {}): Promise<void> {
    return this.#life.connect(() => this.#doConnect(options.signal));
  }

  async #doConnect(signal: AbortSignal | undefined): Promise<void> {
    signal?.throwIfAborted();
    const redis = this.#newConnection("main", true);
    const giveUp = (): void => redis.disconnect();
    signal?.addEventListener("abort", giveUp, { once: true });
    try {
      // The first connection must succeed on its own: no silent retry loop before `open`.
      await withDeadline(redis.connect(), this.#opts.connectTimeoutMs, "connect");
      const info = await withDeadline(redis.info("server"), this.#opts.connectTimeoutMs, "INFO");
      const version = /redis_version:(\d+)\./.exec(info)?.[1];
      if (version !== undefined && Number(version) < MIN_REDIS_MAJOR) {
        throw new NuropbTransportError(
          `Redis ${MIN_REDIS_MAJOR}.0 or later is required (server is ${version}.x)`,
        );
      }
      await this.#measureClock(redis);
    } catch (err) {
      redis.disconnect();
      if (signal?.aborted === true)
        throw new NuropbTransportError("connect aborted", { cause: signal.reason });
      if (err instanceof NuropbTransportError) throw err;
      throw new NuropbTransportError(`cannot connect to Redis (${this.#where()})`, {
        cause: err,
        retryable: true,
      });
    } finally {
      signal?.removeEventListener("abort", giveUp);
    }
    if (this.#life.ending) {
      redis.disconnect();
      throw this.#life.closedError("the Redis transport was closed while connecting");
    }
    this.#redis = redis;
    const acks = new AckBatcher(redis, this.#opts.logger);
    this.#acks = acks;
    this.#sends = new SendBatcher(
      redis,
      this.#keys.prefix,
      this.#opts.responseTtlMs,
      this.#sendErrors,
      acks,
    );
    this.#linkUp = true;
    this.#life.opened();
    this.#scheduler.start();
    redis.on("close", () => this.#onLinkDown());
    redis.on("ready", () => this.#onLinkUp());
    this.#opts.logger.info("connected", { redis: this.#where(), mesh: this.mesh });
  }

  #where(): string {
    if (this.#opts.url !== undefined) return this.#opts.url.replace(/\/\/[^@/]*@/, "//***@");
    const o = this.#opts.redisOptions;
    return `${o.host ?? "127.0.0.1"}:${o.port ?? 6379}`;
  }

  async #measureClock(redis: Redis): Promise<void> {
    const before = Date.now();
    const [sec, usec] = await redis.time();
    const after = Date.now();
    this.#clockOffsetMs =
      Number(sec) * 1000 + Math.floor(Number(usec) / 1000) - (before + after) / 2;
  }

  #onLinkDown(): void {
    if (this.#life.state !== LifecycleState.open || !this.#linkUp) return;
    this.#linkUp = false;
    this.#life.linkDown();
  }

  #onLinkUp(): void {
    if (this.#life.state !== LifecycleState.open || this.#linkUp) return;
    this.#linkUp = true;
    void this.#recover();
  }

  /** After a reconnect: declare every service again (Redis may have lost its data), retake leases. */
  #recover(): Promise<void> {
    const redis = this.#redis;
    if (redis === undefined) return Promise.resolve();
    return this.#life.recover(
      async () => {
        await this.#measureClock(redis);
        for (const reg of this.#services.values()) await this.#register(reg);
        for (const r of this.#responses.values()) await r.holdLease();
      },
      () => this.#linkUp,
    );
  }

  close(): Promise<void> {
    return this.#life.close(() => this.#doClose());
  }

  async #doClose(): Promise<void> {
    await this.#life.connectSettled();
    this.#scheduler.stop();
    const redis = this.#redis;
    const transients = [...this.#services.values()].flatMap((r) => r.transient ?? []);
    // Unsettled deliveries go back to their streams before the connection goes.
    await withDeadline(
      Promise.all([
        ...[...this.#services.keys()].map((c) => c.shutdown()),
        ...[...this.#responses.values()].map((r) => r.stop()),
      ]),
      5_000,
      "close",
    ).catch(() => undefined);
    // Transient queues go with the connection (if it is still there; else they expire).
    await Promise.all(transients.map((t) => t.remove()));
    this.#services.clear();
    this.#responses.clear();
    this.#acks?.flush();
    this.#sends?.flush();
    if (redis !== undefined) {
      await withDeadline(redis.quit(), 2_000, "QUIT").catch(() => undefined);
      redis.disconnect();
    }
    this.#opts.logger.info("closed");
  }

  closed(): Promise<Error | undefined> {
    return this.#life.closed();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  events(): AsyncIterable<TransportEvent> {
    return this.#life.events();
  }

  #requireOpen(): { redis: Redis; acks: AckBatcher; sends: SendBatcher } {
    if (this.#life.ending) throw this.#life.closedError();
    if (
      this.#life.state !== LifecycleState.open ||
      this.#redis === undefined ||
      this.#acks === undefined ||
      this.#sends === undefined
    ) {
      throw new NuropbTransportError("the Redis transport is not connected: call connect() first");
    }
    return { redis: this.#redis, acks: this.#acks, sends: this.#sends };
  }

  /** Translates a Redis error at the boundary; the original stays as `cause`. */
  #translate(err: unknown, what: string): Error {
    if (this.#life.ending) return this.#life.closedError(undefined, { cause: err });
    if (err instanceof NuropbTransportError) return err;
    const message = err instanceof Error ? err.message : String(err);
    if (message === "Command timed out") {
      return new NuropbTransportError(
        `${what}: Redis did not answer within ${this.#opts.sendTimeoutMs} ms (the frame may still arrive)`,
        { cause: err, retryable: true },
      );
    }
    return new NuropbTransportError(`${what}: ${message}`, { cause: err, retryable: true });
  }

  send(to: Destination, frame: Frame): Promise<void> {
    // Not async: a send costs one promise, the batch's, rather than two.
    try {
      return this.#send(to, frame);
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  #send(to: Destination, frame: Frame): Promise<void> {
    const sends =
      this.#sends !== undefined && this.#life.state === LifecycleState.open && !this.#life.ending
        ? this.#sends
        : this.#requireOpen().sends;
    if (frame.body.byteLength > this.#opts.maxFrameBytes) {
      throw new NuropbMessageError(
        `frame body of ${frame.body.byteLength} bytes exceeds maxFrameBytes (${this.#opts.maxFrameBytes})`,
      );
    }
    assertFrameTtl(frame.ttlMs); // as every transport: refused here, refused everywhere
    switch (to.kind) {
      case "rpc":
        if (!isKeyName(to.service)) {
          throw new NuropbNotDeliveredError(`no service can be named '${to.service}'`);
        }
        return sends.rpc(to.service, frame);
      case "event":
        if (
          !isKeyName(to.topic) ||
          to.topic.split(".").some((w) => w === "" || w === "*" || w === "#")
        ) {
          throw new NuropbMessageError(
            `'${to.topic}' is not a valid event topic (dot-separated words, no wildcards)`,
          );
        }
        return sends.event(to.topic, frame);
      case "reply":
        if (!isKeyName(to.address)) {
          throw new NuropbMessageError(`'${to.address}' is not a valid reply address`);
        }
        {
          // An answer addressed to a service (scheduling.serviceReplyAddress) joins its stream.
          const service = this.#scheduler.serviceOfAddress(to.address);
          if (service !== undefined) return this.#scheduler.deliverReply(service, frame);
        }
        return sends.reply(to.address, frame);
    }
  }

  /** The errors of the send batcher, worded as `send` words them. */
  readonly #sendErrors: SendErrors = {
    notDelivered: (service) =>
      new NuropbNotDeliveredError(`no service '${service}' on mesh '${this.mesh}'`, {
        details: { service },
      }),
    failed: (err, kind, target) =>
      this.#translate(
        err,
        kind === "r"
          ? `send to service '${target}'`
          : kind === "e" || kind === "l"
            ? `publish event '${target}'`
            : `reply to '${target}'`,
      ),
  };

  async #register(reg: ServiceRegistration): Promise<void> {
    const { redis } = this.#requireOpen();
    await runScript(
      redis,
      REGISTER_SERVICE,
      [this.#keys.serviceStream(reg.service)],
      [
        SERVICE_GROUP,
        this.#keys.prefix,
        reg.service,
        reg.rpcNames.length,
        ...reg.rpcNames,
        ...reg.eventBindings,
      ],
    );
    await reg.transient?.touch();
  }

  async consumeService(spec: ServiceQueueSpec, handler: DeliveryHandler): Promise<Listener> {
    const { redis, acks } = this.#requireOpen();
    validateServiceSpec(spec);
    const rpcNames = [...new Set([spec.service, ...spec.rpcBindings])];
    const reg: ServiceRegistration = {
      service: spec.service,
      rpcNames,
      eventBindings: [...new Set(spec.eventBindings)],
      ...(spec.transient === true
        ? {
            transient: new TransientKeys({
              redis: () => this.#redis,
              service: spec.service,
              stream: this.#keys.serviceStream(spec.service),
              bindings: this.#keys.eventBindings(spec.service),
              services: this.#keys.eventServices,
              rpcSets: rpcNames.map((n) => this.#keys.rpcSet(n)),
              logger: this.#opts.logger,
            }),
          }
        : {}),
    };
    try {
      await withDeadline(
        this.#register(reg),
        this.#opts.sendTimeoutMs,
        "Redis did not answer in time",
      );
    } catch (err) {
      throw this.#translate(err, `declare service '${spec.service}'`);
    }
    const blocking = this.#newConnection(`sq-${spec.service}`, false);
    try {
      await withDeadline(blocking.connect(), this.#opts.connectTimeoutMs, "connect");
    } catch (err) {
      blocking.disconnect();
      throw this.#translate(err, `consume service '${spec.service}'`);
    }
    if (this.#life.state !== LifecycleState.open) {
      blocking.disconnect();
      throw this.#life.closedError();
    }
    const consumer: ServiceConsumer = new ServiceConsumer({
      redis,
      blocking,
      acks,
      logger: this.#opts.logger.child({ service: spec.service }),
      stream: this.#keys.serviceStream(spec.service),
      deadLetters: this.#keys.deadLetters,
      service: spec.service,
      consumer: `${this.#instance}-${++this.#consumerSeq}`,
      window: spec.prefetch === 0 ? this.#opts.prefetch : spec.prefetch,
      claimIdleMs: this.#opts.claimIdleMs,
      deadLetterMaxLen: this.#opts.deadLetterMaxLen,
      handler,
      serverNow: () => Date.now() + this.#clockOffsetMs,
      redeclare: () => this.#register(reg),
      onStopped: (c) => this.#services.delete(c),
    });
    this.#services.set(consumer, reg);
    await consumer.start();
    this.#opts.logger.info("consuming service queue", {
      service: spec.service,
      rpcNames: reg.rpcNames,
      eventBindings: reg.eventBindings,
      prefetch: spec.prefetch,
    });
    const transient = reg.transient;
    if (transient === undefined) return consumer;
    // A transient queue goes once its consumer has given back what it held.
    transient.start();
    let stopping: Promise<void> | undefined;
    const stop = (): Promise<void> =>
      (stopping ??= consumer.stop().finally(() => transient.remove()));
    return { stop, [Symbol.asyncDispose]: stop };
  }

  async consumeResponses(spec: ResponseQueueSpec, handler: ResponseHandler): Promise<Listener> {
    const { redis } = this.#requireOpen();
    const address = spec.address;
    if (!isKeyName(address))
      throw new NuropbTransportError(`'${address}' is not a valid reply address`);
    if (this.#responses.has(address)) {
      throw new NuropbTransportError(
        `response address '${address}' is already consumed by this transport`,
      );
    }
    const lease = this.#keys.responseLease(address);
    const token = `${this.#instance}-${++this.#consumerSeq}`;
    let held: unknown;
    try {
      held = await withDeadline(
        runScript(redis, HOLD_LEASE, [lease], [token, this.#opts.addressLeaseMs]),
        this.#opts.sendTimeoutMs,
        "Redis did not answer in time",
      );
    } catch (err) {
      throw this.#translate(err, `consume responses on '${address}'`);
    }
    if (held !== 1) {
      throw new NuropbTransportError(
        `response address '${address}' is in exclusive use by another consumer`,
        {
          details: { address },
        },
      );
    }
    const blocking = this.#newConnection(`rq-${address}`, false);
    try {
      await withDeadline(blocking.connect(), this.#opts.connectTimeoutMs, "connect");
    } catch (err) {
      blocking.disconnect();
      await runScript(redis, HOLD_LEASE, [lease], [token, 1]).catch(() => undefined);
      throw this.#translate(err, `consume responses on '${address}'`);
    }
    if (this.#life.ending) {
      // close() ran while we waited: it could not see this consumer, so let go of it here.
      blocking.disconnect();
      await runScript(redis, HOLD_LEASE, [lease], [token, 1]).catch(() => undefined);
      throw this.#life.closedError();
    }
    const listener = new ResponseConsumer({
      redis,
      blocking,
      logger: this.#opts.logger,
      address,
      list: this.#keys.responseList(address),
      lease,
      token,
      leaseMs: this.#opts.addressLeaseMs,
      handler,
      onLeaseLost: (a) => {
        this.#opts.logger.warn("response address taken by another consumer", { address: a });
        this.#life.emit({
          type: "errored",
          error: new NuropbTransportError(`response address '${a}' was taken by another consumer`),
        });
      },
      onStopped: (r) => {
        if (this.#responses.get(r.address) === r) this.#responses.delete(r.address);
      },
    });
    this.#responses.set(address, listener);
    await listener.start();
    this.#opts.logger.info("consuming responses", { address });
    return listener;
  }
}

function validateServiceSpec(spec: ServiceQueueSpec): void {
  if (!isKeyName(spec.service)) throw new TypeError(`service name '${spec.service}' is not usable`);
  for (const name of spec.rpcBindings) {
    if (!isKeyName(name)) throw new TypeError(`rpc binding '${name}' is not usable`);
  }
  for (const pattern of spec.eventBindings) assertTopicPattern(pattern);
  if (!Number.isSafeInteger(spec.prefetch) || spec.prefetch < 0) {
    throw new TypeError(`prefetch must be an integer >= 0, got ${String(spec.prefetch)}`);
  }
  if (spec.transient !== undefined && typeof spec.transient !== "boolean") {
    throw new TypeError("transient must be a boolean when given");
  }
}

/** Rejects with a retryable NuropbTransportError when `promise` takes longer than `ms`. */
function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new NuropbTransportError(`${what} (after ${ms} ms)`, { retryable: true })),
        ms,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Creates a NuroPb transport on Redis Streams. Does no I/O: call `connect()`.
 *
 * @example
 * ```ts
 * const transport = createRedisTransport({ url: "redis://127.0.0.1:6379" });
 * await transport.connect();
 * ```
 * @throws TypeError when an option is invalid.
 */
export function createRedisTransport(options: RedisTransportOptions): Transport {
  return new RedisTransport(resolveRedisOptions(options));
}
