import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { NuropbMessageError, decodeFrame, parseWireJson, toWireJson } from "@nuropb/protocol";
import type { RequestPayload } from "@nuropb/protocol";
import { setJsonSourceReading } from "../src/json.ts";
import { hasJsonParseSource } from "../src/runtime.ts";

// parseWireJson can re-read standard JSON holding an integer beyond ±(2^53 − 1) in one of two
// ways: JSON.parse with a reviver reading each literal's source text (Node 22 and later), or
// the one-pass tolerant parser (every line, and the default: it is the faster). Both must give
// the same values and refuse the same texts; each is forced here in turn where the line has it.

const SEED = 0x6a737263; // "jsrc"
const MAJOR = Number(process.versions.node.split(".")[0]);
const MAX_SAFE = 2n ** 53n - 1n;
const READERS = hasJsonParseSource
  ? [
      { name: "JSON.parse with source text", source: true },
      { name: "tolerant parser", source: false },
    ]
  : [{ name: "tolerant parser", source: false }];

afterEach(() => {
  vi.restoreAllMocks();
});

/** How many times `JSON.parse` was called with a reviver while `fn` ran. */
function revivedParses(fn: () => unknown): number {
  const parse = vi.spyOn(JSON, "parse");
  fn();
  const n = parse.mock.calls.filter((args) => typeof args[1] === "function").length;
  parse.mockRestore();
  return n;
}

describe("which reader this Node line uses", () => {
  it("source text access is detected on Node 22 and later, not on Node 20", () => {
    expect(hasJsonParseSource).toBe(MAJOR >= 21);
  });

  it("by default a large integer is re-read by the tolerant parser, on every line", () => {
    const text = '{"id": 9223372036854775807, "tags": ["a", "b"]}';
    expect(revivedParses(() => parseWireJson(text))).toBe(0);
    expect(parseWireJson(text)).toEqual({ id: 9223372036854775807n, tags: ["a", "b"] });
    // Bodies without a large integer never take a second reading, whichever the line.
    expect(revivedParses(() => parseWireJson('{"id": 9007199254740991}'))).toBe(0);
    // Python's NaN tokens go to the tolerant parser on every line.
    expect(revivedParses(() => parseWireJson("[NaN, 9223372036854775807]"))).toBe(0);
  });

  it("the switch picks the reader, and refuses source text where the line has none", () => {
    const body =
      '{"tag": "request", "service": "s", "method": "m", "params": {"id": 18446744073709551615}, ' +
      '"correlation_id": "599a2f4d40644a36b6342a8ee3ed7d43", "context": {}, "trace_id": null}';
    const frame = {
      headers: { nuropb_protocol: "0.1.1", nuropb_type: "request", encrypted: "" },
      body: new TextEncoder().encode(body),
    };
    const before = setJsonSourceReading(false);
    try {
      expect(before).toBe(false);
      expect(revivedParses(() => decodeFrame(frame))).toBe(0);
      if (hasJsonParseSource) {
        expect(setJsonSourceReading(true)).toBe(false);
        expect(revivedParses(() => decodeFrame(frame))).toBe(1);
        expect((decodeFrame(frame).payload as RequestPayload).params).toEqual({
          id: 18446744073709551615n,
        });
      } else {
        expect(() => setJsonSourceReading(true)).toThrow(
          `JSON.parse gives revivers no source text on Node ${process.version}`,
        );
      }
    } finally {
      setJsonSourceReading(before);
    }
  });
});

describe.each(READERS)("re-reading large integers: $name", ({ source }) => {
  let before: boolean;
  beforeEach(() => {
    before = setJsonSourceReading(source);
  });
  afterEach(() => {
    setJsonSourceReading(before);
  });

  it("integer literals beyond ±(2^53 − 1) are exact bigints, at any place in the body", () => {
    expect(parseWireJson("18446744073709551615")).toBe(18446744073709551615n);
    expect(parseWireJson("-9223372036854775808")).toBe(-9223372036854775808n);
    expect(
      parseWireJson(
        '{"a": [1, {"b": [9223372036854775807]}], "c": {"d": -9007199254740993}, "e": 2.5}',
      ),
    ).toEqual({ a: [1, { b: [9223372036854775807n] }], c: { d: -9007199254740993n }, e: 2.5 });
    expect(parseWireJson("[9007199254740991, 9007199254740992, -9007199254740992]")).toEqual([
      Number.MAX_SAFE_INTEGER,
      9007199254740992n,
      -9007199254740992n,
    ]);
  });

  it("floats stay numbers however large, and strings of digits stay strings", () => {
    const text =
      '{"f": [9223372036854775807.0, 9223372036854775807e0, 1e20, -1E+21, 1e400], ' +
      '"s": "9223372036854775807", "9223372036854775807": 9223372036854775807}';
    expect(parseWireJson(text)).toEqual({
      f: [2 ** 63, 2 ** 63, 1e20, -1e21, Infinity],
      s: "9223372036854775807",
      "9223372036854775807": 9223372036854775807n,
    });
  });

  it("a __proto__ key stays an own property, with its bigint", () => {
    const value = parseWireJson('{"__proto__": {"n": 9223372036854775807}}') as object;
    expect(Object.getPrototypeOf(value)).toBe(Object.prototype);
    expect(Object.getOwnPropertyDescriptor(value, "__proto__")?.value).toEqual({
      n: 9223372036854775807n,
    });
  });

  it("integer literals up to 4300 digits are read; a longer one is refused with its position", () => {
    const longest = "9".repeat(4300);
    expect(parseWireJson(`{"n": [-${longest}]}`)).toEqual({ n: [-BigInt(longest)] });
    expect(() => parseWireJson(`{"n": [${longest}9]}`)).toThrow(
      new NuropbMessageError(
        "body is not valid JSON: integer literal longer than 4300 digits at position 7",
      ),
    );
  });

  it("a body nested too deeply after its first large integer is refused", () => {
    const deep = `${"[".repeat(70)}${"]".repeat(70)}`;
    for (const text of [
      `[9223372036854775807, ${deep}]`,
      `{"n": 1e300, "deep": ${deep}}`,
      `[9223372036854775807, ${deep}, "${"x".repeat(70_000)}"]`, // long: scanned first
    ]) {
      expect(() => parseWireJson(text)).toThrow(NuropbMessageError);
      expect(() => parseWireJson(text)).toThrow(/nested deeper than 64 levels/);
    }
    // 64 levels, the deepest toWireJson writes, are read.
    const ok = `[${"[".repeat(62)}9223372036854775807${"]".repeat(62)}]`;
    let v = parseWireJson(ok);
    for (let i = 0; i < 63; i++) v = (v as unknown[])[0];
    expect(v).toBe(9223372036854775807n);
  });

  it("fast-check: random trees with bigints survive write → read", () => {
    const tree = fc.letrec((tie) => ({
      value: fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        fc
          .bigInt({ min: -(2n ** 70n), max: 2n ** 70n })
          .filter((n) => n > 2n ** 53n - 1n || n < -(2n ** 53n - 1n)),
        fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => (Object.is(d, -0) ? 0 : d)),
        fc.string(),
        fc.constantFrom(null, true, false),
        fc.array(tie("value"), { maxLength: 5 }),
        fc.dictionary(fc.string(), tie("value"), { maxKeys: 5 }),
      ),
    })).value;
    fc.assert(
      fc.property(tree, (value) => {
        expect(parseWireJson(toWireJson(value))).toEqual(value);
      }),
      { seed: SEED, numRuns: 500 },
    );
  });

  it("fast-check: long integer, float and string literals read as their own text says", () => {
    // Each literal with the value it names: an integer beyond ±(2^53 − 1) is that bigint,
    // any other number what Number() makes of the text, a string itself.
    const integer = fc
      .bigInt({ min: -(10n ** 40n), max: 10n ** 40n })
      .map((n) => [String(n), n > MAX_SAFE || n < -MAX_SAFE ? n : Number(n)] as const);
    const float = fc
      .tuple(fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }), fc.nat(99))
      .map(([i, f]) => `${String(i)}.${String(f)}`)
      .map((t) => [t, Number(t)] as const);
    const exponent = fc
      .tuple(fc.bigInt({ min: -(10n ** 20n), max: 10n ** 20n }), fc.integer({ min: -30, max: 30 }))
      .map(([m, e]) => `${String(m)}e${String(e)}`)
      .map((t) => [t, Number(t)] as const);
    const string = fc.string().map((s) => [JSON.stringify(s), s] as const);
    const body = fc.array(fc.tuple(fc.string(), fc.oneof(integer, float, exponent, string)), {
      maxLength: 8,
    });
    fc.assert(
      fc.property(body, (pairs) => {
        const members = pairs.map(([k, [text]]) => `${JSON.stringify(k)}: [${text}]`);
        const expected = Object.fromEntries(pairs.map(([k, [, value]]) => [k, [value]]));
        // A large integer first, so every body takes the second reading.
        expect(parseWireJson(`[18446744073709551615, {${members.join(", ")}}]`)).toEqual([
          18446744073709551615n,
          expected,
        ]);
      }),
      { seed: SEED, numRuns: 500 },
    );
  });
});
