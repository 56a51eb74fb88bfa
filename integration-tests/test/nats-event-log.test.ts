import { NuropbTransportError, eventLogOf, newId } from "@nuropb/protocol";
import { noopLogger, type Logger, type Transport, type TransportEventLog } from "@nuropb/protocol";
import { createNatsTransport, type NatsTransportOptions } from "@nuropb/transport-nats";
import { describeEventLogConformance, testFrame, testHeaders } from "@nuropb/transport-testkit";
import { connect, RetentionPolicy } from "nats";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { launchNats } from "../src/brokers/nats.ts";

// The event log on NATS: the mesh's events stream, turned to limits retention by setup().
// A private server: the retention scenario changes the log's limits.
const server = await launchNats();
afterAll(() => server.stop());
const mesh = `el${newId().slice(0, 12)}`;

describeEventLogConformance({
  name: "nats (the events stream with limits retention)",
  create: () => createNatsTransport({ servers: server.url, mesh }),
  createWithoutLog: () => createNatsTransport({ servers: server.url, mesh: `${mesh}-none` }),
});

describe("nats event log: the events stream", () => {
  const opened: Transport[] = [];
  afterEach(async () => {
    await Promise.allSettled(opened.splice(0).map((t) => t.close()));
  });
  async function open(
    m: string,
    more: Partial<NatsTransportOptions> = {},
  ): Promise<{ transport: Transport; log: TransportEventLog }> {
    const transport = createNatsTransport({ servers: server.url, mesh: m, ...more });
    opened.push(transport);
    await transport.connect();
    const log = eventLogOf(transport);
    if (log === undefined) throw new Error("no eventLog on the NATS transport");
    return { transport, log };
  }
  async function streamConfig(
    m: string,
  ): Promise<{ retention: string; max_age: number; max_bytes: number }> {
    const nc = await connect({ servers: server.url });
    try {
      const jsm = await nc.jetstreamManager();
      return (await jsm.streams.info(`NUROPB-${m}-EVENTS`)).config;
    } finally {
      await nc.close();
    }
  }

  it("setup makes the events stream the log; services declaring it keep the log's retention", async () => {
    const m = `ev${newId().slice(0, 10)}`;
    // The log's age is never below eventRetentionMs (1 day by default).
    const { transport, log } = await open(m, { eventRetentionMs: 60_000 });
    await log.setup({ maxAgeMs: 3_600_000, maxBytes: 1 << 20 });
    let config = await streamConfig(m);
    expect(config.retention).toBe(RetentionPolicy.Limits);
    expect(config.max_age).toBe(3_600_000 * 1_000_000);
    expect(config.max_bytes).toBe(1 << 20);
    const got: string[] = [];
    await transport.consumeService(
      { service: `${m}-svc`, rpcBindings: [], eventBindings: ["a.*"], prefetch: 10 },
      async (d) => {
        got.push(new TextDecoder().decode(d.body));
        await d.ack();
      },
    );
    // The service declared the events stream over it (eventRetentionMs: one minute here): the
    // log keeps its own retention.
    config = await streamConfig(m);
    expect(config.retention).toBe(RetentionPolicy.Limits);
    expect(config.max_age).toBe(3_600_000 * 1_000_000);
    // The service still gets events, and they stay in the log once acknowledged.
    const stored = await log.append("a.one", testFrame("one", { headers: testHeaders("event") }));
    await transport.send(
      { kind: "event", topic: "a.two" },
      testFrame("two", { headers: testHeaders("event") }),
    );
    await expect.poll(() => got.length, { timeout: 10_000 }).toBe(2);
    expect(got).toEqual(["one", "two"]);
    const page = await log.read({ from: { time: stored.timestamp }, topics: ["a.*"], limit: 10 });
    expect(page.entries.map((e) => e.topic)).toEqual(["a.one", "a.two"]);
    // Retention changes reach the stream.
    await log.setup({ maxAgeMs: 60_000, maxBytes: 4096 });
    config = await streamConfig(m);
    expect(config.max_age).toBe(60_000 * 1_000_000);
    expect(config.max_bytes).toBe(4096);
  });

  it("keeps events at least eventRetentionMs, and warns what the log's limits do to services", async () => {
    const m = `ev${newId().slice(0, 10)}`;
    const warnings: string[] = [];
    const logger: Logger = {
      ...noopLogger,
      warn: (msg) => void warnings.push(msg),
      child: () => logger,
    };
    const { log } = await open(m, { eventRetentionMs: 600_000, logger });
    await log.setup({ maxAgeMs: 60_000, maxBytes: 1 << 20 });
    // A service's unacknowledged events may not go sooner than eventRetentionMs.
    expect((await streamConfig(m)).max_age).toBe(600_000 * 1_000_000);
    expect(warnings.join("\n")).toMatch(/below the transport's eventRetentionMs/);
    expect(warnings.join("\n")).toMatch(/maxBytes also bounds what services have not acknowledged/);
    await log.setup({ maxAgeMs: 3_600_000, maxBytes: 1 << 20 });
    expect((await streamConfig(m)).max_age).toBe(3_600_000 * 1_000_000);
  });

  it("refuses to convert an interest stream that services consume (server before 2.10)", async () => {
    const m = `in${newId().slice(0, 10)}`;
    const { transport, log } = await open(m);
    await transport.consumeService(
      { service: `${m}-svc`, rpcBindings: [], eventBindings: ["#"], prefetch: 10 },
      async (d) => d.ack(),
    );
    expect(await log.available()).toBe(false);
    const error = await log.setup({ maxAgeMs: 60_000, maxBytes: 1 << 20 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NuropbTransportError);
    expect((error as Error).message).toMatch(/set the event log up before services subscribe/);
    expect((await streamConfig(m)).retention).toBe(RetentionPolicy.Interest);
  });

  it("converts an interest stream nobody consumes", async () => {
    const m = `ic${newId().slice(0, 10)}`;
    const { transport, log } = await open(m);
    const listener = await transport.consumeService(
      { service: `${m}-svc`, rpcBindings: [], eventBindings: ["#"], prefetch: 10 },
      async (d) => d.ack(),
    );
    await listener.stop();
    const nc = await connect({ servers: server.url });
    try {
      const jsm = await nc.jetstreamManager();
      await jsm.consumers.delete(`NUROPB-${m}-EVENTS`, `svc-${m}~2d~svc`);
    } finally {
      await nc.close();
    }
    await log.setup({ maxAgeMs: 60_000, maxBytes: 1 << 20 });
    expect(await log.available()).toBe(true);
    expect((await streamConfig(m)).retention).toBe(RetentionPolicy.Limits);
  });

  it("refuses bad input with a TypeError", async () => {
    const { log } = await open(mesh);
    await expect(log.setup({ maxAgeMs: 0, maxBytes: 10 })).rejects.toBeInstanceOf(TypeError);
    await expect(log.read({ from: { after: "0" }, limit: 1 })).rejects.toBeInstanceOf(TypeError);
    await expect(log.read({ from: { after: "x" }, limit: 1 })).rejects.toBeInstanceOf(TypeError);
    await expect(log.read({ from: "start", limit: 1.5 })).rejects.toBeInstanceOf(TypeError);
    await expect(log.append("a.>", testFrame("x"))).rejects.toBeInstanceOf(TypeError);
  });
});
