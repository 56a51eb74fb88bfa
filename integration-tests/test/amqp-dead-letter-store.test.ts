import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, createService } from "@nuropb/core";
import { NuropbValidationError, type DeadLetterEntry } from "@nuropb/protocol";
import { createAmqpDeadLetterStore, createAmqpTransport } from "@nuropb/transport-amqp";
import { createTestMesh, type TestMesh } from "../src/amqp-helpers.ts";

// The RabbitMQ dead-letter store: stable unique ids for the letters the transport dead-letters,
// positional ids (said so) for those the broker dead-lettered itself, and a one-pass take.
let mesh: TestMesh;
beforeAll(async () => {
  mesh = await createTestMesh("dlstore");
});
afterAll(async () => {
  await mesh?.teardown();
});

async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean, what: string): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() - start > 20_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("createAmqpDeadLetterStore", () => {
  it("gives letters that share a correlation id stable ids, and takes them in one pass", async () => {
    const failing = {
      handleEvent(): never {
        throw new NuropbValidationError("bad event");
      },
    };
    const transports = [0, 1, 2, 3].map(() => createAmqpTransport({ url: mesh.url }));
    const [ta, tb, tc, tclient] = transports as [
      ReturnType<typeof createAmqpTransport>,
      ReturnType<typeof createAmqpTransport>,
      ReturnType<typeof createAmqpTransport>,
      ReturnType<typeof createAmqpTransport>,
    ];
    // Two services with a failure policy (dead-lettered by the transport, with a record) and
    // one without (a plain reject: dead-lettered by the broker itself).
    const services = [
      createService({
        transport: ta,
        name: "dla",
        instance: failing,
        eventBindings: ["dl.stable"],
        failurePolicy: {},
      }),
      createService({
        transport: tb,
        name: "dlb",
        instance: failing,
        eventBindings: ["dl.stable"],
        failurePolicy: {},
      }),
      createService({
        transport: tc,
        name: "dlc",
        instance: failing,
        eventBindings: ["dl.stable"],
      }),
    ];
    const client = createClient({ transport: tclient });
    const store = createAmqpDeadLetterStore({ url: mesh.url });
    await Promise.all(services.map((s) => s.connect()));
    await client.connect();
    try {
      await client.publishEvent("dl.stable", { n: 1 });
      const letters = await until(
        () => store.list(100),
        (l) => l.length === 3,
        "three letters",
      );
      const correlationIds = new Set(letters.map((d) => d.frame.correlationId));
      expect(correlationIds.size).toBe(1);
      const byService = new Map(letters.map((d) => [d.service, d]));
      const stamped = ["dla", "dlb"].map((s) => byService.get(s)!);
      const positional = byService.get("dlc")!;
      for (const d of stamped) {
        expect(d.reason).toBe("rejected");
        expect(d.id).not.toContain(d.frame.correlationId);
        expect(d.frame.headers).not.toHaveProperty("nuropb_dead_letter_id");
      }
      expect(new Set(letters.map((d) => d.id)).size).toBe(3);
      expect(positional.reason).toMatch(/positional id/);
      expect(positional.id.startsWith(positional.frame.correlationId)).toBe(true);

      // Removing one letter leaves the others' ids as they were.
      expect(await store.remove([stamped[0]!.id])).toBe(1);
      const left = await store.list(100);
      expect(left.map((d) => d.id).sort()).toContain(stamped[1]!.id);
      expect(await store.remove([stamped[0]!.id])).toBe(0);

      // take: one pass, each letter visited once, removed as its visit says.
      const visited: DeadLetterEntry[] = [];
      const taken = await store.take!(100, (d) => {
        visited.push(d);
        return Promise.resolve(d.id === stamped[1]!.id);
      });
      expect(taken).toBe(1);
      expect(visited).toHaveLength(2);
      expect((await store.list(100)).map((d) => d.service)).toEqual(["dlc"]);
    } finally {
      await store.close();
      await client.disconnect();
      await Promise.all(services.map((s) => s.disconnect()));
      await Promise.all(transports.map((t) => t.close()));
    }
  });
});
