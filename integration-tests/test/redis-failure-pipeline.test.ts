import { afterAll, beforeAll, describe } from "vitest";
import { Redis } from "ioredis";
import { newId, type WireHeaders } from "@nuropb/protocol";
import { createRedisTransport } from "@nuropb/transport-redis";
import { launchRedis } from "../src/brokers/redis.ts";
import { describeFailurePipeline } from "../src/failure-pipeline-scenarios.ts";

// The failure pipeline on Redis: delayed redelivery through the delay sorted set, the failure
// record merged into the headers (`h`) of the entry in the mesh's dead-letter stream.
const server = await launchRedis();
const mesh = `fp${newId().slice(0, 12)}`;
let redis: Redis;

beforeAll(() => {
  redis = new Redis(server.url, { maxRetriesPerRequest: null });
});
afterAll(async () => {
  redis?.disconnect();
  await server.stop();
});

describe("failure pipeline on Redis", () => {
  describeFailurePipeline({
    createTransport: () => createRedisTransport({ url: server.url, mesh }),
    deadLetters: async (service) => {
      const entries = await redis.xrange(`${mesh}:dl`, "-", "+");
      const out: WireHeaders[] = [];
      for (const [, fields] of entries) {
        const f = new Map<string, string>();
        for (let i = 0; i + 1 < fields.length; i += 2) f.set(fields[i]!, fields[i + 1]!);
        if (f.get("service") !== service) continue;
        out.push(JSON.parse(f.get("h") ?? "{}") as WireHeaders);
      }
      return out;
    },
  });
});
