/**
 * gateway: the `shop` service and the NuroPb gateway in front of it, reached by curl and by a
 * small browser page the gateway serves at `/shop/`.
 *
 * On the in-memory transport (the default) the service and the gateway share one hub in this
 * process. With NUROPB_AMQP_URL set both run on RabbitMQ, each on its own connection: the
 * gateway knows only the broker, as it would in front of any mesh. Either way it serves until
 * Ctrl-C.
 */
import { readFile } from "node:fs/promises";
import { createService } from "@nuropb/core";
import { createGateway } from "@nuropb/gateway";
import type { Gateway } from "@nuropb/gateway";
import type { Transport } from "@nuropb/protocol";
import { configureMesh, createAmqpTransport, obfuscateUrl } from "@nuropb/transport-amqp";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { SERVICE_NAME, ShopService } from "./shop-service.ts";

/** Where the gateway serves the example's page. */
export const PAGE_PATH = "/shop/";

const PAGE_FILE = new URL("../public/index.html", import.meta.url);

/** Options of {@link startShopGateway}; the defaults are what `npm start` uses. */
export interface ShopGatewayOptions {
  /** RabbitMQ URL; empty means the memory transport. @defaultValue process.env.NUROPB_AMQP_URL */
  readonly amqpUrl?: string;
  /** The gateway's port; 0 takes a free one. @defaultValue NUROPB_GATEWAY_PORT, else 8080 */
  readonly port?: number;
  /** The address the gateway listens on. @defaultValue "127.0.0.1" (this machine only) */
  readonly host?: string;
}

/** The service and the gateway, running. */
export interface RunningShopGateway extends AsyncDisposable {
  /** The gateway's base URL (`http://127.0.0.1:8080`). */
  readonly url: string;
  /** Where the mesh is: "the memory transport" or the broker's URL without its password. */
  readonly mesh: string;
  readonly gateway: Gateway;
  /** Stops the gateway, then the service, then the transports. */
  close(): Promise<void>;
}

/** The curl line that asks the gateway for a quote. */
export function curlLine(url: string): string {
  return `curl -s -X POST ${url}/api/${SERVICE_NAME}/quote -H 'content-type: application/json' -d '{"item":"tea","quantity":3}'`;
}

/** @throws TypeError for a port that is not a whole number from 0 to 65535. */
function portOf(options: ShopGatewayOptions): number {
  const env = process.env.NUROPB_GATEWAY_PORT;
  const port = options.port ?? (env === undefined || env === "" ? 8080 : Number(env));
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new TypeError(
      `the gateway's port must be a whole number from 0 to 65535, got ${String(options.port ?? env)}`,
    );
  }
  return port;
}

/** Starts the `shop` service and the gateway in front of it. */
export async function startShopGateway(
  options: ShopGatewayOptions = {},
): Promise<RunningShopGateway> {
  const amqpUrl = options.amqpUrl ?? process.env.NUROPB_AMQP_URL ?? "";
  const port = portOf(options);
  let serviceTransport: Transport;
  let gatewayTransport: Transport;
  if (amqpUrl === "") {
    const hub = createMemoryHub();
    serviceTransport = createMemoryTransport({ hub });
    gatewayTransport = createMemoryTransport({ hub });
  } else {
    await configureMesh({ url: amqpUrl }); // idempotent: the vhost and exchanges, if missing
    serviceTransport = createAmqpTransport({ url: amqpUrl });
    gatewayTransport = createAmqpTransport({ url: amqpUrl });
  }
  const service = createService({
    transport: serviceTransport,
    name: SERVICE_NAME,
    instance: new ShopService(),
  });
  await service.connect();

  // Only what is listed here is reachable from HTTP and the WebSocket.
  const gateway = createGateway({
    transport: gatewayTransport,
    title: "shop gateway",
    expose: {
      services: { [SERVICE_NAME]: { requests: ["quote", "placeOrder"] } },
      subscribe: [`${SERVICE_NAME}.#`],
    },
  });
  // The example's page, on the gateway's own server (the fastify instance).
  const page = await readFile(PAGE_FILE, "utf8");
  gateway.server.get(PAGE_PATH, (_req, reply) => reply.type("text/html; charset=utf-8").send(page));
  gateway.server.get(PAGE_PATH.slice(0, -1), (_req, reply) => reply.redirect(PAGE_PATH));

  let url: string;
  try {
    url = await gateway.listen({ port, host: options.host ?? "127.0.0.1" });
  } catch (err) {
    await gateway.close();
    await service.disconnect();
    await gatewayTransport.close();
    await serviceTransport.close();
    throw err;
  }
  const close = async (): Promise<void> => {
    await gateway.close(); // its sockets, the HTTP server, its link to the mesh
    await service.disconnect(); // finishes the calls in progress first
    await gatewayTransport.close();
    await serviceTransport.close();
  };
  return {
    url,
    mesh: amqpUrl === "" ? "the memory transport" : obfuscateUrl(amqpUrl),
    gateway,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** Options of {@link main}. */
export interface MainOptions extends ShopGatewayOptions {
  /** Receives each line the example prints. @defaultValue console.log */
  readonly print?: (line: string) => void;
  /** Stops the example, as SIGINT and SIGTERM do. */
  readonly signal?: AbortSignal;
}

/** Runs the example until stopped; returns the lines it printed. */
export async function main(options: MainOptions = {}): Promise<string[]> {
  const lines: string[] = [];
  const print = (line: string): void => {
    lines.push(line);
    (options.print ?? console.log)(line);
  };
  const running = await startShopGateway(options);
  const { url } = running;
  print(`${SERVICE_NAME} and the gateway on ${running.mesh}`);
  print(`page:     ${url}${PAGE_PATH}`);
  print(`explorer: ${url}/explorer/`);
  print(`API:      ${url}/docs/ (OpenAPI at ${url}/openapi.json)`);
  print(`try:      ${curlLine(url)}`);
  print("Ctrl-C to stop");
  await untilStopped(options.signal);
  await running.close();
  print("stopped");
  return lines;
}

/** Resolves on SIGINT, SIGTERM or when `signal` aborts. */
function untilStopped(signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const stop = (): void => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      signal?.removeEventListener("abort", stop);
      resolve();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
    if (signal?.aborted === true) stop();
    else signal?.addEventListener("abort", stop);
  });
}

if (import.meta.url === `file://${process.argv[1] ?? ""}`) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
