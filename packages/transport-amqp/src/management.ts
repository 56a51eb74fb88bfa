import {
  DEFAULT_DL_EXCHANGE,
  DEFAULT_DL_QUEUE,
  DEFAULT_EVENTS_EXCHANGE,
  DEFAULT_RPC_EXCHANGE,
  NuropbTransportError,
  noopLogger,
} from "@nuropb/protocol";
import type { EventLogRetention, Logger } from "@nuropb/protocol";
import type { Channel, ChannelModel } from "amqplib";
import { channelError, openConnection } from "./connection.ts";
import { obfuscateUrl, redact, resolveTarget } from "./options.ts";
import type { AmqpConnectionSettings, AmqpTlsOptions, ResolvedTarget } from "./options.ts";

/** How to reach the RabbitMQ management HTTP API. */
export interface ManagementOptions {
  /**
   * API base, e.g. `http://guest:guest@localhost:15672/api`. Credentials may sit in the URL or
   * in `username` / `password`.
   */
  readonly url: string;
  /** @defaultValue the URL's user, else `"guest"` */
  readonly username?: string;
  /** @defaultValue the URL's password, else `"guest"` */
  readonly password?: string;
  /** Per-request timeout in milliseconds. @defaultValue 10000 */
  readonly timeoutMs?: number;
}

/** A management API target: its base URL (with or without credentials) or {@link ManagementOptions}. */
export type ManagementTarget = string | ManagementOptions;

/**
 * Builds an AMQP URL, percent-encoding each part: `amqp[s]://user:pass@host:port/vhost`.
 * @example buildAmqpUrl({ host: "rabbit", vhost: "nuropb" }) // "amqp://guest:guest@rabbit:5672/nuropb"
 */
export function buildAmqpUrl(settings: AmqpConnectionSettings = {}): string {
  const t = resolveTarget(settings);
  const host = t.host.includes(":") ? `[${t.host}]` : t.host;
  return `${t.tls ? "amqps" : "amqp"}://${encodeURIComponent(t.username)}:${encodeURIComponent(t.password)}@${host}:${t.port}/${encodeURIComponent(t.vhost)}`;
}

/** Parts of a management API URL. */
export interface ManagementUrlParts {
  /** Use https. @defaultValue false */
  readonly tls?: boolean;
  /** @defaultValue `"localhost"` */
  readonly host?: string;
  /** @defaultValue 15672, or 15671 with `tls` */
  readonly port?: number;
  /** @defaultValue `"guest"` */
  readonly username?: string;
  /** @defaultValue `"guest"` */
  readonly password?: string;
}

/** Builds a management API base URL: `http[s]://user:pass@host:port/api`. */
export function buildManagementUrl(parts: ManagementUrlParts = {}): string {
  const tls = parts.tls ?? false;
  const host = parts.host ?? "localhost";
  const port = parts.port ?? (tls ? 15671 : 15672);
  const user = encodeURIComponent(parts.username ?? "guest");
  const pass = encodeURIComponent(parts.password ?? "guest");
  return `${tls ? "https" : "http"}://${user}:${pass}@${host.includes(":") ? `[${host}]` : host}:${port}/api`;
}

/**
 * The management API URL for an AMQP URL (PROTOCOL.md §2.1): `amqp`→`http`, `amqps`→`https`; an
 * explicit port + 10000 (5672→15672), else 15672 / 15671; host defaults to `localhost`; path
 * `/api`; credentials carried over.
 * @throws TypeError for a URL that is not amqp/amqps (the password is not echoed).
 */
export function managementUrlFromAmqpUrl(
  amqpUrl: string,
  options: { readonly port?: number } = {},
): string {
  let u: URL;
  try {
    u = new URL(amqpUrl);
  } catch {
    throw new TypeError(`not a valid AMQP URL: ${obfuscateUrl(amqpUrl)}`);
  }
  if (u.protocol !== "amqp:" && u.protocol !== "amqps:") {
    throw new TypeError(`not an amqp:// or amqps:// URL: ${obfuscateUrl(amqpUrl)}`);
  }
  const tls = u.protocol === "amqps:";
  const port = options.port ?? (u.port !== "" ? Number(u.port) + 10_000 : tls ? 15_671 : 15_672);
  const creds = u.username !== "" || u.password !== "" ? `${u.username}:${u.password}@` : "";
  return `${tls ? "https" : "http"}://${creds}${u.hostname === "" ? "localhost" : u.hostname}:${port}/api`;
}

interface Api {
  readonly base: string;
  readonly shown: string;
  readonly auth: string;
  readonly password: string;
  readonly timeoutMs: number;
}

function api(target: ManagementTarget): Api {
  const o: ManagementOptions = typeof target === "string" ? { url: target } : target;
  let u: URL;
  try {
    u = new URL(o.url);
  } catch {
    throw new TypeError(`not a valid management API URL: ${obfuscateUrl(String(o.url))}`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new TypeError(`management API URL must be http(s): ${obfuscateUrl(o.url)}`);
  }
  const username = o.username ?? (u.username !== "" ? decodeURIComponent(u.username) : "guest");
  const password = o.password ?? (u.password !== "" ? decodeURIComponent(u.password) : "guest");
  u.username = "";
  u.password = "";
  const base = u.toString().replace(/\/+$/, "");
  return {
    base,
    shown: obfuscateUrl(o.url),
    auth: `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`,
    password,
    timeoutMs: o.timeoutMs ?? 10_000,
  };
}

/**
 * One management API call. Returns the parsed JSON body (or undefined), or `null` for a 404.
 * @throws NuropbTransportError on network failures and other non-2xx answers.
 */
async function call(a: Api, method: string, path: string, body?: unknown): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(`${a.base}${path}`, {
      method,
      headers: {
        authorization: a.auth,
        accept: "application/json",
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(a.timeoutMs),
    });
  } catch (err) {
    throw new NuropbTransportError(
      `management API ${method} ${path} at ${a.shown} failed: ${redact((err as Error)?.message ?? String(err), a.password)}`,
      { cause: err, retryable: true },
    );
  }
  const text = await res.text().catch(() => "");
  if (res.status === 404) return null;
  if (!res.ok) {
    throw new NuropbTransportError(
      `management API ${method} ${path} at ${a.shown} answered ${res.status} ${res.statusText}: ${redact(text.slice(0, 300), a.password)}`,
      { retryable: res.status >= 500, details: { status: res.status } },
    );
  }
  if (text === "") return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

const enc = encodeURIComponent;

/** Names of all virtual hosts. @throws NuropbTransportError */
export async function listVhosts(target: ManagementTarget): Promise<string[]> {
  const list = await call(api(target), "GET", "/vhosts");
  return Array.isArray(list) ? list.map((v) => String((v as { name?: unknown }).name)) : [];
}

/** Whether a virtual host exists. @throws NuropbTransportError */
export async function vhostExists(target: ManagementTarget, vhost: string): Promise<boolean> {
  return (await call(api(target), "GET", `/vhosts/${enc(vhost)}`)) !== null;
}

/**
 * Creates a virtual host unless it exists (`GET` then `PUT {api}/vhosts/{vhost}`). The calling user
 * gets full permissions on it, as RabbitMQ grants them to the creator.
 * @returns true when it was created, false when it already existed.
 * @throws NuropbTransportError
 */
export async function createVhost(target: ManagementTarget, vhost: string): Promise<boolean> {
  checkVhost(vhost);
  const a = api(target);
  if ((await call(a, "GET", `/vhosts/${enc(vhost)}`)) !== null) return false;
  await call(a, "PUT", `/vhosts/${enc(vhost)}`, {});
  return true;
}

/**
 * Deletes a virtual host and everything in it.
 * @returns true when it was deleted, false when it did not exist.
 * @throws NuropbTransportError
 */
export async function deleteVhost(target: ManagementTarget, vhost: string): Promise<boolean> {
  checkVhost(vhost);
  const a = api(target);
  if ((await call(a, "GET", `/vhosts/${enc(vhost)}`)) === null) return false;
  return (await call(a, "DELETE", `/vhosts/${enc(vhost)}`)) !== null;
}

function checkVhost(vhost: string): void {
  if (typeof vhost !== "string" || vhost === "")
    throw new TypeError("vhost must be a non-empty string");
}

/** Options of {@link configureMesh} and {@link teardownMesh}. */
export interface ConfigureMeshOptions {
  /** AMQP target of the mesh; its vhost is the mesh. @defaultValue guest@localhost:5672, vhost `nuropb` */
  readonly url?: string | AmqpConnectionSettings;
  /** The mesh (vhost); overrides the URL's. */
  readonly vhost?: string;
  /** Management API; @defaultValue derived from `url` (PROTOCOL.md §2.1) */
  readonly management?: ManagementTarget;
  /** Create the vhost through the management API when missing. @defaultValue true */
  readonly createVhost?: boolean;
  /** @defaultValue `"nuropb-rpc-exchange"` */
  readonly rpcExchange?: string;
  /** @defaultValue `"nuropb-events-exchange"` */
  readonly eventsExchange?: string;
  /** @defaultValue `"nuropb-dl-exchange"` */
  readonly dlExchange?: string;
  /** Dead-letter queue bound to the DL exchange. @defaultValue `"nuropb-dl-queue"` */
  readonly dlQueue?: string;
  /** TLS settings for the AMQP connection. */
  readonly tls?: AmqpTlsOptions;
  /** Limit of the AMQP connection attempt, in milliseconds. @defaultValue 10000 */
  readonly connectTimeoutMs?: number;
  /**
   * Sets up the mesh's event log with this retention (a stream queue bound to the events
   * exchange, its retention in a policy; see the README's "Event history"), or updates the
   * retention of the one there. Absent: the log is left as it is (none on a new mesh).
   */
  readonly eventLog?: EventLogRetention;
  /** @defaultValue `noopLogger` */
  readonly logger?: Logger;
}

/** What {@link configureMesh} found and did. */
export interface MeshSetupResult {
  readonly vhost: string;
  readonly vhostCreated: boolean;
  /** Objects declared by this call (`exchange:name`, `queue:name`). */
  readonly declared: readonly string[];
  /** Objects that already existed and were left as they are. */
  readonly existing: readonly string[];
}

/**
 * Idempotent mesh setup (PROTOCOL.md §2, §12), compatible with Python's `configure_nuropb_rmq`:
 * creates the vhost through the management API, then the DL exchange (fanout, durable), the DL queue
 * (non-durable) bound to it, the events exchange (topic, durable) and the rpc exchange (direct,
 * durable). Objects that exist are checked passively and left alone, so running it against a mesh
 * Python set up never fails on differing flags.
 * @throws NuropbTransportError when the broker or its management API refuses.
 * @example
 * ```ts
 * await configureMesh({ url: "amqp://guest:guest@localhost:5672/nuropb" });
 * ```
 */
export async function configureMesh(options: ConfigureMeshOptions = {}): Promise<MeshSetupResult> {
  const log = (options.logger ?? noopLogger).child({
    component: "transport-amqp",
    op: "configureMesh",
  });
  const target = meshTarget(options);
  const rpcExchange = options.rpcExchange ?? DEFAULT_RPC_EXCHANGE;
  const eventsExchange = options.eventsExchange ?? DEFAULT_EVENTS_EXCHANGE;
  const dlExchange = options.dlExchange ?? DEFAULT_DL_EXCHANGE;
  const dlQueue = options.dlQueue ?? DEFAULT_DL_QUEUE;
  let vhostCreated = false;
  if (options.createVhost ?? true) {
    vhostCreated = await createVhost(managementFor(options, target), target.vhost);
    if (vhostCreated) log.info("vhost created", { vhost: target.vhost });
  }
  const conn = await openConnection({
    target,
    tls: options.tls,
    heartbeatSec: 0,
    timeoutMs: options.connectTimeoutMs ?? 10_000,
    connectionName: `nuropb-ts-configure-mesh-${target.vhost}`,
    clientProperties: {},
  });
  conn.on("error", () => undefined); // a failure surfaces through the operation that hits it
  const declared: string[] = [];
  const existing: string[] = [];
  try {
    const ensureExchange = async (
      name: string,
      type: "direct" | "topic" | "fanout",
    ): Promise<void> => {
      if (await exists(conn, (ch) => ch.checkExchange(name))) {
        existing.push(`exchange:${name}`);
        return;
      }
      await onChannel(conn, `cannot declare exchange ${name}`, target.password, (ch) =>
        ch.assertExchange(name, type, { durable: true, autoDelete: false, internal: false }),
      );
      declared.push(`exchange:${name}`);
    };
    await ensureExchange(dlExchange, "fanout");
    if (await exists(conn, (ch) => ch.checkQueue(dlQueue))) existing.push(`queue:${dlQueue}`);
    else {
      // Non-durable, as Python declares it (pika's default).
      await onChannel(conn, `cannot declare queue ${dlQueue}`, target.password, (ch) =>
        ch.assertQueue(dlQueue, { durable: false, exclusive: false, autoDelete: false }),
      );
      declared.push(`queue:${dlQueue}`);
    }
    await onChannel(conn, `cannot bind ${dlQueue} to ${dlExchange}`, target.password, (ch) =>
      ch.bindQueue(dlQueue, dlExchange, dlQueue),
    );
    await ensureExchange(eventsExchange, "topic");
    await ensureExchange(rpcExchange, "direct");
    if (options.eventLog !== undefined) {
      const made = await ensureEventLog(conn, {
        management: managementFor(options, target),
        vhost: target.vhost,
        eventsExchange,
        retention: options.eventLog,
        password: target.password,
      });
      declared.push(...made.declared);
      existing.push(...made.existing);
    }
  } finally {
    await conn.close().catch(() => undefined);
  }
  log.info("mesh configured", { vhost: target.vhost, declared, existing });
  return { vhost: target.vhost, vhostCreated, declared, existing };
}

/**
 * Removes a mesh: deletes its vhost (and with it every exchange, queue and message in it).
 * @returns true when the vhost existed.
 * @throws NuropbTransportError
 */
export async function teardownMesh(
  options: Pick<ConfigureMeshOptions, "url" | "vhost" | "management"> = {},
): Promise<boolean> {
  const target = meshTarget(options);
  return deleteVhost(managementFor(options, target), target.vhost);
}

function meshTarget(options: Pick<ConfigureMeshOptions, "url" | "vhost" | "tls">): ResolvedTarget {
  const url = options.url ?? {};
  if (typeof url === "string" && options.vhost !== undefined) {
    // The URL may omit the vhost when it is given separately.
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw new TypeError(`not a valid AMQP URL: ${obfuscateUrl(url)}`);
    }
    u.pathname = `/${encodeURIComponent(options.vhost)}`;
    return resolveTarget(u.toString(), options.tls);
  }
  const t = resolveTarget(url, options.tls);
  return options.vhost !== undefined ? { ...t, vhost: options.vhost } : t;
}

/** The management API of a mesh: `options.management`, else derived from the AMQP target. */
export function managementFor(
  options: Pick<ConfigureMeshOptions, "url" | "management">,
  target: ResolvedTarget,
): ManagementTarget {
  if (options.management !== undefined) return options.management;
  if (typeof options.url === "string") return managementUrlFromAmqpUrl(options.url);
  return {
    url: buildManagementUrl({ tls: target.tls, host: target.host, port: target.port + 10_000 }),
    username: target.username,
    password: target.password,
  };
}

/** Runs a passive check on a throwaway channel: true when it passes, false on 404. */
async function exists(
  conn: ChannelModel,
  check: (ch: Channel) => Promise<unknown>,
): Promise<boolean> {
  const ch = await conn.createChannel();
  ch.on("error", () => undefined);
  try {
    await check(ch);
    await ch.close().catch(() => undefined);
    return true;
  } catch (err) {
    if ((err as { code?: unknown }).code === 404) return false;
    throw err;
  }
}

async function onChannel(
  conn: ChannelModel,
  what: string,
  password: string,
  fn: (ch: Channel) => Promise<unknown>,
): Promise<void> {
  const ch = await conn.createChannel();
  ch.on("error", () => undefined);
  try {
    await fn(ch);
  } catch (err) {
    throw channelError(err, what, password);
  }
  await ch.close().catch(() => undefined);
}

// ---------------------------------------------------------------- event log (issue #16)

/** The mesh's event log: a stream queue of the vhost, bound to the events exchange with `#`. */
export const EVENT_LOG_QUEUE = "nuropb-event-log";
/** The policy that holds the log's retention (a policy can be changed; queue arguments cannot). */
const EVENT_LOG_POLICY = "nuropb-event-log";
/** Beats a catch-all policy of the vhost (priority 0) for the log's queue. */
const EVENT_LOG_POLICY_PRIORITY = 10;
/** Bounds of the stream's segment size: RabbitMQ drops whole segments, so it is the granularity. */
const MIN_SEGMENT_BYTES = 64 * 1024;
const MAX_SEGMENT_BYTES = 500_000_000;

/** @throws TypeError for limits that are not positive whole numbers */
export function assertEventLogRetention(retention: EventLogRetention): void {
  if (typeof retention !== "object" || retention === null) {
    throw new TypeError("retention must be an object { maxAgeMs, maxBytes }");
  }
  for (const key of ["maxAgeMs", "maxBytes"] as const) {
    const v = retention[key];
    if (!Number.isSafeInteger(v) || v < 1) {
      throw new TypeError(`retention.${key} must be a positive integer, got ${String(v)}`);
    }
  }
}

/**
 * The stream's segment size for a retention: an eighth of `maxBytes`, from 64 KiB to 500 MB
 * (RabbitMQ's default). Fixed when the stream is created: later retention changes keep it.
 */
export function eventLogSegmentBytes(retention: EventLogRetention): number {
  return Math.min(
    MAX_SEGMENT_BYTES,
    Math.max(MIN_SEGMENT_BYTES, Math.floor(retention.maxBytes / 8)),
  );
}

/** What {@link ensureEventLog} needs. */
export interface EventLogSetup {
  readonly management: ManagementTarget;
  readonly vhost: string;
  readonly eventsExchange: string;
  readonly retention: EventLogRetention;
  /** Kept out of error texts. */
  readonly password: string;
}

/**
 * Creates the event log of a mesh, or brings its retention to `retention`. Idempotent:
 * 1. the retention goes into the policy `nuropb-event-log` (management API): `max-age` in whole
 *    seconds (rounded up) and `max-length-bytes`. A policy, not queue arguments, because RabbitMQ
 *    applies the lower of the two, so arguments could never be raised later;
 * 2. the events exchange, when missing, as {@link configureMesh} declares it;
 * 3. the stream queue (`x-queue-type: stream`, its segment size from the first retention), left as
 *    it is when it exists;
 * 4. its binding to the events exchange with `#`: every event is stored, whoever published it.
 * @throws TypeError for a bad retention.
 * @throws NuropbTransportError when the broker or its management API refuses.
 */
export async function ensureEventLog(
  conn: ChannelModel,
  setup: EventLogSetup,
): Promise<{ declared: string[]; existing: string[] }> {
  assertEventLogRetention(setup.retention);
  const { vhost, eventsExchange, password } = setup;
  const declared: string[] = [];
  const existing: string[] = [];
  await call(api(setup.management), "PUT", `/policies/${enc(vhost)}/${EVENT_LOG_POLICY}`, {
    pattern: `^${EVENT_LOG_QUEUE}$`,
    "apply-to": "queues",
    priority: EVENT_LOG_POLICY_PRIORITY,
    definition: {
      "max-age": `${Math.ceil(setup.retention.maxAgeMs / 1000)}s`,
      "max-length-bytes": setup.retention.maxBytes,
    },
  });
  declared.push(`policy:${EVENT_LOG_POLICY}`);
  if (!(await exists(conn, (ch) => ch.checkExchange(eventsExchange)))) {
    await onChannel(conn, `cannot declare exchange ${eventsExchange}`, password, (ch) =>
      ch.assertExchange(eventsExchange, "topic", {
        durable: true,
        autoDelete: false,
        internal: false,
      }),
    );
    declared.push(`exchange:${eventsExchange}`);
  }
  if (await exists(conn, (ch) => ch.checkQueue(EVENT_LOG_QUEUE))) {
    existing.push(`queue:${EVENT_LOG_QUEUE}`);
  } else {
    try {
      await onChannel(conn, `cannot declare the event log ${EVENT_LOG_QUEUE}`, password, (ch) =>
        ch.assertQueue(EVENT_LOG_QUEUE, {
          durable: true,
          exclusive: false,
          autoDelete: false,
          arguments: {
            "x-queue-type": "stream",
            "x-stream-max-segment-size-bytes": eventLogSegmentBytes(setup.retention),
          },
        }),
      );
      declared.push(`queue:${EVENT_LOG_QUEUE}`);
    } catch (err) {
      // Declared meanwhile by another set-up (with another segment size): use that one.
      if (!(await exists(conn, (ch) => ch.checkQueue(EVENT_LOG_QUEUE)))) throw err;
      existing.push(`queue:${EVENT_LOG_QUEUE}`);
    }
  }
  await onChannel(conn, `cannot bind ${EVENT_LOG_QUEUE} to ${eventsExchange}`, password, (ch) =>
    ch.bindQueue(EVENT_LOG_QUEUE, eventsExchange, "#"),
  );
  return { declared, existing };
}
