import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { NuropbCallAgain, NuropbValidationError, type EventType } from "@nuropb/protocol";
import {
  STATS_METHOD,
  createClient,
  createService,
  publishToMesh,
  type ServiceMiddleware,
  type ServiceStatsReport,
} from "@nuropb/core";
import { ServiceStats, redactDescription } from "../src/service-stats.ts";
import type { MethodEntry } from "../src/service-definition.ts";
import { createMesh, waitFor } from "./helpers.ts";

class Shop {
  readonly seen: EventType[] = [];
  price(p: { sku: string }): number {
    return p.sku.length;
  }
  leak(_p: unknown): never {
    // A careless handler quoting what it was given: none of it may reach another caller.
    throw new Error(
      "upstream refused amqp://shop:s3cret-pw@db.internal/x with Bearer abc.def.ghi, api_key=K123456 and session 7f3e9c2a1b",
    );
  }
  refuse(): never {
    throw new NuropbValidationError("sku is not a string");
  }
  later(): never {
    throw new NuropbCallAgain("not yet");
  }
  @publishToMesh({ hide: true })
  internal(): string {
    return "hidden";
  }
  handleEvent(e: EventType): void {
    this.seen.push(e);
    if ((e.event as { fail?: boolean }).fail === true) throw new Error("bad event");
  }
}

let mesh: ReturnType<typeof createMesh>;
beforeEach(() => {
  mesh = createMesh();
});
afterEach(async () => {
  await mesh.cleanup();
});

async function setUp(middleware: ServiceMiddleware[] = []) {
  const shop = new Shop();
  const service = createService({
    transport: mesh.transport(),
    name: "shop",
    instance: shop,
    eventBindings: ["shop.#"],
    serviceVersion: "1.2.3",
    middleware,
  });
  await service.connect();
  mesh.defer(() => service.disconnect());
  const client = createClient({ transport: mesh.transport(), defaultTtlMs: 2000 });
  await client.connect();
  mesh.defer(() => client.disconnect());
  return { shop, service, client };
}

describe("nuropb_stats", () => {
  it.each([
    ["without middleware", []],
    ["with middleware", [(_c, next) => next()] as ServiceMiddleware[]],
  ])("answers per-method counts, errors and timings (%s)", async (_name, middleware) => {
    const { shop, service, client } = await setUp(middleware);
    for (const sku of ["a", "bb", "ccc"]) await client.request("shop", "price", { sku });
    await expect(client.request("shop", "refuse", {})).rejects.toThrow("sku is not a string");
    await client.command("shop", "price", { sku: "d" });
    await expect(client.request("shop", "nope", {})).rejects.toThrow();
    await expect(client.request("shop", "internal", {})).resolves.toBe("hidden");
    await client.publishEvent("shop.opened", {});
    await client.publishEvent("shop.opened", { fail: true });
    await waitFor(() => shop.seen.length === 2);
    await waitFor(() => (service.stats().methods.handleEvent?.num_requests ?? 0) === 2);
    await waitFor(() => (service.stats().methods.price?.num_requests ?? 0) === 4);

    const stats = await client.request<ServiceStatsReport>("shop", STATS_METHOD, {});
    expect(stats).toMatchObject({
      type: "nuropb_stats_response",
      service_name: "shop",
      instance_id: service.instanceId,
      service_version: "1.2.3",
      connected: true,
      transport: { kind: "memory", state: "open" },
      // This very request is in flight.
      in_flight: 1,
      // "nope" and the hidden "internal", neither named.
      other_method_calls: 2,
    });
    expect(Object.keys(stats.methods).sort()).toEqual(["handleEvent", "price", "refuse"]);
    expect(JSON.stringify(stats)).not.toContain("internal");
    const price = stats.methods.price!;
    expect(price).toMatchObject({ num_requests: 4, num_errors: 0, last_error: null });
    const t = price.processing_time_ms;
    expect(t.p50).toBeGreaterThanOrEqual(0);
    expect(t.p99).toBeGreaterThanOrEqual(t.p50);
    expect(t.average).toBeCloseTo(t.total / 4, 2);
    expect(stats.methods.refuse).toMatchObject({
      num_requests: 1,
      num_errors: 1,
      last_error: { error: "NuropbValidationError", description: "sku is not a string" },
    });
    expect(stats.methods.handleEvent).toMatchObject({ num_requests: 2, num_errors: 1 });
    expect(Date.parse(stats.started)).toBeLessThanOrEqual(Date.now());
    expect(stats.uptime_ms).toBeGreaterThanOrEqual(0);
    // Neither describe nor stats count themselves.
    await client.request("shop", "nuropb_describe", {});
    expect(Object.keys(service.stats().methods).sort()).toEqual(["handleEvent", "price", "refuse"]);
  });

  it("never shows a credential in the last error", async () => {
    const { client, service } = await setUp();
    const context = { Authorization: "Bearer my-token-42", session: "7f3e9c2a1b" };
    await expect(client.request("shop", "leak", {}, context)).rejects.toThrow();
    const err = service.stats().methods.leak!.last_error!;
    expect(err.error).toBe("NuropbException");
    for (const secret of ["s3cret-pw", "abc.def.ghi", "K123456", "7f3e9c2a1b", "shop:"])
      expect(err.description).not.toContain(secret);
    expect(err.description).toContain("upstream refused");
    expect(err.description.length).toBeLessThanOrEqual(240);
  });

  it("blanks credentials after Bearer, Basic and Token, not the word token in a sentence", () => {
    expect(redactDescription("sent Bearer abc.DEF-1 and basic dXNlcjpwYXNz", {})).toBe(
      "sent Bearer [redacted] and basic [redacted]",
    );
    expect(redactDescription("Token 9f8e7d and token aVeryLongOpaqueValue", {})).toBe(
      "Token [redacted] and token [redacted]",
    );
    const sentence = "orders.getOrder needs a token in context['Authorization']";
    expect(redactDescription(sentence, {})).toBe(sentence);
  });

  it("counts a call asked to be called again; refused the second time, as an error", async () => {
    const { client, service } = await setUp();
    await expect(client.request("shop", "later", {})).rejects.toThrow();
    // Requeued once, then refused: two handlings.
    expect(service.stats().methods.later).toMatchObject({
      num_requests: 2,
      num_errors: 1,
      last_error: { error: "NuropbCallAgainReject" },
    });
  });

  it("takes percentiles over the latest 512 timings, the average over all", () => {
    const stats = new ServiceStats({
      serviceName: "shop",
      instanceId: "i",
      serviceVersion: undefined,
      methods: new Map([["price", { options: {} } as MethodEntry]]),
      eventHook: undefined,
      transport: { kind: "memory", state: "open" },
      connected: () => true,
    });
    let now = 0;
    const clock = vi.spyOn(performance, "now").mockImplementation(() => now);
    try {
      const call = (ms: number): void => {
        const t0 = stats.started();
        now += ms;
        stats.finished("price", t0, undefined, {});
      };
      for (let i = 0; i < 500; i++) call(100);
      for (let i = 0; i < 412; i++) call(1);
      for (let i = 0; i < 100; i++) call(i < 99 ? 2 : 50);
    } finally {
      clock.mockRestore();
    }
    const t = stats.report().methods.price!.processing_time_ms;
    // The latest 512: 412 × 1 ms, 99 × 2 ms, 1 × 50 ms.
    expect(t.p50).toBe(1);
    expect(t.p99).toBe(2);
    expect(t.total).toBe(500 * 100 + 412 + 99 * 2 + 50);
    expect(t.average).toBeCloseTo(t.total / 1012, 3);
    expect(stats.report().in_flight).toBe(0);
  });

  it("is reserved: no service may have a method named nuropb_stats", () => {
    class Bad {
      nuropb_stats(): number {
        return 1;
      }
    }
    expect(() =>
      createService({ transport: mesh.transport(), name: "bad", instance: new Bad() }),
    ).toThrow(/'nuropb_stats' is reserved/);
  });

  it("shows the transport's state and in-flight calls while a call runs", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { client, service } = await setUp([
      async (call, next) => {
        if (call.kind === "request" && call.method === "price") await gate;
        return next();
      },
    ]);
    const pending = client.request("shop", "price", { sku: "a" });
    await waitFor(() => service.stats().in_flight === 1);
    release();
    await pending;
    expect(service.stats().in_flight).toBe(0);
    await service.disconnect();
    expect(service.stats().connected).toBe(false);
  });
});
