import pc from "picocolors";
import { createServicesView } from "@nuropb/runner";
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
  it("needs RabbitMQ (it binds a queue of its own to the events exchange)", async () => {
    const c = capture();
    expect(await run(["status", "--url", "redis://r:6379"], c.io)).toBe(2);
    expect(c.stderr()).toContain("`nuropb status` works on RabbitMQ only");
  });

  it("checks --wait", async () => {
    const c = capture();
    expect(await run(["status", "--wait", "soon", "--url", "amqp://h/v"], c.io)).toBe(2);
  });
});
