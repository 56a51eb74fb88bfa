import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  NuropbMessageError,
  decodeFrame,
  encodePayload,
  parseWireJson,
  toWireJson,
} from "@nuropb/protocol";
import type { RequestPayload, ResponsePayload } from "@nuropb/protocol";

// Integers beyond ±(2^53 − 1) travel exactly: a bigint is written as a bare JSON integer (as
// Python writes an int), and an integer literal outside the safe range is read as a bigint
// (JSON.parse would round 9223372036854775807 to 9223372036854775808).

const SEED = 0x62696769; // "bigi"
const MAX_SAFE = 2n ** 53n - 1n;
const CID = "599a2f4d40644a36b6342a8ee3ed7d43";
const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

afterEach(() => {
  vi.restoreAllMocks();
});

/** What reading gives back for a written bigint: a number inside ±(2^53 − 1). */
function readBack(v: unknown): unknown {
  if (typeof v === "bigint") return v >= -MAX_SAFE && v <= MAX_SAFE ? Number(v) : v;
  if (Array.isArray(v)) return v.map(readBack);
  if (typeof v === "object" && v !== null) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, readBack(x)]));
  }
  return v;
}

describe("reading integers beyond ±(2^53 − 1)", () => {
  it("64-bit extremes come back exact, as bigints", () => {
    expect(parseWireJson('{"max": 9223372036854775807, "min": -9223372036854775808}')).toEqual({
      max: 9223372036854775807n,
      min: -9223372036854775808n,
    });
    expect(parseWireJson("18446744073709551615")).toBe(18446744073709551615n);
    expect(parseWireJson(`[${String(2n ** 100n)}]`)).toEqual([2n ** 100n]);
  });

  it("the 2^53 boundary: inside stays a number, outside is a bigint", () => {
    expect(parseWireJson("[9007199254740991, -9007199254740991]")).toEqual([
      Number.MAX_SAFE_INTEGER,
      Number.MIN_SAFE_INTEGER,
    ]);
    const outside = parseWireJson("[9007199254740992, 9007199254740993, -9007199254740993]");
    // JSON.parse gives 9007199254740992 for the second: the exact value is kept.
    expect(outside).toEqual([9007199254740992n, 9007199254740993n, -9007199254740993n]);
    // 16 digits inside the range, and short integers, stay numbers.
    expect(parseWireJson("[1000000000000000, -1234567890123456, 0, -0, 42]")).toEqual([
      1e15, -1234567890123456, 0, -0, 42,
    ]);
    expect(Object.is((parseWireJson("[-0]") as number[])[0], -0)).toBe(true);
  });

  it("nested in arrays and objects, beside NaN tokens too", () => {
    expect(
      parseWireJson('{"a": [1, {"b": [9223372036854775807]}], "c": {"d": -9007199254740992}}'),
    ).toEqual({ a: [1, { b: [9223372036854775807n] }], c: { d: -9007199254740992n } });
    expect(parseWireJson("[NaN, 9223372036854775807, Infinity]")).toEqual([
      NaN,
      9223372036854775807n,
      Infinity,
    ]);
  });

  it("digits inside strings stay strings", () => {
    expect(
      parseWireJson(
        '{"id": "9223372036854775807", "9223372036854775807": ["12345678901234567890"]}',
      ),
    ).toEqual({ id: "9223372036854775807", "9223372036854775807": ["12345678901234567890"] });
    expect(parseWireJson('["x", 12345678901234567890, "9999999999999999999"]')).toEqual([
      "x",
      12345678901234567890n,
      "9999999999999999999",
    ]);
  });

  it("floats stay numbers, however many digits, and exponent forms too", () => {
    for (const text of [
      "9223372036854775807.0",
      "3.14159265358979323846264338327950288",
      "12345678901234567890.5",
      "9223372036854775807e0",
      "1e20",
      "1E+21",
      "-12345678901234567890e-3",
      "0.00000000000000000001",
    ]) {
      const v = parseWireJson(`[${text}]`) as unknown[];
      expect(typeof v[0], text).toBe("number");
      expect(v[0], text).toBe(JSON.parse(text));
    }
  });

  it(`integer literals are read up to 4300 digits (Python's own limit), longer ones refused`, () => {
    const longest = "9".repeat(4300);
    expect(parseWireJson(`[${longest}]`)).toEqual([BigInt(longest)]);
    expect(parseWireJson(`{"n": -${longest}}`)).toEqual({ n: -BigInt(longest) });
    expect(() => parseWireJson(`[${longest}9]`)).toThrow(NuropbMessageError);
    expect(() => parseWireJson(`[${longest}9]`)).toThrow(
      "body is not valid JSON: integer literal longer than 4300 digits at position 1",
    );
    // Floats of any length are numbers, as JSON.parse reads them.
    expect(parseWireJson(`[${longest}9.5]`)).toEqual([Infinity]);
  });

  it("many long integers in one body are each read exactly", () => {
    const values = Array.from({ length: 20_000 }, (_, i) => 2n ** 64n + BigInt(i) * 7919n);
    expect(parseWireJson(`[${values.join(",")}]`)).toEqual(values);
  });

  it("malformed long numbers are refused as JSON.parse refuses them", () => {
    for (const bad of ["[01234567890123456789]", "[-]", "[12345678901234567890.]", "[--1]"]) {
      expect(() => parseWireJson(bad), bad).toThrow(NuropbMessageError);
    }
  });
});

describe("writing bigints and large numbers", () => {
  it("indents for people when asked, bigints still bare; a bad indent is a TypeError", () => {
    const value = { id: 9223372036854775807n, list: [1, 2n ** 60n], s: "x" };
    expect(toWireJson(value, { indent: 2 })).toBe(
      '{\n  "id": 9223372036854775807,\n  "list": [\n    1,\n    1152921504606846976\n  ],\n  "s": "x"\n}',
    );
    expect(toWireJson({ a: 1 }, { indent: 2 })).toBe('{\n  "a": 1\n}');
    expect(toWireJson(value, { indent: 0 })).toBe(toWireJson(value));
    for (const indent of [-1, 1.5, 11, Number.NaN]) {
      expect(() => toWireJson(value, { indent })).toThrow(TypeError);
    }
  });

  it("a bigint is a bare JSON integer, exact, and reads back as itself", () => {
    for (const n of [
      9223372036854775807n,
      -9223372036854775808n,
      2n ** 53n,
      -(2n ** 53n),
      2n ** 53n + 1n,
      2n ** 200n,
    ]) {
      const text = toWireJson({ n, list: [n] });
      expect(text).toBe(`{"n":${String(n)},"list":[${String(n)}]}`);
      expect(parseWireJson(text)).toEqual({ n, list: [n] });
    }
  });

  it("a bigint inside ±(2^53 − 1) reads back as a number", () => {
    expect(parseWireJson(toWireJson([2n ** 53n - 1n, -5n, 0n]))).toEqual([
      Number.MAX_SAFE_INTEGER,
      -5,
      0,
    ]);
  });

  it("a number beyond ±(2^53 − 1) is written as a float, so it reads back as a number", () => {
    expect(toWireJson([2 ** 53, -(2 ** 60), 1e20, 1e21, 1.5])).toBe(
      // (-(2 ** 60) in JavaScript's shortest digits, the same double for any reader.)
      "[9007199254740992.0,-1152921504606847000.0,100000000000000000000.0,1e+21,1.5]",
    );
    expect(parseWireJson(toWireJson({ a: [2 ** 53, -(2 ** 60)], b: 1e20 }))).toEqual({
      a: [2 ** 53, -(2 ** 60)],
      b: 1e20,
    });
  });

  it("strings that look like the marks or like numbers stay strings", () => {
    const value = {
      n: 12345678901234567890n,
      s: "12345678901234567890",
      t: '"nuropb-literal-00000000-0000-4000-8000-000000000000:1"',
      u: "nuropb-literal-x:5",
    };
    expect(toWireJson(value)).toBe(
      '{"n":12345678901234567890,"s":"12345678901234567890",' +
        '"t":"\\"nuropb-literal-00000000-0000-4000-8000-000000000000:1\\"","u":"nuropb-literal-x:5"}',
    );
    expect(parseWireJson(toWireJson(value))).toEqual(value);
  });

  it("a BigInt.prototype.toJSON an application defines does not change what is written", () => {
    const proto = BigInt.prototype as unknown as { toJSON?: () => string };
    proto.toJSON = function (this: bigint) {
      return `${String(this)}!`;
    };
    try {
      expect(toWireJson({ a: 9223372036854775807n, b: [1n] })).toBe(
        '{"a":9223372036854775807,"b":[1]}',
      );
    } finally {
      delete proto.toJSON;
    }
  });

  it("a toJSON() returning a bigint, or writing JSON itself meanwhile, is handled", () => {
    const inner = {
      toJSON() {
        expect(toWireJson({ x: 2n ** 70n })).toBe(`{"x":${String(2n ** 70n)}}`);
        return 3n;
      },
    };
    expect(toWireJson({ a: 2n ** 64n, inner, c: 2 ** 54 })).toBe(
      `{"a":${String(2n ** 64n)},"inner":3,"c":18014398509481984.0}`,
    );
  });

  it("plain bodies are written by JSON.stringify alone: no mark is made", () => {
    const uuid = vi.spyOn(globalThis.crypto, "randomUUID");
    expect(toWireJson({ a: [1, 2.5, "x", null, true], b: { c: -9007199254740991 } })).toBe(
      '{"a":[1,2.5,"x",null,true],"b":{"c":-9007199254740991}}',
    );
    encodePayload({
      tag: "request",
      service: "s",
      method: "m",
      params: { n: 1 },
      correlation_id: CID,
      context: {},
      trace_id: null,
    });
    expect(uuid).not.toHaveBeenCalled();
    toWireJson({ n: 1n });
    expect(uuid).toHaveBeenCalledTimes(1);
  });

  it("fast-check: any bigints in a random JSON tree survive write → read", () => {
    const bigints = fc.oneof(
      fc.bigInt(),
      fc.bigInt({ min: -(2n ** 64n), max: 2n ** 64n }),
      fc.bigInt({ min: MAX_SAFE - 3n, max: MAX_SAFE + 3n }),
      fc.bigInt({ min: -MAX_SAFE - 3n, max: -MAX_SAFE + 3n }),
    );
    const tree = fc.letrec((tie) => ({
      value: fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        bigints,
        fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => (Object.is(d, -0) ? 0 : d)),
        fc.string(),
        fc.constantFrom(null, true, false),
        fc.array(tie("value"), { maxLength: 5 }),
        fc.dictionary(fc.string(), tie("value"), { maxKeys: 5 }),
      ),
    })).value;
    fc.assert(
      fc.property(tree, (value) => {
        expect(parseWireJson(toWireJson(value))).toEqual(readBack(value));
      }),
      { seed: SEED, numRuns: 1_000 },
    );
  });
});

describe("codec round trip keeps bigints", () => {
  it("encodePayload writes bare integers; decodeFrame gives the same bigints back", () => {
    const params = { id: 9223372036854775807n, ids: [-9223372036854775808n, 1n], f: 1.5 };
    const frame = encodePayload({
      tag: "request",
      service: "s",
      method: "m",
      params,
      correlation_id: CID,
      context: {},
      trace_id: null,
    });
    const text = utf8Decoder.decode(frame.body);
    expect(text).toContain('"params":{"id":9223372036854775807,"ids":[-9223372036854775808,1]');
    const decoded = decodeFrame(frame);
    expect((decoded.payload as RequestPayload).params).toEqual({
      id: 9223372036854775807n,
      ids: [-9223372036854775808n, 1],
      f: 1.5,
    });
  });

  it("a response's result and a Python peer's body", () => {
    const frame = encodePayload({
      tag: "response",
      result: { big: 2n ** 64n, nested: [[2n ** 63n]] },
      error: null,
      correlation_id: CID,
      trace_id: null,
      context: {},
      warning: null,
      reply_to: "rq",
    });
    expect((decodeFrame(frame).payload as ResponsePayload).result).toEqual({
      big: 2n ** 64n,
      nested: [[2n ** 63n]],
    });
    // What Python's json.dumps writes for {"id": 2**63 - 1} (", " separators).
    const body =
      `{"tag": "request", "service": "s", "method": "m", "params": {"id": 9223372036854775807}, ` +
      `"correlation_id": "${CID}", "context": {}, "trace_id": null}`;
    const headers = {
      nuropb_protocol: "0.1.1",
      nuropb_version: "0.1.8",
      nuropb_type: "request",
      trace_id: null,
      encrypted: "",
    };
    const decoded = decodeFrame({ headers, body: utf8.encode(body) });
    expect((decoded.payload as RequestPayload).params).toEqual({ id: 9223372036854775807n });
  });
});
