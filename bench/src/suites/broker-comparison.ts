// The NATS and Redis suites share their measurement and their targets.
import {
  RR_COLUMNS,
  describeRatio,
  errorNotes,
  jsonBytes,
  largeParams,
  latencyRatio,
  measureScenario,
  pick,
  sizeLabel,
  smallParams,
  statsRow,
  throughputRatio,
} from "../rr.ts";
import type { CaseStats, EchoCase, Scenario } from "../rr.ts";
import { formatPercent } from "../suite.ts";
import type { SuiteResult } from "../suite.ts";

/** nuropb's req/s at c=64 must reach this share of the raw client's (and beat Moleculer). */
export const BROKER_THROUGHPUT_TARGET = 0.9;
/** nuropb's p50 at c=1 must be at most this share of Moleculer's (issue #20). */
export const BROKER_LATENCY_TARGET = 1;

/** The cases of a broker suite. */
export interface BrokerComparison {
  readonly broker: string;
  readonly nuropb: EchoCase;
  /** The raw client the target is measured against. */
  readonly raw: EchoCase;
  /** More raw variants, shown for information. */
  readonly others: readonly EchoCase[];
  readonly moleculer: EchoCase;
  readonly notes: readonly string[];
}

/**
 * Measures every case at c=1 and c=64 with ~100 B and at c=16 with ~16 KB (interleaved rounds),
 * and judges: nuropb ≥ 90 % of the raw client's req/s at c=64, and ahead of Moleculer there;
 * nuropb's c=1 p50 at or below Moleculer's.
 */
export async function runBrokerComparison(cmp: BrokerComparison): Promise<SuiteResult> {
  const cases = [cmp.nuropb, cmp.raw, ...cmp.others, cmp.moleculer];
  const small = smallParams();
  const large = largeParams();
  const scenarios: Scenario[] = [
    { size: sizeLabel(jsonBytes(small)), concurrency: 1, params: small },
    { size: sizeLabel(jsonBytes(small)), concurrency: 64, params: small },
    { size: sizeLabel(jsonBytes(large)), concurrency: 16, params: large },
  ];
  const stats: CaseStats[] = [];
  for (const scenario of scenarios) stats.push(...(await measureScenario(cases, scenario)));
  const at = (c: number, name: string): CaseStats =>
    pick(
      stats.filter((s) => s.scenario.concurrency === c),
      name,
    );
  const ours = at(64, cmp.nuropb.name);
  const raw = at(64, cmp.raw.name);
  const mol = at(64, cmp.moleculer.name);
  const vsRaw = throughputRatio(ours, raw);
  const vsMoleculer = throughputRatio(ours, mol);
  const rawOk = vsRaw >= BROKER_THROUGHPUT_TARGET;
  const molOk = vsMoleculer > 1;
  const latOk =
    latencyRatio(at(1, cmp.nuropb.name), at(1, cmp.moleculer.name)) <= BROKER_LATENCY_TARGET;
  const errors = stats.filter((s) => s.name === cmp.nuropb.name).some((s) => s.errors > 0);
  return {
    columns: RR_COLUMNS,
    rows: stats.map(statsRow),
    notes: [
      `medians of 3 interleaved rounds of 800 ms per case, after warm-up; echo of a JSON object; one private ${cmp.broker} server`,
      ...cmp.notes,
      `c=1 p50: nuropb = ${describeRatio(at(1, cmp.nuropb.name), at(1, cmp.raw.name), "latency")} of ${cmp.raw.name}`,
      `c=16 16 KB: nuropb = ${describeRatio(at(16, cmp.nuropb.name), at(16, cmp.raw.name), "throughput")} of ${cmp.raw.name} req/s, ${describeRatio(at(16, cmp.nuropb.name), at(16, cmp.moleculer.name), "throughput")} of Moleculer's`,
      ...cmp.others.map(
        (o) =>
          `c=64: nuropb = ${describeRatio(ours, at(64, o.name), "throughput")} of ${o.name} req/s`,
      ),
      ...errorNotes(stats),
    ],
    comparison: [
      `nuropb ${cmp.broker} at c=64 = ${describeRatio(ours, raw, "throughput")} of ${cmp.raw.name} req/s (target ≥ ${formatPercent(BROKER_THROUGHPUT_TARGET)}): ${rawOk ? "OK" : "BELOW TARGET"}`,
      `nuropb ${cmp.broker} at c=64 = ${describeRatio(ours, mol, "throughput")} of ${cmp.moleculer.name} req/s (target > 100 %): ${molOk ? "OK" : "BELOW TARGET"}`,
      `nuropb ${cmp.broker} c=1 p50 = ${describeRatio(at(1, cmp.nuropb.name), at(1, cmp.moleculer.name), "latency")} of ${cmp.moleculer.name}'s (target ≤ ${formatPercent(BROKER_LATENCY_TARGET)}): ${latOk ? "OK" : "ABOVE TARGET"}`,
    ].join("\n"),
    ok: rawOk && molOk && latOk && !errors,
  };
}
