import { createNatsTransport } from "@nuropb/transport-nats";
import { provided, useBroker } from "../brokers.ts";
import { startMoleculerEcho } from "../peers/moleculer-echo.ts";
import { startNuropbEcho } from "../peers/nuropb-echo.ts";
import {
  RAW_NATS_JETSTREAM_SETTINGS,
  startRawNatsJetStreamEcho,
} from "../peers/raw-nats-jetstream.ts";
import { RAW_NATS_SETTINGS, startRawNatsEcho } from "../peers/raw-nats.ts";
import {
  RR_COLUMNS,
  describeRatio,
  errorNotes,
  jsonBytes,
  largeParams,
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
import type { BenchSuite, SuiteResult } from "../suite.ts";

const NUROPB = "nuropb nats (core requests)";
const NUROPB_JS = "nuropb nats (requests: jetstream)";
const RAW = "nats reply-sub (raw)";
const MOLECULER = "Moleculer NATS";

/**
 * nuropb over NATS (requests on core NATS, the default; and on JetStream) vs the raw `nats`
 * client and Moleculer's NATS transporter. Targets (issue #20): c=64 req/s at or above
 * Moleculer's, c=1 p50 at or below it.
 */
export const natsSuite: BenchSuite = {
  name: "nats",
  description:
    "request/response echo over NATS: nuropb (core request/reply; JetStream requests) vs raw nats (reply subscription; nc.request(); JetStream work queue) vs Moleculer's NATS transporter",
  async run(): Promise<SuiteResult> {
    const url = provided(await useBroker("nats"), "natsUrl");
    return withCleanup(async (defer) => {
      const mesh = `bench_${runTag()}`;
      const nuropb = await startNuropbEcho(
        () => createNatsTransport({ servers: url, mesh }),
        `echo-${runTag()}`,
      );
      defer(() => nuropb.close());
      const client = await nuropb.addClient();
      const nuropbJs = await startNuropbEcho(
        () => createNatsTransport({ servers: url, mesh, requests: "jetstream" }),
        `echojs-${runTag()}`,
      );
      defer(() => nuropbJs.close());
      const clientJs = await nuropbJs.addClient();
      const raw = await startRawNatsEcho(url);
      defer(() => raw.close());
      const rawJs = await startRawNatsJetStreamEcho(url);
      defer(() => rawJs.close());
      const moleculer = await startMoleculerEcho({ type: "NATS", options: { url } });
      defer(() => moleculer.close());
      const cases = [
        { name: NUROPB, call: client.call },
        { name: NUROPB_JS, call: clientJs.call },
        { name: RAW, call: raw.callReplySub },
        { name: "nats nc.request() (raw)", call: raw.callRequest },
        { name: "nats JetStream (raw)", call: rawJs.call },
        { name: MOLECULER, call: moleculer.call },
      ];
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
      const throughputOk = throughputRatio(at(64, NUROPB), at(64, MOLECULER)) >= 1;
      const latencyOk = latencyRatio(at(1, NUROPB), at(1, MOLECULER)) <= 1;
      const errors = stats.filter((s) => s.name.startsWith("nuropb")).some((s) => s.errors > 0);
      return {
        columns: RR_COLUMNS,
        rows: stats.map(statsRow),
        notes: [
          "medians of 3 interleaved rounds of 800 ms per case, after warm-up; echo of a JSON object; one private nats server",
          "nuropb: service (prefetch 64) and client on their own connections; requests on core NATS to the service's queue group, responses to the client's inbox (core); the jetstream case stores requests in the service's work-queue stream",
          `raw: ${RAW_NATS_SETTINGS}`,
          `raw JetStream: ${RAW_NATS_JETSTREAM_SETTINGS}`,
          "Moleculer: NATS transporter, defaults (JSON serializer, balanced requests through the transporter)",
          `c=64: nuropb = ${describeRatio(at(64, NUROPB), at(64, RAW), "throughput")} of ${RAW} req/s; jetstream requests = ${describeRatio(at(64, NUROPB_JS), at(64, MOLECULER), "throughput")} of Moleculer's`,
          `c=1 p50: nuropb = ${describeRatio(at(1, NUROPB), at(1, RAW), "latency")} of ${RAW}; jetstream requests = ${describeRatio(at(1, NUROPB_JS), at(1, MOLECULER), "latency")} of Moleculer's`,
          `c=16 16 KB: nuropb = ${describeRatio(at(16, NUROPB), at(16, MOLECULER), "throughput")} of Moleculer's req/s`,
          ...errorNotes(stats),
        ],
        comparison: [
          `nuropb nats at c=64 = ${describeRatio(at(64, NUROPB), at(64, MOLECULER), "throughput")} of ${MOLECULER} req/s (target ≥ 100 %): ${throughputOk ? "OK" : "BELOW TARGET"}`,
          `nuropb nats c=1 p50 = ${describeRatio(at(1, NUROPB), at(1, MOLECULER), "latency")} of ${MOLECULER}'s (target ≤ 100 %): ${latencyOk ? "OK" : "ABOVE TARGET"}`,
        ].join("\n"),
        ok: throughputOk && latencyOk && !errors,
      };
    });
  },
};
