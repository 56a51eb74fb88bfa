import { describe, expect, it } from "vitest";
import { NuropbMessageError, decodeFrame, encodePayload, parseWireJson } from "@nuropb/protocol";
import type { EventPayload, RequestPayload, ResponsePayload } from "@nuropb/protocol";
import { bodyOf, frameOf, pythonDumps, sample } from "./support/wire-samples.ts";

const utf8 = new TextEncoder();
const CID = "599a2f4d40644a36b6342a8ee3ed7d43";
const REPLY = "nuropb-nuropb-interop-client-3358d18f181c45c7a08bbee406657871-rq";

function headers(type: string, extra: Record<string, string | null> = {}) {
  return {
    nuropb_protocol: "0.1.1",
    nuropb_version: "0.1.8",
    nuropb_type: type,
    trace_id: "trace-x",
    encrypted: "",
    ...extra,
  };
}

function requestBody(params: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return {
    tag: "request",
    service: "py-peer",
    method: "echo",
    params,
    correlation_id: CID,
    context: { origin: "test" },
    trace_id: "trace-x",
    ...extra,
  };
}

function responseText(result: string): string {
  return (
    `{"tag": "response", "result": ${result}, "error": null, "correlation_id": "${CID}", ` +
    `"trace_id": "trace-x", "context": {}, "warning": null, "reply_to": "${REPLY}"}`
  );
}

function decodeResponseResult(text: string): unknown {
  const decoded = decodeFrame({ headers: headers("response"), body: utf8.encode(text) });
  return (decoded.payload as ResponsePayload).result;
}

describe("Python json.dumps output", () => {
  it("\\uXXXX escapes, including surrogate pairs for astral characters", () => {
    const params = { text: "café – ünïcødé 😀 𝄞 中文", key: "ключ" };
    const text = pythonDumps(requestBody(params));
    // What ensure_ascii=True produces: pure ASCII with escapes.
    expect(text).toMatch(/^[\x20-\x7e]*$/);
    expect(text).toContain("caf\\u00e9");
    expect(text).toContain("\\ud83d\\ude00");
    const decoded = decodeFrame({ headers: headers("request"), body: utf8.encode(text) });
    expect((decoded.payload as RequestPayload).params).toEqual(params);
  });

  it("escaped control characters, quotes and backslashes", () => {
    const params = { s: 'a"b\\c\n\t\u0001\u007f' };
    const decoded = decodeFrame({
      headers: headers("request"),
      body: pythonDumps(requestBody(params)),
    });
    expect((decoded.payload as RequestPayload).params).toEqual(params);
  });

  it("a lone surrogate escape (Python can write one) survives as a string", () => {
    const text = requestBody({}).correlation_id;
    const body = `{"tag": "request", "service": "s", "method": "m", "params": {"s": "\\ud800x"}, "correlation_id": "${text}", "context": {}, "trace_id": null}`;
    const decoded = decodeFrame({ headers: headers("request"), body });
    expect((decoded.payload as RequestPayload).params.s).toBe("\ud800x");
  });

  it('", " and ": " separators and any key order', () => {
    const m = sample("request (echo)", "request");
    const body = bodyOf(m);
    const reordered = Object.fromEntries(Object.entries(body).reverse());
    const a = decodeFrame(frameOf(m));
    const b = decodeFrame({
      headers: m.properties.headers,
      body: JSON.stringify(reordered, null, 4),
      correlationId: m.properties.correlation_id,
    });
    expect(b.payload).toEqual(a.payload);
  });
});

describe("headers as pika writes them", () => {
  it("a void (null) trace_id header gives traceId null, whatever the body says", () => {
    const decoded = decodeFrame({
      headers: headers("request", { trace_id: null }),
      body: pythonDumps(requestBody({}, { trace_id: "body-trace" })),
    });
    expect(decoded.traceId).toBeNull();
    expect(decoded.payload.trace_id).toBeNull();
  });

  it("an absent trace_id header falls back to the body's trace_id", () => {
    const { trace_id: _t, ...h } = headers("request");
    const decoded = decodeFrame({
      headers: h,
      body: pythonDumps(requestBody({}, { trace_id: "body-trace" })),
    });
    expect(decoded.traceId).toBe("body-trace");
    expect(decoded.payload.trace_id).toBe("body-trace");
  });

  it("absent trace_id header and null body trace_id give null", () => {
    const { trace_id: _t, ...h } = headers("event");
    const body = pythonDumps({
      tag: "event",
      topic: "t",
      event: 1,
      context: {},
      trace_id: null,
      correlation_id: CID,
      target: null,
    });
    expect(decodeFrame({ headers: h, body }).traceId).toBeNull();
  });

  it("the header trace_id wins over a different body trace_id", () => {
    const decoded = decodeFrame({
      headers: headers("request", { trace_id: "header-trace" }),
      body: pythonDumps(requestBody({}, { trace_id: "body-trace" })),
    });
    expect(decoded.traceId).toBe("header-trace");
    expect(decoded.payload.trace_id).toBe("header-trace");
  });

  it.each([
    ["empty", ""],
    ["YES", "YES"],
    ["true", "true"],
    ["yes with a space", "yes "],
  ])("encrypted header %s means plaintext", (_name, value) => {
    const decoded = decodeFrame({
      headers: headers("request", { encrypted: value }),
      body: pythonDumps(requestBody({})),
    });
    expect(decoded.encrypted).toBe(false);
  });

  it("absent encrypted and nuropb_version headers are tolerated", () => {
    const { encrypted: _e, nuropb_version: _v, ...h } = headers("request");
    const decoded = decodeFrame({ headers: h, body: pythonDumps(requestBody({})) });
    expect(decoded.encrypted).toBe(false);
    expect(decoded.version).toBeUndefined();
  });

  it("encrypted: yes is reported (the decoder is given the plaintext)", () => {
    const decoded = decodeFrame({
      headers: headers("request", { encrypted: "yes" }),
      body: pythonDumps(requestBody({})),
    });
    expect(decoded.encrypted).toBe(true);
  });

  it("the correlation id property may be absent or empty: the body's is used", () => {
    for (const correlationId of [undefined, ""]) {
      const decoded = decodeFrame({
        headers: headers("request"),
        body: pythonDumps(requestBody({})),
        correlationId,
      });
      expect(decoded.correlationId).toBe(CID);
    }
  });

  it("the correlation id property fills in a body without correlation_id", () => {
    const { correlation_id: _c, ...body } = requestBody({});
    const decoded = decodeFrame({
      headers: headers("request"),
      body: pythonDumps(body),
      correlationId: "feedfeedfeedfeedfeedfeedfeedfeed",
    });
    expect(decoded.correlationId).toBe("feedfeedfeedfeedfeedfeedfeedfeed");
    expect(decoded.payload.correlation_id).toBe("feedfeedfeedfeedfeedfeedfeedfeed");
  });
});

describe("NaN / Infinity tokens", () => {
  it("are accepted as the numbers they name", () => {
    expect(decodeResponseResult(responseText("[NaN, Infinity, -Infinity, 1.5]"))).toEqual([
      NaN,
      Infinity,
      -Infinity,
      1.5,
    ]);
    expect(decodeResponseResult(responseText("NaN"))).toBeNaN();
    expect(decodeResponseResult(responseText('{"x": -Infinity}'))).toEqual({ x: -Infinity });
  });

  it("the same text inside strings stays untouched", () => {
    const result = decodeResponseResult(
      responseText(
        '{"NaN": "NaN", "s": "Infinity and -Infinity", "q": "say \\"NaN\\"", "n": NaN, "i": [Infinity]}',
      ),
    );
    expect(result).toEqual({
      NaN: "NaN",
      s: "Infinity and -Infinity",
      q: 'say "NaN"',
      n: NaN,
      i: [Infinity],
    });
  });

  it("strings that look like our internal markers are not turned into numbers", () => {
    // An escaped NUL in a string, next to a bare token that forces the lenient path.
    const result = decodeResponseResult(
      responseText('["\\u0000nuropb-nonfinite:NaN", "\\u0000nuropb-nonfinite:Infinity", NaN]'),
    );
    expect(result).toEqual(["\u0000nuropb-nonfinite:NaN", "\u0000nuropb-nonfinite:Infinity", NaN]);
  });

  it("Python-written bodies with tokens decode (pythonDumps of a NaN value)", () => {
    const body = pythonDumps(requestBody({ x: NaN, y: [Infinity, -Infinity] }));
    const decoded = decodeFrame({ headers: headers("request"), body });
    expect((decoded.payload as RequestPayload).params).toEqual({
      x: NaN,
      y: [Infinity, -Infinity],
    });
  });

  it("tokens glued to other text, or misspelt, are still errors", () => {
    for (const bad of [
      "NaNa",
      "xNaN",
      "-NaN",
      "+Infinity",
      "infinity",
      "nan",
      "Infinit",
      "NaN NaN",
    ]) {
      expect(() => parseWireJson(`{"v": ${bad}}`), bad).toThrow(/not valid JSON/);
    }
  });

  it("tokens in key position are refused, as Python's json.loads does", () => {
    for (const bad of [
      "{NaN: 1}",
      '{"a": 1, Infinity: 2}',
      '{"a": {-Infinity: NaN}}',
      '[{"x": [NaN]}, {Infinity: {"y": 1}}]',
    ]) {
      expect(() => parseWireJson(bad), bad).toThrow(/not valid JSON/);
      expect(() => decodeResponseResult(responseText(bad)), bad).toThrow(NuropbMessageError);
    }
    const body = `{"tag": "request", "service": "s", "method": "m", "params": {Infinity: 1, "x": NaN}, "correlation_id": "${CID}"}`;
    expect(() => decodeFrame({ headers: headers("request"), body })).toThrow(NuropbMessageError);
    expect(() => decodeFrame({ headers: headers("request"), body })).toThrow(/not valid JSON/);
  });

  it("we never emit the tokens: non-finite numbers encode as null", () => {
    const frame = encodePayload({
      tag: "response",
      result: [NaN, Infinity, -Infinity],
      error: null,
      correlation_id: CID,
      trace_id: null,
      context: {},
      warning: null,
      reply_to: REPLY,
    });
    const text = new TextDecoder().decode(frame.body);
    expect(text).not.toMatch(/NaN|Infinity/);
    expect((JSON.parse(text) as { result: unknown }).result).toEqual([null, null, null]);
  });
});

describe("Python's duplicate second responses", () => {
  it("sync failure: a second response with result = str(exception), error null", () => {
    const first = decodeFrame(
      frameOf(sample("request whose sync method raises RuntimeError", "response", 1)),
    );
    const second = decodeFrame(
      frameOf(sample("request whose sync method raises RuntimeError", "response", 2)),
    );
    expect(second.correlationId).toBe(first.correlationId);
    expect((first.payload as ResponsePayload).error?.error).toBe("NuropbException");
    expect((second.payload as ResponsePayload).error).toBeNull();
    expect((second.payload as ResponsePayload).result).toBe(
      "Runtime exception calling py-peer.fail_plain:RuntimeError: boom",
    );
  });

  it("async failure: the second response carries both result and error", () => {
    const second = decodeFrame(
      frameOf(sample("request whose async method raises RuntimeError", "response", 2)),
    );
    const p = second.payload as ResponsePayload;
    expect(p.result).toBe("boom-async");
    expect(p.error).toEqual({ error: "RuntimeError", description: "boom-async" });
  });

  it("NuropbSuccess: the second response's result is the string NuropbSuccess", () => {
    const scenario = "request whose method emits an event (NuropbSuccess with events)";
    const first = decodeFrame(frameOf(sample(scenario, "response", 1)));
    const second = decodeFrame(frameOf(sample(scenario, "response", 2)));
    expect((first.payload as ResponsePayload).result).toEqual({
      emitted: "interop.capture.emitted",
    });
    expect((second.payload as ResponsePayload).result).toBe("NuropbSuccess");
    expect(second.correlationId).toBe(first.correlationId);
    const event = decodeFrame(frameOf(sample(scenario, "event", 2)));
    expect(event.correlationId).toBe(first.correlationId);
    expect((event.payload as EventPayload).event).toEqual({ x: 1 });
  });
});

describe("Python's error-path key order", () => {
  it("error responses (tag, correlation_id, context, trace_id, result, error, …) decode fully", () => {
    const m = sample("request that fails with NuropbValidationError", "response", 1);
    expect(Object.keys(bodyOf(m))).toEqual([
      "tag",
      "correlation_id",
      "context",
      "trace_id",
      "result",
      "error",
      "warning",
      "reply_to",
    ]);
    const decoded = decodeFrame(frameOf(m));
    const p = decoded.payload as ResponsePayload;
    expect(p).toEqual(bodyOf(m));
    // The same values in the success-path order decode to the same payload.
    const successOrder = [
      "tag",
      "result",
      "error",
      "correlation_id",
      "trace_id",
      "context",
      "warning",
      "reply_to",
    ];
    const body = bodyOf(m);
    const reordered = Object.fromEntries(successOrder.map((k) => [k, body[k]]));
    const again = decodeFrame({ ...frameOf(m), body: pythonDumps(reordered) });
    expect(again.payload).toEqual(p);
  });
});
