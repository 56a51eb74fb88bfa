import { describe, expect, it } from "vitest";
import { describeTransportConformance } from "@nuropb/transport-testkit";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";

describe("describeTransportConformance options", () => {
  const create = () => createMemoryTransport({ hub: createMemoryHub() });
  it.each([
    ["no options", undefined, /options object/],
    ["an empty name", { name: "", create }, /name/],
    ["no create", { name: "x" }, /create/],
    ["a non-function disrupt", { name: "x", create, disrupt: 1 }, /disrupt/],
    ["a zero timeoutMs", { name: "x", create, timeoutMs: 0 }, /timeoutMs/],
    ["a negative quietMs", { name: "x", create, quietMs: -5 }, /quietMs/],
  ])("throws TypeError for %s, before registering anything", (_label, options, message) => {
    expect(() => describeTransportConformance(options as never)).toThrow(TypeError);
    expect(() => describeTransportConformance(options as never)).toThrow(message);
  });
});
