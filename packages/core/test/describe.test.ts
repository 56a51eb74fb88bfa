import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DESCRIBE_METHOD } from "@nuropb/protocol";
import { createClient, createService, normaliseDescription, publishToMesh } from "@nuropb/core";
import { createMesh } from "./helpers.ts";

class Shop {
  /** No params schema at all. */
  list(): string[] {
    return [];
  }
  /** A schema without `properties`. */
  @publishToMesh({ params: { type: "object", required: ["id"] } })
  get(params: { id: string }): string {
    return params.id;
  }
  @publishToMesh({ params: { type: "object", properties: { id: { type: "string" } } } })
  put(params: { id: string }): string {
    return params.id;
  }
}

let mesh: ReturnType<typeof createMesh>;
beforeEach(() => {
  mesh = createMesh();
});
afterEach(async () => {
  await mesh.cleanup();
});

describe("describe: every method's parameters has properties", () => {
  it("on the wire, as a reader written for Python's describe indexes it", async () => {
    const service = createService({
      transport: mesh.transport(),
      name: "shop",
      instance: new Shop(),
    });
    await service.connect();
    mesh.defer(() => service.disconnect());
    const client = createClient({ transport: mesh.transport(), defaultTtlMs: 2000 });
    await client.connect();
    mesh.defer(() => client.disconnect());

    // The raw result, not normaliseDescription's reading of it.
    const raw = await client.request<{
      methods: Record<string, { parameters: Record<string, unknown> }>;
    }>("shop", DESCRIBE_METHOD);
    expect(raw.methods.list?.parameters).toEqual({ type: "object", properties: {} });
    expect(raw.methods.get?.parameters).toEqual({
      type: "object",
      required: ["id"],
      properties: {},
    });
    expect(raw.methods.put?.parameters).toEqual({
      type: "object",
      properties: { id: { type: "string" } },
    });
    expect(service.describe().methods.list?.parameters.properties).toEqual({});
  });

  it("when reading a peer's description that has none", () => {
    const d = normaliseDescription({
      methods: { a: {}, b: { parameters: { type: "object" } }, c: { parameters: "junk" } },
    });
    expect(d.methods.a?.parameters).toEqual({ type: "object", properties: {} });
    expect(d.methods.b?.parameters).toEqual({ type: "object", properties: {} });
    expect(d.methods.c?.parameters).toEqual({ type: "object", properties: {} });
  });
});
