import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { NuropbMessageError, decodeFrame, encodePayload } from "@nuropb/protocol";
import type { DecodableFrame, DecodedMessage, Payload } from "@nuropb/protocol";
import { DECODABLE_SAMPLES, bodyOf, plaintextOf, pythonDumps } from "./support/wire-samples.ts";
import type { LabelledSample } from "./support/wire-samples.ts";

// Every input — random or mutated from the captured Python messages — either decodes into a
// well-formed message or throws NuropbMessageError from one of the decoder's own checks.
// Deterministic: fixed seeds. 7 properties × 1,500 runs = 10,500 inputs.

const RUNS = 1_500;
const SEED = 0x6e75726f; // "nuro"
const utf8 = new TextEncoder();

const outcomes = { decoded: 0, refused: 0 };

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** What must hold for anything decodeFrame returns. */
function checkInvariants(d: DecodedMessage): void {
  const p = d.payload as unknown as Record<string, unknown>;
  if (!["request", "command", "event", "response"].includes(d.type)) throw new Error("type");
  if (p.tag !== d.type) throw new Error("tag ≠ type");
  if (typeof d.correlationId !== "string" || p.correlation_id !== d.correlationId) {
    throw new Error("correlation id");
  }
  if (d.traceId !== null && typeof d.traceId !== "string") throw new Error("trace id");
  if (p.trace_id !== d.traceId) throw new Error("payload trace id");
  if (d.protocol !== "0.1.1") throw new Error("protocol");
  if (d.version !== undefined && typeof d.version !== "string") throw new Error("version");
  if (typeof d.encrypted !== "boolean") throw new Error("encrypted");
  if (!isPlainObject(p.context)) throw new Error("context");
  switch (d.type) {
    case "request":
    case "command":
      if (typeof p.service !== "string" || typeof p.method !== "string") throw new Error("rpc");
      if (!isPlainObject(p.params)) throw new Error("params");
      break;
    case "event":
      if (typeof p.topic !== "string" || !Object.hasOwn(p, "event")) throw new Error("event");
      if (
        p.target !== null &&
        !(Array.isArray(p.target) && p.target.every((t) => typeof t === "string"))
      ) {
        throw new Error("target");
      }
      break;
    case "response": {
      if (!Object.hasOwn(p, "result")) throw new Error("result");
      const e = p.error;
      if (
        e !== null &&
        !(isPlainObject(e) && typeof e.error === "string" && typeof e.description === "string")
      ) {
        throw new Error("error");
      }
      if (p.warning !== null && typeof p.warning !== "string") throw new Error("warning");
      if (typeof p.reply_to !== "string") throw new Error("reply_to");
      break;
    }
  }
}

/** Decodes, and fails the property on anything but a result or a NuropbMessageError of ours. */
function decodesOrRefuses(frame: DecodableFrame): boolean {
  let decoded: DecodedMessage;
  try {
    decoded = decodeFrame(frame);
  } catch (err) {
    if (!(err instanceof NuropbMessageError)) throw err;
    // decodeFrame wraps unexpected internal failures as "undecodable message: …": those are bugs.
    if (err.message.startsWith("undecodable message:")) throw err.cause ?? err;
    outcomes.refused++;
    return true;
  }
  checkInvariants(decoded);
  outcomes.decoded++;
  return true;
}

function run<T>(arb: fc.Arbitrary<T>, toFrame: (input: T) => DecodableFrame, seedOffset: number) {
  fc.assert(
    fc.property(arb, (input) => decodesOrRefuses(toFrame(input))),
    { seed: SEED + seedOffset, numRuns: RUNS },
  );
}

const sampleArb: fc.Arbitrary<LabelledSample> = fc.constantFrom(...DECODABLE_SAMPLES);
const bytesOf = (m: LabelledSample): Uint8Array => utf8.encode(plaintextOf(m));
const envelope = (m: LabelledSample) => ({
  headers: m.properties.headers,
  correlationId: m.properties.correlation_id,
});

const FIELDS = [
  "tag",
  "service",
  "method",
  "params",
  "correlation_id",
  "context",
  "trace_id",
  "topic",
  "event",
  "target",
  "result",
  "error",
  "warning",
  "reply_to",
] as const;

const HEADER_VALUES = fc.oneof(
  fc.constantFrom(
    "0.1.1",
    "0.0.9",
    "request",
    "command",
    "event",
    "response",
    "yes",
    "",
    "0.1.8",
    "trace-x",
  ),
  fc.string({ maxLength: 12 }),
  fc.constant(null),
  fc.constant(undefined),
  fc.jsonValue({ maxDepth: 1 }),
);
const HEADER_KEYS = fc.oneof(
  fc.constantFrom("nuropb_protocol", "nuropb_version", "nuropb_type", "trace_id", "encrypted"),
  fc.string({ maxLength: 10 }),
);

/** A JSON value for a replaced field, biased towards the types the decoder distinguishes. */
const fieldValue = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(null, "", "request", "response", "event", "command", [], {}, ["a"], [1]),
  fc.record({ error: fc.jsonValue({ maxDepth: 0 }), description: fc.jsonValue({ maxDepth: 0 }) }),
);

describe("decodeFrame fuzz (fast-check, fixed seed)", () => {
  it("byte flips in captured bodies", () => {
    run(
      fc.record({
        m: sampleArb,
        flips: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), {
          minLength: 1,
          maxLength: 8,
        }),
      }),
      ({ m, flips }) => {
        const bytes = bytesOf(m).slice();
        for (const [pos, mask] of flips) {
          const i = pos % bytes.length;
          bytes[i] = (bytes[i] ?? 0) ^ mask;
        }
        return { ...envelope(m), body: bytes };
      },
      1,
    );
  });

  it("truncated and spliced bodies", () => {
    run(
      fc.record({ m: sampleArb, cut: fc.nat(), from: fc.nat(), glue: fc.nat() }),
      ({ m, cut, from, glue }) => {
        const bytes = bytesOf(m);
        const end = cut % (bytes.length + 1);
        const start = from % 3 === 0 ? (from >> 2) % (end + 1) : 0;
        const head = bytes.subarray(start, end);
        if (glue % 4 !== 0) return { ...envelope(m), body: head };
        // Splice in the tail of another sample.
        const other = bytesOf(DECODABLE_SAMPLES[glue % DECODABLE_SAMPLES.length] as LabelledSample);
        const tail = other.subarray(glue % other.length);
        const body = new Uint8Array(head.length + tail.length);
        body.set(head);
        body.set(tail, head.length);
        return { ...envelope(m), body };
      },
      2,
    );
  });

  it("fields deleted or replaced with random JSON values", () => {
    run(
      fc.record({
        m: sampleArb,
        ops: fc.array(
          fc.record({
            key: fc.oneof(fc.constantFrom(...FIELDS), fc.string({ maxLength: 8 })),
            where: fc.constantFrom("top", "top", "top", "context", "params", "error", "result"),
            value: fc.option(fieldValue, { nil: undefined, freq: 3 }),
          }),
          { minLength: 1, maxLength: 4 },
        ),
        python: fc.boolean(),
      }),
      ({ m, ops, python }) => {
        const body = bodyOf(m);
        for (const { key, where, value } of ops) {
          let target: Record<string, unknown> = body;
          if (where !== "top") {
            const inner = body[where];
            if (!isPlainObject(inner)) continue;
            target = { ...inner };
            body[where] = target;
          }
          if (value === undefined) delete target[key];
          else target[key] = value;
        }
        return { ...envelope(m), body: python ? pythonDumps(body) : JSON.stringify(body) };
      },
      3,
    );
  });

  it("random header maps (merged into or replacing the captured ones)", () => {
    run(
      fc.record({
        m: sampleArb,
        headers: fc.dictionary(HEADER_KEYS, HEADER_VALUES, { maxKeys: 6 }),
        mode: fc.constantFrom("merge", "merge", "replace", "null", "undefined"),
        correlationId: fc.option(fc.oneof(fc.string({ maxLength: 34 }), fc.constant("")), {
          nil: undefined,
        }),
        keepCorrelation: fc.boolean(),
      }),
      ({ m, headers, mode, correlationId, keepCorrelation }) => {
        const h =
          mode === "merge"
            ? { ...m.properties.headers, ...headers }
            : mode === "replace"
              ? headers
              : mode === "null"
                ? null
                : undefined;
        return {
          headers: h,
          body: bytesOf(m),
          correlationId: keepCorrelation ? m.properties.correlation_id : correlationId,
        };
      },
      4,
    );
  });

  it("random bytes and random text under valid headers", () => {
    run(
      fc.record({
        m: sampleArb,
        body: fc.oneof(
          fc.uint8Array({ maxLength: 400 }),
          fc.string({ unit: "binary", maxLength: 200 }),
          fc.json({ maxDepth: 3 }),
        ),
      }),
      ({ m, body }) => ({ ...envelope(m), body }),
      5,
    );
  });

  it("random JSON objects tagged like the header", () => {
    run(
      fc.record({
        m: sampleArb,
        extra: fc.dictionary(fc.constantFrom(...FIELDS), fieldValue, { maxKeys: 10 }),
        tagged: fc.boolean(),
      }),
      ({ m, extra, tagged }) => {
        const body = tagged ? { ...extra, tag: m.kind } : extra;
        return { ...envelope(m), body: pythonDumps(body) };
      },
      6,
    );
  });

  it("NaN / Infinity tokens and quotes inserted at random places", () => {
    run(
      fc.record({
        m: sampleArb,
        inserts: fc.array(
          fc.tuple(
            fc.nat(),
            fc.constantFrom("NaN", "Infinity", "-Infinity", '"', "\\", "\\u0000", ",", "}", "]"),
          ),
          { minLength: 1, maxLength: 4 },
        ),
      }),
      ({ m, inserts }) => {
        let text = plaintextOf(m);
        for (const [pos, token] of inserts) {
          const i = pos % (text.length + 1);
          text = text.slice(0, i) + token + text.slice(i);
        }
        return { ...envelope(m), body: text };
      },
      7,
    );
  });

  it("random valid payloads survive encode → decode unchanged", () => {
    const json = fc.jsonValue({ maxDepth: 3 });
    const obj = fc.dictionary(fc.string({ maxLength: 8 }), json, { maxKeys: 5 });
    const id = fc.stringMatching(/^[0-9a-f]{32}$/);
    const trace = fc.option(fc.string({ maxLength: 20 }), { nil: null });
    const payload: fc.Arbitrary<Payload> = fc.oneof(
      fc.record({
        tag: fc.constantFrom("request" as const, "command" as const),
        service: fc.string({ maxLength: 12 }),
        method: fc.string({ maxLength: 12 }),
        params: obj,
        correlation_id: id,
        context: obj,
        trace_id: trace,
      }),
      fc.record({
        tag: fc.constant("event" as const),
        topic: fc.string({ maxLength: 20 }),
        event: json,
        context: obj,
        trace_id: trace,
        correlation_id: id,
        target: fc.option(fc.array(fc.string({ maxLength: 8 }), { maxLength: 3 }), { nil: null }),
      }),
      fc.record({
        tag: fc.constant("response" as const),
        result: json,
        error: fc.option(
          fc.record({ error: fc.string({ maxLength: 20 }), description: fc.string() }),
          { nil: null },
        ),
        correlation_id: id,
        trace_id: trace,
        context: obj,
        warning: fc.option(fc.string({ maxLength: 10 }), { nil: null }),
        reply_to: fc.string({ maxLength: 30 }),
      }),
    );
    fc.assert(
      fc.property(payload, fc.boolean(), (p, withTtl) => {
        const frame = encodePayload(p, withTtl ? { replyTo: "rq", ttlMs: 1000 } : {});
        const decoded = decodeFrame(frame);
        // JSON's own view of the payload (-0 is written as 0).
        expect(decoded.payload).toEqual(JSON.parse(JSON.stringify(p)));
        expect(decoded.type).toBe(p.tag);
        expect(decoded.correlationId).toBe(p.correlation_id);
        expect(decoded.traceId).toBe(p.trace_id);
        expect(decoded.encrypted).toBe(false);
      }),
      { seed: SEED + 8, numRuns: 1_000 },
    );
  });

  it("covered both outcomes over at least 10,000 inputs", () => {
    expect(outcomes.decoded + outcomes.refused).toBeGreaterThanOrEqual(10_000);
    expect(outcomes.decoded).toBeGreaterThan(500);
    expect(outcomes.refused).toBeGreaterThan(500);
  });
});
