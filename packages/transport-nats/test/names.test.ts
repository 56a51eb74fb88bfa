import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  encodeName,
  eventSubject,
  isLiteralSubject,
  isSubjectToken,
  parseAckSubject,
  serviceStreamName,
  topicOfSubject,
} from "../src/names.ts";

describe("subjects and names", () => {
  it("accepts literal subjects and refuses wildcards, whitespace and empty words", () => {
    for (const ok of ["svc", "a.b.c", "nuropb-svc-0123-rq", "ünïcødé", "a_b-c"]) {
      expect(isLiteralSubject(ok), ok).toBe(true);
    }
    for (const bad of ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "*", ">", "a\tb", "a\nb"]) {
      expect(isLiteralSubject(bad), JSON.stringify(bad)).toBe(false);
    }
    expect(isSubjectToken("a.b")).toBe(false);
  });

  it("recovers an event's topic from its subject", () => {
    expect(topicOfSubject("mesh", eventSubject("mesh", "user.created"))).toBe("user.created");
    expect(topicOfSubject("m", eventSubject("m", "x"))).toBe("x");
  });

  it("encodes names into stream-safe, injective names", () => {
    fc.assert(
      fc.property(
        fc.string({ unit: "grapheme", maxLength: 20 }),
        fc.string({ maxLength: 20 }),
        (a, b) => {
          const ea = encodeName(a);
          expect(ea).toMatch(/^[A-Za-z0-9_~]*$/);
          if (a !== b) expect(ea).not.toBe(encodeName(b));
        },
      ),
      { seed: 7, numRuns: 500 },
    );
    expect(encodeName("test_service")).toBe("test_service");
    expect(serviceStreamName("nuropb", "a.b")).toBe("NUROPB-nuropb-SQ-a~2e~b");
    expect(serviceStreamName("m-1", "x")).not.toBe(serviceStreamName("m", "1-x"));
  });
});

describe("parseAckSubject", () => {
  it("reads the v1 form (9 tokens)", () => {
    expect(parseAckSubject("$JS.ACK.S1.svc.3.17.5.1795378419282864012.0")).toEqual({
      stream: "S1",
      consumer: "svc",
      deliveryCount: 3,
      streamSequence: 17,
      timestampMs: 1795378419282,
    });
  });

  it("reads the v2 form with domain and account hash", () => {
    const info = parseAckSubject("$JS.ACK.hub.ACCHASH.S2.c.1.42.42.1795378419282864012.7.r4nd");
    expect(info).toMatchObject({
      stream: "S2",
      consumer: "c",
      deliveryCount: 1,
      streamSequence: 42,
    });
  });

  it("returns undefined for anything else", () => {
    for (const s of [
      undefined,
      "",
      "_INBOX.abc",
      "$JS.ACK.S.c.1",
      "$JS.ACK.S.c.x.1.1.1.0",
      "$JS.ACK.S.c.1.1.1.notnum.0",
    ]) {
      expect(parseAckSubject(s)).toBeUndefined();
    }
  });
});
