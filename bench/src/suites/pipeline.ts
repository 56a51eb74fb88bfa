import { deepStrictEqual } from "node:assert/strict";
import { createClient, createService } from "@nuropb/core";
import type {
  ClientMiddleware,
  ClientOptions,
  MeshParticipant,
  ServiceMiddleware,
  ServiceOptions,
} from "@nuropb/core";
import { tracing } from "@nuropb/opentelemetry";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import type { MemoryHub } from "@nuropb/transport-memory";
import { runClosedLoop } from "../load.ts";
import { jsonBytes, runTag, sizeLabel, smallParams, withCleanup } from "../rr.ts";
import { formatInt, formatPercent, median, quantile } from "../suite.ts";
import type { BenchSuite, SuiteResult } from "../suite.ts";

/** Empty middleware lists must cost at most this much more CPU per request than none. */
export const EMPTY_PIPELINE_TARGET = 0.02;
/**
 * Tracing middleware with no tracer registered: at most this much more CPU than no middleware
 * (it says it is inactive, so core takes the path of no middleware).
 */
export const IDLE_TRACING_TARGET = 0.02;

const NONE = "no middleware";
const EMPTY = "empty lists";
const PASS = "1 pass-through each side";
const HOOK = "no-op onLifecycle each side";
const TRACING = "tracing middleware, no tracer registered";

const ROUNDS = 15;
const SAMPLE_MS = 300;
const SETTLE_MS = 60;
const WARMUP_MS = 400;

/** The echo service of every case. */
class Echo {
  echo(params: Record<string, unknown>): Record<string, unknown> {
    return params;
  }
}

const passClient: ClientMiddleware = (_call, next) => next();
const passService: ServiceMiddleware = (_call, next) => next();
const noop = (): void => undefined;
// No tracer provider is registered in the bench process: every span is a no-op.
const idleTracing = tracing({ transport: "memory" });

/** What one case gives its service and its client (each on its own memory transport). */
interface Variant {
  readonly name: string;
  readonly service: Partial<ServiceOptions<Echo>>;
  readonly client: Partial<ClientOptions>;
}

const VARIANTS: readonly Variant[] = [
  { name: NONE, service: {}, client: {} },
  { name: EMPTY, service: { middleware: [], clientMiddleware: [] }, client: { middleware: [] } },
  { name: PASS, service: { middleware: [passService] }, client: { middleware: [passClient] } },
  { name: HOOK, service: { onLifecycle: noop }, client: { onLifecycle: noop } },
  {
    name: TRACING,
    service: { middleware: [idleTracing.service] },
    client: { middleware: [idleTracing.client] },
  },
];

interface Case {
  readonly name: string;
  readonly call: (params: unknown) => Promise<unknown>;
}

/** One sample: wall-clock throughput and the process's CPU time per request. */
interface Sample {
  readonly reqPerSec: number;
  readonly cpuUsPerReq: number;
  readonly p50Us: number;
  readonly errors: number;
}

/** Starts one case: an echo service and a client with `v`'s options, connected. */
async function startCase(
  hub: MemoryHub,
  v: Variant,
  defer: (cleanup: () => Promise<unknown>) => void,
): Promise<Case> {
  const name = `echo-${runTag()}`;
  const participants: MeshParticipant[] = [];
  const transports = [createMemoryTransport({ hub }), createMemoryTransport({ hub })] as const;
  defer(async () => {
    for (const p of participants.reverse()) await p.disconnect().catch(() => undefined);
    await Promise.all(transports.map((t) => t.close()));
  });
  const service = createService({
    ...v.service,
    transport: transports[0],
    name,
    instance: new Echo(),
  });
  participants.push(service);
  await service.connect();
  const client = createClient({ ...v.client, transport: transports[1] });
  participants.push(client);
  await client.connect();
  return {
    name: v.name,
    call: (params) => client.request(name, "echo", params as Record<string, unknown>),
  };
}

/** One closed-loop sample of `c`, with the CPU time the process spent on it. */
async function sample(c: Case, concurrency: number, params: unknown): Promise<Sample> {
  const call = (): Promise<unknown> => c.call(params);
  await runClosedLoop(call, { concurrency, durationMs: SETTLE_MS, onError: "count" });
  const cpu0 = process.cpuUsage();
  const r = await runClosedLoop(call, { concurrency, durationMs: SAMPLE_MS, onError: "count" });
  const cpu = process.cpuUsage(cpu0);
  return {
    reqPerSec: r.reqPerSec,
    cpuUsPerReq: (cpu.user + cpu.system) / Math.max(1, r.requests),
    p50Us: r.p50Us,
    errors: r.errors,
  };
}

/**
 * Every case at one concurrency: warm-up, then rounds in which each case runs one sample in turn
 * (the order reversed every other round, so drift and neighbours hit all cases alike).
 */
async function measure(
  cases: readonly Case[],
  concurrency: number,
  params: unknown,
): Promise<Sample[][]> {
  for (const c of cases) {
    deepStrictEqual(await c.call(params), params);
    await runClosedLoop(() => c.call(params), { concurrency, durationMs: WARMUP_MS });
  }
  const samples = cases.map(() => [] as Sample[]);
  for (let r = 0; r < ROUNDS; r++) {
    const order = cases.map((_, i) => i);
    if (r % 2 === 1) order.reverse();
    for (const i of order) samples[i]?.push(await sample(cases[i] as Case, concurrency, params));
  }
  return samples;
}

/** Median over the rounds of `a`'s figure over `b`'s in the same round, with its spread. */
function ratio(
  a: readonly Sample[],
  b: readonly Sample[],
  by: "cpuUsPerReq" | "reqPerSec" = "cpuUsPerReq",
): { median: number; text: string } {
  const per = a.map((x, i) => x[by] / (b[i]?.[by] ?? NaN));
  const m = median(per);
  return {
    median: m,
    text: `${formatPercent(m)} (rounds ${formatPercent(quantile(per, 0))} – ${formatPercent(quantile(per, 1))})`,
  };
}

/**
 * What middleware costs: nuropb request/response over the memory transport without middleware,
 * with empty middleware lists (core then builds no pipeline: they must cost nothing), with one
 * pass-through middleware on the client and on the service, with a no-op lifecycle listener
 * on both, and with tracing and no tracer registered (inactive middleware: it must cost
 * nothing either), interleaved in the same run. Judged on the process's CPU time per request, which a
 * busy machine disturbs far less than wall-clock throughput (also shown).
 */
export const pipelineSuite: BenchSuite = {
  name: "pipeline",
  description:
    "nuropb over memory: no middleware vs empty lists vs one pass-through middleware vs a no-op lifecycle hook vs idle tracing",
  run(): Promise<SuiteResult> {
    return withCleanup(async (defer) => {
      const hub = createMemoryHub();
      const cases: Case[] = [];
      for (const v of VARIANTS) cases.push(await startCase(hub, v, defer));
      const params = smallParams();
      const rows: string[][] = [];
      const lines: string[] = [];
      const comparison: string[] = [];
      let ok = true;
      for (const concurrency of [1, 64]) {
        const samples = await measure(cases, concurrency, params);
        const none = samples[0] as Sample[];
        cases.forEach((c, i) => {
          const s = samples[i] as Sample[];
          const errors = s.reduce((n, x) => n + x.errors, 0);
          if (errors > 0) ok = false;
          rows.push([
            c.name,
            String(concurrency),
            sizeLabel(jsonBytes(params)),
            formatInt(median(s.map((x) => x.reqPerSec))),
            median(s.map((x) => x.cpuUsPerReq)).toFixed(2),
            i === 0 ? "—" : ratio(s, none).text,
            median(s.map((x) => x.p50Us)).toFixed(1),
            String(errors),
          ]);
        });
        const empty = ratio(samples[1] as Sample[], none);
        const pass = ratio(samples[2] as Sample[], none);
        const hook = ratio(samples[3] as Sample[], none);
        const traced = ratio(samples[4] as Sample[], none);
        const emptyRate = ratio(samples[1] as Sample[], none, "reqPerSec");
        const within = empty.median <= 1 + EMPTY_PIPELINE_TARGET;
        if (!within) ok = false;
        lines.push(
          `c=${String(concurrency)}: CPU per request vs ${NONE}: ${PASS} ${pass.text}, ${HOOK} ${hook.text}, ${TRACING} ${traced.text}`,
        );
        const tracingWithin = traced.median <= 1 + IDLE_TRACING_TARGET;
        if (!tracingWithin) ok = false;
        comparison.push(
          `${TRACING} at c=${String(concurrency)}: CPU per request = ${traced.text} of ${NONE}'s (target ≤ ${formatPercent(1 + IDLE_TRACING_TARGET)}): ${tracingWithin ? "OK" : "ABOVE TARGET"}`,
        );
        comparison.push(
          `${EMPTY} at c=${String(concurrency)}: CPU per request = ${empty.text} of ${NONE}'s (target ≤ ${formatPercent(1 + EMPTY_PIPELINE_TARGET)}): ${within ? "OK" : "ABOVE TARGET"}; req/s = ${emptyRate.text}`,
        );
      }
      return {
        columns: ["case", "c", "params", "req/s", "CPU µs/req", "CPU vs none", "p50 µs", "errors"],
        rows,
        notes: [
          `medians of ${String(ROUNDS)} interleaved rounds of ${String(SAMPLE_MS)} ms per case, after warm-up; echo of a JSON object`,
          "each case: its own service and client, each on its own memory transport (one hub); everything runs on the one thread, so the process's CPU time per request is the work per request",
          `"${EMPTY}": middleware: [] (and clientMiddleware: []); core then builds no pipeline, so the target is that they cost nothing`,
          ...lines,
          `"${TRACING}": @nuropb/opentelemetry's tracing() on both sides with no OpenTelemetry SDK in the process; its middleware says it is inactive (active()), so core asks that per call and takes the path of "${NONE}": judged against "${NONE}"; "${PASS}" is shown for what a middleware that runs costs`,
          "run from source (bench:source), tsx's keep-names helper makes each closure a middleware creates dearer than in the built packages (npm run bench)",
        ],
        comparison: comparison.join("\n"),
        ok,
      };
    });
  },
};
