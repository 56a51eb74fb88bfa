import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  NuropbCallAgain,
  NuropbError,
  NuropbTimeoutError,
  NuropbValidationError,
  createDeferred,
  decodeFrame,
  encodePayload,
  isNuropbError,
  newId,
  type ErrorPayload,
  type LogFields,
  type Logger,
  type Transport,
  type TransportScheduling,
} from "@nuropb/protocol";
import {
  CALL_LATER_CONTEXT_KEY,
  FailureHeader,
  createService,
  onAnswer,
  onAnswerError,
  type AnswerContext,
  type RequestContext,
  type ServiceMiddleware,
} from "@nuropb/core";
import { createMesh, waitFor } from "./helpers.ts";

/** A logger that keeps every line, children included. */
function captureLogger(): Logger & { lines: { level: string; msg: string; fields: LogFields }[] } {
  const lines: { level: string; msg: string; fields: LogFields }[] = [];
  const make = (bindings: LogFields): Logger => ({
    debug: (msg, f) => lines.push({ level: "debug", msg, fields: { ...bindings, ...f } }),
    info: (msg, f) => lines.push({ level: "info", msg, fields: { ...bindings, ...f } }),
    warn: (msg, f) => lines.push({ level: "warn", msg, fields: { ...bindings, ...f } }),
    error: (msg, f) => lines.push({ level: "error", msg, fields: { ...bindings, ...f } }),
    child: (b) => make({ ...bindings, ...b }),
  });
  return Object.assign(make({}), { lines });
}

/** `t` as seen through a proxy whose `scheduling` is `scheduling`. */
function withScheduling(t: Transport, scheduling: TransportScheduling): Transport {
  return new Proxy(t, {
    get(target, prop) {
      if (prop === "scheduling") return scheduling;
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** `t` whose claims expire 1 ms after they are opened (as after a long outage or a slow callee). */
function shortClaims(t: Transport): Transport {
  const real = t.scheduling as TransportScheduling;
  return withScheduling(t, {
    serviceReplyAddress: (s) => real.serviceReplyAddress(s),
    sendDelayed: (service, frame, delayMs) => real.sendDelayed(service, frame, delayMs),
    openClaim: (k) => real.openClaim(k, 1),
    claim: async (k, taker) => {
      await new Promise((r) => setTimeout(r, 2));
      return real.claim(k, taker);
    },
  });
}

/**
 * `t` whose first claim takes 30 ms to reach the store and later ones none, as when a claim's
 * round trips (a channel and two declares on RabbitMQ) let a later claim overtake it.
 */
function slowFirstClaim(t: Transport): Transport {
  const real = t.scheduling as TransportScheduling;
  let calls = 0;
  return withScheduling(t, {
    serviceReplyAddress: (s) => real.serviceReplyAddress(s),
    sendDelayed: (service, frame, delayMs) => real.sendDelayed(service, frame, delayMs),
    openClaim: (k, ttl) => real.openClaim(k, ttl),
    claim: async (k, taker) => {
      if (calls++ === 0) await new Promise((r) => setTimeout(r, 30));
      return real.claim(k, taker);
    },
  });
}

/** `t` whose claim store fails `failures` times; delayed sends are recorded and sped up to 1 ms. */
function flakyClaims(failures: number): {
  wrap: (t: Transport) => Transport;
  delays: number[];
} {
  const delays: number[] = [];
  let left = failures;
  const wrap = (t: Transport): Transport => {
    const real = t.scheduling as TransportScheduling;
    return withScheduling(t, {
      serviceReplyAddress: (s) => real.serviceReplyAddress(s),
      sendDelayed: (service, frame, delayMs) => {
        if (delayMs >= 1000) delays.push(delayMs);
        return real.sendDelayed(service, frame, delayMs >= 1000 ? 1 : delayMs);
      },
      openClaim: (k, ms) => real.openClaim(k, ms),
      claim: (k, taker) => {
        if (left-- > 0) return Promise.reject(new Error("claim store unavailable"));
        return real.claim(k, taker);
      },
    });
  };
  return { wrap, delays };
}

/** The payments service: `charge` answers when the test releases it (or at once). */
class Payments {
  readonly seen: { params: unknown; context: unknown }[] = [];
  gate: Promise<void> | undefined;
  async charge(params: { amount: number }, ctx: RequestContext): Promise<unknown> {
    this.seen.push({ params, context: ctx.context });
    if (this.gate !== undefined) await this.gate;
    if (params.amount < 0) throw new NuropbValidationError("amount must not be negative");
    return { receipt: `r-${String(params.amount)}` };
  }
}

interface Answer {
  readonly instance: string;
  readonly kind: "result" | "error";
  readonly value: unknown;
  readonly ctx: AnswerContext;
}

/** The orders service: places orders (calling payments later) and records the answers. */
class Orders {
  readonly answers: Answer[] = [];
  failFirst: "call-again" | "throw" | undefined;
  readonly name: string;
  constructor(name: string) {
    this.name = name;
  }

  async place(
    params: { amount: number; deadlineMs?: number },
    ctx: RequestContext,
  ): Promise<string> {
    return ctx.callLater(
      "payments",
      "charge",
      { amount: params.amount },
      {
        state: { orderId: "o-1", amount: params.amount },
        ...(params.deadlineMs === undefined ? {} : { deadlineMs: params.deadlineMs }),
      },
    );
  }

  /** Answers handled so far start here; `hold` keeps them waiting. */
  entered = 0;
  hold: Promise<void> | undefined;

  @onAnswer("payments", "charge")
  async charged(result: unknown, ctx: AnswerContext): Promise<void> {
    this.entered++;
    if (this.hold !== undefined) await this.hold;
    this.#fail(ctx);
    this.answers.push({ instance: this.name, kind: "result", value: result, ctx });
  }

  @onAnswerError("payments", "charge")
  chargeFailed(error: NuropbError, ctx: AnswerContext): void {
    this.answers.push({ instance: this.name, kind: "error", value: error, ctx });
  }

  #fail(ctx: AnswerContext): void {
    if (this.failFirst === "call-again" && !ctx.redelivered) throw new NuropbCallAgain("again");
    if (this.failFirst === "throw") throw new RangeError("handler broke");
  }
}

describe("callLater: answers to the service, not the instance", () => {
  let mesh: ReturnType<typeof createMesh>;
  let payments: Payments;
  beforeEach(async () => {
    mesh = createMesh();
    payments = new Payments();
    const svc = createService({
      name: "payments",
      instance: payments,
      transport: mesh.transport(),
    });
    await svc.connect();
    mesh.defer(() => svc.disconnect());
  });
  afterEach(async () => mesh.cleanup());

  async function orders(name: string, logger?: Logger, wrap?: (t: Transport) => Transport) {
    const instance = new Orders(name);
    const transport = wrap === undefined ? mesh.transport() : wrap(mesh.transport());
    const svc = createService({
      name: "orders",
      instance,
      transport,
      secretContextKeys: ["sessionId"],
      ...(logger === undefined ? {} : { logger }),
    });
    await svc.connect();
    mesh.defer(() => svc.disconnect());
    return { instance, svc, transport };
  }

  it("runs the result handler with the state, trace id, call id and context without credentials", async () => {
    const { instance, svc } = await orders("a");
    const callId = await svc.callLater(
      "payments",
      "charge",
      { amount: 5 },
      {
        state: { orderId: "o-9" },
        traceId: "trace-1",
        context: { Authorization: "Bearer secret", sessionId: "s-1", tenant: "t1" },
      },
    );
    await waitFor(() => instance.answers.length === 1, 2000, "the answer");
    const [answer] = instance.answers;
    expect(answer?.kind).toBe("result");
    expect(answer?.value).toEqual({ receipt: "r-5" });
    expect(answer?.ctx).toMatchObject({
      callId,
      service: "payments",
      method: "charge",
      state: { orderId: "o-9" },
      traceId: "trace-1",
      redelivered: false,
    });
    // Credentials and the reserved record never reach the handler; the rest of the context does.
    expect(answer?.ctx.context).toEqual({ tenant: "t1" });
    // The callee got the caller's whole context, record included (a responder echoes it).
    expect(payments.seen[0]?.context).toMatchObject({
      Authorization: "Bearer secret",
      [CALL_LATER_CONTEXT_KEY]: { service: "payments", method: "charge" },
    });
    expect(mesh.hub.deadLetters()).toEqual([]);
  });

  it("ctx.callLater in a handler carries the handler's trace id and context", async () => {
    const { instance, svc } = await orders("a");
    const client = createService({ name: "shop", instance: {}, transport: mesh.transport() });
    await client.connect();
    mesh.defer(() => client.disconnect());
    const callId = await client.request<string>(
      "orders",
      "place",
      { amount: 3 },
      { tenant: "t2" },
      { traceId: "trace-2" },
    );
    await waitFor(() => instance.answers.length === 1, 2000, "the answer");
    expect(instance.answers[0]?.ctx).toMatchObject({
      callId,
      traceId: "trace-2",
      state: { orderId: "o-1", amount: 3 },
      context: { tenant: "t2" },
    });
    // The answer handlers are not mesh methods.
    await expect(client.request("orders", "charged", {})).rejects.toMatchObject({
      name: "NuropbHandlingError",
    });
    expect(svc.describe().methods).not.toHaveProperty("charged");
  });

  it("runs the error handler when the remote method raises", async () => {
    const { instance, svc } = await orders("a");
    await svc.callLater("payments", "charge", { amount: -1 }, { state: { n: 1 } });
    await waitFor(() => instance.answers.length === 1, 2000, "the answer");
    const [answer] = instance.answers;
    expect(answer?.kind).toBe("error");
    expect(isNuropbError(answer?.value)).toBe(true);
    expect(answer?.value).toMatchObject({
      name: "NuropbValidationError",
      description: "amount must not be negative",
    });
    expect(answer?.ctx.state).toEqual({ n: 1 });
  });

  it("another instance handles the answer when the calling instance closed in between", async () => {
    const gate = createDeferred<void>();
    payments.gate = gate.promise;
    const a = await orders("a");
    const callId = await a.svc.callLater("payments", "charge", { amount: 7 }, { state: { x: 1 } });
    await waitFor(() => payments.seen.length === 1, 2000, "the call to arrive");
    await a.svc.disconnect();
    const b = await orders("b");
    gate.resolve();
    await waitFor(() => b.instance.answers.length === 1, 2000, "the answer");
    expect(a.instance.answers).toEqual([]);
    expect(b.instance.answers[0]).toMatchObject({
      instance: "b",
      kind: "result",
      value: { receipt: "r-7" },
      ctx: { callId, state: { x: 1 } },
    });
  });

  it("redelivers to another instance an answer whose instance died while handling it", async () => {
    const a = await orders("a");
    const stuck = createDeferred<void>();
    a.instance.hold = stuck.promise; // the instance dies first
    const callId = await a.svc.callLater("payments", "charge", { amount: 9 }, { state: "s" });
    await waitFor(() => a.instance.entered === 1, 2000, "the answer to reach instance a");
    const b = await orders("b");
    // Killed: its broker connection closes with the answer unsettled.
    await a.transport.close();
    await waitFor(() => b.instance.answers.length === 1, 2000, "the redelivered answer");
    expect(b.instance.answers[0]).toMatchObject({
      instance: "b",
      value: { receipt: "r-9" },
      ctx: { callId, state: "s", redelivered: true },
    });
    stuck.resolve(); // lets the dead instance's handler end, so it disconnects at once
  });

  it("runs the error handler once at the deadline and dead-letters the late answer", async () => {
    const gate = createDeferred<void>();
    payments.gate = gate.promise;
    const log = captureLogger();
    const { instance, svc } = await orders("a", log);
    const callId = await svc.callLater("payments", "charge", { amount: 2 }, { deadlineMs: 30 });
    await waitFor(() => instance.answers.length === 1, 3000, "the deadline");
    expect(instance.answers[0]?.kind).toBe("error");
    expect(instance.answers[0]?.value).toBeInstanceOf(NuropbTimeoutError);
    expect(instance.answers[0]?.ctx.callId).toBe(callId);
    gate.resolve();
    await waitFor(() => mesh.hub.deadLetters().length === 1, 2000, "the late answer");
    const late = mesh.hub.deadLetters()[0];
    expect(late?.queue).toBe("nuropb-orders-sq");
    expect(decodeFrame(late!.frame).type).toBe("response");
    expect(
      log.lines.some(
        (l) =>
          l.level === "warn" &&
          l.fields.correlationId === callId &&
          String(l.fields.reason).includes("late or duplicate answer"),
      ),
    ).toBe(true);
    expect(instance.answers).toHaveLength(1);
  });

  it("drops the deadline silently when the answer came first", async () => {
    const log = captureLogger();
    const { instance, svc } = await orders("a", log);
    const callId = await svc.callLater("payments", "charge", { amount: 4 }, { deadlineMs: 40 });
    await waitFor(() => instance.answers.length === 1, 2000, "the answer");
    await waitFor(
      () => log.lines.some((l) => l.fields.correlationId === callId && /dropped/.test(l.msg)),
      3000,
      "the deadline to be dropped",
    );
    expect(instance.answers.map((a) => a.kind)).toEqual(["result"]);
    expect(mesh.hub.deadLetters()).toEqual([]);
  });

  it.each([
    ["", (t: Transport): Transport => t],
    [", its claim taken slower than the duplicate's", slowFirstClaim],
  ])(
    "lets one answer per call through: Python's duplicate after an exception is dead-lettered%s",
    async (_name, wrap) => {
      // A raw responder answering as Python NuroPb does when a handler raises (PROTOCOL.md §7.3):
      // the error response, then a second one whose result is the error's text.
      const raw = mesh.transport();
      await raw.connect();
      await raw.consumeService(
        { service: "pyish", rpcBindings: [], eventBindings: [], prefetch: 0 },
        async (d) => {
          await d.ack();
          const req = decodeFrame(d);
          const answer = (result: unknown, error: ErrorPayload | null) =>
            raw.send(
              { kind: "reply", address: d.replyTo as string },
              encodePayload({
                tag: "response",
                result,
                error,
                correlation_id: req.correlationId,
                trace_id: req.traceId,
                context: (req.payload as { context: Record<string, unknown> }).context,
                warning: null,
                reply_to: "",
              }),
            );
          await answer(null, { error: "NuropbException", description: "declined" });
          await answer("declined", null);
        },
      );
      const got: string[] = [];
      const svc = createService({
        name: "dup-caller",
        instance: {
          ok(result: unknown) {
            got.push(`result ${String(result)}`);
          },
          failed(error: NuropbError) {
            got.push(`error ${error.description}`);
          },
        },
        transport: wrap(mesh.transport()),
        answerHandlers: [{ service: "pyish", method: "charge", onResult: "ok", onError: "failed" }],
      });
      await svc.connect();
      mesh.defer(() => svc.disconnect());
      await svc.callLater("pyish", "charge", {});
      await waitFor(() => mesh.hub.deadLetters().length === 1, 2000, "the duplicate dead-lettered");
      expect(got).toEqual(["error declined"]);
    },
  );

  it("dead-letters a response with no handler, with the reason and correlation id logged", async () => {
    const log = captureLogger();
    const { instance } = await orders("a", log);
    const raw = mesh.transport();
    await raw.connect();
    const send = (id: string, context: Record<string, unknown>) =>
      raw.send(
        { kind: "reply", address: raw.scheduling!.serviceReplyAddress("orders") },
        encodePayload({
          tag: "response",
          result: 1,
          error: null,
          correlation_id: id,
          trace_id: "t",
          context,
          warning: null,
          reply_to: "nuropb-orders-sq",
        }),
      );
    const plain = newId();
    const unknown = newId();
    await send(plain, {});
    await send(unknown, { [CALL_LATER_CONTEXT_KEY]: { service: "billing", method: "bill" } });
    await waitFor(() => mesh.hub.deadLetters().length === 2, 2000, "two dead letters");
    const reasons = (id: string) =>
      log.lines
        .filter((l) => l.level === "warn" && l.fields.correlationId === id)
        .map((l) => String(l.fields.reason));
    expect(reasons(plain)).toEqual([expect.stringContaining("answers no asynchronous call")]);
    expect(reasons(unknown)).toEqual([
      expect.stringContaining("no onAnswer handler for the result of billing.bill"),
    ]);
    expect(instance.answers).toEqual([]);
  });

  it("shows redelivered to a handler that asked to be called again", async () => {
    const { instance, svc } = await orders("a");
    instance.failFirst = "call-again";
    await svc.callLater("payments", "charge", { amount: 1 });
    await waitFor(() => instance.answers.length === 1, 2000, "the answer");
    expect(instance.answers[0]?.ctx.redelivered).toBe(true);
  });

  it("dead-letters an answer whose handler throws", async () => {
    const log = captureLogger();
    const { instance, svc } = await orders("a", log);
    instance.failFirst = "throw";
    const callId = await svc.callLater("payments", "charge", { amount: 1 });
    await waitFor(() => mesh.hub.deadLetters().length === 1, 2000, "the dead letter");
    expect(
      log.lines.some(
        (l) => l.fields.correlationId === callId && /answer handler failed/.test(l.msg),
      ),
    ).toBe(true);
  });

  it("takes handlers named in answerHandlers (plain JavaScript)", async () => {
    const got: unknown[] = [];
    const instance = {
      paid(result: unknown, ctx: AnswerContext) {
        got.push({ result, state: ctx.state });
      },
    };
    const svc = createService({
      name: "plain",
      instance,
      transport: mesh.transport(),
      answerHandlers: [{ service: "payments", method: "charge", onResult: "paid" }],
    });
    await svc.connect();
    mesh.defer(() => svc.disconnect());
    await svc.callLater("payments", "charge", { amount: 8 }, { state: "s" });
    await waitFor(() => got.length === 1, 2000, "the answer");
    expect(got).toEqual([{ result: { receipt: "r-8" }, state: "s" }]);
    expect(svc.describe().methods).toEqual({});
  });

  it("throws at once for bad arguments", async () => {
    const { svc } = await orders("a");
    const call = (...args: unknown[]) =>
      (svc.callLater as (...a: unknown[]) => Promise<string>)(...args);
    await expect(call("", "charge")).rejects.toThrow(TypeError);
    await expect(call("payments", "")).rejects.toThrow(/method/);
    await expect(call("payments", "charge", [])).rejects.toThrow(/params/);
    await expect(call("payments", "charge", {}, { state: "x".repeat(5000) })).rejects.toThrow(
      /state is \d+ bytes/,
    );
    await expect(call("payments", "charge", {}, { state: 10n })).rejects.toThrow(/state/);
    await expect(call("payments", "charge", {}, { deadlineMs: -1 })).rejects.toThrow(/deadlineMs/);
    await expect(call("payments", "charge", {}, { deadlin: 5 })).rejects.toThrow(
      /unknown option 'deadlin'/,
    );
    await expect(call("payments", "charge", {}, { context: "x" })).rejects.toThrow(/context/);
    expect(payments.seen).toEqual([]);
    expect(() => onAnswer("", "x")).toThrow(TypeError);
    expect(() =>
      createService({
        name: "bad",
        instance: {},
        transport: mesh.transport(),
        answerHandlers: [{ service: "payments", method: "charge", onResult: "missing" }],
      }),
    ).toThrow(/onResult names no method/);
  });

  it("throws a clear TypeError on a transport without scheduling", async () => {
    const t = mesh.transport();
    // The same transport, its scheduling hidden (as a third-party transport without it).
    const bare = new Proxy(t, {
      get: (target, prop) => {
        if (prop === "scheduling") return undefined;
        const v = Reflect.get(target, prop, target) as unknown;
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    }) as Transport;
    const svc = createService({ name: "orders", instance: new Orders("x"), transport: bare });
    await svc.connect();
    mesh.defer(() => svc.disconnect());
    await expect(svc.callLater("payments", "charge", { amount: 1 })).rejects.toThrow(
      /callLater needs a transport with the scheduling capability/,
    );
    expect(payments.seen).toEqual([]);
  });

  it("handles an answer whose claim expired when the call has no deadline (at least once)", async () => {
    const log = captureLogger();
    const { instance, svc } = await orders("a", log, shortClaims);
    const callId = await svc.callLater("payments", "charge", { amount: 6 }, { state: "late" });
    await waitFor(() => instance.answers.length === 1, 2000, "the answer");
    expect(instance.answers[0]).toMatchObject({ kind: "result", ctx: { callId, state: "late" } });
    expect(mesh.hub.deadLetters()).toEqual([]);
  });

  it("handles an answer whose claim expired before its deadline, dead-letters it after", async () => {
    const log = captureLogger();
    const { instance, svc } = await orders("a", log, shortClaims);
    await svc.callLater("payments", "charge", { amount: 6 }, { deadlineMs: 60_000 });
    await waitFor(() => instance.answers.length === 1, 2000, "the answer");
    expect(instance.answers[0]?.kind).toBe("result");

    const gate = createDeferred<void>();
    payments.gate = gate.promise;
    const late = await svc.callLater("payments", "charge", { amount: 7 }, { deadlineMs: 30 });
    // The deadline finds its claim expired: dropped, not run.
    await waitFor(
      () => log.lines.some((l) => l.fields.correlationId === late && /dropped/.test(l.msg)),
      3000,
      "the deadline to be dropped",
    );
    gate.resolve();
    await waitFor(() => mesh.hub.deadLetters().length === 1, 2000, "the late answer");
    expect(
      log.lines.some(
        (l) =>
          l.fields.correlationId === late && /deadline has passed/.test(String(l.fields.reason)),
      ),
    ).toBe(true);
    expect(instance.answers).toHaveLength(1);
  });

  it("dead-letters a forged or garbled answer whose record has no claim, with the reason", async () => {
    const log = captureLogger();
    const { instance } = await orders("a", log);
    const raw = mesh.transport();
    await raw.connect();
    const id = newId();
    await raw.send(
      { kind: "reply", address: raw.scheduling!.serviceReplyAddress("orders") },
      encodePayload({
        tag: "response",
        result: { receipt: "forged" },
        error: null,
        correlation_id: id,
        trace_id: "t",
        context: { [CALL_LATER_CONTEXT_KEY]: { service: "payments", method: "charge" } },
        warning: null,
        reply_to: "",
      }),
    );
    await waitFor(() => mesh.hub.deadLetters().length === 1, 2000, "the dead letter");
    expect(
      log.lines.some(
        (l) => l.fields.correlationId === id && /has no claim/.test(String(l.fields.reason)),
      ),
    ).toBe(true);
    expect(instance.answers).toEqual([]);
  });

  it("tries a failing claim again later (1 s, 5 s, 30 s) instead of burning the one requeue", async () => {
    const flaky = flakyClaims(2);
    const { instance, svc } = await orders("a", undefined, flaky.wrap);
    const callId = await svc.callLater("payments", "charge", { amount: 3 });
    await waitFor(() => instance.answers.length === 1, 3000, "the answer");
    expect(instance.answers[0]?.ctx.callId).toBe(callId);
    expect(flaky.delays).toEqual([1000, 5000]);
    expect(mesh.hub.deadLetters()).toEqual([]);
  });

  it("dead-letters an answer with the reason once its claim retries are spent", async () => {
    const log = captureLogger();
    const flaky = flakyClaims(Number.POSITIVE_INFINITY);
    const { instance, svc } = await orders("a", log, flaky.wrap);
    const callId = await svc.callLater("payments", "charge", { amount: 3 });
    await waitFor(() => mesh.hub.deadLetters().length === 1, 3000, "the dead letter");
    expect(flaky.delays).toEqual([1000, 5000, 30000]);
    expect(
      log.lines.some(
        (l) =>
          l.fields.correlationId === callId &&
          /claim could not be taken \(3 retries\): claim store unavailable/.test(
            String(l.fields.reason),
          ),
      ),
    ).toBe(true);
    expect(instance.answers).toEqual([]);
  });

  it("routes a throwing answer handler through the service's failurePolicy", async () => {
    let runs = 0;
    const got: unknown[] = [];
    const svc = createService({
      name: "retrying",
      instance: {
        paid(result: unknown) {
          runs++;
          if (runs < 3) throw new NuropbError("ledger busy", { retryable: true });
          got.push(result);
        },
      },
      transport: mesh.transport(),
      answerHandlers: [{ service: "payments", method: "charge", onResult: "paid" }],
      failurePolicy: { immediateRetries: 1, delays: [10] },
    });
    await svc.connect();
    mesh.defer(() => svc.disconnect());
    await svc.callLater("payments", "charge", { amount: 4 });
    await waitFor(() => got.length === 1, 3000, "the answer handled on its delayed copy");
    expect(runs).toBe(3);
    expect(got).toEqual([{ receipt: "r-4" }]);
    expect(mesh.hub.deadLetters()).toEqual([]);
  });

  it("dead-letters with the failure record once the failurePolicy is spent", async () => {
    const svc = createService({
      name: "spent",
      instance: {
        paid() {
          throw new NuropbError("ledger down", { retryable: true });
        },
      },
      transport: mesh.transport(),
      answerHandlers: [{ service: "payments", method: "charge", onResult: "paid" }],
      failurePolicy: { immediateRetries: 1 },
    });
    await svc.connect();
    mesh.defer(() => svc.disconnect());
    await svc.callLater("payments", "charge", { amount: 4 });
    await waitFor(() => mesh.hub.deadLetters().length === 1, 3000, "the dead letter");
    expect(mesh.hub.deadLetters()[0]?.frame.headers).toMatchObject({
      [FailureHeader.method]: "handleAnswer",
      [FailureHeader.attempts]: "2",
    });
  });

  it("runs the service's middleware around answer handlers: result, error and deadline", async () => {
    const seen: Record<string, unknown>[] = [];
    const trail: string[] = [];
    const instance = new Orders("a");
    const middleware: ServiceMiddleware = async (call, next) => {
      if (call.kind !== "answer") return next();
      const { headers: _h, state: _s, ...fields } = call;
      seen.push(fields);
      call.context = { ...call.context, audited: "yes" };
      trail.push(`before: ${String(instance.entered)} handled`);
      const out = await next();
      trail.push(`after: ${String(instance.entered)} handled`);
      return out;
    };
    const svc = createService({
      name: "orders",
      instance,
      transport: mesh.transport(),
      secretContextKeys: ["sessionId"],
      middleware: [middleware],
    });
    await svc.connect();
    mesh.defer(() => svc.disconnect());
    const callId = await svc.callLater(
      "payments",
      "charge",
      { amount: 5 },
      { state: { orderId: "o-5" }, traceId: "t-5", context: { sessionId: "s", tenant: "t1" } },
    );
    await waitFor(() => instance.answers.length === 1, 2000, "the result");
    expect(trail).toEqual(["before: 0 handled", "after: 1 handled"]);
    expect(seen[0]).toEqual({
      kind: "answer",
      service: "orders",
      method: "handleAnswer",
      calledService: "payments",
      calledMethod: "charge",
      answer: "result",
      result: { receipt: "r-5" },
      error: undefined,
      callState: { orderId: "o-5" },
      userClaims: undefined,
      context: { tenant: "t1" },
      traceId: "t-5",
      correlationId: callId,
      encrypted: false,
      redelivered: false,
      bodyBytes: expect.any(Number) as number,
    });
    // What the middleware put in the context is what the handler sees.
    expect(instance.answers[0]?.ctx.context).toEqual({ tenant: "t1", audited: "yes" });

    await svc.callLater("payments", "charge", { amount: -1 });
    await waitFor(() => instance.answers.length === 2, 2000, "the error");
    expect(seen[1]).toMatchObject({ answer: "error", result: undefined });
    expect(seen[1]?.error).toMatchObject({ name: "NuropbValidationError" });

    const gate = createDeferred<void>();
    payments.gate = gate.promise;
    await svc.callLater("payments", "charge", { amount: 2 }, { deadlineMs: 30 });
    await waitFor(() => instance.answers.length === 3, 3000, "the deadline");
    expect(seen[2]).toMatchObject({ answer: "deadline" });
    expect(seen[2]?.error).toBeInstanceOf(NuropbTimeoutError);
    gate.resolve();
    await waitFor(() => mesh.hub.deadLetters().length === 1, 2000, "the late answer");
    expect(seen).toHaveLength(3); // the late answer is dead-lettered before any middleware
  });

  it("treats a middleware's refusal of an answer as a throwing handler", async () => {
    let refusals = 0;
    const refuse: ServiceMiddleware = (call, next) => {
      if (call.kind !== "answer") return next();
      refusals++;
      throw new NuropbError("audit store down", { retryable: true });
    };
    const handled: unknown[] = [];
    const svc = createService({
      name: "refused",
      instance: {
        paid(result: unknown) {
          handled.push(result);
        },
      },
      transport: mesh.transport(),
      answerHandlers: [{ service: "payments", method: "charge", onResult: "paid" }],
      middleware: [refuse],
      failurePolicy: { immediateRetries: 1 },
    });
    await svc.connect();
    mesh.defer(() => svc.disconnect());
    await svc.callLater("payments", "charge", { amount: 4 });
    await waitFor(() => mesh.hub.deadLetters().length === 1, 3000, "the dead letter");
    expect(handled).toEqual([]);
    expect(refusals).toBe(2);
    expect(mesh.hub.deadLetters()[0]?.frame.headers).toMatchObject({
      [FailureHeader.method]: "handleAnswer",
      [FailureHeader.attempts]: "2",
    });
  });

  it("dead-letters a sealed or undecodable response without answering it", async () => {
    await orders("a");
    const raw = mesh.transport();
    await raw.connect();
    const replies: string[] = [];
    const address = `reply-${newId()}`;
    await raw.consumeResponses({ address }, (f) => void replies.push(f.correlationId));
    const queue = raw.scheduling!.serviceReplyAddress("orders");
    const garbled = (type: string, id: string) =>
      raw.send(
        { kind: "reply", address: queue },
        {
          headers: { nuropb_protocol: "0.1.1", nuropb_type: type, trace_id: "t", encrypted: "yes" },
          body: new TextEncoder().encode("not json"),
          correlationId: id,
          replyTo: address,
        },
      );
    const response = newId();
    const request = newId();
    await garbled("response", response);
    await garbled("request", request); // answered: it comes after the response
    await waitFor(() => replies.includes(request), 2000, "the request's error response");
    await waitFor(() => mesh.hub.deadLetters().length === 2, 2000, "both dead-lettered");
    expect(replies).toEqual([request]);
  });
});
