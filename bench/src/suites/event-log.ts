import { performance } from "node:perf_hooks";
import { createClient, type MeshClient } from "@nuropb/core";
import { eventLogOf, type Transport } from "@nuropb/protocol";
import { createAmqpTransport, configureMesh, teardownMesh } from "@nuropb/transport-amqp";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { createNatsTransport } from "@nuropb/transport-nats";
import { createRedisTransport } from "@nuropb/transport-redis";
import { Redis } from "ioredis";
import { connect as connectNats } from "nats";
import { provided, useBroker } from "../brokers.ts";
import { runTag, withCleanup } from "../rr.ts";
import { formatInt, formatPercent, median } from "../suite.ts";
import type { BenchSuite, SuiteResult } from "../suite.ts";

/** Events in flight at once while publishing. */
const WINDOW = 64;
/** Measured rounds of each publishing case (interleaved); the median is reported. */
const ROUNDS = 3;
/** Longest one measured run may take, in ms: it stops early and its rate counts what it did. */
const RUN_BUDGET_MS = 1_000;
/** Longest one transport may take in all; past it the transport is reported as not finished. */
const TARGET_DEADLINE_MS = 30_000;
/** Retention of the logs set up here: nothing the bench appends is dropped. */
const RETENTION = { maxAgeMs: 3_600_000, maxBytes: 1024 ** 3 };

/** One transport the suite runs on: how to make transports on a mesh, and how many events. */
interface Target {
  readonly name: string;
  /** Events per round of each publishing case. */
  readonly events: number;
  /** A transport on `mesh` (the suite connects and closes it); undefined: not available. */
  readonly open: (mesh: string) => Promise<() => Transport>;
  /**
   * Removes what a mesh of the run left on the broker (its log above all: 1 GiB of retention
   * each); undefined: nothing stays (memory).
   */
  readonly remove?: (mesh: string) => Promise<void>;
}

interface Row {
  readonly target: string;
  readonly plain: number;
  readonly plainWithLog: number;
  readonly persisted: number;
  readonly query: number;
  readonly replay: number;
}

const event = { order: 42, sku: "A-1", qty: 3, note: "bench" };

/**
 * Publishes up to `n` events, `WINDOW` at a time, for at most `budgetMs`; events per second.
 */
async function publishRate(
  client: MeshClient,
  n: number,
  persisted: boolean,
  budgetMs = RUN_BUDGET_MS,
): Promise<number> {
  const topic = "bench.orders.created";
  let next = 0;
  let done = 0;
  const t0 = performance.now();
  const end = t0 + budgetMs;
  await Promise.all(
    Array.from({ length: WINDOW }, async () => {
      while (next < n && performance.now() < end) {
        next++;
        await client.publishEvent(topic, event, {}, persisted ? { persisted: true } : {});
        done++;
      }
    }),
  );
  return (done / (performance.now() - t0)) * 1000;
}

/** Reads every stored event of the topic in pages of 1000; events per second. */
async function queryRate(client: MeshClient): Promise<{ rate: number; count: number }> {
  let count = 0;
  let after: string | undefined;
  const t0 = performance.now();
  const end = t0 + RUN_BUDGET_MS;
  do {
    const page = await client.queryEvents({
      topics: ["bench.#"],
      limit: 1000,
      ...(after === undefined ? {} : { after }),
    });
    count += page.events.length;
    after = page.cursor;
  } while (after !== undefined && performance.now() < end);
  return { rate: (count / (performance.now() - t0)) * 1000, count };
}

/** Replays `count` stored events through subscribeEvents from the start; events per second. */
async function replayRate(client: MeshClient, count: number): Promise<number> {
  let seen = 0;
  let done!: () => void;
  const all = new Promise<void>((resolve) => (done = resolve));
  const t0 = performance.now();
  const sub = await client.subscribeEvents({ topics: ["bench.#"], from: { time: 0 } }, () => {
    if (++seen === count) done();
  });
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    all,
    sub.ended(),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, RUN_BUDGET_MS))),
  ]);
  clearTimeout(timer);
  const elapsed = performance.now() - t0;
  await sub.stop();
  return (seen / elapsed) * 1000;
}

async function measure(target: Target): Promise<Row> {
  return withCleanup(async (defer) => {
    const tag = runTag();
    const clientOn = async (make: () => Transport): Promise<MeshClient> => {
      const transport = make();
      defer(() => transport.close());
      const client = createClient({ transport });
      await client.connect();
      defer(() => client.disconnect());
      return client;
    };
    // Registered first, so that they run last, once every transport is closed.
    for (const mesh of [`bench-nolog-${tag}`, `bench-log-${tag}`]) {
      const remove = target.remove;
      if (remove !== undefined) defer(() => remove(mesh));
    }
    const noLog = await clientOn(await target.open(`bench-nolog-${tag}`));
    const makeLogged = await target.open(`bench-log-${tag}`);
    const setupTransport = makeLogged();
    defer(() => setupTransport.close());
    await setupTransport.connect();
    await eventLogOf(setupTransport)?.setup(RETENTION);
    const logged = await clientOn(makeLogged);
    // Warm-up, then interleaved rounds so drift hits every case alike.
    await publishRate(noLog, Math.min(1000, target.events), false, RUN_BUDGET_MS / 3);
    await publishRate(logged, Math.min(1000, target.events), true, RUN_BUDGET_MS / 3);
    const plain: number[] = [];
    const plainWithLog: number[] = [];
    const persisted: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      plain.push(await publishRate(noLog, target.events, false));
      plainWithLog.push(await publishRate(logged, target.events, false));
      persisted.push(await publishRate(logged, target.events, true));
    }
    const query = await queryRate(logged);
    const replay = await replayRate(logged, query.count);
    return {
      target: target.name,
      plain: median(plain),
      plainWithLog: median(plainWithLog),
      persisted: median(persisted),
      query: query.rate,
      replay,
    };
  });
}

/** The transports; memory's meshes share one hub. */
function targets(): readonly Target[] {
  const hub = createMemoryHub();
  return [
    {
      name: "memory",
      events: 20_000,
      open: (mesh) => Promise.resolve(() => createMemoryTransport({ hub, mesh })),
    },
    {
      name: "redis",
      events: 10_000,
      open: async (mesh) => {
        const url = provided(await useBroker("redis"), "redisUrl");
        return () => createRedisTransport({ url, mesh });
      },
      remove: async (mesh) => {
        const redis = new Redis(provided(await useBroker("redis"), "redisUrl"));
        try {
          for await (const keys of redis.scanStream({ match: `${mesh}:*`, count: 500 })) {
            if ((keys as string[]).length > 0) await redis.del(...(keys as string[]));
          }
        } finally {
          redis.disconnect();
        }
      },
    },
    {
      name: "amqp",
      events: 5_000,
      open: async (mesh) => {
        const base = provided(await useBroker("rabbitmq"), "amqpUrl");
        const url = `${base}/${mesh}`;
        await configureMesh({ url });
        return () => createAmqpTransport({ url });
      },
      remove: async (mesh) => {
        const base = provided(await useBroker("rabbitmq"), "amqpUrl");
        await teardownMesh({ url: `${base}/${mesh}` });
      },
    },
    {
      name: "nats",
      events: 5_000,
      open: async (mesh) => {
        const servers = provided(await useBroker("nats"), "natsUrl");
        return () => createNatsTransport({ servers, mesh });
      },
      remove: async (mesh) => {
        const nc = await connectNats({ servers: provided(await useBroker("nats"), "natsUrl") });
        try {
          const jsm = await nc.jetstreamManager();
          for await (const name of jsm.streams.names()) {
            if (name.startsWith(`NUROPB-${mesh}-`)) await jsm.streams.delete(name);
          }
        } finally {
          await nc.close();
        }
      },
    },
  ];
}

/** Whether the transport of `target` offers an event log (checked without any I/O). */
function hasEventLog(name: string): boolean {
  const probe: Record<string, () => Transport> = {
    memory: () => createMemoryTransport({ hub: createMemoryHub() }),
    redis: () => createRedisTransport({ url: "redis://127.0.0.1:1" }),
    amqp: () => createAmqpTransport({ url: "amqp://127.0.0.1:1/probe" }),
    nats: () => createNatsTransport({ servers: "nats://127.0.0.1:1" }),
  };
  const make = probe[name];
  return make !== undefined && eventLogOf(make()) !== undefined;
}

/** Event history: persisted publish and reading back, beside plain publishing, per transport. */
export const eventLogSuite: BenchSuite = {
  name: "event-log",
  description:
    "event history per transport: persisted publish (append) and query / replay throughput beside plain event publishing on the same transport",
  async run(): Promise<SuiteResult> {
    const rows: Row[] = [];
    const notes: string[] = [];
    for (const target of targets()) {
      if (!hasEventLog(target.name)) {
        notes.push(`${target.name}: the transport offers no event log yet, skipped`);
        continue;
      }
      let timer: NodeJS.Timeout | undefined;
      try {
        rows.push(
          await Promise.race([
            measure(target),
            new Promise<never>((_, reject) => {
              timer = setTimeout(
                () => reject(new Error(`did not finish within ${TARGET_DEADLINE_MS / 1000} s`)),
                TARGET_DEADLINE_MS,
              );
            }),
          ]),
        );
      } catch (err) {
        // One transport's failure is reported; the others' figures still count.
        notes.push(`${target.name}: FAILED: ${(err as Error)?.message ?? String(err)}`);
      } finally {
        clearTimeout(timer);
      }
    }
    const cell = (v: number): string => formatInt(v);
    const failed = notes.some((n) => n.includes(": FAILED: "));
    return {
      ...(failed ? { ok: false } : {}),
      columns: [
        "transport",
        "publish/s (no log)",
        "publish/s (log set up)",
        "persisted/s",
        "persisted vs no log",
        "query ev/s",
        "replay ev/s",
      ],
      rows: rows.map((r) => [
        r.target,
        cell(r.plain),
        cell(r.plainWithLog),
        cell(r.persisted),
        formatPercent(r.persisted / r.plain),
        cell(r.query),
        cell(r.replay),
      ]),
      comparison: rows
        .map(
          (r) =>
            `${r.target}: persisted publish = ${formatPercent(r.persisted / r.plain)} of plain`,
        )
        .join("; "),
      notes: [
        `one client per mesh, ${WINDOW} events in flight, ${ROUNDS} interleaved rounds (median) of at most ${RUN_BUDGET_MS} ms each; no subscriber is bound, so plain publishing measures the publish path alone`,
        "publish/s (log set up): a plain publishEvent on a mesh whose log is set up (every event sent is stored); persisted/s: publishEvent(…, { persisted: true }), resolved once the log holds it",
        `query: queryEvents pages of 1000 over what was stored; replay: subscribeEvents from the start over the same (each for at most ${RUN_BUDGET_MS} ms)`,
        ...notes,
      ],
    };
  },
};
