import { describe, expect, it } from "vitest";
import { describeCoreConformance } from "@nuropb/transport-testkit";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";

describe("describeCoreConformance options", () => {
  const create = () => createMemoryTransport({ hub: createMemoryHub() });
  it.each([
    ["no options", undefined, /options object/],
    ["an empty name", { name: "", create }, /name/],
    ["no create", { name: "x" }, /create must be a function/],
    [
      "a non-function deadLetterCount",
      { name: "x", create, deadLetterCount: 3 },
      /deadLetterCount/,
    ],
    ["a non-function disrupt", { name: "x", create, disrupt: {} }, /disrupt/],
    ["a zero timeoutMs", { name: "x", create, timeoutMs: 0 }, /timeoutMs/],
    ["a NaN timeoutMs", { name: "x", create, timeoutMs: Number.NaN }, /timeoutMs/],
    ["a negative quietMs", { name: "x", create, quietMs: -5 }, /quietMs/],
  ])("throws TypeError for %s, before registering anything", (_label, options, message) => {
    expect(() => describeCoreConformance(options as never)).toThrow(TypeError);
    expect(() => describeCoreConformance(options as never)).toThrow(message);
  });
});
