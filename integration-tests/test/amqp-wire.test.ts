import { NuropbMessageError, NuropbNotDeliveredError } from "@nuropb/protocol";
import type { Destination, Frame, InboundFrame, Transport } from "@nuropb/protocol";
import { createAmqpTransport } from "@nuropb/transport-amqp";
import { createCollector, withTimeout } from "@nuropb/transport-testkit";
import amqp from "amqplib";
import { Connection } from "rabbitmq-client";
import type { AsyncMessage } from "rabbitmq-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createTestMesh, rabbitEnv } from "../src/amqp-helpers.ts";
import type { TestMesh } from "../src/amqp-helpers.ts";
import { startAmqpSniffer } from "../src/amqp-sniffer.ts";
import type { AmqpSniffer, SniffedPublish } from "../src/amqp-sniffer.ts";
import {
  SAMPLE_COMMAND,
  SAMPLE_EVENT,
  SAMPLE_REQUEST,
  SAMPLE_REQUEST_VOID_TRACE,
  SAMPLE_RESPONSE,
} from "../src/amqp-wire-samples.ts";
import type { WireSample } from "../src/amqp-wire-samples.ts";

const T = 10_000;
const enc = new TextEncoder();

let mesh: TestMesh;
let sniffer: AmqpSniffer;
let transport: Transport;
let observer: Connection;
/** rabbitmq-client's close() waits for acquired channels, so they are closed first. */
const observerChannels: { close(): Promise<void> }[] = [];

beforeEach(async () => {
  mesh = await createTestMesh("wire");
  sniffer = await startAmqpSniffer(Number(new URL(rabbitEnv().amqpUrl).port));
  transport = createAmqpTransport({
    url: `amqp://guest:guest@127.0.0.1:${sniffer.port}/${mesh.vhost}`,
  });
  await transport.connect();
  observer = new Connection({ url: mesh.url, retryLow: 100, retryHigh: 500 });
  observer.on("error", () => undefined);
});

afterEach(async () => {
  await transport.close();
  await Promise.allSettled(observerChannels.splice(0).map((c) => c.close()));
  await observer.close();
  await sniffer.close();
  await mesh.teardown();
});

/** An independent rabbitmq-client consumer of everything published to `py-peer`, `#` and the client rq. */
async function observe(): Promise<ReturnType<typeof createCollector<AsyncMessage>>> {
  const got = createCollector<AsyncMessage>("observed messages");
  const ch = await observer.acquire();
  observerChannels.push(ch);
  const { queue } = await ch.queueDeclare({ exclusive: true });
  await ch.queueBind({ queue, exchange: "nuropb-rpc-exchange", routingKey: "py-peer" });
  await ch.queueBind({ queue, exchange: "nuropb-events-exchange", routingKey: "#" });
  // The client's response queue, declared as Python declares it.
  await ch.queueDeclare({ queue: SAMPLE_RESPONSE.routingKey, durable: false, autoDelete: true });
  await ch.basicConsume({ queue, noAck: true }, (m) => got.push(m));
  await ch.basicConsume({ queue: SAMPLE_RESPONSE.routingKey, noAck: true }, (m) => got.push(m));
  return got;
}

function destinationOf(s: WireSample): Destination {
  if (s.exchange === "nuropb-rpc-exchange") return { kind: "rpc", service: s.routingKey };
  if (s.exchange === "nuropb-events-exchange") return { kind: "event", topic: s.routingKey };
  return { kind: "reply", address: s.routingKey };
}

/** The frame core would hand the transport for a recorded message. */
function frameOf(s: WireSample): Frame {
  const p = s.properties;
  return {
    headers: p.headers,
    body: enc.encode(s.body),
    correlationId: p.correlation_id,
    ...(p.reply_to !== "" ? { replyTo: p.reply_to } : {}),
    ...(p.expiration !== undefined ? { ttlMs: Number(p.expiration) } : {}),
  };
}

function sniffed(correlationId: string): SniffedPublish {
  const found = sniffer.publishes.filter((p) => p.properties["correlation-id"] === correlationId);
  expect(found, `publishes with correlation id ${correlationId}`).toHaveLength(1);
  return found[0] as SniffedPublish;
}

describe("what send() publishes", () => {
  const samples: [string, WireSample][] = [
    ["request", SAMPLE_REQUEST],
    ["command", SAMPLE_COMMAND],
    ["event", SAMPLE_EVENT],
    ["response", SAMPLE_RESPONSE],
  ];

  it.each(samples)(
    "a %s carries exactly the properties, header types and body bytes Python sends",
    async (type, sample) => {
      const got = await observe();
      await transport.send(destinationOf(sample), frameOf(sample));
      const [m] = await got.waitForCount(1, T);
      const p = sample.properties;

      // Byte level, decoded from the TCP stream between the transport and the broker.
      const wire = sniffed(p.correlation_id);
      expect(wire.exchange).toBe(sample.exchange);
      expect(wire.routingKey).toBe(sample.routingKey);
      expect(wire.mandatory).toBe(sample.exchange === "nuropb-rpc-exchange");
      // Commands and events are published persistent (they must outlive a broker restart);
      // Python sends no delivery_mode and ignores it on receipt.
      const persistent = type === "command" || type === "event";
      expect(wire.present).toEqual([
        "content-type",
        "headers",
        ...(persistent ? ["delivery-mode"] : []),
        "correlation-id",
        "reply-to",
        ...(p.expiration !== undefined ? ["expiration"] : []),
      ]);
      expect(wire.properties["delivery-mode"]).toBe(persistent ? 2 : undefined);
      expect(wire.properties["content-type"]).toBe("application/json");
      expect(wire.properties["correlation-id"]).toBe(p.correlation_id);
      expect(wire.properties["reply-to"]).toBe(p.reply_to);
      expect(wire.properties.expiration).toBe(p.expiration);
      // An event has one header more than Python's: when it was sent, for the event log
      // (RabbitMQ 3.10 streams keep no time; Python ignores headers it does not know).
      const sentAt = { timestamp_in_ms: expect.stringMatching(/^\d{13}$/) as unknown as string };
      const headers = type === "event" ? { ...p.headers, ...sentAt } : p.headers;
      expect(wire.headers).toEqual(
        Object.entries(headers).map(([name, value]) => ({ name, tag: "S", value })),
      );
      expect(wire.body.toString("utf8")).toBe(sample.body);

      // As an independent client (rabbitmq-client) receives it.
      expect(m).toBeDefined();
      if (m === undefined) return;
      expect(m.exchange).toBe(sample.exchange);
      expect(m.routingKey).toBe(sample.routingKey);
      expect(m.contentType).toBe("application/json");
      expect(m.correlationId).toBe(p.correlation_id);
      expect(m.replyTo).toBe(p.reply_to);
      expect(m.expiration).toBe(p.expiration);
      expect(m.headers).toStrictEqual(headers);
      expect((m as unknown as Record<string, unknown>).deliveryMode).toBe(
        persistent ? 2 : undefined,
      );
      for (const absent of [
        "priority",
        "messageId",
        "timestamp",
        "type",
        "appId",
        "userId",
        "contentEncoding",
      ] as const) {
        expect((m as unknown as Record<string, unknown>)[absent], absent).toBeUndefined();
      }
      expect(m.body).toStrictEqual(JSON.parse(sample.body));
    },
  );

  it("a null trace_id goes out as AMQP void (V), like pika's None", async () => {
    const got = await observe();
    await transport.send({ kind: "rpc", service: "py-peer" }, frameOf(SAMPLE_REQUEST_VOID_TRACE));
    const [m] = await got.waitForCount(1, T);
    const wire = sniffed(SAMPLE_REQUEST_VOID_TRACE.properties.correlation_id);
    expect(wire.headers?.map((f) => [f.name, f.tag, f.value])).toEqual([
      ["nuropb_protocol", "S", "0.1.1"],
      ["nuropb_version", "S", "0.1.8"],
      ["nuropb_type", "S", "request"],
      ["trace_id", "V", null],
      ["encrypted", "S", ""],
    ]);
    expect(m?.headers?.trace_id).toBeNull();
  });

  it("a request with ttlMs 0 or none has no expiration property", async () => {
    const got = await observe();
    const base = frameOf(SAMPLE_REQUEST);
    const { ttlMs: _omit, ...noTtl } = base;
    await transport.send(
      { kind: "rpc", service: "py-peer" },
      { ...base, correlationId: "ttl-zero", ttlMs: 0 },
    );
    await transport.send(
      { kind: "rpc", service: "py-peer" },
      { ...noTtl, correlationId: "ttl-none" },
    );
    const seen = await got.waitForCount(2, T);
    for (const id of ["ttl-zero", "ttl-none"]) {
      expect(sniffed(id).present).not.toContain("expiration");
      expect(seen.find((m) => m.correlationId === id)?.expiration).toBeUndefined();
    }
  });

  it("an expiration of 4294967295 ms is confirmed; beyond it, and past AMQP's short strings, send refuses before publishing and later confirms stay paired", async () => {
    const got = await observe();
    const base = frameOf(SAMPLE_REQUEST);
    await transport.send(
      { kind: "rpc", service: "py-peer" },
      { ...base, correlationId: "ttl-max", ttlMs: 4_294_967_295 },
    );
    const publishedBefore = sniffer.publishes.length;
    for (const bad of [
      { ttlMs: 4_294_967_296 },
      { correlationId: "é".repeat(128) },
      { replyTo: "q".repeat(256) },
    ]) {
      await expect(
        transport.send({ kind: "rpc", service: "py-peer" }, { ...base, ...bad }),
      ).rejects.toBeInstanceOf(NuropbMessageError);
    }
    const [lost, routed] = await Promise.allSettled([
      transport.send({ kind: "rpc", service: "nobody-here" }, { ...base, correlationId: "lost" }),
      transport.send({ kind: "rpc", service: "py-peer" }, { ...base, correlationId: "after" }),
    ]);
    expect((lost as PromiseRejectedResult).reason).toBeInstanceOf(NuropbNotDeliveredError);
    expect(routed.status).toBe("fulfilled");
    const seen = await got.waitForCount(2, T);
    expect(seen.map((m) => [m.correlationId, m.expiration])).toEqual([
      ["ttl-max", "4294967295"],
      ["after", base.ttlMs === undefined ? undefined : String(base.ttlMs)],
    ]);
    // Refused before publishing: the wire carried only "lost" and "after" since then.
    expect(
      sniffer.publishes.slice(publishedBefore).map((p) => p.properties["correlation-id"]),
    ).toEqual(["lost", "after"]);
  });

  it("a request for a service with no bound queue rejects with NuropbNotDeliveredError; routed ones resolve", async () => {
    await observe(); // binds py-peer
    const lost = transport.send(
      { kind: "rpc", service: "nobody-here" },
      { ...frameOf(SAMPLE_REQUEST), correlationId: "lost" },
    );
    const routed = transport.send(
      { kind: "rpc", service: "py-peer" },
      { ...frameOf(SAMPLE_REQUEST), correlationId: "routed" },
    );
    const [a, b] = await Promise.allSettled([lost, routed]);
    expect(a.status).toBe("rejected");
    expect((a as PromiseRejectedResult).reason).toBeInstanceOf(NuropbNotDeliveredError);
    expect(((a as PromiseRejectedResult).reason as Error).message).toContain("nobody-here");
    expect(b.status).toBe("fulfilled");
    expect(sniffed("lost").mandatory).toBe(true);
    // A command is mandatory too (PROTOCOL.md §3).
    await expect(
      transport.send(
        { kind: "rpc", service: "nobody-here" },
        { ...frameOf(SAMPLE_COMMAND), correlationId: "lost-cmd" },
      ),
    ).rejects.toBeInstanceOf(NuropbNotDeliveredError);
    // An event nobody subscribes to is simply dropped.
    await transport.send(
      { kind: "event", topic: "nobody.listens" },
      { ...frameOf(SAMPLE_EVENT), correlationId: "ev" },
    );
    expect(sniffed("ev").mandatory).toBe(false);
  });
});

describe("what the transport delivers from Python-shaped messages", () => {
  /** Publishes a message exactly as pika would (no delivery mode, timestamp or other extras). */
  async function injectRaw(
    exchange: string,
    routingKey: string,
    body: string | Buffer,
    properties: amqp.Options.Publish,
  ): Promise<void> {
    const conn = await amqp.connect(mesh.url);
    try {
      const ch = await conn.createConfirmChannel();
      await new Promise<void>((resolve, reject) =>
        ch.publish(exchange, routingKey, Buffer.from(body), properties, (err: unknown) =>
          err ? reject(err as Error) : resolve(),
        ),
      );
    } finally {
      await conn.close();
    }
  }

  const inject = (s: WireSample, overrides: Partial<amqp.Options.Publish> = {}): Promise<void> =>
    injectRaw(s.exchange, s.routingKey, s.body, {
      contentType: s.properties.content_type,
      headers: s.properties.headers,
      correlationId: s.properties.correlation_id,
      replyTo: s.properties.reply_to,
      ...(s.properties.expiration !== undefined ? { expiration: s.properties.expiration } : {}),
      ...overrides,
    });

  it("requests, commands and events reach consumeService as Python sent them", async () => {
    const got = createCollector<InboundFrame>("deliveries");
    await transport.consumeService(
      { service: "py-peer", rpcBindings: [], eventBindings: ["interop.capture.*"], prefetch: 10 },
      async (d) => {
        got.push(d);
        await d.ack();
      },
    );
    await inject(SAMPLE_REQUEST);
    await inject(SAMPLE_COMMAND);
    await inject(SAMPLE_EVENT);
    await inject(SAMPLE_REQUEST_VOID_TRACE, { correlationId: "void-trace" });
    const items = await got.waitForCount(4, T);
    const byId = (id: string): InboundFrame | undefined =>
      items.find((f) => f.correlationId === id);

    const req = byId(SAMPLE_REQUEST.properties.correlation_id);
    expect({ ...req?.headers }).toStrictEqual(SAMPLE_REQUEST.properties.headers);
    expect(Buffer.from(req?.body ?? []).toString("utf8")).toBe(SAMPLE_REQUEST.body);
    expect(req?.replyTo).toBe(SAMPLE_REQUEST.properties.reply_to);
    expect(req?.ttlMs).toBe(3_600_000);
    expect(req?.redelivered).toBe(false);

    const cmd = byId(SAMPLE_COMMAND.properties.correlation_id);
    expect(cmd?.headers.nuropb_type).toBe("command");
    expect(cmd?.replyTo).toBe(SAMPLE_COMMAND.properties.reply_to);

    const ev = byId(SAMPLE_EVENT.properties.correlation_id);
    expect({ ...ev?.headers }).toStrictEqual(SAMPLE_EVENT.properties.headers);
    expect(Buffer.from(ev?.body ?? []).toString("utf8")).toBe(SAMPLE_EVENT.body);
    expect(ev?.replyTo).toBeUndefined(); // reply_to "" is "no reply address"
    expect(ev?.ttlMs).toBeUndefined();

    expect(byId("void-trace")?.headers.trace_id).toBeNull();
  });

  it("responses reach consumeResponses as Python sent them", async () => {
    const got = createCollector<InboundFrame>("responses");
    await transport.consumeResponses({ address: SAMPLE_RESPONSE.routingKey }, (f) => got.push(f));
    await inject(SAMPLE_RESPONSE);
    const [r] = await got.waitForCount(1, T);
    expect({ ...r?.headers }).toStrictEqual(SAMPLE_RESPONSE.properties.headers);
    expect(Buffer.from(r?.body ?? []).toString("utf8")).toBe(SAMPLE_RESPONSE.body);
    expect(r?.correlationId).toBe(SAMPLE_RESPONSE.properties.correlation_id);
    expect(r?.replyTo).toBeUndefined();
    expect(r?.ttlMs).toBeUndefined();
  });

  it("a message without a headers table arrives with empty headers; byte-array headers arrive as text", async () => {
    const got = createCollector<InboundFrame>("deliveries");
    await transport.consumeService(
      { service: "py-peer", rpcBindings: [], eventBindings: [], prefetch: 10 },
      async (d) => {
        got.push(d);
        await d.ack();
      },
    );
    await injectRaw("nuropb-rpc-exchange", "py-peer", SAMPLE_REQUEST.body, {
      contentType: "application/json",
      correlationId: "no-headers",
      replyTo: "somewhere",
    });
    await injectRaw("nuropb-rpc-exchange", "py-peer", SAMPLE_REQUEST.body, {
      contentType: "application/json",
      correlationId: "bytes-headers",
      headers: { nuropb_type: Buffer.from("request"), trace_id: Buffer.from("t-1") },
    });
    const items = await got.waitForCount(2, T);
    expect({ ...items.find((f) => f.correlationId === "no-headers")?.headers }).toStrictEqual({});
    expect({ ...items.find((f) => f.correlationId === "bytes-headers")?.headers }).toStrictEqual({
      nuropb_type: "request",
      trace_id: "t-1",
    });
  });

  it("send() followed by receive on the same transport round-trips the recorded request byte for byte", async () => {
    const got = createCollector<InboundFrame>("deliveries");
    await transport.consumeService(
      { service: "py-peer", rpcBindings: [], eventBindings: [], prefetch: 1 },
      async (d) => {
        got.push(d);
        await d.ack();
      },
    );
    await withTimeout(
      transport.send({ kind: "rpc", service: "py-peer" }, frameOf(SAMPLE_REQUEST)),
      T,
    );
    const [d] = await got.waitForCount(1, T);
    expect(Buffer.from(d?.body ?? []).toString("utf8")).toBe(SAMPLE_REQUEST.body);
    expect({ ...d?.headers }).toStrictEqual(SAMPLE_REQUEST.properties.headers);
  });
});
