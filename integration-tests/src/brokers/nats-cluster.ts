import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "nats";
import { freePort, killPidFile, launchBroker, stopBroker, type BrokerProcess } from "./process.ts";

// A NATS cluster with JetStream on one machine: every server has its own client and cluster
// ports, store directory and server name, and routes to the others. Launched by the test file
// (or the bench) that needs it, in about a second.

/** One server of a {@link NatsCluster}. */
export interface NatsClusterServer {
  readonly name: string;
  readonly url: string;
  readonly process: BrokerProcess;
}

/** A private NATS cluster (see {@link launchNatsCluster}). */
export interface NatsCluster {
  readonly servers: readonly NatsClusterServer[];
  /** Every server's URL. */
  readonly urls: readonly string[];
  /**
   * SIGKILL of server `index`; waits until it has exited and JetStream answers again through the
   * others (a new meta leader, when the killed server was it).
   */
  kill(index: number): Promise<void>;
  /** Starts server `index` again (same ports and store) and waits until JetStream answers. */
  start(index: number): Promise<void>;
  /** Stops every server and removes their directories. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts `size` (default 3) `nats-server -js` processes routed into one cluster and waits until
 * JetStream has a meta leader (streams can be created with `num_replicas: size`).
 * @throws Error saying how to install nats-server, or why the cluster did not form: never a skip.
 */
export async function launchNatsCluster(size = 3): Promise<NatsCluster> {
  if (!Number.isInteger(size) || size < 1 || size > 5) {
    throw new TypeError(`launchNatsCluster: size must be an integer from 1 to 5, got ${size}`);
  }
  const dir = await mkdtemp(join(tmpdir(), "nuropb-nats-cluster-"));
  const ports: { client: number; cluster: number }[] = [];
  const taken = new Set<number>();
  while (ports.length < size) {
    const client = await freePort();
    const cluster = await freePort();
    if (client === cluster || taken.has(client) || taken.has(cluster)) continue;
    taken.add(client).add(cluster);
    ports.push({ client, cluster });
  }
  const clusterName = `nuropb-${dir.slice(-6).replace(/[^A-Za-z0-9]/g, "x")}`;
  const servers: NatsClusterServer[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.allSettled(servers.map((s) => stopBroker(s.process)));
    for (let i = 0; i < size; i++) await killPidFile(join(dir, `n${i}.pid`), dir);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const launched = await Promise.all(
      ports.map((p, i) => {
        const routes = ports
          .filter((_, j) => j !== i)
          .map((o) => `nats://127.0.0.1:${o.cluster}`)
          .join(",");
        return launchBroker({
          name: `NATS cluster server n${i}`,
          command: "nats-server",
          args: [
            "-js",
            "-sd",
            join(dir, `n${i}`),
            "-a",
            "127.0.0.1",
            "-p",
            String(p.client),
            "-n",
            `n${i}`,
            "--cluster_name",
            clusterName,
            "--cluster",
            `nats://127.0.0.1:${p.cluster}`,
            "--routes",
            routes,
            "-P",
            join(dir, `n${i}.pid`),
          ],
          readyLine: /Server is ready/,
          installHint: "apt-get install -y nats-server",
        });
      }),
    );
    launched.forEach((proc, i) =>
      servers.push({ name: `n${i}`, url: `nats://127.0.0.1:${ports[i]?.client}`, process: proc }),
    );
    await awaitJetStream(servers.map((s) => s.url));
    await awaitPlacement(servers[0]?.url ?? "", size);
  } catch (err) {
    await stopAll();
    throw new Error(
      `NATS cluster did not start: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  let stopped = false;
  return {
    servers,
    urls: servers.map((s) => s.url),
    async kill(index) {
      await server(servers, index).process.kill("SIGKILL");
      await awaitJetStream(servers.filter((s) => s.process.running).map((s) => s.url));
    },
    async start(index) {
      const s = server(servers, index);
      await s.process.start();
      await awaitJetStream([s.url]);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopAll();
    },
  };
}

function server(servers: readonly NatsClusterServer[], index: number): NatsClusterServer {
  const s = servers[index];
  if (s === undefined) throw new RangeError(`no server ${index} in a cluster of ${servers.length}`);
  return s;
}

/**
 * Waits (bounded) until the cluster can place a stream on `replicas` servers (every server has
 * joined the JetStream meta group): creates and deletes a probe stream.
 */
async function awaitPlacement(url: string, replicas: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  const nc = await connect({ servers: url, timeout: 2_000 });
  try {
    const jsm = await nc.jetstreamManager({ timeout: 5_000 });
    for (;;) {
      try {
        await jsm.streams.add({
          name: "HARNESS-PROBE",
          subjects: ["harness.probe"],
          num_replicas: replicas,
        });
        await jsm.streams.delete("HARNESS-PROBE");
        return;
      } catch (err) {
        if (Date.now() > deadline) {
          throw new Error(
            `JetStream cannot place a stream on ${replicas} servers: ${err instanceof Error ? err.message : String(err)}`,
          );
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  } finally {
    await nc.close();
  }
}

/** Waits (bounded) until JetStream answers through each of `urls` (a meta leader exists). */
async function awaitJetStream(urls: readonly string[]): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (const url of urls) {
    let last = "";
    for (;;) {
      try {
        const nc = await connect({ servers: url, timeout: 2_000 });
        try {
          const jsm = await nc.jetstreamManager({ timeout: 2_000 });
          await jsm.getAccountInfo();
          break;
        } finally {
          await nc.close();
        }
      } catch (err) {
        last = err instanceof Error ? err.message : String(err);
      }
      if (Date.now() > deadline) throw new Error(`JetStream does not answer at ${url}: ${last}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
