import { createClient } from "@nuropb/core";
import { newId } from "@nuropb/protocol";
import { createRedisTransport } from "@nuropb/transport-redis";
import { afterAll, expect, it } from "vitest";
import { launchRedis } from "../src/brokers/redis.ts";
import { cli, startCli } from "../src/cli-harness.ts";

// `nuropb mesh setup --event-log-…` and `nuropb events` against a real Redis.
const redis = await launchRedis();
afterAll(() => redis.stop());

function lines(text: string): Record<string, unknown>[] {
  return text
    .trim()
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

it("sets the log up, prints stored events without credentials, and follows", async () => {
  const mesh = `ev${newId().slice(0, 10)}`;
  const url = `${redis.url}?mesh=${mesh}`;
  const missing = await cli(["events", "orders.*", "--url", url]);
  expect(missing.code).toBe(4);
  expect(missing.stderr).toMatch(/not set up/);

  const setup = await cli([
    "mesh",
    "setup",
    "--event-log-max-age",
    "1d",
    "--event-log-max-bytes",
    "64MiB",
    "--url",
    url,
  ]);
  expect(setup.stderr).toBe("");
  expect(setup.stdout).toMatch(/event log set up, keeps 1d and at most 64 MiB/);
  expect(setup.code).toBe(0);

  const transport = createRedisTransport({ url: redis.url, mesh });
  const client = createClient({ transport });
  await client.connect();
  try {
    await client.publishEvent(
      "orders.created",
      { id: 1 },
      { Authorization: "Bearer s3cret", user: "ann" },
      { persisted: true },
    );
    await client.publishEvent("users.created", { id: 2 }, {}, { persisted: true });
    await client.publishEvent("orders.shipped", { id: 1 }, {}, { persisted: true });

    const r = await cli(["events", "orders.*", "--since", "1h", "--json", "--url", url]);
    expect(r.code).toBe(0);
    const got = lines(r.stdout);
    expect(got.map((e) => [e.topic, e.event])).toEqual([
      ["orders.created", { id: 1 }],
      ["orders.shipped", { id: 1 }],
    ]);
    expect(got[0]?.context).toEqual({ user: "ann" });
    expect(r.stdout + r.stderr).not.toMatch(/s3cret/);

    const follow = startCli([
      "events",
      "orders.#",
      "--after",
      got[1]?.position as string,
      "--follow",
      "--limit",
      "2",
      "--json",
      "--url",
      url,
    ]);
    await follow.stderrContains("following");
    await client.publishEvent("orders.cancelled", { id: 3 });
    await client.publishEvent("users.deleted", { id: 2 });
    await client.publishEvent("orders.created", { id: 4 });
    const done = await follow.done;
    expect(done.code).toBe(0);
    expect(lines(done.stdout).map((e) => e.event)).toEqual([{ id: 3 }, { id: 4 }]);
  } finally {
    await client.disconnect();
    await transport.close();
  }
});
