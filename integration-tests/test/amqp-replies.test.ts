import { createClient, createService, publishToMesh } from "@nuropb/core";
import { buildHeaders, newId } from "@nuropb/protocol";
import type { Delivery, Frame } from "@nuropb/protocol";
import { createAmqpTransport } from "@nuropb/transport-amqp";
import { createCollector, waitFor } from "@nuropb/transport-testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestMesh, disruptableTransports } from "../src/amqp-helpers.ts";
import type { TestMesh } from "../src/amqp-helpers.ts";

// Replies go out without publisher confirms: they still arrive. And under concurrency no delivery
// is acked before its handler settled it (a crash redelivers exactly the unsettled one).
const T = 30_000;
let mesh: TestMesh;
const transports = disruptableTransports();
const closers: (() => Promise<unknown>)[] = [];
const enc = new TextEncoder();

beforeAll(async () => {
  mesh = await createTestMesh("replies");
}, T);
afterAll(async () => {
  for (const close of closers.reverse()) await close().catch(() => undefined);
  await transports.closeAll();
  await mesh.teardown();
}, T);

class Echo {
  @publishToMesh()
  async echo(params: { n: number }): Promise<unknown> {
    await new Promise((r) => setTimeout(r, params.n % 3));
    return params;
  }
}

const frame = (body: string): Frame => ({
  headers: buildHeaders("command", null),
  body: enc.encode(body),
  correlationId: newId(),
});

describe("replies without publisher confirms", () => {
  it(
    "every reply of 400 concurrent requests arrives",
    async () => {
      const name = `echo-${newId()}`;
      const service = createService({
        transport: createAmqpTransport({ url: mesh.url }),
        name,
        instance: new Echo(),
      });
      await service.connect();
      closers.push(() => service.disconnect());
      const client = createClient({ transport: createAmqpTransport({ url: mesh.url }) });
      await client.connect();
      closers.push(() => client.disconnect());
      const got = await Promise.all(
        Array.from({ length: 400 }, (_, n) => client.request(name, "echo", { n })),
      );
      expect(got).toEqual(Array.from({ length: 400 }, (_, n) => ({ n })));
    },
    T,
  );
});

describe("acks under concurrency", () => {
  it(
    "a crash before the slow handler settles redelivers it, and only it; fast ones were acked",
    async () => {
      const service = `acks-${newId()}`;
      const sender = createAmqpTransport({ url: mesh.url });
      await sender.connect();
      closers.push(() => sender.close());
      // The first consumer: "slow" never settles, every other delivery is acked at once.
      const first = await transports.create(mesh.vhost, { closeTimeoutMs: 500 });
      await first.connect();
      closers.push(() => first.close());
      const acked: string[] = [];
      let slowSeen = false;
      await first.consumeService(
        { service, rpcBindings: [], eventBindings: [], prefetch: 64 },
        async (d: Delivery) => {
          const body = Buffer.from(d.body).toString();
          if (body === "slow") {
            slowSeen = true;
            return new Promise<void>(() => undefined); // never settles
          }
          await d.ack();
          acked.push(body);
        },
      );
      const bodies = ["f0", "f1", "slow", ...Array.from({ length: 40 }, (_, i) => `f${i + 2}`)];
      await Promise.all(bodies.map((b) => sender.send({ kind: "rpc", service }, frame(b))));
      await waitFor(() => slowSeen && acked.length === bodies.length - 1, 10_000, "the fast acks");
      // Give the acks time to reach the broker, then crash the consumer.
      await new Promise((r) => setTimeout(r, 300));
      await transports.disrupt(first);
      await first.close();
      // A second consumer gets what was unsettled: only "slow", redelivered.
      const second = createAmqpTransport({ url: mesh.url });
      await second.connect();
      closers.push(() => second.close());
      const again = createCollector<{ body: string; redelivered: boolean }>("redeliveries");
      await second.consumeService(
        { service, rpcBindings: [], eventBindings: [], prefetch: 64 },
        async (d: Delivery) => {
          again.push({ body: Buffer.from(d.body).toString(), redelivered: d.redelivered });
          await d.ack();
        },
      );
      expect(await again.waitForCount(1, 10_000)).toEqual([{ body: "slow", redelivered: true }]);
      await new Promise((r) => setTimeout(r, 500));
      expect(again.items).toHaveLength(1);
    },
    T,
  );
});
