import { createDeferred, decodeFrame, encodePayload, newId } from "@nuropb/protocol";
import type { Deferred, RequestPayload } from "@nuropb/protocol";
import { formatInt, formatPercent, measureInterleaved, median, quantile } from "../suite.ts";
import type { BenchSuite, SuiteResult } from "../suite.ts";

/** nuropb's encode+decode must reach this share of bare JSON.stringify + JSON.parse. */
export const CODEC_TARGET_RATIO = 0.7;

/** The smallest realistic request (147 B of JSON): the "~100 B" class of BENCH-ANCHORS.md. */
function smallRequest(): RequestPayload {
  return {
    tag: "request",
    service: "svc",
    method: "echo",
    params: { n: 1 },
    correlation_id: newId(),
    context: {},
    trace_id: null,
  };
}

const REPLY_TO = "nuropb-svc-0123456789abcdef0123456789abcdef-rq";

/** Where the deferred cases keep their last deferreds, as a table of pending requests would. */
const held: unknown[] = new Array<unknown>(64).fill(undefined);
let heldAt = 0;

/** A deferred as Node 20 has to write it (and as `createDeferred` does there). */
function deferredByHand(): Deferred<number> {
  let resolve!: Deferred<number>["resolve"];
  let reject!: Deferred<number>["reject"];
  const promise = new Promise<number>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Codec throughput beside bare JSON in the same process. */
export const codecSuite: BenchSuite = {
  name: "codec",
  description:
    "encodePayload + decodeFrame of a small request (the smallest full body, 147 B) vs bare JSON.stringify + JSON.parse",
  run(): Promise<SuiteResult> {
    const payload = smallRequest();
    const options = { replyTo: REPLY_TO, ttlMs: 30_000 };
    const frame = encodePayload(payload, options);
    const text = JSON.stringify(payload);
    const int64Frame = encodePayload(
      { ...payload, params: { n: 1, id: 9223372036854775807n } },
      options,
    );
    const cases = [
      { name: "nuropb encode+decode", op: () => decodeFrame(encodePayload(payload, options)) },
      {
        name: "bare JSON.stringify+parse",
        op: () => JSON.parse(JSON.stringify(payload)) as unknown,
      },
      { name: "nuropb encodePayload", op: () => encodePayload(payload, options) },
      { name: "nuropb decodeFrame", op: () => decodeFrame(frame) },
      // A 64-bit id (as Python sends a large int) makes decodeFrame read the body a second
      // time, with nuropb's one-pass parser, to keep it exact. Shown for information.
      { name: "nuropb decodeFrame, int64 id", op: () => decodeFrame(int64Frame) },
      { name: "bare JSON.stringify", op: () => JSON.stringify(payload) },
      { name: "bare JSON.parse", op: () => JSON.parse(text) as unknown },
      // For information: a promise settled from outside, made by nuropb's createDeferred
      // (Promise.withResolvers on Node 22 and later, by hand on 20) and by hand, kept alive a
      // while. Why per-request code keeps new Promise(executor): see bench/README.md.
      {
        name: "createDeferred + resolve",
        op: () => {
          const d = createDeferred<number>();
          d.resolve(1);
          return (held[heldAt++ & 63] = d);
        },
      },
      {
        name: "new Promise deferred + resolve",
        op: () => {
          const d = deferredByHand();
          d.resolve(1);
          return (held[heldAt++ & 63] = d);
        },
      },
    ] as const;
    // Many short rounds: a burst of load from a neighbour process then spoils a few rounds,
    // which the median drops, instead of one long sample of one case.
    const results = measureInterleaved(cases, { warmupMs: 300, rounds: 25, sampleMs: 40 });
    const [ours, bare] = results;
    if (ours === undefined || bare === undefined) throw new Error("codec suite lost its cases");
    // Ratio per round (both measured side by side), then the median of those.
    const ratios = ours.opsPerSec.map((v, i) => v / (bare.opsPerSec[i] ?? NaN));
    const ratio = median(ratios);
    const ok = ratio >= CODEC_TARGET_RATIO;
    const rows = results.map((r) => [
      r.name,
      formatInt(r.medianOpsPerSec),
      formatInt(Math.min(...r.opsPerSec)),
      formatInt(Math.max(...r.opsPerSec)),
      formatInt(1e9 / r.medianOpsPerSec),
    ]);
    return Promise.resolve({
      columns: ["case", "ops/s (median)", "min", "max", "ns/op"],
      rows,
      notes: [
        `body ${String(frame.body.length)} B; ${String(ours.opsPerSec.length)} interleaved rounds after warm-up`,
        `ratio = median of per-round ratios; quartiles ${formatPercent(quantile(ratios, 0.25))} – ${formatPercent(quantile(ratios, 0.75))}`,
      ],
      comparison: `nuropb codec = ${formatPercent(ratio)} of bare JSON (target ≥ ${formatPercent(CODEC_TARGET_RATIO)}): ${ok ? "OK" : "BELOW TARGET"}`,
      ok,
    });
  },
};
