import { afterEach, describe, expect, it, vi } from "vitest";
import { NuropbTimeoutError, encodePayload, noopLogger } from "@nuropb/protocol";
import type { InboundFrame } from "@nuropb/protocol";
import { PendingResponses } from "../src/pending-responses.ts";
import { Sealing } from "../src/sealing.ts";

function pendingResponses(): PendingResponses {
  return new PendingResponses(new Sealing({}), 1 << 20, noopLogger);
}

function response(correlationId: string, result: unknown): InboundFrame {
  const frame = encodePayload({
    tag: "response",
    result,
    error: null,
    correlation_id: correlationId,
    trace_id: null,
    context: {},
    warning: null,
    reply_to: "rq",
  });
  return { ...frame, redelivered: false };
}

afterEach(() => {
  vi.useRealTimers();
});

describe("PendingResponses", () => {
  it("completes a request with its response; its ttl passing later changes nothing", async () => {
    vi.useFakeTimers();
    const pending = pendingResponses();
    const outcome = pending.expect("c1", "s", "m", 1000, {}, undefined, undefined, undefined);
    pending.onResponse(response("c1", { ok: 1 }));
    await expect(outcome).resolves.toEqual({ ok: 1 });
    expect(pending.size).toBe(0);
    vi.advanceTimersByTime(2000);
    expect(pending.size).toBe(0);
  });

  it("fails each of several requests at its own ttl", async () => {
    vi.useFakeTimers();
    const pending = pendingResponses();
    const failed: string[] = [];
    const expect_ = (id: string, ttlMs: number): void =>
      void pending
        .expect(id, "s", "m", ttlMs, {}, undefined, undefined, undefined)
        .catch(() => failed.push(id));
    expect_("long", 3000);
    expect_("short", 1000);
    expect_("answered", 1000);
    vi.advanceTimersByTime(500);
    expect_("later", 1000);
    pending.onResponse(response("answered", 1));
    await vi.advanceTimersByTimeAsync(600); // 1100 ms in
    expect(failed).toEqual(["short"]);
    await vi.advanceTimersByTimeAsync(399);
    expect(failed).toEqual(["short"]);
    await vi.advanceTimersByTimeAsync(1); // 1500 ms: "later" was sent at 500 ms
    expect(failed).toEqual(["short", "later"]);
    await vi.advanceTimersByTimeAsync(1499);
    expect(failed).toEqual(["short", "later"]);
    await vi.advanceTimersByTimeAsync(1);
    expect(failed).toEqual(["short", "later", "long"]);
    expect(pending.size).toBe(0);
  });

  it("fails a request at its ttl with a retryable NuropbTimeoutError naming it", async () => {
    vi.useFakeTimers();
    const pending = pendingResponses();
    const outcome = pending.expect("c1", "s", "m", 1000, {}, undefined, undefined, undefined);
    const seen = outcome.catch((err: unknown) => err);
    vi.advanceTimersByTime(999);
    expect(pending.size).toBe(1);
    vi.advanceTimersByTime(1);
    const err = (await seen) as NuropbTimeoutError;
    expect(err).toBeInstanceOf(NuropbTimeoutError);
    expect(err.message).toBe("no response from s.m within 1000 ms");
    expect(err.retryable).toBe(true);
    expect(err.details).toEqual({ service: "s", method: "m", correlationId: "c1", ttlMs: 1000 });
    expect(pending.size).toBe(0);
    // A response after the ttl is ignored.
    pending.onResponse(response("c1", 1));
  });

  it("fails a sent request when its signal aborts, with the signal's reason", async () => {
    vi.useFakeTimers();
    const pending = pendingResponses();
    const abort = new AbortController();
    const outcome = pending.expect(
      "c1",
      "s",
      "m",
      1000,
      { signal: abort.signal },
      undefined,
      undefined,
      undefined,
    );
    abort.abort(new Error("user gave up"));
    await expect(outcome).rejects.toThrow("user gave up");
    expect(pending.size).toBe(0);
  });

  it("a request whose signal aborted already fails at once and is not registered", async () => {
    vi.useFakeTimers();
    const pending = pendingResponses();
    const abort = new AbortController();
    abort.abort(new Error("gone before"));
    const outcome = pending.expect(
      "c1",
      "s",
      "m",
      1000,
      { signal: abort.signal },
      undefined,
      undefined,
      undefined,
    );
    expect(pending.size).toBe(0);
    await expect(outcome).rejects.toThrow("gone before");
  });

  it("an abort reason that is not an Error fails the request with NuropbTimeoutError", async () => {
    const pending = pendingResponses();
    const abort = new AbortController();
    const outcome = pending.expect(
      "c1",
      "s",
      "m",
      1000,
      { signal: abort.signal },
      undefined,
      undefined,
      undefined,
    );
    abort.abort("gave up");
    await expect(outcome).rejects.toThrow(new NuropbTimeoutError("request aborted"));
  });

  it("a response removes the abort listener from the caller's signal", async () => {
    const pending = pendingResponses();
    const abort = new AbortController();
    const remove = vi.spyOn(abort.signal, "removeEventListener");
    const outcome = pending.expect(
      "c1",
      "s",
      "m",
      1000,
      { signal: abort.signal },
      undefined,
      undefined,
      undefined,
    );
    pending.onResponse(response("c1", "done"));
    await expect(outcome).resolves.toBe("done");
    expect(remove).toHaveBeenCalledWith("abort", expect.any(Function));
    abort.abort(new Error("too late"));
  });

  it("a completed record lets go of its timer and the caller's resolvers", async () => {
    // A long-lived Map keeps the entries of each table it outgrows until a full collection, so
    // a completed record must not hold the caller's promise (and result) or its timer.
    const setTimer = vi.spyOn(globalThis, "setTimeout");
    const pending = pendingResponses();
    const outcome = pending.expect("c1", "s", "m", 1000, {}, undefined, undefined, undefined);
    // setTimeout(expire, ttlMs, correlationId, record, ttlMs): the record is its 4th argument.
    const args = setTimer.mock.calls[0] as unknown[] | undefined;
    const record = args?.[3] as { timer: unknown; resolve: unknown; reject: unknown } | undefined;
    expect(record?.timer).toBeDefined();
    const resolve = record?.resolve;
    pending.onResponse(response("c1", { ok: 1 }));
    await expect(outcome).resolves.toEqual({ ok: 1 });
    expect(record?.timer).toBeUndefined();
    expect(record?.resolve).not.toBe(resolve);
    expect(record?.reject).toBe(record?.resolve);
    setTimer.mockRestore();
  });
});
