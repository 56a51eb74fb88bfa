import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  createClient,
  createService,
  publishToMesh,
  type MeshParticipant,
  type MeshService,
} from "@nuropb/core";
import { NuropbAuthorizationError, NuropbError, type Transport } from "@nuropb/protocol";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import {
  auditTrail,
  logCalls,
  timeCalls,
  timeHandling,
  tokenBucket,
  type AuditEntry,
  type Timing,
} from "../src/index.ts";
import { main } from "../src/main.ts";

class Shop {
  price(params: { sku: string }): number {
    return params.sku.length;
  }
  @publishToMesh({ authorize: (t) => (t === "Bearer ok" ? { user: "ada" } : false) })
  secure(): string {
    return "secure";
  }
  broken(): never {
    throw new RangeError("boom");
  }
}

describe("the middleware example", () => {
  let transports: Transport[];
  let participants: MeshParticipant[];
  const hub = createMemoryHub();
  const transport = (): Transport => {
    const t = createMemoryTransport({ hub });
    transports.push(t);
    return t;
  };
  beforeEach(() => {
    transports = [];
    participants = [];
  });
  afterEach(async () => {
    for (const p of participants.reverse()) await p.disconnect();
    await Promise.all(transports.map((t) => t.close()));
  });
  async function connect<T extends MeshParticipant>(p: T): Promise<T> {
    participants.push(p);
    await p.connect();
    return p;
  }
  const shopService = (
    name: string,
    middleware: Parameters<typeof createService>[0]["middleware"],
  ) =>
    connect(
      createService({
        transport: transport(),
        name,
        instance: new Shop(),
        ...(middleware ? { middleware } : {}),
      }) as MeshService<Shop>,
    );

  it("main() runs all four and prints what they saw", async () => {
    const lines = await main({ print: () => undefined, now: () => 0 });
    expect(lines).toEqual([
      "log: request orders.quote: ok",
      "log: request orders.cancel: ok",
      "log: request orders.quote: NuropbError: rate limit of 'acme' exceeded; retry in 2000 ms",
      "retryable: true, retry after 2000 ms",
      "log: request orders.cancel: NuropbAuthorizationError: unknown token",
      "audit: quote by null: ok",
      'audit: cancel by {"user":"ada"}: ok',
      "audit: quote by null: error (NuropbException)",
      "audit: cancel by null: error (NuropbAuthorizationError)",
      "timed: orders.quote ok, orders.cancel ok, orders.cancel failed",
    ]);
  });

  it("logCalls logs requests, commands and events with their outcome, never their params", async () => {
    await shopService("log-shop", undefined);
    const lines: string[] = [];
    const client = await connect(
      createClient({ transport: transport(), middleware: [logCalls((l) => lines.push(l))] }),
    );
    await client.request("log-shop", "price", { sku: "secret-sku" });
    await client.request("log-shop", "broken").catch(() => undefined);
    await client.command("log-shop", "price", { sku: "b" });
    await client.publishEvent("shop.viewed", { sku: "c" });
    expect(lines).toEqual([
      "request log-shop.price: ok",
      "request log-shop.broken: NuropbError: Runtime exception calling log-shop.broken:RangeError: boom",
      "command log-shop.price: ok",
      "event shop.viewed: ok",
    ]);
    expect(lines.join("\n")).not.toContain("secret-sku");
  });

  it("timeHandling (middleware) and timeCalls (lifecycle hook) time each call and say how it ended", async () => {
    const handled: Timing[] = [];
    const called: Timing[] = [];
    await shopService("timed-shop", [timeHandling((t) => handled.push(t))]);
    const client = await connect(
      createClient({ transport: transport(), onLifecycle: timeCalls((t) => called.push(t)) }),
    );
    await client.request("timed-shop", "price", { sku: "a" });
    await client.request("timed-shop", "broken").catch(() => undefined);
    for (const list of [handled, called]) {
      expect(list.map((t) => [t.name, t.ok])).toEqual([
        ["timed-shop.price", true],
        ["timed-shop.broken", false],
      ]);
      expect(list.every((t) => Number.isFinite(t.ms) && t.ms >= 0)).toBe(true);
    }
  });

  it("tokenBucket refuses a key over its rate with a retryable error and a retry-after header, and refills", async () => {
    let clock = 0;
    await shopService("limited-shop", [
      tokenBucket({
        capacity: 2,
        refillPerSecond: 1,
        key: (c) => String(c.context.tenant),
        now: () => clock,
      }),
    ]);
    let retryAfter: string | null | undefined;
    const client = await connect(
      createClient({
        transport: transport(),
        middleware: [
          async (call, next) => {
            try {
              return await next();
            } finally {
              if (call.kind === "request") retryAfter = call.response?.headers["retry-after-ms"];
            }
          },
        ],
      }),
    );
    const call = (tenant: string) =>
      client.request("limited-shop", "price", { sku: "ab" }, { tenant });
    expect(await call("a")).toBe(2);
    expect(await call("a")).toBe(2);
    const e = (await call("a").catch((x: unknown) => x)) as NuropbError;
    expect(e).toBeInstanceOf(NuropbError);
    expect(e.retryable).toBe(true);
    expect(e.details).toEqual({ retryAfterMs: 1000 });
    expect(retryAfter).toBe("1000");
    expect(await call("b")).toBe(2); // another key, its own bucket
    clock = 500;
    await expect(call("a")).rejects.toThrow(/retry in 500 ms/);
    clock = 1000;
    expect(await call("a")).toBe(2);
    expect(() => tokenBucket({ capacity: 0, refillPerSecond: 1 })).toThrow(TypeError);
  });

  it("auditTrail records who called what and how it ended, refusals included", async () => {
    const audit: AuditEntry[] = [];
    await shopService("audited-shop", [auditTrail((e) => audit.push(e))]);
    const client = await connect(createClient({ transport: transport() }));
    await client.request(
      "audited-shop",
      "secure",
      {},
      { Authorization: "Bearer ok" },
      { traceId: "t-1" },
    );
    await expect(
      client.request("audited-shop", "secure", {}, { Authorization: "Bearer no" }),
    ).rejects.toBeInstanceOf(NuropbAuthorizationError);
    await client.request("audited-shop", "broken").catch(() => undefined);
    expect(
      audit.map(({ method, user, outcome, error }) => ({ method, user, outcome, error })),
    ).toEqual([
      { method: "secure", user: { user: "ada" }, outcome: "ok", error: undefined },
      { method: "secure", user: undefined, outcome: "error", error: "NuropbAuthorizationError" },
      // Middleware see the handler's own exception; the caller gets it as NuropbException.
      { method: "broken", user: undefined, outcome: "error", error: "RangeError" },
    ]);
    expect(audit[0]?.traceId).toBe("t-1");
    expect(JSON.stringify(audit)).not.toContain("Bearer");
  });
});
