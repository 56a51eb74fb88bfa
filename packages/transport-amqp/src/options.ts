import {
  DEFAULT_DL_EXCHANGE,
  DEFAULT_EVENTS_EXCHANGE,
  DEFAULT_MESH,
  DEFAULT_RPC_EXCHANGE,
  positiveIntOption,
  timerOption,
  isLogger,
  noopLogger,
} from "@nuropb/protocol";
import type { Logger } from "@nuropb/protocol";
import type { AmqpDialect } from "./frame-codec.ts";

/** Broker-side largest message RabbitMQ 3.x accepts by default (`max_message_size`, 128 MiB). */
export const DEFAULT_MAX_FRAME_BYTES = 134_217_728;

/** AMQP's heartbeat is an unsigned 16-bit number of seconds. */
const MAX_HEARTBEAT_SEC = 65_535;

/**
 * Heartbeat proposed to the broker unless the options or the URL name one, in seconds. RabbitMQ's
 * documentation recommends 5 to 20 s; amqplib and the broker each give up on a silent peer after
 * two to three intervals, so a half-open link (a dead NAT entry, a frozen peer) is noticed within
 * 20 to 30 s instead of the 120 to 180 s of RabbitMQ's own 60 s default.
 */
export const DEFAULT_HEARTBEAT_SEC = 10;

/** A connection target given field by field instead of as a URL (PROTOCOL.md §11). */
export interface AmqpConnectionSettings {
  /** @defaultValue `"localhost"` */
  readonly host?: string;
  /** @defaultValue 5672, or 5671 with `tls: true` */
  readonly port?: number;
  /** @defaultValue `"guest"` */
  readonly username?: string;
  /** @defaultValue `"guest"` */
  readonly password?: string;
  /** The mesh. @defaultValue `"nuropb"` */
  readonly vhost?: string;
  /** Connect with TLS (`amqps`). @defaultValue false */
  readonly tls?: boolean;
}

/**
 * TLS settings. PEM contents (`ca`, `cert`, `key`) or file paths (`caFile`, `certFile`, `keyFile`;
 * read at connect). Giving any of them on an `amqp://` target switches it to TLS, as Python does
 * for `cafile`.
 */
export interface AmqpTlsOptions {
  /** PEM CA certificate(s) to trust instead of Node's default store. */
  readonly ca?: string | Uint8Array | readonly (string | Uint8Array)[];
  /** Path of a PEM CA file. */
  readonly caFile?: string;
  /** PEM client certificate (for `EXTERNAL`-style or mutual TLS). */
  readonly cert?: string | Uint8Array;
  /** Path of a PEM client certificate. */
  readonly certFile?: string;
  /** PEM client private key. */
  readonly key?: string | Uint8Array;
  /** Path of a PEM client private key. */
  readonly keyFile?: string;
  /** Passphrase of `key`. */
  readonly passphrase?: string;
  /**
   * Verify the server's certificate chain and host name. Python NuroPb defaults to false; we do
   * not. @defaultValue true
   */
  readonly verify?: boolean;
  /** TLS server name (SNI and host name check). @defaultValue the host, when it is a name */
  readonly servername?: string;
}

/** Reconnection backoff: capped exponential with jitter. */
export interface AmqpReconnectOptions {
  /** First delay after a loss, in milliseconds. @defaultValue 100 */
  readonly initialDelayMs?: number;
  /** Largest delay between attempts, in milliseconds. @defaultValue 5000 */
  readonly maxDelayMs?: number;
}

/**
 * Which broker of a cluster a connection (and every reconnection) tries first: `in-order` tries
 * the addresses as listed, `random` in a fresh random order each time (spreads clients over the
 * nodes).
 */
export type AmqpFailoverOrder = "in-order" | "random";

/** Options of {@link createAmqpTransport}. */
export interface AmqpTransportOptions {
  /**
   * The broker: `amqp[s]://user:pass@host:port/vhost` (the vhost is the mesh and is required in a
   * URL) or a settings object. The nodes of a cluster may be listed with commas,
   * `amqp://user:pass@host1:5672,host2:5673/vhost` (see `urls`).
   * @defaultValue `{}` (guest@localhost:5672, vhost `nuropb`)
   */
  readonly url?: string | AmqpConnectionSettings;
  /**
   * The nodes of a RabbitMQ cluster, each a URL or a settings object, instead of `url`. They must
   * name the same vhost, user and password (one cluster). When a node cannot be reached or the
   * connection to it is lost, the transport connects to another (see `failover`) and declares
   * its topology there again.
   */
  readonly urls?: readonly (string | AmqpConnectionSettings)[];
  /** The order in which the nodes of a cluster are tried. @defaultValue `"in-order"` */
  readonly failover?: AmqpFailoverOrder;
  /** @defaultValue `"nuropb-rpc-exchange"` */
  readonly rpcExchange?: string;
  /** @defaultValue `"nuropb-events-exchange"` */
  readonly eventsExchange?: string;
  /** Dead-letter exchange named in every service queue's arguments. @defaultValue `"nuropb-dl-exchange"` */
  readonly dlExchange?: string;
  /**
   * AMQP heartbeat proposed to the broker, in seconds. The smaller of this and the broker's own
   * (RabbitMQ's `heartbeat` setting, 60 s by default) is used; when either is 0 the other one is
   * (amqplib's negotiation), so 0 takes the broker's value and only both at 0 turn heartbeats off.
   * A `?heartbeat=` URL parameter is used when this is not given.
   * @defaultValue 10 (see {@link DEFAULT_HEARTBEAT_SEC})
   */
  readonly heartbeatSec?: number;
  /**
   * Publish requests persistent (`delivery_mode` 2), as commands and events always are. A request
   * survives a broker restart only if persistent, but its caller's connection does not (the caller
   * gets a typed error, not an answer), so the default leaves requests transient: RabbitMQ then
   * need not write them to disk before confirming them. Responses are always transient.
   * @defaultValue false
   */
  readonly persistentRequests?: boolean;
  /**
   * How the NuroPb header fields travel on this mesh. `"python"` is the wire of PROTOCOL.md §3
   * (a headers table), which Python peers read. `"compact"` carries them in AMQP basic properties
   * instead (cheaper for Node and RabbitMQ alike), for meshes with no Python participant: the mesh
   * must have been marked with `markMeshCompact()`, or `connect()` fails. Whatever the setting,
   * the transport reads both forms, and it answers a request in the form the request came in.
   * See the README, "Compact dialect".
   * @defaultValue `"python"`
   */
  readonly dialect?: AmqpDialect;
  /**
   * How long `connect()` keeps trying an unreachable broker, in milliseconds; also the limit of one
   * connection attempt. Refusals (bad credentials, missing vhost, TLS failures) fail at once.
   * @defaultValue 10000
   */
  readonly connectTimeoutMs?: number;
  /** TLS settings (also enabled by an `amqps://` URL). */
  readonly tls?: AmqpTlsOptions;
  /** Backoff after a lost connection. */
  readonly reconnect?: AmqpReconnectOptions;
  /** Largest body `send` accepts, in bytes. @defaultValue 134217728 (RabbitMQ's default limit) */
  readonly maxFrameBytes?: number;
  /** How long `close()` waits for outstanding publisher confirms, in milliseconds. @defaultValue 5000 */
  readonly closeTimeoutMs?: number;
  /**
   * RabbitMQ `connection_name` (shown by the management UI, used to close a connection by name).
   * @defaultValue `nuropb-ts-{mesh}-{random}`
   */
  readonly connectionName?: string;
  /** Extra AMQP client properties (informational). */
  readonly clientProperties?: Readonly<Record<string, string>>;
  /** @defaultValue `noopLogger` */
  readonly logger?: Logger;
}

/** A fully resolved connection target. */
export interface ResolvedTarget {
  readonly tls: boolean;
  readonly host: string;
  readonly port: number;
  readonly username: string;
  readonly password: string;
  readonly vhost: string;
  /** Heartbeat from a `?heartbeat=` URL parameter, if any. */
  readonly heartbeatSec: number | undefined;
}

/** The resolved, validated options the transport runs with. */
export interface ResolvedOptions {
  /** The first of `targets` (they share vhost, user and password). */
  readonly target: ResolvedTarget;
  /** Every broker address, at least one. */
  readonly targets: readonly ResolvedTarget[];
  readonly failover: AmqpFailoverOrder;
  readonly rpcExchange: string;
  readonly eventsExchange: string;
  readonly dlExchange: string;
  readonly heartbeatSec: number;
  readonly persistentRequests: boolean;
  readonly dialect: AmqpDialect;
  readonly connectTimeoutMs: number;
  readonly tls: AmqpTlsOptions | undefined;
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  readonly maxFrameBytes: number;
  readonly closeTimeoutMs: number;
  readonly connectionName: string;
  readonly clientProperties: Readonly<Record<string, string>>;
  readonly logger: Logger;
}

/**
 * Validates transport options and fills in defaults.
 * @throws TypeError naming the offending option; a URL's credentials are never echoed.
 */
const OWNER = "createAmqpTransport";

export function resolveOptions(options: AmqpTransportOptions): ResolvedOptions {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("createAmqpTransport: options must be an object");
  }
  const tls = options.tls;
  if (tls !== undefined) checkTls(tls);
  const targets = resolveTargets(options, tls);
  const target = targets[0] as ResolvedTarget;
  const failover = options.failover ?? "in-order";
  if (failover !== "in-order" && failover !== "random") {
    throw new TypeError(
      `failover must be "in-order" or "random", got ${typeof failover === "string" ? `"${failover}"` : typeof failover}`,
    );
  }
  const heartbeatSec = intInRange(
    "heartbeatSec",
    options.heartbeatSec ?? target.heartbeatSec ?? DEFAULT_HEARTBEAT_SEC,
    0,
    MAX_HEARTBEAT_SEC,
    "seconds",
  );
  const persistentRequests: unknown =
    options.persistentRequests === undefined ? false : options.persistentRequests;
  if (typeof persistentRequests !== "boolean") {
    throw new TypeError(
      `persistentRequests must be a boolean, got ${persistentRequests === null ? "null" : typeof persistentRequests}`,
    );
  }
  const dialect = options.dialect ?? "python";
  if (dialect !== "python" && dialect !== "compact") {
    throw new TypeError(
      `dialect must be "python" or "compact", got ${typeof dialect === "string" ? `"${dialect}"` : typeof dialect}`,
    );
  }
  const connectTimeoutMs = timerOption(OWNER, "connectTimeoutMs", options.connectTimeoutMs, 10_000);
  const reconnect = options.reconnect ?? {};
  if (typeof reconnect !== "object" || reconnect === null) {
    throw new TypeError("reconnect must be an object ({ initialDelayMs, maxDelayMs })");
  }
  const initialDelayMs = timerOption(
    OWNER,
    "reconnect.initialDelayMs",
    reconnect.initialDelayMs,
    100,
  );
  const maxDelayMs = timerOption(OWNER, "reconnect.maxDelayMs", reconnect.maxDelayMs, 5_000);
  if (maxDelayMs < initialDelayMs) {
    throw new TypeError("reconnect.maxDelayMs must not be smaller than reconnect.initialDelayMs");
  }
  const maxFrameBytes = positiveIntOption(
    OWNER,
    "maxFrameBytes",
    options.maxFrameBytes,
    DEFAULT_MAX_FRAME_BYTES,
  );
  const closeTimeoutMs = timerOption(OWNER, "closeTimeoutMs", options.closeTimeoutMs, 5_000);
  const connectionName =
    options.connectionName ??
    `nuropb-ts-${target.vhost}-${globalThis.crypto.randomUUID().slice(0, 8)}`;
  if (typeof connectionName !== "string" || connectionName === "") {
    throw new TypeError("connectionName must be a non-empty string");
  }
  const clientProperties = options.clientProperties ?? {};
  if (
    typeof clientProperties !== "object" ||
    clientProperties === null ||
    Array.isArray(clientProperties)
  ) {
    throw new TypeError("clientProperties must be an object of string values");
  }
  for (const [k, v] of Object.entries(clientProperties)) {
    if (typeof v !== "string") throw new TypeError(`clientProperties.${k} must be a string`);
  }
  const logger = options.logger ?? noopLogger;
  if (!isLogger(logger)) {
    throw new TypeError(
      "logger must implement the Logger interface of @nuropb/protocol (debug, info, warn, error, child)",
    );
  }
  return {
    target,
    targets,
    failover,
    rpcExchange: name("rpcExchange", options.rpcExchange ?? DEFAULT_RPC_EXCHANGE),
    eventsExchange: name("eventsExchange", options.eventsExchange ?? DEFAULT_EVENTS_EXCHANGE),
    dlExchange: name("dlExchange", options.dlExchange ?? DEFAULT_DL_EXCHANGE),
    heartbeatSec,
    persistentRequests,
    dialect,
    connectTimeoutMs,
    tls,
    initialDelayMs,
    maxDelayMs,
    maxFrameBytes,
    closeTimeoutMs,
    connectionName,
    clientProperties,
    logger,
  };
}

/**
 * The broker addresses of `url` (possibly a comma list) or `urls`.
 * @throws TypeError when both or an empty list are given, or when the addresses do not share
 * vhost, user and password (credentials are never echoed).
 */
function resolveTargets(
  options: AmqpTransportOptions,
  tls: AmqpTlsOptions | undefined,
): ResolvedTarget[] {
  if (options.urls !== undefined && options.url !== undefined) {
    throw new TypeError("give url or urls, not both");
  }
  let targets: ResolvedTarget[];
  if (options.urls !== undefined) {
    if (!Array.isArray(options.urls) || options.urls.length === 0) {
      throw new TypeError("urls must be a non-empty array of AMQP URLs or settings objects");
    }
    targets = options.urls.flatMap((u, i) => {
      if (typeof u === "string") return resolveTargetList(u, tls);
      if (typeof u !== "object" || u === null) {
        throw new TypeError(`urls[${i}] must be an AMQP URL string or a settings object`);
      }
      return [resolveTarget(u, tls)];
    });
  } else {
    const url = options.url ?? {};
    targets = typeof url === "string" ? resolveTargetList(url, tls) : [resolveTarget(url, tls)];
  }
  const first = targets[0] as ResolvedTarget;
  for (const t of targets) {
    if (t.vhost !== first.vhost) {
      throw new TypeError(
        `every broker address must name the same vhost (the mesh): '${first.vhost}' and '${t.vhost}'`,
      );
    }
    if (t.username !== first.username || t.password !== first.password) {
      throw new TypeError("every broker address must use the same user and password (one cluster)");
    }
  }
  return targets;
}

/**
 * Resolves a URL that may list several hosts, `amqp://user:pass@h1:p1,h2:p2/vhost`, to one
 * target per host (credentials, vhost and parameters shared).
 * @throws TypeError as {@link resolveTarget}; credentials are never echoed.
 */
export function resolveTargetList(url: string, tls?: AmqpTlsOptions): ResolvedTarget[] {
  if (typeof url !== "string") throw new TypeError("url must be an AMQP URL string");
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^@/?#]*@)?([^/?#]*)(.*)$/is.exec(url);
  if (m === null || !(m[3] ?? "").includes(",")) return [resolveTarget(url, tls)];
  const hosts = (m[3] as string).split(",");
  if (hosts.some((h) => h.trim() === "")) {
    throw new TypeError(`url lists an empty host: ${obfuscateUrl(url)}`);
  }
  return hosts.map((h) => resolveTarget(`${m[1]}${m[2] ?? ""}${h.trim()}${m[4] ?? ""}`, tls));
}

/**
 * Resolves a URL or settings object to a connection target (PROTOCOL.md §2.1, §11).
 * @throws TypeError naming the problem; credentials are never echoed.
 */
export function resolveTarget(
  url: string | AmqpConnectionSettings,
  tls?: AmqpTlsOptions,
): ResolvedTarget {
  const tlsFromOptions =
    typeof tls === "object" &&
    tls !== null &&
    (tls.ca !== undefined ||
      tls.caFile !== undefined ||
      tls.cert !== undefined ||
      tls.certFile !== undefined);
  if (typeof url === "string") return parseAmqpUrl(url, tlsFromOptions);
  if (typeof url !== "object" || url === null) {
    throw new TypeError("url must be an AMQP URL string or a settings object");
  }
  if (url.tls !== undefined && typeof url.tls !== "boolean") {
    throw new TypeError(`url.tls must be a boolean, got ${typeof url.tls}`);
  }
  const useTls = url.tls ?? tlsFromOptions;
  const host = url.host ?? "localhost";
  if (typeof host !== "string" || host === "")
    throw new TypeError("url.host must be a non-empty string");
  const port = url.port ?? (useTls ? 5671 : 5672);
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new TypeError(`url.port must be an integer from 1 to 65535, got ${String(port)}`);
  }
  const username = url.username ?? "guest";
  const password = url.password ?? "guest";
  if (typeof username !== "string") throw new TypeError("url.username must be a string");
  if (typeof password !== "string") throw new TypeError("url.password must be a string");
  const vhost = url.vhost ?? DEFAULT_MESH;
  if (typeof vhost !== "string" || vhost === "")
    throw new TypeError("url.vhost must be a non-empty string");
  return { tls: useTls, host, port, username, password, vhost, heartbeatSec: undefined };
}

function parseAmqpUrl(text: string, tlsFromOptions: boolean): ResolvedTarget {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new TypeError(
      `url is not a valid AMQP URL (expected amqp[s]://user:password@host:port/vhost): ${obfuscateUrl(text)}`,
    );
  }
  const shown = obfuscateUrl(text);
  if (u.protocol !== "amqp:" && u.protocol !== "amqps:") {
    throw new TypeError(`url must use the amqp: or amqps: scheme, got '${u.protocol}' in ${shown}`);
  }
  if (u.hostname === "") throw new TypeError(`url has no host: ${shown}`);
  const tls = u.protocol === "amqps:" || tlsFromOptions;
  const port = u.port === "" ? (tls ? 5671 : 5672) : Number(u.port);
  if (port < 1) throw new TypeError(`url port must be from 1 to 65535, got ${port}: ${shown}`);
  const path = u.pathname;
  if (path === "" || path === "/") {
    throw new TypeError(
      `url has no vhost: the mesh is the URL's path, e.g. amqp://host:5672/nuropb (got ${shown})`,
    );
  }
  const raw = path.slice(1);
  if (raw.includes("/")) {
    throw new TypeError(`url path must be a single vhost segment (encode '/' as %2F): ${shown}`);
  }
  let vhost: string;
  try {
    vhost = decodeURIComponent(raw);
  } catch {
    throw new TypeError(`url vhost is not valid percent-encoding: ${shown}`);
  }
  let heartbeatSec: number | undefined;
  for (const [k, v] of u.searchParams) {
    if (k === "heartbeat") {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > MAX_HEARTBEAT_SEC) {
        throw new TypeError(
          `url parameter heartbeat must be a whole number of seconds from 0 to ${MAX_HEARTBEAT_SEC}: ${shown}`,
        );
      }
      heartbeatSec = n;
    }
    // Other pika/amqplib URL parameters are accepted and ignored; use the options instead.
  }
  const username = u.username === "" && u.password === "" ? "guest" : safeDecode(u.username);
  const password = u.username === "" && u.password === "" ? "guest" : safeDecode(u.password);
  return {
    tls,
    host: u.hostname.replace(/^\[|\]$/g, ""),
    port,
    username,
    password,
    vhost,
    heartbeatSec,
  };
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * A URL with its password replaced by `****`, safe for logs and error messages:
 * `amqp://guest:****@host:5672/vhost`. Text that is not a URL is returned with anything that looks
 * like `user:password@` masked.
 */
export function obfuscateUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== "") u.password = "****";
    return u.toString();
  } catch {
    return String(url).replace(/\/\/([^:/@\s]*):[^@/\s]*@/g, "//$1:****@");
  }
}

/** A printable form of a target (password masked). */
export function describeTarget(t: ResolvedTarget): string {
  const host = t.host.includes(":") ? `[${t.host}]` : t.host;
  return `${t.tls ? "amqps" : "amqp"}://${encodeURIComponent(t.username)}:****@${host}:${t.port}/${encodeURIComponent(t.vhost)}`;
}

/**
 * Removes a password (and URL forms carrying it) from foreign text (a broker or socket message)
 * headed for a log or an error. A password equal to the user name is left to the URL masking.
 */
export function redact(text: string, password: string | undefined, username?: string): string {
  let out = text.replace(/\/\/([^:/@\s]*):[^@/\s]*@/g, "//$1:****@");
  if (password !== undefined && password.length >= 4 && password !== username) {
    out = out.split(password).join("****");
  }
  return out;
}

function checkTls(tls: AmqpTlsOptions): void {
  if (typeof tls !== "object" || tls === null) {
    throw new TypeError(
      `tls must be an object of TLS settings, got ${tls === null ? "null" : typeof tls} (to connect with TLS, use an amqps:// URL or url.tls: true)`,
    );
  }
  if (tls.verify !== undefined && typeof tls.verify !== "boolean") {
    throw new TypeError("tls.verify must be a boolean");
  }
  if (tls.ca !== undefined && tls.caFile !== undefined)
    throw new TypeError("give tls.ca or tls.caFile, not both");
  if (tls.cert !== undefined && tls.certFile !== undefined) {
    throw new TypeError("give tls.cert or tls.certFile, not both");
  }
  if (tls.key !== undefined && tls.keyFile !== undefined)
    throw new TypeError("give tls.key or tls.keyFile, not both");
}

function name(option: string, value: string): string {
  if (typeof value !== "string" || value === "" || value.length > 255) {
    throw new TypeError(`${option} must be a non-empty string of at most 255 characters`);
  }
  return value;
}

function intInRange(option: string, value: number, min: number, max: number, unit: string): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new TypeError(
      `${option} must be an integer from ${min} to ${max} ${unit}, got ${String(value)}`,
    );
  }
  return value;
}
