import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { NuropbMessageError, decodeFrame, encodePayload } from "@nuropb/protocol";
import type { Frame, Payload, ResponsePayload } from "@nuropb/protocol";

const text = (f: Frame): string => new TextDecoder().decode(f.body);
const decode = (f: Frame) =>
  decodeFrame({ headers: f.headers, body: f.body, correlationId: f.correlationId });

const id = fc.string({ minLength: 1, maxLength: 12 });
const json = fc.jsonValue({ maxDepth: 3 });
const object = fc.dictionary(fc.string({ maxLength: 6 }), json, { maxKeys: 4 });

const rpc = fc.record({
  tag: fc.constantFrom("request" as const, "command" as const),
  service: id,
  method: id,
  params: object,
  correlation_id: id,
  context: object,
  trace_id: fc.option(id, { nil: null }),
});
const response = fc.record({
  tag: fc.constant("response" as const),
  result: json,
  error: fc.option(fc.record({ error: id, description: fc.string() }), { nil: null }),
  correlation_id: id,
  trace_id: fc.option(id, { nil: null }),
  context: object,
  warning: fc.option(fc.string(), { nil: null }),
  reply_to: id,
});

describe("slim bodies (transports read only by nuropb-ts)", () => {
  it("decode to the payload the whole body decodes to (a response's reply_to reads empty)", () => {
    fc.assert(
      fc.property(fc.oneof(rpc, response), (payload: Payload) => {
        const whole = decode(encodePayload(payload, { replyTo: "r", ttlMs: 5 }));
        const slim = encodePayload(payload, { replyTo: "r", ttlMs: 5, slim: true });
        expect(slim.correlationId).toBe(payload.correlation_id);
        expect(slim.headers).toEqual(encodePayload(payload).headers);
        const read = decode(slim);
        if (whole.type === "response") {
          expect(read.payload).toEqual({ ...whole.payload, reply_to: "" });
        } else expect(read).toEqual(whole);
        expect(read.correlationId).toBe(whole.correlationId);
        expect(read.traceId).toBe(whole.traceId);
      }),
      { numRuns: 500, seed: 0x736c696d },
    );
  });

  it("leave out the ids, an empty context, a null warning and reply_to; keep the rest", () => {
    const request: Payload = {
      tag: "request",
      service: "s",
      method: "m",
      params: { a: 1 },
      correlation_id: "c",
      context: {},
      trace_id: "t",
    };
    expect(text(encodePayload(request, { slim: true }))).toBe(
      '{"tag":"request","service":"s","method":"m","params":{"a":1}}',
    );
    expect(text(encodePayload({ ...request, context: { user: "u" } }, { slim: true }))).toBe(
      '{"tag":"request","service":"s","method":"m","params":{"a":1},"context":{"user":"u"}}',
    );
    const answer: ResponsePayload = {
      tag: "response",
      result: [1],
      error: null,
      correlation_id: "c",
      trace_id: null,
      context: {},
      warning: null,
      reply_to: "r",
    };
    expect(text(encodePayload(answer, { slim: true }))).toBe(
      '{"tag":"response","result":[1],"error":null}',
    );
    expect(text(encodePayload({ ...answer, warning: "w" }, { slim: true }))).toBe(
      '{"tag":"response","result":[1],"error":null,"warning":"w"}',
    );
  });

  it("never apply to events (a subscriber may read the log or a bridge)", () => {
    const event: Payload = {
      tag: "event",
      topic: "a.b",
      event: 1,
      context: {},
      trace_id: "t",
      correlation_id: "c",
      target: null,
    };
    expect(text(encodePayload(event, { slim: true }))).toBe(text(encodePayload(event)));
  });

  it("check what they leave out as a whole body does", () => {
    const answer = {
      tag: "response",
      result: null,
      error: null,
      correlation_id: "c",
      trace_id: null,
      context: {},
      warning: null,
    };
    const bad = [
      { ...answer, reply_to: 7 },
      { ...answer, reply_to: "r", trace_id: 7 },
      { ...answer, reply_to: "r", warning: 7 },
      { ...answer, reply_to: "r", context: [] },
      { ...answer, reply_to: "r", correlation_id: "" },
    ];
    for (const payload of bad) {
      expect(() => encodePayload(payload as unknown as Payload, { slim: true })).toThrow(
        NuropbMessageError,
      );
    }
  });
});
