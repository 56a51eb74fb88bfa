import { createClient, type MeshClient } from "@nuropb/core";
import { newId, type Transport } from "@nuropb/protocol";
import { createNatsTransport } from "@nuropb/transport-nats";
import { connect } from "nats";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { eventually, startCli } from "../src/cli-harness.ts";

// `nuropb status` on the harness's NATS server (its own mesh): it folds the nuropb.status reports
// runner participants publish (sent here by hand, as @nuropb/runner sends them) into the view.
const mesh = `ck${newId().slice(0, 12)}`;
const url = (): string => `${inject("natsUrl")}/${mesh}`;
/** The watcher's name, as NATS spells `nuropb-watch-` in stream and consumer names. */
const WATCHER = "nuropb~2d~watch~2d~";
let transport: Transport;
let client: MeshClient;

beforeAll(async () => {
  transport = createNatsTransport({ servers: inject("natsUrl"), mesh });
  client = createClient({ transport });
  await client.connect();
});
afterAll(async () => {
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

/** The watcher's streams and consumers (it reads the events stream: a consumer, no stream). */
async function watcherLeftovers(): Promise<string[]> {
  const nc = await connect({ servers: inject("natsUrl") });
  try {
    const jsm = await nc.jetstreamManager();
    const names: string[] = [];
    for await (const s of jsm.streams.list()) {
      names.push(s.config.name);
      for await (const c of jsm.consumers.list(s.config.name)) names.push(c.name);
    }
    return names.filter((n) => n.includes(WATCHER));
  } finally {
    await nc.close();
  }
}

describe("nuropb status (NATS)", () => {
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

  it("leaves no stream or consumer behind", async () => {
    const watching = startCli(["status", "--wait", "3000", "--url", url()]);
    await eventually(
      "the watcher's consumer",
      async () => (await watcherLeftovers()).length > 0,
      2_500,
      100,
    );
    expect((await watching.done).code).toBe(0);
    // The CLI deletes its consumer on the way out; a watcher that could not (or one of an
    // earlier test still being deleted) lapses after the consumer's 30 s inactivity limit.
    await eventually(
      "no watcher stream or consumer left",
      async () => (await watcherLeftovers()).length === 0,
      40_000,
      200,
    );
    expect(await watcherLeftovers()).toEqual([]);
  }, 55_000);
});
