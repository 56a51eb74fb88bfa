import { afterAll } from "vitest";
import { newId } from "@nuropb/protocol";
import { createRedisTransport } from "@nuropb/transport-redis";
import { describeSchedulingConformance } from "@nuropb/transport-testkit";
import { launchRedis } from "../src/brokers/redis.ts";

// A delay sorted set moved by every connected transport, and claims as keys with PX expiry.
const server = await launchRedis();
afterAll(() => server.stop());
const mesh = `ck${newId().slice(0, 12)}`;

describeSchedulingConformance({
  name: "redis (sorted-set delays, Lua claims)",
  create: () => createRedisTransport({ url: server.url, mesh }),
});
