import { performance } from "node:perf_hooks";
import { createClient, createService } from "@nuropb/core";
import type { MeshParticipant } from "@nuropb/core";
import type { Transport } from "@nuropb/protocol";
import { configureMesh, createAmqpTransport } from "@nuropb/transport-amqp";
import { launchRabbitCluster } from "../../../integration-tests/src/brokers/rabbitmq-cluster.ts";
import { provided, useBroker } from "../brokers.ts";
import {
  RR_COLUMNS,
  describeRatio,
  errorNotes,
  jsonBytes,
  measureScenario,
  pick,
  runTag,
  sizeLabel,
  smallParams,
  statsRow,
  withCleanup,
} from "../rr.ts";
import type { CaseStats, EchoCase, Scenario } from "../rr.ts";
import type { BenchSuite, SuiteResult } from "../suite.ts";

const SINGLE = "1 node, classic queue";
const CLUSTER = "3-node cluster, quorum queue";

class Echo {
  echo(params: Record<string, unknown>): Record<string, unknown> {
    return params;
  }
}

/**
 * Starts an echo service (its queue of `queueType`) and one client, each on its own connection,
 * and returns the client's round trip as an {@link EchoCase}.
 */
async function echoCase(
  name: string,
  makeTransport: () => Transport,
  queueType: "classic" | "quorum",
  defer: (cleanup: () => Promise<unknown>) => void,
): Promise<EchoCase> {
  const serviceName = `echo-${runTag()}`;
  const service = createService({
    transport: makeTransport(),
    name: serviceName,
    instance: new Echo(),
    queueType,
  });
  defer(() => service.disconnect());
  await service.connect();
  const client: MeshParticipant = createClient({ transport: makeTransport() });
  defer(() => client.disconnect());
  await client.connect();
  return {
    name,
    call: (params) => client.request(serviceName, "echo", params as Record<string, unknown>),
  };
}

/**
 * Request/response on a 3-node RabbitMQ cluster with a quorum service queue beside a single node
 * with a classic one, in the same run (issue #19): c=1 latency and c=64 throughput. The cluster
 * is this suite's own (three Erlang VMs on this machine, started for it and stopped after).
 */
export const clusterSuite: BenchSuite = {
  name: "cluster",
  description:
    "RabbitMQ: 3-node cluster with quorum service queues vs 1 node with classic (c=1 p50/p99, c=64 req/s)",
  async run(): Promise<SuiteResult> {
    const single = provided(await useBroker("rabbitmq"), "amqpUrl");
    return withCleanup(async (defer) => {
      const t0 = performance.now();
      process.stderr.write("  starting a 3-node RabbitMQ cluster…\n");
      const cluster = await launchRabbitCluster(3);
      defer(() => cluster.stop());
      const startS = (performance.now() - t0) / 1000;
      process.stderr.write(`  cluster up in ${startS.toFixed(1)} s\n`);
      const vhost = `bench-cluster-${runTag()}`;
      const singleUrl = `${single}/${vhost}`;
      await configureMesh({ url: singleUrl });
      await configureMesh({ url: `${cluster.nodes[0]?.amqpUrl ?? ""}/${vhost}` });
      // Every client and service lists the three nodes and connects to the first: the quorum
      // queue's leader is there too (declared from it), its two followers on the others.
      const clusterUrl = `${cluster.amqpUrl}/${vhost}`;
      const cases: EchoCase[] = [
        await echoCase(SINGLE, () => createAmqpTransport({ url: singleUrl }), "classic", defer),
        await echoCase(
          CLUSTER,
          () => createAmqpTransport({ url: clusterUrl, failover: "in-order" }),
          "quorum",
          defer,
        ),
      ];
      const small = smallParams();
      const size = sizeLabel(jsonBytes(small));
      const scenarios: Scenario[] = [
        { size, concurrency: 1, params: small },
        { size, concurrency: 64, params: small },
      ];
      const stats: CaseStats[] = [];
      for (const scenario of scenarios) stats.push(...(await measureScenario(cases, scenario)));
      const at = (c: number, name: string): CaseStats =>
        pick(
          stats.filter((s) => s.scenario.concurrency === c),
          name,
        );
      const us = (v: number): string => `${Math.round(v)} µs`;
      const c1 = `c=1: cluster p50 ${us(at(1, CLUSTER).p50Us)} / p99 ${us(at(1, CLUSTER).p99Us)}, single p50 ${us(at(1, SINGLE).p50Us)} / p99 ${us(at(1, SINGLE).p99Us)}`;
      const c64 = `c=64: cluster ${String(Math.round(at(64, CLUSTER).reqPerSec))} req/s, single ${String(Math.round(at(64, SINGLE).reqPerSec))} req/s (cluster reaches ${describeRatio(at(64, CLUSTER), at(64, SINGLE), "throughput")})`;
      return {
        columns: RR_COLUMNS,
        rows: stats.map(statsRow),
        notes: [
          "medians of 3 interleaved rounds of 800 ms per case, after warm-up; echo requests of ~100 B, transient (quorum queues store every message: they are always durable)",
          "cluster: three RabbitMQ nodes on this one machine (they share its cores with the clients), quorum service queue replicated on all three, leader on the node the clients use",
          `the cluster took ${startS.toFixed(1)} s to start and join (not measured above)`,
          c1,
          ...errorNotes(stats),
        ],
        comparison: `${c1}; ${c64}`,
      };
    });
  },
};
