import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  NuropbCallAgain,
  NuropbValidationError,
  type EventType,
  type Logger,
} from "@nuropb/protocol";
import { createServiceKeys, type ServiceKeys } from "@nuropb/crypto";
import {
  MessageLifecycleState,
  createClient,
  createService,
  publishToMesh,
  type LifecycleTransition,
  type RequestContext,
} from "@nuropb/core";
import { createMesh, waitFor } from "./helpers.ts";

class Shop {
  readonly events: EventType[] = [];
  readonly seen = new Set<string>();
  price(params: { sku: string }): string {
    return `price of ${params.sku}`;
  }
  remember(): void {}
  @publishToMesh({ requiresEncryption: true })
  secret(params: { pin: string }): number {
    return params.pin.length;
  }
  broken(): never {
    throw new NuropbValidationError("invalid field: sku");
  }
  onceMore(_p: unknown, ctx: RequestContext): string {
    if (this.seen.has(ctx.correlationId)) return "second time";
    this.seen.add(ctx.correlationId);
    throw new NuropbCallAgain("not yet");
  }
  handleEvent(event: EventType): void {
    this.events.push(event);
  }
}

/** The states of `list` for the message `correlationId`, with each one's extras. */
function states(list: readonly LifecycleTransition[], correlationId: string): string[] {
  return list
    .filter((t) => t.correlationId === correlationId)
    .map(
      (t) =>
        t.state +
        (t.settlement !== undefined ? `(${t.settlement})` : "") +
        (t.error !== undefined ? `!${t.error}` : ""),
    );
}

const REQUEST_CLIENT = [
  "client-start",
  "client-encode",
  "client-send",
  "client-receive",
  "client-decode",
  "client-handle",
  "client-ack",
  "client-end",
];
/** A service acks before it encodes and sends the reply (as Python's transport does). */
const REQUEST_SERVICE = [
  "service-receive",
  "service-decode",
  "service-handle",
  "service-ack(ack)",
  "service-encode",
  "service-reply",
];

let keys: ServiceKeys;
beforeAll(() => {
  keys = createServiceKeys({ rsa: false, nacl: true });
});

describe("the lifecycle hook (onLifecycle)", () => {
  let mesh: ReturnType<typeof createMesh>;
  let clientSeen: LifecycleTransition[];
  let serviceSeen: LifecycleTransition[];
  let client: ReturnType<typeof createClient>;
  let shop: Shop;

  beforeEach(async () => {
    mesh = createMesh();
    clientSeen = [];
    serviceSeen = [];
    shop = new Shop();
    const service = createService({
      transport: mesh.transport(),
      name: "shop",
      instance: shop,
      eventBindings: ["shop.#"],
      keys,
      onLifecycle: (t) => serviceSeen.push(t),
    });
    client = createClient({
      transport: mesh.transport(),
      defaultTtlMs: 2000,
      onLifecycle: (t) => clientSeen.push(t),
    });
    await service.connect();
    await client.connect();
    mesh.defer(() => client.disconnect());
    mesh.defer(() => service.disconnect());
  });
  afterEach(async () => {
    await mesh.cleanup();
  });

  /** The correlation id of the only message the client started for `method`. */
  function idOf(method: string): string {
    const starts = clientSeen.filter((t) => t.state === "client-start" && t.method === method);
    expect(starts).toHaveLength(1);
    return (starts[0] as LifecycleTransition).correlationId;
  }

  it("a request: Python's state names, in order, with timestamps, on both sides", async () => {
    await client.request("shop", "price", { sku: "a" }, {}, { traceId: "tr-1" });
    await waitFor(() => serviceSeen.length === REQUEST_SERVICE.length, 2000, "the service side");
    const id = idOf("price");
    expect(states(clientSeen, id)).toEqual(REQUEST_CLIENT);
    expect(states(serviceSeen, id)).toEqual(REQUEST_SERVICE);
    for (const t of [...clientSeen, ...serviceSeen]) {
      expect(Object.values(MessageLifecycleState)).toContain(t.state);
      expect(t).toMatchObject({ type: "request", traceId: "tr-1", encrypted: false });
      expect(t.service).toBe("shop");
    }
    const all = [...clientSeen, ...serviceSeen].map((t) => t.at);
    expect(all.every((at) => Number.isFinite(at) && Math.abs(at - Date.now()) < 60_000)).toBe(true);
    const ordered = (list: LifecycleTransition[]) =>
      list.every((t, i) => i === 0 || t.at >= (list[i - 1] as LifecycleTransition).at);
    expect(ordered(clientSeen) && ordered(serviceSeen)).toBe(true);
    // The method is known on the service side from the handling on, not before decoding.
    expect(serviceSeen.map((t) => t.method)).toEqual([
      undefined,
      undefined,
      "price",
      "price",
      "price",
      "price",
    ]);
  });

  it("a command: no response on either side", async () => {
    await client.command("shop", "remember", {});
    await waitFor(() => serviceSeen.length === 4, 2000, "the service side");
    const id = idOf("remember");
    expect(states(clientSeen, id)).toEqual([
      "client-start",
      "client-encode",
      "client-send",
      "client-end",
    ]);
    expect(states(serviceSeen, id)).toEqual([
      "service-receive",
      "service-decode",
      "service-handle",
      "service-ack(ack)",
    ]);
    expect(serviceSeen.every((t) => t.type === "command")).toBe(true);
  });

  it("an event: the publisher's and the subscriber's transitions", async () => {
    await client.publishEvent("shop.sold", { n: 1 });
    await waitFor(() => serviceSeen.length === 4, 2000, "the subscriber side");
    const id = (clientSeen[0] as LifecycleTransition).correlationId;
    expect(states(clientSeen, id)).toEqual([
      "client-start",
      "client-encode",
      "client-send",
      "client-end",
    ]);
    expect(states(serviceSeen, id)).toEqual([
      "service-receive",
      "service-decode",
      "service-handle",
      "service-ack(ack)",
    ]);
    expect([...clientSeen, ...serviceSeen].every((t) => t.type === "event")).toBe(true);
    expect(serviceSeen[3]?.topic).toBe("shop.sold");
  });

  it("an encrypted request: the same states, marked encrypted (its describe call has its own)", async () => {
    expect(await client.request("shop", "secret", { pin: "1234" }, {}, { encrypted: true })).toBe(
      4,
    );
    await waitFor(
      () => serviceSeen.filter((t) => t.method === "secret").length === 4,
      2000,
      "the service side",
    );
    const id = idOf("secret");
    expect(states(clientSeen, id)).toEqual(REQUEST_CLIENT);
    expect(states(serviceSeen, id)).toEqual(REQUEST_SERVICE);
    expect(clientSeen.filter((t) => t.correlationId === id).every((t) => t.encrypted)).toBe(true);
    expect(serviceSeen.filter((t) => t.correlationId === id).every((t) => t.encrypted)).toBe(true);
    // Sealing fetched the keys first: a plaintext nuropb_describe request, measured too.
    expect(states(clientSeen, idOf("nuropb_describe"))).toEqual(REQUEST_CLIENT);
  });

  it("a call-again: requeued once, then handled and answered", async () => {
    expect(await client.request("shop", "onceMore")).toBe("second time");
    await waitFor(() => serviceSeen.length === 10, 2000, "the service side");
    const id = idOf("onceMore");
    expect(states(clientSeen, id)).toEqual(REQUEST_CLIENT);
    expect(states(serviceSeen, id)).toEqual([
      "service-receive",
      "service-decode",
      "service-handle",
      "service-ack(requeue)",
      ...REQUEST_SERVICE,
    ]);
  });

  it("a failure: dead-lettered, answered with the error, which ends the client's call", async () => {
    await expect(client.request("shop", "broken")).rejects.toBeInstanceOf(NuropbValidationError);
    await waitFor(() => serviceSeen.length === 6, 2000, "the service side");
    const id = idOf("broken");
    expect(states(clientSeen, id)).toEqual([
      "client-start",
      "client-encode",
      "client-send",
      "client-receive",
      "client-decode",
      "client-handle!NuropbValidationError",
      "client-ack",
      "client-end!NuropbValidationError",
    ]);
    expect(states(serviceSeen, id)).toEqual([
      "service-receive",
      "service-decode",
      "service-handle",
      "service-ack(reject)",
      "service-encode",
      "service-reply!NuropbValidationError",
    ]);
  });

  it("a call that no service takes ends with its error", async () => {
    const e = await client.request("nobody", "x", {}, {}, { ttlMs: 30 }).catch((x: unknown) => x);
    expect((e as Error).name).toBe("NuropbNotDeliveredError");
    expect(states(clientSeen, idOf("x"))).toEqual([
      "client-start",
      "client-encode",
      "client-send",
      "client-end!NuropbNotDeliveredError",
    ]);
  });
});

describe("a lifecycle listener that throws", () => {
  it("never breaks a call; each failure is logged", async () => {
    const mesh = createMesh();
    const warnings: { msg: string; fields: Record<string, unknown> | undefined }[] = [];
    const logger: Logger = {
      debug: () => undefined,
      info: () => undefined,
      warn: (msg, fields) => void warnings.push({ msg, fields }),
      error: () => undefined,
      child: () => logger,
    };
    const angry = (): void => {
      throw new Error("metrics backend down");
    };
    const service = createService({
      transport: mesh.transport(),
      name: "shop",
      instance: new Shop(),
      keys,
      onLifecycle: angry,
      logger,
    });
    const client = createClient({
      transport: mesh.transport(),
      onLifecycle: async () => {
        await Promise.resolve();
        throw new Error("async listener failed");
      },
      logger,
    });
    await service.connect();
    await client.connect();
    try {
      expect(await client.request("shop", "price", { sku: "a" })).toBe("price of a");
      await waitFor(() => warnings.length >= 14, 2000, "the warnings");
      expect(warnings[0]?.msg).toBe("the onLifecycle listener threw; ignored");
      expect(warnings.map((w) => w.fields?.error)).toContain("metrics backend down");
      expect(warnings.map((w) => w.fields?.error)).toContain("async listener failed");
    } finally {
      await client.disconnect();
      await service.disconnect();
      await mesh.cleanup();
    }
  });

  it("a listener that is not a function is refused at creation", () => {
    const mesh = createMesh();
    expect(() => createClient({ transport: mesh.transport(), onLifecycle: 1 as never })).toThrow(
      /options\.onLifecycle must be a function/,
    );
  });
});
