import { afterAll, beforeAll } from "vitest";
import { Redis } from "ioredis";
import { newId } from "@nuropb/protocol";
import { createRedisTransport } from "@nuropb/transport-redis";
import { describeCoreConformance } from "@nuropb/transport-testkit";
import { launchRedis } from "../src/brokers/redis.ts";

// Every rule of @nuropb/core, end to end over Redis Streams, on a private server (restarted by the
// connection-loss scenario). Dead letters are counted on the mesh's dead-letter stream.
const server = await launchRedis();
const mesh = `core${newId().slice(0, 12)}`;
let redis: Redis | undefined;

beforeAll(() => {
  redis = new Redis(server.url, { maxRetriesPerRequest: null, lazyConnect: false });
});
afterAll(async () => {
  redis?.disconnect();
  await server.stop();
});

describeCoreConformance({
  name: "redis (Redis 7, Streams)",
  create: () => createRedisTransport({ url: server.url, mesh }),
  deadLetterCount: async () => {
    if (redis === undefined) throw new Error("not connected");
    return redis.xlen(`${mesh}:dl`);
  },
  disrupt: () => server.process.restart(),
  timeoutMs: 30_000,
});
