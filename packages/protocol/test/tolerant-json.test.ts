import fc from "fast-check";
import { describe, expect, it, vi } from "vitest";
import { MAX_JSON_DEPTH, NuropbMessageError, parseWireJson } from "@nuropb/protocol";
import { parseTolerantJson } from "../src/tolerant-json.ts";
import { pythonDumps } from "./support/wire-samples.ts";

// parseWireJson sends text JSON.parse refuses to a one-pass parser of its own (Python's bare
// NaN / Infinity / -Infinity tokens). These tests hold that parser to JSON.parse's results and
// errors, and to linear time and bounded memory on hostile input: a frame of bare tokens used
// to cost ~0.9 s and ~90 bytes of heap per byte of body (a 16 MB one, 14 s and 1.5 GB).

const SEED = 0x6a736f6e; // "json"

/** Heap and array-buffer bytes in use: what a parse can grow. */
function memoryInUse(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

function refusal(text: string): NuropbMessageError {
  try {
    parseWireJson(text);
  } catch (err) {
    expect(err).toBeInstanceOf(NuropbMessageError);
    return err as NuropbMessageError;
  }
  throw new Error(`parsed: ${text.slice(0, 80)}`);
}

/** `v` with every bigint turned into the number JSON.parse would have given for it. */
function asNumbers(v: unknown): unknown {
  if (typeof v === "bigint") return Number(v);
  if (Array.isArray(v)) return v.map(asNumbers);
  if (typeof v === "object" && v !== null) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, asNumbers(x)]));
  }
  return v;
}

/** Nested arrays `levels` deep around `inner`. */
function nestedText(levels: number, inner: string): string {
  return "[".repeat(levels) + inner + "]".repeat(levels);
}

describe("parseWireJson: the tolerant parser agrees with JSON.parse", () => {
  // Standard JSON placed beside a NaN token goes through the tolerant parser, which must give
  // exactly what JSON.parse gives for it, but for integers beyond ±(2^53 − 1): bigints there.
  it("on random JSON values (fast-check)", () => {
    fc.assert(
      fc.property(fc.json({ maxDepth: 6 }), (json) => {
        const expected: unknown = JSON.parse(json);
        expect(asNumbers(parseWireJson(`[${json}, NaN]`))).toEqual([expected, NaN]);
        expect(asNumbers(parseWireJson(`{"v": ${json}, "n": -Infinity}`))).toEqual({
          v: expected,
          n: -Infinity,
        });
      }),
      { seed: SEED, numRuns: 1_000 },
    );
  });

  it("on random text: same value, or a NuropbMessageError where JSON.parse throws", () => {
    // Straight to the tolerant parser: through parseWireJson, JSON.parse would answer first.
    const pieces = fc.constantFrom(
      "[", "]", "{", "}", ",", ":", " ", "\n", "\t", "\u00a0", "\ufeff", '"', '\\"', "\\",
      "\\u00e9", "\\u12", "\\x", "\u0001", "a", "é", "😀", "0", "-", "+", "1", "01", ".5", "e",
      "E+", "true", "false", "null", "nul", '"k"', '"k":', "1.0e-3", "-0",
    ); // prettier-ignore
    fc.assert(
      fc.property(fc.array(pieces, { maxLength: 12 }), (parts) => {
        const text = parts.join("");
        let expected: { value: unknown } | undefined;
        try {
          expected = { value: JSON.parse(text) as unknown };
        } catch {
          expected = undefined;
        }
        if (expected === undefined) {
          expect(() => parseTolerantJson(text)).toThrow(NuropbMessageError);
        } else expect(asNumbers(parseTolerantJson(text))).toEqual(expected.value);
      }),
      { seed: SEED, numRuns: 3_000 },
    );
  });

  it("on what Python's json.dumps writes with non-finite numbers (fast-check)", () => {
    const number = fc.oneof(
      fc.double().map((d) => (Object.is(d, -0) ? 0 : d)),
      fc.constantFrom(NaN, Infinity, -Infinity),
    );
    const tree = fc.letrec((tie) => ({
      value: fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        number,
        fc.string({ unit: "binary" }),
        fc.constantFrom(null, true, false),
        fc.array(tie("value"), { maxLength: 5 }),
        fc.dictionary(fc.string({ unit: "binary" }), tie("value"), { maxKeys: 5 }),
      ),
    })).value;
    fc.assert(
      fc.property(tree, (value) => {
        // (pythonDumps writes a double beyond 2^53 as an integer literal, read as a bigint.)
        expect(asNumbers(parseWireJson(pythonDumps(value)))).toEqual(value);
      }),
      { seed: SEED, numRuns: 500 },
    );
  });

  it("a __proto__ key is an own property, never the prototype", () => {
    const parsed = parseWireJson('{"__proto__": {"polluted": 1}, "n": NaN}') as Record<
      string,
      unknown
    >;
    expect(Object.getPrototypeOf(parsed)).toBe(Object.prototype);
    expect(Object.keys(parsed)).toEqual(["__proto__", "n"]);
    expect(Object.getOwnPropertyDescriptor(parsed, "__proto__")?.value).toEqual({ polluted: 1 });
    expect((parsed as { polluted?: unknown }).polluted).toBeUndefined();
    expect(({} as { polluted?: unknown }).polluted).toBeUndefined();
  });

  it("a repeated key keeps its last value in its first place, as JSON.parse does", () => {
    expect(Object.entries(parseWireJson('{"a": 1, "b": NaN, "a": 3}') as object)).toEqual([
      ["a", 3],
      ["b", NaN],
    ]);
  });

  it("errors name the problem and where it is", () => {
    expect(refusal("[NaN, 1,]").message).toBe(
      "body is not valid JSON: unexpected character at position 8",
    );
    expect(refusal('{"a": NaN "b": 1}').message).toBe(
      "body is not valid JSON: expected ',' or '}' in an object at position 10",
    );
    expect(refusal("{NaN: 1}").message).toBe(
      "body is not valid JSON: bare NaN as a key at position 1",
    );
    expect(refusal('[NaN, "ab').message).toBe(
      "body is not valid JSON: unterminated string at position 6",
    );
    expect(refusal('[NaN, "a\\qb"]').message).toBe(
      "body is not valid JSON: bad escape in a string at position 6",
    );
    expect(refusal('[NaN, "a\nb"]').message).toBe(
      "body is not valid JSON: control character in a string at position 8",
    );
    expect(refusal("[NaN, 1.]").message).toBe(
      "body is not valid JSON: expected a digit at position 8",
    );
    expect(refusal("[NaN").message).toBe(
      "body is not valid JSON: expected ',' or ']' in an array at position 4",
    );
    expect(refusal("NaN x").message).toBe(
      "body is not valid JSON: unexpected character after the value at position 4",
    );
  });
});

describe("parseWireJson: hostile bodies cost linear time and bounded memory", () => {
  it("a 4 MB body of bare NaN tokens parses with heap growth under 10x its size", () => {
    const count = 1024 * 1024;
    const body = `[${"NaN,".repeat(count - 1)}NaN]`;
    expect(body.length).toBeGreaterThan(4_000_000);
    body.charCodeAt(0); // the repeat is a rope until read: flatten it before measuring
    const before = memoryInUse();
    const parsed = parseWireJson(body) as number[];
    const grown = memoryInUse() - before;
    expect(parsed.length).toBe(count);
    expect(parsed.every((v) => Number.isNaN(v))).toBe(true);
    // The result alone is 8 bytes per element (2x the body) plus the array's growth garbage.
    // (The string-rewriting parser this replaced grew ~375 MB here.)
    expect(grown).toBeLessThan(10 * body.length);
  });

  it("many tokens mixed with values, in objects and arrays", () => {
    const item = '{"a": NaN, "b": [Infinity, -Infinity, 1.5, "NaN"], "c": null}';
    const count = 50_000;
    const parsed = parseWireJson(`[${Array(count).fill(item).join(",")}]`) as unknown[];
    expect(parsed.length).toBe(count);
    expect(parsed[count - 1]).toEqual({ a: NaN, b: [Infinity, -Infinity, 1.5, "NaN"], c: null });
  });

  it(`nesting up to MAX_JSON_DEPTH (${String(MAX_JSON_DEPTH)}) levels parses, deeper is refused at once`, () => {
    let expected: unknown = NaN;
    for (let i = 0; i < MAX_JSON_DEPTH; i++) expected = [expected];
    expect(parseWireJson(nestedText(MAX_JSON_DEPTH, "NaN"))).toEqual(expected);
    expect(refusal(nestedText(MAX_JSON_DEPTH + 1, "NaN")).message).toBe(
      `body is not valid JSON: nested deeper than 64 levels at position ${String(MAX_JSON_DEPTH)}`,
    );
    const objects = (levels: number) => '{"v": '.repeat(levels) + "NaN" + "}".repeat(levels);
    expect(() => parseWireJson(objects(MAX_JSON_DEPTH))).not.toThrow();
    expect(refusal(objects(MAX_JSON_DEPTH + 1)).message).toMatch(/nested deeper than 64 levels/);
    // Standard JSON is held to the same depth (the deepest value toWireJson writes): short
    // texts are checked on JSON.parse's result, long ones scanned before JSON.parse runs.
    expect(Array.isArray(parseWireJson(nestedText(MAX_JSON_DEPTH, "1")))).toBe(true);
    expect(refusal(nestedText(MAX_JSON_DEPTH + 1, "1")).message).toMatch(/deeper than 64/);
    expect(refusal(nestedText(100_000, "1")).message).toMatch(/deeper than 64/);
    let big: unknown = 9223372036854775807n;
    for (let i = 0; i < MAX_JSON_DEPTH; i++) big = [big];
    expect(parseWireJson(nestedText(MAX_JSON_DEPTH, "9223372036854775807"))).toEqual(big);
    expect(refusal(nestedText(100_000, "9223372036854775807")).message).toMatch(/deeper than 64/);
    expect(refusal(`[${nestedText(MAX_JSON_DEPTH, "1")}, 1e300]`).message).toMatch(/deeper/);
    const deepObjects = '{"v": '.repeat(1_000) + "-9223372036854775808" + "}".repeat(1_000);
    expect(refusal(deepObjects).message).toMatch(/deeper than 64/);
    expect(refusal(deepObjects.replace("-9223372036854775808", "-1")).message).toMatch(
      /deeper than 64/,
    );
    // A million levels: refused at level 65, without a stack overflow (a RangeError).
    expect(refusal(nestedText(1_000_000, "NaN")).message).toMatch(/nested deeper than 64/);
    expect(refusal("[".repeat(1_000_000)).message).toMatch(/nested deeper than 64/);
  });

  it("a long text nested too deeply is refused before JSON.parse builds anything", () => {
    // 4 MiB of `[`: JSON.parse alone took 0.4–0.9 s and ~90 bytes of heap per character.
    const parse = vi.spyOn(JSON, "parse");
    try {
      const deep = nestedText(2 * 1024 * 1024, "1");
      expect(refusal(deep).message).toBe(
        "body is nested deeper than 64 levels; it is refused unread",
      );
      expect(refusal("[".repeat(4 * 1024 * 1024)).message).toMatch(/deeper than 64/);
      expect(parse).not.toHaveBeenCalled();
    } finally {
      parse.mockRestore();
    }
  });

  it("the depth scan of long texts skips strings: brackets, escaped quotes and backslashes in them", () => {
    const pad = "x".repeat(70_000); // over the length from which texts are scanned
    const tricky = `${"[".repeat(100)}\\"\\\\"{{{`;
    const text = `{"pad": "${pad}", "s": ${JSON.stringify(tricky)}, "v": ${nestedText(MAX_JSON_DEPTH - 1, "1")}}`;
    const parsed = parseWireJson(text) as { pad: string; s: string; v: unknown };
    expect(parsed.s).toBe(tricky);
    expect(parsed.pad.length).toBe(70_000);
    const deeper = `{"pad": "${pad}", "s": ${JSON.stringify(tricky)}, "v": ${nestedText(MAX_JSON_DEPTH, "1")}}`;
    expect(refusal(deeper).message).toMatch(/deeper than 64/);
    // A string ending in an even run of backslashes ends at its quote; brackets after it count.
    const evenRun = `["${pad}\\\\", ${nestedText(MAX_JSON_DEPTH - 1, "1")}]`;
    expect((parseWireJson(evenRun) as unknown[]).length).toBe(2);
    expect(refusal(`["${pad}\\\\", ${nestedText(MAX_JSON_DEPTH, "1")}]`).message).toMatch(
      /deeper than 64/,
    );
  });

  it("huge strings of backslashes parse, or are refused when unterminated", () => {
    const pairs = 2_000_000;
    const parsed = parseWireJson(`[NaN, "${"\\\\".repeat(pairs)}"]`) as [number, string];
    expect(parsed[1].length).toBe(pairs);
    expect(/^\\*$/.test(parsed[1])).toBe(true);
    expect(refusal(`[NaN, "${"\\\\".repeat(pairs)}`).message).toBe(
      "body is not valid JSON: unterminated string at position 6",
    );
    // An odd run escapes the closing quote: the string never ends.
    expect(refusal(`[NaN, "${"\\".repeat(2 * pairs + 1)}"]`).message).toMatch(/unterminated/);
    expect(refusal(`[NaN, "${'\\"'.repeat(pairs)}`).message).toMatch(/unterminated/);
  });

  it("huge digit runs are read as JSON.parse reads them", () => {
    const digits = "7".repeat(1_000_000);
    for (const num of [`0.${digits}`, `1.5e${digits}`, `-1.5e-${digits}`, `${digits}.5`]) {
      expect(parseWireJson(`[NaN, ${num}]`)).toEqual([NaN, JSON.parse(num)]);
    }
    expect(refusal(`[NaN, 1.${digits}`).message).toMatch(/expected ',' or ']' in an array/);
  });

  it("a long run of whitespace, or of one token without commas, is refused in one pass", () => {
    expect(parseWireJson(`[NaN${" ".repeat(4_000_000)}]`)).toEqual([NaN]);
    expect(refusal(`[${"NaN ".repeat(1_000_000)}]`).message).toBe(
      "body is not valid JSON: expected ',' or ']' in an array at position 5",
    );
  });
});
