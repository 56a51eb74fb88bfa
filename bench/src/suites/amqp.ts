import { configureMesh, createAmqpTransport, markMeshCompact } from "@nuropb/transport-amqp";
import { provided, useBroker } from "../brokers.ts";
import { startMoleculerEcho } from "../peers/moleculer-echo.ts";
import { startNuropbEcho } from "../peers/nuropb-echo.ts";
import { RAW_AMQP_NUROPB_WIRE, RAW_AMQP_SETTINGS, startRawAmqpEcho } from "../peers/raw-amqp.ts";
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
import { formatPercent } from "../suite.ts";
import type { BenchSuite, SuiteResult } from "../suite.ts";

/** nuropb's req/s at c=64 on the Python wire must reach this share of Moleculer's AMQP transporter's. */
export const AMQP_THROUGHPUT_TARGET = 1;
/** …and on the compact dialect this share. */
export const AMQP_COMPACT_THROUGHPUT_TARGET = 1.2;
/** nuropb's p50 at c=1 (Python wire) may be at most this multiple of Moleculer's. */
export const AMQP_LATENCY_TARGET = 1;

const NUROPB = "nuropb amqp";
const COMPACT = "nuropb amqp, compact";
const RAW = "amqplib (raw)";
const RAW_WIRE = "amqplib, nuropb wire";
const MOLECULER = "Moleculer AMQP";

/** Moleculer's AMQP transporter settings (its defaults are prefetch 1 and Nagle on). */
const MOLECULER_AMQP = { prefetch: 64, socketOptions: { noDelay: true } } as const;

/** nuropb over RabbitMQ vs raw amqplib and Moleculer's AMQP transporter. */
export const amqpSuite: BenchSuite = {
  name: "amqp",
  description:
    "request/response echo over RabbitMQ: nuropb vs raw amqplib (same wire features) vs Moleculer's AMQP transporter",
  async run(): Promise<SuiteResult> {
    const base = provided(await useBroker("rabbitmq"), "amqpUrl");
    return withCleanup(async (defer) => {
      const vhost = `bench-amqp-${runTag()}`;
      const url = `${base}/${vhost}`;
      await configureMesh({ url });
      const nuropb = await startNuropbEcho(() => createAmqpTransport({ url }), `echo-${runTag()}`);
      defer(() => nuropb.close());
      const client = await nuropb.addClient();
      // The compact dialect needs a mesh marked for it: a vhost of its own.
      const compactUrl = `${base}/${vhost}-compact`;
      await configureMesh({ url: compactUrl });
      await markMeshCompact({ url: compactUrl });
      const compact = await startNuropbEcho(
        () => createAmqpTransport({ url: compactUrl, dialect: "compact" }),
        `echo-${runTag()}`,
      );
      defer(() => compact.close());
      const compactClient = await compact.addClient();
      const raw = await startRawAmqpEcho(url);
      defer(() => raw.close());
      const rawWire = await startRawAmqpEcho(url, { nuropbWire: true });
      defer(() => rawWire.close());
      const moleculer = await startMoleculerEcho({
        type: "AMQP",
        options: { url, ...MOLECULER_AMQP },
      });
      defer(() => moleculer.close());
      const cases = [
        { name: NUROPB, call: client.call },
        { name: COMPACT, call: compactClient.call },
        { name: RAW, call: raw.call },
        { name: RAW_WIRE, call: rawWire.call },
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
      const tput = throughputRatio(at(64, NUROPB), at(64, MOLECULER));
      const compactTput = throughputRatio(at(64, COMPACT), at(64, MOLECULER));
      const lat = latencyRatio(at(1, NUROPB), at(1, MOLECULER));
      const tputOk = tput >= AMQP_THROUGHPUT_TARGET;
      const compactOk = compactTput >= AMQP_COMPACT_THROUGHPUT_TARGET;
      const latOk = lat <= AMQP_LATENCY_TARGET;
      const nuropbErrors = stats
        .filter((s) => s.name === NUROPB || s.name === COMPACT)
        .some((s) => s.errors > 0);
      const ok = tputOk && compactOk && latOk && !nuropbErrors;
      return {
        columns: RR_COLUMNS,
        rows: stats.map(statsRow),
        notes: [
          "medians of 3 interleaved rounds of 800 ms per case, after warm-up; echo of a JSON object; one private RabbitMQ node",
          "nuropb: service (prefetch 64, the default) and client on their own connections; durable service queue, confirmed requests, mandatory; replies without confirms",
          `compact: the same with dialect "compact" (the NuroPb header fields in basic properties, no headers table), on a mesh marked compact; at c=64 ${describeRatio(at(64, COMPACT), at(64, NUROPB), "throughput")} of the Python wire's req/s, c=1 p50 ${describeRatio(at(1, COMPACT), at(1, NUROPB), "latency")} of its`,
          `raw: ${RAW_AMQP_SETTINGS}`,
          "Moleculer: AMQP transporter with prefetch 64 and socketOptions.noDelay (its defaults, prefetch 1 + Nagle, give ~23 req/s); no publisher confirms",
          `nuropb vs Moleculer: c=64 ${describeRatio(at(64, NUROPB), at(64, MOLECULER), "throughput")} of its req/s; c=16 16 KB ${describeRatio(at(16, NUROPB), at(16, MOLECULER), "throughput")}`,
          `${RAW_WIRE}: ${RAW_AMQP_NUROPB_WIRE}; at c=64 it reaches ${describeRatio(at(64, RAW_WIRE), at(64, RAW), "throughput")} of raw req/s (the wire's own cost), nuropb ${describeRatio(at(64, NUROPB), at(64, RAW_WIRE), "throughput")} of it; c=1 p50 ${describeRatio(at(1, RAW_WIRE), at(1, RAW), "latency")} of raw's`,
          `nuropb vs raw at c=16 16 KB: ${describeRatio(at(16, NUROPB), at(16, RAW), "throughput")} of raw req/s`,
          ...errorNotes(stats),
        ],
        comparison: [
          `nuropb amqp (Python wire) at c=64 = ${describeRatio(at(64, NUROPB), at(64, MOLECULER), "throughput")} of Moleculer AMQP req/s (target ≥ ${formatPercent(AMQP_THROUGHPUT_TARGET)}): ${tputOk ? "OK" : "BELOW TARGET"}`,
          `nuropb amqp (compact) at c=64 = ${describeRatio(at(64, COMPACT), at(64, MOLECULER), "throughput")} of Moleculer AMQP req/s (target ≥ ${formatPercent(AMQP_COMPACT_THROUGHPUT_TARGET)}): ${compactOk ? "OK" : "BELOW TARGET"}`,
          `nuropb amqp (Python wire) p50 at c=1 = ${describeRatio(at(1, NUROPB), at(1, MOLECULER), "latency")} of Moleculer AMQP's (target ≤ ${formatPercent(AMQP_LATENCY_TARGET)}): ${latOk ? "OK" : "ABOVE TARGET"}; compact ${describeRatio(at(1, COMPACT), at(1, MOLECULER), "latency")}`,
          `vs raw amqplib at c=64: Python wire ${describeRatio(at(64, NUROPB), at(64, RAW), "throughput")}, compact ${describeRatio(at(64, COMPACT), at(64, RAW), "throughput")} of its req/s; c=1 p50 ${describeRatio(at(1, NUROPB), at(1, RAW), "latency")} of its`,
        ].join("\n"),
        ok,
      };
    });
  },
};
