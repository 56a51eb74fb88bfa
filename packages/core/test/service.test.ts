import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  NuropbAuthenticationError,
  NuropbCallAgain,
  NuropbError,
  NuropbHandlingError,
  NuropbTimeoutError,
  NuropbValidationError,
  encodePayload,
  newId,
  type EventType,
} from "@nuropb/protocol";
import { createClient, createService, publishToMesh, type RequestContext } from "@nuropb/core";
import { Ajv } from "ajv";
import { createMesh, serveRaw, waitFor } from "./helpers.ts";

class Calculator {
  readonly events: EventType[] = [];
  handlerRuns = 0;

  add(params: { a: number; b: number }): number {
    this.handlerRuns++;
    return params.a + params.b;
  }
  _private(): string {
    return "secret";
  }
  againOnce(_p: unknown, ctx: RequestContext): unknown {
    if (!ctx.redelivered) throw new NuropbCallAgain("once more");
    return { redelivered: ctx.redelivered };
  }
  @publishToMesh({
    authorize: (token) => (token === "Bearer good" ? { user: "u1", roles: ["admin"] } : false),
    description: "needs a token",
  })
  secured(_p: unknown, ctx: RequestContext): unknown {
    return { claims: ctx.userClaims };
  }
  @publishToMesh({ authorize: (t) => (t === "x" ? { ok: 1 } : null), contextTokenKey: "apiKey" })
  customKey(_p: unknown, ctx: RequestContext): unknown {
    return ctx.userClaims;
  }
  @publishToMesh({
    params: {
      type: "object",
      properties: { id: { type: "string" }, qty: { type: "integer", minimum: 1 } },
      required: ["id"],
      additionalProperties: false,
    },
    result: { type: "string" },
  })
  validated(params: { id: string }): string {
    return `id=${params.id}`;
  }
  @publishToMesh({ hide: true })
  hidden(): string {
    return "hidden but callable";
  }
  crash(): never {
    throw new RangeError("boom");
  }
  async crashLater(): Promise<never> {
    await Promise.resolve();
    throw new Error("later");
  }
  throwString(): never {
    throw "plain text";
  }
  handleEvent(event: EventType): void {
    this.events.push(event);
  }
}

class Echo {
  whoami(_p: unknown, ctx: RequestContext): unknown {
    return { traceId: ctx.traceId, context: ctx.context };
  }
}

describe("core on the memory transport", () => {
  let mesh: ReturnType<typeof createMesh>;
  let calc: Calculator;
  let service: ReturnType<typeof createService<Calculator>>;
  let client: ReturnType<typeof createClient>;
  let clientTransport: ReturnType<typeof mesh.transport>;

  beforeEach(async () => {
    mesh = createMesh();
    calc = new Calculator();
    service = createService({
      transport: mesh.transport(),
      name: "calc",
      instance: calc,
      eventBindings: ["calc.*", "orders.#"],
      serviceVersion: "1.2.3",
      description: "A calculator",
    });
    clientTransport = mesh.transport();
    client = createClient({ transport: clientTransport, defaultTtlMs: 2000 });
    await service.connect();
    await client.connect();
    mesh.defer(() => client.disconnect());
    mesh.defer(() => service.disconnect());
  });
  afterEach(async () => {
    await mesh.cleanup();
  });

  it("answers a request with the method's result, and a command with nothing", async () => {
    expect(await client.request("calc", "add", { a: 2, b: 3 })).toBe(5);
    await client.command("calc", "add", { a: 1, b: 1 });
    await waitFor(() => calc.handlerRuns === 2, 2000, "the command to run");
    expect(service.connected).toBe(true);
    expect(client.isLeader).toBe(true);
    expect(service.serviceName).toBe("calc");
    expect(client.serviceName).toBeUndefined();
    expect(client.instanceId).toMatch(/^[0-9a-f]{32}$/);
    expect(client.responseAddress).toBe(`nuropb-nuropb-client-${client.instanceId}-rq`);
    expect(service.responseAddress).toBe(`nuropb-calc-${service.instanceId}-rq`);
  });

  it("tells a handler whether its message was redelivered", async () => {
    expect(await client.request("calc", "againOnce")).toEqual({ redelivered: true });
  });

  it("describeService takes a ttl and rejects a bad one at once", async () => {
    const t = mesh.transport();
    await t.connect();
    const l = await t.consumeService(
      { service: "mute", rpcBindings: [], eventBindings: [], prefetch: 1 },
      () => {},
    );
    await l.stop();
    await expect(client.describeService("mute", { ttlMs: 50 })).rejects.toBeInstanceOf(
      NuropbTimeoutError,
    );
    await expect(client.describeService("mute", { ttlMs: 0 })).rejects.toThrow(
      /ttlMs must be a positive integer/,
    );
  });

  it("hidden methods stay callable but are not described", async () => {
    expect(await client.request("calc", "hidden")).toBe("hidden but callable");
    const d = await client.describeService("calc");
    expect(Object.keys(d.methods)).not.toContain("hidden");
  });

  it("rpcResponse: false resolves with the whole response payload", async () => {
    const ok = await client.request(
      "calc",
      "add",
      { a: 1, b: 2 },
      { who: "me" },
      { rpcResponse: false, traceId: "t-1" },
    );
    expect(ok).toMatchObject({
      tag: "response",
      result: 3,
      error: null,
      trace_id: "t-1",
      context: { who: "me" },
    });
    const bad = await client.request("calc", "nope", {}, {}, { rpcResponse: false });
    expect(bad.error).toEqual({ error: "NuropbHandlingError", description: "Unknown method nope" });
    expect(bad.result).toBeNull();
  });

  it("answers a handler's own exception as NuropbException with Python's runtime description", async () => {
    const e = (await client.request("calc", "crash").catch((x: unknown) => x)) as NuropbError;
    expect(e).toBeInstanceOf(NuropbError);
    expect(e).not.toBeInstanceOf(NuropbHandlingError);
    expect(e.wireName).toBe("NuropbException");
    expect(e.description).toBe("Runtime exception calling calc.crash:RangeError: boom");
    const later = (await client
      .request("calc", "crashLater")
      .catch((x: unknown) => x)) as NuropbError;
    expect(later).not.toBeInstanceOf(NuropbHandlingError);
    expect(later.description).toBe("Runtime exception calling calc.crashLater:Error: later");
    const whole = await client.request("calc", "throwString", {}, {}, { rpcResponse: false });
    expect(whole.error).toEqual({
      error: "NuropbException",
      description: "Runtime exception calling calc.throwString:string: plain text",
    });
    // Each failed call is dead-lettered once.
    await waitFor(() => mesh.hub.deadLetters().length === 3, 2000, "three dead letters");
    // NuropbHandlingError stays what it means on Python's wire: unknown or private method.
    const priv = await client.request("calc", "_private", {}, {}, { rpcResponse: false });
    expect(priv.error).toEqual({
      error: "NuropbHandlingError",
      description: "Unknown method _private",
    });
  });

  describe("authorisation", () => {
    it("honours contextTokenKey", async () => {
      expect(await client.request("calc", "customKey", {}, { apiKey: "x" })).toEqual({ ok: 1 });
      await expect(
        client.request("calc", "customKey", {}, { Authorization: "x" }),
      ).rejects.toBeInstanceOf(NuropbAuthenticationError);
    });
  });

  it("times out with NuropbTimeoutError when nobody answers, and the message carries the ttl", async () => {
    const t = mesh.transport();
    await t.connect();
    const l = await t.consumeService(
      { service: "sleepy", rpcBindings: [], eventBindings: [], prefetch: 1 },
      () => {},
    );
    await l.stop(); // the queue stays (durable), nobody consumes
    const e = await client.request("sleepy", "x", {}, {}, { ttlMs: 60 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(NuropbTimeoutError);
    expect((e as NuropbError).retryable).toBe(true);
    await waitFor(() => mesh.hub.deadLetters().some((d) => d.reason === "expired"));
    const dl = mesh.hub.deadLetters().find((d) => d.reason === "expired");
    expect(dl?.frame.ttlMs).toBe(60);
  });

  it("rebuilds an unknown remote error name readably", async () => {
    await serveRaw(mesh.transport(), "py2", () => ({
      result: null,
      error: { error: "RuntimeError", description: "boom-async" },
    }));
    const e = (await client.request("py2", "x").catch((x: unknown) => x)) as NuropbError;
    expect(e).toBeInstanceOf(NuropbError);
    expect(e.wireName).toBe("RuntimeError");
    expect(e.description).toBe("boom-async");
  });

  it("describes itself with JSON Schema parameters and the fields Python reads", async () => {
    const d = await client.describeService("calc");
    // Every method's parameters is a JSON Schema a standard validator compiles.
    const ajv = new Ajv({ strict: true });
    for (const [name, m] of Object.entries(d.methods)) {
      expect(() => ajv.compile(m.parameters), name).not.toThrow();
    }
    expect(d.service_name).toBe("calc");
    expect(d.service_version).toBe("1.2.3");
    expect(d.description).toBe("A calculator");
    expect(d.encrypted_methods).toBe(false);
    expect(d.public_key).toBeNull();
    expect(d.methods.validated).toMatchObject({
      requires_encryption: false,
      parameters: { type: "object", required: ["id"] },
      result: { type: "string" },
    });
    expect(d.methods.secured).toMatchObject({
      description: "needs a token",
      requires_authorization: true,
    });
    expect(d.methods.add?.parameters).toEqual({ type: "object", properties: {} });
    expect(Object.keys(d.methods)).not.toContain("_private");
    expect(Object.keys(d.methods)).not.toContain("handleEvent");
    expect(await client.requiresEncryption("calc", "add")).toBe(false);
    expect(await client.hasPublicKey("calc")).toBe(false);
    await expect(client.requiresEncryption("calc", "nope")).rejects.toBeInstanceOf(
      NuropbHandlingError,
    );
  });

  it("offers a typed proxy", async () => {
    const calcProxy = client.proxy<Calculator>("calc");
    const sum: number = await calcProxy.add({ a: 40, b: 2 });
    expect(sum).toBe(42);
  });

  it("throws at once on bad arguments", async () => {
    await expect(client.request("", "x")).rejects.toThrow(TypeError);
    await expect(client.request("calc", "add", [] as never)).rejects.toThrow(
      /params must be an object/,
    );
    await expect(client.request("calc", "add", {}, {}, { ttlMs: -1 })).rejects.toThrow(
      /ttlMs must be a positive integer/,
    );
    await expect(client.request("calc", "add", {}, {}, { ttlMs: 30 * 86_400_000 })).rejects.toThrow(
      /up to 2147483647/,
    );
    await expect(client.publishEvent("a.*", {})).rejects.toThrow(/without wildcards/);
    expect(() =>
      createService({ transport: mesh.transport(), name: "bad name", instance: {} }),
    ).toThrow(/options.name/);
    expect(() => createService({ transport: {} as never, name: "x", instance: {} })).toThrow(
      /Transport/,
    );
    expect(() =>
      createService({
        transport: mesh.transport(),
        name: "x",
        instance: {},
        eventBindings: ["a..b"],
      }),
    ).toThrow(/empty word/);
    expect(() =>
      createService({
        transport: mesh.transport(),
        name: "x",
        instance: new Echo(),
        eventBindings: ["a"],
      }),
    ).toThrow(/handleEvent/);
    expect(() =>
      createService({
        transport: mesh.transport(),
        name: "x",
        instance: new Echo(),
        methods: { nope: {} },
      }),
    ).toThrow(/names no method/);
    expect(() =>
      createService({
        transport: mesh.transport(),
        name: "x",
        instance: new Echo(),
        methods: { whoami: { params: { type: "nonsense" } } },
      }),
    ).toThrow(/not a valid JSON Schema/);
    expect(() => publishToMesh({ colour: "red" } as never)).toThrow(/unknown option 'colour'/);
  });

  it("serves a plain-JavaScript service configured through options.methods", async () => {
    const instance = {
      greet(p: { name: string }) {
        return `hello ${p.name}`;
      },
    };
    const svc = createService({
      transport: mesh.transport(),
      name: "greeter",
      instance,
      methods: {
        greet: { params: { type: "object", required: ["name"] }, description: "Says hello" },
      },
    });
    await svc.connect();
    mesh.defer(() => svc.disconnect());
    expect(await client.request("greeter", "greet", { name: "ada" })).toBe("hello ada");
    await expect(client.request("greeter", "greet", {})).rejects.toBeInstanceOf(
      NuropbValidationError,
    );
    expect((await client.describeService("greeter")).methods.greet?.description).toBe("Says hello");
  });

  it("integers beyond 2^53 (bigints) pass a schema's integer and number types, and its bounds", async () => {
    const instance = {
      store(p: { id: bigint | number; weight: bigint | number }) {
        return { id: p.id, weight: p.weight };
      },
    };
    const svc = createService({
      transport: mesh.transport(),
      name: "int64",
      instance,
      methods: {
        store: {
          params: {
            type: "object",
            properties: {
              id: { type: "integer", minimum: 0 },
              weight: { type: "number" },
              tags: { type: "array", items: { type: "integer" } },
            },
            required: ["id", "weight"],
            additionalProperties: false,
          },
        },
      },
    });
    await svc.connect();
    mesh.defer(() => svc.disconnect());
    const id = 9223372036854775807n;
    expect(
      await client.request("int64", "store", { id, weight: -(2n ** 60n), tags: [2n ** 55n] }),
    ).toEqual({
      id,
      weight: -(2n ** 60n),
    });
    // Still checked: a negative bigint breaks minimum, a bigint is no string, extra keys refused.
    for (const params of [
      { id: -id, weight: 1 },
      { id: "9223372036854775807", weight: 1 },
      { id, weight: 1, extra: 2n ** 60n },
    ]) {
      await expect(client.request("int64", "store", params)).rejects.toBeInstanceOf(
        NuropbValidationError,
      );
    }
  });

  it("normalises a Python describe (list-of-pairs properties)", async () => {
    await serveRaw(mesh.transport(), "py-peer", () => ({
      result: {
        service_name: "py-peer",
        service_version: "2.0.1",
        description: "Python",
        warnings: [],
        encrypted_methods: true,
        public_key: "-----BEGIN PUBLIC KEY-----\nX\n-----END PUBLIC KEY-----\n",
        methods: {
          get_orders: {
            description: null,
            requires_encryption: true,
            parameters: {
              type: "object",
              properties: [
                ["order_date", { type: "datetime", description: "", default: "" }],
                ["account", { type: "str", description: "", default: null }],
              ],
              required: ["order_date"],
            },
          },
        },
      },
      error: null,
    }));
    const d = await client.describeService("py-peer");
    expect(d.methods.get_orders?.parameters).toEqual({
      type: "object",
      properties: {
        order_date: { type: "string", format: "date-time", "x-python-type": "datetime" },
        account: { type: "string", "x-python-type": "str", default: null },
      },
      required: ["order_date"],
    });
    expect(await client.requiresEncryption("py-peer", "get_orders")).toBe(true);
    expect(await client.hasPublicKey("py-peer")).toBe(true);
  });

  it("dead-letters a response that lands on a service queue", async () => {
    const raw = mesh.transport();
    await raw.connect();
    await raw.send(
      { kind: "rpc", service: "calc" },
      encodePayload({
        tag: "response",
        result: 1,
        error: null,
        correlation_id: newId(),
        trace_id: null,
        context: {},
        warning: null,
        reply_to: "",
      }),
    );
    await waitFor(() => mesh.hub.deadLetters().length === 1);
  });
});
