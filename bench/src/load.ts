import { performance } from "node:perf_hooks";

/** Options of {@link runClosedLoop}. At least one of `durationMs` and `count` is required. */
export interface ClosedLoopOptions {
  /** Requests in flight at once (each worker waits for its answer before sending the next). */
  readonly concurrency: number;
  /** Stop starting new requests after this many ms (requests in flight still finish). */
  readonly durationMs?: number;
  /** Make at most this many calls in total (not counting warm-up). */
  readonly count?: number;
  /** Run the same loop this long first, unrecorded (JIT, connections, queues). @defaultValue 0 */
  readonly warmupMs?: number;
  /** `"throw"`: the first failed call stops the run and is rethrown. `"count"`: failures are
   * counted (and excluded from the latencies) and the run goes on. @defaultValue "throw" */
  readonly onError?: "throw" | "count";
  /** Stops the run early; the result covers what completed. */
  readonly signal?: AbortSignal;
}

/** What a closed-loop run measured. Latencies are per successful call, in microseconds. */
export interface ClosedLoopResult {
  readonly concurrency: number;
  /** Successful calls. */
  readonly requests: number;
  /** Failed calls (only with `onError: "count"`). */
  readonly errors: number;
  /** Wall time from the first request to the last answer, in ms. */
  readonly elapsedMs: number;
  /** Successful calls per second over `elapsedMs`. */
  readonly reqPerSec: number;
  readonly p50Us: number;
  readonly p90Us: number;
  readonly p99Us: number;
  readonly maxUs: number;
}

/**
 * Closed-loop load: `concurrency` workers each call `call()` and, when it settles, call again,
 * until `durationMs` has passed or `count` calls have completed. Returns throughput and latency
 * percentiles (µs). The shared helper for request/response suites (memory, AMQP, NATS, Redis…):
 * `call` is one whole request, e.g. `() => client.request("echo", "echo", params)`.
 * @throws RangeError for a bad concurrency or when neither `durationMs` nor `count` is given;
 *   with `onError: "throw"` (default), the first error of `call`.
 */
export async function runClosedLoop(
  call: () => Promise<unknown>,
  options: ClosedLoopOptions,
): Promise<ClosedLoopResult> {
  const { concurrency, durationMs, count, warmupMs = 0, onError = "throw", signal } = options;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
    throw new RangeError(`concurrency must be a positive integer, got ${String(concurrency)}`);
  }
  if (durationMs === undefined && count === undefined) {
    throw new RangeError("runClosedLoop needs durationMs or count");
  }
  if (warmupMs > 0) {
    await loop(call, concurrency, { durationMs: warmupMs }, onError, signal, undefined);
  }
  const latencies: number[] = [];
  const t0 = performance.now();
  const errors = await loop(
    call,
    concurrency,
    {
      ...(durationMs !== undefined ? { durationMs } : {}),
      ...(count !== undefined ? { count } : {}),
    },
    onError,
    signal,
    latencies,
  );
  const elapsedMs = performance.now() - t0;
  return summarise(concurrency, latencies, errors, elapsedMs);
}

async function loop(
  call: () => Promise<unknown>,
  concurrency: number,
  limit: { readonly durationMs?: number; readonly count?: number },
  onError: "throw" | "count",
  signal: AbortSignal | undefined,
  latencies: number[] | undefined,
): Promise<number> {
  const deadline = limit.durationMs === undefined ? Infinity : performance.now() + limit.durationMs;
  const count = limit.count ?? Infinity;
  let started = 0;
  let errors = 0;
  let failure: { error: unknown } | undefined;
  const more = (): boolean =>
    failure === undefined &&
    signal?.aborted !== true &&
    started < count &&
    performance.now() < deadline;
  const worker = async (): Promise<void> => {
    while (more()) {
      started++;
      const t = performance.now();
      try {
        await call();
        latencies?.push((performance.now() - t) * 1000);
      } catch (error) {
        if (onError === "throw") {
          failure ??= { error };
          return;
        }
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  if (failure !== undefined) throw failure.error;
  return errors;
}

function summarise(
  concurrency: number,
  latencies: number[],
  errors: number,
  elapsedMs: number,
): ClosedLoopResult {
  const sorted = Float64Array.from(latencies).sort();
  const pct = (p: number): number =>
    sorted.length === 0
      ? NaN
      : (sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number);
  return {
    concurrency,
    requests: sorted.length,
    errors,
    elapsedMs,
    reqPerSec: elapsedMs > 0 ? (sorted.length / elapsedMs) * 1000 : NaN,
    p50Us: pct(50),
    p90Us: pct(90),
    p99Us: pct(99),
    maxUs: sorted.length === 0 ? NaN : (sorted[sorted.length - 1] as number),
  };
}

/** Column headings matching {@link loadRow}. */
export const LOAD_COLUMNS: readonly string[] = ["case", "c", "req/s", "p50 µs", "p99 µs", "errors"];

/** A table row for a closed-loop result, in the format of BENCH-ANCHORS.md. */
export function loadRow(name: string, r: ClosedLoopResult): string[] {
  const fmt = (v: number): string =>
    Number.isFinite(v) ? Math.round(v).toLocaleString("en-US") : "—";
  return [
    name,
    String(r.concurrency),
    fmt(r.reqPerSec),
    v1(r.p50Us),
    v1(r.p99Us),
    String(r.errors),
  ];
  function v1(v: number): string {
    return !Number.isFinite(v) ? "—" : v < 100 ? v.toFixed(1) : fmt(v);
  }
}
