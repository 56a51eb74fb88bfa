// Shared machinery of the request/response suites: echo params, interleaved rounds of closed-loop
// load over several cases, medians, per-round ratios and table rows.
import { deepStrictEqual } from "node:assert/strict";
import { runClosedLoop } from "./load.ts";
import type { ClosedLoopResult } from "./load.ts";
import { formatInt, formatPercent, median, quantile } from "./suite.ts";

/** One way of doing the echo: nuropb, a raw client, Moleculer… */
export interface EchoCase {
  readonly name: string;
  /** One whole request: send `params`, resolve with the echoed (decoded) result. */
  readonly call: (params: unknown) => Promise<unknown>;
}

/** A load point: how many requests in flight and with which params. */
export interface Scenario {
  /** Short label of the params, e.g. `"100 B"`. */
  readonly size: string;
  readonly concurrency: number;
  readonly params: unknown;
}

/** How long to measure. */
export interface RoundOptions {
  /** Measured rounds per case; every round runs every case once, in turn. @defaultValue 3 */
  readonly rounds?: number;
  /** Length of one measured sample, in ms. @defaultValue 800 */
  readonly sampleMs?: number;
  /** Unrecorded load before the first round of each case, in ms. @defaultValue 400 */
  readonly warmupMs?: number;
  /** Unrecorded load at the start of every sample, in ms (refills queues after a pause). @defaultValue 80 */
  readonly settleMs?: number;
}

/** Figures of one case at one scenario: medians over the rounds. */
export interface CaseStats {
  readonly name: string;
  readonly scenario: Scenario;
  readonly samples: readonly ClosedLoopResult[];
  readonly reqPerSec: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly errors: number;
}

/** ~100 B of JSON (107 B): the small class of BENCH-ANCHORS.md. */
export function smallParams(): Record<string, unknown> {
  return {
    greeting: "hello",
    n: 42,
    ok: true,
    tags: ["alpha", "beta"],
    nested: { id: "c3f1a9e2", at: 1_700_000_000_000 },
  };
}

/** ~16 KB of JSON (an array of small records, so decoding it is real work). */
export function largeParams(): Record<string, unknown> {
  const items = Array.from({ length: 150 }, (_, i) => ({
    id: i,
    sku: `SKU-${String(100_000 + i)}`,
    name: `item number ${String(i)}`,
    price: 12.5 + i,
    qty: i % 7,
    tags: ["red", "large"],
    active: i % 2 === 0,
  }));
  return { order: "o-123456", customer: { id: "cust-42", tier: "gold" }, items };
}

/** Byte length of a value's JSON text. */
export function jsonBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value));
}

/** `"104 B"`, `"16.1 KB"`. */
export function sizeLabel(bytes: number): string {
  return bytes < 1000 ? `${String(bytes)} B` : `${(bytes / 1000).toFixed(1)} KB`;
}

/**
 * Measures every case at one scenario: a warm-up per case, then `rounds` rounds in which each
 * case runs one closed-loop sample in turn (order reversed every other round, so drift and noisy
 * neighbours hit all cases alike). Failed calls are counted, not thrown.
 * @throws Error when a case does not answer with its params (checked once before the warm-up).
 */
export async function measureScenario(
  cases: readonly EchoCase[],
  scenario: Scenario,
  options: RoundOptions = {},
): Promise<CaseStats[]> {
  const rounds = options.rounds ?? 3;
  const sampleMs = options.sampleMs ?? 800;
  const warmupMs = options.warmupMs ?? 400;
  const settleMs = options.settleMs ?? 80;
  const { concurrency, params } = scenario;
  for (const c of cases) {
    // Every case must really echo (a wrong answer would make any figure meaningless).
    try {
      deepStrictEqual(await c.call(params), params);
    } catch (err) {
      throw new Error(`${c.name} does not echo its params: ${String(err)}`, { cause: err });
    }
    await runClosedLoop(() => c.call(params), {
      concurrency,
      durationMs: warmupMs,
      onError: "count",
    });
  }
  const samples = cases.map(() => [] as ClosedLoopResult[]);
  for (let r = 0; r < rounds; r++) {
    const order = cases.map((_, i) => i);
    if (r % 2 === 1) order.reverse();
    for (const i of order) {
      const c = cases[i] as EchoCase;
      const result = await runClosedLoop(() => c.call(params), {
        concurrency,
        durationMs: sampleMs,
        warmupMs: settleMs,
        onError: "count",
      });
      (samples[i] as ClosedLoopResult[]).push(result);
    }
  }
  return cases.map((c, i) => {
    const s = samples[i] as ClosedLoopResult[];
    return {
      name: c.name,
      scenario,
      samples: s,
      reqPerSec: median(s.map((x) => x.reqPerSec)),
      p50Us: median(s.map((x) => x.p50Us)),
      p99Us: median(s.map((x) => x.p99Us)),
      errors: s.reduce((n, x) => n + x.errors, 0),
    };
  });
}

/** Median over the rounds of `a`'s req/s divided by `b`'s in the same round. */
export function throughputRatio(a: CaseStats, b: CaseStats): number {
  return median(a.samples.map((x, i) => x.reqPerSec / (b.samples[i]?.reqPerSec ?? NaN)));
}

/** Median over the rounds of `a`'s p50 divided by `b`'s in the same round. */
export function latencyRatio(a: CaseStats, b: CaseStats): number {
  return median(a.samples.map((x, i) => x.p50Us / (b.samples[i]?.p50Us ?? NaN)));
}

/** Table columns matching {@link statsRow}. */
export const RR_COLUMNS: readonly string[] = [
  "case",
  "c",
  "params",
  "req/s",
  "p50 µs",
  "p99 µs",
  "req/s min–max",
  "errors",
];

/** A table row: medians over the rounds, the spread of req/s, the failed calls. */
export function statsRow(s: CaseStats): string[] {
  const rates = s.samples.map((x) => x.reqPerSec);
  return [
    s.name,
    String(s.scenario.concurrency),
    s.scenario.size,
    formatInt(s.reqPerSec),
    micros(s.p50Us),
    micros(s.p99Us),
    `${formatInt(Math.min(...rates))}–${formatInt(Math.max(...rates))}`,
    String(s.errors),
  ];
}

function micros(v: number): string {
  return !Number.isFinite(v) ? "—" : v < 100 ? v.toFixed(1) : formatInt(v);
}

/** `83.4 % (rounds 80.1 % – 85.0 %)`: a ratio with the quartiles of the per-round ratios. */
export function describeRatio(a: CaseStats, b: CaseStats, by: "throughput" | "latency"): string {
  const per = a.samples.map((x, i) => {
    const y = b.samples[i];
    if (y === undefined) return NaN;
    return by === "throughput" ? x.reqPerSec / y.reqPerSec : x.p50Us / y.p50Us;
  });
  return `${formatPercent(median(per))} (rounds ${formatPercent(quantile(per, 0))} – ${formatPercent(quantile(per, 1))})`;
}

/** Finds a case's stats by name, or throws (a suite bug). */
export function pick(stats: readonly CaseStats[], name: string): CaseStats {
  const s = stats.find((x) => x.name === name);
  if (s === undefined) throw new Error(`no figures for case ${name}`);
  return s;
}

/** Lines warning about failed calls, so that errors are never hidden in a table cell. */
export function errorNotes(stats: readonly CaseStats[]): string[] {
  return stats
    .filter((s) => s.errors > 0)
    .map(
      (s) =>
        `!! ${s.name} at c=${String(s.scenario.concurrency)} (${s.scenario.size}): ${String(s.errors)} failed calls`,
    );
}

/**
 * Runs `fn` with cleanups registered through `defer`, then runs them in reverse order whatever
 * happened (a cleanup that fails is reported on stderr, never hides the first error).
 */
export async function withCleanup<T>(
  fn: (defer: (cleanup: () => Promise<unknown> | unknown) => void) => Promise<T>,
): Promise<T> {
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  try {
    return await fn((c) => cleanups.push(c));
  } finally {
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch (err) {
        process.stderr.write(`  cleanup failed: ${String(err)}\n`);
      }
    }
  }
}

/** A short random hex tag, to make names unique per run. */
export function runTag(): string {
  return Math.random().toString(16).slice(2, 10);
}
