/**
 * all-in-one: a NuroPb service and a client in one process.
 *
 * Runs on the in-memory transport by default; set NUROPB_AMQP_URL (e.g.
 * amqp://guest:guest@localhost:5672/nuropb-example) to run the same code over RabbitMQ.
 */
import { createClient, createService, publishToMesh, type RequestContext } from "@nuropb/core";
import { NuropbAuthorizationError, type Transport } from "@nuropb/protocol";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { runIfMain } from "@nuropb-examples/shared";

/** Checks a bearer token; a real service would verify a JWT here. */
function authorise(token: unknown): { user: string } {
  if (token === "Bearer 1234567890") return { user: "user-1234" };
  throw new NuropbAuthorizationError("unknown token");
}

/** The service: every public method is on the mesh. */
export class ServiceExample {
  test_method(params: { param1: string; param2: { param2a: string } }): string {
    return `response from test_service.test_method(${params.param1}, ${params.param2.param2a})`;
  }

  @publishToMesh({
    authorize: authorise,
    description: "Needs a bearer token; answers with the caller's claims",
  })
  test_requires_user_claims(_params: Record<string, never>, ctx: RequestContext): string {
    const claims = ctx.userClaims as { user: string };
    return `hello ${claims.user}`;
  }
}

/** Builds the transports: memory by default, RabbitMQ when NUROPB_AMQP_URL is set. */
async function makeTransports(): Promise<{
  service: Transport;
  client: Transport;
  close(): Promise<void>;
}> {
  const url = process.env.NUROPB_AMQP_URL;
  if (url !== undefined && url !== "") {
    const { createAmqpTransport, configureMesh } = await import("@nuropb/transport-amqp");
    await configureMesh({ url });
    const service = createAmqpTransport({ url });
    const client = createAmqpTransport({ url });
    return {
      service,
      client,
      close: async () => void (await Promise.all([service.close(), client.close()])),
    };
  }
  const hub = createMemoryHub();
  const service = createMemoryTransport({ hub });
  const client = createMemoryTransport({ hub });
  return {
    service,
    client,
    close: async () => void (await Promise.all([service.close(), client.close()])),
  };
}

/** Runs the example and returns what it printed (the smoke test checks it). */
export async function main(
  print: (line: string) => void = (l) => console.log(l),
): Promise<string[]> {
  const lines: string[] = [];
  const out = (l: string): void => {
    lines.push(l);
    print(l);
  };
  const transports = await makeTransports();
  const service = createService({
    transport: transports.service,
    name: "test_service",
    instance: new ServiceExample(),
  });
  const client = createClient({ transport: transports.client });
  try {
    await service.connect();
    await client.connect();
    out(`transport: ${transports.client.kind}, mesh: ${transports.client.mesh}`);

    const r1 = await client.request(
      "test_service",
      "test_method",
      { param1: "value1", param2: { param2a: "value2a" } },
      { context1: "value1" },
    );
    out(`test_method -> ${JSON.stringify(r1)}`);

    const r2 = await client.request(
      "test_service",
      "test_requires_user_claims",
      {},
      { Authorization: "Bearer 1234567890" },
    );
    out(`test_requires_user_claims -> ${JSON.stringify(r2)}`);

    const refused = await client
      .request("test_service", "test_requires_user_claims", {}, { Authorization: "Bearer wrong" })
      .catch((err: unknown) => err as Error);
    out(
      `test_requires_user_claims with a bad token -> ${refused instanceof Error ? `${refused.name}: ${refused.message}` : String(refused)}`,
    );
  } finally {
    await client.disconnect();
    await service.disconnect();
    await transports.close();
  }
  return lines;
}

runIfMain(import.meta.url, () => main());
