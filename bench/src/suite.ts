import { performance } from "node:perf_hooks";

/** What a suite hands back: one table of figures and the line that compares them. */
export interface SuiteResult {
  /** Column headings; the first column names the case. */
  readonly columns: readonly string[];
  /** One row per case, already formatted. */
  readonly rows: readonly (readonly string[])[];
  /** The comparison line (e.g. `nuropb codec = 83 % of bare JSON (target ≥ 70 %): OK`). */
  readonly comparison: string;
  /** False when the suite missed its target; `main` then exits non-zero. Absent: no target. */
  readonly ok?: boolean;
  /** Extra lines printed under the table (sizes, settings, caveats). */
  readonly notes?: readonly string[];
}

/** A named benchmark; `main.ts` keeps the registry and picks suites by name. */
export interface BenchSuite {
  /** Short name used on the command line (`npm run bench -- codec`). */
  readonly name: string;
  /** One line saying what is measured. */
  readonly description: string;
  run(): Promise<SuiteResult>;
}

/** One case of a micro-benchmark: `op` runs once per call and returns something to keep. */
export interface MicroCase {
  readonly name: string;
  readonly op: () => unknown;
}

/** Options of {@link measureInterleaved}. */
export interface InterleavedOptions {
  /** Warm-up time per case before measuring, in ms. @defaultValue 300 */
  readonly warmupMs?: number;
  /** Measured rounds; each round runs every case once, in turn. @defaultValue 7 */
  readonly rounds?: number;
  /** Target time of one case in one round, in ms. @defaultValue 150 */
  readonly sampleMs?: number;
}

/** Per-case result of {@link measureInterleaved}: ops/s of every round and their median. */
export interface MicroResult {
  readonly name: string;
  readonly opsPerSec: readonly number[];
  readonly medianOpsPerSec: number;
}

let sink = 0;

/** Keeps results observable so the JIT cannot drop the work. */
function consume(value: unknown): void {
  if (value === sink) sink++;
}

/**
 * Measures ops/s of several cases in the same process: warm-up, then rounds in which every case
 * runs for about `sampleMs` in turn (interleaved, so drift and noisy neighbours hit all cases
 * alike). Batch sizes are calibrated during warm-up.
 */
export function measureInterleaved(
  cases: readonly MicroCase[],
  options: InterleavedOptions = {},
): MicroResult[] {
  const warmupMs = options.warmupMs ?? 300;
  const rounds = options.rounds ?? 7;
  const sampleMs = options.sampleMs ?? 150;
  const batch = cases.map((c) => calibrate(c, warmupMs, sampleMs));
  const samples = cases.map(() => [] as number[]);
  for (let r = 0; r < rounds; r++) {
    // Alternate the order so no case always runs right after the same neighbour.
    const order = cases.map((_, i) => i);
    if (r % 2 === 1) order.reverse();
    for (const i of order) {
      const c = cases[i] as MicroCase;
      const n = batch[i] as number;
      const t0 = performance.now();
      for (let k = 0; k < n; k++) consume(c.op());
      const elapsed = performance.now() - t0;
      (samples[i] as number[]).push((n / elapsed) * 1000);
    }
  }
  return cases.map((c, i) => {
    const opsPerSec = samples[i] as number[];
    return { name: c.name, opsPerSec, medianOpsPerSec: median(opsPerSec) };
  });
}

function calibrate(c: MicroCase, warmupMs: number, sampleMs: number): number {
  let n = 64;
  let spent = 0;
  let rate = 0;
  while (spent < warmupMs) {
    const t0 = performance.now();
    for (let k = 0; k < n; k++) consume(c.op());
    const elapsed = performance.now() - t0;
    spent += elapsed;
    rate = n / Math.max(elapsed, 0.001);
    n = Math.max(64, Math.min(n * 2, Math.ceil(rate * 50)));
  }
  return Math.max(64, Math.round(rate * sampleMs));
}

/** Median of a list of numbers (mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1
    ? (s[mid] as number)
    : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** The `q`-quantile (0…1) of a list of numbers, by linear interpolation. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const pos = (s.length - 1) * Math.min(1, Math.max(0, q));
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return (s[lo] as number) + ((s[hi] as number) - (s[lo] as number)) * (pos - lo);
}

/** `1234567.8` → `1,234,568`. */
export function formatInt(value: number): string {
  return Number.isFinite(value) ? Math.round(value).toLocaleString("en-US") : "—";
}

/** `0.834` → `83.4 %`. */
export function formatPercent(ratio: number): string {
  return `${(ratio * 100).toFixed(1)} %`;
}

/** Prints a suite's table, notes and comparison line. */
export function printResult(suite: BenchSuite, result: SuiteResult): void {
  const widths = result.columns.map((h, i) =>
    Math.max(h.length, ...result.rows.map((r) => (r[i] ?? "").length)),
  );
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
      .join("  ");
  console.log(`\n## ${suite.name}: ${suite.description}\n`);
  console.log(line(result.columns));
  console.log(line(widths.map((w) => "-".repeat(w))));
  for (const row of result.rows) console.log(line(row));
  for (const note of result.notes ?? []) console.log(`  ${note}`);
  console.log(`\n${result.comparison}`);
}
