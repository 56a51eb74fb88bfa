import { GatewayConnectionError, GatewayError } from "./errors.ts";
import { fromJsonText, toJsonText } from "./json-text.ts";
import { importSealingKey, seal } from "./rsa-fernet.ts";
import type { SealingKey } from "./rsa-fernet.ts";
import { WEBSOCKET_PATH } from "./wire.ts";
import type { ClientMessage, ErrorObject, MessageId, ServerMessage } from "./wire.ts";

/** The part of the WebSocket API the client uses (the browser's, or `ws` in Node). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open", listener: () => void): void;
  addEventListener(type: "message", listener: (event: { readonly data: unknown }) => void): void;
  addEventListener(
    type: "close",
    listener: (event: { readonly code: number; readonly reason: string }) => void,
  ): void;
  addEventListener(type: "error", listener: (event: unknown) => void): void;
}

/** A WebSocket class: `globalThis.WebSocket` in browsers (and Node 22), `WebSocket` of `ws`. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Where the client is. */
export type GatewayClientState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/** Options of {@link createGatewayClient}. */
export interface GatewayClientOptions {
  /** The gateway: `ws(s)://host:port/ws`, or its base `http(s)://host:port` (then `/ws` is added). */
  readonly url: string;
  /**
   * The caller's token (for example `"Bearer …"`), or a function asked at every (re)connection.
   * The gateway puts it in each call's context under the service's token key.
   */
  readonly token?: string | (() => string | undefined | Promise<string | undefined>);
  /** @defaultValue `globalThis.WebSocket` */
  readonly WebSocket?: WebSocketConstructor;
  /** Ttl of a call, in ms; the client waits this plus 2 s for its answer. @defaultValue 30000 */
  readonly defaultTtlMs?: number;
  /** Reconnection after a lost link. */
  readonly reconnect?: {
    /** @defaultValue true */
    readonly enabled?: boolean;
    /** First delay, doubled each failed attempt (with jitter). @defaultValue 250 */
    readonly initialDelayMs?: number;
    /** @defaultValue 10000 */
    readonly maxDelayMs?: number;
  };
  /**
   * Interval of the client's pings, in ms; a link that answered nothing since the previous one
   * is closed and reconnected. @defaultValue 15000
   */
  readonly heartbeatIntervalMs?: number;
  /**
   * Services' RSA public keys (PEM) for sealed calls, pinned: without one the key is taken from
   * the service's description, which the gateway relays (so a gateway you do not trust could
   * swap it).
   */
  readonly publicKeys?: Readonly<Record<string, string>>;
  /** Called on every state change. */
  readonly onStateChange?: (state: GatewayClientState) => void;
  /** Called with failures nobody awaits: a throwing event handler, a refused resubscription. */
  readonly onError?: (error: Error) => void;
}

/** Options of one call. */
export interface CallOptions {
  /** Ttl in ms. @defaultValue the client's `defaultTtlMs` */
  readonly ttlMs?: number;
  readonly traceId?: string;
  /**
   * Seal the call end to end (rsa-fernet, WebCrypto): the gateway forwards ciphertext and the
   * answer is opened here. The service must be exposed with `sealed: true`. @defaultValue false
   */
  readonly encrypted?: boolean;
}

/** An event a subscription receives. */
export interface GatewayEvent<TEvent = unknown> {
  readonly topic: string;
  readonly event: TEvent;
  readonly target: readonly string[] | null;
  readonly traceId: string | null;
}

/** A live subscription; it survives reconnections. */
export interface Subscription {
  readonly pattern: string;
  /** Stops it. Idempotent. */
  unsubscribe(): Promise<void>;
}

/** A typed proxy: each public method of `TService` becomes a call through the gateway. */
export type GatewayProxy<TService> = {
  readonly [
    K in keyof TService as K extends `_${string}` | "handleEvent"
      ? never
      : TService[K] extends (...args: never[]) => unknown
        ? K
        : never
  ]: TService[K] extends (params: infer P, ...rest: never[]) => infer R
    ? (params: P, options?: CallOptions) => Promise<Awaited<R>>
    : never;
};

/** The description of a service as the gateway shows it (its exposed methods). */
export interface GatewayServiceDescription {
  readonly service_name: string | null;
  readonly description: string | null;
  readonly public_key: string | null;
  readonly methods: Readonly<
    Record<
      string,
      {
        readonly description: string | null;
        readonly requires_encryption: boolean;
        readonly requires_authorization?: boolean;
        readonly parameters: Readonly<Record<string, unknown>>;
        readonly result?: Readonly<Record<string, unknown>>;
      }
    >
  >;
  readonly gateway: {
    readonly requests: readonly string[];
    readonly commands: readonly string[];
    readonly sealed: boolean;
    readonly context_token_key: string;
  };
}

/** A client of the gateway's WebSocket. */
export interface GatewayClient extends AsyncDisposable {
  readonly state: GatewayClientState;
  /** Opens the link (and resolves once it is open and subscriptions are restored). */
  connect(): Promise<void>;
  /**
   * Calls `service.method(params)` and resolves with its result.
   * @throws GatewayError (the service's error, or the gateway's refusal);
   *   GatewayConnectionError when the link failed (retryable) or the client is closed.
   */
  request<TResult = unknown>(
    service: string,
    method: string,
    params?: Readonly<Record<string, unknown>>,
    options?: CallOptions,
  ): Promise<TResult>;
  /** Sends a command; resolves when the mesh has it. @throws as {@link request} */
  command(
    service: string,
    method: string,
    params?: Readonly<Record<string, unknown>>,
    options?: CallOptions,
  ): Promise<void>;
  /** Publishes an event. @throws as {@link request} */
  publish(topic: string, event: unknown, options?: { readonly traceId?: string }): Promise<void>;
  /**
   * Receives the events matching an AMQP topic pattern (`*` one word, `#` any) until
   * `unsubscribe()`; restored after each reconnection.
   * @throws GatewayError when the gateway refuses the pattern.
   */
  subscribe<TEvent = unknown>(
    pattern: string,
    handler: (event: GatewayEvent<TEvent>) => void,
  ): Promise<Subscription>;
  /** The exposed description of a service. */
  describe(service: string): Promise<GatewayServiceDescription>;
  /** The names of the exposed services. */
  services(): Promise<readonly string[]>;
  /** A typed proxy of a service: `proxy.method(params, options?)`. */
  proxy<TService extends object>(service: string): GatewayProxy<TService>;
  /** Closes the link for good; calls in flight fail with a closed `GatewayConnectionError`. */
  close(): Promise<void>;
}

interface Pending {
  readonly resolve: (message: ServerMessage) => void;
  readonly reject: (err: Error) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

interface SubscriptionEntry {
  readonly id: string;
  readonly pattern: string;
  readonly handler: (event: GatewayEvent<never>) => void;
}

interface OpenWaiter {
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

/** The open link's state: a socket and the time anything last came in. */
interface Link {
  readonly socket: WebSocketLike;
  heardFrom: boolean;
}

const OPEN = 1;

function wsUrl(url: string): string {
  if (typeof url !== "string" || url === "") {
    throw new TypeError("createGatewayClient: options.url is required");
  }
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new TypeError(`createGatewayClient: options.url is not a URL: ${url}`);
  }
  if (u.protocol === "http:" || u.protocol === "https:") {
    u.protocol = u.protocol === "http:" ? "ws:" : "wss:";
    u.pathname = `${u.pathname.replace(/\/$/, "")}${WEBSOCKET_PATH}`;
  } else if (u.protocol !== "ws:" && u.protocol !== "wss:") {
    throw new TypeError(
      `createGatewayClient: options.url must be ws(s):// or http(s)://, got ${u.protocol}`,
    );
  }
  return u.toString();
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new TypeError(`createGatewayClient: ${name} must be a positive whole number of ms`);
  }
  return value;
}

/**
 * Makes a client of the gateway's WebSocket; it connects on `connect()` or the first call.
 * @throws TypeError for bad options (no WebSocket class available, a bad URL).
 * @example
 * ```ts
 * const client = createGatewayClient({ url: "https://api.example.com", token: "Bearer …" });
 * const order = await client.proxy<Orders>("orders").getOrder({ id: "42" });
 * const sub = await client.subscribe("orders.#", (e) => console.log(e.topic, e.event));
 * ```
 */
export function createGatewayClient(options: GatewayClientOptions): GatewayClient {
  return new WebSocketGatewayClient(options);
}

class WebSocketGatewayClient implements GatewayClient {
  readonly #url: string;
  readonly #WebSocket: WebSocketConstructor;
  readonly #options: GatewayClientOptions;
  readonly #ttlMs: number;
  readonly #heartbeatMs: number;
  readonly #reconnect: { enabled: boolean; initialDelayMs: number; maxDelayMs: number };
  readonly #pending = new Map<string, Pending>();
  readonly #subscriptions = new Map<string, SubscriptionEntry>();
  readonly #openWaiters = new Set<OpenWaiter>();
  readonly #sealingKeys = new Map<string, Promise<SealingKey>>();
  readonly #describes = new Map<string, Promise<GatewayServiceDescription>>();
  #state: GatewayClientState = "idle";
  #link: Link | undefined;
  #opened: Promise<void> | undefined;
  #openedSettle: { resolve: () => void; reject: (e: Error) => void } | undefined;
  #attempt = 0;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #nextId = 0;

  constructor(options: GatewayClientOptions) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError("createGatewayClient: options must be an object");
    }
    this.#options = options;
    this.#url = wsUrl(options.url);
    const ctor =
      options.WebSocket ??
      (globalThis as unknown as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (typeof ctor !== "function") {
      throw new TypeError(
        "createGatewayClient: no WebSocket class: pass options.WebSocket (in Node 20, `WebSocket` of the `ws` package)",
      );
    }
    this.#WebSocket = ctor;
    if (
      options.token !== undefined &&
      typeof options.token !== "string" &&
      typeof options.token !== "function"
    ) {
      throw new TypeError("createGatewayClient: options.token must be a string or a function");
    }
    this.#ttlMs = positive(options.defaultTtlMs, 30_000, "defaultTtlMs");
    this.#heartbeatMs = positive(options.heartbeatIntervalMs, 15_000, "heartbeatIntervalMs");
    const r = options.reconnect ?? {};
    this.#reconnect = {
      enabled: r.enabled ?? true,
      initialDelayMs: positive(r.initialDelayMs, 250, "reconnect.initialDelayMs"),
      maxDelayMs: positive(r.maxDelayMs, 10_000, "reconnect.maxDelayMs"),
    };
  }

  get state(): GatewayClientState {
    return this.#state;
  }

  #setState(state: GatewayClientState): void {
    if (this.#state === state) return;
    this.#state = state;
    try {
      this.#options.onStateChange?.(state);
    } catch (err) {
      this.#report(err);
    }
  }

  #report(err: unknown): void {
    try {
      this.#options.onError?.(err instanceof Error ? err : new Error(String(err)));
    } catch {
      // an onError that throws has nobody left to tell
    }
  }

  connect(): Promise<void> {
    if (this.#state === "closed") {
      return Promise.reject(new GatewayConnectionError("the client is closed", { closed: true }));
    }
    if (this.#opened === undefined) {
      this.#opened = new Promise<void>((resolve, reject) => {
        this.#openedSettle = { resolve, reject };
      });
      // Callers that only await calls must not see an unhandled rejection of this one.
      this.#opened.catch(() => undefined);
      this.#open();
    }
    return this.#opened;
  }

  #open(): void {
    this.#setState(this.#attempt === 0 && this.#state === "idle" ? "connecting" : "reconnecting");
    let socket: WebSocketLike;
    try {
      socket = new this.#WebSocket(this.#url);
    } catch (err) {
      this.#lost(undefined, err);
      return;
    }
    const link: Link = { socket, heardFrom: true };
    this.#link = link;
    socket.addEventListener("open", () => {
      if (this.#link !== link) return;
      void this.#ready(link);
    });
    socket.addEventListener("message", (event) => {
      if (this.#link !== link) return;
      link.heardFrom = true;
      this.#onMessage(event.data);
    });
    socket.addEventListener("close", (event) => {
      if (this.#link !== link) return;
      this.#lost(
        link,
        new GatewayConnectionError(
          `the link closed (${String(event.code)}${event.reason === "" ? "" : `: ${event.reason}`})`,
        ),
      );
    });
    socket.addEventListener("error", () => {
      // "close" follows; it carries the code.
    });
  }

  /** The socket is open: authenticate, restore subscriptions, then let calls through. */
  async #ready(link: Link): Promise<void> {
    try {
      const token = await this.#token();
      if (token !== undefined) {
        await this.#exchange({ id: this.#id(), type: "authenticate", token }, link);
      }
      const restore = [...this.#subscriptions.values()].map((s) =>
        this.#exchange({ id: s.id, type: "subscribe", pattern: s.pattern }, link).catch(
          (err: unknown) => {
            if (err instanceof GatewayError) {
              this.#subscriptions.delete(s.id);
              this.#report(err);
              return;
            }
            throw err;
          },
        ),
      );
      await Promise.all(restore);
    } catch (err) {
      if (this.#link === link) link.socket.close(1000, "setup failed");
      this.#report(err);
      return;
    }
    if (this.#link !== link) return;
    this.#attempt = 0;
    this.#setState("open");
    clearInterval(this.#heartbeat);
    this.#heartbeat = setInterval(() => this.#beat(link), this.#heartbeatMs);
    this.#openedSettle?.resolve();
    this.#settleWaiters();
  }

  #beat(link: Link): void {
    if (this.#link !== link) return;
    if (!link.heardFrom) {
      link.socket.close(4002, "no answer to the heartbeat");
      this.#lost(link, new GatewayConnectionError("no answer to the heartbeat"));
      return;
    }
    link.heardFrom = false;
    this.#sendOn(link, { type: "ping" });
  }

  async #token(): Promise<string | undefined> {
    const t = this.#options.token;
    return typeof t === "function" ? await t() : t;
  }

  /** The link is gone: fail what waited on it, and try again unless closed. */
  #lost(link: Link | undefined, err: unknown): void {
    if (link !== undefined && this.#link !== link) return;
    this.#link = undefined;
    clearInterval(this.#heartbeat);
    const reason =
      err instanceof GatewayConnectionError
        ? err
        : new GatewayConnectionError("the link to the gateway failed", { cause: err });
    for (const [id, p] of [...this.#pending]) {
      this.#pending.delete(id);
      clearTimeout(p.timer);
      p.reject(reason);
    }
    if (this.#state === "closed") return;
    if (!this.#reconnect.enabled) {
      this.#finish(reason);
      return;
    }
    this.#setState("reconnecting");
    const base = Math.min(
      this.#reconnect.maxDelayMs,
      this.#reconnect.initialDelayMs * 2 ** this.#attempt,
    );
    this.#attempt++;
    const delay = Math.round(base * (0.5 + Math.random() / 2));
    this.#retryTimer = setTimeout(() => {
      if (this.#state !== "closed") this.#open();
    }, delay);
  }

  #finish(reason: GatewayConnectionError): void {
    this.#setState("closed");
    clearTimeout(this.#retryTimer);
    this.#openedSettle?.reject(reason);
    this.#settleWaiters(reason);
  }

  /** Lets the calls waiting for a link go (`err` undefined: it is open), or fails them. */
  #settleWaiters(err?: Error): void {
    for (const w of [...this.#openWaiters]) {
      this.#openWaiters.delete(w);
      clearTimeout(w.timer);
      if (err === undefined) w.resolve();
      else w.reject(err);
    }
  }

  #onMessage(data: unknown): void {
    if (typeof data !== "string") return;
    let m: ServerMessage;
    try {
      m = fromJsonText(data) as ServerMessage;
    } catch {
      this.#report(new Error("the gateway sent something that is not JSON"));
      return;
    }
    if (m.type === "event") {
      const sub = this.#subscriptions.get(String(m.subscription));
      if (sub === undefined) return;
      try {
        sub.handler({
          topic: m.topic,
          event: m.event as never,
          target: m.target,
          traceId: m.traceId,
        });
      } catch (err) {
        this.#report(err);
      }
      return;
    }
    if (m.type === "pong") return;
    if (m.type === "error" && m.id === null) {
      this.#report(new GatewayError(m.error, m.status));
      return;
    }
    const key = String(m.id);
    const p = this.#pending.get(key);
    if (p === undefined) return;
    this.#pending.delete(key);
    clearTimeout(p.timer);
    if (m.type === "error") p.reject(new GatewayError(m.error, m.status));
    else p.resolve(m);
  }

  #id(): string {
    this.#nextId = (this.#nextId + 1) % Number.MAX_SAFE_INTEGER;
    return `c${String(this.#nextId)}`;
  }

  #sendOn(link: Link, message: ClientMessage): void {
    if (link.socket.readyState !== OPEN) {
      throw new GatewayConnectionError("the link is not open");
    }
    link.socket.send(toJsonText(message));
  }

  /** Sends `message` on `link` and resolves with its answer. */
  #exchange(
    message: ClientMessage & { readonly id: MessageId },
    link: Link,
    waitMs = this.#ttlMs + 2_000,
  ): Promise<ServerMessage> {
    const key = String(message.id);
    return new Promise<ServerMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(key);
        reject(
          new GatewayConnectionError(`no answer from the gateway within ${String(waitMs)} ms`),
        );
      }, waitMs);
      this.#pending.set(key, { resolve, reject, timer });
      try {
        this.#sendOn(link, message);
      } catch (err) {
        this.#pending.delete(key);
        clearTimeout(timer);
        reject(err as Error);
      }
    });
  }

  /** Waits for an open link (connecting if needed), then exchanges `message` on it. */
  async #call(
    message: ClientMessage & { readonly id: MessageId },
    waitMs?: number,
  ): Promise<ServerMessage> {
    if (this.#state === "closed")
      throw new GatewayConnectionError("the client is closed", { closed: true });
    if (this.#state !== "open" || this.#link === undefined) {
      await this.#whenOpen(waitMs ?? this.#ttlMs);
    }
    const link = this.#link;
    if (link === undefined) throw new GatewayConnectionError("the link to the gateway is down");
    return this.#exchange(message, link, waitMs);
  }

  /** Resolves once the link is open, or rejects after `ms`. */
  #whenOpen(ms: number): Promise<void> {
    if (this.#state === "idle") void this.connect().catch(() => undefined);
    return new Promise<void>((resolve, reject) => {
      const waiter: OpenWaiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#openWaiters.delete(waiter);
          reject(
            new GatewayConnectionError(`the gateway could not be reached within ${String(ms)} ms`),
          );
        }, ms),
      };
      this.#openWaiters.add(waiter);
    });
  }

  async request<TResult = unknown>(
    service: string,
    method: string,
    params: Readonly<Record<string, unknown>> = {},
    options: CallOptions = {},
  ): Promise<TResult> {
    const ttlMs = options.ttlMs ?? this.#ttlMs;
    if (options.encrypted === true) {
      return (await this.#sealed("sealed-request", service, method, params, options)) as TResult;
    }
    const answer = await this.#call(
      {
        id: this.#id(),
        type: "request",
        service,
        method,
        params,
        ttlMs,
        ...(options.traceId === undefined ? {} : { traceId: options.traceId }),
      },
      ttlMs + 2_000,
    );
    return (answer as { result?: unknown }).result as TResult;
  }

  async command(
    service: string,
    method: string,
    params: Readonly<Record<string, unknown>> = {},
    options: CallOptions = {},
  ): Promise<void> {
    if (options.encrypted === true) {
      await this.#sealed("sealed-command", service, method, params, options);
      return;
    }
    await this.#call({
      id: this.#id(),
      type: "command",
      service,
      method,
      params,
      ...(options.ttlMs === undefined ? {} : { ttlMs: options.ttlMs }),
      ...(options.traceId === undefined ? {} : { traceId: options.traceId }),
    });
  }

  async publish(
    topic: string,
    event: unknown,
    options: { readonly traceId?: string } = {},
  ): Promise<void> {
    await this.#call({
      id: this.#id(),
      type: "publish",
      topic,
      event,
      ...(options.traceId === undefined ? {} : { traceId: options.traceId }),
    });
  }

  async subscribe<TEvent = unknown>(
    pattern: string,
    handler: (event: GatewayEvent<TEvent>) => void,
  ): Promise<Subscription> {
    if (typeof handler !== "function") throw new TypeError("subscribe: handler must be a function");
    const id = `s${this.#id()}`;
    await this.#call({ id, type: "subscribe", pattern });
    // Registered once the gateway agreed, so a refused pattern is never restored.
    this.#subscriptions.set(id, {
      id,
      pattern,
      handler: handler as (e: GatewayEvent<never>) => void,
    });
    let done = false;
    return {
      pattern,
      unsubscribe: async () => {
        if (done) return;
        done = true;
        this.#subscriptions.delete(id);
        if (this.#state === "open") {
          await this.#call({ id: this.#id(), type: "unsubscribe", subscription: id }).catch(
            () => undefined,
          );
        }
      },
    };
  }

  describe(service: string): Promise<GatewayServiceDescription> {
    let d = this.#describes.get(service);
    if (d === undefined) {
      d = this.#call({ id: this.#id(), type: "describe", service }).then(
        (m) => (m as { result: GatewayServiceDescription }).result,
      );
      this.#describes.set(service, d);
      d.catch(() => this.#describes.delete(service));
    }
    return d;
  }

  async services(): Promise<readonly string[]> {
    const m = await this.#call({ id: this.#id(), type: "services" });
    return (m as { result: { services: string[] } }).result.services;
  }

  proxy<TService extends object>(service: string): GatewayProxy<TService> {
    if (typeof service !== "string" || service === "")
      throw new TypeError("proxy: a service name is required");
    return new Proxy({} as GatewayProxy<TService>, {
      get: (_target, prop) => {
        if (typeof prop !== "string" || prop === "then") return undefined;
        return (params?: Readonly<Record<string, unknown>>, options?: CallOptions) =>
          this.request(service, prop, params, options);
      },
    });
  }

  /** Seals a call for `service`, sends it through the gateway, opens the answer. */
  async #sealed(
    type: "sealed-request" | "sealed-command",
    service: string,
    method: string,
    params: Readonly<Record<string, unknown>>,
    options: CallOptions,
  ): Promise<unknown> {
    const ttlMs = options.ttlMs ?? this.#ttlMs;
    const description = await this.describe(service);
    const key = await this.#sealingKey(service, description);
    const token = await this.#token();
    const correlationId = randomHex(16);
    const traceId = options.traceId ?? randomHex(16);
    const body = toJsonText({
      tag: type === "sealed-request" ? "request" : "command",
      service,
      method,
      params,
      correlation_id: correlationId,
      context: token === undefined ? {} : { [description.gateway.context_token_key]: token },
      trace_id: traceId,
    });
    const sealed = await seal(body, key);
    const answer = await this.#call(
      { id: this.#id(), type, service, correlationId, body: sealed.body, ttlMs, traceId },
      ttlMs + 2_000,
    );
    if (type === "sealed-command") return undefined;
    const m = answer as { encrypted: boolean; body: string };
    const text = m.encrypted ? await sealed.replyKey.open(m.body) : m.body;
    const response = fromJsonText(text) as {
      correlation_id?: unknown;
      result?: unknown;
      error?: ErrorObject | null;
    };
    if (m.encrypted && response.correlation_id !== correlationId) {
      // rsa-fernet cannot bind an answer to its request; the correlation id inside does.
      throw new GatewayError({
        error: "NuropbMessageError",
        description: "the sealed answer is for another call",
      });
    }
    if (response.error !== null && response.error !== undefined)
      throw new GatewayError(response.error);
    return response.result;
  }

  #sealingKey(service: string, description: GatewayServiceDescription): Promise<SealingKey> {
    let k = this.#sealingKeys.get(service);
    if (k === undefined) {
      const pem = this.#options.publicKeys?.[service] ?? description.public_key;
      if (pem === null || pem === undefined) {
        return Promise.reject(
          new GatewayError({
            error: "NuropbMessageError",
            description: `${service} announces no RSA public key: it cannot take sealed calls`,
          }),
        );
      }
      if (!description.gateway.sealed) {
        return Promise.reject(
          new GatewayError(
            {
              error: "NuropbHandlingError",
              description: `the gateway does not relay sealed calls to ${service}`,
            },
            404,
          ),
        );
      }
      k = importSealingKey(pem);
      this.#sealingKeys.set(service, k);
      k.catch(() => this.#sealingKeys.delete(service));
    }
    return k;
  }

  async close(): Promise<void> {
    if (this.#state === "closed") return;
    const closed = new GatewayConnectionError("the client is closed", { closed: true });
    this.#setState("closed");
    clearTimeout(this.#retryTimer);
    clearInterval(this.#heartbeat);
    const link = this.#link;
    this.#link = undefined;
    for (const [id, p] of [...this.#pending]) {
      this.#pending.delete(id);
      clearTimeout(p.timer);
      p.reject(closed);
    }
    this.#subscriptions.clear();
    this.#openedSettle?.reject(closed);
    this.#settleWaiters(closed);
    link?.socket.close(1000, "closed by the client");
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function randomHex(bytes: number): string {
  const b = crypto.getRandomValues(new Uint8Array(bytes));
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}
