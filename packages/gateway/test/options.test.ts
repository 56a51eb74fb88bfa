import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { describe, expect, it } from "vitest";
import { createGateway } from "../src/index.ts";
import type { GatewayExposure } from "../src/index.ts";

const transport = createMemoryTransport({ hub: createMemoryHub() });

function withServices(services: unknown): () => unknown {
  return () => createGateway({ transport, expose: { services } as GatewayExposure });
}

describe("createGateway's options", () => {
  it("refuses a bad method name with a TypeError that shows it, whatever its type", () => {
    expect(withServices({ orders: { requests: ["ok", "no way"] } })).toThrow(
      /options\.expose\.services\["orders"\]\.requests\[1\] must be a name .* got "no way"$/,
    );
    expect(withServices({ orders: { requests: [2n ** 64n] } })).toThrow(
      /requests\[0\] must be a name .* got 18446744073709551616n$/,
    );
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(withServices({ orders: { commands: [cyclic] } })).toThrow(
      /commands\[0\] must be a name .* got \[object Object\]$/,
    );
    expect(withServices({ orders: { requests: [Symbol("m")] } })).toThrow(TypeError);
  });

  it("refuses a bad service name", () => {
    expect(withServices({ "a b": {} })).toThrow(/the service name "a b" must be a name/);
  });
});
