import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { echoEnvelopes } from "../envelopes.ts";
import { startMoleculerEcho } from "../peers/moleculer-echo.ts";
import { startNuropbEcho } from "../peers/nuropb-echo.ts";
import { startRawMemoryEcho } from "../peers/raw-memory-wire.ts";
import {
  RR_COLUMNS,
  describeRatio,
  errorNotes,
  jsonBytes,
  latencyRatio,
  measureScenario,
  pick,
  runTag,
  sizeLabel,
  smallParams,
  statsRow,
  throughputRatio,
  withCleanup,
} from "../rr.ts";
import type { CaseStats, Scenario } from "../rr.ts";
import { formatPercent, measureInterleaved } from "../suite.ts";
import type { BenchSuite, SuiteResult } from "../suite.ts";

/** nuropb over memory must reach this multiple of Moleculer's Fake transporter at c=64 (issue 20). */
export const MEMORY_TARGET_RATIO = 1.2;

/** nuropb's p50 at c=1 over memory may be at most this multiple of Moleculer Fake's (issue 20). */
export const MEMORY_LATENCY_TARGET_RATIO = 1;

const NUROPB = "nuropb memory";
const MOLECULER = "Moleculer Fake";
const RAW = "hand-written wire echo";

/** nuropb request/response in one process vs Moleculer's Fake transporter. */
export const memorySuite: BenchSuite = {
  name: "memory",
  description:
    "request/response echo in one process: nuropb over the memory transport vs Moleculer's Fake transporter (two brokers)",
  run(): Promise<SuiteResult> {
    return withCleanup(async (defer) => {
      const hub = createMemoryHub();
      const mesh = `bench-${runTag()}`;
      const nuropb = await startNuropbEcho(
        () => createMemoryTransport({ hub, mesh }),
        `echo-${runTag()}`,
      );
      defer(() => nuropb.close());
      const client = await nuropb.addClient();
      const moleculer = await startMoleculerEcho("Fake");
      defer(() => moleculer.close());
      const raw = startRawMemoryEcho();
      defer(() => Promise.resolve(raw.close()));
      const cases = [
        { name: NUROPB, call: client.call },
        { name: MOLECULER, call: moleculer.call },
        { name: RAW, call: raw.call },
      ];
      const params = smallParams();
      const size = sizeLabel(jsonBytes(params));
      const stats: CaseStats[] = [];
      for (const concurrency of [1, 64]) {
        const scenario: Scenario = { size, concurrency, params };
        stats.push(...(await measureScenario(cases, scenario, { rounds: 5, sampleMs: 700 })));
      }
      const at64 = stats.filter((s) => s.scenario.concurrency === 64);
      const ours = pick(at64, NUROPB);
      const theirs = pick(at64, MOLECULER);
      const ceiling = pick(at64, RAW);
      const ratio = throughputRatio(ours, theirs);
      const at1 = stats.filter((s) => s.scenario.concurrency === 1);
      const ours1 = pick(at1, NUROPB);
      const theirs1 = pick(at1, MOLECULER);
      const latencyOk = latencyRatio(ours1, theirs1) <= MEMORY_LATENCY_TARGET_RATIO;
      const throughputOk = ratio >= MEMORY_TARGET_RATIO;
      const ok = throughputOk && latencyOk && ours.errors === 0 && ours1.errors === 0;
      // The least any echo over this wire must do: JSON.stringify and JSON.parse of the request
      // and the response envelope (bare JSON, not nuropb's codec), measured alone.
      const { request, response } = echoEnvelopes(params);
      const [json] = measureInterleaved(
        [
          {
            name: "envelope JSON",
            op: () => [
              JSON.parse(JSON.stringify(request)) as unknown,
              JSON.parse(JSON.stringify(response)) as unknown,
            ],
          },
        ],
        { rounds: 5, sampleMs: 200 },
      );
      const jsonUs = 1e6 / (json?.medianOpsPerSec ?? Number.NaN);
      const budgetUs = 1e6 / (MEMORY_TARGET_RATIO * theirs.reqPerSec);
      return {
        columns: RR_COLUMNS,
        rows: stats.map(statsRow),
        notes: [
          "medians of 5 interleaved rounds of 700 ms per case, after warm-up; echo of a JSON object",
          "nuropb: service + client on their own memory transports (one hub); Moleculer: two brokers, transporter Fake, JSON serializer",
          `c=1: nuropb = ${describeRatio(ours1, theirs1, "throughput")} of Moleculer's req/s`,
          `the target leaves ${budgetUs.toFixed(1)} µs per request (1 / (${String(MEMORY_TARGET_RATIO)} × Moleculer's req/s at c=64)) for client, service and transport together; JSON.stringify + JSON.parse of the ${String(jsonBytes(request))} B request and ${String(jsonBytes(response))} B response envelopes alone take ${jsonUs.toFixed(1)} µs (${formatPercent(jsonUs / budgetUs)} of it); nuropb took ${(1e6 / ours.reqPerSec).toFixed(1)} µs`,
          `${RAW}: the ceiling for this wire in one process (bench/src/peers/raw-memory-wire.ts: envelopes as UTF-8 JSON with the contract's headers, a ttl stamped and checked per request, prefetch, a promise per call, and the issue's per-call rules in their smallest form: method table, ctx with addEvent, value-or-promise handler, errors as error responses, settle-once delivery; none of nuropb's other duties) = ${describeRatio(ceiling, theirs, "throughput")} of Moleculer's req/s at c=64, ${(1e6 / ceiling.reqPerSec).toFixed(1)} µs per request; nuropb = ${describeRatio(ours, ceiling, "throughput")} of it`,
          ...errorNotes(stats),
        ],
        comparison: [
          `nuropb memory at c=64 = ${describeRatio(ours, theirs, "throughput")} of Moleculer Fake req/s (target ≥ ${formatPercent(MEMORY_TARGET_RATIO)}): ${throughputOk ? "OK" : "BELOW TARGET"}`,
          `nuropb memory c=1 p50 = ${describeRatio(ours1, theirs1, "latency")} of Moleculer Fake's (target ≤ ${formatPercent(MEMORY_LATENCY_TARGET_RATIO)}): ${latencyOk ? "OK" : "ABOVE TARGET"}`,
          `${RAW} (the ceiling) at c=64 = ${describeRatio(ceiling, theirs, "throughput")} of Moleculer Fake req/s`,
        ].join("\n"),
        ok,
      };
    });
  },
};
