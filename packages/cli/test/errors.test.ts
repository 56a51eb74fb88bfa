import {
  NuropbAuthorizationError,
  NuropbConnectionClosedError,
  NuropbError,
  NuropbHandlingError,
  NuropbNotDeliveredError,
  NuropbTimeoutError,
  NuropbTransportError,
} from "@nuropb/protocol";
import { expect, it } from "vitest";
import { CliError, ExitCode, exitCodeFor } from "../src/errors.ts";

it("maps failures to exit codes: transport 4, remote 3, the rest 1", () => {
  expect(exitCodeFor(new NuropbTransportError("x"))).toBe(4);
  expect(exitCodeFor(new NuropbConnectionClosedError("x"))).toBe(4);
  expect(exitCodeFor(new NuropbTimeoutError("x"))).toBe(4);
  expect(exitCodeFor(new NuropbNotDeliveredError("x"))).toBe(4);
  expect(exitCodeFor(new NuropbHandlingError("x"))).toBe(3);
  expect(exitCodeFor(new NuropbAuthorizationError("x"))).toBe(3);
  expect(exitCodeFor(new NuropbError("x", { wireName: "RuntimeError" }))).toBe(3);
  expect(exitCodeFor(new TypeError("x"))).toBe(1); // arguments are checked before: a bug
  expect(exitCodeFor(new CliError("x", ExitCode.transport))).toBe(4);
  expect(exitCodeFor(new Error("x"))).toBe(1);
  expect(exitCodeFor("a string")).toBe(1);
  expect(ExitCode).toEqual({
    ok: 0,
    failed: 1,
    usage: 2,
    remote: 3,
    transport: 4,
    interrupted: 130,
  });
});
