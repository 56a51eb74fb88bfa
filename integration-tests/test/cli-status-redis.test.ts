import { createClient, type MeshClient } from "@nuropb/core";
import { newId, type Transport } from "@nuropb/protocol";
import { createRedisTransport } from "@nuropb/transport-redis";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { eventually, startCli } from "../src/cli-harness.ts";

// `nuropb status` on the harness's Redis (its own mesh): it folds the nuropb.status reports
// runner participants publish (sent here by hand, as @nuropb/runner sends them) into the view.
const mesh = `ck${newId().slice(0, 12)}`;
const url = (): string => `${inject("redisUrl")}/0?mesh=${mesh}`;
let transport: Transport;
let client: MeshClient;
let admin: Redis;

beforeAll(async () => {
  transport = createRedisTransport({ url: inject("redisUrl"), mesh });
  client = createClient({ transport });
  await client.connect();
  admin = new Redis(inject("redisUrl"));
});
afterAll(async () => {
  admin.disconnect();
  await client.disconnect();
  await transport.close();
});

const report = (instance: string, state: string, leader: boolean) =>
  client.publishEvent("nuropb.status", {
    type: "nuropb_status",
    service: "orders",
    instance_id: instance,
    state,
    leader,
    heartbeat_ms: 5000,
    at: new Date().toISOString(),
  });

/** The watcher's keys, and its name in the mesh's set of services with event bindings. */
async function watcherKeys(): Promise<string[]> {
  const keys = await admin.keys(`${mesh}:*nuropb-watch-*`);
  const members = (await admin.smembers(`${mesh}:evs`)).filter((m) =>
    m.startsWith("nuropb-watch-"),
  );
  return [...keys, ...members];
}

describe("nuropb status (Redis)", () => {
  it("shows the reporting instances, their states and the leader; a stopped one leaves", async () => {
    const watching = startCli(["status", "--wait", "1500", "--json", "--url", url()]);
    // The CLI says nothing before it listens with --wait: report until the view has them.
    // cccc runs for the first 0.8 s, then only says it stopped: the watch (1.5 s from when it
    // listens) cannot end between an "operational" and the "stopped" after it.
    let ticks = 0;
    const reporting = setInterval(() => {
      void report("aaaa", "leader", true);
      void report("bbbb", "operational", false);
      if (++ticks <= 8) void report("cccc", "operational", false);
      void report("cccc", "stopped", false);
    }, 100);
    const done = await watching.done;
    clearInterval(reporting);
    expect(done.stderr).toBe("");
    expect(done.code).toBe(0);
    const view = JSON.parse(done.stdout) as {
      services: {
        name: string;
        leader: string;
        instances: { instanceId: string; state: string }[];
      }[];
    };
    expect(view.services).toHaveLength(1);
    expect(view.services[0]?.leader).toBe("aaaa");
    expect(view.services[0]?.instances.map((i) => [i.instanceId, i.state])).toEqual([
      ["aaaa", "leader"],
      ["bbbb", "operational"],
    ]);
  });

  it("leaves no key behind", async () => {
    const watching = startCli(["status", "--wait", "3000", "--url", url()]);
    await eventually(
      "the watcher's stream",
      async () => (await watcherKeys()).length > 0,
      2_500,
      100,
    );
    expect((await watching.done).code).toBe(0);
    expect(await watcherKeys()).toEqual([]);
  });
});
