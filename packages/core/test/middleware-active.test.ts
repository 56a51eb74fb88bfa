import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EventType } from "@nuropb/protocol";
import {
  createClient,
  createService,
  type ClientMiddleware,
  type MethodMiddleware,
  type RequestContext,
  type ServiceMiddleware,
} from "@nuropb/core";
import { createMesh, waitFor } from "./helpers.ts";

/** Where the middleware and handlers of a test write what they saw, in order. */
let trail: string[];
/** How often each middleware's `active()` was asked, by name. */
let asked: Map<string, number>;

type AnyMiddleware = ServiceMiddleware & ClientMiddleware & MethodMiddleware;

/** A middleware that marks the trail around `next()`. */
function mark(name: string): AnyMiddleware {
  return async (_call: unknown, next: () => Promise<unknown>) => {
    trail.push(`${name}>`);
    try {
      return await next();
    } finally {
      trail.push(`<${name}`);
    }
  };
}

/** {@link mark}, active while `when()` says so. */
function marked(name: string, when: () => boolean): AnyMiddleware {
  return Object.assign(mark(name), {
    active: () => {
      asked.set(name, (asked.get(name) ?? 0) + 1);
      return when();
    },
  });
}

const never = (): boolean => false;

class Shop {
  readonly events: EventType[] = [];
  price(params: { sku: string }, ctx: RequestContext): unknown {
    trail.push("handler");
    return { sku: params.sku, tenant: ctx.context.tenant ?? null };
  }
  handleEvent(event: EventType): void {
    trail.push("event");
    this.events.push(event);
  }
}

describe("middleware that says when it is active", () => {
  let mesh: ReturnType<typeof createMesh>;
  let shop: Shop;

  beforeEach(() => {
    trail = [];
    asked = new Map();
    mesh = createMesh();
    shop = new Shop();
  });
  afterEach(async () => {
    await mesh.cleanup();
  });

  async function start(options: {
    service?: readonly ServiceMiddleware[];
    client?: readonly ClientMiddleware[];
    price?: readonly MethodMiddleware[];
  }) {
    const service = createService({
      transport: mesh.transport(),
      name: "shop",
      instance: shop,
      eventBindings: ["shop.#"],
      ...(options.service !== undefined ? { middleware: options.service } : {}),
      ...(options.price !== undefined ? { methods: { price: { middleware: options.price } } } : {}),
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
    return client;
  }

  it("inactive middleware never runs, and requests, commands and events reach their handlers", async () => {
    const client = await start({
      client: [marked("c", never)],
      service: [marked("s", never)],
      price: [marked("p", never)],
    });
    expect(await client.request("shop", "price", { sku: "a" })).toEqual({
      sku: "a",
      tenant: null,
    });
    await client.command("shop", "price", { sku: "b" });
    await client.publishEvent("shop.sold", { n: 1 });
    await waitFor(() => trail.filter((t) => t === "handler").length === 2, 2000, "the command");
    await waitFor(() => shop.events.length === 1, 2000, "the event");
    expect(trail.filter((t) => t !== "handler" && t !== "event")).toEqual([]);
    // Each was asked, per call: the client for its three calls, the service for its three.
    expect(asked.get("c")).toBeGreaterThanOrEqual(3);
    expect(asked.get("s")).toBeGreaterThanOrEqual(3);
    expect(asked.get("p")).toBeGreaterThanOrEqual(2);
  });

  it("middleware that becomes active takes effect on the next call, and stops when it stops", async () => {
    let on = false;
    const client = await start({
      client: [marked("c", () => on)],
      service: [marked("s", () => on)],
      price: [marked("p", () => on)],
    });
    await client.request("shop", "price", { sku: "a" });
    expect(trail).toEqual(["handler"]);
    on = true;
    trail = [];
    await client.request("shop", "price", { sku: "a" });
    expect(trail).toEqual(["c>", "s>", "p>", "handler", "<p", "<s", "<c"]);
    on = false;
    trail = [];
    await client.request("shop", "price", { sku: "a" });
    expect(trail).toEqual(["handler"]);
  });

  it("active and inactive middleware mixed: the inactive are skipped, the order kept", async () => {
    let bOn = false;
    const client = await start({
      client: [marked("c1", never), mark("c2"), marked("c3", () => true)],
      service: [marked("s1", () => bOn), mark("s2"), marked("s3", never)],
      price: [marked("p1", never), marked("p2", () => true)],
    });
    await client.request("shop", "price", { sku: "a" });
    expect(trail).toEqual(["c2>", "c3>", "s2>", "p2>", "handler", "<p2", "<s2", "<c3", "<c2"]);
    bOn = true;
    trail = [];
    await client.request("shop", "price", { sku: "a" });
    expect(trail).toEqual([
      "c2>",
      "c3>",
      "s1>",
      "s2>",
      "p2>",
      "handler",
      "<p2",
      "<s2",
      "<s1",
      "<c3",
      "<c2",
    ]);
  });

  it("a method's active middleware runs when the service's are all inactive", async () => {
    const client = await start({
      service: [marked("s", never)],
      price: [marked("p", () => true)],
    });
    await client.request("shop", "price", { sku: "a" });
    expect(trail).toEqual(["p>", "handler", "<p"]);
  });

  it("a middleware that calls next() twice is still refused when the one after it is skipped", async () => {
    const twice: ClientMiddleware = async (_call, next) => {
      await next();
      return next();
    };
    const client = await start({ client: [twice, marked("c", never)] });
    await expect(client.request("shop", "price", { sku: "a" })).rejects.toThrow(
      /called next\(\) more than once/,
    );
  });

  it("an active that is not a function is refused at creation with a TypeError naming it", () => {
    const bad = Object.assign(mark("x"), { active: true }) as unknown as ClientMiddleware;
    expect(() => createClient({ transport: mesh.transport(), middleware: [bad] })).toThrow(
      /createClient: options\.middleware\[0\]\.active must be a function \(\) => boolean, got boolean/,
    );
  });
});
