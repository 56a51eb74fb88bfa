import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  NuropbAuthenticationError,
  NuropbAuthorizationError,
  NuropbCallAgain,
  NuropbCallAgainReject,
  NuropbConnectionClosedError,
  NuropbError,
  NuropbHandlingError,
  NuropbNotDeliveredError,
  NuropbSuccess,
  NuropbTimeoutError,
  NuropbTransportError,
  NuropbValidationError,
  buildHeaders,
  decodeFrame,
  encodePayload,
  newId,
  type EventType,
  type InboundFrame,
  type ResponsePayload,
} from "@nuropb/protocol";
import { createClient, createService, publishToMesh, type RequestContext } from "@nuropb/core";
import { createMesh, waitFor } from "./helpers.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

class Calculator {
  readonly seen = new Set<string>();
  readonly events: EventType[] = [];
  handlerRuns = 0;

  add(params: { a: number; b: number }): number {
    this.handlerRuns++;
    return params.a + params.b;
  }
  async slow(params: { ms: number }): Promise<string> {
    await sleep(params.ms);
    return "slow done";
  }
  fail(): never {
    throw new RangeError("boom");
  }
  failNuropb(): never {
    throw new NuropbValidationError("invalid field: zip_code");
  }
  _private(): string {
    return "secret";
  }
  retryOnce(_params: unknown, ctx: RequestContext): string {
    if (!this.seen.has(ctx.correlationId)) {
      this.seen.add(ctx.correlationId);
      throw new NuropbCallAgain("not yet");
    }
    return "second time lucky";
  }
  alwaysAgain(): never {
    this.handlerRuns++;
    throw new NuropbCallAgain("again");
  }
  succeed(): never {
    throw new NuropbSuccess({ ok: true }, [
      { topic: "calc.succeeded", event: { via: "NuropbSuccess" } },
    ]);
  }
  withEvent(params: { n: number }, ctx: RequestContext): string {
    ctx.addEvent({ topic: "calc.added", event: { n: params.n }, target: ["someone"] });
    return "event queued";
  }
  withEventThenFail(_p: unknown, ctx: RequestContext): never {
    ctx.addEvent({ topic: "calc.added", event: { n: -1 } });
    throw new Error("failed after adding an event");
  }
  @publishToMesh({
    authorize: (token) => (token === "Bearer good" ? { user: "u1", roles: ["admin"] } : false),
    description: "needs a token",
  })
  secured(_p: unknown, ctx: RequestContext): unknown {
    this.handlerRuns++;
    return { claims: ctx.userClaims };
  }
  @publishToMesh({
    authorize: () => {
      throw new Error("token service down");
    },
  })
  authThrows(): string {
    this.handlerRuns++;
    return "never";
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
    this.handlerRuns++;
    return `id=${params.id}`;
  }
  @publishToMesh({ hide: true })
  hidden(): string {
    return "hidden but callable";
  }
  async callOther(_p: unknown, ctx: RequestContext): Promise<unknown> {
    return ctx.request("echo", "whoami");
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

  it("unknown and _-prefixed methods fail with NuropbHandlingError and are dead-lettered once", async () => {
    await expect(client.request("calc", "nope")).rejects.toMatchObject({
      name: "NuropbHandlingError",
      description: "Unknown method nope",
    });
    const err = await client.request("calc", "_private").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NuropbHandlingError);
    expect((err as NuropbError).description).toBe("Unknown method _private");
    await waitFor(() => mesh.hub.deadLetters().length === 2);
    expect(mesh.hub.deadLetters().map((d) => d.reason)).toEqual(["rejected", "rejected"]);
  });

  it("hidden methods stay callable but are not described", async () => {
    expect(await client.request("calc", "hidden")).toBe("hidden but callable");
    const d = await client.describeService("calc");
    expect(Object.keys(d.methods)).not.toContain("hidden");
  });

  it("errors thrown by handlers keep their class and description", async () => {
    const e1 = await client.request("calc", "failNuropb").catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(NuropbValidationError);
    expect((e1 as NuropbError).description).toBe("invalid field: zip_code");
    const e2 = await client.request("calc", "fail").catch((e: unknown) => e);
    expect(e2).toBeInstanceOf(NuropbHandlingError);
    expect((e2 as NuropbError).description).toBe(
      "Runtime exception calling calc.fail:RangeError: boom",
    );
    await waitFor(() => mesh.hub.deadLetters().length === 2);
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

  it("validates params against the declared JSON Schema before the handler runs", async () => {
    expect(await client.request("calc", "validated", { id: "a1" })).toBe("id=a1");
    const e = await client
      .request("calc", "validated", { id: 7, extra: true })
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(NuropbValidationError);
    expect((e as NuropbError).description).toContain("params/id must be string");
    expect((e as NuropbError).description).toContain("params/extra is not allowed");
    const e2 = await client.request("calc", "validated", {}).catch((x: unknown) => x);
    expect((e2 as NuropbError).description).toContain("params/id is required");
    expect(calc.handlerRuns).toBe(1);
  });

  describe("authorisation", () => {
    it("passes claims to the handler", async () => {
      expect(await client.request("calc", "secured", {}, { Authorization: "Bearer good" })).toEqual(
        {
          claims: { user: "u1", roles: ["admin"] },
        },
      );
    });
    it("a missing token is an authentication error and the handler never runs", async () => {
      await expect(client.request("calc", "secured", {}, {})).rejects.toBeInstanceOf(
        NuropbAuthenticationError,
      );
      expect(calc.handlerRuns).toBe(0);
    });
    it("a falsy result is an authorisation error", async () => {
      const e = await client
        .request("calc", "secured", {}, { Authorization: "Bearer bad" })
        .catch((x: unknown) => x);
      expect(e).toBeInstanceOf(NuropbAuthorizationError);
      expect(calc.handlerRuns).toBe(0);
    });
    it("a throwing authorize is an authorisation error", async () => {
      const e = await client
        .request("calc", "authThrows", {}, { Authorization: "t" })
        .catch((x: unknown) => x);
      expect(e).toBeInstanceOf(NuropbAuthorizationError);
      expect((e as NuropbError).description).toContain("token service down");
      expect(calc.handlerRuns).toBe(0);
    });
    it("honours contextTokenKey", async () => {
      expect(await client.request("calc", "customKey", {}, { apiKey: "x" })).toEqual({ ok: 1 });
      await expect(
        client.request("calc", "customKey", {}, { Authorization: "x" }),
      ).rejects.toBeInstanceOf(NuropbAuthenticationError);
    });
  });

  describe("call again", () => {
    it("requeues once and answers from the redelivered copy", async () => {
      expect(await client.request("calc", "retryOnce")).toBe("second time lucky");
    });
    it("rejects the redelivered copy that asks again, with NuropbCallAgainReject", async () => {
      const e = await client
        .request("calc", "alwaysAgain", {}, {}, { traceId: "tr-9" })
        .catch((x: unknown) => x);
      expect(e).toBeInstanceOf(NuropbCallAgainReject);
      expect((e as NuropbError).description).toMatch(
        /^Rejecting second call again request for trace_id: tr-9, correlation_id: [0-9a-f]{32}$/,
      );
      expect(calc.handlerRuns).toBe(2);
      await waitFor(() => mesh.hub.deadLetters().length === 1);
    });
  });

  describe("events", () => {
    it("delivers matching events to handleEvent with AMQP wildcards", async () => {
      await client.publishEvent("calc.reset", { why: "test" }, { c: 1 }, { traceId: "ev-1" });
      await client.publishEvent("orders", { n: 0 });
      await client.publishEvent("orders.created.eu", { n: 1 });
      await client.publishEvent("calc.reset.deep", { n: 2 }); // calc.* does not match three words
      await client.publishEvent("other.thing", { n: 3 });
      await waitFor(() => calc.events.length === 3);
      await sleep(20);
      expect(calc.events.map((e) => e.topic).sort()).toEqual([
        "calc.reset",
        "orders",
        "orders.created.eu",
      ]);
      const first = calc.events.find((e) => e.topic === "calc.reset");
      expect(first).toEqual({
        topic: "calc.reset",
        event: { why: "test" },
        target: null,
        context: { c: 1 },
        traceId: "ev-1",
      });
    });

    it("publishes events added to ctx only after a successful response, with the request's ids", async () => {
      const seen: InboundFrame[] = [];
      const tap = mesh.transport();
      await tap.connect();
      await tap.consumeService(
        { service: `tap-${newId()}`, rpcBindings: [], eventBindings: ["calc.#"], prefetch: 0 },
        async (d) => {
          seen.push(d);
          await d.ack();
        },
      );
      const r = await client.request(
        "calc",
        "withEvent",
        { n: 4 },
        { who: "x" },
        { rpcResponse: false, traceId: "tr-ev" },
      );
      await waitFor(() => seen.length >= 1);
      const ev = decodeFrame(seen[0] as InboundFrame);
      expect(ev.payload).toEqual({
        tag: "event",
        topic: "calc.added",
        event: { n: 4 },
        context: { who: "x" },
        trace_id: "tr-ev",
        correlation_id: r.correlation_id,
        target: ["someone"],
      });
      await expect(client.request("calc", "withEventThenFail")).rejects.toBeInstanceOf(
        NuropbHandlingError,
      );
      expect(await client.request("calc", "succeed")).toEqual({ ok: true });
      await waitFor(() => seen.length >= 2);
      await sleep(20);
      expect(
        seen.map((f) => decodeFrame(f).payload).map((p) => (p as { topic: string }).topic),
      ).toEqual(["calc.added", "calc.succeeded"]);
    });

    it("refuses to encrypt events", async () => {
      await expect(
        client.publishEvent("x.y", {}, {}, { encrypted: true as never }),
      ).rejects.toBeInstanceOf(NuropbValidationError);
    });
  });

  it("ctx.request carries the trace id and context to other services", async () => {
    const echo = createService({ transport: mesh.transport(), name: "echo", instance: new Echo() });
    await echo.connect();
    mesh.defer(() => echo.disconnect());
    const r = await client.request(
      "calc",
      "callOther",
      {},
      { Authorization: "Bearer t" },
      { traceId: "trace-42" },
    );
    expect(r).toEqual({ traceId: "trace-42", context: { Authorization: "Bearer t" } });
  });

  it("a request to a service that is not there rejects NuropbNotDeliveredError; so does a command", async () => {
    const e = await client.request("nobody", "x").catch((x: unknown) => x);
    expect(e).toBeInstanceOf(NuropbNotDeliveredError);
    expect((e as NuropbError).description).toBe(
      "Service nobody not available. unable to call method x",
    );
    await expect(client.command("nobody", "x")).rejects.toBeInstanceOf(NuropbNotDeliveredError);
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

  it("completes on the first response and ignores duplicates, late and unknown responses", async () => {
    const raw = mesh.transport();
    await raw.connect();
    // A Python-like service: answers every request twice (PROTOCOL.md §7.3), late for "late".
    await raw.consumeService(
      { service: "pylike", rpcBindings: [], eventBindings: [], prefetch: 0 },
      async (d) => {
        await d.ack();
        const req = decodeFrame(d);
        const method = (req.payload as { method: string }).method;
        const respond = (result: unknown, error: ResponsePayload["error"]) =>
          raw.send(
            { kind: "reply", address: d.replyTo as string },
            encodePayload({
              tag: "response",
              result,
              error,
              correlation_id: req.correlationId,
              trace_id: req.traceId,
              context: {},
              warning: null,
              reply_to: d.replyTo as string,
            }),
          );
        if (method === "late") {
          await sleep(80);
          await respond("too late", null);
          return;
        }
        await respond(null, { error: "NuropbValidationError", description: "first" });
        await respond("second", null);
      },
    );
    await raw.send(
      { kind: "reply", address: client.responseAddress },
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
    const e = await client.request("pylike", "twice").catch((x: unknown) => x);
    expect(e).toBeInstanceOf(NuropbValidationError);
    expect((e as NuropbError).description).toBe("first");
    await expect(client.request("pylike", "late", {}, {}, { ttlMs: 30 })).rejects.toBeInstanceOf(
      NuropbTimeoutError,
    );
    await sleep(100); // the late response arrives now and must be ignored
    expect(await client.request("calc", "add", { a: 1, b: 1 })).toBe(2);
  });

  it("rebuilds an unknown remote error name readably", async () => {
    const raw = mesh.transport();
    await raw.connect();
    await raw.consumeService(
      { service: "py2", rpcBindings: [], eventBindings: [], prefetch: 0 },
      async (d) => {
        await d.ack();
        const req = decodeFrame(d);
        await raw.send(
          { kind: "reply", address: d.replyTo as string },
          encodePayload({
            tag: "response",
            result: null,
            error: { error: "RuntimeError", description: "boom-async" },
            correlation_id: req.correlationId,
            trace_id: null,
            context: {},
            warning: null,
            reply_to: "",
          }),
        );
      },
    );
    const e = (await client.request("py2", "x").catch((x: unknown) => x)) as NuropbError;
    expect(e).toBeInstanceOf(NuropbError);
    expect(e.wireName).toBe("RuntimeError");
    expect(e.description).toBe("boom-async");
  });

  it("dead-letters poison messages once, answers them with NuropbMessageError and keeps serving", async () => {
    const raw = mesh.transport();
    await raw.connect();
    const address = `nuropb-raw-${newId()}-rq`;
    const replies: InboundFrame[] = [];
    await raw.consumeResponses({ address }, (f) => replies.push(f));
    const good = new TextEncoder().encode(
      JSON.stringify({
        tag: "request",
        service: "calc",
        method: "add",
        params: { a: 1, b: 2 },
        correlation_id: "c0",
        context: {},
        trace_id: null,
      }),
    );
    const poison = [
      {
        headers: buildHeaders("request", "t1"),
        body: new TextEncoder().encode("{not json"),
        correlationId: "c1",
      },
      {
        headers: { ...buildHeaders("request", "t2"), nuropb_protocol: "0.0.9" },
        body: good,
        correlationId: "c2",
      },
      { headers: {}, body: good, correlationId: "c3" },
      {
        headers: { ...buildHeaders("request", "t4"), nuropb_type: "bogus" },
        body: good,
        correlationId: "c4",
      },
      {
        headers: buildHeaders("request", "t5", true),
        body: new TextEncoder().encode("garbage.garbage"),
        correlationId: "c5",
      },
      {
        headers: buildHeaders("request", "t6"),
        body: new TextEncoder().encode("[1,2]"),
        correlationId: "c6",
      },
    ];
    for (const p of poison)
      await raw.send({ kind: "rpc", service: "calc" }, { ...p, replyTo: address, ttlMs: 5000 });
    await waitFor(() => replies.length === poison.length, 3000, "error replies");
    for (const r of replies) {
      const d = decodeFrame(r);
      expect((d.payload as ResponsePayload).error?.error).toBe("NuropbMessageError");
    }
    expect(replies.map((r) => r.correlationId).sort()).toEqual([
      "c1",
      "c2",
      "c3",
      "c4",
      "c5",
      "c6",
    ]);
    expect(mesh.hub.deadLetters()).toHaveLength(poison.length);
    expect(await client.request("calc", "add", { a: 20, b: 22 })).toBe(42);
    expect(mesh.hub.deadLetters()).toHaveLength(poison.length);
  });

  it("describes itself with JSON Schema parameters and the fields Python reads", async () => {
    const d = await client.describeService("calc");
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
    expect(d.methods.add?.parameters).toEqual({ type: "object" });
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

  it("rejects pending requests with a retryable NuropbTransportError when the transport disconnects", async () => {
    const pending = client.request("calc", "slow", { ms: 300 });
    await sleep(20);
    const down = mesh.hub.disconnect(clientTransport);
    const e = await pending.catch((x: unknown) => x);
    expect(e).toBeInstanceOf(NuropbTransportError);
    expect((e as NuropbError).retryable).toBe(true);
    await down;
    await waitFor(() => client.connected, 2000, "the client to see the reconnect");
    expect(await client.request("calc", "add", { a: 1, b: 1 })).toBe(2);
  });

  it("disconnect drains in-flight handlers: their responses still arrive", async () => {
    const pending = client.request("calc", "slow", { ms: 80 });
    await waitFor(
      () =>
        mesh.hub.queueDepth("nuropb-calc-sq") === 0 &&
        mesh.hub.unsettledCount("nuropb-calc-sq") === 1,
    );
    await service.disconnect();
    expect(await pending).toBe("slow done");
    expect(service.connected).toBe(false);
    await expect(service.request("calc", "add")).rejects.toBeInstanceOf(
      NuropbConnectionClosedError,
    );
  });

  it("client disconnect rejects its pending requests with NuropbTransportError", async () => {
    const pending = client.request("calc", "slow", { ms: 200 });
    await sleep(10);
    await client.disconnect();
    await expect(pending).rejects.toBeInstanceOf(NuropbTransportError);
  });

  it("throws at once on bad arguments", async () => {
    await expect(client.request("", "x")).rejects.toThrow(TypeError);
    await expect(client.request("calc", "add", [] as never)).rejects.toThrow(
      /params must be an object/,
    );
    await expect(client.request("calc", "add", {}, {}, { ttlMs: -1 })).rejects.toThrow(
      /ttlMs must be a positive integer/,
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

  it("refuses a second live instance with the same instance id", async () => {
    const again = createService({
      transport: mesh.transport(),
      name: "calc",
      instance: new Calculator(),
      instanceId: service.instanceId,
    });
    await expect(again.connect()).rejects.toBeInstanceOf(NuropbTransportError);
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

  it("normalises a Python describe (list-of-pairs properties)", async () => {
    const raw = mesh.transport();
    await raw.connect();
    await raw.consumeService(
      { service: "py-peer", rpcBindings: [], eventBindings: [], prefetch: 0 },
      async (d) => {
        await d.ack();
        const req = decodeFrame(d);
        await raw.send(
          { kind: "reply", address: d.replyTo as string },
          encodePayload({
            tag: "response",
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
            correlation_id: req.correlationId,
            trace_id: req.traceId,
            context: {},
            warning: null,
            reply_to: "",
          }),
        );
      },
    );
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
