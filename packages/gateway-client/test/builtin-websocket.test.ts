import { createClient, createService } from "@nuropb/core";
import { createGateway } from "@nuropb/gateway";
import type { Gateway } from "@nuropb/gateway";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createGatewayClient } from "../src/index.ts";
import type { GatewayEvent } from "../src/index.ts";

// Without options.WebSocket the client takes the runtime's own class: Node 22 and 24 have one
// (CI runs this file on both), Node 20 has none unless started with --experimental-websocket.
const builtin = (globalThis as { WebSocket?: unknown }).WebSocket;

class Echo {
  echo(params: { text: string }): { text: string } {
    return params;
  }
}

const hub = createMemoryHub();
const serviceTransport = createMemoryTransport({ hub });
const gatewayTransport = createMemoryTransport({ hub });
const publisherTransport = createMemoryTransport({ hub });
const service = createService({ transport: serviceTransport, name: "echo", instance: new Echo() });
let gateway: Gateway;
let url: string;

beforeAll(async () => {
  await service.connect();
  gateway = createGateway({
    transport: gatewayTransport,
    expose: { services: { echo: { requests: ["echo"] } }, subscribe: ["news.#"] },
  });
  url = await gateway.listen();
});
afterAll(async () => {
  await gateway.close();
  await service.disconnect();
  await Promise.all([serviceTransport, gatewayTransport, publisherTransport].map((t) => t.close()));
});

it("without options.WebSocket: the runtime's own class (Node 22+), else a TypeError saying what to pass", async () => {
  if (typeof builtin !== "function") {
    expect(() => createGatewayClient({ url })).toThrow(/pass options\.WebSocket/);
    return;
  }
  const c = createGatewayClient({ url });
  try {
    expect(await c.request("echo", "echo", { text: "héllo" })).toEqual({ text: "héllo" });
    const got: GatewayEvent[] = [];
    await c.subscribe("news.*", (e) => got.push(e));
    const publisher = createClient({ transport: publisherTransport });
    await publisher.connect();
    await publisher.publishEvent("news.today", { n: 1 });
    await expect.poll(() => got.map((e) => [e.topic, e.event])).toEqual([["news.today", { n: 1 }]]);
    await publisher.disconnect();
  } finally {
    await c.close();
  }
});
