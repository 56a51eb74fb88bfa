import { describe, expect, it } from "vitest";
import { NuropbMessageError, decodeFrame, encodePayload, isNuropbError } from "@nuropb/protocol";
import type { DecodableFrame, Payload } from "@nuropb/protocol";
import { pythonDumps } from "./support/wire-samples.ts";

const CID = "599a2f4d40644a36b6342a8ee3ed7d43";
const utf8 = new TextEncoder();

type Kind = "request" | "command" | "event" | "response";

function headersFor(type: unknown): Record<string, unknown> {
  return {
    nuropb_protocol: "0.1.1",
    nuropb_version: "0.1.8",
    nuropb_type: type,
    trace_id: "trace-x",
    encrypted: "",
  };
}

const VALID: Record<Kind, Record<string, unknown>> = {
  request: {
    tag: "request",
    service: "svc",
    method: "m",
    params: { a: 1 },
    correlation_id: CID,
    context: {},
    trace_id: "trace-x",
  },
  command: {
    tag: "command",
    service: "svc",
    method: "m",
    params: {},
    correlation_id: CID,
    context: { k: "v" },
    trace_id: "trace-x",
  },
  event: {
    tag: "event",
    topic: "a.b",
    event: { x: 1 },
    context: {},
    trace_id: "trace-x",
    correlation_id: CID,
    target: null,
  },
  response: {
    tag: "response",
    result: 1,
    error: null,
    correlation_id: CID,
    trace_id: "trace-x",
    context: {},
    warning: null,
    reply_to: "rq",
  },
};

function frame(
  kind: Kind,
  change: Record<string, unknown> = {},
  omit: readonly string[] = [],
): DecodableFrame {
  const body: Record<string, unknown> = { ...VALID[kind], ...change };
  for (const k of omit) delete body[k];
  return { headers: headersFor(kind), body: utf8.encode(pythonDumps(body)), correlationId: CID };
}

/** Asserts decoding throws a NuropbMessageError whose message matches `pattern`. */
function expectMessageError(f: DecodableFrame, pattern: RegExp): void {
  let thrown: unknown;
  try {
    decodeFrame(f);
  } catch (err) {
    thrown = err;
  }
  expect(thrown, `expected a NuropbMessageError matching ${String(pattern)}`).toBeInstanceOf(
    NuropbMessageError,
  );
  expect(isNuropbError(thrown)).toBe(true);
  expect((thrown as NuropbMessageError).wireName).toBe("NuropbMessageError");
  expect((thrown as Error).message).toMatch(pattern);
  // Our own checks, not a wrapped internal failure.
  expect((thrown as Error).message).not.toMatch(/^undecodable message:/);
}

describe("the valid bodies used below decode", () => {
  it.each(Object.keys(VALID) as Kind[])("%s", (kind) => {
    expect(decodeFrame(frame(kind)).type).toBe(kind);
  });
});

describe("bodies that are not a JSON object", () => {
  it.each([
    ["empty", ""],
    ["truncated", '{"tag": "request", "service": '],
    ["plain text", "hello"],
    ["single quotes", "{'tag': 'request'}"],
    ["trailing comma", '{"tag": "request",}'],
    ["two documents", "{} {}"],
  ])("not JSON: %s", (_name, text) => {
    expectMessageError(
      { headers: headersFor("request"), body: utf8.encode(text) },
      /body is not valid JSON/,
    );
  });

  it.each([
    ["invalid byte 0xff", [0x7b, 0xff, 0x7d]],
    ["lone continuation byte", [0x7b, 0x80, 0x7d]],
    ["overlong encoding of /", [0x7b, 0xc0, 0xaf, 0x7d]],
    ["truncated 3-byte sequence", [0x7b, 0x22, 0xe2, 0x82, 0x22, 0x7d]],
    ["encoded surrogate", [0x22, 0xed, 0xa0, 0x80, 0x22]],
  ])("not UTF-8: %s", (_name, bytes) => {
    expectMessageError(
      { headers: headersFor("request"), body: new Uint8Array(bytes) },
      /body is not valid UTF-8/,
    );
  });

  it.each([
    ["list", "[1, 2]", /not a dictionary: list/],
    ["number", "42", /not a dictionary: number/],
    ["null", "null", /not a dictionary: null/],
    ["string", '"request"', /not a dictionary: string/],
    ["boolean", "true", /not a dictionary: boolean/],
    ["NaN token", "NaN", /not a dictionary: number/],
  ])("top level %s", (_name, text, pattern) => {
    expectMessageError({ headers: headersFor("request"), body: text }, pattern);
  });
});

describe("headers", () => {
  it.each([
    ["null", null],
    ["undefined", undefined],
  ])("headers %s", (_name, headers) => {
    expectMessageError(
      { headers, body: pythonDumps(VALID.request), correlationId: CID },
      /message has no headers/,
    );
  });

  it("no nuropb_protocol header", () => {
    const { nuropb_protocol: _p, ...headers } = headersFor("request");
    expectMessageError({ headers, body: pythonDumps(VALID.request) }, /nuropb_protocol/);
  });

  it("a non-string nuropb_protocol header", () => {
    expectMessageError(
      { headers: { ...headersFor("request"), nuropb_protocol: 0.11 }, body: "{}" },
      /nuropb_protocol/,
    );
  });

  it.each(["0.0.9", "0.1.0", "0.1.2", "1.0", ""])("unsupported protocol version %j", (v) => {
    expectMessageError(
      {
        headers: { ...headersFor("request"), nuropb_protocol: v },
        body: pythonDumps(VALID.request),
      },
      new RegExp(`nuropb_protocol '${v.replaceAll(".", "\\.")}' is not supported`),
    );
  });

  it("the version check comes before the body is read", () => {
    expectMessageError(
      { headers: { ...headersFor("request"), nuropb_protocol: "0.0.9" }, body: "not json" },
      /nuropb_protocol '0\.0\.9' is not supported/,
    );
  });

  it.each([
    ["missing", undefined, /message_type missing is not supported/],
    ["unknown", "foo", /message_type 'foo' is not supported/],
    ["upper case", "REQUEST", /message_type 'REQUEST' is not supported/],
    ["a number", 1, /message_type number 1 is not supported/],
  ])("nuropb_type %s", (_name, type, pattern) => {
    expectMessageError({ headers: headersFor(type), body: pythonDumps(VALID.request) }, pattern);
  });

  it("a trace_id header that is neither a string nor void", () => {
    expectMessageError(
      { headers: { ...headersFor("request"), trace_id: 12 }, body: pythonDumps(VALID.request) },
      /header trace_id must be a string or void/,
    );
  });
});

describe("tag and correlation id", () => {
  it.each([
    ["request", "response"],
    ["response", "request"],
    ["event", "command"],
    ["command", "request"],
  ] as const)("header %s with body tag %s", (header, tag) => {
    expectMessageError(
      { headers: headersFor(header), body: pythonDumps({ ...VALID[header], tag }) },
      new RegExp(`header nuropb_type '${header}' disagrees with body tag '${tag}'`),
    );
  });

  it("unknown body tag", () => {
    expectMessageError(frame("request", { tag: "foo" }), /disagrees with body tag 'foo'/);
  });

  it("missing body tag", () => {
    expectMessageError(frame("request", {}, ["tag"]), /disagrees with body tag missing/);
  });

  it("correlation id property different from the body's", () => {
    expectMessageError(
      { ...frame("request"), correlationId: "0123456789abcdef0123456789abcdef" },
      /correlation id '0123456789abcdef0123456789abcdef' disagrees with body correlation_id/,
    );
  });

  it("no correlation id anywhere", () => {
    expectMessageError(
      { ...frame("request", {}, ["correlation_id"]), correlationId: undefined },
      /message has no correlation id/,
    );
  });

  it("a non-string body correlation_id", () => {
    expectMessageError(
      frame("response", { correlation_id: 5 }),
      /field 'correlation_id' must be a string/,
    );
  });
});

type FieldCase = readonly [kind: Kind, field: string, value: unknown, pattern: RegExp];

const MISSING: readonly (readonly [Kind, string, RegExp])[] = [
  ["request", "service", /field 'service' must be a string, got missing/],
  ["request", "method", /field 'method' must be a string, got missing/],
  ["request", "params", /field 'params' must be an object, got missing/],
  ["command", "service", /field 'service' must be a string, got missing/],
  ["command", "method", /field 'method' must be a string, got missing/],
  ["command", "params", /field 'params' must be an object, got missing/],
  ["event", "topic", /field 'topic' must be a string, got missing/],
  ["event", "event", /event body has no 'event' field/],
  ["response", "result", /response body has no 'result' field/],
  ["response", "error", /response body has no 'error' field/],
];

const MISTYPED: readonly FieldCase[] = [
  ["request", "service", 1, /field 'service' must be a string, got number 1/],
  ["request", "service", null, /field 'service' must be a string, got null/],
  ["request", "method", ["m"], /field 'method' must be a string, got a list/],
  ["request", "params", [], /field 'params' must be an object, got a list/],
  ["request", "params", null, /field 'params' must be an object, got null/],
  ["request", "params", "a=1", /field 'params' must be an object, got 'a=1'/],
  ["request", "context", [], /field 'context' must be an object, got a list/],
  ["request", "context", "ctx", /field 'context' must be an object, got 'ctx'/],
  ["request", "trace_id", 7, /field 'trace_id' must be a string or null, got number 7/],
  ["command", "service", false, /field 'service' must be a string, got boolean false/],
  ["command", "method", {}, /field 'method' must be a string, got an object/],
  ["command", "params", 3, /field 'params' must be an object, got number 3/],
  ["command", "context", 1, /field 'context' must be an object, got number 1/],
  ["event", "topic", null, /field 'topic' must be a string, got null/],
  ["event", "topic", ["a"], /field 'topic' must be a string, got a list/],
  ["event", "target", "svc", /'target' must be a list of strings or null, got 'svc'/],
  ["event", "target", ["svc", 1], /'target' must be a list of strings or null, got a list/],
  ["event", "target", {}, /'target' must be a list of strings or null, got an object/],
  ["event", "context", true, /field 'context' must be an object, got boolean true/],
  ["response", "error", "boom", /'error' must be an object or null, got 'boom'/],
  ["response", "error", ["e"], /'error' must be an object or null, got a list/],
  ["response", "error", 0, /'error' must be an object or null, got number 0/],
  ["response", "error", {}, /error object has no string 'error'/],
  ["response", "error", { error: 1, description: "d" }, /error object has no string 'error'/],
  ["response", "error", { error: "E" }, /error object has no string 'description'/],
  [
    "response",
    "error",
    { error: "E", description: null },
    /error object has no string 'description'/,
  ],
  ["response", "warning", 1, /'warning' must be a string or null, got number 1/],
  ["response", "warning", {}, /'warning' must be a string or null, got an object/],
  ["response", "reply_to", 5, /'reply_to' must be a string, got number 5/],
  ["response", "reply_to", [], /'reply_to' must be a string, got a list/],
  ["response", "context", [], /field 'context' must be an object, got a list/],
];

describe("missing fields", () => {
  it.each(MISSING)("%s without %s", (kind, field, pattern) => {
    expectMessageError(frame(kind, {}, [field]), pattern);
  });
});

describe("mistyped fields", () => {
  it.each(MISTYPED)("%s.%s = %j", (kind, field, value, pattern) => {
    expectMessageError(frame(kind, { [field]: value }), pattern);
  });
});

describe("optional fields Python always sends but we tolerate missing", () => {
  it("request without context gets {}", () => {
    expect(decodeFrame(frame("request", {}, ["context"])).payload.context).toEqual({});
  });
  it("event without target gets null", () => {
    const d = decodeFrame(frame("event", {}, ["target"]));
    expect(d.payload.tag === "event" && d.payload.target).toBeNull();
  });
  it("response without warning / reply_to / context gets null / '' / {}", () => {
    const d = decodeFrame(frame("response", {}, ["warning", "reply_to", "context"]));
    expect(d.payload).toMatchObject({ warning: null, reply_to: "", context: {} });
  });
  it("event whose payload is null is still an event", () => {
    const d = decodeFrame(frame("event", { event: null }));
    expect(d.payload.tag === "event" && d.payload.event).toBeNull();
  });
});

describe("encodePayload refuses what cannot be sent", () => {
  const request = VALID.request as unknown as Payload;

  it.each([
    ["no tag", { ...VALID.request, tag: undefined }, /cannot encode a payload with tag missing/],
    ["unknown tag", { ...VALID.request, tag: "rpc" }, /cannot encode a payload with tag 'rpc'/],
    ["empty correlation id", { ...VALID.request, correlation_id: "" }, /correlation_id must be/],
    ["numeric correlation id", { ...VALID.request, correlation_id: 1 }, /correlation_id must be/],
  ])("%s", (_name, payload, pattern) => {
    expect(() => encodePayload(payload as unknown as Payload)).toThrow(NuropbMessageError);
    expect(() => encodePayload(payload as unknown as Payload)).toThrow(pattern);
  });

  it.each([-1, 1.5, NaN, Infinity, 2 ** 60])("ttlMs %d", (ttlMs) => {
    expect(() => encodePayload(request, { ttlMs })).toThrow(
      /ttlMs must be a non-negative integer of milliseconds/,
    );
  });

  it("ttlMs 0 means no expiry: no ttlMs on the frame", () => {
    expect(encodePayload(request, { ttlMs: 0 }).ttlMs).toBeUndefined();
  });

  it("events and responses carry no ttl or replyTo even when given", () => {
    const f = encodePayload(VALID.event as unknown as Payload, { ttlMs: 5, replyTo: "x" });
    expect(f.ttlMs).toBeUndefined();
    expect(f.replyTo).toBeUndefined();
  });

  it.each([
    [
      "request",
      "service",
      1,
      /cannot encode a request: field 'service' must be a string, got number 1/,
    ],
    ["request", "service", undefined, /field 'service' must be a string, got missing/],
    ["command", "method", null, /cannot encode a command: field 'method' must be a string/],
    ["request", "params", [1], /field 'params' must be an object, got a list/],
    ["request", "params", undefined, /field 'params' must be an object, got missing/],
    ["request", "params", "p", /field 'params' must be an object, got 'p'/],
    ["request", "context", "ctx", /field 'context' must be an object, got 'ctx'/],
    ["request", "trace_id", 5, /field 'trace_id' must be a string or null, got number 5/],
    ["event", "topic", 1, /cannot encode a event: field 'topic' must be a string/],
    ["event", "target", ["a", 1], /field 'target' must be a list of strings or null/],
    ["event", "target", "a", /field 'target' must be a list of strings or null/],
    [
      "response",
      "error",
      { error: 1, description: "d" },
      /field 'error' must be null or an object/,
    ],
    ["response", "error", { error: "E" }, /field 'error' must be null or an object/],
    ["response", "error", "boom", /field 'error' must be null or an object/],
    ["response", "warning", 5, /field 'warning' must be a string or null, got number 5/],
    ["response", "reply_to", undefined, /field 'reply_to' must be a string, got missing/],
    ["response", "context", [], /field 'context' must be an object, got a list/],
  ] as const)("%s with %s = %j", (kind, field, value, pattern) => {
    const payload = { ...VALID[kind], [field]: value } as unknown as Payload;
    expect(() => encodePayload(payload)).toThrow(NuropbMessageError);
    expect(() => encodePayload(payload)).toThrow(pattern);
  });

  it("a cyclic params object", () => {
    const params: Record<string, unknown> = {};
    params.self = params;
    expect(() => encodePayload({ ...request, params } as Payload)).toThrow(
      /cyclic or nested deeper/,
    );
  });
});
