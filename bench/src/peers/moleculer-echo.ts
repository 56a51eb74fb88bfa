import { ServiceBroker } from "moleculer";
import type { BrokerOptions, Context } from "moleculer";
import { runTag } from "../rr.ts";

/** A Moleculer echo service on one broker and a client broker, both in this process. */
export interface MoleculerEcho {
  call(params: unknown): Promise<unknown>;
  close(): Promise<void>;
}

/**
 * Two Moleculer brokers on `transporter` (own namespace per call): `server` runs the `echo.echo`
 * action, which returns `ctx.params` (decoded by the serializer, encoded again for the reply);
 * `call` goes from the client broker through the transporter. Moleculer's logging is off.
 */
export async function startMoleculerEcho(
  transporter: NonNullable<BrokerOptions["transporter"]>,
): Promise<MoleculerEcho> {
  const tag = runTag();
  const common: BrokerOptions = {
    namespace: `bench-${tag}`,
    transporter,
    logger: false,
    requestTimeout: 10_000,
    metrics: false,
    tracing: false,
  };
  const server = new ServiceBroker({ ...common, nodeID: `bench-server-${tag}` });
  server.createService({
    name: "echo",
    actions: {
      echo(ctx: Context<Record<string, unknown>>): Record<string, unknown> {
        return ctx.params;
      },
    },
  });
  const client = new ServiceBroker({ ...common, nodeID: `bench-client-${tag}` });
  const close = async (): Promise<void> => {
    await client.stop().catch(() => undefined);
    await server.stop().catch(() => undefined);
  };
  try {
    await server.start();
    await client.start();
    await client.waitForServices("echo", 15_000);
  } catch (err) {
    await close();
    throw err;
  }
  return {
    call: (params) => client.call("echo.echo", params as Record<string, unknown>),
    close,
  };
}
