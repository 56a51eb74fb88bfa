import { describe, expect, it } from "vitest";
import { filterSubjectOf } from "../src/event-log.ts";

describe("NATS event log: the subject a follow filters on", () => {
  it("is the pattern's own subject for one pattern without #", () => {
    expect(filterSubjectOf("m", ["orders.created"])).toBe("m.evt.orders.created");
    expect(filterSubjectOf("m", ["orders.*"])).toBe("m.evt.orders.*");
    expect(filterSubjectOf("m", ["*.created"])).toBe("m.evt.*.created");
  });

  it("is every event for # (it also matches no word), several patterns, or none", () => {
    expect(filterSubjectOf("m", ["orders.#"])).toBe("m.evt.>");
    expect(filterSubjectOf("m", ["#"])).toBe("m.evt.>");
    expect(filterSubjectOf("m", ["a.*", "b.*"])).toBe("m.evt.>");
    expect(filterSubjectOf("m", undefined)).toBe("m.evt.>");
  });
});
