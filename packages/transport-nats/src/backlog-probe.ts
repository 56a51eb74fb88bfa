import { connect, type ConnectionOptions, type JetStreamManager, type NatsConnection } from "nats";
import { DEFAULT_MESH } from "@nuropb/protocol";
import {
  SERVICE_CONSUMER,
  deadLetterStreamName,
  deadLetterSubject,
  serviceStreamName,
} from "./names.ts";

/** A backlog probe on NATS JetStream (for `withLeaderWatch` of `@nuropb/runner`), with its connection. */
export interface NatsBacklogProbe {
  /**
   * The service consumer's `num_pending + num_ack_pending` (not yet delivered, plus delivered and
   * unacknowledged) and the messages of the service's subject in the mesh's dead-letter stream
   * (undefined when that stream does not exist yet).
   */
  (service: string): Promise<{ depth: number; deadLetters: number | undefined }>;
  /** Closes the probe's connection. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link createNatsBacklogProbe}. */
export interface NatsBacklogProbeOptions {
  /** Server URL(s), e.g. `"nats://127.0.0.1:4222"`. */
  readonly servers: string | readonly string[];
  /** Further options of `nats.connect` (credentials, TLS…). */
  readonly options?: Omit<ConnectionOptions, "servers">;
  /** The mesh, as the transport's. @defaultValue "nuropb" */
  readonly mesh?: string;
}

const OWNER = "createNatsBacklogProbe";

/** JetStream's "not found" codes for a stream or consumer. */
const NOT_FOUND = new Set(["10059", "10014"]);

/**
 * Creates a backlog probe on a connection of its own, opened at the first probe.
 * @throws TypeError naming the bad option.
 */
export function createNatsBacklogProbe(options: NatsBacklogProbeOptions): NatsBacklogProbe {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`${OWNER}: options are required ({ servers })`);
  }
  const servers = typeof options.servers === "string" ? [options.servers] : options.servers;
  if (
    !Array.isArray(servers) ||
    servers.length === 0 ||
    !servers.every((s) => typeof s === "string" && s !== "")
  ) {
    throw new TypeError(`${OWNER}: 'servers' must be a URL or a non-empty list of URLs`);
  }
  const mesh = options.mesh ?? DEFAULT_MESH;
  if (typeof mesh !== "string" || mesh === "") {
    throw new TypeError(`${OWNER}: 'mesh' must be a non-empty string`);
  }
  let nc: Promise<NatsConnection> | undefined;
  let jsm: Promise<JetStreamManager> | undefined;
  const manager = (): Promise<JetStreamManager> => {
    nc ??= connect({ ...(options.options ?? {}), servers: [...servers] });
    jsm ??= nc.then((c) => c.jetstreamManager());
    // A failed connect is tried again at the next probe.
    jsm.catch(() => {
      nc = undefined;
      jsm = undefined;
    });
    return jsm;
  };
  const probe = async (
    service: string,
  ): Promise<{ depth: number; deadLetters: number | undefined }> => {
    const m = await manager();
    const info = await m.consumers.info(serviceStreamName(mesh, service), SERVICE_CONSUMER);
    const subject = deadLetterSubject(mesh, service);
    let deadLetters: number | undefined;
    try {
      const dl = await m.streams.info(deadLetterStreamName(mesh), { subjects_filter: subject });
      deadLetters = dl.state.subjects?.[subject] ?? 0;
    } catch (err) {
      const code = (err as { api_error?: { err_code?: number } }).api_error?.err_code;
      if (!NOT_FOUND.has(String(code))) throw err;
    }
    return { depth: info.num_pending + info.num_ack_pending, deadLetters };
  };
  return Object.assign(probe, {
    close: async (): Promise<void> => {
      const c = nc;
      nc = undefined;
      jsm = undefined;
      if (c !== undefined) await (await c.catch(() => undefined))?.close();
    },
  });
}
