import { describe, expect, it } from "vitest";
import { fromJsonText, readsBigIntegersExactly, toJsonText } from "../src/json-text.ts";

describe("toJsonText", () => {
  it("writes bigints as exact integer literals, anywhere in the value", () => {
    expect(toJsonText({ n: 2n ** 64n, list: [-(2n ** 70n), 1, "x"], deep: { m: 0n } })).toBe(
      '{"n":18446744073709551616,"list":[-1180591620717411303424,1,"x"],"deep":{"m":0}}',
    );
    expect(toJsonText(2n ** 64n)).toBe("18446744073709551616");
  });

  it("writes everything else as JSON.stringify does", () => {
    const value = { a: "nuropb-bigint-x:1", b: [undefined, null], c: undefined, d: new Date(0) };
    expect(toJsonText(value)).toBe(JSON.stringify(value));
    expect(toJsonText(undefined)).toBe("null");
  });

  it("a string that looks like a mark stays a string", () => {
    const text = toJsonText({ n: 1n, s: "nuropb-bigint-00000000000000000000000000000000:5" });
    expect(JSON.parse(text)).toEqual({
      n: 1,
      s: "nuropb-bigint-00000000000000000000000000000000:5",
    });
  });

  it("refuses a cyclic value with a TypeError, as JSON.stringify does", () => {
    const cyclic: Record<string, unknown> = { n: 1n };
    cyclic.self = cyclic;
    expect(() => toJsonText(cyclic)).toThrow(TypeError);
  });
});

describe("fromJsonText", () => {
  const text =
    '{"max":9223372036854775807,"min":-9223372036854775808,"safe":9007199254740991,"f":1.2345678901234567,"e":1e300,"s":"12345678901234567890"}';

  it("reads integers beyond 2^53 exactly where the runtime gives revivers the source (Node 22+)", () => {
    const exact = readsBigIntegersExactly;
    // Node 20 has no source text for revivers; 22 and 24 (which CI also runs) have it.
    const major = Number(process.versions.node.split(".")[0]);
    expect(exact).toBe(major >= 22);
    expect(fromJsonText(text)).toEqual({
      max: exact ? 9223372036854775807n : 2 ** 63,
      min: exact ? -9223372036854775808n : -(2 ** 63),
      safe: 9007199254740991,
      f: 1.2345678901234567,
      e: 1e300,
      s: "12345678901234567890",
    });
  });

  it("reads a bigint back as toJsonText wrote it, where it can", () => {
    const value = { n: 2n ** 64n, list: [-(2n ** 70n), 1] };
    const back = fromJsonText(toJsonText(value));
    expect(back).toEqual(readsBigIntegersExactly ? value : { n: 2 ** 64, list: [-(2 ** 70), 1] });
  });

  it("text without long digit runs reads as JSON.parse reads it; bad text throws SyntaxError", () => {
    expect(fromJsonText('{"a":[1,2.5,"x",null,true]}')).toEqual({ a: [1, 2.5, "x", null, true] });
    expect(() => fromJsonText("{")).toThrow(SyntaxError);
    expect(() => fromJsonText('{"n":12345678901234567890')).toThrow(SyntaxError);
  });
});
