import { NuropbConnectionClosedError, type Transport } from "@nuropb/protocol";
import { afterEach, describe, expect, it } from "vitest";
import {
  createClient,
  createServicesView,
  MAX_STATUS_HEARTBEAT_MS,
  MIN_STATUS_HEARTBEAT_MS,
  STATUS_TOPIC,
  watchServices,
  type ServicesView,
  type StatusEvent,
} from "@nuropb/core";
import { createMesh, waitFor } from "./helpers.ts";

const report = (over: Partial<StatusEvent>): StatusEvent => ({
  type: "nuropb_status",
  service: "orders",
  instance_id: "a",
  state: "operational",
  leader: false,
  heartbeat_ms: 40,
  at: "2026-12-07T12:00:00.000Z",
  ...over,
});

let mesh = createMesh();
afterEach(async () => {
  await mesh.cleanup();
  mesh = createMesh();
});

/** A participant that reports like a runner's status publisher: on the status topic, as events. */
async function reporter(): Promise<(e: StatusEvent) => Promise<void>> {
  const client = createClient({ transport: mesh.transport() });
  await client.connect();
  mesh.defer(() => client.disconnect());
  return (e) => client.publishEvent(STATUS_TOPIC, e);
}

const watcherQueues = (): string[] =>
  mesh.hub.queueNames().filter((q) => q.includes("nuropb-watch-"));

describe("client.watchServices", () => {
  it("folds the reports into the live view and follows a leader change", async () => {
    const client = createClient({ transport: mesh.transport() });
    await client.connect();
    mesh.defer(() => client.disconnect());
    const watch = await client.watchServices({ pruneEveryMs: 10 });
    mesh.defer(() => watch.close());
    const updates: ServicesView[] = [];
    void (async () => {
      for await (const v of watch.updates()) updates.push(v);
    })();
    const send = await reporter();
    await send(report({ instance_id: "a", state: "leader", leader: true }));
    await send(report({ instance_id: "b" }));
    await send(report({ service: null, instance_id: "c" }));
    await waitFor(() => watch.view().services[0]?.instances.length === 2, 2000, "two instances");
    await waitFor(() => watch.view().clients.length === 1, 2000, "the client");
    expect(watch.view().services[0]?.leader).toBe("a");

    await send(report({ instance_id: "a", state: "stopped" }));
    await send(report({ instance_id: "b", state: "leader", leader: true }));
    await waitFor(() => watch.view().services[0]?.leader === "b", 2000, "b to lead");
    expect(watch.view().services[0]?.instances.map((i) => i.instanceId)).toEqual(["b"]);
    expect(updates.at(-1)?.services[0]?.leader).toBe("b");
  });

  it("drops an instance that falls silent within its heartbeats", async () => {
    const client = createClient({ transport: mesh.transport() });
    await client.connect();
    mesh.defer(() => client.disconnect());
    const watch = await client.watchServices({ pruneEveryMs: 10, silentAfterHeartbeats: 2 });
    mesh.defer(() => watch.close());
    const send = await reporter();
    await send(report({ instance_id: "crashes", heartbeat_ms: 30 }));
    await waitFor(() => watch.view().services.length === 1, 2000, "the instance");
    const seenAt = Date.now();
    // No more reports: it is gone after 2 heartbeats of 30 ms (plus a prune period).
    await waitFor(() => watch.view().services.length === 0, 2000, "the silent instance to go");
    expect(Date.now() - seenAt).toBeGreaterThanOrEqual(50);
  });

  it("reads a transient queue of its own, removed at close", async () => {
    const a = createClient({ transport: mesh.transport() });
    const b = createClient({ transport: mesh.transport() });
    await a.connect();
    await b.connect();
    mesh.defer(() => a.disconnect());
    mesh.defer(() => b.disconnect());
    const wa = await a.watchServices();
    const wb = await b.watchServices();
    // Two watchers, two queues: each hears every report.
    expect(watcherQueues()).toHaveLength(2);
    const send = await reporter();
    await send(report({ instance_id: "x" }));
    await waitFor(() => wa.view().services.length === 1 && wb.view().services.length === 1);
    await wa.close();
    await wa.close();
    expect(watcherQueues()).toHaveLength(1);
    await wb[Symbol.asyncDispose]();
    expect(watcherQueues()).toEqual([]);
  });

  it("goes when its transport closes, and ends its updates at close", async () => {
    const transport: Transport = mesh.transport();
    await transport.connect();
    const watch = await watchServices(transport);
    const ended = (async () => {
      for await (const _ of watch.updates()) void _;
      return true;
    })();
    await transport.close();
    expect(watcherQueues()).toEqual([]);
    // The transport closed as asked: the updates end by themselves, before watch.close().
    await expect(ended).resolves.toBe(true);
    await watch.close();
  });

  it("ends with NuropbConnectionClosedError when its transport fails for good, view kept", async () => {
    const transport: Transport = mesh.transport();
    await transport.connect();
    const watch = await watchServices(transport, { pruneEveryMs: 10 });
    mesh.defer(() => watch.close());
    const iterating = (async () => {
      for await (const _ of watch.updates()) void _;
    })();
    const send = await reporter();
    await send(report({ instance_id: "a", heartbeat_ms: 100 }));
    await waitFor(() => watch.view().services.length === 1, 2000, "the instance");
    const cause = new Error("broker gone");
    await mesh.hub.fail(transport, cause);
    const err = await iterating.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NuropbConnectionClosedError);
    expect((err as Error).cause).toBe(cause);
    // An updates() started later ends the same way at once.
    const later = (async () => {
      for await (const _ of watch.updates()) void _;
    })();
    await expect(later).rejects.toThrow(NuropbConnectionClosedError);
    // Nothing is heard any more: the last view stays, not pruned into an empty mesh.
    await new Promise((r) => setTimeout(r, 450));
    expect(watch.view().services[0]?.instances.map((i) => i.instanceId)).toEqual(["a"]);
  });

  it("refuses to watch before connect and bad options at once", async () => {
    const client = createClient({ transport: mesh.transport() });
    await expect(client.watchServices()).rejects.toThrow(NuropbConnectionClosedError);
    const t = mesh.transport();
    await t.connect();
    await expect(watchServices(t, { pruneEveryMs: -1 })).rejects.toThrow(TypeError);
    await expect(watchServices(t, { silentAfterHeartbeats: 0 })).rejects.toThrow(TypeError);
    await expect(watchServices(null as unknown as Transport)).rejects.toThrow(TypeError);
    expect(watcherQueues()).toEqual([]);
  });
});

describe("createServicesView", () => {
  it("clamps the heartbeat a report announces to a sane range", () => {
    let t = 0;
    const v = createServicesView({ now: () => t });
    v.apply(report({ instance_id: "forever", heartbeat_ms: 1e12 }));
    v.apply(report({ instance_id: "eager", heartbeat_ms: 0.001 }));
    const beats = Object.fromEntries(
      (v.view().services[0]?.instances ?? []).map((i) => [i.instanceId, i.heartbeatMs]),
    );
    expect(beats).toEqual({ forever: MAX_STATUS_HEARTBEAT_MS, eager: MIN_STATUS_HEARTBEAT_MS });
    // Silent for 3 of the eager one's clamped heartbeats: only it may go.
    t = MIN_STATUS_HEARTBEAT_MS * 3;
    expect(v.prune()).toBe(false);
    t += 1;
    expect(v.prune()).toBe(true);
    // An instance that announced 1e12 ms still drops out, after 3 of the largest heartbeat.
    t = MAX_STATUS_HEARTBEAT_MS * 3 + 1;
    expect(v.prune()).toBe(true);
    expect(v.view().services).toEqual([]);
  });

  it("ignores what is not a status report", () => {
    const v = createServicesView();
    expect(v.apply({ type: "nuropb_status", instance_id: "" })).toBe(false);
    expect(v.apply("nope")).toBe(false);
    expect(v.view()).toEqual({ services: [], clients: [] });
  });
});
