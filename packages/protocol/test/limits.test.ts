import { describe, expect, it } from "vitest";
import {
  MAX_MESSAGE_TTL_MS,
  MAX_TIMER_MS,
  NuropbMessageError,
  assertFrameTtl,
  isLogger,
  noopLogger,
  positiveIntOption,
  timerOption,
} from "@nuropb/protocol";

describe("shared option and frame checks", () => {
  it("assertFrameTtl takes absent and 0..2^32-1, and refuses the rest with NuropbMessageError", () => {
    for (const ok of [undefined, 0, 1, MAX_MESSAGE_TTL_MS])
      expect(() => assertFrameTtl(ok)).not.toThrow();
    for (const [bad, msg] of [
      [-1, /non-negative integer/],
      [1.5, /non-negative integer/],
      ["10", /non-negative integer/],
      [MAX_MESSAGE_TTL_MS + 1, /at most 4294967295 ms/],
    ] as const) {
      expect(() => assertFrameTtl(bad)).toThrow(NuropbMessageError);
      expect(() => assertFrameTtl(bad)).toThrow(msg);
    }
  });

  it("timerOption and positiveIntOption name the owner and the option", () => {
    expect(timerOption("f", "waitMs", undefined, 5)).toBe(5);
    expect(timerOption("f", "waitMs", MAX_TIMER_MS, 5)).toBe(MAX_TIMER_MS);
    expect(() => timerOption("f", "waitMs", MAX_TIMER_MS + 1, 5)).toThrow(
      "f: 'waitMs' must be from 1 to 2147483647 ms, got 2147483648",
    );
    expect(() => timerOption("f", "waitMs", 100, 5, 500)).toThrow(/from 500 to/);
    expect(() => positiveIntOption("f", "n", 0, 1)).toThrow(
      "f: 'n' must be a positive integer, got 0",
    );
  });

  it("isLogger wants every Logger method", () => {
    expect(isLogger(noopLogger)).toBe(true);
    expect(isLogger({})).toBe(false);
    expect(isLogger(null)).toBe(false);
    expect(isLogger({ ...noopLogger, child: "x" })).toBe(false);
  });
});
