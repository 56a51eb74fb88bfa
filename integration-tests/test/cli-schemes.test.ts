import { createService } from "@nuropb/core";
import { newId, type Transport } from "@nuropb/protocol";
import { createNatsTransport } from "@nuropb/transport-nats";
import { createRedisTransport } from "@nuropb/transport-redis";
import { afterAll, describe, expect, it } from "vitest";
import { launchNats } from "../src/brokers/nats.ts";
import { launchRedis } from "../src/brokers/redis.ts";
import { cli, spawnCli } from "../src/cli-harness.ts";

// The `nuropb` command on NATS and Redis: the transport follows the URL's scheme.
const nats = await launchNats();
const redis = await launchRedis();
afterAll(async () => {
  await Promise.all([nats.stop(), redis.stop()]);
});

const brokers = [
  {
    name: "NATS",
    url: (mesh: string) => `${nats.url}/${mesh}`,
    transport: (mesh: string): Transport => createNatsTransport({ servers: nats.url, mesh }),
  },
  {
    name: "Redis",
    url: (mesh: string) => `${redis.url}?mesh=${mesh}`,
    transport: (mesh: string): Transport => createRedisTransport({ url: redis.url, mesh }),
  },
];

describe.each(brokers)("nuropb on $name", (broker) => {
  it("calls a service and describes it through the URL's transport", async () => {
    const mesh = `cli${newId().slice(0, 10)}`;
    const transport = broker.transport(mesh);
    const service = createService({
      transport,
      name: "orders",
      instance: { echo: (params: Record<string, unknown>) => params },
    });
    await service.connect();
    try {
      const call = await cli(["call", "orders", "echo", '{"id":7}', "--url", broker.url(mesh)]);
      expect(call.stderr).toBe("");
      expect(JSON.parse(call.stdout)).toEqual({ id: 7 });
      expect(call.code).toBe(0);
      const described = await cli(["describe", "orders", "--json", "--url", broker.url(mesh)]);
      expect(described.code).toBe(0);
      expect(JSON.parse(described.stdout)).toMatchObject({ service_name: "orders" });
    } finally {
      await service.disconnect();
      await transport.close();
    }
  });

  it("refuses what needs RabbitMQ with a usage error", async () => {
    const r = await cli(["services", "--url", broker.url("m")]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("works on RabbitMQ only");
  });

  it("nuropb run serves a module on the URL's broker until SIGTERM, then exits 0", async () => {
    const mesh = `run${newId().slice(0, 10)}`;
    const child = spawnCli(
      ["run", "integration-tests/test/fixtures/echo.runner.ts", "--url", broker.url(mesh)],
      {},
    );
    await child.stderrContains('"msg":"running"');
    const call = await cli(["call", "echo", "echo", '{"n":1}', "--url", broker.url(mesh)]);
    expect(JSON.parse(call.stdout)).toEqual({ n: 1 });
    child.kill("SIGTERM");
    const done = await child.done;
    expect(done.stderr).toContain('"msg":"draining"');
    expect(done.code).toBe(0);
  });
});
