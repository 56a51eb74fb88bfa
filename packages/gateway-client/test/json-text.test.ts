import { describe, expect, it } from "vitest";
import { toJsonText } from "../src/json-text.ts";

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
