import { afterAll } from "vitest";
import { newId } from "@nuropb/protocol";
import { createRedisTransport } from "@nuropb/transport-redis";
import { describeEventLogConformance } from "@nuropb/transport-testkit";
import { launchRedis } from "../src/brokers/redis.ts";

// A private server: the retention scenario changes the log's limits, and nothing else may see it.
const server = await launchRedis();
afterAll(() => server.stop());
const mesh = `el${newId().slice(0, 12)}`;

describeEventLogConformance({
  name: "redis (a Redis Stream per mesh)",
  create: () => createRedisTransport({ url: server.url, mesh }),
  createWithoutLog: () => createRedisTransport({ url: server.url, mesh: `${mesh}-none` }),
  // Entries count their field names and values: a 1 KiB body is about 1.2 KiB.
  retentionTestBytes: 32 * 1024,
});
