import { afterAll, describe, expect, it } from "vitest";
import { eventLogOf, newId, type TransportEventLog } from "@nuropb/protocol";
import { createRedisTransport } from "@nuropb/transport-redis";
import {
  delay,
  describeEventLogConformance,
  frameText,
  testFrame,
  waitFor,
} from "@nuropb/transport-testkit";
import { Redis } from "ioredis";
import { launchRedis } from "../src/brokers/redis.ts";

// A private server: the retention scenario changes the log's limits, and nothing else may see it.
const server = await launchRedis();
afterAll(() => server.stop());
const mesh = `el${newId().slice(0, 12)}`;

describeEventLogConformance({
  name: "redis (a Redis Stream per mesh)",
  create: () => createRedisTransport({ url: server.url, mesh }),
  createWithoutLog: () => createRedisTransport({ url: server.url, mesh: `${mesh}-none` }),
  // Entries count their field names and values: a 1 KiB body is about 1.2 KiB.
  retentionTestBytes: 32 * 1024,
});

describe("redis event log: what the suite leaves to each transport", () => {
  it("drops entries older than maxAgeMs as it appends", async () => {
    const transport = createRedisTransport({ url: server.url, mesh: `${mesh}-age` });
    await transport.connect();
    try {
      const log = eventLogOf(transport) as TransportEventLog;
      await log.setup({ maxAgeMs: 200, maxBytes: 1_000_000 });
      await log.append("age.a", testFrame("old"));
      await delay(400);
      await log.append("age.b", testFrame("new"));
      const page = await log.read({ from: "start", limit: 10 });
      expect(page.entries.map((e) => frameText(e.frame))).toEqual(["new"]);
    } finally {
      await transport.close();
    }
  });

  it("a stream deleted while its config stays counts its size afresh", async () => {
    const m = `${mesh}-del`;
    const transport = createRedisTransport({ url: server.url, mesh: m });
    const redis = new Redis(server.url);
    await transport.connect();
    try {
      const log = eventLogOf(transport) as TransportEventLog;
      await log.setup({ maxAgeMs: 3_600_000, maxBytes: 100_000 });
      const body = (label: string) => testFrame(label.padEnd(5_000, "."));
      for (let i = 0; i < 18; i++) await log.append("del.old", body(`old${i}`));
      // Evicted or deleted by hand: the config (with its byte count) stays.
      await redis.del(`${m}:evlog`);
      for (const label of ["n1", "n2", "n3"]) await log.append("del.new", body(label));
      const page = await log.read({ from: "start", limit: 10 });
      expect(page.entries.map((e) => frameText(e.frame).replace(/\.+$/, ""))).toEqual([
        "n1",
        "n2",
        "n3",
      ]);
    } finally {
      redis.disconnect();
      await transport.close();
    }
  });

  it("trims at most 1000 entries per script call; setup repeats until done", async () => {
    const m = `${mesh}-trim`;
    const transport = createRedisTransport({ url: server.url, mesh: m });
    const redis = new Redis(server.url);
    await transport.connect();
    try {
      const log = eventLogOf(transport) as TransportEventLog;
      await log.setup({ maxAgeMs: 3_600_000, maxBytes: 1_000_000_000 });
      await Promise.all(
        Array.from({ length: 2_500 }, (_, i) =>
          transport.send({ kind: "event", topic: "trim.x" }, testFrame(`e${i}`)),
        ),
      );
      expect(await redis.xlen(`${m}:evlog`)).toBe(2_500);
      // A limit lowered behind the log's back: the next append drops 1000, not 2500 at once.
      await redis.hset(`${m}:evlog:cfg`, "bytes", "1");
      await log.append("trim.x", testFrame("next"));
      expect(await redis.xlen(`${m}:evlog`)).toBe(1_501);
      // setup goes on until the limits hold: the newest entry alone is left.
      await log.setup({ maxAgeMs: 3_600_000, maxBytes: 1 });
      expect(await redis.xlen(`${m}:evlog`)).toBe(1);
    } finally {
      redis.disconnect();
      await transport.close();
    }
  });

  it("an append without a log delivers nothing", async () => {
    const none = `${mesh}-nolog`;
    const transport = createRedisTransport({ url: server.url, mesh: none });
    await transport.connect();
    try {
      const got: string[] = [];
      await transport.consumeService(
        { service: "audit", rpcBindings: [], eventBindings: ["x.*"], prefetch: 10 },
        async (d) => {
          got.push(frameText(d));
          await d.ack();
        },
      );
      const log = eventLogOf(transport) as TransportEventLog;
      await expect(log.append("x.appended", testFrame("appended"))).rejects.toThrow(/not set up/);
      await transport.send({ kind: "event", topic: "x.sent" }, testFrame("sent"));
      await waitFor(() => got.length >= 1);
      await delay(200);
      expect(got).toEqual(["sent"]);
    } finally {
      await transport.close();
    }
  });
});
