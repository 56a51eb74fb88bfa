import { createClient, type MeshClient } from "@nuropb/core";
import type { Transport } from "@nuropb/protocol";
import type { BrokerUrl } from "./args.ts";
import { CliError, ExitCode, usageError } from "./errors.ts";
import { scrub } from "./scrub.ts";
import type { TransportFactory } from "./transports.ts";

export type { TransportFactory } from "./transports.ts";
export { amqpTransportFactory, urlTransportFactory } from "./transports.ts";

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
        hint:
          broker.kind === "amqp"
            ? "is RabbitMQ running there? check the URL, the credentials and the vhost (`nuropb mesh setup` creates it)"
            : `is ${broker.kind === "nats" ? "NATS (with JetStream)" : "Redis"} running there? check the URL and the credentials`,
      },
    );
  }
  return { client, close };
}
