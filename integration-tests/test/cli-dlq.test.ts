import { createService } from "@nuropb/core";
import { NuropbError, newId, type Transport } from "@nuropb/protocol";
import { createAmqpTransport } from "@nuropb/transport-amqp";
import { createNatsTransport } from "@nuropb/transport-nats";
import { createRedisTransport } from "@nuropb/transport-redis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestMesh, type TestMesh } from "../src/amqp-helpers.ts";
import { launchNats } from "../src/brokers/nats.ts";
import { launchRedis } from "../src/brokers/redis.ts";
import { cli } from "../src/cli-harness.ts";

// `nuropb dlq list|show|requeue|purge` on RabbitMQ (the dead-letter queue), NATS (the dead-letter
// stream) and Redis (the dead-letter stream), with dead letters the failure pipeline recorded.
const nats = await launchNats();
const redis = await launchRedis();
let amqp: TestMesh;
beforeAll(async () => {
  amqp = await createTestMesh("clidlq");
});
afterAll(async () => {
  await amqp?.teardown();
  await Promise.all([nats.stop(), redis.stop()]);
});

const brokers = [
  {
    name: "RabbitMQ",
    url: () => amqp.url,
    transport: (): Transport => createAmqpTransport({ url: amqp.url }),
  },
  {
    name: "NATS",
    mesh: `dlq${newId().slice(0, 10)}`,
    url(): string {
      return `${nats.url}/${this.mesh}`;
    },
    transport(): Transport {
      return createNatsTransport({ servers: nats.url, mesh: this.mesh });
    },
  },
  {
    name: "Redis",
    mesh: `dlq${newId().slice(0, 10)}`,
    url(): string {
      return `${redis.url}?mesh=${this.mesh}`;
    },
    transport(): Transport {
      return createRedisTransport({ url: redis.url, mesh: this.mesh });
    },
  },
];

interface Listed {
  id: string;
  service: string;
  method: string;
  error: string;
  attempts: number;
  reason: string;
  correlationId: string;
}

async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean, what: string): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() - start > 20_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.each(brokers)("nuropb dlq on $name", (broker) => {
  it("lists, shows, requeues and purges dead letters with their failure records", async () => {
    const handled: unknown[] = [];
    let failing = true;
    const transport = broker.transport();
    const service = createService({
      transport,
      name: "orders",
      instance: {
        work(params: Record<string, unknown>): void {
          if (failing) throw new NuropbError("stock service down", { retryable: true });
          handled.push(params);
        },
      },
      failurePolicy: { immediateRetries: 1, delays: [50] },
    });
    await service.connect();
    try {
      await service.command("orders", "work", { order: 1 });
      await service.command("orders", "work", { order: 2 });
      const list = async (): Promise<Listed[]> => {
        const r = await cli(["dlq", "list", "--json", "--url", broker.url()]);
        expect(r.code, r.stderr).toBe(0);
        return JSON.parse(r.stdout) as Listed[];
      };
      const letters = await until(list, (l) => l.length === 2, "two dead letters");
      for (const d of letters) {
        expect(d).toMatchObject({
          service: "orders",
          method: "work",
          error: "NuropbException",
          attempts: 4,
          reason: "rejected",
        });
      }
      const table = await cli(["dlq", "list", "--url", broker.url()]);
      expect(table.stdout).toMatch(/ID\s+SERVICE\s+METHOD\s+ERROR\s+ATTEMPTS/);
      expect(table.stdout).toContain("NuropbException");

      const first = letters[0]!;
      const shown = await cli(["dlq", "show", first.id, "--json", "--url", broker.url()]);
      expect(shown.code, shown.stderr).toBe(0);
      const detail = JSON.parse(shown.stdout) as { body: { params: unknown }; description: string };
      expect(detail.description).toBe("stock service down");
      // The two commands fail and are redelivered concurrently: either may be dead-lettered first.
      const params = detail.body.params as { order: number };
      expect([1, 2]).toContain(params.order);

      failing = false;
      const requeued = await cli(["dlq", "requeue", first.id, "--url", broker.url()]);
      expect(requeued.code, requeued.stderr).toBe(0);
      expect(requeued.stdout).toContain("1 dead letter(s) requeued");
      await until(
        async () => handled.length,
        (n) => n === 1,
        "the requeued command handled",
      );
      expect(handled).toEqual([params]);
      expect((await list()).map((d) => d.correlationId)).toEqual([letters[1]!.correlationId]);

      const missing = await cli(["dlq", "show", "no-such-id", "--url", broker.url()]);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain("no dead letter with id no-such-id");

      const purged = await cli(["dlq", "purge", "--all", "--url", broker.url()]);
      expect(purged.code, purged.stderr).toBe(0);
      expect(purged.stdout).toContain("1 dead letter(s) purged");
      expect(await list()).toEqual([]);
    } finally {
      await service.disconnect();
      await transport.close();
    }
  });
});

describe("nuropb dlq without a broker", () => {
  it.each([
    ["RabbitMQ", "amqp://guest:guest@127.0.0.1:1/none"],
    ["NATS", "nats://127.0.0.1:1/none"],
    ["Redis", "redis://127.0.0.1:1/0?mesh=none"],
  ])("exits 4 when %s cannot be reached", async (_name, url) => {
    const r = await cli(["dlq", "list", "--connect-timeout", "2000", "--url", url]);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain("dead letters of");
    expect(r.stdout).toBe("");
  });
});
