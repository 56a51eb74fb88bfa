import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll } from "vitest";
import type { Transport } from "@nuropb/protocol";
import { createRedisTransport, type RedisTransportOptions } from "../src/index.ts";
// The integration tests' broker harness: a private redis-server on a free port, removed after.
import { launchRedis, type RedisServer } from "../../../integration-tests/src/brokers/redis.ts";

/** What {@link useRedisServer} gives a test file. */
export interface RedisHarness {
  /** A plain client of the server, to look at or change keys under a transport. */
  readonly raw: Redis;
  /** A connected transport on the server (closed after the test), on `mesh`. */
  open(
    mesh: string,
    extra?: Omit<RedisTransportOptions, "url" | "mesh" | "options">,
  ): Promise<Transport>;
}

/**
 * A private redis-server for this test file (started before its tests, stopped after) and the
 * transports its tests open, closed after each test.
 */
export function useRedisServer(): RedisHarness {
  let server: RedisServer | undefined;
  let raw: Redis | undefined;
  const made: Transport[] = [];
  beforeAll(async () => {
    server = await launchRedis();
    raw = new Redis(server.url, { lazyConnect: true });
    await raw.connect();
  }, 60_000);
  afterAll(async () => {
    raw?.disconnect();
    await server?.stop();
  });
  afterEach(async () => {
    await Promise.allSettled(made.splice(0).map((t) => t.close()));
  });
  return {
    get raw(): Redis {
      if (raw === undefined) throw new Error("the Redis harness is not started (use it in a test)");
      return raw;
    },
    async open(mesh, extra = {}) {
      if (server === undefined)
        throw new Error("the Redis harness is not started (use it in a test)");
      const t = createRedisTransport({ url: server.url, mesh, ...extra });
      made.push(t);
      await t.connect();
      return t;
    },
  };
}

/** Resolves once `check` holds, looking every 10 ms; throws naming `what` after `timeoutMs`. */
export async function until(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
