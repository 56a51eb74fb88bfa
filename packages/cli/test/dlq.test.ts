import { describe, expect, it } from "vitest";
import type { DeadLetterEntry } from "@nuropb/protocol";
import { dlqDetailOf } from "../src/commands/dlq.ts";
import { REDACTED, redactSecrets } from "../src/scrub.ts";

function letter(body: unknown, headers: Record<string, string> = {}): DeadLetterEntry {
  return {
    id: "c1",
    service: "orders",
    reason: "rejected",
    frame: {
      headers: { nuropb_type: "command", ...headers },
      body: new TextEncoder().encode(JSON.stringify(body)),
      correlationId: "c1",
    },
  };
}

describe("nuropb dlq show: credentials", () => {
  it("redacts the credentials of a dead letter's context and keeps the rest", () => {
    const d = letter({
      tag: "request",
      params: { order: 1 },
      context: {
        Authorization: "Bearer s3cret-jwt",
        user_token: "tok-123",
        db: { password: "hunter22", host: "db1" },
        apiKey: "k-9",
        tenant: "acme",
      },
    });
    const shown = JSON.stringify(dlqDetailOf(d));
    for (const secret of ["s3cret-jwt", "tok-123", "hunter22", "k-9"]) {
      expect(shown).not.toContain(secret);
    }
    expect(dlqDetailOf(d).body).toEqual({
      tag: "request",
      params: { order: 1 },
      context: {
        Authorization: REDACTED,
        user_token: REDACTED,
        db: { password: REDACTED, host: "db1" },
        apiKey: REDACTED,
        tenant: "acme",
      },
    });
  });

  it("redacts credential-like headers and leaves bodies without a context alone", () => {
    const d = letter({ params: [1, 2] }, { x_auth_token: "t-1", nuropb_failure_error: "E" });
    const detail = dlqDetailOf(d);
    expect(detail.headers).toMatchObject({ x_auth_token: REDACTED, nuropb_failure_error: "E" });
    expect(detail.body).toEqual({ params: [1, 2] });
  });

  it("redactSecrets walks arrays and leaves scalars", () => {
    expect(redactSecrets([{ secret: 1 }, "x", null])).toEqual([{ secret: REDACTED }, "x", null]);
    expect(redactSecrets("Authorization")).toBe("Authorization");
  });
});
