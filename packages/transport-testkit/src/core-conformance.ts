import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
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
  type Delivery,
  type EventType,
  type Frame,
  type InboundFrame,
  type ResponsePayload,
  type Transport,
  type TransportCapabilities,
} from "@nuropb/protocol";
import {
  createClient,
  createService,
  publishToMesh,
  type LifecycleTransition,
  type MeshParticipant,
  type RequestContext,
} from "@nuropb/core";
import { createServiceKeys, type ServiceKeys } from "@nuropb/crypto";
import { delay as sleep, waitFor } from "./helpers.ts";

/** Options of {@link describeCoreConformance}. */
export interface CoreConformanceOptions {
  /** Shown in the test names. */
  readonly name: string;
  /** A fresh, unconnected transport on the same mesh each call. */
  readonly create: () => Transport | Promise<Transport>;
  /**
   * How many messages the mesh has dead-lettered so far (for the transport under test; called
   * before and after each scenario, so a shared dead-letter place is fine). Required when the
   * transport declares `capabilities.deadLetter`; without it there is nothing to count.
   */
  readonly deadLetterCount?: () => number | Promise<number>;
  /** Forces a connection loss of `transport`; it must report disconnected and then reconnected. */
  readonly disrupt?: (transport: Transport) => Promise<void>;
  /** Per-test timeout in ms; each wait inside a test gets half. @defaultValue 20000 */
  readonly timeoutMs?: number;
  /**
   * How long to watch for something that must NOT happen (a second dead letter, an event that
   * must not match) before asserting it did not. Size it to the broker's delivery latency.
   * @defaultValue 400
   */
  readonly quietMs?: number;
}

/** The capabilities the suite found on the transport; core adapts to each, and so does the suite. */
type Caps = Pick<TransportCapabilities, "notDelivered" | "redelivery" | "deadLetter">;

/** One settle call core made on a delivery of the service under test. */
interface Settlement {
  readonly correlationId: string;
  readonly redelivered: boolean;
  readonly outcome: "ack" | "requeue" | "reject";
}

/**
 * `transport` as the service under test sees it, except that every settle call core makes on a
 * service delivery is noted in `log` first. That is what core promises whatever the transport
 * does with it (a transport without dead letters drops a rejected message; one with them keeps it).
 */
function recordingSettlements(transport: Transport, log: Settlement[]): Transport {
  const consumeService: Transport["consumeService"] = (spec, handler) =>
    transport.consumeService(spec, (d) => handler(recorded(d, log)));
  return new Proxy(transport, {
    get(target, key) {
      if (key === "consumeService") return consumeService;
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === "function" ? (value as () => unknown).bind(target) : value;
    },
  });
}

function recorded(d: Delivery, log: Settlement[]): Delivery {
  const settle = (outcome: Settlement["outcome"]) => (): Promise<void> => {
    log.push({ correlationId: d.correlationId, redelivered: d.redelivered, outcome });
    return d[outcome]();
  };
  return {
    headers: d.headers,
    body: d.body,
    correlationId: d.correlationId,
    redelivered: d.redelivered,
    ...(d.replyTo !== undefined ? { replyTo: d.replyTo } : {}),
    ...(d.ttlMs !== undefined ? { ttlMs: d.ttlMs } : {}),
    ack: settle("ack"),
    requeue: settle("requeue"),
    reject: settle("reject"),
  };
}

class Calculator {
  readonly seen = new Set<string>();
  retryOnceRuns = 0;
  readonly events: EventType[] = [];
  readonly remembered: unknown[] = [];
  runs = 0;
  slowStarted = 0;
  /** Topic prefix of the events this instance raises (unique per test). */
  prefix = "calc";

  add(params: { a: number; b: number }): number {
    this.runs++;
    return params.a + params.b;
  }
  remember(params: { value: unknown }): void {
    this.remembered.push(params.value);
  }
  async slow(params: { ms: number }): Promise<string> {
    this.slowStarted++;
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
    this.retryOnceRuns++;
    if (!this.seen.has(ctx.correlationId)) {
      this.seen.add(ctx.correlationId);
      throw new NuropbCallAgain("not yet");
    }
    return "second time lucky";
  }
  alwaysAgain(): never {
    this.runs++;
    throw new NuropbCallAgain("again");
  }
  succeed(): never {
    throw new NuropbSuccess({ ok: true }, [
      { topic: `${this.prefix}.succeeded`, event: { via: "NuropbSuccess" } },
    ]);
  }
  withEvent(params: { n: number }, ctx: RequestContext): string {
    ctx.addEvent({ topic: `${this.prefix}.added`, event: { n: params.n }, target: ["someone"] });
    return "event queued";
  }
  withEventThenFail(_p: unknown, ctx: RequestContext): never {
    ctx.addEvent({ topic: `${this.prefix}.added`, event: { n: -1 } });
    throw new Error("failed after adding an event");
  }
  @publishToMesh({ authorize: (token) => (token === "Bearer good" ? { user: "u1" } : false) })
  secured(_p: unknown, ctx: RequestContext): unknown {
    this.runs++;
    return { claims: ctx.userClaims };
  }
  @publishToMesh({
    authorize: () => {
      throw new Error("token service down");
    },
  })
  authThrows(): string {
    this.runs++;
    return "never";
  }
  @publishToMesh({
    params: {
      type: "object",
      properties: { id: { type: "string" } },
      required: ["id"],
      additionalProperties: false,
    },
  })
  validated(params: { id: string }): string {
    this.runs++;
    return `id=${params.id}`;
  }
  @publishToMesh({ requiresEncryption: true })
  secretEcho(params: { card: string }, ctx: RequestContext): unknown {
    ctx.addEvent({ topic: `${this.prefix}.secret-used`, event: { last4: params.card.slice(-4) } });
    return { secret: params, encrypted: ctx.encrypted };
  }
  @publishToMesh({ requiresEncryption: true })
  secretFail(): never {
    throw new NuropbValidationError("invalid field: pin");
  }
  @publishToMesh({ requiresEncryption: true })
  secretRemember(params: { value: unknown }): void {
    this.remembered.push(params.value);
  }
  async callOther(_p: unknown, ctx: RequestContext): Promise<unknown> {
    return ctx.request(`${this.echoName}`, "whoami");
  }
  echoName = "";
  handleEvent(event: EventType): void {
    this.events.push(event);
  }
}

/** The service of the middleware scenarios: a method behind authorisation and its own middleware. */
class Greeter {
  readonly events: EventType[] = [];
  readonly #trail: string[];
  constructor(trail: string[]) {
    this.#trail = trail;
  }
  @publishToMesh({
    authorize: (token) => (token === "Bearer mw" ? { user: "mw" } : false),
    middleware: [
      async (call, next) => {
        // The service's middleware hands its trail over in `call.state`, when it has one.
        (call.state.trail as string[] | undefined)?.push(
          `method:${JSON.stringify(call.userClaims)}`,
        );
        return next();
      },
    ],
  })
  hello(params: { name: string }, ctx: RequestContext): unknown {
    this.#trail.push("handler");
    return { hello: params.name, tenant: ctx.context.tenant };
  }
  handleEvent(event: EventType): void {
    this.#trail.push("event");
    this.events.push(event);
  }
}

class Echo {
  whoami(_p: unknown, ctx: RequestContext): unknown {
    return { traceId: ctx.traceId, context: ctx.context };
  }
}

/**
 * Registers the behaviour of `@nuropb/core` over a transport: every rule of the core API
 * (dispatch, errors, authorisation, validation, call-again, events, describe, ttl, duplicates,
 * poison messages, disconnect, encryption with both suites). Memory runs it as a unit test;
 * RabbitMQ, NATS and Redis run it against real brokers; run it against your own transport.
 *
 * The suite follows `capabilities` as core does. A test of a guarantee (`notDelivered`,
 * `redelivery`, `deadLetter`) runs when the transport declares it; otherwise its counterpart
 * checks what core promises without it: a timeout instead of `NuropbNotDeliveredError`,
 * call-again refused at once instead of requeued, failures still answered and their messages
 * rejected (not redelivered) where there is no dead-letter place to count. It creates one
 * transport while collecting, to read its capabilities, and closes it without connecting.
 * @throws TypeError when an option is invalid; when collecting, when `deadLetterCount` is
 *   missing for a transport that declares `deadLetter`.
 * @example
 * ```ts
 * describeCoreConformance({
 *   name: "memory",
 *   create: () => createMemoryTransport({ hub }),
 *   deadLetterCount: () => hub.deadLetters().length,
 * });
 * ```
 */
export function describeCoreConformance(options: CoreConformanceOptions): void {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("describeCoreConformance needs an options object");
  }
  if (typeof options.name !== "string" || options.name === "") {
    throw new TypeError("describeCoreConformance: name must be a non-empty string");
  }
  if (typeof options.create !== "function") {
    throw new TypeError("describeCoreConformance: create must be a function");
  }
  for (const key of ["deadLetterCount", "disrupt"] as const) {
    if (options[key] !== undefined && typeof options[key] !== "function") {
      throw new TypeError(`describeCoreConformance: ${key} must be a function when given`);
    }
  }
  const timeout = options.timeoutMs ?? 20_000;
  if (typeof timeout !== "number" || !Number.isFinite(timeout) || timeout <= 0) {
    throw new TypeError(
      `describeCoreConformance: timeoutMs must be a positive number, got ${String(timeout)}`,
    );
  }
  const quietMs = options.quietMs ?? 400;
  if (!Number.isSafeInteger(quietMs) || quietMs < 0) {
    throw new TypeError(`describeCoreConformance: quietMs must be an integer >= 0, got ${quietMs}`);
  }
  const wait = (p: () => boolean | Promise<boolean>, what: string): Promise<void> =>
    waitFor(p, timeout / 2, what);

  describe(`core over ${options.name}`, async () => {
    const probe = await options.create();
    const caps: Caps = {
      notDelivered: probe.capabilities.notDelivered,
      redelivery: probe.capabilities.redelivery,
      deadLetter: probe.capabilities.deadLetter,
    };
    await probe.close();
    const deadLetterCount = options.deadLetterCount ?? (() => 0);
    if (caps.deadLetter && options.deadLetterCount === undefined) {
      throw new TypeError(
        `describeCoreConformance: ${options.name} declares capabilities.deadLetter, so deadLetterCount is required`,
      );
    }

    let keys: ServiceKeys;
    let transports: Transport[];
    let closers: (() => Promise<void>)[];
    let calc: Calculator;
    let svcName: string;
    let service: MeshParticipant;
    let client: MeshParticipant;
    let clientTransport: Transport;
    let dlBefore: number;
    let settlements: Settlement[];

    const transport = async (): Promise<Transport> => {
      const t = await options.create();
      transports.push(t);
      return t;
    };
    const deadLettersSince = async (): Promise<number> => (await deadLetterCount()) - dlBefore;
    /** How core settled the service's deliveries in this test, as `outcome:redelivered`. */
    const settled = (ids?: ReadonlySet<string>): string[] =>
      settlements
        .filter((s) => ids === undefined || ids.has(s.correlationId))
        .map((s) => `${s.outcome}:${String(s.redelivered)}`);

    beforeAll(() => {
      keys = createServiceKeys({ rsa: true, nacl: true });
    });

    beforeEach(async () => {
      transports = [];
      closers = [];
      calc = new Calculator();
      svcName = `calc-${newId().slice(0, 12)}`;
      calc.echoName = `echo-${svcName}`;
      calc.prefix = `ev-${svcName}`;
      settlements = [];
      service = createService({
        transport: recordingSettlements(await transport(), settlements),
        name: svcName,
        instance: calc,
        eventBindings: [`${svcName}.*`, `${svcName}-orders.#`],
        keys,
      });
      clientTransport = await transport();
      client = createClient({ transport: clientTransport, defaultTtlMs: 5000 });
      await service.connect();
      await client.connect();
      closers.push(
        () => client.disconnect(),
        () => service.disconnect(),
      );
      dlBefore = await deadLetterCount();
    }, timeout);

    afterEach(async () => {
      for (const c of closers.reverse()) await c().catch(() => undefined);
      await Promise.allSettled(transports.map((t) => t.close()));
    }, timeout);

    afterAll(() => undefined);

    it(
      "answers requests with results, runs commands",
      async () => {
        expect(await client.request(svcName, "add", { a: 2, b: 3 })).toBe(5);
        await client.command(svcName, "remember", { value: "x" });
        await wait(() => calc.remembered.length === 1, "the command to run");
        expect(calc.remembered).toEqual(["x"]);
        expect(service.connected && client.connected).toBe(true);
      },
      timeout,
    );

    it(
      caps.deadLetter
        ? "unknown and _-prefixed methods: NuropbHandlingError, dead-lettered once each"
        : "unknown and _-prefixed methods: NuropbHandlingError, rejected once each (no dead letters)",
      async () => {
        const e1 = (await client.request(svcName, "nope").catch((e: unknown) => e)) as NuropbError;
        expect(e1).toBeInstanceOf(NuropbHandlingError);
        expect(e1.description).toBe("Unknown method nope");
        const e2 = (await client
          .request(svcName, "_private")
          .catch((e: unknown) => e)) as NuropbError;
        expect(e2.description).toBe("Unknown method _private");
        if (caps.deadLetter)
          await wait(async () => (await deadLettersSince()) >= 2, "two dead letters");
        await sleep(quietMs);
        // Rejected once each, never redelivered: what a dead-letter place would then keep.
        expect(settled()).toEqual(["reject:false", "reject:false"]);
        if (caps.deadLetter) expect(await deadLettersSince()).toBe(2);
      },
      timeout,
    );

    it(
      "handler errors keep class and description; other exceptions become NuropbException",
      async () => {
        const e1 = (await client
          .request(svcName, "failNuropb")
          .catch((e: unknown) => e)) as NuropbError;
        expect(e1).toBeInstanceOf(NuropbValidationError);
        expect(e1.description).toBe("invalid field: zip_code");
        const e2 = (await client.request(svcName, "fail").catch((e: unknown) => e)) as NuropbError;
        expect(e2.wireName).toBe("NuropbException");
        expect(e2.description).toBe(`Runtime exception calling ${svcName}.fail:RangeError: boom`);
        const whole = await client.request(
          svcName,
          "fail",
          {},
          { c: 1 },
          { rpcResponse: false, traceId: "tr" },
        );
        expect(whole).toMatchObject({
          tag: "response",
          result: null,
          trace_id: "tr",
          context: { c: 1 },
        });
        expect(whole.error?.error).toBe("NuropbException");
      },
      timeout,
    );

    it(
      "validates params before the handler runs",
      async () => {
        const e = (await client
          .request(svcName, "validated", { id: 7, extra: 1 })
          .catch((x: unknown) => x)) as NuropbError;
        expect(e).toBeInstanceOf(NuropbValidationError);
        expect(e.description).toContain("params/id must be string");
        expect(calc.runs).toBe(0);
        expect(await client.request(svcName, "validated", { id: "a" })).toBe("id=a");
      },
      timeout,
    );

    it(
      "authorises from the context token; the handler never runs on refusal",
      async () => {
        expect(
          await client.request(svcName, "secured", {}, { Authorization: "Bearer good" }),
        ).toEqual({ claims: { user: "u1" } });
        await expect(client.request(svcName, "secured", {}, {})).rejects.toBeInstanceOf(
          NuropbAuthenticationError,
        );
        await expect(
          client.request(svcName, "secured", {}, { Authorization: "Bearer bad" }),
        ).rejects.toBeInstanceOf(NuropbAuthorizationError);
        await expect(
          client.request(svcName, "authThrows", {}, { Authorization: "x" }),
        ).rejects.toBeInstanceOf(NuropbAuthorizationError);
        expect(calc.runs).toBe(1);
      },
      timeout,
    );

    if (caps.redelivery)
      it(
        "call again: requeued once; the redelivered copy that asks again gets NuropbCallAgainReject",
        async () => {
          expect(await client.request(svcName, "retryOnce")).toBe("second time lucky");
          const e = (await client
            .request(svcName, "alwaysAgain", {}, {}, { traceId: "tr-9" })
            .catch((x: unknown) => x)) as NuropbError;
          expect(e).toBeInstanceOf(NuropbCallAgainReject);
          expect(e.description).toMatch(
            /^Rejecting second call again request for trace_id: tr-9, correlation_id: [0-9a-f]{32}$/,
          );
          expect(calc.runs).toBe(2);
          expect(calc.retryOnceRuns).toBe(2); // the first delivery and its one requeued copy
          if (caps.deadLetter)
            await wait(async () => (await deadLettersSince()) >= 1, "a dead letter");
          await sleep(quietMs);
          expect(settled()).toEqual(["requeue:false", "ack:true", "requeue:false", "reject:true"]);
          if (caps.deadLetter) expect(await deadLettersSince()).toBe(1); // alwaysAgain's second refusal
        },
        timeout,
      );
    else
      it(
        "call again without redelivery: refused at once with NuropbCallAgainReject, never requeued",
        async () => {
          // Core cannot put the message back for a second try, so the first call-again is final.
          const first = await client.request(svcName, "retryOnce").catch((x: unknown) => x);
          expect(first).toBeInstanceOf(NuropbCallAgainReject);
          expect(calc.retryOnceRuns).toBe(1);
          const e = (await client
            .request(svcName, "alwaysAgain", {}, {}, { traceId: "tr-9" })
            .catch((x: unknown) => x)) as NuropbError;
          expect(e).toBeInstanceOf(NuropbCallAgainReject);
          expect(e.description).toMatch(
            /^Rejecting second call again request for trace_id: tr-9, correlation_id: [0-9a-f]{32}$/,
          );
          expect(calc.runs).toBe(1);
          if (caps.deadLetter)
            await wait(async () => (await deadLettersSince()) >= 2, "dead letters");
          await sleep(quietMs);
          expect(settled()).toEqual(["reject:false", "reject:false"]);
          expect(calc.retryOnceRuns + calc.runs).toBe(2);
          if (caps.deadLetter) expect(await deadLettersSince()).toBe(2);
        },
        timeout,
      );

    it(
      "delivers events by AMQP topic patterns",
      async () => {
        await client.publishEvent(
          `${svcName}.reset`,
          { why: "test" },
          { c: 1 },
          { traceId: "ev-1" },
        );
        await client.publishEvent(`${svcName}-orders`, { n: 0 });
        await client.publishEvent(`${svcName}-orders.created.eu`, { n: 1 });
        await client.publishEvent(`${svcName}.reset.deep`, { n: 2 });
        await client.publishEvent(`${svcName}-other`, { n: 3 });
        await wait(() => calc.events.length >= 3, "three events");
        await sleep(quietMs);
        expect(calc.events.map((e) => e.topic).sort()).toEqual(
          [`${svcName}.reset`, `${svcName}-orders`, `${svcName}-orders.created.eu`].sort(),
        );
        expect(calc.events.find((e) => e.topic === `${svcName}.reset`)).toEqual({
          topic: `${svcName}.reset`,
          event: { why: "test" },
          target: null,
          context: { c: 1 },
          traceId: "ev-1",
        });
      },
      timeout,
    );

    it(
      "publishes ctx events after a successful response only, with the request's ids",
      async () => {
        const seen: InboundFrame[] = [];
        const tap = await transport();
        await tap.connect();
        const l = await tap.consumeService(
          {
            service: `tap-${newId().slice(0, 12)}`,
            rpcBindings: [],
            eventBindings: [`${calc.prefix}.#`],
            prefetch: 0,
          },
          async (d) => {
            seen.push(d);
            await d.ack();
          },
        );
        closers.push(() => l.stop());
        const r = await client.request(
          svcName,
          "withEvent",
          { n: 4 },
          { who: "x" },
          { rpcResponse: false, traceId: "tr-ev" },
        );
        await wait(() => seen.length >= 1, "the event");
        expect(decodeFrame(seen[0] as InboundFrame).payload).toEqual({
          tag: "event",
          topic: `${calc.prefix}.added`,
          event: { n: 4 },
          context: { who: "x" },
          trace_id: "tr-ev",
          correlation_id: r.correlation_id,
          target: ["someone"],
        });
        await expect(client.request(svcName, "withEventThenFail")).rejects.toBeInstanceOf(
          NuropbError,
        );
        expect(await client.request(svcName, "succeed")).toEqual({ ok: true });
        await wait(() => seen.length >= 2, "the second event");
        await sleep(quietMs);
        expect(seen.map((f) => (decodeFrame(f).payload as { topic: string }).topic)).toEqual([
          `${calc.prefix}.added`,
          `${calc.prefix}.succeeded`,
        ]);
      },
      timeout,
    );

    it(
      "middleware on both sides run as onions across the wire: headers both ways, events, claims for the method's middleware",
      async () => {
        const trail: string[] = [];
        const name = `mw-${svcName}`;
        const instance = new Greeter(trail);
        const withMw = createService({
          transport: recordingSettlements(await transport(), settlements),
          name,
          instance,
          eventBindings: [`${name}.*`],
          middleware: [
            async (call, next) => {
              trail.push(`s>${String(call.headers["x-tenant"])}`);
              call.state.trail = trail;
              call.context = { ...call.context, tenant: call.headers["x-tenant"] };
              if (call.kind === "request") call.responseHeaders.set("x-served-by", name);
              try {
                return await next();
              } finally {
                trail.push("<s");
              }
            },
          ],
        });
        let servedBy: unknown;
        const c = createClient({
          transport: await transport(),
          defaultTtlMs: 5000,
          middleware: [
            async (call, next) => {
              trail.push(`c>${call.kind}`);
              call.headers.set("x-tenant", "acme");
              try {
                return await next();
              } finally {
                if (call.kind === "request") servedBy = call.response?.headers["x-served-by"];
                trail.push("<c");
              }
            },
          ],
        });
        await withMw.connect();
        await c.connect();
        closers.push(
          () => c.disconnect(),
          () => withMw.disconnect(),
        );
        expect(
          await c.request(name, "hello", { name: "ada" }, { Authorization: "Bearer mw" }),
        ).toEqual({ hello: "ada", tenant: "acme" });
        expect(servedBy).toBe(name);
        expect(trail).toEqual([
          "c>request",
          "s>acme",
          'method:{"user":"mw"}',
          "handler",
          "<s",
          "<c",
        ]);
        trail.length = 0;
        await c.publishEvent(`${name}.greeted`, { who: "ada" });
        await wait(() => instance.events.length === 1, "the event");
        await wait(() => trail.includes("<s"), "the event's middleware");
        // The publisher's send may resolve before or after the subscriber has the event.
        expect(trail.filter((x) => x !== "<c")).toEqual(["c>event", "s>acme", "event", "<s"]);
        expect(trail.filter((x) => x === "<c")).toHaveLength(1);
      },
      timeout,
    );

    it(
      caps.deadLetter
        ? "a service middleware that refuses: the typed error is answered, the handler never runs, the message is dead-lettered once"
        : "a service middleware that refuses: the typed error is answered, the handler never runs, the message is rejected once",
      async () => {
        const trail: string[] = [];
        const name = `refuse-${svcName}`;
        const refusing = createService({
          transport: recordingSettlements(await transport(), settlements),
          name,
          instance: new Greeter(trail),
          middleware: [
            async () => {
              throw new NuropbAuthorizationError("tenant suspended");
            },
          ],
        });
        await refusing.connect();
        closers.push(() => refusing.disconnect());
        const e = (await client
          .request(name, "hello", { name: "x" }, { Authorization: "Bearer mw" })
          .catch((x: unknown) => x)) as NuropbError;
        expect(e).toBeInstanceOf(NuropbAuthorizationError);
        expect(e.description).toBe("tenant suspended");
        if (caps.deadLetter)
          await wait(async () => (await deadLettersSince()) >= 1, "a dead letter");
        await sleep(quietMs);
        expect(trail).toEqual([]);
        expect(settled()).toEqual(["reject:false"]);
        if (caps.deadLetter) expect(await deadLettersSince()).toBe(1);
      },
      timeout,
    );

    it(
      "the lifecycle hook reports a request's transitions on both sides, in order",
      async () => {
        const seen: LifecycleTransition[] = [];
        const name = `hook-${svcName}`;
        const hooked = createService({
          transport: await transport(),
          name,
          instance: new Greeter([]),
          onLifecycle: (t) => seen.push(t),
        });
        const c = createClient({ transport: await transport(), onLifecycle: (t) => seen.push(t) });
        await hooked.connect();
        await c.connect();
        closers.push(
          () => c.disconnect(),
          () => hooked.disconnect(),
        );
        await c.request(name, "hello", { name: "ada" }, { Authorization: "Bearer mw" });
        await wait(() => seen.some((t) => t.state === "service-reply"), "the service's reply");
        await wait(() => seen.some((t) => t.state === "client-end"), "the client's end");
        const side = (prefix: string): string[] =>
          seen.filter((t) => t.state.startsWith(prefix)).map((t) => t.state);
        expect(side("client-")).toEqual([
          "client-start",
          "client-encode",
          "client-send",
          "client-receive",
          "client-decode",
          "client-handle",
          "client-ack",
          "client-end",
        ]);
        expect(side("service-")).toEqual([
          "service-receive",
          "service-decode",
          "service-handle",
          "service-ack",
          "service-encode",
          "service-reply",
        ]);
        expect(new Set(seen.map((t) => t.correlationId)).size).toBe(1);
      },
      timeout,
    );

    it(
      "ctx.request carries trace id and context along",
      async () => {
        const echo = createService({
          transport: await transport(),
          name: calc.echoName,
          instance: new Echo(),
        });
        await echo.connect();
        closers.push(() => echo.disconnect());
        expect(
          await client.request(
            svcName,
            "callOther",
            {},
            { Authorization: "Bearer t" },
            { traceId: "trace-42" },
          ),
        ).toEqual({
          traceId: "trace-42",
          context: { Authorization: "Bearer t" },
        });
      },
      timeout,
    );

    if (caps.notDelivered)
      it(
        "a call to a service that is not there: NuropbNotDeliveredError (request and command)",
        async () => {
          const ghost = `ghost-${newId()}`;
          const e = (await client.request(ghost, "x").catch((x: unknown) => x)) as NuropbError;
          expect(e).toBeInstanceOf(NuropbNotDeliveredError);
          expect(e.description).toBe(`Service ${ghost} not available. unable to call method x`);
          await expect(client.command(ghost, "x")).rejects.toBeInstanceOf(NuropbNotDeliveredError);
        },
        timeout,
      );
    else
      it(
        "a call to a service that is not there: NuropbTimeoutError at its ttl (no notDelivered); a command is sent",
        async () => {
          // Nothing tells the sender that nobody consumes: the request ends at its ttl.
          const ghost = `ghost-${newId()}`;
          const e = (await client
            .request(ghost, "x", {}, {}, { ttlMs: 300 })
            .catch((x: unknown) => x)) as NuropbError;
          expect(e).toBeInstanceOf(NuropbTimeoutError);
          expect(e.retryable).toBe(true);
          expect(e.description).toBe(`no response from ${ghost}.x within 300 ms`);
          await expect(client.command(ghost, "x")).resolves.toBeUndefined();
        },
        timeout,
      );

    it(
      "times out with a retryable NuropbTimeoutError when nobody consumes",
      async () => {
        const t = await transport();
        await t.connect();
        const sleepy = `sleepy-${newId().slice(0, 12)}`;
        const l = await t.consumeService(
          { service: sleepy, rpcBindings: [], eventBindings: [], prefetch: 1 },
          () => {},
        );
        await l.stop();
        const e = (await client
          .request(sleepy, "x", {}, {}, { ttlMs: 300 })
          .catch((x: unknown) => x)) as NuropbError;
        expect(e).toBeInstanceOf(NuropbTimeoutError);
        expect(e.retryable).toBe(true);
      },
      timeout,
    );

    it(
      "completes on the first response; ignores duplicates, late and unknown ones",
      async () => {
        const raw = await transport();
        await raw.connect();
        const pylike = `pylike-${newId().slice(0, 12)}`;
        const l = await raw.consumeService(
          { service: pylike, rpcBindings: [], eventBindings: [], prefetch: 0 },
          async (d) => {
            await d.ack();
            const req = decodeFrame(d);
            const respond = (result: unknown, error: ResponsePayload["error"]): Promise<void> =>
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
            if ((req.payload as { method: string }).method === "late") {
              await sleep(400);
              await respond("too late", null);
              return;
            }
            await respond(null, { error: "NuropbValidationError", description: "first" });
            await respond("second", null);
          },
        );
        closers.push(() => l.stop());
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
        const e = (await client.request(pylike, "twice").catch((x: unknown) => x)) as NuropbError;
        expect(e).toBeInstanceOf(NuropbValidationError);
        expect(e.description).toBe("first");
        await expect(client.request(pylike, "late", {}, {}, { ttlMs: 150 })).rejects.toBeInstanceOf(
          NuropbTimeoutError,
        );
        await sleep(400);
        expect(await client.request(svcName, "add", { a: 1, b: 1 })).toBe(2);
      },
      timeout,
    );

    it(
      caps.deadLetter
        ? "dead-letters poison messages once, answers them with NuropbMessageError, keeps serving"
        : "rejects poison messages once (no dead letters), answers them with NuropbMessageError, keeps serving",
      async () => {
        const raw = await transport();
        await raw.connect();
        const address = `nuropb-raw-${newId()}-rq`;
        const replies: InboundFrame[] = [];
        const l = await raw.consumeResponses({ address }, (f) => replies.push(f));
        closers.push(() => l.stop());
        const enc = new TextEncoder();
        const good = enc.encode(
          JSON.stringify({
            tag: "request",
            service: svcName,
            method: "add",
            params: { a: 1, b: 2 },
            correlation_id: "c0",
            context: {},
            trace_id: null,
          }),
        );
        const poison: Frame[] = [
          {
            headers: buildHeaders("request", "t1"),
            body: enc.encode("{not json"),
            correlationId: newId(),
          },
          {
            headers: { ...buildHeaders("request", "t2"), nuropb_protocol: "0.0.9" },
            body: good,
            correlationId: newId(),
          },
          { headers: {}, body: good, correlationId: newId() },
          {
            headers: { ...buildHeaders("request", "t4"), nuropb_type: "bogus" },
            body: good,
            correlationId: newId(),
          },
          {
            headers: buildHeaders("request", "t5", true),
            body: enc.encode("garbage.garbage"),
            correlationId: newId(),
          },
          {
            headers: buildHeaders("request", "t6"),
            body: enc.encode("[1,2]"),
            correlationId: newId(),
          },
        ];
        for (const p of poison)
          await raw.send(
            { kind: "rpc", service: svcName },
            { ...p, replyTo: address, ttlMs: 10_000 },
          );
        await wait(() => replies.length >= poison.length, "the error replies");
        for (const r of replies)
          expect((decodeFrame(r).payload as ResponsePayload).error?.error).toBe(
            "NuropbMessageError",
          );
        expect(replies.map((r) => r.correlationId).sort()).toEqual(
          poison.map((p) => p.correlationId).sort(),
        );
        if (caps.deadLetter)
          await wait(async () => (await deadLettersSince()) >= poison.length, "the dead letters");
        expect(await client.request(svcName, "add", { a: 20, b: 22 })).toBe(42);
        await sleep(quietMs);
        const ids = new Set(poison.map((p) => p.correlationId));
        expect(settled(ids)).toEqual(poison.map(() => "reject:false"));
        if (caps.deadLetter) expect(await deadLettersSince()).toBe(poison.length);
      },
      timeout,
    );

    it(
      "describes itself",
      async () => {
        const d = await client.describeService(svcName);
        expect(d.service_name).toBe(svcName);
        expect(d.encrypted_methods).toBe(true);
        expect(d.public_key).toMatch(/^-----BEGIN PUBLIC KEY-----\n/);
        expect(d.methods.validated?.parameters).toMatchObject({ type: "object", required: ["id"] });
        expect(d.methods.secured?.requires_authorization).toBe(true);
        expect(Object.keys(d.methods)).not.toContain("_private");
        expect(await client.requiresEncryption(svcName, "secretEcho")).toBe(true);
        expect(await client.hasPublicKey(svcName)).toBe(true);
      },
      timeout,
    );

    for (const [suite, cipherThreads] of [
      ["nacl", 0],
      ["rsa-fernet", 0],
      ["nacl", 1],
      ["rsa-fernet", 1],
    ] as const) {
      it(
        `encrypts requests, responses, errors and commands end to end (${suite}${cipherThreads > 0 ? ", client on a cipher thread" : ""})`,
        async () => {
          const sealed = createClient({
            transport: await transport(),
            encryption: { suites: [suite], cipherThreads },
          });
          await sealed.connect();
          closers.push(() => sealed.disconnect());
          const events: InboundFrame[] = [];
          const tap = await transport();
          await tap.connect();
          const l = await tap.consumeService(
            {
              service: `tap-${newId().slice(0, 12)}`,
              rpcBindings: [],
              eventBindings: [`${calc.prefix}.secret-used`],
              prefetch: 0,
            },
            async (d) => {
              events.push(d);
              await d.ack();
            },
          );
          closers.push(() => l.stop());
          expect(
            await sealed.request(svcName, "secretEcho", { card: "4111" }, {}, { encrypted: true }),
          ).toEqual({
            secret: { card: "4111" },
            encrypted: true,
          });
          const e = (await sealed
            .request(svcName, "secretFail", {}, {}, { encrypted: true })
            .catch((x: unknown) => x)) as NuropbError;
          expect(e).toBeInstanceOf(NuropbValidationError);
          expect(e.description).toBe("invalid field: pin");
          await sealed.command(
            svcName,
            "secretRemember",
            { value: `${suite}/${cipherThreads}` },
            {},
            { encrypted: true },
          );
          await wait(
            () => calc.remembered.includes(`${suite}/${cipherThreads}`),
            "the encrypted command",
          );
          await wait(() => events.length >= 1, "the event raised by the encrypted call");
          expect((events[0] as InboundFrame).headers.encrypted).toBe("");
          const refused = await sealed
            .request(svcName, "secretEcho", { card: "1" }, {}, { encrypted: false })
            .catch((x: unknown) => x);
          expect(refused).toBeInstanceOf(NuropbAuthorizationError);
        },
        timeout,
      );
    }

    const disrupt = options.disrupt;
    // Registered only for transports that can be disrupted by the harness (all of ours can).
    if (disrupt !== undefined)
      it(
        "connection loss rejects pending requests with a retryable NuropbTransportError, then recovers",
        async () => {
          const pending = client.request(svcName, "slow", { ms: 2000 });
          await wait(() => calc.slowStarted === 1, "the handler to start");
          const down = disrupt(clientTransport);
          const e = (await pending.catch((x: unknown) => x)) as NuropbError;
          expect(e).toBeInstanceOf(NuropbTransportError);
          expect(e.retryable).toBe(true);
          await down;
          // The service too: a broker that lost its data (a Redis restart) knows the service
          // again only once the service has re-declared itself, which it reports as reconnected.
          await wait(
            () => client.connected && service.connected,
            "the client and the service to reconnect",
          );
          // Until the service has re-declared, NuropbNotDeliveredError is the right answer (a
          // timeout without notDelivered: the request then had nowhere to go).
          let answer: unknown;
          await wait(async () => {
            try {
              const ttl = caps.notDelivered ? {} : { ttlMs: 1000 };
              answer = await client.request(svcName, "add", { a: 1, b: 1 }, {}, ttl);
              return true;
            } catch (err) {
              if (err instanceof NuropbNotDeliveredError) return false;
              if (!caps.notDelivered && err instanceof NuropbTimeoutError) return false;
              throw err;
            }
          }, "a request to succeed again");
          expect(answer).toBe(2);
        },
        timeout,
      );

    it(
      "disconnect drains in-flight handlers: their responses still arrive; then calls are refused",
      async () => {
        const pending = client.request(svcName, "slow", { ms: 150 });
        await wait(() => calc.slowStarted === 1, "the handler to start");
        await service.disconnect();
        expect(await pending).toBe("slow done");
        expect(service.connected).toBe(false);
        await expect(service.request(svcName, "add")).rejects.toBeInstanceOf(
          NuropbConnectionClosedError,
        );
      },
      timeout,
    );

    it(
      "client disconnect rejects its pending requests with NuropbTransportError",
      async () => {
        const pending = client.request(svcName, "slow", { ms: 500 });
        await wait(() => calc.slowStarted === 1, "the handler to start");
        await client.disconnect();
        await expect(pending).rejects.toBeInstanceOf(NuropbTransportError);
      },
      timeout,
    );

    it(
      "refuses a second live instance with the same instance id",
      async () => {
        const again = createService({
          transport: await transport(),
          name: svcName,
          instance: new Calculator(),
          instanceId: service.instanceId,
          keys,
        });
        await expect(again.connect()).rejects.toBeInstanceOf(NuropbTransportError);
      },
      timeout,
    );
  });
}
