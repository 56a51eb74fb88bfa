import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  NuropbConnectionClosedError,
  NuropbTransportError,
  createEventChannel,
  type Transport,
  type TransportEvent,
} from "@nuropb/protocol";
import { createClient, createService, type ParticipantEvent } from "@nuropb/core";
import { createMesh, waitFor } from "./helpers.ts";

class Calc {
  add(p: { a: number; b: number }): number {
    return p.a + p.b;
  }
}

/** Collects a participant's events until its stream ends. */
function collect(events: AsyncIterable<ParticipantEvent>): {
  readonly items: ParticipantEvent[];
  readonly ended: Promise<void>;
} {
  const items: ParticipantEvent[] = [];
  const ended = (async () => {
    for await (const e of events) items.push(e);
  })();
  return { items, ended };
}

/** `transport`, except that its events() are the ones the test emits on `channel`. */
function withEvents(
  transport: Transport,
  channel: ReturnType<typeof createEventChannel<TransportEvent>>,
): Transport {
  return new Proxy(transport, {
    get(target, key) {
      if (key === "events") return () => channel.iterate();
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === "function" ? (value as () => unknown).bind(target) : value;
    },
  });
}

describe("a participant's lifecycle shape: closed() and events()", () => {
  let mesh: ReturnType<typeof createMesh>;
  beforeEach(() => {
    mesh = createMesh();
  });
  afterEach(async () => {
    await mesh.cleanup();
  });

  it("disconnect(): events() says connected then closed, closed() resolves undefined once", async () => {
    const service = createService({
      transport: mesh.transport(),
      name: "calc",
      instance: new Calc(),
    });
    const seen = collect(service.events());
    await service.connect();
    await service.disconnect();
    await seen.ended;
    expect(seen.items).toEqual([{ type: "connected" }, { type: "closed" }]);
    expect(await service.closed()).toBeUndefined();
    // The same promise each time; a stream asked for after the close ends at once.
    expect(service.closed()).toBe(service.closed());
    const late = collect(service.events());
    await late.ended;
    expect(late.items).toEqual([]);
    await service.disconnect(); // idempotent
  });

  it("closed() stays pending until the participant closes, and every stream gets each event", async () => {
    const client = createClient({ transport: mesh.transport() });
    const a = collect(client.events());
    const b = collect(client.events());
    let settled = false;
    void client.closed().then(() => (settled = true));
    await client.connect();
    await new Promise((r) => setTimeout(r, 10));
    expect(settled).toBe(false);
    await client.disconnect();
    await Promise.all([a.ended, b.ended]);
    expect(settled).toBe(true);
    expect(a.items).toEqual(b.items);
    expect(a.items.map((e) => e.type)).toEqual(["connected", "closed"]);
  });

  it("a participant never connected closes too, without a reason", async () => {
    const client = createClient({ transport: mesh.transport() });
    await client.disconnect();
    expect(await client.closed()).toBeUndefined();
  });

  it("relays the transport's disconnected and reconnected; pending requests fail meanwhile", async () => {
    const service = createService({
      transport: mesh.transport(),
      name: "calc",
      instance: new Calc(),
    });
    const clientTransport = mesh.transport();
    const client = createClient({ transport: clientTransport });
    await service.connect();
    await client.connect();
    mesh.defer(() => service.disconnect());
    mesh.defer(() => client.disconnect());
    const seen = collect(client.events());
    await mesh.hub.disconnect(clientTransport, { downMs: 20 });
    await waitFor(() => seen.items.length >= 2, 2000, "disconnected and reconnected");
    expect(seen.items.map((e) => e.type)).toEqual(["disconnected", "reconnected"]);
    const down = seen.items[0] as Extract<ParticipantEvent, { type: "disconnected" }>;
    expect(down.error).toBeInstanceOf(NuropbTransportError);
    expect(await client.request("calc", "add", { a: 1, b: 2 })).toBe(3);
  });

  it("a transport that closes under the participant closes it, with the reason", async () => {
    const clientTransport = mesh.transport();
    const client = createClient({ transport: clientTransport });
    await client.connect();
    const seen = collect(client.events());
    const boom = new Error("link gone for good");
    await mesh.hub.fail(clientTransport, boom);
    expect(await client.closed()).toBe(boom);
    await seen.ended;
    expect(seen.items).toEqual([{ type: "closed", error: boom }]);
    expect(client.connected).toBe(false);
    await expect(client.request("calc", "add")).rejects.toBeInstanceOf(NuropbConnectionClosedError);
    await expect(client.connect()).rejects.toBeInstanceOf(NuropbConnectionClosedError);
    await client.disconnect(); // still fine, and the reason stays
    expect(await client.closed()).toBe(boom);
  });

  it("a transport closed by its owner first: the participant closes with a NuropbConnectionClosedError", async () => {
    const t = mesh.transport();
    const client = createClient({ transport: t });
    await client.connect();
    await t.close();
    const reason = await client.closed();
    expect(reason).toBeInstanceOf(NuropbConnectionClosedError);
    expect(reason?.message).toMatch(/transport was closed under the participant/);
  });

  it("relays the transport's errored events", async () => {
    const channel = createEventChannel<TransportEvent>();
    const client = createClient({ transport: withEvents(mesh.transport(), channel) });
    await client.connect();
    mesh.defer(() => client.disconnect());
    const seen = collect(client.events());
    const err = new Error("a channel failed and came back");
    channel.emit({ type: "errored", error: err });
    await waitFor(() => seen.items.length === 1, 2000, "the errored event");
    expect(seen.items).toEqual([{ type: "errored", error: err }]);
    expect(client.connected).toBe(true);
  });
});
