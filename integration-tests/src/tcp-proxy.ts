import { connect, createServer } from "node:net";
import type { AddressInfo, Server, Socket } from "node:net";

/** A TCP proxy on `127.0.0.1` in front of one server, able to play a dead network. */
export interface TcpProxy {
  /** The port to connect to instead of the target's. */
  readonly port: number;
  /** Connections forwarding right now (frozen and ended ones not counted). */
  readonly live: number;
  /** Connections frozen so far. */
  readonly frozen: number;
  /**
   * Makes every connection open right now half-open: from now on no byte goes either way on it,
   * yet both of its sockets stay open, and nothing is closed or reset, whatever the ends send (as
   * when a NAT entry expires or a peer freezes). Connections made afterwards are forwarded
   * normally, so a participant that gives up on its connection can reconnect through the proxy.
   */
  freeze(): void;
  /** Destroys every socket (frozen ones too) and stops listening. Idempotent. */
  close(): Promise<void>;
}

interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
  frozen: boolean;
}

/**
 * Starts a {@link TcpProxy} on a free port forwarding to `host:port`.
 * @example
 * ```ts
 * const proxy = await startTcpProxy({ port: brokerPort });
 * // connect to 127.0.0.1:proxy.port …
 * proxy.freeze();
 * ```
 */
export async function startTcpProxy(target: {
  readonly host?: string;
  readonly port: number;
}): Promise<TcpProxy> {
  const host = target.host ?? "127.0.0.1";
  const pairs = new Set<Pair>();
  let frozenCount = 0;
  let closing: Promise<void> | undefined;

  const server: Server = createServer((client) => {
    const upstream = connect({ host, port: target.port });
    const pair: Pair = { client, upstream, frozen: false };
    pairs.add(pair);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const forward = (from: Socket, to: Socket): void => {
      from.on("data", (chunk: Buffer) => {
        if (!pair.frozen) to.write(chunk);
      });
      // A half-close travels on while forwarding; a frozen link carries nothing, FIN included.
      from.on("end", () => {
        if (!pair.frozen) to.end();
      });
    };
    forward(client, upstream);
    forward(upstream, client);
    const drop = (): void => {
      if (pair.frozen) return; // a dead link tells neither end anything
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    // Errors (a reset from one end) end the pair; a frozen pair swallows them.
    client.on("error", drop);
    upstream.on("error", drop);
    client.on("close", drop);
    upstream.on("close", drop);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });

  return {
    port: (server.address() as AddressInfo).port,
    get live() {
      return [...pairs].filter((p) => !p.frozen).length;
    },
    get frozen() {
      return frozenCount;
    },
    freeze() {
      for (const pair of pairs) {
        if (pair.frozen) continue;
        pair.frozen = true;
        frozenCount++;
        // Stop reading: what either end sends waits in kernel buffers and is never delivered.
        pair.client.pause();
        pair.upstream.pause();
      }
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const pair of pairs) {
          pair.client.destroy();
          pair.upstream.destroy();
        }
        pairs.clear();
        server.close(() => resolve());
      });
      return closing;
    },
  };
}
