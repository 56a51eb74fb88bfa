import { describe, expect, it } from "vitest";
import { NuropbTransportError } from "@nuropb/protocol";
import type { Delivery, Transport, TransportEvent } from "@nuropb/protocol";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import {
  decode,
  makeFrame,
  quiesce,
  recorder,
  responseRecorder,
  serviceSpec,
  useHub,
  waitFor,
} from "./support.ts";

const env = useHub();
const Q = "nuropb-svc-sq";
const rpc = { kind: "rpc", service: "svc" } as const;

function watch(t: Transport): TransportEvent[] {
  const seen: TransportEvent[] = [];
  void (async () => {
    for await (const e of t.events()) seen.push(e);
  })();
  return seen;
}

describe("createMemoryHub", () => {
  it("validates its options", () => {
    expect(() => createMemoryHub({ maxDeadLetters: -1 })).toThrow(TypeError);
    expect(() => createMemoryHub(null as never)).toThrow(TypeError);
  });

  it("keeps at most maxDeadLetters, dropping the oldest", async () => {
    const hub = createMemoryHub({ maxDeadLetters: 2 });
    const t = createMemoryTransport({ hub });
    await t.connect();
    await t.consumeService(serviceSpec("svc"), (d) => d.reject());
    for (const id of ["a", "b", "c"]) await t.send(rpc, makeFrame(id));
    await waitFor(() => hub.deadLetters().at(-1)?.frame.correlationId === "c");
    expect(hub.deadLetters().map((d) => d.frame.correlationId)).toEqual(["b", "c"]);
    await t.close();
  });

  it("keeps the newest maxDeadLetters through many drops, clears, and keeps none at 0", async () => {
    const hub = createMemoryHub({ maxDeadLetters: 3 });
    const none = createMemoryHub({ maxDeadLetters: 0 });
    const t = createMemoryTransport({ hub });
    const z = createMemoryTransport({ hub: none });
    await Promise.all([t.connect(), z.connect()]);
    await t.consumeService(serviceSpec("svc"), (d) => d.reject());
    await z.consumeService(serviceSpec("svc"), (d) => d.reject());
    const ids = Array.from({ length: 20 }, (_, i) => `m${String(i)}`);
    for (const id of ids) await t.send(rpc, makeFrame(id));
    await waitFor(() => hub.deadLetters().at(-1)?.frame.correlationId === "m19");
    expect(hub.deadLetters().map((d) => d.frame.correlationId)).toEqual(["m17", "m18", "m19"]);
    hub.clearDeadLetters();
    expect(hub.deadLetters()).toEqual([]);
    await t.send(rpc, makeFrame("after"));
    await waitFor(() => hub.deadLetters().length === 1);
    expect(hub.deadLetters()[0]?.frame.correlationId).toBe("after");
    await z.send(rpc, makeFrame("z"));
    await waitFor(
      () => none.queueDepth("nuropb-svc-sq") === 0 && none.unsettledCount("nuropb-svc-sq") === 0,
    );
    expect(none.deadLetters()).toEqual([]);
    await Promise.all([t.close(), z.close()]);
  });

  it("keeps hubs apart", async () => {
    const a = env.create();
    const other = createMemoryTransport({ hub: createMemoryHub() });
    await Promise.all([a.connect(), other.connect()]);
    await a.consumeService(serviceSpec("svc"), () => {});
    await expect(other.send(rpc, makeFrame("x"))).rejects.toThrow(/no queue/);
    await expect(env.hub().disconnect(other)).rejects.toBeInstanceOf(TypeError);
    await other.close();
  });
});

describe("inspection", () => {
  it("reports queues, depth, unsettled and consumers", async () => {
    const t = await env.open();
    const hub = env.hub();
    expect(hub.queueNames()).toEqual([]);
    expect(hub.queueDepth("nope")).toBe(0);
    expect(hub.consumerCount("nope")).toBe(0);
    expect(hub.unsettledCount("nope")).toBe(0);
    expect(hub.eventBindings("nope")).toEqual([]);
    expect(hub.queueNames("unknown-mesh")).toEqual([]);
    const held: Delivery[] = [];
    await t.consumeService(serviceSpec("svc", { prefetch: 1 }), (d) => void held.push(d));
    await t.consumeResponses({ address: "nuropb-svc-1-rq" }, () => {});
    expect(hub.queueNames()).toEqual(["nuropb-svc-1-rq", Q]);
    expect(hub.consumerCount("nuropb-svc-1-rq")).toBe(1);
    await t.send(rpc, makeFrame("a"));
    await t.send(rpc, makeFrame("b"));
    await waitFor(() => held.length === 1);
    expect(hub.queueDepth(Q)).toBe(1);
    expect(hub.unsettledCount(Q)).toBe(1);
    await t.send({ kind: "reply", address: "nuropb-svc-1-rq" }, makeFrame("r"));
    expect(hub.queueDepth("nuropb-svc-1-rq")).toBe(1);
    await waitFor(() => hub.queueDepth("nuropb-svc-1-rq") === 0);
  });

  it("returns copies of dead letters", async () => {
    const t = await env.open();
    await t.consumeService(serviceSpec("svc"), (d) => d.reject());
    await t.send(rpc, makeFrame("a"));
    await waitFor(() => env.hub().deadLetters().length === 1);
    env.hub().deadLetters()[0]?.frame.body.fill(0);
    expect(decode(env.hub().deadLetters()[0]?.frame.body ?? new Uint8Array())).toBe("a");
  });
});

describe("hub.disconnect", () => {
  it("reports disconnected then reconnected, and consuming resumes", async () => {
    const t = await env.open();
    const other = await env.open();
    const events = watch(t);
    const rec = recorder();
    const responses = responseRecorder();
    await t.consumeService(serviceSpec("svc"), rec.handler);
    await t.consumeResponses({ address: "addr" }, responses.handler);
    await env.hub().disconnect(t);
    await waitFor(() => events.length === 2);
    expect(events.map((e) => e.type)).toEqual(["disconnected", "reconnected"]);
    const [lost] = events;
    expect(lost?.type === "disconnected" && lost.error).toBeInstanceOf(NuropbTransportError);
    expect(t.state).toBe("open");
    await other.send(rpc, makeFrame("after"));
    await other.send({ kind: "reply", address: "addr" }, makeFrame("reply"));
    await waitFor(() => rec.items.length === 1 && responses.items.length === 1);
  });

  it("returns unsettled deliveries redelivered; settling the old ones is a no-op", async () => {
    const t = await env.open();
    const seen: Delivery[] = [];
    await t.consumeService(serviceSpec("svc"), (d) => void seen.push(d));
    await t.send(rpc, makeFrame("m"));
    await waitFor(() => seen.length === 1);
    const down = env.hub().disconnect(t, { downMs: 20 });
    expect(env.hub().queueDepth(Q)).toBe(1);
    expect(env.hub().consumerCount(Q)).toBe(0);
    await seen[0]?.reject();
    expect(env.hub().deadLetters()).toEqual([]);
    await down;
    await waitFor(() => seen.length === 2);
    expect(seen[1]?.redelivered).toBe(true);
    expect(decode(seen[1]?.body ?? new Uint8Array())).toBe("m");
  });

  it("returns a six-figure number of unsettled deliveries without overflowing the stack", async () => {
    const t = await env.open();
    let seen = 0;
    await t.consumeService(serviceSpec("svc", { prefetch: 0 }), () => void seen++);
    const n = 150_000;
    const sends: Promise<void>[] = [];
    for (let i = 0; i < n; i++) sends.push(t.send(rpc, makeFrame(`m${i}`)));
    await Promise.all(sends);
    await waitFor(() => seen === n, 20_000);
    expect(env.hub().unsettledCount(Q)).toBe(n);
    await env.hub().disconnect(t, { downMs: 1 });
    await waitFor(() => seen === 2 * n, 20_000); // every one back and delivered again
  });

  it("expires a message from a six-figure queue without overflowing the stack", async () => {
    const t = await env.open();
    await (await t.consumeService(serviceSpec("svc"), () => undefined)).stop(); // the queue stays
    const n = 150_000;
    const sends: Promise<void>[] = [];
    for (let i = 0; i < n - 1; i++) sends.push(t.send(rpc, makeFrame(`m${i}`)));
    sends.push(t.send(rpc, makeFrame("short-lived", { ttlMs: 1 })));
    await Promise.all(sends);
    await waitFor(() => env.hub().deadLetters().length === 1, 10_000);
    expect(env.hub().deadLetters()[0]?.reason).toBe("expired");
    expect(env.hub().queueDepth(Q)).toBe(n - 1);
  });

  it("close() ends a simulated outage: waiting sends reject at once, the outage settles", async () => {
    const t = await env.open();
    const down = env.hub().disconnect(t, { downMs: 3_600_000 });
    const waiting = t.send({ kind: "event", topic: "t" }, makeFrame("while-down"));
    await t.close();
    await expect(waiting).rejects.toThrow(/closed/);
    await down; // settles now, not in an hour (and leaves no timer behind)
  });

  it("drops the response queue and responses in flight while down", async () => {
    const t = await env.open();
    const other = await env.open();
    const responses = responseRecorder();
    await t.consumeResponses({ address: "addr" }, responses.handler);
    await other.send({ kind: "reply", address: "addr" }, makeFrame("in-flight"));
    const down = env.hub().disconnect(t, { downMs: 20 });
    expect(env.hub().queueNames()).toEqual([]);
    await other.send({ kind: "reply", address: "addr" }, makeFrame("while-down"));
    await down;
    await other.send({ kind: "reply", address: "addr" }, makeFrame("after"));
    await waitFor(() => responses.items.length === 1);
    await quiesce();
    expect(responses.items.map((f) => decode(f.body))).toEqual(["after"]);
  });

  it("holds sends made while down until reconnected", async () => {
    const t = await env.open();
    const rec = recorder();
    await t.consumeService(serviceSpec("svc"), rec.handler);
    const down = env.hub().disconnect(t, { downMs: 20 });
    let sent = false;
    const sending = t.send(rpc, makeFrame("m")).then(() => (sent = true));
    await quiesce();
    expect(sent).toBe(false);
    await down;
    await sending;
    await waitFor(() => rec.items.length === 1);
  });

  it("reports errored when its response address was taken meanwhile", async () => {
    const t = await env.open();
    const thief = await env.open();
    const events = watch(t);
    await t.consumeResponses({ address: "addr" }, () => {});
    const down = env.hub().disconnect(t, { downMs: 20 });
    await thief.consumeResponses({ address: "addr" }, () => {});
    await down;
    await waitFor(() => events.length === 3);
    expect(events.map((e) => e.type)).toEqual(["disconnected", "errored", "reconnected"]);
  });

  it("uses the given error, shares one outage, and ends early when closed", async () => {
    const t = await env.open();
    const events = watch(t);
    const error = new Error("cable cut");
    const first = env.hub().disconnect(t, { downMs: 50, error });
    const second = env.hub().disconnect(t);
    await t.close();
    await Promise.all([first, second]);
    await waitFor(() => events.length === 2);
    expect(events).toEqual([{ type: "disconnected", error }, { type: "closed" }]);
    await expect(env.hub().disconnect(t)).rejects.toBeInstanceOf(NuropbTransportError);
    await expect(env.hub().disconnect(t, { downMs: -1 })).rejects.toBeInstanceOf(TypeError);
  });

  it("does not resume a listener stopped while down", async () => {
    const t = await env.open();
    const listener = await t.consumeService(serviceSpec("svc"), () => {});
    const down = env.hub().disconnect(t);
    await listener.stop();
    await down;
    expect(env.hub().consumerCount(Q)).toBe(0);
  });
});

describe("hub.fail", () => {
  it("closes the transport with the error", async () => {
    const t = await env.open();
    const events = watch(t);
    const error = new Error("fatal");
    await env.hub().fail(t, error);
    await expect(t.closed()).resolves.toBe(error);
    expect(t.state).toBe("closed");
    await waitFor(() => events.length === 1);
    expect(events).toEqual([{ type: "closed", error }]);
    await t.close();
    await expect(t.closed()).resolves.toBe(error);
  });

  it("uses a NuropbTransportError by default", async () => {
    const t = await env.open();
    await env.hub().fail(t);
    await expect(t.closed()).resolves.toBeInstanceOf(NuropbTransportError);
  });
});
