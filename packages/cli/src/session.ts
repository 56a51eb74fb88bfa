import { createClient, type MeshClient } from "@nuropb/core";
import { newId, type Transport } from "@nuropb/protocol";
import { createAmqpTransport } from "@nuropb/transport-amqp";
import type { BrokerUrl } from "./args.ts";
import { CliError, ExitCode, usageError } from "./errors.ts";
import { scrub } from "./scrub.ts";

/** Makes the transport the CLI talks through; tests pass one that returns a memory transport. */
export type TransportFactory = (
  url: string,
  settings: { readonly connectTimeoutMs: number },
) => Transport;

/** The default {@link TransportFactory}: RabbitMQ, one connection named `nuropb-cli-…`. */
export const amqpTransportFactory: TransportFactory = (url, settings) =>
  createAmqpTransport({
    url,
    connectTimeoutMs: settings.connectTimeoutMs,
    connectionName: `nuropb-cli-${newId().slice(0, 8)}`,
  });

/** A connected client and how to let go of it. */
export interface Session {
  /** The connected client. */
  readonly client: MeshClient;
  /** Disconnects the client and closes the transport. Never throws. */
  close(): Promise<void>;
}

/**
 * Connects a client to the mesh.
 * @throws CliError (usage) when the transport refuses its options (a URL parameter, say).
 * @throws CliError (transport) when the broker cannot be reached or refuses the connection.
 */
export async function openSession(
  broker: BrokerUrl,
  settings: { readonly connectTimeoutMs: number },
  factory: TransportFactory,
): Promise<Session> {
  let transport: Transport;
  try {
    transport = factory(broker.url, settings);
  } catch (err) {
    // The transport checks its options as it is made, before connecting: a bad one is a usage error.
    if (err instanceof TypeError || err instanceof RangeError) {
      throw usageError(scrub(err.message, broker));
    }
    throw err;
  }
  const client = createClient({ transport, name: "cli" });
  const close = async (): Promise<void> => {
    await client.disconnect().catch(() => undefined);
    await transport.close().catch(() => undefined);
  };
  try {
    await client.connect();
  } catch (err) {
    await close();
    const reason = scrub((err as Error)?.message ?? String(err), broker);
    throw new CliError(
      reason.startsWith("cannot connect") ? reason : `cannot connect to ${broker.shown}: ${reason}`,
      ExitCode.transport,
      {
        cause: err,
        hint: "is RabbitMQ running there? check the URL, the credentials and the vhost (`nuropb mesh setup` creates it)",
      },
    );
  }
  return { client, close };
}
