import type { ConnectionOptions } from "nats";
import {
  DEFAULT_MESH,
  isLogger,
  noopLogger,
  positiveIntOption,
  timerOption,
  type Logger,
} from "@nuropb/protocol";
import { isSubjectToken } from "./names.ts";
import { CONSUMER_TICK_MS } from "./service-consumer.ts";

/** Options of {@link createNatsTransport}. */
export interface NatsTransportOptions {
  /**
   * NATS server URL(s), e.g. `"nats://127.0.0.1:4222"`. The server must have JetStream enabled.
   * The servers of a cluster may be listed in one string with commas,
   * `"nats://user:pass@h1:4222,h2:4222"` (the scheme and credentials of the first apply to the
   * others that give none); the client connects to one and fails over to the others.
   */
  readonly servers: string | readonly string[];
  /**
   * Replicas of the streams the transport creates (services, events, dead letters): 1 on a
   * single server, 3 (or 5) on a JetStream cluster so that messages survive the loss of a
   * server. Applies when a stream is created; an existing stream keeps its own.
   * @defaultValue 1
   */
  readonly replicas?: number;
  /**
   * The mesh: first token of every subject and part of every stream name. One subject token
   * (letters, digits, `_`, `-`).
   * @defaultValue `"nuropb"`
   */
  readonly mesh?: string;
  /**
   * Pull window for a service queue whose spec asks for `prefetch: 0` (unlimited): JetStream
   * pulls in batches, so "unlimited" still needs a bound. Deliveries, not bytes.
   * @defaultValue 256
   */
  readonly prefetch?: number;
  /** Logger; the transport logs as `{ component: "transport-nats" }`. @defaultValue noopLogger */
  readonly logger?: Logger;
  /** Connection name shown by the server's monitoring. @defaultValue `"nuropb-{mesh}"` */
  readonly name?: string;
  /** Time to establish the first connection, in milliseconds (at most 2147483647). @defaultValue 5000 */
  readonly connectTimeoutMs?: number;
  /** Pause between reconnect attempts, in milliseconds (at most 2147483647; attempts never stop). @defaultValue 500 */
  readonly reconnectWaitMs?: number;
  /**
   * How long `send` waits for JetStream to confirm a request, command or event, in
   * milliseconds; it then rejects a retryable `NuropbTransportError` (the frame may still arrive).
   * Less than `ackWaitMs`, at most 2147483647.
   * @defaultValue 10000, or half of `ackWaitMs` when that is less
   */
  readonly publishTimeoutMs?: number;
  /**
   * JetStream ack wait, in milliseconds: a delivery held this long by a consumer that died is
   * delivered again. Live consumers send progress for deliveries they still hold, so a slow
   * handler is never redelivered behind its back. From 750 (three ticks of the consumer's 250 ms
   * clock, so that progress reaches the server in time) to 2147483647. Declaring a consumer
   * that exists raises its ack wait to this, never lowers it (delete the consumer to lower it);
   * progress is paced by the lower of this and the consumer's.
   * @defaultValue 30000
   */
  readonly ackWaitMs?: number;
  /** Longest an event waits in the events stream for a subscribing service, in milliseconds. @defaultValue 86400000 (1 day) */
  readonly eventRetentionMs?: number;
  /** How long dead letters are kept in the dead-letter stream, in milliseconds. @defaultValue 604800000 (7 days) */
  readonly deadLetterRetentionMs?: number;
  /**
   * Largest body `send` accepts, in bytes; lowered at connect to what the server accepts
   * (`max_payload` less 16 KiB for headers).
   * @defaultValue 1032192 (1 MiB less 16 KiB)
   */
  readonly maxFrameBytes?: number;
  /**
   * Where requests travel. `"core"`: core NATS request/reply, as NATS's own services framework
   * does — each instance of a service subscribes to its request subjects in one queue group per
   * service, the reply goes to the caller's response inbox, and a request that no instance is
   * subscribed for fails at once with `NuropbNotDeliveredError`. A request held by an instance
   * that crashes is lost: the caller fails typed at its ttl. `"jetstream"`: requests are stored
   * in the service's stream as commands are (a crashed instance's requests are redelivered).
   * Commands and events always go through JetStream.
   * @defaultValue `"core"`
   */
  readonly requests?: NatsRequestMode;
  /**
   * How core-NATS requests and their replies carry a frame's fields. `"compact"`: in front of the
   * body, in a message without NATS headers (see compact-frame.ts; a fifth less CPU per request
   * than headers). `"headers"`: in a `Nuropb-Frame` header, as nuropb 0.1.0 writes them. This
   * version reads both; while a mesh still has participants that read only headers (a rolling
   * upgrade from 0.1.0), give the new ones `"headers"`. What JetStream stores always has headers.
   * @defaultValue `"compact"`
   */
  readonly coreFraming?: NatsCoreFraming;
  /** Extra options for `nats` `connect()` (authentication, TLS…); `servers`, `name` and reconnect settings above win. */
  readonly connectionOptions?: Partial<ConnectionOptions>;
}

/** How core requests and replies are framed: see {@link NatsTransportOptions.coreFraming}. */
export const NatsCoreFraming = { compact: "compact", headers: "headers" } as const;
export type NatsCoreFraming = (typeof NatsCoreFraming)[keyof typeof NatsCoreFraming];

/** Where requests travel: see {@link NatsTransportOptions.requests}. */
export const NatsRequestMode = { core: "core", jetstream: "jetstream" } as const;
export type NatsRequestMode = (typeof NatsRequestMode)[keyof typeof NatsRequestMode];

/** {@link NatsTransportOptions} with defaults applied. */
export interface ResolvedNatsOptions {
  readonly servers: readonly string[];
  readonly replicas: number;
  readonly mesh: string;
  readonly prefetch: number;
  readonly logger: Logger;
  readonly name: string;
  readonly connectTimeoutMs: number;
  readonly reconnectWaitMs: number;
  readonly publishTimeoutMs: number;
  readonly ackWaitMs: number;
  readonly eventRetentionMs: number;
  readonly deadLetterRetentionMs: number;
  readonly maxFrameBytes: number;
  readonly requests: NatsRequestMode;
  readonly coreFraming: NatsCoreFraming;
  readonly connectionOptions: Partial<ConnectionOptions>;
}

/** Default of {@link NatsTransportOptions.maxFrameBytes}. */
export const DEFAULT_NATS_MAX_FRAME_BYTES = 1_048_576 - 16_384;

/** Smallest ack wait: three ticks of the service consumer's clock, which sends the progress. */
const MIN_ACK_WAIT_MS = 3 * CONSUMER_TICK_MS;

const OWNER = "createNatsTransport";
const positiveInt = (name: string, value: number | undefined, fallback: number): number =>
  positiveIntOption(OWNER, name, value, fallback);
const delayMs = (name: string, value: number | undefined, fallback: number, min = 1): number =>
  timerOption(OWNER, name, value, fallback, min);

/**
 * Validates options once, at the factory, and applies defaults.
 * @throws TypeError naming the first bad option.
 */
export function resolveNatsOptions(options: NatsTransportOptions): ResolvedNatsOptions {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("createNatsTransport: options are required ({ servers })");
  }
  const servers = Array.isArray(options.servers)
    ? (options.servers as readonly unknown[]).flatMap((s) =>
        typeof s === "string" ? splitServerList(s) : [s],
      )
    : typeof options.servers === "string"
      ? splitServerList(options.servers)
      : options.servers;
  if (
    !Array.isArray(servers) ||
    servers.length === 0 ||
    servers.some((s) => typeof s !== "string" || s === "")
  ) {
    throw new TypeError("createNatsTransport: 'servers' must be a URL or a non-empty list of URLs");
  }
  const replicas = options.replicas ?? 1;
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5) {
    throw new TypeError(
      `createNatsTransport: 'replicas' must be an integer from 1 to 5, got ${String(replicas as unknown)}`,
    );
  }
  const mesh = options.mesh ?? DEFAULT_MESH;
  if (!isSubjectToken(mesh) || !/^[A-Za-z0-9_-]+$/.test(mesh)) {
    throw new TypeError(
      `createNatsTransport: 'mesh' must be one subject token of letters, digits, '_' or '-', got '${mesh}'`,
    );
  }
  if (options.logger !== undefined && !isLogger(options.logger)) {
    throw new TypeError(
      "createNatsTransport: 'logger' must be a Logger (debug, info, warn, error and child functions)",
    );
  }
  if (options.name !== undefined && (typeof options.name !== "string" || options.name === "")) {
    throw new TypeError("createNatsTransport: 'name' must be a non-empty string");
  }
  const connectionOptions: unknown =
    options.connectionOptions === undefined ? {} : options.connectionOptions;
  if (
    typeof connectionOptions !== "object" ||
    connectionOptions === null ||
    Array.isArray(connectionOptions)
  ) {
    throw new TypeError(
      "createNatsTransport: 'connectionOptions' must be an object of nats connect() options",
    );
  }
  const requests = options.requests ?? NatsRequestMode.core;
  if (requests !== NatsRequestMode.core && requests !== NatsRequestMode.jetstream) {
    throw new TypeError(
      `createNatsTransport: 'requests' must be "core" or "jetstream", got '${String(requests as unknown)}'`,
    );
  }
  const coreFraming = options.coreFraming ?? NatsCoreFraming.compact;
  if (coreFraming !== NatsCoreFraming.compact && coreFraming !== NatsCoreFraming.headers) {
    throw new TypeError(
      `createNatsTransport: 'coreFraming' must be "compact" or "headers", got '${String(coreFraming as unknown)}'`,
    );
  }
  const ackWaitMs = delayMs("ackWaitMs", options.ackWaitMs, 30_000, MIN_ACK_WAIT_MS);
  const publishTimeoutMs = delayMs(
    "publishTimeoutMs",
    options.publishTimeoutMs,
    Math.min(10_000, Math.floor(ackWaitMs / 2)),
  );
  // A dead letter is published (waiting for the link up to publishTimeoutMs) before its message
  // is terminated: the ack wait must outlast it, or the message is delivered elsewhere meanwhile.
  if (publishTimeoutMs >= ackWaitMs) {
    throw new TypeError(
      `createNatsTransport: 'ackWaitMs' (${String(ackWaitMs)}) must be greater than 'publishTimeoutMs' (${String(publishTimeoutMs)})`,
    );
  }
  return {
    servers: [...(servers as readonly string[])],
    replicas,
    mesh,
    prefetch: positiveInt("prefetch", options.prefetch, 256),
    logger: (options.logger ?? noopLogger).child({ component: "transport-nats" }),
    name: options.name ?? `nuropb-${mesh}`,
    connectTimeoutMs: delayMs("connectTimeoutMs", options.connectTimeoutMs, 5_000),
    reconnectWaitMs: delayMs("reconnectWaitMs", options.reconnectWaitMs, 500),
    publishTimeoutMs,
    ackWaitMs,
    eventRetentionMs: positiveInt("eventRetentionMs", options.eventRetentionMs, 86_400_000),
    deadLetterRetentionMs: positiveInt(
      "deadLetterRetentionMs",
      options.deadLetterRetentionMs,
      604_800_000,
    ),
    maxFrameBytes: positiveInt(
      "maxFrameBytes",
      options.maxFrameBytes,
      DEFAULT_NATS_MAX_FRAME_BYTES,
    ),
    requests,
    coreFraming,
    connectionOptions: { ...(connectionOptions as Partial<ConnectionOptions>) },
  };
}

/**
 * One server URL per entry of a comma list, `nats://user:pass@h1:4222,h2:4223`: an entry without
 * a scheme takes the first one's scheme and credentials. A string without commas is returned as is.
 */
export function splitServerList(text: string): string[] {
  if (!text.includes(",")) return [text];
  const parts = text.split(",").map((p) => p.trim());
  const head = /^([a-z][a-z0-9+.-]*:\/\/)([^@/]*@)?/i.exec(parts[0] ?? "");
  return parts.map((p, i) => {
    if (p === "") return p; // refused with the other empty entries
    if (i === 0 || head === null || /^[a-z][a-z0-9+.-]*:\/\//i.test(p)) return p;
    return `${head[1]}${head[2] ?? ""}${p}`;
  });
}
