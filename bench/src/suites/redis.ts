import { createRedisTransport } from "@nuropb/transport-redis";
import { provided, useBroker } from "../brokers.ts";
import { startMoleculerEcho } from "../peers/moleculer-echo.ts";
import { startNuropbEcho } from "../peers/nuropb-echo.ts";
import { RAW_REDIS_SETTINGS, startRawRedisEcho } from "../peers/raw-redis.ts";
import {
  RAW_REDIS_STREAMS_SETTINGS,
  startRawRedisStreamsEcho,
} from "../peers/raw-redis-streams.ts";
import { runTag, withCleanup } from "../rr.ts";
import type { BenchSuite, SuiteResult } from "../suite.ts";
import { runBrokerComparison } from "./broker-comparison.ts";

/** nuropb over Redis vs raw ioredis lists and Moleculer's Redis transporter. */
export const redisSuite: BenchSuite = {
  name: "redis",
  description:
    "request/response echo over Redis: nuropb (streams) vs raw ioredis lists (RPUSH + BLMPOP) and streams (XREADGROUP + XACK) vs Moleculer's Redis transporter",
  async run(): Promise<SuiteResult> {
    const url = provided(await useBroker("redis"), "redisUrl");
    return withCleanup(async (defer) => {
      const mesh = `bench-${runTag()}`;
      const nuropb = await startNuropbEcho(
        () => createRedisTransport({ url, mesh }),
        `echo-${runTag()}`,
      );
      defer(() => nuropb.close());
      const client = await nuropb.addClient();
      const raw = await startRawRedisEcho(url);
      defer(() => raw.close());
      const streams = await startRawRedisStreamsEcho(url);
      defer(() => streams.close());
      const moleculer = await startMoleculerEcho({ type: "Redis", options: url });
      defer(() => moleculer.close());
      return runBrokerComparison({
        broker: "redis",
        nuropb: { name: "nuropb redis", call: client.call },
        raw: { name: "ioredis lists (raw)", call: raw.call },
        others: [{ name: "Redis Streams (raw)", call: streams.call }],
        moleculer: { name: "Moleculer Redis", call: moleculer.call },
        notes: [
          "nuropb: service (prefetch 64) and client on their own connections; requests through the service's stream (consumer group, acked), responses through the client's response list",
          `raw: ${RAW_REDIS_SETTINGS}`,
          `Redis Streams (raw): ${RAW_REDIS_STREAMS_SETTINGS}`,
          "Moleculer: Redis transporter (pub/sub), defaults",
        ],
      });
    });
  },
};
