import { createNatsTransport } from "@nuropb/transport-nats";
import { provided, useBroker } from "../brokers.ts";
import { startMoleculerEcho } from "../peers/moleculer-echo.ts";
import { startNuropbEcho } from "../peers/nuropb-echo.ts";
import {
  RAW_NATS_JETSTREAM_SETTINGS,
  startRawNatsJetStreamEcho,
} from "../peers/raw-nats-jetstream.ts";
import { RAW_NATS_SETTINGS, startRawNatsEcho } from "../peers/raw-nats.ts";
import { runTag, withCleanup } from "../rr.ts";
import type { BenchSuite, SuiteResult } from "../suite.ts";
import { runBrokerComparison } from "./broker-comparison.ts";

/** nuropb over NATS vs the raw `nats` client and Moleculer's NATS transporter. */
export const natsSuite: BenchSuite = {
  name: "nats",
  description:
    "request/response echo over NATS: nuropb (JetStream service queue) vs raw nats (reply subscription; nc.request(); JetStream work queue) vs Moleculer's NATS transporter",
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
      const raw = await startRawNatsEcho(url);
      defer(() => raw.close());
      const rawJs = await startRawNatsJetStreamEcho(url);
      defer(() => rawJs.close());
      const moleculer = await startMoleculerEcho({ type: "NATS", options: { url } });
      defer(() => moleculer.close());
      return runBrokerComparison({
        broker: "nats",
        nuropb: { name: "nuropb nats", call: client.call },
        raw: { name: "nats reply-sub (raw)", call: raw.callReplySub },
        others: [
          { name: "nats nc.request() (raw)", call: raw.callRequest },
          { name: "nats JetStream (raw)", call: rawJs.call },
        ],
        moleculer: { name: "Moleculer NATS", call: moleculer.call },
        notes: [
          "nuropb: service (prefetch 64) and client on their own connections; requests go through the service's JetStream work queue (durable, acked), responses over core NATS",
          `raw: ${RAW_NATS_SETTINGS}`,
          `raw JetStream: ${RAW_NATS_JETSTREAM_SETTINGS}`,
          "Moleculer: NATS transporter, defaults (JSON serializer, balanced requests through the transporter)",
        ],
      });
    });
  },
};
