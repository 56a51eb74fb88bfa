import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  NuropbAuthorizationError,
  NuropbCallAgain,
  NuropbCallAgainReject,
  NuropbError,
  NuropbValidationError,
  type EventType,
} from "@nuropb/protocol";
import { createServiceKeys, type ServiceKeys } from "@nuropb/crypto";
import {
  createClient,
  createService,
  publishToMesh,
  type ClientMiddleware,
  type MethodMiddleware,
  type RequestContext,
  type ServiceMiddleware,
} from "@nuropb/core";
import { createMesh, waitFor } from "./helpers.ts";

/** Where the middleware and handlers of a test write what they saw, in order. */
let trail: string[];

const mark =
  (name: string): ServiceMiddleware & ClientMiddleware =>
  async (_call: unknown, next: () => Promise<unknown>) => {
    trail.push(`${name}>`);
    try {
      return await next();
    } finally {
      trail.push(`<${name}`);
    }
  };

class Shop {
  runs = 0;
  readonly events: EventType[] = [];

  price(params: { sku: string; qty?: number }, ctx: RequestContext): unknown {
    this.runs++;
    trail.push("handler");
    return { sku: params.sku, qty: params.qty ?? 1, tenant: ctx.context.tenant ?? null };
  }
  @publishToMesh({ middleware: [mark("m1"), mark("m2")] })
  audited(): string {
    this.runs++;
    trail.push("handler");
    return "audited";
  }
  @publishToMesh({
    authorize: (token) => (token === "Bearer ok" ? { user: "ada" } : false),
    middleware: [
      async (call, next) => {
        trail.push(`claims=${JSON.stringify(call.userClaims)}`);
        return next();
      },
    ],
  })
  secured(_p: unknown, ctx: RequestContext): unknown {
    this.runs++;
    return ctx.userClaims;
  }
  @publishToMesh({
    params: { type: "object", required: ["qty"], properties: { qty: { type: "integer" } } },
    middleware: [
      async (call, next) => {
        // Runs before validation: what it changes is still checked before the handler.
        if (call.params.qty === "two") call.params = { ...call.params, qty: 2 };
        return next();
      },
    ],
  })
  counted(params: { qty: number }): number {
    this.runs++;
    return params.qty;
  }
  @publishToMesh({ requiresEncryption: true })
  secret(params: { pin: string }): string {
    this.runs++;
    return `pin ${params.pin.length} digits`;
  }
  broken(): never {
    this.runs++;
    throw new NuropbValidationError("invalid field: sku");
  }
  again(): never {
    this.runs++;
    throw new NuropbCallAgain("later");
  }
  noted(_p: unknown, ctx: RequestContext): string {
    this.runs++;
    ctx.addEvent({ topic: "shop.noted", event: { n: 1 } });
    return "noted";
  }
  handleEvent(event: EventType): void {
    trail.push(`event:${String((event.event as { n?: number }).n)}`);
    this.events.push(event);
  }
}

let keys: ServiceKeys;
beforeAll(() => {
  keys = createServiceKeys({ rsa: false, nacl: true });
});

describe("middleware", () => {
  let mesh: ReturnType<typeof createMesh>;
  let shop: Shop;

  beforeEach(() => {
    trail = [];
    mesh = createMesh();
    shop = new Shop();
  });
  afterEach(async () => {
    await mesh.cleanup();
  });

  /** Starts the shop service and a client with the given middleware; both connected. */
  async function start(
    options: {
      service?: readonly ServiceMiddleware[];
      client?: readonly ClientMiddleware[];
      serviceClient?: readonly ClientMiddleware[];
      methods?: Record<string, { middleware: readonly MethodMiddleware[] }>;
    } = {},
  ) {
    const service = createService({
      transport: mesh.transport(),
      name: "shop",
      instance: shop,
      eventBindings: ["shop.#"],
      keys,
      ...(options.service !== undefined ? { middleware: options.service } : {}),
      ...(options.serviceClient !== undefined ? { clientMiddleware: options.serviceClient } : {}),
      ...(options.methods !== undefined ? { methods: options.methods } : {}),
    });
    const client = createClient({
      transport: mesh.transport(),
      defaultTtlMs: 2000,
      ...(options.client !== undefined ? { middleware: options.client } : {}),
    });
    await service.connect();
    await client.connect();
    mesh.defer(() => client.disconnect());
    mesh.defer(() => service.disconnect());
    return { service, client };
  }

  describe("order", () => {
    it("client and service middleware are onions, the first given outermost", async () => {
      const { client } = await start({
        client: [mark("c1"), mark("c2")],
        service: [mark("s1"), mark("s2")],
      });
      expect(await client.request("shop", "price", { sku: "a" })).toMatchObject({ sku: "a" });
      expect(trail).toEqual(["c1>", "c2>", "s1>", "s2>", "handler", "<s2", "<s1", "<c2", "<c1"]);
    });

    it("per-method middleware (publishToMesh) runs inside the service's", async () => {
      const { client } = await start({ service: [mark("s1")] });
      expect(await client.request("shop", "audited")).toBe("audited");
      expect(trail).toEqual(["s1>", "m1>", "m2>", "handler", "<m2", "<m1", "<s1"]);
    });

    it("per-method middleware through the plain-JavaScript methods option", async () => {
      const { client } = await start({ methods: { price: { middleware: [mark("p")] } } });
      await client.request("shop", "price", { sku: "a" });
      await client.request("shop", "noted");
      await waitFor(() => shop.events.length === 1, 2000, "noted's event");
      // noted has no middleware of its own; price's did not run for it.
      expect(trail).toEqual(["p>", "handler", "<p", "event:1"]);
    });

    it("commands and events pass through both sides' middleware too", async () => {
      const { client } = await start({ client: [mark("c")], service: [mark("s")] });
      await client.command("shop", "price", { sku: "b" });
      await waitFor(() => trail.includes("<s"), 2000, "the command");
      // Whether the client's middleware ends before the service's starts is the transport's timing.
      expect(trail[0]).toBe("c>");
      expect(trail.filter((t) => t.includes("c"))).toEqual(["c>", "<c"]);
      expect(trail.filter((t) => !t.includes("c"))).toEqual(["s>", "handler", "<s"]);
      trail = [];
      await client.publishEvent("shop.sold", { n: 7 });
      await waitFor(() => trail.includes("<s"), 2000, "the event");
      expect(trail[0]).toBe("c>");
      expect(trail.filter((t) => t.includes("c"))).toEqual(["c>", "<c"]);
      expect(trail.filter((t) => !t.includes("c"))).toEqual(["s>", "event:7", "<s"]);
    });
  });

  describe("seeing and changing the call", () => {
    it("client middleware changes params, context and headers; service middleware sees them and answers with headers", async () => {
      const seen: unknown[] = [];
      const { client } = await start({
        client: [
          async (call, next) => {
            if (call.kind !== "request") return next();
            call.params = { ...call.params, qty: 3 };
            call.context = { ...call.context, tenant: "acme" };
            call.headers.set("x-tenant", "acme");
            const result = await next();
            seen.push(call.response?.headers["x-served-by"], call.response?.payload.error);
            return result;
          },
        ],
        service: [
          async (call, next) => {
            seen.push(call.headers["x-tenant"], call.kind === "request" && call.params.qty);
            if (call.kind === "request") call.responseHeaders.set("x-served-by", "shop-1");
            return next();
          },
        ],
      });
      expect(await client.request("shop", "price", { sku: "c" })).toEqual({
        sku: "c",
        qty: 3,
        tenant: "acme",
      });
      expect(seen).toEqual(["acme", 3, "shop-1", null]);
    });

    it("NuroPb's own header names are refused, at the middleware's own line", async () => {
      const { client } = await start({
        client: [
          async (call, next) => {
            call.headers.set("trace_id", "forged");
            return next();
          },
        ],
      });
      await expect(client.request("shop", "price", { sku: "a" })).rejects.toThrow(
        /the header 'trace_id' is NuroPb's own/,
      );
      expect(shop.runs).toBe(0);
    });

    it("a service middleware may change the context authorisation sees (before it); per-method middleware sees the claims", async () => {
      let claimsBefore: unknown = "unset";
      let claimsAfter: unknown;
      const { client } = await start({
        service: [
          async (call, next) => {
            if (call.kind === "event") return next();
            claimsBefore = call.userClaims;
            // e.g. an API gateway's header turned into the token the method expects
            const token = call.headers["x-token"];
            if (typeof token === "string") call.context = { Authorization: `Bearer ${token}` };
            const result = await next();
            claimsAfter = call.userClaims;
            return result;
          },
        ],
        client: [
          async (call, next) => {
            call.headers.set("x-token", "ok");
            return next();
          },
        ],
      });
      expect(await client.request("shop", "secured")).toEqual({ user: "ada" });
      expect(claimsBefore).toBeUndefined();
      expect(claimsAfter).toEqual({ user: "ada" });
      expect(trail).toEqual(['claims={"user":"ada"}']);
    });

    it("params are validated after all middleware, before the handler", async () => {
      const { client } = await start();
      expect(await client.request("shop", "counted", { qty: "two" })).toBe(2);
      await expect(client.request("shop", "counted", { qty: "three" })).rejects.toBeInstanceOf(
        NuropbValidationError,
      );
      expect(shop.runs).toBe(1);
    });

    it("service middleware sees an encrypted call opened, and knows it came encrypted", async () => {
      const seen: unknown[] = [];
      const { client } = await start({
        service: [
          async (call, next) => {
            if (call.kind === "request" && call.method === "secret")
              seen.push(call.params, call.encrypted);
            return next();
          },
        ],
      });
      expect(await client.request("shop", "secret", { pin: "1234" }, {}, { encrypted: true })).toBe(
        "pin 4 digits",
      );
      expect(seen).toEqual([{ pin: "1234" }, true]);
    });

    it("a service's own outgoing events (raised by a handler) pass its client middleware", async () => {
      const { client } = await start({
        serviceClient: [
          async (call, next) => {
            if (call.kind === "event") {
              trail.push(`out:${call.topic}`);
              call.event = { n: 2 };
            }
            return next();
          },
        ],
      });
      expect(await client.request("shop", "noted")).toBe("noted");
      await waitFor(() => shop.events.length === 1, 2000, "the raised event");
      expect(trail).toEqual(["out:shop.noted", "event:2"]);
    });
  });

  describe("short-circuit", () => {
    it("a client middleware answers without sending", async () => {
      const { client } = await start({
        client: [async (call, next) => (call.kind === "request" ? { cached: true } : next())],
      });
      expect(await client.request("shop", "price", { sku: "a" })).toEqual({ cached: true });
      expect(client.pendingRequests).toBe(0);
      expect(shop.runs).toBe(0);
    });

    it("a service middleware answers without the handler; the message is acked", async () => {
      const { client } = await start({
        service: [async (call, next) => (call.kind === "request" ? "from middleware" : next())],
      });
      expect(await client.request("shop", "broken")).toBe("from middleware");
      expect(shop.runs).toBe(0);
      expect(mesh.hub.deadLetters()).toEqual([]);
    });

    it("a service middleware that skips next() on an event acks it; handleEvent never runs", async () => {
      const { client } = await start({
        service: [
          async (call, next) => {
            if (call.kind !== "event") return next();
            trail.push("skipped");
            return undefined;
          },
        ],
      });
      await client.publishEvent("shop.sold", { n: 1 });
      await waitFor(() => trail.includes("skipped"), 2000, "the event");
      expect(shop.events).toEqual([]);
      expect(mesh.hub.deadLetters()).toEqual([]);
    });
  });

  describe("errors", () => {
    it("a service middleware refusing with a NuroPb error: typed, answered, dead-lettered; the handler never runs", async () => {
      const { client } = await start({
        service: [
          async () => {
            throw new NuropbAuthorizationError("tenant suspended");
          },
        ],
      });
      const e = (await client
        .request("shop", "price", { sku: "a" })
        .catch((x: unknown) => x)) as NuropbError;
      expect(e).toBeInstanceOf(NuropbAuthorizationError);
      expect(e.description).toBe("tenant suspended");
      expect(shop.runs).toBe(0);
      await waitFor(() => mesh.hub.deadLetters().length === 1, 2000, "the dead letter");
    });

    it("any other exception in service middleware is answered as NuropbException, as a handler's", async () => {
      const { client } = await start({
        service: [
          async () => {
            throw new RangeError("limiter broke");
          },
        ],
      });
      const e = (await client
        .request("shop", "price", { sku: "a" })
        .catch((x: unknown) => x)) as NuropbError;
      expect(e.wireName).toBe("NuropbException");
      expect(e.description).toBe("Runtime exception calling shop.price:RangeError: limiter broke");
      expect(shop.runs).toBe(0);
    });

    it("a per-method middleware refusing: the handler never runs", async () => {
      const { client } = await start({
        methods: {
          price: {
            middleware: [
              async () => {
                throw new NuropbValidationError("no sales today");
              },
            ],
          },
        },
      });
      await expect(client.request("shop", "price", { sku: "a" })).rejects.toThrow("no sales today");
      expect(shop.runs).toBe(0);
    });

    it("a client middleware refusing: the call rejects with its error, nothing is sent", async () => {
      const { client } = await start({
        client: [
          async () => {
            throw new NuropbValidationError("quota exceeded");
          },
        ],
      });
      await expect(client.request("shop", "price", { sku: "a" })).rejects.toBeInstanceOf(
        NuropbValidationError,
      );
      await expect(client.command("shop", "price", { sku: "a" })).rejects.toThrow("quota exceeded");
      await expect(client.publishEvent("shop.x", {})).rejects.toThrow("quota exceeded");
      await new Promise((r) => setTimeout(r, 20));
      expect(shop.runs).toBe(0);
      expect(trail).toEqual([]);
    });

    it("middleware observe the outcome, the error and the time taken", async () => {
      const observed: { what: string; ok: boolean; error?: string; ms: number }[] = [];
      const timing: ClientMiddleware = async (call, next) => {
        const t0 = performance.now();
        const what = call.kind === "event" ? call.topic : `${call.service}.${call.method}`;
        try {
          const r = await next();
          observed.push({ what, ok: true, ms: performance.now() - t0 });
          return r;
        } catch (err) {
          observed.push({
            what,
            ok: false,
            error: (err as NuropbError).wireName,
            ms: performance.now() - t0,
          });
          throw err;
        }
      };
      const { client } = await start({ client: [timing] });
      await client.request("shop", "price", { sku: "a" });
      await client.request("shop", "broken").catch(() => undefined);
      expect(observed.map(({ what, ok, error }) => ({ what, ok, error }))).toEqual([
        { what: "shop.price", ok: true, error: undefined },
        { what: "shop.broken", ok: false, error: "NuropbValidationError" },
      ]);
      expect(observed.every((o) => o.ms >= 0)).toBe(true);
    });

    it("a middleware calling next() twice fails the call", async () => {
      const { client } = await start({
        service: [
          async (_call, next) => {
            await next();
            return next();
          },
        ],
      });
      const e = (await client
        .request("shop", "price", { sku: "a" })
        .catch((x: unknown) => x)) as NuropbError;
      expect(e.description).toMatch(/called next\(\) more than once/);
      expect(shop.runs).toBe(1);
    });

    it("NuropbCallAgain from a middleware: requeued once, then NuropbCallAgainReject", async () => {
      let seen = 0;
      const { client } = await start({
        service: [
          async (call) => {
            seen++;
            trail.push(`redelivered=${String(call.redelivered)}`);
            throw new NuropbCallAgain("busy");
          },
        ],
      });
      await expect(client.request("shop", "price", { sku: "a" })).rejects.toBeInstanceOf(
        NuropbCallAgainReject,
      );
      expect(seen).toBe(2);
      expect(trail).toEqual(["redelivered=false", "redelivered=true"]);
    });

    it("a handler's NuropbCallAgain passes through the middleware as an error", async () => {
      const errors: string[] = [];
      const { client } = await start({
        service: [
          async (_call, next) => {
            try {
              return await next();
            } catch (err) {
              errors.push((err as NuropbError).wireName);
              throw err;
            }
          },
        ],
      });
      await expect(client.request("shop", "again")).rejects.toBeInstanceOf(NuropbCallAgainReject);
      expect(errors).toEqual(["NuropbCallAgain", "NuropbCallAgain"]);
      expect(shop.runs).toBe(2);
    });
  });

  it("async middleware: each call waits on its own, and the calls still interleave", async () => {
    const { client } = await start({
      client: [
        async (call, next) => {
          await new Promise((r) =>
            setTimeout(r, call.kind === "request" && call.params.sku === "slow" ? 30 : 1),
          );
          return next();
        },
      ],
      service: [
        async (call, next) => {
          await Promise.resolve();
          const r = await next();
          return call.kind === "request" ? { ...(r as object), wrapped: true } : r;
        },
      ],
    });
    const done: string[] = [];
    await Promise.all(
      ["slow", "fast"].map(async (sku) => {
        const r = await client.request("shop", "price", { sku });
        done.push(sku);
        expect(r).toMatchObject({ sku, wrapped: true });
      }),
    );
    expect(done).toEqual(["fast", "slow"]);
  });

  it("empty lists are no middleware at all", async () => {
    const { client } = await start({ client: [], service: [] });
    expect(await client.request("shop", "price", { sku: "a" })).toMatchObject({ sku: "a" });
  });

  it("bad middleware is refused at creation with a TypeError naming the entry", () => {
    const t = mesh.transport();
    expect(() => createClient({ transport: t, middleware: [mark("ok"), 42 as never] })).toThrow(
      /createClient: options\.middleware\[1\] must be a middleware function/,
    );
    expect(() =>
      createService({ transport: t, name: "x", instance: shop, middleware: "log" as never }),
    ).toThrow(/createService: options\.middleware must be an array/);
    expect(() =>
      createService({ transport: t, name: "x", instance: shop, clientMiddleware: [null as never] }),
    ).toThrow(
      /createService: options\.clientMiddleware\[0\] must be a middleware function .*, got null/,
    );
    expect(() => publishToMesh({ middleware: [{} as never] })).toThrow(
      /publishToMesh: middleware\[0\] must be a middleware function .*, got object/,
    );
    expect(() =>
      createService({
        transport: t,
        name: "x",
        instance: shop,
        methods: { price: { middleware: [mark("a"), "b" as never] } },
      }),
    ).toThrow(/createService: methods\.price: middleware\[1\] must be a middleware function/);
  });
});
