/**
 * runner: three instances of the `inventory` service, each under a runner of its own; they elect
 * a leader, the leader is killed (its transport closes under it and its runner gives up), another
 * instance takes over, and a status watcher (`client.watchServices()`) follows it all.
 *
 * On the in-memory transport (the default) the instances share one hub and elect on a lease
 * kept by the hub. With NUROPB_AMQP_URL set each instance has its own RabbitMQ connection and
 * they elect on a single-active-consumer queue (`createAmqpLeaderElection`).
 */
import { pathToFileURL } from "node:url";
import {
  createClient,
  createLeaseElection,
  createService,
  type LeaderElection,
} from "@nuropb/core";
import type { Transport } from "@nuropb/protocol";
import {
  createRunner,
  type ElectionContext,
  type Runner,
  type ServicesView,
  type ServicesWatch,
} from "@nuropb/runner";
import {
  configureMesh,
  createAmqpLeaderElection,
  createAmqpTransport,
  obfuscateUrl,
} from "@nuropb/transport-amqp";
import {
  createMemoryHub,
  createMemoryLeaseStore,
  createMemoryTransport,
} from "@nuropb/transport-memory";

export const SERVICE_NAME = "inventory";

/** The service each instance runs; the leader declares its topology (the others wait for it). */
class Inventory {
  readonly #stock = new Map<string, number>([["tea", 12]]);
  count({ item }: { item: string }): number {
    return this.#stock.get(item) ?? 0;
  }
}

/** Options of {@link startCluster}; the defaults are what `npm start` uses. */
export interface ClusterOptions {
  /** RabbitMQ URL; empty means the memory transport. @defaultValue process.env.NUROPB_AMQP_URL */
  readonly amqpUrl?: string;
  /** Status heartbeat of each instance, in ms: a killed one leaves the view after three. @defaultValue 500 */
  readonly heartbeatMs?: number;
}

/** One instance: its runner and the transport it runs on now. */
export interface Instance {
  readonly label: string;
  readonly runner: Runner;
  /** The instance id it reports in the status view (its election candidate id). */
  readonly instanceId: () => string | undefined;
  /** Closes the instance's transport under it: to the mesh it is gone, as if killed. */
  kill(): Promise<void>;
}

/** Three instances and the watcher, running. */
export interface Cluster extends AsyncDisposable {
  /** "the memory transport" or the broker's URL without its password. */
  readonly mesh: string;
  readonly instances: readonly Instance[];
  readonly watch: ServicesWatch;
  /** The instance whose election says it leads now, if any. */
  leader(): Instance | undefined;
  /** The leader's instance id as the status view has it. */
  viewedLeader(): string | undefined;
  close(): Promise<void>;
}

/** Starts three `inventory` instances, one after another, and a status watcher. */
export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const amqpUrl = options.amqpUrl ?? process.env.NUROPB_AMQP_URL ?? "";
  const heartbeatMs = options.heartbeatMs ?? 500;
  let newTransport: () => Transport;
  let election: (context: ElectionContext) => LeaderElection;
  if (amqpUrl === "") {
    const hub = createMemoryHub();
    newTransport = () => createMemoryTransport({ hub });
    election = ({ service, candidateId, transport }) =>
      createLeaseElection({
        store: createMemoryLeaseStore({ hub, name: service, transport }),
        candidateId,
        leaseMs: 1_000,
        renewMs: 300,
      });
  } else {
    await configureMesh({ url: amqpUrl }); // idempotent: the vhost and exchanges, if missing
    newTransport = () => createAmqpTransport({ url: amqpUrl });
    // The election has a connection of its own; the runner closes it with the service.
    election = ({ service, candidateId }) =>
      createAmqpLeaderElection({
        url: amqpUrl,
        name: service,
        candidateId,
        probeMs: 200,
        leaseMs: 2_000,
        heartbeatSec: 2,
      });
  }
  const elections = new Map<string, LeaderElection>();
  const instances: Instance[] = [];
  // The watcher is a plain client; its watch reads a transient queue of its own.
  const watcherTransport = newTransport();
  const watcher = createClient({ transport: watcherTransport });
  await watcher.connect();
  const watch = await watcher.watchServices({ pruneEveryMs: 100 });
  for (const label of ["a", "b", "c"]) {
    let transport: Transport | undefined;
    let instanceId: string | undefined;
    const runner = createRunner({
      transport: () => (transport = newTransport()),
      election: (context) => {
        const made = election(context);
        elections.set(label, made);
        return made;
      },
      services: [
        (context) => {
          instanceId = context.instanceId;
          return createService({
            transport: context.transport,
            name: SERVICE_NAME,
            instance: new Inventory(),
            instanceId: context.instanceId,
            election: context.elect(SERVICE_NAME),
            // The leader declares the topology; the others consume once it is there.
            topologyWaitMs: 5_000,
          });
        },
      ],
      restart: false, // a killed instance stays dead
      status: { heartbeatMs },
      drainTimeoutMs: 2_000,
    });
    await runner.start();
    instances.push({
      label,
      runner,
      instanceId: () => instanceId,
      kill: async () => {
        await transport?.close();
        await runner.done();
      },
    });
  }
  const leader = (): Instance | undefined =>
    instances.find((i) => elections.get(i.label)?.isLeader === true);
  const viewedLeader = (): string | undefined =>
    watch.view().services.find((s) => s.name === SERVICE_NAME)?.leader;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      await Promise.all(instances.map((i) => i.runner.stop()));
      await watch.close();
      await watcher.disconnect();
      await watcherTransport.close();
    })());
  return {
    mesh: amqpUrl === "" ? "the memory transport" : obfuscateUrl(amqpUrl),
    instances,
    watch,
    leader,
    viewedLeader,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** One line per view: each instance's state, the leader starred. */
export function describeView(view: ServicesView): string {
  const service = view.services.find((s) => s.name === SERVICE_NAME);
  if (service === undefined) return `${SERVICE_NAME}: no instance`;
  const parts = service.instances.map(
    (i) => `${i.instanceId.slice(0, 8)} ${i.state}${i.instanceId === service.leader ? "*" : ""}`,
  );
  return `${SERVICE_NAME}: ${parts.join(", ")}`;
}

async function waitFor(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

/** `npm start`: the whole story, printed as the status view follows it. */
export async function main(print: (line: string) => void = console.log): Promise<void> {
  const cluster = await startCluster();
  print(`three ${SERVICE_NAME} instances on ${cluster.mesh}`);
  let last = "";
  let closing = false;
  const show = (view: ServicesView): void => {
    if (closing) return; // the story ends with the view after the takeover, not the shutdown
    const line = describeView(view);
    if (line !== last) print(`view: ${(last = line)}`);
  };
  const following = (async () => {
    for await (const view of cluster.watch.updates()) show(view);
  })();
  try {
    // Until all three report operational (or leader) and the view knows the leader.
    await waitFor(() => {
      const service = cluster.watch.view().services.find((s) => s.name === SERVICE_NAME);
      const settled = service?.instances.filter((i) => i.state !== "starting").length === 3;
      return settled && cluster.leader() !== undefined && cluster.viewedLeader() !== undefined;
    }, 10_000);
    const old = cluster.leader();
    if (old === undefined) throw new Error("no leader was elected");
    show(cluster.watch.view());
    print(`killing the leader, instance ${old.label} (${String(old.instanceId()).slice(0, 8)})`);
    const killedAt = Date.now();
    await old.kill();
    const took = await waitFor(() => {
      const now = cluster.leader();
      return now !== undefined && now !== old && cluster.viewedLeader() === now.instanceId();
    }, 10_000);
    if (!took) throw new Error("no other instance took over");
    const now = cluster.leader();
    print(
      `instance ${String(now?.label)} (${String(now?.instanceId()).slice(0, 8)}) leads, ${String(Date.now() - killedAt)} ms after the kill`,
    );
    const gone = String(old.instanceId());
    await waitFor(
      () => !(cluster.watch.view().services[0]?.instances ?? []).some((i) => i.instanceId === gone),
      10_000,
    );
    show(cluster.watch.view());
  } finally {
    closing = true;
    await cluster.close();
    await following;
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  await main();
}
