import { configureMesh, createAmqpTransport } from "@nuropb/transport-amqp";
import { provided, useBroker } from "../brokers.ts";
import { startNuropbEcho } from "../peers/nuropb-echo.ts";
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

const TRANSIENT = "request (transient)";
const PERSISTENT = "request (persistentRequests)";
const COMMAND = "command (persistent)";

/**
 * What persistence costs on RabbitMQ: nuropb requests published transient (the default) and with
 * `persistentRequests: true`, and commands (always persistent), in the same run.
 */
export const amqpPersistenceSuite: BenchSuite = {
  name: "amqp-persistence",
  description:
    "RabbitMQ: nuropb requests transient vs persistentRequests, and persistent commands (req/s, p50/p99)",
  async run(): Promise<SuiteResult> {
    const base = provided(await useBroker("rabbitmq"), "amqpUrl");
    return withCleanup(async (defer) => {
      const url = `${base}/bench-persist-${runTag()}`;
      await configureMesh({ url });
      // The factory is called for the service, then once per client: each client below gets
      // the `persistentRequests` in force when it is added.
      let persistentRequests = false;
      const make = () => createAmqpTransport({ url, persistentRequests });
      const echo = await startNuropbEcho(make, `echo-${runTag()}`);
      defer(() => echo.close());
      const transient = await echo.addClient();
      persistentRequests = true;
      const persistent = await echo.addClient();
      persistentRequests = false;
      // Commands go to a service of their own, so that any backlog they leave in its queue
      // never delays the requests measured next.
      const sink = await startNuropbEcho(make, `sink-${runTag()}`);
      defer(() => sink.close());
      const commander = (await sink.addClient()).client;
      const cases: EchoCase[] = [
        { name: TRANSIENT, call: transient.call },
        { name: PERSISTENT, call: persistent.call },
        {
          name: COMMAND,
          // One command, resolved once the broker confirmed it (on disk, or consumed).
          call: async (params) => {
            await commander.command(sink.serviceName, "echo", params as Record<string, unknown>);
            return params;
          },
        },
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
      const cost = (c: number): string =>
        `c=${String(c)}: persistent requests reach ${describeRatio(at(c, PERSISTENT), at(c, TRANSIENT), "throughput")} of transient req/s, p50 ${describeRatio(at(c, PERSISTENT), at(c, TRANSIENT), "latency")} of transient's`;
      return {
        columns: RR_COLUMNS,
        rows: stats.map(statsRow),
        notes: [
          "medians of 3 interleaved rounds of 800 ms per case, after warm-up; one private RabbitMQ node (classic queues, its default fsync behaviour)",
          "requests: echo round trips (service prefetch 64, client on its own connection); commands: command() until the broker's confirm, no response, to a second service",
          "RabbitMQ confirms a persistent message once it is on disk, or once it was consumed from every queue it reached, whichever comes first",
          cost(1),
          cost(64),
          ...errorNotes(stats),
        ],
        comparison: `${cost(64)}; commands at c=64: ${String(Math.round(at(64, COMMAND).reqPerSec))} /s`,
      };
    });
  },
};
