import { describe, expect, it } from "vitest";
import {
  NUROPB_PROTOCOL_VERSION,
  NUROPB_VERSION,
  NuropbMessageError,
  decodeFrame,
  encodePayload,
} from "@nuropb/protocol";
import type {
  CommandPayload,
  EventPayload,
  Frame,
  Payload,
  RequestPayload,
  ResponsePayload,
} from "@nuropb/protocol";
import {
  ALL_SAMPLES,
  DECODABLE_SAMPLES,
  bodyOf,
  frameOf,
  pythonDumps,
  sample,
} from "./support/wire-samples.ts";
import type { WireSample } from "./support/wire-samples.ts";

const utf8 = new TextDecoder();

function ourBody(frame: Frame): unknown {
  return JSON.parse(utf8.decode(frame.body));
}

function withoutVersion(headers: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const { nuropb_version: _dropped, ...rest } = headers;
  return rest;
}

/** Encodes a payload with the options a Python sender used for this sample. */
function encodeLike(m: WireSample, payload: Payload): Frame {
  const expiration = m.properties.expiration;
  return encodePayload(payload, {
    ...(m.kind === "request" || m.kind === "command" ? { replyTo: m.properties.reply_to } : {}),
    ...(expiration !== undefined ? { ttlMs: Number(expiration) } : {}),
  });
}

/** Our frame carries the same headers (but our version) and properties as the Python message. */
function expectSameEnvelope(m: WireSample, frame: Frame, encrypted = false): void {
  const python = m.properties;
  expect(frame.headers.nuropb_version).toBe(NUROPB_VERSION);
  const theirs = withoutVersion(python.headers);
  if (encrypted) {
    // encodePayload writes plaintext frames; encryption (and its header) is @nuropb/crypto's job.
    expect(frame.headers.encrypted).toBe("");
    theirs.encrypted = "";
  }
  expect(withoutVersion(frame.headers)).toEqual(theirs);
  expect(Object.keys(frame.headers).sort()).toEqual(Object.keys(python.headers).sort());
  expect(frame.correlationId).toBe(python.correlation_id);
  // Python sends reply_to "" on events and responses; our frame leaves it out (the transport
  // writes the empty property).
  expect(frame.replyTo ?? "").toBe(python.reply_to);
  if (python.expiration === undefined) expect(frame.ttlMs).toBeUndefined();
  else expect(String(frame.ttlMs)).toBe(python.expiration);
}

describe("wire-samples fixture", () => {
  it("holds all 22 captured messages, plaintext bodies byte-exact in size", () => {
    expect(ALL_SAMPLES).toHaveLength(22);
    expect(DECODABLE_SAMPLES).toHaveLength(21);
    for (const m of ALL_SAMPLES) {
      if (m.rawBody !== undefined) {
        expect(new TextEncoder().encode(m.rawBody).length, m.label).toBe(m.bodyBytes);
      }
      expect(m.properties.content_type).toBe("application/json");
      expect(m.properties.headers.nuropb_type).toBe(m.kind);
    }
  });
});

describe("decodeFrame on every captured Python message", () => {
  it.each(DECODABLE_SAMPLES.map((m) => [m.label, m] as const))("%s", (_label, m) => {
    const decoded = decodeFrame(frameOf(m));
    const headers = m.properties.headers;
    const body = bodyOf(m);
    expect(decoded.type).toBe(m.kind);
    expect(decoded.payload.tag).toBe(m.kind);
    expect(decoded.protocol).toBe(NUROPB_PROTOCOL_VERSION);
    expect(decoded.version).toBe("0.1.8");
    expect(decoded.correlationId).toBe(m.properties.correlation_id);
    expect(decoded.traceId).toBe(headers.trace_id);
    expect(decoded.encrypted).toBe(headers.encrypted === "yes");
    expect(decoded.encrypted).toBe(m.decryptedBody !== undefined);
    // Every Python body carries exactly the fields of its type, so the typed payload is the body.
    expect(decoded.payload).toEqual(body);
  });

  it("types the fields of each kind", () => {
    const req = decodeFrame(frameOf(sample("request (echo)", "request")));
    expect(req.type).toBe("request");
    const r = req.payload as RequestPayload;
    expect(r.service).toBe("py-peer");
    expect(r.method).toBe("echo");
    expect(r.params).toEqual({ greeting: "hello", n: 1, nested: { ok: true } });
    expect(r.context).toEqual({ origin: "capture_wire", Authorization: "Bearer good" });
    expect(r.trace_id).toBe("trace-request");

    const cmd = decodeFrame(frameOf(sample("command (remember)", "command")));
    expect(cmd.type).toBe("command");
    expect((cmd.payload as CommandPayload).params).toEqual({ key: "k1", value: "v1" });

    const ev = decodeFrame(frameOf(sample("event published by the client", "event")));
    const e = ev.payload as EventPayload;
    expect(e.topic).toBe("interop.capture.client");
    expect(e.event).toEqual({ kind: "ping", n: 7 });
    expect(e.target).toBeNull();

    const res = decodeFrame(frameOf(sample("request (echo)", "response")));
    const p = res.payload as ResponsePayload;
    expect(p.error).toBeNull();
    expect(p.result).toEqual({ greeting: "hello", n: 1, nested: { ok: true } });
    expect(p.warning).toBeNull();
    expect(p.reply_to).toBe("nuropb-nuropb-interop-client-3358d18f181c45c7a08bbee406657871-rq");

    const failed = decodeFrame(
      frameOf(sample("request that fails with NuropbValidationError", "response")),
    );
    expect((failed.payload as ResponsePayload).error).toEqual({
      error: "NuropbValidationError",
      description: "invalid field: zip_code",
    });
    expect((failed.payload as ResponsePayload).result).toBeNull();
  });

  it("decrypted bodies decode with encrypted: true", () => {
    const m = sample("encrypted request (secret_echo)", "response");
    const decoded = decodeFrame(frameOf(m));
    expect(decoded.encrypted).toBe(true);
    expect((decoded.payload as ResponsePayload).result).toEqual({ secret: { card: "4111" } });
  });

  it("the undecryptable second response is a NuropbMessageError if fed as plaintext", () => {
    const m = ALL_SAMPLES.find((s) => s.notDecryptable !== undefined);
    expect(m?.encryptedBodyShortened).toBeDefined();
    if (m?.encryptedBodyShortened === undefined) return;
    expect(() =>
      decodeFrame({
        headers: m.properties.headers,
        body: m.encryptedBodyShortened ?? "",
        correlationId: m.properties.correlation_id,
      }),
    ).toThrow(NuropbMessageError);
  });
});

describe("encodePayload writes what Python writes", () => {
  it("request (echo): field by field", () => {
    const m = sample("request (echo)", "request");
    const payload: RequestPayload = {
      tag: "request",
      service: "py-peer",
      method: "echo",
      params: { greeting: "hello", n: 1, nested: { ok: true } },
      correlation_id: "599a2f4d40644a36b6342a8ee3ed7d43",
      context: { origin: "capture_wire", Authorization: "Bearer good" },
      trace_id: "trace-request",
    };
    const frame = encodePayload(payload, {
      replyTo: "nuropb-nuropb-interop-client-3358d18f181c45c7a08bbee406657871-rq",
      ttlMs: 3_600_000,
    });
    expect(ourBody(frame)).toEqual(bodyOf(m));
    expectSameEnvelope(m, frame);
    expect(frame.ttlMs).toBe(3_600_000);
  });

  it("command (remember): field by field", () => {
    const m = sample("command (remember)", "command");
    const payload: CommandPayload = {
      tag: "command",
      service: "py-peer",
      method: "remember",
      params: { key: "k1", value: "v1" },
      correlation_id: "77a0b10f7f4e4e3b893f87a23f6ce008",
      context: { origin: "capture_wire", Authorization: "Bearer good" },
      trace_id: "trace-command",
    };
    const frame = encodePayload(payload, {
      replyTo: "nuropb-nuropb-interop-client-3358d18f181c45c7a08bbee406657871-rq",
      ttlMs: 3_600_000,
    });
    expect(ourBody(frame)).toEqual(bodyOf(m));
    expectSameEnvelope(m, frame);
  });

  it("event published by a client: field by field", () => {
    const m = sample("event published by the client", "event");
    const payload: EventPayload = {
      tag: "event",
      topic: "interop.capture.client",
      event: { kind: "ping", n: 7 },
      context: { origin: "capture_wire", Authorization: "Bearer good" },
      trace_id: "trace-event",
      correlation_id: "a74d8f70c2044ede8172906ae49f1397",
      target: null,
    };
    const frame = encodePayload(payload);
    expect(ourBody(frame)).toEqual(bodyOf(m));
    expectSameEnvelope(m, frame);
  });

  it("event without target still writes target: null (Python needs the key)", () => {
    const m = sample("event published by the client", "event");
    const { target: _t, ...rest } = bodyOf(m);
    const frame = encodePayload(rest as unknown as EventPayload);
    expect(ourBody(frame)).toEqual(bodyOf(m));
  });

  it("response (echo): field by field", () => {
    const m = sample("request (echo)", "response");
    const payload: ResponsePayload = {
      tag: "response",
      result: { greeting: "hello", n: 1, nested: { ok: true } },
      error: null,
      correlation_id: "599a2f4d40644a36b6342a8ee3ed7d43",
      trace_id: "trace-request",
      context: { origin: "capture_wire", Authorization: "Bearer good" },
      warning: null,
      reply_to: "nuropb-nuropb-interop-client-3358d18f181c45c7a08bbee406657871-rq",
    };
    const frame = encodePayload(payload);
    expect(ourBody(frame)).toEqual(bodyOf(m));
    expectSameEnvelope(m, frame);
  });

  it("error response: field by field", () => {
    const m = sample("request whose sync method raises RuntimeError", "response");
    const payload: ResponsePayload = {
      tag: "response",
      result: null,
      error: {
        error: "NuropbException",
        description: "Runtime exception calling py-peer.fail_plain:RuntimeError: boom",
      },
      correlation_id: "7e8a662bcc124a00ad299fa61e8e6f2d",
      trace_id: "trace-plain_error",
      context: { origin: "capture_wire", Authorization: "Bearer good" },
      warning: null,
      reply_to: "nuropb-nuropb-interop-client-3358d18f181c45c7a08bbee406657871-rq",
    };
    const frame = encodePayload(payload);
    expect(ourBody(frame)).toEqual(bodyOf(m));
    expectSameEnvelope(m, frame);
  });

  it.each([
    ["request (echo)", "request"],
    ["command (remember)", "command"],
    ["event published by the client", "event"],
    ["request (echo)", "response"],
    ["request whose method emits an event (NuropbSuccess with events)", "request"],
  ] as const)("%s / %s: same bytes as Python once written with Python's separators", (s, kind) => {
    const m = sample(s, kind);
    const frame = encodeLike(m, decodeFrame(frameOf(m)).payload);
    // Same keys in the same order with the same values: only the separators differ.
    expect(pythonDumps(ourBody(frame))).toBe(m.rawBody);
  });

  it.each(DECODABLE_SAMPLES.map((m) => [m.label, m] as const))(
    "decode → encode reproduces %s",
    (_label, m) => {
      const decoded = decodeFrame(frameOf(m));
      const frame = encodeLike(m, decoded.payload);
      expect(ourBody(frame)).toEqual(bodyOf(m));
      expectSameEnvelope(m, frame, m.decryptedBody !== undefined);
      // And our frame decodes back to the same message.
      const again = decodeFrame(frame);
      expect(again.payload).toEqual(decoded.payload);
      expect(again.correlationId).toBe(decoded.correlationId);
      expect(again.traceId).toBe(decoded.traceId);
      expect(again.version).toBe(NUROPB_VERSION);
    },
  );
});
