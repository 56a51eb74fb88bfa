import { afterAll } from "vitest";
import { newId } from "@nuropb/protocol";
import { createRedisTransport } from "@nuropb/transport-redis";
import { describeTransportConformance } from "@nuropb/transport-testkit";
import { launchRedis } from "../src/brokers/redis.ts";

// A private server, so that the connection-loss test can restart it without disturbing others.
// Like the harness's, it keeps no data: a restart loses every key, which the transport survives
// by declaring its services and leases again.
const server = await launchRedis();
afterAll(() => server.stop());
const mesh = `ck${newId().slice(0, 12)}`;

describeTransportConformance({
  name: "redis (Redis 7, Streams)",
  create: () => createRedisTransport({ url: server.url, mesh }),
  disrupt: () => server.process.restart(),
});
