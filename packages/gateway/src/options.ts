import { isLogger, noopLogger, positiveIntOption, timerOption } from "@nuropb/protocol";
import type { Logger, Transport } from "@nuropb/protocol";
import { checkPatterns } from "./topic-patterns.ts";

/** What the gateway offers of one service. Nothing is offered unless named. */
export interface ExposedService {
  /**
   * Methods callable as requests (`POST /api/{service}/{method}`, WebSocket `request`): their
   * names, or `"*"` for every method the service's live description lists (hidden methods are
   * then not callable). @defaultValue [] (none)
   */
  readonly requests?: readonly string[] | "*";
  /** Methods that may be sent as commands (`POST /command/{service}/{method}`). @defaultValue [] */
  readonly commands?: readonly string[] | "*";
  /**
   * The context key the caller's token (HTTP `Authorization`, or the WebSocket token) goes under.
   * @defaultValue "Authorization"
   */
  readonly contextTokenKey?: string;
  /**
   * Accept end-to-end sealed requests and commands for this service over the WebSocket. The
   * gateway cannot read a sealed call, so it checks only the service name and the `authorize`
   * hook (with `method` undefined); the service checks the method, its token and its params.
   * @defaultValue false
   */
  readonly sealed?: boolean;
}

/** What the gateway exposes of the mesh. The default exposes nothing. */
export interface GatewayExposure {
  /** Services by name, and what of each is exposed. @defaultValue {} */
  readonly services?: Readonly<Record<string, ExposedService>>;
  /** Topic patterns clients may publish events to (a topic must match one). @defaultValue [] */
  readonly publish?: readonly string[];
  /**
   * Topic patterns clients may subscribe to. The gateway binds these on the mesh (as a service
   * named {@link GatewayOptions.name}); a client's pattern must lie within one. @defaultValue []
   */
  readonly subscribe?: readonly string[];
}

/** One operation the {@link GatewayOptions.authorize} hook is asked about. */
export interface GatewayAuthorizeRequest {
  readonly kind: "request" | "command" | "publish" | "subscribe" | "describe" | "stats";
  /** The target service (requests, commands, describe, stats). */
  readonly service?: string;
  /** The target method; undefined for a sealed call, whose method the gateway cannot read. */
  readonly method?: string;
  /** The topic (publish) or pattern (subscribe). */
  readonly topic?: string;
  /** True for an end-to-end sealed call. */
  readonly sealed: boolean;
  /** The caller's token: HTTP `Authorization`, or the WebSocket connection's token. */
  readonly token: string | undefined;
  readonly via: "http" | "websocket";
  /** The peer's address as the HTTP server saw it. */
  readonly remoteAddress: string;
}

/**
 * Decides whether a caller may do one operation. Only `true` allows it; `false` refuses it
 * (HTTP 403, `NuropbAuthorizationError`); a thrown NuroPb error is answered as itself (a
 * `NuropbAuthenticationError` is a 401), anything else thrown as a 500 whose text is not shown.
 */
export type GatewayAuthorize = (request: GatewayAuthorizeRequest) => boolean | Promise<boolean>;

/** WebSocket limits. */
export interface GatewayWebSocketOptions {
  /**
   * Most bytes queued for one connection and not yet taken by the network. A connection whose
   * queue would grow past it is closed with {@link CloseCode.slowConsumer}.
   * @defaultValue 1048576 (1 MiB)
   */
  readonly maxBufferedBytes?: number;
  /** Largest message a client may send, in bytes. @defaultValue 1048576 (1 MiB) */
  readonly maxMessageBytes?: number;
  /**
   * Interval of the gateway's pings, in ms; a connection that has not answered the previous one
   * (nor sent anything) is dropped. @defaultValue 30000
   */
  readonly heartbeatIntervalMs?: number;
  /** Most requests one connection has in flight at once; more are refused (429). @defaultValue 64 */
  readonly maxInFlight?: number;
  /** Most subscriptions one connection holds. @defaultValue 64 */
  readonly maxSubscriptions?: number;
  /**
   * How long a closing connection may take to read what was queued and the close frame before
   * it is dropped, in ms. @defaultValue 5000
   */
  readonly closeTimeoutMs?: number;
}

/** Options of {@link createGateway}. */
export interface GatewayOptions {
  /** The transport to reach the mesh through; the gateway connects it if needed, never closes it. */
  readonly transport: Transport;
  /** What is exposed. @defaultValue nothing */
  readonly expose?: GatewayExposure;
  /** Per-operation authorisation, before the call reaches the mesh. @defaultValue every exposed operation is allowed */
  readonly authorize?: GatewayAuthorize;
  /**
   * The gateway's name on the mesh: its service name when it subscribes to events (queue
   * `nuropb-{name}-sq`). Gateways with one name share their events (each event reaches one of
   * them), so give each gateway instance its own. @defaultValue "gateway"
   */
  readonly name?: string;
  /** Ttl of a call when the caller gives none, in ms. @defaultValue 30000 */
  readonly defaultTtlMs?: number;
  /** Largest ttl a caller may ask for, in ms. @defaultValue 300000 */
  readonly maxTtlMs?: number;
  /** Largest HTTP request body, in bytes. @defaultValue 1048576 (1 MiB) */
  readonly bodyLimitBytes?: number;
  /** How long a service description is reused before it is asked again, in ms. @defaultValue 10000 */
  readonly describeCacheMs?: number;
  /** How long to wait for a service to describe itself, in ms. @defaultValue 5000 */
  readonly describeTtlMs?: number;
  /** Serve the mesh explorer at `/explorer/` and the API page at `/docs/`. @defaultValue true */
  readonly pages?: boolean;
  /** Title of the OpenAPI document and the pages. @defaultValue "nuropb gateway" */
  readonly title?: string;
  readonly websocket?: GatewayWebSocketOptions;
  readonly logger?: Logger;
}

/** What {@link resolveOptions} makes of the options. */
export interface ResolvedOptions {
  readonly transport: Transport;
  readonly services: ReadonlyMap<string, ResolvedService>;
  readonly publish: readonly string[];
  readonly subscribe: readonly string[];
  readonly authorize: GatewayAuthorize | undefined;
  readonly name: string;
  readonly defaultTtlMs: number;
  readonly maxTtlMs: number;
  readonly bodyLimitBytes: number;
  readonly describeCacheMs: number;
  readonly describeTtlMs: number;
  readonly pages: boolean;
  readonly title: string;
  readonly ws: Required<GatewayWebSocketOptions>;
  readonly logger: Logger;
}

/** An exposed service, checked. */
export interface ResolvedService {
  readonly name: string;
  readonly requests: ReadonlySet<string> | "*";
  readonly commands: ReadonlySet<string> | "*";
  readonly contextTokenKey: string;
  readonly sealed: boolean;
}

const OWNER = "createGateway";
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$/;

/** `value` as an error text shows it; never throws (a bigint, a cycle, a symbol). */
function shown(value: unknown): string {
  if (typeof value === "bigint") return `${String(value)}n`;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

function checkName(value: unknown, where: string): string {
  if (typeof value !== "string" || !NAME.test(value)) {
    throw new TypeError(
      `${OWNER}: ${where} must be a name of letters, digits, '_', '.', ':' or '-' (at most 128), got ${shown(value)}`,
    );
  }
  return value;
}

function checkMethods(value: unknown, where: string): ReadonlySet<string> | "*" {
  if (value === undefined) return new Set();
  if (value === "*") return "*";
  if (!Array.isArray(value)) {
    throw new TypeError(`${OWNER}: ${where} must be an array of method names or "*"`);
  }
  return new Set(value.map((m: unknown, i) => checkName(m, `${where}[${String(i)}]`)));
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Checks the options once, at the factory.
 * @throws TypeError naming the bad option.
 */
export function resolveOptions(options: GatewayOptions): ResolvedOptions {
  if (!isPlainObject(options)) throw new TypeError(`${OWNER}: options must be an object`);
  const t: unknown = options.transport;
  if (
    typeof t !== "object" ||
    t === null ||
    typeof (t as Transport).send !== "function" ||
    typeof (t as Transport).consumeResponses !== "function"
  ) {
    throw new TypeError(`${OWNER}: options.transport must be a Transport from a nuropb transport`);
  }
  const expose: unknown = options.expose ?? {};
  if (!isPlainObject(expose)) throw new TypeError(`${OWNER}: options.expose must be an object`);
  const rawServices: unknown = expose.services ?? {};
  if (!isPlainObject(rawServices)) {
    throw new TypeError(`${OWNER}: options.expose.services must be an object keyed by service`);
  }
  const services = new Map<string, ResolvedService>();
  for (const [name, spec] of Object.entries(rawServices)) {
    const where = `options.expose.services[${JSON.stringify(name)}]`;
    checkName(name, `the service name ${JSON.stringify(name)}`);
    if (!isPlainObject(spec)) throw new TypeError(`${OWNER}: ${where} must be an object`);
    const sealed: unknown = spec.sealed ?? false;
    if (typeof sealed !== "boolean")
      throw new TypeError(`${OWNER}: ${where}.sealed must be a boolean`);
    services.set(name, {
      name,
      requests: checkMethods(spec.requests, `${where}.requests`),
      commands: checkMethods(spec.commands, `${where}.commands`),
      contextTokenKey:
        spec.contextTokenKey === undefined
          ? "Authorization"
          : checkName(spec.contextTokenKey, `${where}.contextTokenKey`),
      sealed,
    });
  }
  const authorize: unknown = options.authorize;
  if (authorize !== undefined && typeof authorize !== "function") {
    throw new TypeError(`${OWNER}: options.authorize must be a function`);
  }
  const logger: unknown = options.logger ?? noopLogger;
  if (!isLogger(logger)) throw new TypeError(`${OWNER}: options.logger must be a Logger`);
  const pages: unknown = options.pages ?? true;
  if (typeof pages !== "boolean") throw new TypeError(`${OWNER}: options.pages must be a boolean`);
  const title: unknown = options.title ?? "nuropb gateway";
  if (typeof title !== "string" || title === "") {
    throw new TypeError(`${OWNER}: options.title must be a non-empty string`);
  }
  const ws: unknown = options.websocket ?? {};
  if (!isPlainObject(ws)) throw new TypeError(`${OWNER}: options.websocket must be an object`);
  const w = ws as GatewayWebSocketOptions;
  const maxTtlMs = timerOption(OWNER, "maxTtlMs", options.maxTtlMs, 300_000);
  const defaultTtlMs = timerOption(OWNER, "defaultTtlMs", options.defaultTtlMs, 30_000);
  if (defaultTtlMs > maxTtlMs) {
    throw new TypeError(
      `${OWNER}: 'defaultTtlMs' (${defaultTtlMs}) exceeds 'maxTtlMs' (${maxTtlMs})`,
    );
  }
  return {
    transport: options.transport,
    services,
    publish: checkPatterns(expose.publish, `${OWNER}: options.expose.publish`),
    subscribe: checkPatterns(expose.subscribe, `${OWNER}: options.expose.subscribe`),
    authorize: authorize as GatewayAuthorize | undefined,
    name: options.name === undefined ? "gateway" : checkName(options.name, "options.name"),
    defaultTtlMs,
    maxTtlMs,
    bodyLimitBytes: positiveIntOption(OWNER, "bodyLimitBytes", options.bodyLimitBytes, 1 << 20),
    describeCacheMs: timerOption(OWNER, "describeCacheMs", options.describeCacheMs, 10_000),
    describeTtlMs: timerOption(OWNER, "describeTtlMs", options.describeTtlMs, 5_000),
    pages,
    title,
    ws: {
      maxBufferedBytes: positiveIntOption(
        OWNER,
        "websocket.maxBufferedBytes",
        w.maxBufferedBytes,
        1 << 20,
      ),
      maxMessageBytes: positiveIntOption(
        OWNER,
        "websocket.maxMessageBytes",
        w.maxMessageBytes,
        1 << 20,
      ),
      heartbeatIntervalMs: timerOption(
        OWNER,
        "websocket.heartbeatIntervalMs",
        w.heartbeatIntervalMs,
        30_000,
      ),
      maxInFlight: positiveIntOption(OWNER, "websocket.maxInFlight", w.maxInFlight, 64),
      maxSubscriptions: positiveIntOption(
        OWNER,
        "websocket.maxSubscriptions",
        w.maxSubscriptions,
        64,
      ),
      closeTimeoutMs: timerOption(OWNER, "websocket.closeTimeoutMs", w.closeTimeoutMs, 5_000),
    },
    logger: (logger as Logger).child({ component: "gateway" }),
  };
}
