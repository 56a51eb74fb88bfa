import { createService, type MeshService } from "@nuropb/core";
import { NuropbHandlingError, NuropbValidationError } from "@nuropb/protocol";
import { createMemoryHub, createMemoryTransport, type MemoryHub } from "@nuropb/transport-memory";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { run } from "../src/index.ts";
import { formatDuration, formatStats } from "../src/commands/stats.ts";
import { capture } from "./helpers.ts";

// `nuropb stats` in-process against a service on the memory transport; nothing reaches a network.

const URL = "amqp://guest:hunter22@rabbit.invalid:5672/nuropb";

class Orders {
  quote(): number {
    return 42;
  }
  fail(): never {
    throw new NuropbValidationError("order 7 does not exist");
  }
}

let hub: MemoryHub;
let service: MeshService;

beforeEach(async () => {
  hub = createMemoryHub();
  service = createService({
    transport: createMemoryTransport({ hub }),
    name: "orders",
    instance: new Orders(),
    serviceVersion: "2.0.1",
  });
  await service.connect();
});
afterEach(async () => {
  await service.disconnect();
});

async function cli(argv: string[]) {
  const c = capture();
  const code = await run([...argv, "--url", URL], c.io, {
    createTransport: () => createMemoryTransport({ hub }),
  });
  return { code, stdout: c.stdout(), stderr: c.stderr() };
}

async function callSome(): Promise<void> {
  const r1 = await cli(["call", "orders", "quote"]);
  const r2 = await cli(["call", "orders", "quote"]);
  const r3 = await cli(["call", "orders", "fail"]);
  expect([r1.code, r2.code, r3.code]).toEqual([0, 0, 3]);
}

describe("stats", () => {
  it("prints the instance's figures, busiest method first", async () => {
    await callSome();
    const r = await cli(["stats", "orders"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines[0]).toBe(`orders v2.0.1  instance ${service.instanceId}`);
    expect(lines[1]).toMatch(/^ {2}up \d+s, connected \(memory: open\), 1 in flight$/);
    expect(lines[3]).toBe("METHOD  CALLS  ERRORS  P50 MS  P99 MS  AVG MS  LAST ERROR");
    expect(lines[4]).toMatch(/^quote {3}2 {6}0 {7}[\d.]+ +[\d.]+ +[\d.]+$/);
    expect(lines[5]).toMatch(
      /^fail {4}1 {6}1 {7}[\d.]+ +[\d.]+ +[\d.]+ +NuropbValidationError: order 7 does not exist$/,
    );
  });

  it("prints the report as JSON with --json", async () => {
    await callSome();
    const r = await cli(["stats", "orders", "--json"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      type: "nuropb_stats_response",
      service_name: "orders",
      instance_id: service.instanceId,
      methods: { quote: { num_requests: 2, num_errors: 0 }, fail: { num_errors: 1 } },
    });
  });

  it("exits 3 with a hint for a service that does not answer nuropb_stats", async () => {
    // As a Python NuroPb service answers: the method is unknown to it.
    const legacy = createService({
      transport: createMemoryTransport({ hub }),
      name: "legacy",
      instance: new Orders(),
      middleware: [
        (call, next) => {
          if (call.kind === "request" && call.method === "nuropb_stats")
            throw new NuropbHandlingError("Unknown method nuropb_stats");
          return next();
        },
      ],
    });
    await legacy.connect();
    try {
      const r = await cli(["stats", "legacy"]);
      expect(r.code).toBe(3);
      expect(r.stderr).toContain("NuropbHandlingError: Unknown method nuropb_stats");
      expect(r.stderr).toContain("does not answer nuropb_stats (Python NuroPb services do not)");
    } finally {
      await legacy.disconnect();
    }
  });

  it("exits 4 for a service that is not there", async () => {
    const r = await cli(["stats", "nobody"]);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/^NuropbNotDeliveredError: /);
  });

  it("formats uptimes and an idle service", () => {
    expect(formatDuration(12_400)).toBe("12s");
    expect(formatDuration(252_000)).toBe("4m 12s");
    expect(formatDuration(7_500_000)).toBe("2h 5m");
    expect(formatDuration(3 * 86_400_000 + 4 * 3_600_000)).toBe("3d 4h");
    const plain = { bold: String, dim: String, green: String, red: String, cyan: String };
    const text = formatStats(service.stats(), plain as never);
    expect(text).toContain("(no calls yet)");
  });
});
