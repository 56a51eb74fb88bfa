import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { NuropbSuccess, type Context, type EventType } from "@nuropb/protocol";
import {
  createClient,
  createService,
  publishToMesh,
  type RequestContext,
  type ServiceOptions,
} from "@nuropb/core";
import { createMesh, waitFor } from "./helpers.ts";

// Events go to every service bound to their topic: the context they carry must not hand those
// services the caller's credentials, while the handler's own calls still pass them on.

/** What the caller sends: two token keys, a declared secret, and plain keys. */
const CALLER_CONTEXT: Context = {
  Authorization: "Bearer caller-token",
  apiKey: "k-123",
  sessionId: "s-456",
  tenant: "acme",
  user: "ann",
};
/** What a subscriber may see of it by default. */
const PLAIN_CONTEXT: Context = { tenant: "acme", user: "ann" };

class Orders {
  added(_p: unknown, ctx: RequestContext): string {
    ctx.addEvent({ topic: "orders.added", event: { via: "addEvent" } });
    return "ok";
  }
  succeeded(): never {
    throw new NuropbSuccess("ok", [{ topic: "orders.succeeded", event: { via: "NuropbSuccess" } }]);
  }
  async published(_p: unknown, ctx: RequestContext): Promise<string> {
    await ctx.publishEvent("orders.published", { via: "ctx.publishEvent" });
    return "ok";
  }
  /** Declares another token key: it is a secret too. */
  @publishToMesh({
    authorize: (t) => (t === "k-123" ? { ok: true } : false),
    contextTokenKey: "apiKey",
  })
  withApiKey(): string {
    return "ok";
  }
  async nested(_p: unknown, ctx: RequestContext): Promise<unknown> {
    return ctx.request("echo", "whoami");
  }
  /** Re-raises an incoming event: events raised while handling an event are stripped too. */
  handleEvent(event: EventType, ctx: RequestContext): void {
    if (event.topic === "inbound.ping") ctx.addEvent({ topic: "orders.pong", event: null });
  }
}

class Subscriber {
  readonly seen: EventType[] = [];
  handleEvent(event: EventType): void {
    this.seen.push(event);
  }
}

class Echo {
  whoami(_p: unknown, ctx: RequestContext): unknown {
    return { context: ctx.context };
  }
}

let mesh: ReturnType<typeof createMesh>;
beforeEach(() => {
  mesh = createMesh();
});
afterEach(async () => {
  await mesh.cleanup();
});

/** The orders service (with `extra` options), a subscriber to orders.#, an echo and a client. */
async function setUp(extra: Partial<ServiceOptions<Orders>> = {}) {
  const connect = async (p: { connect(): Promise<void>; disconnect(): Promise<void> }) => {
    await p.connect();
    mesh.defer(() => p.disconnect());
  };
  const orders = createService({
    transport: mesh.transport(),
    name: "orders",
    instance: new Orders(),
    eventBindings: ["inbound.#"],
    ...extra,
  });
  const subscriber = new Subscriber();
  const sub = createService({
    transport: mesh.transport(),
    name: "sub",
    instance: subscriber,
    eventBindings: ["orders.#"],
  });
  const echo = createService({ transport: mesh.transport(), name: "echo", instance: new Echo() });
  const client = createClient({ transport: mesh.transport(), defaultTtlMs: 2000 });
  for (const p of [orders, sub, echo, client]) await connect(p);
  return { orders, subscriber, client };
}

/** Calls each event-raising method and returns the context each event arrived with, by topic. */
async function raiseAll(
  client: Awaited<ReturnType<typeof setUp>>["client"],
  subscriber: Subscriber,
): Promise<Record<string, unknown>> {
  for (const m of ["added", "succeeded", "published"])
    expect(await client.request("orders", m, {}, CALLER_CONTEXT)).toBe("ok");
  await client.publishEvent("inbound.ping", {}, CALLER_CONTEXT);
  await waitFor(() => subscriber.seen.length === 4, 2000, "four events");
  return Object.fromEntries(subscriber.seen.map((e) => [e.topic, e.context]));
}

describe("the context of a service's events", () => {
  it("leaves out the token keys and declared secrets by default, keeps the rest", async () => {
    const { subscriber, client } = await setUp({ secretContextKeys: ["sessionId"] });
    expect(await raiseAll(client, subscriber)).toEqual({
      "orders.added": PLAIN_CONTEXT,
      "orders.succeeded": PLAIN_CONTEXT,
      "orders.published": PLAIN_CONTEXT,
      "orders.pong": PLAIN_CONTEXT,
    });
  });

  it("without secretContextKeys, only the token keys go", async () => {
    const { subscriber, client } = await setUp();
    const contexts = await raiseAll(client, subscriber);
    for (const c of Object.values(contexts))
      expect(c).toEqual({ ...PLAIN_CONTEXT, sessionId: "s-456" });
  });

  it("matches secret keys without regard to case (a context made from Node's req.headers)", async () => {
    const { subscriber, client } = await setUp({ secretContextKeys: ["SessionID"] });
    const headersLike: Context = {
      authorization: "Bearer caller-token",
      APIKEY: "k-123",
      sessionid: "s-456",
      tenant: "acme",
      user: "ann",
    };
    expect(await client.request("orders", "added", {}, headersLike)).toBe("ok");
    await waitFor(() => subscriber.seen.length === 1, 2000, "the event");
    expect(subscriber.seen[0]?.context).toEqual(PLAIN_CONTEXT);
  });

  it('eventContext: "full" publishes the whole context, as Python does', async () => {
    const { subscriber, client } = await setUp({
      secretContextKeys: ["sessionId"],
      eventContext: "full",
    });
    const contexts = await raiseAll(client, subscriber);
    for (const c of Object.values(contexts)) expect(c).toEqual(CALLER_CONTEXT);
  });

  it("a nested call from a handler still carries the caller's token", async () => {
    const { client } = await setUp({ secretContextKeys: ["sessionId"] });
    expect(await client.request("orders", "nested", {}, CALLER_CONTEXT)).toEqual({
      context: CALLER_CONTEXT,
    });
    // And the method with its own token key still authorises from it.
    expect(await client.request("orders", "withApiKey", {}, CALLER_CONTEXT)).toBe("ok");
  });

  it("refuses bad option values with a TypeError naming them", () => {
    const make = (extra: Record<string, unknown>) => () =>
      createService({
        transport: mesh.transport(),
        name: "x",
        instance: new Subscriber(),
        ...extra,
      });
    expect(make({ eventContext: "python" })).toThrow(
      /options\.eventContext must be "strip-secrets" or "full", got "python"/,
    );
    expect(make({ eventContext: true })).toThrow(TypeError);
    expect(make({ secretContextKeys: "sessionId" })).toThrow(
      /options\.secretContextKeys must be an array of non-empty strings, got "sessionId"/,
    );
    expect(make({ secretContextKeys: [""] })).toThrow(TypeError);
    expect(make({ secretContextKeys: [1] })).toThrow(TypeError);
    expect(make({ secretContextKeys: [], eventContext: "full" })).not.toThrow();
  });
});
