import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  createClient,
  createService,
  type MeshParticipant,
  type ParticipantEvent,
  type RequestContext,
} from "@nuropb/core";
import { NuropbCallAgain, NuropbValidationError, type EventType } from "@nuropb/protocol";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { MetricName, metrics } from "@nuropb/opentelemetry";
import { createOtel, total } from "./otel-setup.ts";

class Doubler {
  double(p: { n: number }): number {
    return p.n * 2;
  }
  refuse(): never {
    throw new NuropbValidationError("not today");
  }
  again(): never {
    throw new NuropbCallAgain("later");
  }
  note(): void {}
}

class Quadrupler {
  readonly seen: EventType[] = [];
  async quadruple(p: { n: number }, ctx: RequestContext): Promise<number> {
    const twice = await ctx.request<number>("doubler", "double", { n: p.n });
    return ctx.request<number>("doubler", "double", { n: twice });
  }
  handleEvent(e: EventType): void {
    this.seen.push(e);
  }
}

/** Fresh SDK pieces per test: counters add up over a provider's life. */
let otel: ReturnType<typeof createOtel>;
const open: MeshParticipant[] = [];
beforeEach(() => {
  otel = createOtel();
});
afterEach(async () => {
  for (const p of open.splice(0)) await p.disconnect();
  await otel.shutdown();
});

async function chain() {
  const m = metrics({ meterProvider: otel.meterProvider, transport: "memory" });
  const hub = createMemoryHub();
  const transport = () => createMemoryTransport({ hub });
  const doubler = createService({
    transport: transport(),
    name: "doubler",
    instance: new Doubler(),
    middleware: [m.service],
    onLifecycle: m.onLifecycle,
  });
  const quad = new Quadrupler();
  const quadrupler = createService({
    transport: transport(),
    name: "quadrupler",
    instance: quad,
    eventBindings: ["orders.#"],
    middleware: [m.service],
    clientMiddleware: [m.client],
    onLifecycle: m.onLifecycle,
  });
  const client = createClient({
    transport: transport(),
    middleware: [m.client],
    onLifecycle: m.onLifecycle,
  });
  for (const p of [doubler, quadrupler, client]) {
    await p.connect();
    open.push(p);
  }
  return { client, quad, m };
}

describe("metrics", () => {
  it("counts and times the calls made, by service, method, kind and outcome", async () => {
    const { client, quad } = await chain();
    for (let n = 0; n < 3; n++) await client.request("quadrupler", "quadruple", { n });
    await expect(client.request("doubler", "refuse", {})).rejects.toThrow("not today");
    await expect(client.request("doubler", "again", {})).rejects.toThrow();
    await client.command("doubler", "note", {});
    await client.publishEvent("orders.created", { id: 1 });
    await client.publishEvent("orders.created", { id: 2 });
    await expect.poll(() => quad.seen.length).toBe(2);

    const ok = { "nuropb.outcome": "ok" };
    // Sent: 3 by the client to quadrupler, 6 by quadrupler to doubler, 2 failed, 1 command, 2 events.
    const sent = (a: Record<string, string>) => otel.points(MetricName.clientCalls, a);
    expect(
      total(await sent({ "rpc.service": "quadrupler", "rpc.method": "quadruple", ...ok })),
    ).toBe(3);
    expect(total(await sent({ "rpc.service": "doubler", "rpc.method": "double", ...ok }))).toBe(6);
    expect(
      total(
        await sent({
          "rpc.method": "refuse",
          "nuropb.outcome": "error",
          "error.type": "NuropbValidationError",
        }),
      ),
    ).toBe(1);
    expect(total(await sent({ "nuropb.kind": "command", "rpc.method": "note", ...ok }))).toBe(1);
    expect(
      total(await sent({ "nuropb.kind": "event", "messaging.destination.name": "orders.created" })),
    ).toBe(2);
    expect(total(await sent({}))).toBe(3 + 6 + 2 + 1 + 2);

    const handled = (a: Record<string, string>) => otel.points(MetricName.serverCalls, a);
    expect(total(await handled({ "rpc.service": "doubler", "rpc.method": "double", ...ok }))).toBe(
      6,
    );
    expect(total(await handled({ "rpc.service": "quadrupler", "nuropb.kind": "request" }))).toBe(3);
    expect(total(await handled({ "nuropb.kind": "event", "rpc.service": "quadrupler" }))).toBe(2);
    // NuropbCallAgain: requeued once, then refused: two handlings, both "call_again".
    expect(total(await handled({ "rpc.method": "again", "nuropb.outcome": "call_again" }))).toBe(2);
    expect(total(await handled({ "rpc.method": "refuse", "nuropb.outcome": "error" }))).toBe(1);

    // A duration for each count.
    expect(total(await otel.points(MetricName.serverDuration, {}))).toBe(total(await handled({})));
    expect(total(await otel.points(MetricName.clientDuration, {}))).toBe(total(await sent({})));
    const [p] = await otel.points(MetricName.clientDuration, { "rpc.method": "quadruple" });
    expect(p!.attributes["messaging.system"]).toBe("nuropb_memory");

    // Nothing in flight any more.
    for (const q of await otel.points(MetricName.serverInFlight)) expect(q.value).toBe(0);
    // Dead-letters: the refused call, and the call-again one once refused on redelivery.
    expect(total(await otel.points(MetricName.deadLetters, { "rpc.service": "doubler" }))).toBe(2);
  });

  it("times the NuroPb lifecycle states of each message", async () => {
    const { client } = await chain();
    await client.request("doubler", "double", { n: 1 });
    await client.request("doubler", "double", { n: 2 });
    const states = async (state: string) =>
      total(await otel.points(MetricName.lifecycleDuration, { "nuropb.lifecycle.state": state }));
    // Each state after the first of its side is timed once per message.
    for (const s of [
      "client-send",
      "client-receive",
      "client-end",
      "service-handle",
      "service-reply",
    ])
      expect(await states(s), s).toBe(2);
    // The first state of a side has nothing before it.
    expect(await states("client-start")).toBe(0);
    expect(await states("service-receive")).toBe(0);
  });

  it("counts disconnects and reconnects of a watched participant", async () => {
    const m = metrics({ meterProvider: otel.meterProvider, messagingSystem: "rabbitmq" });
    const events: ParticipantEvent[] = [
      { type: "connected" },
      { type: "disconnected" },
      { type: "reconnected" },
      { type: "disconnected" },
      { type: "reconnected" },
    ];
    const fake = {
      events: async function* () {
        yield* events;
      },
    };
    m.watch(fake);
    const match = { "messaging.system": "rabbitmq" };
    await expect.poll(async () => total(await otel.points(MetricName.reconnects, match))).toBe(2);
    expect(total(await otel.points(MetricName.disconnects, match))).toBe(2);
  });

  it("is inactive, so core skips it, when its meter is the no-op one", () => {
    const idle = metrics();
    expect(idle.client.active()).toBe(false);
    expect(idle.service.active()).toBe(false);
    const given = metrics({ meterProvider: otel.meterProvider });
    expect(given.client.active()).toBe(true);
    expect(given.service.active()).toBe(true);
  });

  it("refuses bad options at once", () => {
    expect(() => metrics({ meterProvider: {} } as never)).toThrow(/meterProvider/);
    expect(() => metrics({ maxTrackedMessages: 0 })).toThrow(/maxTrackedMessages/);
    expect(() => metrics({ meter: 1 } as never)).toThrow(/unknown option 'meter'/);
  });
});
