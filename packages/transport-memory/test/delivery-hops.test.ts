import { describe, expect, it } from "vitest";
import type { Delivery } from "@nuropb/protocol";
import { makeFrame, recorder, responseRecorder, serviceSpec, turn, useHub } from "./support.ts";

const env = useHub();
const rpc = { kind: "rpc", service: "svc" } as const;

/** Resolves with `read()` on the next macrotask turn (setImmediate queued now). */
function onNextTurn<T>(read: () => T): Promise<T> {
  return new Promise((resolve) => setImmediate(() => resolve(read())));
}

describe("delivery hops", () => {
  it("hands a request to its consumer without waiting for a macrotask turn", async () => {
    const t = await env.open();
    const rec = recorder();
    await t.consumeService(serviceSpec("svc"), rec.handler);
    await turn(); // a fresh turn: the hub's per-turn budget is full
    const seen = onNextTurn(() => rec.items.length);
    await t.send(rpc, makeFrame("a"));
    expect(await seen).toBe(1);
  });

  it("hands a response to its consumer without waiting for a macrotask turn", async () => {
    const t = await env.open();
    const responses = responseRecorder();
    await t.consumeResponses({ address: "addr" }, responses.handler);
    await turn();
    const seen = onNextTurn(() => responses.items.length);
    await t.send({ kind: "reply", address: "addr" }, makeFrame("r"));
    expect(await seen).toBe(1);
  });

  it("lets the sender that awaits send resume before the delivery", async () => {
    const t = await env.open();
    const rec = recorder();
    await t.consumeService(serviceSpec("svc"), rec.handler);
    await turn();
    await t.send(rpc, makeFrame("a"));
    expect(rec.items.length).toBe(0);
  });

  it("still lets timers run while a handler requeues every delivery", async () => {
    const t = await env.open();
    let deliveries = 0;
    const listener = await t.consumeService(serviceSpec("svc"), (d: Delivery) => {
      deliveries++;
      return d.requeue(); // back to the queue, delivered again at once: forever
    });
    await t.send(rpc, makeFrame("loop"));
    // A starved event loop would never fire this timer (the test would time out).
    await new Promise((resolve) => setTimeout(resolve, 5));
    await listener.stop();
    expect(deliveries).toBeGreaterThan(1);
  });
});
