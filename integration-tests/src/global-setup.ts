import type { TestProject } from "vitest/node";
import { startRabbitMq } from "./brokers/rabbitmq.ts";
import { startNats } from "./brokers/nats.ts";
import { startRedis } from "./brokers/redis.ts";
import type { StartedBroker } from "./brokers/types.ts";

/**
 * Starts one private RabbitMQ, NATS (JetStream) and Redis server for the whole integration run,
 * on free ports with their own data directories, and stops them afterwards. A broker that cannot
 * start fails the run with a message saying how to install it: a green run means the tests ran.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const started: StartedBroker[] = [];
  const results = await Promise.allSettled([startRabbitMq(), startNats(), startRedis()]);
  const failures: string[] = [];
  for (const r of results) {
    if (r.status === "fulfilled") started.push(r.value);
    else failures.push(r.reason instanceof Error ? r.reason.message : String(r.reason));
  }
  if (failures.length > 0) {
    await Promise.allSettled(started.map((b) => b.stop()));
    throw new Error(
      `integration brokers failed to start:\n- ${failures.join("\n- ")}\n` +
        "Install them with: apt-get install -y rabbitmq-server nats-server redis-server",
    );
  }
  for (const b of started) {
    for (const [k, v] of Object.entries(b.provide)) project.provide(k as never, v as never);
  }
  return async () => {
    await Promise.allSettled(started.map((b) => b.stop()));
  };
}
