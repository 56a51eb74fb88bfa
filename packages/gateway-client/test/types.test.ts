import { expect, expectTypeOf, it } from "vitest";
import { WebSocket } from "ws";
import { createGatewayClient } from "../src/index.ts";
import type { GatewayProxy } from "../src/index.ts";

class Orders {
  getOrder(params: { id: string }): { id: string; total: number } {
    return { id: params.id, total: 1 };
  }
  async list(_params: Record<string, never>): Promise<string[]> {
    return [];
  }
  _private(): void {}
  handleEvent(): void {}
  readonly name = "orders";
}

it("a typed proxy maps each public method to a call returning a promise of its result", () => {
  type P = GatewayProxy<Orders>;
  expectTypeOf<keyof P>().toEqualTypeOf<"getOrder" | "list">();
  expectTypeOf<P["getOrder"]>().parameter(0).toEqualTypeOf<{ id: string }>();
  expectTypeOf<ReturnType<P["getOrder"]>>().toEqualTypeOf<Promise<{ id: string; total: number }>>();
  expectTypeOf<ReturnType<P["list"]>>().toEqualTypeOf<Promise<string[]>>();
});

it("fits the caller `nuropb codegen` proxies take: request(service, method, params)", () => {
  const client = createGatewayClient({ url: "ws://127.0.0.1:1/ws", WebSocket });
  const caller: {
    request(
      service: string,
      method: string,
      params?: Readonly<Record<string, unknown>>,
    ): Promise<unknown>;
  } = client;
  expect(typeof caller.request).toBe("function");
  expect(client.state).toBe("idle");
});

it("refuses bad options at once", () => {
  expect(() => createGatewayClient({ url: "", WebSocket })).toThrow(TypeError);
  expect(() => createGatewayClient({ url: "ftp://x", WebSocket })).toThrow(
    /ws\(s\):\/\/ or http\(s\):\/\//,
  );
  expect(() => createGatewayClient({ url: "ws://x", WebSocket, defaultTtlMs: 0 })).toThrow(
    /defaultTtlMs/,
  );
  // Without a global WebSocket (Node 20; Node 22 has one), the class must be passed.
  const g = globalThis as { WebSocket?: unknown };
  const saved = g.WebSocket;
  delete g.WebSocket;
  try {
    expect(() => createGatewayClient({ url: "ws://x" })).toThrow(/no WebSocket class/);
  } finally {
    if (saved !== undefined) g.WebSocket = saved;
  }
});
