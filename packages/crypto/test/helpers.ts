import { readFileSync } from "node:fs";
import { NuropbMessageError } from "@nuropb/protocol";
import { expect } from "vitest";
import { decryptFailureReason, type DecryptFailure } from "../src/index.ts";

/** Reads a JSON fixture from test/fixtures. */
export function fixture<T>(name: string): T {
  return JSON.parse(readFileSync(new URL(`./fixtures/${name}`, import.meta.url), "utf8")) as T;
}

/** Runs `fn` and returns the NuropbMessageError it must throw. */
export function catchMessageError(fn: () => unknown): NuropbMessageError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(NuropbMessageError);
    return err as NuropbMessageError;
  }
  throw new Error("expected a NuropbMessageError, nothing was thrown");
}

/** Asserts `fn` throws a NuropbMessageError with the given reason; returns it. */
export function expectFailure(fn: () => unknown, reason: DecryptFailure): NuropbMessageError {
  const err = catchMessageError(fn);
  expect(decryptFailureReason(err), err.description).toBe(reason);
  expect(err.description.length).toBeGreaterThan(10);
  return err;
}

export const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);
export const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);
