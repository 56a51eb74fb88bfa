import { afterAll, beforeAll } from "vitest";
import { Redis } from "ioredis";
import { newId } from "@nuropb/protocol";
import { createRedisTransport } from "@nuropb/transport-redis";
import { describeCallLaterConformance } from "@nuropb/transport-testkit";
import { launchRedis } from "../src/brokers/redis.ts";

// Asynchronous calls (issue #21) over Redis Streams, on a private server: answers to the calling
// service's stream, deadlines through the delay sorted set, claims by Lua script. Dead letters
// are counted on the mesh's dead-letter stream.
const server = await launchRedis();
const mesh = `later${newId().slice(0, 12)}`;
let redis: Redis | undefined;

beforeAll(() => {
  redis = new Redis(server.url, { maxRetriesPerRequest: null, lazyConnect: false });
});
afterAll(async () => {
  redis?.disconnect();
  await server.stop();
});

describeCallLaterConformance({
  name: "redis (Redis 7, Streams)",
  create: () => createRedisTransport({ url: server.url, mesh }),
  deadLetterCount: async () => {
    if (redis === undefined) throw new Error("not connected");
    return redis.xlen(`${mesh}:dl`);
  },
  deadlineMs: 1_000,
  timeoutMs: 30_000,
});
