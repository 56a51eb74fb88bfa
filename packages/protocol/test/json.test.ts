import { Buffer } from "node:buffer";
import { describe, expect, it } from "vitest";
import {
  MAX_JSON_DEPTH,
  NuropbMessageError,
  normaliseJson,
  parseWireJson,
  toWireJson,
} from "@nuropb/protocol";

function nested(levels: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < levels; i++) v = { v };
  return v;
}

function nestedArrays(levels: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < levels; i++) v = [v];
  return v;
}

describe("toWireJson writing rules", () => {
  it("Date → ISO 8601 UTC with Z", () => {
    const d = new Date(Date.UTC(2020, 0, 1, 0, 0, 0, 123));
    expect(toWireJson({ d })).toBe('{"d":"2020-01-01T00:00:00.123Z"}');
    expect(toWireJson(new Date(0))).toBe('"1970-01-01T00:00:00.000Z"');
    // A date made in another time zone's wall clock is still written in UTC with one Z.
    const text = toWireJson(new Date("2020-06-01T12:00:00+02:00"));
    expect(text).toBe('"2020-06-01T10:00:00.000Z"');
    expect(text).toMatch(/^"[^Z+]*Z"$/);
  });

  it("invalid Date → null", () => {
    expect(toWireJson({ d: new Date("nope") })).toBe('{"d":null}');
    expect(toWireJson([new Date(NaN)])).toBe("[null]");
  });

  it("bigint → bare JSON integer, exact", () => {
    expect(toWireJson({ n: 9223372036854775807n, m: -12n, z: 0n })).toBe(
      '{"n":9223372036854775807,"m":-12,"z":0}',
    );
    expect(toWireJson([2n ** 100n])).toBe("[1267650600228229401496703205376]");
    expect(toWireJson(-(2n ** 63n))).toBe("-9223372036854775808");
  });

  it("Map → object with string keys, values normalised", () => {
    const m = new Map<unknown, unknown>([
      ["a", 1],
      [2.5, new Date(0)],
      [true, 3n],
      ["skip", undefined],
    ]);
    expect(toWireJson(m)).toBe('{"a":1,"2.5":"1970-01-01T00:00:00.000Z","true":3}');
    // (Integer-like keys come first, as in any JS object.)
    expect(
      toWireJson(
        new Map<unknown, number>([
          ["b", 1],
          [7, 2],
        ]),
      ),
    ).toBe('{"7":2,"b":1}');
    expect(toWireJson({ m: new Map() })).toBe('{"m":{}}');
  });

  it("Set → array, values normalised", () => {
    expect(toWireJson(new Set([1, "a", 2n, undefined]))).toBe('[1,"a",2,null]');
    expect(toWireJson({ s: new Set() })).toBe('{"s":[]}');
  });

  it("Uint8Array / Buffer / other typed arrays → standard base64", () => {
    const bytes = new Uint8Array([0xfb, 0xff, 0x00, 0x41]);
    expect(toWireJson(bytes)).toBe('"+/8AQQ=="');
    expect(toWireJson({ b: Buffer.from("hello") })).toBe('{"b":"aGVsbG8="}');
    expect(toWireJson(new Uint8Array(0))).toBe('""');
    // A view onto part of a larger buffer: only the viewed bytes.
    const big = new Uint8Array([1, 2, 3, 4, 5]);
    expect(toWireJson(big.subarray(1, 3))).toBe(
      JSON.stringify(Buffer.from([2, 3]).toString("base64")),
    );
    expect(toWireJson(new Uint16Array([1]))).toBe(
      JSON.stringify(Buffer.from([1, 0]).toString("base64")),
    );
    expect(toWireJson(new DataView(new Uint8Array([7]).buffer))).toBe('"Bw=="');
  });

  it("undefined, functions and symbols: omitted in objects, null in arrays", () => {
    expect(toWireJson({ a: undefined, b: 1, f: () => 1, s: Symbol("x") })).toBe('{"b":1}');
    expect(toWireJson([undefined, () => 1, Symbol("x"), 1])).toBe("[null,null,null,1]");
    // eslint-disable-next-line no-sparse-arrays
    expect(toWireJson([1, , 3])).toBe("[1,null,3]");
    expect(toWireJson(undefined)).toBe("null");
  });

  it("NaN / Infinity / -Infinity → null", () => {
    expect(toWireJson({ a: NaN, b: Infinity, c: -Infinity, d: [NaN] })).toBe(
      '{"a":null,"b":null,"c":null,"d":[null]}',
    );
    expect(toWireJson(-0)).toBe("0");
  });

  it("toJSON is honoured and its result normalised again", () => {
    const money = { amount: 150n, toJSON: () => ({ amount: "1.50", at: new Date(0) }) };
    expect(toWireJson({ money })).toBe(
      '{"money":{"amount":"1.50","at":"1970-01-01T00:00:00.000Z"}}',
    );
    class Point {
      readonly x: number;
      readonly y: number;
      constructor(x: number, y: number) {
        this.x = x;
        this.y = y;
      }
      toJSON(): unknown {
        return [this.x, this.y];
      }
    }
    expect(toWireJson({ p: new Point(1, 2) })).toBe('{"p":[1,2]}');
  });

  it("toJSON returning undefined: omitted in objects, null in arrays", () => {
    const gone = { toJSON: () => undefined };
    expect(toWireJson({ a: 1, gone })).toBe('{"a":1}');
    expect(toWireJson([gone, 1])).toBe("[null,1]");
  });

  it("an own __proto__ key (as JSON.parse makes) survives a copy as an own key", () => {
    const parsed = JSON.parse('{"__proto__": {"x": 1}, "when": null}') as Record<string, unknown>;
    parsed.when = new Date(0);
    const out = normaliseJson(parsed) as Record<string, unknown>;
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
    expect(Object.hasOwn(out, "__proto__")).toBe(true);
    expect(toWireJson(parsed)).toBe('{"__proto__":{"x":1},"when":"1970-01-01T00:00:00.000Z"}');
    const viaMap = toWireJson(new Map([["__proto__", 1]]));
    expect(viaMap).toBe('{"__proto__":1}');
  });

  it("enumerable keys inherited from a polluted Object.prototype are not written", () => {
    const proto = Object.prototype as Record<string, unknown>;
    proto.polluted = "yes";
    try {
      expect(toWireJson({ a: 1 })).toBe('{"a":1}');
      expect(toWireJson({ a: 1n, b: 2 })).toBe('{"a":1,"b":2}');
    } finally {
      delete proto.polluted;
    }
  });

  it("class instances and null-prototype objects are written by their own enumerable keys", () => {
    class Thing {
      a = 1;
      b = undefined;
    }
    expect(toWireJson(new Thing())).toBe('{"a":1}');
    const bare = Object.create(null) as Record<string, unknown>;
    bare.k = "v";
    expect(toWireJson(bare)).toBe('{"k":"v"}');
  });

  it("cycles → NuropbMessageError", () => {
    const a: Record<string, unknown> = { x: 1 };
    a.self = a;
    expect(() => toWireJson(a)).toThrow(NuropbMessageError);
    expect(() => toWireJson(a)).toThrow(/cyclic or nested deeper than 64 levels/);
    const arr: unknown[] = [];
    arr.push(arr);
    expect(() => toWireJson(arr)).toThrow(NuropbMessageError);
    const m = new Map<string, unknown>();
    m.set("m", m);
    expect(() => toWireJson(m)).toThrow(NuropbMessageError);
    const loop = {
      toJSON(): unknown {
        return loop;
      },
    };
    expect(() => toWireJson(loop)).toThrow(NuropbMessageError);
  });

  it("a cycle with wide fan-out fails fast (no exponential walk)", () => {
    const a: Record<string, unknown> = {};
    for (let i = 0; i < 32; i++) a[`k${String(i)}`] = a;
    expect(() => toWireJson(a)).toThrow(NuropbMessageError);
  });

  it(`nesting up to MAX_JSON_DEPTH (${String(MAX_JSON_DEPTH)}) levels is fine, one more is not`, () => {
    expect(MAX_JSON_DEPTH).toBe(64);
    // nested(n) has n objects around a number: the body object is level 1.
    expect(() => toWireJson(nested(MAX_JSON_DEPTH))).not.toThrow();
    expect(() => toWireJson(nested(MAX_JSON_DEPTH + 1))).toThrow(NuropbMessageError);
    expect(() => toWireJson(nestedArrays(MAX_JSON_DEPTH))).not.toThrow();
    expect(() => toWireJson(nestedArrays(MAX_JSON_DEPTH + 1))).toThrow(NuropbMessageError);
  });

  it("plain JSON data comes out exactly as JSON.stringify writes it", () => {
    const v = { s: 'é\u2028"\\', n: [1, -2.5, 1e21, 0], b: true, z: null, o: { "": {} } };
    expect(toWireJson(v)).toBe(JSON.stringify(v));
  });
});

describe("normaliseJson", () => {
  it("returns unchanged plain objects and arrays as the same reference (no copy)", () => {
    const inner = { a: [1, "x", { b: null }], c: true };
    const v = { inner, list: [inner, 2] };
    expect(normaliseJson(v)).toBe(v);
    expect(normaliseJson(inner)).toBe(inner);
    expect(normaliseJson(v.list)).toBe(v.list);
    const withUndefined = { a: 1, b: undefined };
    expect(normaliseJson(withUndefined)).toBe(withUndefined);
  });

  it("copies only what changes, keeps unchanged siblings by reference", () => {
    const same = { k: [1, 2] };
    const v = { when: new Date(0), same, list: [same, 1n, new Date(0)] };
    const out = normaliseJson(v) as { when: unknown; same: unknown; list: unknown[] };
    expect(out).not.toBe(v);
    expect(out.same).toBe(same);
    expect(out.list[0]).toBe(same);
    // A bigint needs no change: toWireJson writes it as a bare integer.
    expect(out).toEqual({
      when: "1970-01-01T00:00:00.000Z",
      same,
      list: [same, 1n, "1970-01-01T00:00:00.000Z"],
    });
    // The input is left as it was.
    expect(v.when).toBeInstanceOf(Date);
    expect(v.list[2]).toBeInstanceOf(Date);
  });

  it("keeps key order when it copies", () => {
    const out = normaliseJson({ a: 1, b: new Date(0), c: 3, d: undefined, e: () => 0, f: 4 });
    expect(Object.keys(out as object)).toEqual(["a", "b", "c", "f"]);
  });
});

describe("parseWireJson", () => {
  it("parses standard JSON", () => {
    expect(parseWireJson('{"a": [1, "b", null, true]}')).toEqual({ a: [1, "b", null, true] });
  });

  it("throws NuropbMessageError with the parser's reason", () => {
    expect(() => parseWireJson("{")).toThrow(NuropbMessageError);
    expect(() => parseWireJson("{")).toThrow(/body is not valid JSON: /);
  });

  it("deeply nested input is parsed or refused, never crashes", () => {
    const deep = "[".repeat(100_000) + "]".repeat(100_000);
    let result: unknown;
    try {
      result = parseWireJson(deep);
    } catch (err) {
      result = err;
    }
    expect(Array.isArray(result) || result instanceof NuropbMessageError).toBe(true);
    const deepNaN = "[".repeat(100_000) + "NaN" + "]".repeat(100_000);
    try {
      result = parseWireJson(deepNaN);
    } catch (err) {
      result = err;
    }
    expect(Array.isArray(result) || result instanceof NuropbMessageError).toBe(true);
  });
});
