import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  ProxyTracerProvider,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context,
  propagation,
  trace,
} from "@opentelemetry/api";
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";
import {
  createClient,
  createService,
  type ClientMiddleware,
  type MeshParticipant,
  type RequestContext,
  type ServiceMiddleware,
} from "@nuropb/core";
import { NuropbValidationError, type EventType, type WireHeaders } from "@nuropb/protocol";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { tracing } from "@nuropb/opentelemetry";
import { createOtel, registerGlobals } from "./otel-setup.ts";

class Doubler {
  double(p: { n: number }): number {
    return p.n * 2;
  }
  refuse(): never {
    throw new NuropbValidationError("not today");
  }
}

class Quadrupler {
  readonly seen: EventType[] = [];
  async quadruple(p: { n: number }, ctx: RequestContext): Promise<number> {
    const twice = await ctx.request<number>("doubler", "double", { n: p.n });
    return ctx.request<number>("doubler", "double", { n: twice });
  }
  async quadrupleAndTell(p: { n: number }, ctx: RequestContext): Promise<number> {
    const result = await this.quadruple(p, ctx);
    ctx.addEvent({ topic: "orders.told", event: { result } });
    return result;
  }
  async refuseDownstream(_p: unknown, ctx: RequestContext): Promise<unknown> {
    return ctx.request("doubler", "refuse", {});
  }
  handleEvent(e: EventType): void {
    this.seen.push(e);
  }
}

const otel = createOtel();
let undoGlobals: () => void;
const open: MeshParticipant[] = [];
/** The headers of every message the services received, in order. */
const received: WireHeaders[] = [];
const recordHeaders: ServiceMiddleware = (call, next) => {
  received.push(call.headers);
  return next();
};

beforeAll(() => {
  undoGlobals = registerGlobals();
});
afterAll(async () => {
  undoGlobals();
  await otel.shutdown();
});
afterEach(async () => {
  for (const p of open.splice(0)) await p.disconnect();
  otel.exporter.reset();
  received.length = 0;
});

/** client → quadrupler → doubler on one memory hub, each with the given tracing. */
async function chain(
  t: ReturnType<typeof tracing>,
  clientTracing: { client: ClientMiddleware } = t,
) {
  const hub = createMemoryHub();
  const transport = () => createMemoryTransport({ hub });
  const doubler = createService({
    transport: transport(),
    name: "doubler",
    instance: new Doubler(),
    middleware: [recordHeaders, t.service],
  });
  const quad = new Quadrupler();
  const quadrupler = createService({
    transport: transport(),
    name: "quadrupler",
    instance: quad,
    eventBindings: ["orders.#"],
    middleware: [recordHeaders, t.service],
    clientMiddleware: [t.client],
  });
  const client = createClient({ transport: transport(), middleware: [clientTracing.client] });
  for (const p of [doubler, quadrupler, client]) {
    await p.connect();
    open.push(p);
  }
  return { client, quad };
}

const byName = (spans: ReadableSpan[], name: string) => spans.filter((s) => s.name === name);
const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;

describe("tracing", () => {
  it("makes one trace of client → service A → service B, parents and links right", async () => {
    const { client } = await chain(
      tracing({ tracerProvider: otel.tracerProvider, transport: "memory" }),
    );
    const tracer = otel.tracerProvider.getTracer("test");
    const result = await tracer.startActiveSpan("checkout", async (root) => {
      try {
        return await client.request("quadrupler", "quadruple", { n: 3 }, {}, { traceId: "t-1" });
      } finally {
        root.end();
      }
    });
    expect(result).toBe(12);

    const spans = otel.exporter.getFinishedSpans();
    expect(spans.map((s) => s.name).sort()).toEqual([
      "checkout",
      "process doubler",
      "process doubler",
      "process quadrupler",
      "send doubler",
      "send doubler",
      "send quadrupler",
    ]);
    const [root] = byName(spans, "checkout");
    const traceId = root!.spanContext().traceId;
    expect(new Set(spans.map((s) => s.spanContext().traceId))).toEqual(new Set([traceId]));

    const [sendA] = byName(spans, "send quadrupler");
    const [processA] = byName(spans, "process quadrupler");
    expect(sendA!.kind).toBe(SpanKind.PRODUCER);
    expect(parentOf(sendA!)).toBe(root!.spanContext().spanId);
    expect(processA!.kind).toBe(SpanKind.CONSUMER);
    expect(parentOf(processA!)).toBe(sendA!.spanContext().spanId);
    expect(processA!.links.map((l) => l.context.spanId)).toEqual([sendA!.spanContext().spanId]);

    // The handler's own calls continue the trace under its process span.
    const sendsB = byName(spans, "send doubler");
    for (const s of sendsB) expect(parentOf(s)).toBe(processA!.spanContext().spanId);
    const processesB = byName(spans, "process doubler");
    expect(processesB.map(parentOf).sort()).toEqual(
      sendsB.map((s) => s.spanContext().spanId).sort(),
    );

    expect(sendA!.attributes).toMatchObject({
      "messaging.system": "nuropb_memory",
      "messaging.operation": "publish",
      "messaging.operation.type": "send",
      "messaging.destination.name": "quadrupler",
      "rpc.system": "nuropb",
      "rpc.service": "quadrupler",
      "rpc.method": "quadruple",
      "nuropb.kind": "request",
      "nuropb.trace_id": "t-1",
      "nuropb.outcome": "ok",
    });
    expect(processA!.attributes).toMatchObject({
      "messaging.operation": "process",
      "rpc.service": "quadrupler",
      "rpc.method": "quadruple",
      "nuropb.trace_id": "t-1",
      "nuropb.redelivered": false,
      "nuropb.outcome": "ok",
    });
    expect(typeof processA!.attributes["messaging.message.id"]).toBe("string");
    // The body as it arrived: the JSON of the request, params and all (a slim body on the
    // memory transport: the ids ride in the frame).
    expect(processA!.attributes["messaging.message.body.size"]).toBe(
      '{"tag":"request","service":"quadrupler","method":"quadruple","params":{"n":3}}'.length,
    );
    // NuroPb's own trace id travels on through the handler's calls.
    for (const s of processesB) expect(s.attributes["nuropb.trace_id"]).toBe("t-1");
  });

  it("marks the error type on both sides of a failed call, without its description", async () => {
    const { client } = await chain(tracing({ tracerProvider: otel.tracerProvider }));
    await expect(client.request("quadrupler", "refuseDownstream", {})).rejects.toThrow("not today");
    const spans = otel.exporter.getFinishedSpans();
    const failed = spans.filter((s) => s.status.code === SpanStatusCode.ERROR);
    expect(failed.map((s) => s.name).sort()).toEqual([
      "process doubler",
      "process quadrupler",
      "send doubler",
      "send quadrupler",
    ]);
    for (const s of failed) {
      expect(s.attributes["error.type"]).toBe("NuropbValidationError");
      expect(s.attributes["nuropb.outcome"]).toBe("error");
      expect(s.status.message).toBeUndefined();
      expect(s.events).toEqual([]);
    }
    expect(spans[0]!.attributes["messaging.system"]).toBe("nuropb");
  });

  it("gives a message without traceparent (a Python peer's) a root consumer span", async () => {
    const t = tracing({ tracerProvider: otel.tracerProvider });
    // The client sends without tracing, as a Python client does.
    const { client } = await chain(t, { client: (_c, next) => next() });
    const tracer = otel.tracerProvider.getTracer("test");
    // Even inside a span of the caller's: the memory hub delivers in the sender's context.
    await tracer.startActiveSpan("unrelated", async (s) => {
      await client.request("doubler", "double", { n: 1 }, {}, { traceId: "python-trace" });
      s.end();
    });
    expect(received[0]!.traceparent).toBeUndefined();
    const [processB] = byName(otel.exporter.getFinishedSpans(), "process doubler");
    expect(processB!.parentSpanContext).toBeUndefined();
    expect(processB!.links).toEqual([]);
    expect(processB!.kind).toBe(SpanKind.CONSUMER);
    expect(processB!.attributes["nuropb.trace_id"]).toBe("python-trace");
  });

  it("traces events: a producer span per publish, a consumer span per subscriber", async () => {
    const { client, quad } = await chain(tracing({ tracerProvider: otel.tracerProvider }));
    await client.publishEvent("orders.created", { id: 7 });
    await expect.poll(() => quad.seen.length).toBe(1);
    await expect.poll(() => otel.exporter.getFinishedSpans().length).toBe(2);
    const spans = otel.exporter.getFinishedSpans();
    const [send] = byName(spans, "send orders.created");
    const [processed] = byName(spans, "process orders.created");
    expect(parentOf(processed!)).toBe(send!.spanContext().spanId);
    expect(processed!.attributes).toMatchObject({
      "nuropb.kind": "event",
      "messaging.destination.name": "orders.created",
      "rpc.service": "quadrupler",
    });
    expect(send!.attributes["rpc.method"]).toBeUndefined();
  });

  it("adds no header and records nothing when no tracer provider is registered", async () => {
    expect(trace.getTracerProvider().getTracer("x").startSpan("y").isRecording()).toBe(false);
    const { client } = await chain(tracing());
    expect(await client.request("quadrupler", "quadruple", { n: 1 })).toBe(4);
    expect(received).toHaveLength(3);
    for (const h of received) {
      expect(h.traceparent).toBeUndefined();
      expect(h.tracestate).toBeUndefined();
    }
    expect(otel.exporter.getFinishedSpans()).toEqual([]);
  });

  it("is inactive, so core skips it, while no tracer provider is registered", () => {
    const idle = tracing();
    expect(idle.client.active()).toBe(false);
    expect(idle.service.active()).toBe(false);
    const given = tracing({ tracerProvider: otel.tracerProvider });
    expect(given.client.active()).toBe(true);
    expect(given.service.active()).toBe(true);
    // A ProxyTracerProvider given with nothing behind it is no tracer either.
    const proxy = tracing({ tracerProvider: new ProxyTracerProvider() });
    expect(proxy.client.active()).toBe(false);
  });

  it("uses a global provider registered after the participants were created, from the next call on", async () => {
    const t = tracing({ transport: "memory" });
    const { client } = await chain(t);
    const later = createOtel();
    try {
      expect(await client.request("quadrupler", "quadruple", { n: 1 })).toBe(4);
      expect(otel.exporter.getFinishedSpans()).toEqual([]);
      expect(trace.setGlobalTracerProvider(otel.tracerProvider)).toBe(true);
      expect(t.client.active()).toBe(true);
      expect(t.service.active()).toBe(true);
      expect(await client.request("quadrupler", "quadruple", { n: 1 })).toBe(4);
      const spans = otel.exporter.getFinishedSpans();
      expect(byName(spans, "send quadrupler")).toHaveLength(1);
      expect(byName(spans, "process quadrupler")).toHaveLength(1);
      expect(byName(spans, "send doubler")).toHaveLength(2);
      expect(byName(spans, "process doubler")).toHaveLength(2);
      expect(received.at(-1)?.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);

      // Unregistered: idle again; another provider registered: its tracer is used, not the first's.
      trace.disable();
      otel.exporter.reset();
      expect(t.client.active()).toBe(false);
      expect(await client.request("quadrupler", "quadruple", { n: 1 })).toBe(4);
      expect(otel.exporter.getFinishedSpans()).toEqual([]);
      expect(trace.setGlobalTracerProvider(later.tracerProvider)).toBe(true);
      expect(await client.request("quadrupler", "quadruple", { n: 1 })).toBe(4);
      expect(otel.exporter.getFinishedSpans()).toEqual([]);
      expect(byName(later.exporter.getFinishedSpans(), "send quadrupler")).toHaveLength(1);
    } finally {
      trace.disable();
      await later.shutdown();
    }
  });

  it("parents the events a handler raises by its process span", async () => {
    const { client, quad } = await chain(tracing({ tracerProvider: otel.tracerProvider }));
    await client.request("quadrupler", "quadrupleAndTell", { n: 1 });
    await expect.poll(() => quad.seen.length).toBe(1);
    await expect
      .poll(() => byName(otel.exporter.getFinishedSpans(), "process orders.told"))
      .toHaveLength(1);
    const spans = otel.exporter.getFinishedSpans();
    const [processA] = byName(spans, "process quadrupler");
    const [raised] = byName(spans, "send orders.told");
    const [told] = byName(spans, "process orders.told");
    expect(parentOf(raised!)).toBe(processA!.spanContext().spanId);
    expect(parentOf(told!)).toBe(raised!.spanContext().spanId);
    expect(new Set(spans.map((s) => s.spanContext().traceId)).size).toBe(1);
  });

  it("gives the consumer span the size of the body as it arrived", async () => {
    const { client } = await chain(tracing({ tracerProvider: otel.tracerProvider }));
    await client.request("doubler", "double", { n: 1, pad: "x".repeat(2000) });
    await client.request("doubler", "double", { n: 1 });
    const sizes = byName(otel.exporter.getFinishedSpans(), "process doubler").map(
      (s) => s.attributes["messaging.message.body.size"] as number,
    );
    expect(sizes[0]! - sizes[1]!).toBe(`,"pad":"${"x".repeat(2000)}"`.length);
  });

  it("carries traceparent and tracestate while a trace is active", async () => {
    const { client } = await chain(tracing({ tracerProvider: otel.tracerProvider }));
    // A trace that came in from elsewhere, with a vendor's trace state.
    const incoming = propagation.extract(ROOT_CONTEXT, {
      traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      tracestate: "vendor=abc",
    });
    await context.with(incoming, () => client.request("doubler", "double", { n: 1 }));
    expect(received[0]!.traceparent).toMatch(
      /^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/,
    );
    expect(received[0]!.tracestate).toBe("vendor=abc");
    const [send] = byName(otel.exporter.getFinishedSpans(), "send doubler");
    expect(received[0]!.traceparent).toContain(send!.spanContext().spanId);
  });

  it("refuses bad options at once", () => {
    expect(() => tracing({ transport: 3 } as never)).toThrow(TypeError);
    expect(() => tracing({ messagingSystem: "" })).toThrow(/messagingSystem/);
    expect(() => tracing({ tracerProvider: {} } as never)).toThrow(/tracerProvider/);
    expect(() => tracing({ tracer: 1 } as never)).toThrow(/unknown option 'tracer'/);
    expect(() => tracing(null as never)).toThrow(TypeError);
  });
});
