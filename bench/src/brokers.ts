import { performance } from "node:perf_hooks";
// The integration-test harness starts private brokers (own ports, data directories, cleanup).
// The bench is a private workspace, so it borrows the harness by relative path.
import { startNats } from "../../integration-tests/src/brokers/nats.ts";
import { startRabbitMq } from "../../integration-tests/src/brokers/rabbitmq.ts";
import { startRedis } from "../../integration-tests/src/brokers/redis.ts";
import type { StartedBroker } from "../../integration-tests/src/brokers/types.ts";

/** The brokers a suite may ask for. */
export type BrokerKind = "rabbitmq" | "nats" | "redis";

const STARTERS: Readonly<Record<BrokerKind, () => Promise<StartedBroker>>> = {
  rabbitmq: startRabbitMq,
  nats: startNats,
  redis: startRedis,
};

const NAMES: Readonly<Record<BrokerKind, string>> = {
  rabbitmq: "RabbitMQ",
  nats: "NATS",
  redis: "Redis",
};

// One start per broker per bench run, shared by every suite that asks for it.
const started = new Map<BrokerKind, Promise<StartedBroker>>();

/**
 * The private broker of this bench run, started on first use (and only then) and kept until
 * {@link stopBrokers}. Returns what the harness provides (`amqpUrl`, `natsUrl`, `redisUrl`…).
 * @throws Error from the harness when the broker is not installed or does not start.
 */
export async function useBroker(kind: BrokerKind): Promise<Readonly<Record<string, string>>> {
  let p = started.get(kind);
  if (p === undefined) {
    const t0 = performance.now();
    process.stderr.write(`  starting ${NAMES[kind]}…\n`);
    p = STARTERS[kind]();
    p.then(
      () =>
        process.stderr.write(
          `  ${NAMES[kind]} up in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`,
        ),
      () => undefined,
    );
    started.set(kind, p);
  }
  return (await p).provide;
}

/** A value the harness provides, or an error naming it. */
export function provided(values: Readonly<Record<string, string>>, key: string): string {
  const v = values[key];
  if (v === undefined) throw new Error(`broker harness did not provide ${key}`);
  return v;
}

/** Stops every broker this run started (those that failed to start are skipped). Idempotent. */
export async function stopBrokers(): Promise<void> {
  const all = [...started.entries()];
  started.clear();
  await Promise.all(
    all.map(async ([kind, p]) => {
      let broker: StartedBroker;
      try {
        broker = await p;
      } catch {
        return; // never started; the harness cleaned up after itself
      }
      try {
        await broker.stop();
      } catch (err) {
        process.stderr.write(`  could not stop ${NAMES[kind]}: ${String(err)}\n`);
      }
    }),
  );
}
