import { describe, expect, it } from "vitest";
import {
  NuropbAuthenticationError,
  NuropbAuthorizationError,
  NuropbCallAgain,
  NuropbCallAgainReject,
  NuropbConnectionClosedError,
  NuropbDeprecatedError,
  NuropbError,
  NuropbHandlingError,
  NuropbMessageError,
  NuropbNotDeliveredError,
  NuropbSuccess,
  NuropbTimeoutError,
  NuropbTransportError,
  NuropbValidationError,
  decodeFrame,
  encodePayload,
  fromErrorPayload,
  isNuropbError,
  toErrorPayload,
} from "@nuropb/protocol";
import type { ErrorPayload, NuropbErrorOptions, ResponsePayload } from "@nuropb/protocol";

type ErrorClass = (new (description?: string, options?: NuropbErrorOptions) => NuropbError) & {
  readonly wireName: string;
};

/** Every error class, its name, wire name and parent. */
const CLASSES: readonly (readonly [ErrorClass, string, string, ErrorClass | ErrorConstructor])[] = [
  [NuropbError, "NuropbError", "NuropbException", Error],
  [NuropbTimeoutError, "NuropbTimeoutError", "NuropbTimeoutError", NuropbError],
  [NuropbTransportError, "NuropbTransportError", "NuropbTransportError", NuropbError],
  [
    NuropbConnectionClosedError,
    "NuropbConnectionClosedError",
    "NuropbConnectionClosedError",
    NuropbTransportError,
  ],
  [NuropbMessageError, "NuropbMessageError", "NuropbMessageError", NuropbError],
  [NuropbHandlingError, "NuropbHandlingError", "NuropbHandlingError", NuropbError],
  [NuropbDeprecatedError, "NuropbDeprecatedError", "NuropbDeprecatedError", NuropbHandlingError],
  [NuropbValidationError, "NuropbValidationError", "NuropbValidationError", NuropbError],
  [
    NuropbAuthenticationError,
    "NuropbAuthenticationError",
    "NuropbAuthenticationError",
    NuropbError,
  ],
  [NuropbAuthorizationError, "NuropbAuthorizationError", "NuropbAuthorizationError", NuropbError],
  [NuropbNotDeliveredError, "NuropbNotDeliveredError", "NuropbNotDeliveredError", NuropbError],
  [NuropbCallAgain, "NuropbCallAgain", "NuropbCallAgain", NuropbError],
  [NuropbCallAgainReject, "NuropbCallAgainReject", "NuropbCallAgainReject", NuropbError],
];

describe("error classes", () => {
  it.each(CLASSES.map(([cls, name, wire, parent]) => [name, cls, wire, parent] as const))(
    "%s: name, wireName, hierarchy",
    (name, cls, wire, parent) => {
      const err = new cls("it broke");
      expect(err.name).toBe(name);
      expect(cls.wireName).toBe(wire);
      expect(err.wireName).toBe(wire);
      expect(err.description).toBe("it broke");
      expect(err.message).toBe("it broke");
      expect(err).toBeInstanceOf(Error);
      expect(err).toBeInstanceOf(NuropbError);
      expect(err).toBeInstanceOf(parent);
      expect(isNuropbError(err)).toBe(true);
      expect(err.retryable).toBe(false);
      expect(err.details).toBeUndefined();
      expect(typeof err.stack).toBe("string");
    },
  );

  it("a missing or empty description falls back to the wire name", () => {
    expect(new NuropbError().description).toBe("NuropbException");
    expect(new NuropbHandlingError("").description).toBe("NuropbHandlingError");
    expect(new NuropbError(undefined, { wireName: "KeyError" }).description).toBe("KeyError");
  });

  it("options: cause, payload, retryable, details, wireName", () => {
    const cause = new Error("socket closed");
    const err = new NuropbTransportError("lost", {
      cause,
      payload: { x: 1 },
      retryable: true,
      details: { attempt: 3 },
    });
    expect(err.cause).toBe(cause);
    expect(err.payload).toEqual({ x: 1 });
    expect(err.retryable).toBe(true);
    expect(err.details).toEqual({ attempt: 3 });
    expect(new NuropbError("x").cause).toBeUndefined();
    expect(new NuropbError("x", { wireName: "ValueError" }).wireName).toBe("ValueError");
  });

  it("a user subclass gets its own name and inherits the wire name", () => {
    class OrderRejected extends NuropbValidationError {}
    const err = new OrderRejected("no stock");
    expect(err.name).toBe("OrderRejected");
    expect(err.wireName).toBe("NuropbValidationError");
    expect(toErrorPayload(err)).toEqual({
      error: "NuropbValidationError",
      description: "no stock",
    });
  });
});

describe("toErrorPayload / fromErrorPayload", () => {
  it.each(CLASSES.map(([cls, name]) => [name, cls] as const))("%s round trip", (_name, cls) => {
    const err = new cls("described");
    const payload = toErrorPayload(err);
    expect(payload).toEqual({ error: cls.wireName, description: "described" });
    const back = fromErrorPayload(payload);
    expect(back).toBeInstanceOf(cls);
    expect(back.constructor).toBe(cls);
    expect(back.wireName).toBe(cls.wireName);
    expect(back.description).toBe("described");
    expect(toErrorPayload(back)).toEqual(payload);
  });

  it("retryable and details ride along and come back", () => {
    const err = new NuropbTimeoutError("slow", { retryable: true, details: { waitedMs: 30 } });
    const payload = toErrorPayload(err);
    expect(payload).toEqual({
      error: "NuropbTimeoutError",
      description: "slow",
      retryable: true,
      details: { waitedMs: 30 },
    });
    const back = fromErrorPayload(payload);
    expect(back.retryable).toBe(true);
    expect(back.details).toEqual({ waitedMs: 30 });
  });

  it("the payload through the codec: an error response carries exactly error and description", () => {
    const frame = encodePayload({
      tag: "response",
      result: null,
      error: toErrorPayload(new NuropbHandlingError("Unknown method x")),
      correlation_id: "c0ffee",
      trace_id: null,
      context: {},
      warning: null,
      reply_to: "rq",
    });
    const body = JSON.parse(new TextDecoder().decode(frame.body)) as { error: unknown };
    expect(body.error).toEqual({ error: "NuropbHandlingError", description: "Unknown method x" });
    const decoded = decodeFrame(frame).payload as ResponsePayload;
    expect(decoded.error).not.toBeNull();
    if (decoded.error === null) return;
    const err = fromErrorPayload(decoded.error);
    expect(err).toBeInstanceOf(NuropbHandlingError);
    expect(err.description).toBe("Unknown method x");
  });

  it.each([
    ["RuntimeError", "boom-async"],
    ["KeyError", "'Authorization'"],
    ["ValueError", "nuropb_protocol '0.0.9' is not supported"],
    ["JSONDecodeError", "Expecting value: line 1 column 1 (char 0)"],
    ["InvalidToken", ""],
    ["KeyError", ""],
  ])(
    "unknown wire name %s arrives as a NuropbError that keeps name and description",
    (name, desc) => {
      const err = fromErrorPayload({ error: name, description: desc });
      expect(err).toBeInstanceOf(NuropbError);
      expect(err.constructor).toBe(NuropbError);
      expect(isNuropbError(err)).toBe(true);
      expect(err.wireName).toBe(name);
      // Python's str(KeyError()) is "": an empty description survives as the name, never as
      // "NuropbException".
      expect(err.description).toBe(desc === "" ? name : desc);
      expect(toErrorPayload(err)).toEqual({ error: name, description: desc === "" ? name : desc });
    },
  );

  it("a Python error name that looks like one of ours maps to our class", () => {
    const err = fromErrorPayload({
      error: "NuropbException",
      description: "Runtime exception calling py-peer.fail_plain:RuntimeError: boom",
    });
    expect(err.constructor).toBe(NuropbError);
    expect(err.wireName).toBe("NuropbException");
  });

  it("NuropbSuccess (control flow, not a wire error) survives by name", () => {
    const payload = toErrorPayload(new NuropbSuccess({ ok: 1 }));
    expect(payload).toEqual({ error: "NuropbSuccess", description: "NuropbSuccess" });
    const back = fromErrorPayload(payload);
    expect(back.wireName).toBe("NuropbSuccess");
    expect(back.description).toBe("NuropbSuccess");
  });

  it("options given to fromErrorPayload are kept (cause, payload)", () => {
    const cause = { raw: true };
    const err = fromErrorPayload({ error: "NuropbMessageError", description: "d" }, { cause });
    expect(err.cause).toBe(cause);
    expect(err).toBeInstanceOf(NuropbMessageError);
  });

  it("prototype-ish wire names do not reach Object.prototype", () => {
    for (const name of ["constructor", "__proto__", "toString", "hasOwnProperty"]) {
      const err = fromErrorPayload({ error: name, description: "x" });
      expect(err.constructor).toBe(NuropbError);
      expect(err.wireName).toBe(name);
    }
  });
});

describe("non-NuroPb throwables", () => {
  it("Error subclasses keep their name and message", () => {
    expect(toErrorPayload(new TypeError("bad type"))).toEqual({
      error: "TypeError",
      description: "bad type",
    });
    expect(toErrorPayload(new RangeError(""))).toEqual({
      error: "RangeError",
      description: "RangeError",
    });
    class CustomError extends Error {
      override name = "CustomError";
    }
    expect(toErrorPayload(new CustomError("c"))).toEqual({
      error: "CustomError",
      description: "c",
    });
  });

  it.each([
    ["a string", "just text", { error: "Error", description: "just text" }],
    ["a number", 42, { error: "Error", description: "42" }],
    ["null", null, { error: "Error", description: "null" }],
    ["undefined", undefined, { error: "Error", description: "undefined" }],
    ["a bigint", 5n, { error: "Error", description: "5" }],
    ["a symbol", Symbol("s"), { error: "Error", description: "Symbol(s)" }],
    ["an object", { code: 7 }, { error: "Error", description: '{"code":7}' }],
  ])("%s", (_name, value, expected) => {
    expect(toErrorPayload(value)).toEqual(expected);
  });

  it("values that cannot even be printed still give a payload", () => {
    const cyclic = Object.create(null) as Record<string, unknown>;
    cyclic.self = cyclic;
    const hostile = {
      toJSON() {
        throw new Error("no json");
      },
      toString() {
        throw new Error("no string");
      },
    };
    for (const v of [cyclic, hostile]) {
      const p = toErrorPayload(v);
      expect(p.error).toBe("Error");
      expect(typeof p.description).toBe("string");
      expect(p.description.length).toBeGreaterThan(0);
    }
  });

  it("an Error with a non-string name or message still gives strings", () => {
    const weird = new Error("x");
    Object.defineProperty(weird, "name", { value: 12 });
    Object.defineProperty(weird, "message", { value: { nested: true } });
    const p = toErrorPayload(weird);
    expect(typeof p.error).toBe("string");
    expect(typeof p.description).toBe("string");
  });
});

describe("isNuropbError", () => {
  it("recognises an error from another installed copy by the symbol brand", () => {
    const foreign = {
      [Symbol.for("@nuropb/error")]: true,
      name: "NuropbHandlingError",
      wireName: "NuropbHandlingError",
      description: "from the other copy",
      retryable: false,
      details: undefined,
    };
    expect(isNuropbError(foreign)).toBe(true);
    expect(toErrorPayload(foreign)).toEqual({
      error: "NuropbHandlingError",
      description: "from the other copy",
    });
  });

  it("a branded object missing fields still gives a well-formed payload", () => {
    const partial = { [Symbol.for("@nuropb/error")]: true };
    expect(isNuropbError(partial)).toBe(true);
    const p = toErrorPayload(partial);
    expect(typeof p.error).toBe("string");
    expect(typeof p.description).toBe("string");
  });

  it.each([
    ["a plain Error", new Error("x")],
    ["null", null],
    ["undefined", undefined],
    ["a string", "NuropbError"],
    ["a look-alike without the brand", { name: "NuropbError", wireName: "NuropbException" }],
    ["a brand that is not true", { [Symbol.for("@nuropb/error")]: "yes" }],
    ["a non-registered symbol of the same description", { [Symbol("@nuropb/error")]: true }],
  ])("is false for %s", (_name, value) => {
    expect(isNuropbError(value)).toBe(false);
  });
});

describe("stacks never leave the process", () => {
  it.each([
    [
      "NuropbError",
      new NuropbValidationError("v", { cause: new Error("inner"), details: { f: 1 } }),
    ],
    ["a plain Error", new Error("plain")],
    ["an unknown wire error", fromErrorPayload({ error: "RuntimeError", description: "r" })],
  ])("%s", (_name, err) => {
    const payload: ErrorPayload = toErrorPayload(err);
    const text = JSON.stringify(payload);
    expect(text).not.toMatch(/stack| {4}at |\.test\.ts|cause|inner/);
    expect(
      Object.keys(payload).every((k) =>
        ["error", "description", "retryable", "details"].includes(k),
      ),
    ).toBe(true);
  });
});

describe("NuropbSuccess", () => {
  it("carries result and events", () => {
    const events = [
      { topic: "orders.created", event: { id: 1 }, target: ["billing"] },
      { topic: "orders.audit", event: null },
    ];
    const s = new NuropbSuccess({ id: 1 }, events);
    expect(s.result).toEqual({ id: 1 });
    expect(s.events).toEqual(events);
    expect(s.name).toBe("NuropbSuccess");
    expect(s.wireName).toBe("NuropbSuccess");
    expect(s.description).toBe("NuropbSuccess");
    expect(isNuropbError(s)).toBe(true);
    expect(s).toBeInstanceOf(NuropbError);
  });

  it("defaults to no events and accepts options", () => {
    const s = new NuropbSuccess(undefined, undefined, { details: { a: 1 } });
    expect(s.events).toEqual([]);
    expect(s.result).toBeUndefined();
    expect(s.details).toEqual({ a: 1 });
  });
});
