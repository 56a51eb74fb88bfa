import { afterEach, expect, it } from "vitest";
import { describeView, main, SERVICE_NAME, startCluster, type Cluster } from "../src/main.ts";

const running: Cluster[] = [];
afterEach(async () => {
  for (const c of running.splice(0)) await c.close();
});

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

it("elects one of three; the view shows three instances and that leader", async () => {
  const cluster = await startCluster({ amqpUrl: "" });
  running.push(cluster);
  await until("a leader in the view", () => cluster.viewedLeader() !== undefined);
  const leaders = cluster.instances.filter((i) => i === cluster.leader());
  expect(leaders).toHaveLength(1);
  expect(cluster.viewedLeader()).toBe(leaders[0]?.instanceId());
  await until("three instances in the view", () => {
    const service = cluster.watch.view().services.find((s) => s.name === SERVICE_NAME);
    return service?.instances.length === 3;
  });
  const line = describeView(cluster.watch.view());
  expect(line.match(/\*/g)).toHaveLength(1);
  expect(line).toContain("leader*");
});

it("another instance takes over when the leader is killed, and the view follows", async () => {
  const cluster = await startCluster({ amqpUrl: "", heartbeatMs: 200 });
  running.push(cluster);
  await until("a leader in the view", () => cluster.viewedLeader() !== undefined);
  const old = cluster.leader();
  if (old === undefined) throw new Error("no leader");
  const oldId = old.instanceId();
  await old.kill();
  await until("another leader, in the view too", () => {
    const now = cluster.leader();
    return now !== undefined && now !== old && cluster.viewedLeader() === now.instanceId();
  });
  expect(cluster.instances.filter((i) => i === cluster.leader())).toHaveLength(1);
  await until("the killed one gone from the view", () =>
    cluster.watch.view().services.every((s) => s.instances.every((i) => i.instanceId !== oldId)),
  );
  const service = cluster.watch.view().services.find((s) => s.name === SERVICE_NAME);
  expect(service?.instances).toHaveLength(2);
});

it("main prints the story: the kill, the takeover and the view after it", async () => {
  const lines: string[] = [];
  const prior = process.env.NUROPB_AMQP_URL;
  delete process.env.NUROPB_AMQP_URL;
  try {
    await main((line) => lines.push(line));
  } finally {
    if (prior !== undefined) process.env.NUROPB_AMQP_URL = prior;
  }
  expect(lines[0]).toBe("three inventory instances on the memory transport");
  const kill = lines.findIndex((l) => l.startsWith("killing the leader"));
  const took = lines.findIndex((l) => / leads, \d+ ms after the kill$/.test(l));
  expect(kill).toBeGreaterThan(0);
  expect(took).toBeGreaterThan(kill);
  // The last view: two instances, one of them the leader.
  const last = lines.filter((l) => l.startsWith("view: ")).at(-1) ?? "";
  expect(last.split(",")).toHaveLength(2);
  expect(last.match(/leader\*/g)).toHaveLength(1);
});
