import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { MeshParticipant } from "./types.ts";

/** What the health server reads of a participant. */
export type HealthTarget = Pick<MeshParticipant, "connected" | "closed"> & {
  readonly serviceName: string | undefined;
};

/** Options of {@link serveHealth}. */
export interface HealthServerOptions {
  /** The participants (services, clients) whose health is served. */
  readonly participants: readonly HealthTarget[];
  /** TCP port; 0 picks a free one (read it from `server.port`). */
  readonly port: number;
  /**
   * Address to listen on. Orchestrators probe the pod's address, so the default is every
   * interface; the answers name the participants and say whether they are connected, nothing more.
   * @defaultValue every interface ("::" or "0.0.0.0")
   */
  readonly host?: string;
}

/** A running health server; `close()` (or `await using`) stops it. */
export interface HealthServer extends AsyncDisposable {
  /** The port it listens on. */
  readonly port: number;
  /** Stops listening and drops open connections. Idempotent. */
  close(): Promise<void>;
}

/** One participant as `/readyz` and `/healthz` show it. */
interface ParticipantHealth {
  readonly name: string;
  readonly connected: boolean;
  readonly closed: boolean;
}

/**
 * Serves `/healthz` (liveness) and `/readyz` (readiness) over HTTP for orchestrators:
 *
 * - `GET /healthz`: 200 while no participant has closed for good (a closed participant never
 *   comes back: restart the process); 503 otherwise.
 * - `GET /readyz`: 200 when every participant is connected (consuming its queues); 503 while one
 *   is connecting, reconnecting or closed.
 *
 * Both answer JSON: `{ "status": "ok" | "unavailable", "participants": [{ name, connected,
 * closed }] }`; HEAD gets the status alone. Built on `node:http`, no dependencies.
 * @throws TypeError for bad options (at once); the promise rejects when the port cannot be
 * listened on.
 * @example
 * await using health = await serveHealth({ participants: [service], port: 8080 });
 */
export function serveHealth(options: HealthServerOptions): Promise<HealthServer> {
  return listen(checkHealthOptions(options));
}

async function listen(options: HealthServerOptions): Promise<HealthServer> {
  const { participants, port, host } = options;
  const closed = new Set<HealthTarget>();
  for (const p of participants) void p.closed().then(() => closed.add(p));
  const snapshot = (): ParticipantHealth[] =>
    participants.map((p) => ({
      name: p.serviceName ?? "client",
      connected: p.connected,
      closed: closed.has(p),
    }));

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path !== "/healthz" && path !== "/readyz")
      return answer(res, req, 404, { error: "not found" });
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("allow", "GET, HEAD");
      return answer(res, req, 405, { error: "method not allowed" });
    }
    const all = snapshot();
    const ok = path === "/healthz" ? all.every((p) => !p.closed) : all.every((p) => p.connected);
    answer(res, req, ok ? 200 : 503, { status: ok ? "ok" : "unavailable", participants: all });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }));
  return {
    port: (server.address() as AddressInfo).port,
    close,
    [Symbol.asyncDispose]: close,
  };
}

function answer(res: ServerResponse, req: IncomingMessage, status: number, body: object): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
  });
  res.end(req.method === "HEAD" ? undefined : text);
}

function checkHealthOptions(options: HealthServerOptions): HealthServerOptions {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("serveHealth: options must be an object");
  }
  const { participants, port, host } = options;
  if (
    !Array.isArray(participants) ||
    participants.length === 0 ||
    !participants.every(
      (p: unknown) =>
        typeof p === "object" &&
        p !== null &&
        typeof (p as HealthTarget).closed === "function" &&
        "connected" in p,
    )
  ) {
    throw new TypeError(
      "serveHealth: options.participants must be a non-empty array of participants",
    );
  }
  if (typeof port !== "number" || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new TypeError("serveHealth: options.port must be an integer from 0 to 65535");
  }
  if (host !== undefined && (typeof host !== "string" || host === "")) {
    throw new TypeError("serveHealth: options.host must be a non-empty string");
  }
  return options;
}
