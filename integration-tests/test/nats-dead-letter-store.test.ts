import { connect, headers as natsHeaders } from "nats";
import { afterAll, describe, expect, it } from "vitest";
import { createClient, createService } from "@nuropb/core";
import { NuropbValidationError, newId } from "@nuropb/protocol";
import { createNatsDeadLetterStore, createNatsTransport } from "@nuropb/transport-nats";
import { launchNats, type NatsServer } from "../src/brokers/nats.ts";

// The NATS dead-letter store: reads the stream in batches (no request per sequence, gaps cost
// nothing), reports letters whose body was left out, and surfaces connection errors.
const servers: NatsServer[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
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

describe("createNatsDeadLetterStore", () => {
  it("pages through the stream without a request per sequence; flags a body left out", async () => {
    const nats = await launchNats();
    servers.push(nats);
    const mesh = `dls${newId().slice(0, 8)}`;
    const st = createNatsTransport({ servers: nats.url, mesh });
    const ct = createNatsTransport({ servers: nats.url, mesh });
    const service = createService({
      transport: st,
      name: "orders",
      instance: {
        work(): never {
          throw new NuropbValidationError("bad order");
        },
      },
      failurePolicy: {},
    });
    const client = createClient({ transport: ct });
    const store = createNatsDeadLetterStore({ servers: nats.url, mesh });
    const spy = await connect({ servers: nats.url });
    await service.connect();
    await client.connect();
    try {
      for (let i = 0; i < 4; i++) await client.command("orders", "work", { i });
      const four = await until(
        () => store.list(100),
        (l) => l.length === 4,
        "four letters",
      );
      // A letter too large for the stream, kept without its body (as the transport writes one).
      const h = natsHeaders();
      h.set("Nuropb-Correlation-Id", "big-1");
      h.set("Nuropb-Dl-Reason", "rejected");
      h.set("Nuropb-Dl-Dropped", "body");
      h.set("Nuropb-Dl-Body-Bytes", "9000000");
      await spy.jetstream().publish(`${mesh}.dl.orders`, new Uint8Array(0), { headers: h });
      // Gaps: the middle letters go.
      expect(await store.remove([four[1]!.id, four[2]!.id])).toBe(2);
      expect(await store.remove([four[1]!.id])).toBe(0);

      const gets: string[] = [];
      const sub = spy.subscribe("$JS.API.STREAM.MSG.GET.>", {
        callback: (_e, m) => gets.push(m.subject),
      });
      const direct = spy.subscribe("$JS.API.DIRECT.GET.>", {
        callback: (_e, m) => gets.push(m.subject),
      });
      await spy.flush();
      const letters = await store.list(100);
      await spy.flush();
      sub.unsubscribe();
      direct.unsubscribe();
      expect(gets).toEqual([]);
      expect(letters.map((d) => d.id)).toEqual([four[0]!.id, four[3]!.id, expect.any(String)]);
      expect(letters[0]!.incomplete).toBeUndefined();
      expect(letters[2]).toMatchObject({ service: "orders", reason: "rejected" });
      expect(letters[2]!.incomplete).toMatch(/body of 9000000 bytes left out/);
      expect(await store.list(1)).toHaveLength(1);
    } finally {
      await client.disconnect();
      await service.disconnect();
      await Promise.all([st.close(), ct.close(), spy.close()]);
      await store.close();
    }
  });

  it("rejects when the connection is lost rather than report no dead letter", async () => {
    const nats = await launchNats();
    const store = createNatsDeadLetterStore({ servers: nats.url, mesh: "gone" });
    try {
      expect(await store.list(10)).toEqual([]);
      await nats.stop();
      await expect(store.remove(["1"])).rejects.toThrow();
      await expect(store.list(10)).rejects.toThrow();
    } finally {
      await store.close();
    }
  });
});
