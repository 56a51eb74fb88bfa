import fastifyWebsocket from "@fastify/websocket";
import fastify from "fastify";
import type { FastifyInstance } from "fastify";
import { WEBSOCKET_PATH } from "@nuropb/gateway-client";
import { NuropbConnectionClosedError } from "@nuropb/protocol";
import type { Logger } from "@nuropb/protocol";
import { EventFanout } from "./event-fanout.ts";
import { registerHttpRoutes } from "./http-routes.ts";
import { MeshLink } from "./mesh-link.ts";
import { GatewayOperations } from "./operations.ts";
import { resolveOptions } from "./options.ts";
import type { GatewayOptions, ResolvedOptions } from "./options.ts";
import { registerPages } from "./pages.ts";
import { SealedRelay } from "./sealed-relay.ts";
import { GatewayConnection } from "./ws-connection.ts";

/** Counters of a running gateway. */
export interface GatewayStats {
  /** Open WebSocket connections. */
  readonly connections: number;
  /** Subscriptions across them. */
  readonly subscriptions: number;
  /** Event messages handed to connections. */
  readonly eventsDelivered: number;
  /** Connections the gateway closed because they read too slowly. */
  readonly slowConsumerCloses: number;
  /** Connections dropped for not answering heartbeats. */
  readonly heartbeatCloses: number;
  /** The largest send buffer any connection reached, in bytes. */
  readonly peakBufferedBytes: number;
  /** Sealed requests waiting for their answer. */
  readonly sealedPending: number;
}

/** Where {@link Gateway.listen} listens. */
export interface ListenOptions {
  /** @defaultValue 0 (a free port) */
  readonly port?: number;
  /** @defaultValue "127.0.0.1" */
  readonly host?: string;
}

/** A running (or ready to run) gateway. */
export interface Gateway extends AsyncDisposable {
  /**
   * The fastify instance: add hooks, CORS, TLS termination or routes of your own before
   * {@link listen}. Its routes are this package's; its version follows this package's.
   */
  readonly server: FastifyInstance;
  /** The base URL once listening (`http://127.0.0.1:port`), else undefined. */
  readonly url: string | undefined;
  /** Connects to the mesh (if not yet) and starts listening; resolves with the base URL. */
  listen(options?: ListenOptions): Promise<string>;
  /**
   * Connects to the mesh and makes the routes ready without listening (for `server.inject`).
   * @throws NuropbTransportError when the mesh cannot be reached.
   */
  ready(): Promise<void>;
  /** Counters (connections, subscriptions, slow consumers closed…). */
  stats(): GatewayStats;
  /**
   * Closes the WebSocket connections (1001), stops listening, disconnects from the mesh. The
   * transport stays open (whoever made it closes it). Idempotent.
   */
  close(): Promise<void>;
}

/**
 * Makes a gateway: REST, OpenAPI, WebSocket and the explorer in front of a mesh. Nothing of the
 * mesh is reachable through it unless `expose` names it. Does no I/O until `listen()`/`ready()`.
 * @throws TypeError for bad options.
 * @example
 * ```ts
 * const gateway = createGateway({
 *   transport: createAmqpTransport({ url }),
 *   expose: { services: { orders: { requests: ["getOrder"] } }, subscribe: ["orders.#"] },
 * });
 * const base = await gateway.listen({ port: 8080, host: "0.0.0.0" });
 * // curl -X POST $base/api/orders/getOrder -H 'content-type: application/json' -d '{"id":"42"}'
 * ```
 */
export function createGateway(options: GatewayOptions): Gateway {
  return new NuropbGateway(resolveOptions(options));
}

class NuropbGateway implements Gateway {
  readonly server: FastifyInstance;
  readonly #options: ResolvedOptions;
  readonly #logger: Logger;
  readonly #fanout: EventFanout;
  readonly #mesh: MeshLink;
  readonly #ops: GatewayOperations;
  readonly #relay: SealedRelay;
  readonly #connections = new Set<GatewayConnection>();
  #url: string | undefined;
  #readying: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #slowConsumerCloses = 0;
  #heartbeatCloses = 0;
  #peakBufferedBytes = 0;

  constructor(options: ResolvedOptions) {
    this.#options = options;
    this.#logger = options.logger;
    this.#fanout = new EventFanout(options.logger);
    this.#mesh = new MeshLink(options, (e) => this.#fanout.publish(e));
    this.#ops = new GatewayOperations(options, this.#mesh);
    this.#relay = new SealedRelay(options.transport, options.name, options.logger);
    this.server = fastify({
      logger: false,
      bodyLimit: options.bodyLimitBytes,
      // Behind a proxy, set `trustProxy` on your own fastify… this one reports the socket peer.
      trustProxy: false,
    });
    this.#routes();
  }

  get url(): string | undefined {
    return this.#url;
  }

  #routes(): void {
    const { server } = this;
    const options = this.#options;
    registerHttpRoutes(server, this.#ops, {
      title: options.title,
      bodyLimitBytes: options.bodyLimitBytes,
      logger: this.#logger,
    });
    void server.register(fastifyWebsocket, {
      options: { maxPayload: options.ws.maxMessageBytes, perMessageDeflate: false },
      // The gateway closes its connections itself (with 1001) in close().
      preClose: (done) => {
        for (const c of this.#connections) c.shutdown();
        done();
      },
    });
    void server.register(async (scope) => {
      scope.get(WEBSOCKET_PATH, { websocket: true }, (socket, req) => {
        const auth = req.headers.authorization;
        const connection = new GatewayConnection(
          socket,
          auth === undefined || auth === "" ? undefined : auth,
          req.ip,
          {
            ops: this.#ops,
            fanout: this.#fanout,
            relay: this.#relay,
            options,
            logger: this.#logger,
            onEnding: (end) => {
              if (end === "slow-consumer") this.#slowConsumerCloses++;
              if (end === "heartbeat") this.#heartbeatCloses++;
            },
            onEnd: (c) => this.#onEnd(c),
          },
        );
        this.#connections.add(connection);
      });
    });
    if (options.pages) void server.register((scope) => registerPages(scope, options.title));
  }

  #onEnd(connection: GatewayConnection): void {
    this.#connections.delete(connection);
    if (connection.peakBufferedBytes > this.#peakBufferedBytes) {
      this.#peakBufferedBytes = connection.peakBufferedBytes;
    }
  }

  ready(): Promise<void> {
    if (this.#closing !== undefined) {
      return Promise.reject(new NuropbConnectionClosedError("the gateway is closed"));
    }
    this.#readying ??= (async () => {
      await this.#mesh.participant.connect();
      await this.server.ready();
      this.#heartbeat = setInterval(() => {
        for (const c of this.#connections) c.heartbeat();
      }, this.#options.ws.heartbeatIntervalMs);
      this.#heartbeat.unref();
      this.#logger.info("gateway ready", {
        services: this.#ops.serviceNames().length,
        subscribe: this.#options.subscribe.length,
      });
    })().catch(async (err: unknown) => {
      this.#readying = undefined;
      await this.#mesh.participant.disconnect().catch(() => undefined);
      throw err;
    });
    return this.#readying;
  }

  async listen(options: ListenOptions = {}): Promise<string> {
    await this.ready();
    if (this.#url !== undefined) return this.#url;
    const host = options.host ?? "127.0.0.1";
    await this.server.listen({ port: options.port ?? 0, host });
    const address = this.server.server.address();
    const port = typeof address === "object" && address !== null ? address.port : options.port;
    const shownHost = host.includes(":") ? `[${host}]` : host;
    this.#url = `http://${shownHost === "0.0.0.0" ? "127.0.0.1" : shownHost}:${String(port)}`;
    this.#logger.info("gateway listening", { url: this.#url });
    return this.#url;
  }

  stats(): GatewayStats {
    let peak = this.#peakBufferedBytes;
    for (const c of this.#connections) if (c.peakBufferedBytes > peak) peak = c.peakBufferedBytes;
    return {
      connections: this.#connections.size,
      subscriptions: this.#fanout.subscriptions,
      eventsDelivered: this.#fanout.delivered,
      slowConsumerCloses: this.#slowConsumerCloses,
      heartbeatCloses: this.#heartbeatCloses,
      peakBufferedBytes: peak,
      sealedPending: this.#relay.pending,
    };
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#heartbeat);
      await this.server.close().catch((err: unknown) => {
        this.#logger.warn("closing the HTTP server failed", { error: (err as Error).message });
      });
      await this.#relay.stop();
      await this.#mesh.participant.disconnect().catch(() => undefined);
      this.#url = undefined;
      this.#logger.info("gateway closed");
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
