import { createClient, type MeshClient } from "@nuropb/core";
import type { Transport } from "@nuropb/protocol";
import { createAmqpTransport } from "@nuropb/transport-amqp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestMesh, mgmtGet, type TestMesh } from "../src/amqp-helpers.ts";
import { eventually, startCli } from "../src/cli-harness.ts";

// `nuropb status` on the private RabbitMQ: it folds the nuropb.status reports runner participants
// publish (sent here by hand, as @nuropb/runner sends them) into the live view.
/** The queue `nuropb status` reads: its watcher's transient service queue. */
const STATUS_QUEUE = /^nuropb-nuropb-watch-[0-9a-f]{16}-sq$/;
let mesh: TestMesh;
let transport: Transport;
let client: MeshClient;

beforeAll(async () => {
  mesh = await createTestMesh("clistat");
  transport = createAmqpTransport({ url: mesh.url });
  client = createClient({ transport });
  await client.connect();
});
afterAll(async () => {
  await client.disconnect();
  await transport.close();
  await mesh.teardown();
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

describe("nuropb status", () => {
  it("shows the reporting instances, their states and the leader; a stopped one leaves", async () => {
    const watching = startCli(["status", "--wait", "1500", "--json", "--url", mesh.url]);
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
    expect(view.services[0]?.name).toBe("orders");
    expect(view.services[0]?.leader).toBe("aaaa");
    expect(view.services[0]?.instances.map((i) => [i.instanceId, i.state])).toEqual([
      ["aaaa", "leader"],
      ["bbbb", "operational"],
    ]);
  });

  it("leaves no queue behind", async () => {
    const queues = async (): Promise<string[]> =>
      ((await mgmtGet<{ name: string }[]>(`/queues/${encodeURIComponent(mesh.vhost)}`)) ?? []).map(
        (q) => q.name,
      );
    const watching = startCli(["status", "--wait", "3000", "--url", mesh.url]);
    // While it listens its queue is there…
    await eventually(
      "the status queue",
      async () => (await queues()).some((q) => STATUS_QUEUE.test(q)),
      2_500,
      100,
    );
    expect((await watching.done).code).toBe(0);
    // …and once it has exited, gone.
    await eventually(
      "the status queue to go",
      async () => !(await queues()).some((q) => STATUS_QUEUE.test(q)),
    );
  });
});
