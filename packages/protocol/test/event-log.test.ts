import { describe, expect, it } from "vitest";
import { eventLogOf } from "@nuropb/protocol";
import {
  assertEventLogFollowOptions,
  assertEventLogReadOptions,
  assertEventLogRetention,
  assertEventLogTopic,
} from "@nuropb/protocol/transport-kit";

const isPosition = (p: string): boolean => /^[0-9]+$/.test(p);

describe("event-log argument checks", () => {
  it("accepts what the contract allows", () => {
    assertEventLogRetention({ maxAgeMs: 1, maxBytes: 1 });
    assertEventLogTopic("orders.created");
    for (const from of ["start", "end", { time: 0 }, { after: "12" }] as const) {
      assertEventLogReadOptions(
        { from, limit: 1, topics: ["orders.*", "#"], until: 5 },
        isPosition,
      );
      assertEventLogFollowOptions({ from, signal: new AbortController().signal }, isPosition);
    }
  });

  it("refuses the rest with a TypeError naming it", () => {
    const bad: [() => void, RegExp][] = [
      [() => assertEventLogRetention({ maxAgeMs: 0, maxBytes: 1 }), /maxAgeMs/],
      [() => assertEventLogRetention({ maxAgeMs: 1, maxBytes: 1.5 }), /maxBytes/],
      [() => assertEventLogRetention(null as never), /retention/],
      [() => assertEventLogTopic("orders.*"), /no wildcards/],
      [() => assertEventLogTopic("a..b"), /no wildcards/],
      [() => assertEventLogReadOptions({ from: "start", limit: 0 }, isPosition), /limit/],
      [
        () => assertEventLogReadOptions({ from: { after: "x-1" }, limit: 1 }, isPosition),
        /position/,
      ],
      [
        () => assertEventLogReadOptions({ from: { time: Number.NaN }, limit: 1 }, isPosition),
        /from/,
      ],
      [() => assertEventLogReadOptions({ from: "later" as never, limit: 1 }, isPosition), /from/],
      [
        () => assertEventLogReadOptions({ from: "start", limit: 1, until: Infinity }, isPosition),
        /until/,
      ],
      [
        () => assertEventLogReadOptions({ from: "start", limit: 1, topics: ["a..b"] }, isPosition),
        /pattern|topic/,
      ],
      [
        () => assertEventLogFollowOptions({ from: "end", signal: {} as never }, isPosition),
        /signal/,
      ],
    ];
    for (const [call, message] of bad) expect(call).toThrow(message);
    for (const [call] of bad) expect(call).toThrow(TypeError);
  });

  it("eventLogOf finds a complete capability and refuses a partial one", () => {
    expect(eventLogOf({})).toBeUndefined();
    expect(() => eventLogOf({ eventLog: { setup: () => undefined } })).toThrow(/no available/);
  });
});
