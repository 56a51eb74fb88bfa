import pc from "picocolors";
import { createClient, createServicesView, STATUS_TOPIC } from "@nuropb/core";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { describe, expect, it } from "vitest";
import { run } from "../src/index.ts";
import { formatServicesView } from "../src/commands/status.ts";
import { capture } from "./helpers.ts";

const plain = pc.createColors(false);

describe("formatServicesView", () => {
  it("lists each instance with its service, state, leadership and last seen; clients counted", () => {
    const v = createServicesView({ now: () => 10_000 });
    const base = { type: "nuropb_status", heartbeat_ms: 5000, at: "" } as const;
    v.apply({ ...base, service: "orders", instance_id: "b2", state: "operational", leader: false });
    v.apply({ ...base, service: "orders", instance_id: "a1", state: "leader", leader: true });
    v.apply({ ...base, service: null, instance_id: "c3", state: "operational", leader: false });
    expect(formatServicesView(v.view(), plain, 12_400)).toBe(
      [
        "SERVICE  INSTANCE  STATE        LEADER  SEEN",
        "orders   a1        leader       yes     2s ago",
        "orders   b2        operational          2s ago",
        "1 client(s)",
        "",
      ].join("\n"),
    );
    expect(formatServicesView({ services: [], clients: [] }, plain, 0)).toBe(
      "no participants reporting\n",
    );
  });
});

describe("nuropb status", () => {
  it("works on any broker: the view after --wait, from a transient watcher queue", async () => {
    const hub = createMemoryHub();
    const reporter = createClient({ transport: createMemoryTransport({ hub }) });
    await reporter.connect();
    const report = (instance_id: string, state: string, leader: boolean): Promise<void> =>
      reporter.publishEvent(STATUS_TOPIC, {
        type: "nuropb_status",
        service: "orders",
        instance_id,
        state,
        leader,
        heartbeat_ms: 5000,
        at: new Date().toISOString(),
      });
    // The CLI says nothing before it listens with --wait: report until the view has them.
    const reporting = setInterval(() => {
      void report("aaaa", "leader", true);
      void report("bbbb", "operational", false);
    }, 20);
    try {
      const c = capture();
      const code = await run(
        ["status", "--wait", "300", "--json", "--url", "redis://r:6379"],
        c.io,
        {
          createTransport: () => createMemoryTransport({ hub }),
        },
      );
      expect(c.stderr()).toBe("");
      expect(code).toBe(0);
      const view = JSON.parse(c.stdout()) as {
        services: { name: string; leader: string; instances: { instanceId: string }[] }[];
      };
      expect(view.services[0]?.leader).toBe("aaaa");
      expect(view.services[0]?.instances.map((i) => i.instanceId)).toEqual(["aaaa", "bbbb"]);
      // The watcher's queue went with it.
      expect(hub.queueNames().filter((q) => q.includes("nuropb-watch-"))).toEqual([]);
    } finally {
      clearInterval(reporting);
      await reporter.disconnect();
    }
  });

  it("on a terminal redraws the view in place at each change until interrupted", async () => {
    const hub = createMemoryHub();
    const reporter = createClient({ transport: createMemoryTransport({ hub }) });
    await reporter.connect();
    const stop = new AbortController();
    const c = capture({ stdoutIsTTY: true, env: { NO_COLOR: "1" }, signal: stop.signal });
    const running = run(["status", "--url", "nats://n:4222/mesh"], c.io, {
      createTransport: () => createMemoryTransport({ hub }),
    });
    const send = (instance_id: string, state: string, leader: boolean): Promise<void> =>
      reporter.publishEvent(STATUS_TOPIC, {
        type: "nuropb_status",
        service: "orders",
        instance_id,
        state,
        leader,
        heartbeat_ms: 5000,
        at: new Date().toISOString(),
      });
    try {
      await waitUntil(() => c.stdout().includes("no participants reporting"));
      await send("aaaa", "leader", true);
      await waitUntil(() => c.stdout().includes("aaaa"));
      await send("bbbb", "operational", false);
      await waitUntil(() => c.stdout().includes("bbbb"));
      stop.abort();
      expect(await running).toBe(0);
      // Each redraw moves up over the last drawing and clears to the end.
      expect(c.stdout()).toContain("\x1b[1F\x1b[J");
      expect(c.stdout().split("\x1b[J").at(-1)).toMatch(/aaaa\s+leader\s+yes[\s\S]*bbbb/);
      expect(hub.queueNames().filter((q) => q.includes("nuropb-watch-"))).toEqual([]);
    } finally {
      stop.abort();
      await reporter.disconnect();
    }
  });

  it("on a terminal redraws every second, so a silent instance's 'seen' ages", async () => {
    const hub = createMemoryHub();
    const reporter = createClient({ transport: createMemoryTransport({ hub }) });
    await reporter.connect();
    const stop = new AbortController();
    const c = capture({ stdoutIsTTY: true, env: { NO_COLOR: "1" }, signal: stop.signal });
    const running = run(["status", "--url", "nats://n:4222/mesh"], c.io, {
      createTransport: () => createMemoryTransport({ hub }),
    });
    const lastDrawing = (): string => c.stdout().split("\x1b[J").at(-1) ?? "";
    try {
      await waitUntil(() => c.stdout().includes("no participants reporting"));
      // One report, then silence (it crashed): nothing changes in the view until it is pruned.
      await reporter.publishEvent(STATUS_TOPIC, {
        type: "nuropb_status",
        service: "orders",
        instance_id: "aaaa",
        state: "operational",
        leader: false,
        heartbeat_ms: 5000,
        at: new Date().toISOString(),
      });
      await waitUntil(() => /aaaa.*0s ago/.test(lastDrawing()));
      await waitUntil(() => /aaaa.*[12]s ago/.test(lastDrawing()), 4_000);
      stop.abort();
      expect(await running).toBe(0);
    } finally {
      stop.abort();
      await reporter.disconnect();
    }
  });

  it("fails with the transport's exit code when the connection closes under it", async () => {
    const hub = createMemoryHub();
    const c = capture();
    const running = run(["status", "--json", "--url", "nats://n:4222"], c.io, {
      createTransport: () => {
        const t = createMemoryTransport({ hub });
        setTimeout(() => void hub.fail(t), 100);
        return t;
      },
    });
    expect(await running).toBe(4);
    expect(c.stderr()).toContain("watching failed");
  });

  it("checks --wait", async () => {
    const c = capture();
    expect(await run(["status", "--wait", "soon", "--url", "amqp://h/v"], c.io)).toBe(2);
  });
});

async function waitUntil(check: () => boolean, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}
