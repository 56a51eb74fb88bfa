import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  NuropbCallAgain,
  NuropbTimeoutError,
  NuropbValidationError,
  encodePayload,
  isNuropbError,
  newId,
  schedulingOf,
  type LogFields,
  type Logger,
  type NuropbError,
  type Transport,
  type TransportScheduling,
} from "@nuropb/protocol";
import {
  CALL_LATER_CONTEXT_KEY,
  createService,
  type AnswerContext,
  type MeshService,
  type RequestContext,
} from "@nuropb/core";
import { createCollector, uniqueName, waitFor, type Collector } from "./helpers.ts";

/** Options of {@link describeCallLaterConformance}. */
export interface CallLaterConformanceOptions {
  /** Shown in the test names. */
  readonly name: string;
  /** A fresh, unconnected transport on the same mesh each call. */
  readonly create: () => Transport | Promise<Transport>;
  /**
   * How many messages the mesh has dead-lettered so far (called before and after a scenario).
   * Without it, dead letters are seen only through the service's log.
   */
  readonly deadLetterCount?: () => number | Promise<number>;
  /** Per-test timeout in ms; each wait inside a test gets half. @defaultValue 20000 */
  readonly timeoutMs?: number;
  /**
   * The deadline given to the deadline scenarios, in ms: longer than the transport's round trip,
   * and no shorter than its delay granularity. @defaultValue 500
   */
  readonly deadlineMs?: number;
  /**
   * Whether the transport offers `scheduling`. True: a transport without it fails every case
   * (it would otherwise pass them silently). False: the suite checks only that `callLater`
   * throws at once. @defaultValue true
   */
  readonly scheduling?: boolean;
}

/** One log line of a service under test. */
interface Line {
  readonly level: string;
  readonly msg: string;
  readonly fields: LogFields;
}

function collectingLogger(lines: Line[], bindings: LogFields = {}): Logger {
  const at =
    (level: string) =>
    (msg: string, fields?: LogFields): void => {
      lines.push({ level, msg, fields: { ...bindings, ...fields } });
    };
  return {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: (b) => collectingLogger(lines, { ...bindings, ...b }),
  };
}

/** The callee: answers `charge`, after `gate` when one is set. */
class Payments {
  readonly calls: unknown[] = [];
  gate: Promise<void> | undefined;
  async charge(params: { amount: number }, ctx: RequestContext): Promise<unknown> {
    this.calls.push(ctx.context);
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

/**
 * The caller, whose answer handlers record what they get (into a collector shared by its
 * instances). They are declared with `answerHandlers` for the test's payments service, whose
 * name is unique per test.
 */
class Orders {
  againOnce = false;
  readonly name: string;
  readonly answers: Collector<Answer>;
  constructor(name: string, answers: Collector<Answer>) {
    this.name = name;
    this.answers = answers;
  }

  charged(result: unknown, ctx: AnswerContext): void {
    if (this.againOnce && !ctx.redelivered) throw new NuropbCallAgain("once more");
    this.answers.push({ instance: this.name, kind: "result", value: result, ctx });
  }

  chargeFailed(error: NuropbError, ctx: AnswerContext): void {
    this.answers.push({ instance: this.name, kind: "error", value: error, ctx });
  }
}

/**
 * Runs the asynchronous-call scenarios of `@nuropb/core` (`callLater`, `onAnswer`,
 * `onAnswerError`) over a transport: the answer reaches the calling *service* (another instance
 * when the caller has gone), errors and deadlines reach the error handler once, late and
 * unhandled or forged (claim-less) answers are dead-lettered. A transport declared without
 * `scheduling` (`scheduling: false`) must make `callLater` throw at once; that is all the suite
 * checks of it.
 * @example
 * ```ts
 * describeCallLaterConformance({ name: "memory", create: () => createMemoryTransport({ hub }) });
 * ```
 */
export function describeCallLaterConformance(options: CallLaterConformanceOptions): void {
  checkOptions(options);
  const timeoutMs = options.timeoutMs ?? 20_000;
  const wait = timeoutMs / 2;
  const deadlineMs = options.deadlineMs ?? 500;
  const schedulingExpected = options.scheduling ?? true;
  /** The transport's scheduling; undefined (the case is moot) only when none is expected. */
  const schedulingOfTransport = (t: Transport): TransportScheduling | undefined => {
    const s = schedulingOf(t);
    if (s === undefined && schedulingExpected) {
      throw new Error(
        `the ${t.kind} transport has no scheduling; pass scheduling: false if that is intended`,
      );
    }
    if (s !== undefined && !schedulingExpected) {
      throw new Error(`the ${t.kind} transport has scheduling, but scheduling: false was given`);
    }
    return s;
  };

  describe(`call-later conformance: ${options.name}`, { timeout: timeoutMs }, () => {
    let closers: (() => Promise<void>)[] = [];
    /** "payments" and "orders", unique per test. */
    let names: { payments: string; orders: string };
    let payments: Payments;
    let answers: Collector<Answer>;
    let lines: Line[];

    const transport = async (): Promise<Transport> => {
      const t = await options.create();
      closers.push(() => t.close());
      return t;
    };
    /** A service, disconnected at the end of the test (before its transport closes). */
    const start = async <T extends object>(
      instance: T,
      extra: {
        name: string;
        answerHandlers?: { service: string; method: string; onResult: string; onError: string }[];
      },
    ): Promise<MeshService<T>> => {
      const svc = createService({
        instance,
        transport: await transport(),
        logger: collectingLogger(lines),
        ...extra,
      });
      await svc.connect();
      closers.push(() => svc.disconnect());
      return svc;
    };
    const orders = (label: string): Promise<MeshService<Orders>> =>
      start(new Orders(label, answers), {
        name: names.orders,
        answerHandlers: [
          {
            service: names.payments,
            method: "charge",
            onResult: "charged",
            onError: "chargeFailed",
          },
        ],
      });
    const startPayments = async (): Promise<void> => {
      await start(payments, { name: names.payments });
    };
    const callPayments = (
      svc: MeshService<Orders>,
      amount: number,
      extra: Record<string, unknown> = {},
    ): Promise<string> => svc.callLater(names.payments, "charge", { amount }, extra);
    const deadLetters = async (): Promise<number | undefined> =>
      options.deadLetterCount === undefined ? undefined : await options.deadLetterCount();

    beforeEach(() => {
      closers = [];
      lines = [];
      const id = uniqueName();
      names = { payments: `payments-${id}`, orders: `orders-${id}` };
      answers = createCollector<Answer>("answers");
      payments = new Payments();
    });
    afterEach(async () => {
      for (const close of closers.reverse()) await close().catch(() => undefined);
    });

    it("throws at once without scheduling, or answers to the service", async () => {
      await startPayments();
      const svc = await orders("a");
      const t = await transport();
      if (schedulingOfTransport(t) === undefined) {
        await expect(callPayments(svc, 1)).rejects.toThrow(TypeError);
        return;
      }
      const callId = await callPayments(svc, 5, {
        state: { orderId: "o-1" },
        context: { Authorization: "Bearer secret", tenant: "t1" },
        traceId: "trace-cl",
      });
      const [answer] = await answers.waitForCount(1, wait);
      expect(answer).toMatchObject({
        kind: "result",
        value: { receipt: "r-5" },
        ctx: {
          callId,
          state: { orderId: "o-1" },
          traceId: "trace-cl",
          context: { tenant: "t1" },
          redelivered: false,
        },
      });
      expect(answer?.ctx.context).not.toHaveProperty("Authorization");
    });

    it("runs the error handler with the remote error", async () => {
      const t = await transport();
      if (schedulingOfTransport(t) === undefined) return;
      await startPayments();
      const svc = await orders("a");
      await callPayments(svc, -1, { state: 7 });
      const [answer] = await answers.waitForCount(1, wait);
      expect(answer?.kind).toBe("error");
      expect(isNuropbError(answer?.value)).toBe(true);
      expect(answer?.value).toMatchObject({ name: "NuropbValidationError" });
      expect(answer?.ctx.state).toBe(7);
    });

    it("another instance handles the answer after the caller's instance closed", async () => {
      const t = await transport();
      if (schedulingOfTransport(t) === undefined) return;
      let release!: () => void;
      payments.gate = new Promise<void>((r) => (release = r));
      await startPayments();
      const a = await orders("a");
      const callId = await callPayments(a, 3, { state: { step: 1 } });
      await waitFor(() => payments.calls.length === 1, wait, "the call to arrive");
      await a.disconnect();
      await orders("b");
      release();
      const [answer] = await answers.waitForCount(1, wait);
      expect(answer).toMatchObject({ instance: "b", kind: "result", ctx: { callId } });
    });

    it("runs the error handler once at the deadline; the late answer is dead-lettered", async () => {
      const t = await transport();
      if (schedulingOfTransport(t) === undefined) return;
      let release!: () => void;
      payments.gate = new Promise<void>((r) => (release = r));
      await startPayments();
      const svc = await orders("a");
      const before = await deadLetters();
      const callId = await callPayments(svc, 2, { deadlineMs });
      const [fired] = await answers.waitForCount(1, wait);
      expect(fired?.kind).toBe("error");
      expect(fired?.value).toBeInstanceOf(NuropbTimeoutError);
      release();
      await waitFor(
        () =>
          lines.some(
            (l) =>
              l.fields.correlationId === callId &&
              /late or duplicate answer/.test(String(l.fields.reason)),
          ),
        wait,
        "the late answer to be dead-lettered",
      );
      if (before !== undefined && t.capabilities.deadLetter) {
        await waitFor(async () => (await deadLetters())! > before, wait, "a dead letter");
      }
      expect(answers.items).toHaveLength(1);
    });

    it("drops the deadline when the answer came first", async () => {
      const t = await transport();
      if (schedulingOfTransport(t) === undefined) return;
      await startPayments();
      const svc = await orders("a");
      const callId = await callPayments(svc, 4, { deadlineMs });
      await answers.waitForCount(1, wait);
      await waitFor(
        () => lines.some((l) => l.fields.correlationId === callId && /dropped/.test(l.msg)),
        wait,
        "the deadline to be dropped",
      );
      expect(answers.items.map((a) => a.kind)).toEqual(["result"]);
    });

    it("dead-letters a response on the service queue that no handler takes", async () => {
      const t = await transport();
      const scheduling = schedulingOfTransport(t);
      if (scheduling === undefined) return;
      await orders("a");
      await t.connect();
      const before = await deadLetters();
      const id = newId();
      await t.send(
        { kind: "reply", address: scheduling.serviceReplyAddress(names.orders) },
        encodePayload({
          tag: "response",
          result: 1,
          error: null,
          correlation_id: id,
          trace_id: "t",
          context: { [CALL_LATER_CONTEXT_KEY]: { service: "billing", method: "bill" } },
          warning: null,
          reply_to: scheduling.serviceReplyAddress(names.orders),
        }),
      );
      await waitFor(
        () =>
          lines.some(
            (l) =>
              l.level === "warn" &&
              l.fields.correlationId === id &&
              /no onAnswer handler/.test(String(l.fields.reason)),
          ),
        wait,
        "the response to be dead-lettered with its reason",
      );
      if (before !== undefined && t.capabilities.deadLetter) {
        await waitFor(async () => (await deadLetters())! > before, wait, "a dead letter");
      }
      expect(answers.items).toEqual([]);
    });

    it("dead-letters a forged answer whose record has no claim, never handling it", async () => {
      const t = await transport();
      const scheduling = schedulingOfTransport(t);
      if (scheduling === undefined) return;
      await orders("a");
      await t.connect();
      const id = newId();
      await t.send(
        { kind: "reply", address: scheduling.serviceReplyAddress(names.orders) },
        encodePayload({
          tag: "response",
          result: { receipt: "forged" },
          error: null,
          correlation_id: id,
          trace_id: "t",
          context: { [CALL_LATER_CONTEXT_KEY]: { service: names.payments, method: "charge" } },
          warning: null,
          reply_to: "",
        }),
      );
      await waitFor(
        () =>
          lines.some(
            (l) =>
              l.level === "warn" &&
              l.fields.correlationId === id &&
              /has no claim/.test(String(l.fields.reason)),
          ),
        wait,
        "the forged answer to be dead-lettered with its reason",
      );
      expect(answers.items).toEqual([]);
    });

    it("hands a redelivered answer to the handler marked redelivered", async () => {
      const t = await transport();
      if (schedulingOfTransport(t) === undefined || !t.capabilities.redelivery) return;
      await startPayments();
      const svc = await orders("a");
      svc.instance.againOnce = true;
      const callId = await callPayments(svc, 6);
      const [answer] = await answers.waitForCount(1, wait);
      expect(answer?.ctx).toMatchObject({ callId, redelivered: true });
    });
  });
}

/** @throws TypeError naming the bad option. */
function checkOptions(options: CallLaterConformanceOptions): void {
  if (typeof options !== "object" || options === null)
    throw new TypeError("describeCallLaterConformance: options must be an object");
  if (typeof options.name !== "string" || options.name === "")
    throw new TypeError("describeCallLaterConformance: name must be a non-empty string");
  if (typeof options.create !== "function")
    throw new TypeError("describeCallLaterConformance: create must be a function");
  if (options.scheduling !== undefined && typeof options.scheduling !== "boolean")
    throw new TypeError("describeCallLaterConformance: scheduling must be a boolean");
  if (options.deadLetterCount !== undefined && typeof options.deadLetterCount !== "function")
    throw new TypeError("describeCallLaterConformance: deadLetterCount must be a function");
  for (const key of ["timeoutMs", "deadlineMs"] as const) {
    const v = options[key];
    if (v !== undefined && (!Number.isSafeInteger(v) || v <= 0))
      throw new TypeError(`describeCallLaterConformance: ${key} must be a positive integer of ms`);
  }
}
