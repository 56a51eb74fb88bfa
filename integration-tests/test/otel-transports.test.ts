import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { ROOT_CONTEXT, SpanKind, context, propagation, type Attributes } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { MeterProvider, MetricReader, type DataPoint } from "@opentelemetry/sdk-metrics";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
} from "@opentelemetry/sdk-trace-base";
import {
  STATS_METHOD,
  createClient,
  createService,
  serveHealth,
  type MeshParticipant,
  type RequestContext,
  type ServiceMiddleware,
  type ServiceStatsReport,
} from "@nuropb/core";
import { newId, type Transport, type WireHeaders } from "@nuropb/protocol";
import { createAmqpTransport } from "@nuropb/transport-amqp";
import { createNatsTransport } from "@nuropb/transport-nats";
import { createRedisTransport } from "@nuropb/transport-redis";
import { MetricName, metrics, tracing } from "@nuropb/opentelemetry";
import { createTestMesh, disruptableTransports, type TestMesh } from "../src/amqp-helpers.ts";

// One trace across client → service A → service B, and the metrics of those calls, on each
// broker of the harness: the W3C trace context must survive each transport's header mapping.

class Doubler {
  double(p: { n: number }): number {
    return p.n * 2;
  }
}

class Quadrupler {
  async quadruple(p: { n: number }, ctx: RequestContext): Promise<number> {
    const twice = await ctx.request<number>("doubler", "double", { n: p.n });
    return ctx.request<number>("doubler", "double", { n: twice });
  }
}

class TestReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

let amqpMesh: TestMesh | undefined;
const natsMesh = `otel${newId().slice(0, 10)}`;
const redisMesh = `otel${newId().slice(0, 10)}`;

interface Case {
  readonly name: string;
  readonly kind: string;
  readonly system: string;
  readonly create: () => Transport;
}

const cases: Case[] = [
  {
    name: "RabbitMQ",
    kind: "amqp",
    system: "rabbitmq",
    create: () => {
      if (amqpMesh === undefined) throw new Error("the RabbitMQ mesh is not set up");
      return createAmqpTransport({ url: amqpMesh.url });
    },
  },
  {
    name: "NATS",
    kind: "nats",
    system: "nats",
    create: () => createNatsTransport({ servers: inject("natsUrl"), mesh: natsMesh }),
  },
  {
    name: "Redis",
    kind: "redis",
    system: "redis",
    create: () => createRedisTransport({ url: inject("redisUrl"), mesh: redisMesh }),
  },
];

beforeAll(async () => {
  amqpMesh = await createTestMesh("otel");
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
});
afterAll(async () => {
  context.disable();
  propagation.disable();
  await amqpMesh?.teardown();
});

describe.each(cases)("OpenTelemetry on $name", ({ kind, system, create }) => {
  const exporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  const open: MeshParticipant[] = [];
  const transports: Transport[] = [];
  const received: WireHeaders[] = [];
  const recordHeaders: ServiceMiddleware = (call, next) => {
    received.push(call.headers);
    return next();
  };

  afterEach(async () => {
    for (const p of open.splice(0).reverse()) await p.disconnect();
    for (const t of transports.splice(0)) await t.close();
    exporter.reset();
    received.length = 0;
  });
  afterAll(() => tracerProvider.shutdown());

  /** client → quadrupler → doubler, each with its own transport. */
  async function chain(t: ReturnType<typeof tracing>, m?: ReturnType<typeof metrics>) {
    const transport = () => {
      const tr = create();
      transports.push(tr);
      return tr;
    };
    const doubler = createService({
      transport: transport(),
      name: "doubler",
      instance: new Doubler(),
      middleware: [recordHeaders, t.service, ...(m ? [m.service] : [])],
    });
    const quadrupler = createService({
      transport: transport(),
      name: "quadrupler",
      instance: new Quadrupler(),
      middleware: [recordHeaders, t.service, ...(m ? [m.service] : [])],
      clientMiddleware: [t.client, ...(m ? [m.client] : [])],
    });
    const client = createClient({
      transport: transport(),
      middleware: [t.client, ...(m ? [m.client] : [])],
    });
    for (const p of [doubler, quadrupler, client]) {
      await p.connect();
      open.push(p);
    }
    return client;
  }

  it("makes one trace with the right parents, links and attributes", async () => {
    const client = await chain(tracing({ tracerProvider, transport: kind }));
    const tracer = tracerProvider.getTracer("test");
    const result = await tracer.startActiveSpan("checkout", async (root) => {
      try {
        return await client.request("quadrupler", "quadruple", { n: 5 }, {}, { traceId: "t-9" });
      } finally {
        root.end();
      }
    });
    expect(result).toBe(20);

    const spans = exporter.getFinishedSpans();
    const one = (name: string): ReadableSpan => {
      const found = spans.filter((s) => s.name === name);
      expect(found, name).toHaveLength(1);
      return found[0]!;
    };
    const root = one("checkout");
    const sendA = one("send quadrupler");
    const processA = one("process quadrupler");
    const sendsB = spans.filter((s) => s.name === "send doubler");
    const processesB = spans.filter((s) => s.name === "process doubler");
    expect(spans).toHaveLength(7);
    expect(new Set(spans.map((s) => s.spanContext().traceId)).size).toBe(1);
    expect(sendA.parentSpanContext?.spanId).toBe(root.spanContext().spanId);
    expect(processA.parentSpanContext?.spanId).toBe(sendA.spanContext().spanId);
    expect(processA.links.map((l) => l.context.spanId)).toEqual([sendA.spanContext().spanId]);
    expect(sendsB).toHaveLength(2);
    for (const s of sendsB) expect(s.parentSpanContext?.spanId).toBe(processA.spanContext().spanId);
    expect(processesB.map((s) => s.parentSpanContext?.spanId).sort()).toEqual(
      sendsB.map((s) => s.spanContext().spanId).sort(),
    );
    expect(sendA.kind).toBe(SpanKind.PRODUCER);
    expect(processA.kind).toBe(SpanKind.CONSUMER);
    const expected: Attributes = {
      "messaging.system": system,
      "rpc.service": "quadrupler",
      "rpc.method": "quadruple",
      "nuropb.trace_id": "t-9",
      "nuropb.outcome": "ok",
    };
    expect(sendA.attributes).toMatchObject({ ...expected, "messaging.operation": "publish" });
    expect(processA.attributes).toMatchObject({
      ...expected,
      "messaging.operation": "process",
      "nuropb.redelivered": false,
    });
    // Each message carried the sender's span, byte for byte, through the broker.
    const traceparents = received.map((h) => h.traceparent).sort();
    const senders = [sendA, ...sendsB].map((s) => {
      const c = s.spanContext();
      return `00-${c.traceId}-${c.spanId}-01`;
    });
    expect(traceparents).toEqual(senders.sort());
  });

  it("carries a caller's tracestate through the broker", async () => {
    const client = await chain(tracing({ tracerProvider }));
    const incoming = propagation.extract(ROOT_CONTEXT, {
      traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      tracestate: "vendor=abc",
    });
    await context.with(incoming, () => client.request("doubler", "double", { n: 1 }));
    expect(received).toHaveLength(1);
    expect(received[0]!.tracestate).toBe("vendor=abc");
    expect(received[0]!.traceparent).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-/);
  });

  it("adds no trace header when no tracer is registered", async () => {
    const client = await chain(tracing());
    expect(await client.request("quadrupler", "quadruple", { n: 1 })).toBe(4);
    expect(received).toHaveLength(3);
    for (const h of received) {
      expect(h.traceparent).toBeUndefined();
      expect(h.tracestate).toBeUndefined();
    }
  });

  it("counts the calls made, in the metrics and in nuropb_stats", async () => {
    const reader = new TestReader();
    const meterProvider = new MeterProvider({ readers: [reader] });
    const client = await chain(tracing(), metrics({ meterProvider, transport: kind }));
    for (let n = 0; n < 4; n++) await client.request("quadrupler", "quadruple", { n });
    const { resourceMetrics } = await reader.collect();
    const sum = (name: string, match: Attributes): number => {
      let n = 0;
      for (const sm of resourceMetrics.scopeMetrics)
        for (const m of sm.metrics)
          if (m.descriptor.name === name)
            for (const p of m.dataPoints as DataPoint<number | { count: number }>[])
              if (Object.entries(match).every(([k, v]) => p.attributes[k] === v))
                n += typeof p.value === "number" ? p.value : p.value.count;
      return n;
    };
    const ok = { "nuropb.outcome": "ok", "messaging.system": system };
    expect(sum(MetricName.clientCalls, { ...ok, "rpc.service": "quadrupler" })).toBe(4);
    expect(sum(MetricName.clientCalls, { ...ok, "rpc.service": "doubler" })).toBe(8);
    expect(sum(MetricName.serverCalls, { ...ok, "rpc.service": "doubler" })).toBe(8);
    expect(sum(MetricName.serverDuration, { ...ok, "rpc.service": "quadrupler" })).toBe(4);
    await meterProvider.shutdown();

    // nuropb_stats over the broker agrees with the metrics.
    const stats = await client.request<ServiceStatsReport>("doubler", STATS_METHOD, {});
    expect(stats).toMatchObject({
      service_name: "doubler",
      connected: true,
      transport: { kind, state: "open" },
      methods: { double: { num_requests: 8, num_errors: 0, last_error: null } },
    });
    const quad = await client.request<ServiceStatsReport>("quadrupler", STATS_METHOD, {});
    expect(quad.methods.quadruple?.num_requests).toBe(4);
  });
});

describe("health on RabbitMQ", () => {
  it("/readyz follows the broker link: 503 while it is down, 200 once back", async () => {
    if (amqpMesh === undefined) throw new Error("the RabbitMQ mesh is not set up");
    const transports = disruptableTransports();
    // A slow first retry (1.5-3 s with jitter), so that the link stays down long enough to probe.
    const transport = await transports.create(amqpMesh.vhost, {
      reconnect: { initialDelayMs: 3_000, maxDelayMs: 3_000 },
    });
    const service = createService({ transport, name: "healthy", instance: new Doubler() });
    const events = service.events()[Symbol.asyncIterator]();
    const next = async (type: string): Promise<void> => {
      for (;;) {
        const e = await events.next();
        if (e.done === true) throw new Error(`no ${type} event`);
        if (e.value.type === type) return;
      }
    };
    await service.connect();
    const health = await serveHealth({ participants: [service], port: 0, host: "127.0.0.1" });
    const probe = async (path: string): Promise<number> =>
      (await fetch(`http://127.0.0.1:${health.port}${path}`)).status;
    try {
      expect(await probe("/readyz")).toBe(200);
      await transports.disrupt(transport);
      await next("disconnected");
      expect(await probe("/readyz")).toBe(503);
      expect(await probe("/healthz")).toBe(200);
      await next("reconnected");
      expect(await probe("/readyz")).toBe(200);
    } finally {
      await health.close();
      await service.disconnect();
      await transport.close();
      await transports.closeAll();
    }
  });
});
