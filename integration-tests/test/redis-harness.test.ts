import { existsSync } from "node:fs";
import { Redis } from "ioredis";
import { expect, it } from "vitest";
import { launchRedis } from "../src/brokers/redis.ts";

it("launchRedis keeps data across a kill when persistent, and stop() leaves nothing behind", async () => {
  const server = await launchRedis({ persistent: true });
  const client = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: null });
  client.on("error", () => undefined); // the kill below drops the connection
  try {
    await client.connect();
    await client.set("k", "v");
    const first = server.process.pid;
    await server.process.restart();
    expect(server.process.pid).not.toBe(first);
    expect(await client.get("k")).toBe("v");
  } finally {
    client.disconnect();
    await server.stop();
  }
  expect(server.process.running).toBe(false);
  expect(existsSync(server.dir)).toBe(false);
});
