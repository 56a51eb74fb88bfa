import { describe, expect, expectTypeOf, it } from "vitest";
import { decodeFrame, encodePayload, newId } from "@nuropb/protocol";
import type { Frame, Payload, RequestPayload } from "@nuropb/protocol";

function request(params: Record<string, unknown>): RequestPayload {
  return {
    tag: "request",
    service: "svc",
    method: "echo",
    params,
    correlation_id: newId(),
    context: {},
    trace_id: null,
  };
}

const text = (frame: Frame): string => new TextDecoder().decode(frame.body);

describe("encoded body bytes", () => {
  it("are a plain Uint8Array holding exactly the UTF-8 of the JSON", () => {
    const payload = request({ s: "é 😀 \u2028", n: 1 });
    const frame = encodePayload(payload);
    expect(Object.getPrototypeOf(frame.body)).toBe(Uint8Array.prototype);
    expect(text(frame)).toBe(JSON.stringify(payload));
    expect(Array.from(frame.body)).toEqual(Array.from(new TextEncoder().encode(text(frame))));
  });

  it("many bodies kept at once stay intact (no shared bytes between frames)", () => {
    const frames: [RequestPayload, Frame][] = [];
    for (let i = 0; i < 2_000; i++) {
      const p = request({ i, s: "x".repeat(i % 97), u: i % 5 === 0 ? "ü€😀" : "a" });
      frames.push([p, encodePayload(p)]);
    }
    const starts = new Map<ArrayBufferLike, Set<number>>();
    for (const [p, f] of frames) {
      expect(decodeFrame(f).payload).toEqual(p);
      // Views into a shared slab: no two live frames start at the same place of one buffer.
      const used = starts.get(f.body.buffer) ?? new Set<number>();
      expect(used.has(f.body.byteOffset)).toBe(false);
      used.add(f.body.byteOffset);
      starts.set(f.body.buffer, used);
    }
  });

  it("a large body gets its own bytes and round-trips", () => {
    const big = request({ blob: "z".repeat(100_000), more: "ß".repeat(10_000) });
    const frame = encodePayload(big);
    expect(frame.body.byteOffset).toBe(0);
    expect(frame.body.buffer.byteLength).toBe(frame.body.byteLength);
    expect(decodeFrame(frame).payload).toEqual(big);
  });

  it("lone surrogates are escaped by JSON.stringify and come back unchanged", () => {
    const p = request({ s: "a\ud800b" });
    const frame = encodePayload(p);
    expect(text(frame)).toContain('"a\\ud800b"');
    expect(decodeFrame(frame).payload).toEqual(p);
  });
});

describe("encoded body fields", () => {
  const bodyOf = (frame: Frame): Record<string, unknown> =>
    JSON.parse(text(frame)) as Record<string, unknown>;

  it("always writes every field Python reads, null or {} when left undefined", () => {
    const response = bodyOf(
      encodePayload({
        tag: "response",
        result: undefined,
        error: undefined,
        correlation_id: "c1",
        reply_to: "rq",
      } as unknown as Payload),
    );
    expect(response).toEqual({
      tag: "response",
      result: null,
      error: null,
      correlation_id: "c1",
      trace_id: null,
      context: {},
      warning: null,
      reply_to: "rq",
    });
    const event = encodePayload({
      tag: "event",
      topic: "t",
      correlation_id: "c2",
    } as unknown as Payload);
    expect(bodyOf(event)).toEqual({
      tag: "event",
      topic: "t",
      event: null,
      context: {},
      trace_id: null,
      correlation_id: "c2",
      target: null,
    });
    expect(event.headers.trace_id).toBeNull();
  });

  it("writes the fields in Python's order and leaves out keys that are not protocol fields", () => {
    const frame = encodePayload({
      extra: "not sent",
      trace_id: "t",
      context: { k: 1 },
      correlation_id: "c3",
      params: { a: 1 },
      method: "m",
      service: "s",
      tag: "request",
    } as unknown as Payload);
    expect(Object.keys(bodyOf(frame))).toEqual([
      "tag",
      "service",
      "method",
      "params",
      "correlation_id",
      "context",
      "trace_id",
    ]);
    expect(text(frame)).not.toContain("not sent");
  });

  it("free-form values follow the JSON writing rules", () => {
    const frame = encodePayload({
      tag: "response",
      result: { when: new Date(0), big: 10n, set: new Set([1]) },
      error: null,
      correlation_id: "c4",
      trace_id: null,
      context: new Map([["user", "u1"]]) as unknown as Record<string, unknown>,
      warning: null,
      reply_to: "rq",
    });
    expect(bodyOf(frame)).toMatchObject({
      result: { when: "1970-01-01T00:00:00.000Z", big: 10, set: [1] },
      context: { user: "u1" },
    });
  });
});

describe("DecodedMessage", () => {
  it("is narrowed by its type: the payload of a request is a RequestPayload", () => {
    const payload = request({ n: 1 });
    const decoded = decodeFrame(encodePayload(payload));
    expectTypeOf(decoded.payload).toEqualTypeOf<Payload>();
    if (decoded.type !== "request") throw new Error(`decoded as ${decoded.type}`);
    expectTypeOf(decoded.payload).toEqualTypeOf<RequestPayload>();
    expect(decoded.payload.method).toBe("echo");
    expect(decoded.payload.params).toEqual({ n: 1 });
  });
});
