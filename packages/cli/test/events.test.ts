import { createClient, type MeshClient } from "@nuropb/core";
import { createMemoryHub, createMemoryTransport, type MemoryHub } from "@nuropb/transport-memory";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { run, type CliIo } from "../src/index.ts";
import { byteSize, duration, pointInTime } from "../src/commands/events.ts";
import { capture } from "./helpers.ts";

// `nuropb events` and `nuropb mesh setup --event-log-…` in-process on the memory transport.

const URL = "redis://:hunter22@redis.invalid:6379/0?mesh=nuropb";

let hub: MemoryHub;
let publisher: MeshClient;

beforeEach(async () => {
  hub = createMemoryHub();
  publisher = createClient({ transport: createMemoryTransport({ hub }) });
  await publisher.connect();
});

afterEach(async () => {
  await publisher.disconnect();
});

async function cli(argv: string[], io: Partial<CliIo> = {}) {
  const c = capture(io);
  const code = await run([...argv, "--url", URL], c.io, {
    createTransport: () => createMemoryTransport({ hub }),
  });
  return { code, stdout: c.stdout(), stderr: c.stderr() };
}

function lines(text: string): Record<string, unknown>[] {
  return text
    .trim()
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe("nuropb mesh setup --event-log-…", () => {
  it("sets the log up through the URL's transport, on any broker", async () => {
    const r = await cli([
      "mesh",
      "setup",
      "--event-log-max-age",
      "2h",
      "--event-log-max-bytes",
      "10MiB",
    ]);
    expect(r.stderr).not.toMatch(/hunter22/);
    expect(r.stdout).toMatch(/event log set up, keeps 2h and at most 10 MiB/);
    expect(r.code).toBe(0);
    // Set up: a persisted publish is accepted now.
    await publisher.publishEvent("orders.created", 1, {}, { persisted: true });
  });

  it("refuses a bad age or size, and a non-RabbitMQ URL without event-log options", async () => {
    const age = await cli(["mesh", "setup", "--event-log-max-age", "soon"]);
    expect(age.code).toBe(2);
    expect(age.stderr).toMatch(/--event-log-max-age must be a duration/);
    const size = await cli(["mesh", "setup", "--event-log-max-bytes", "lots"]);
    expect(size.code).toBe(2);
    expect(size.stderr).toMatch(/--event-log-max-bytes must be a size/);
    const plain = await cli(["mesh", "setup"]);
    expect(plain.code).toBe(2);
    expect(plain.stderr).toMatch(/works on RabbitMQ only/);
    expect(`${age.stderr}${size.stderr}${plain.stderr}`).not.toMatch(/hunter22/);
  });
});

describe("nuropb events", () => {
  beforeEach(async () => {
    expect((await cli(["mesh", "setup", "--event-log-max-age", "1d"])).code).toBe(0);
  });

  it("prints stored events matching the pattern, without credentials", async () => {
    await publisher.publishEvent(
      "orders.created",
      { id: 1 },
      { Authorization: "Bearer s3cret", user: "ann" },
      { traceId: "t-1" },
    );
    await publisher.publishEvent("users.created", { id: 2 });
    await publisher.publishEvent("orders.shipped", { id: 1 });
    const r = await cli(["events", "orders.*", "--since", "1h", "--json"]);
    expect(r.code).toBe(0);
    const got = lines(r.stdout);
    expect(got.map((e) => [e.topic, e.event])).toEqual([
      ["orders.created", { id: 1 }],
      ["orders.shipped", { id: 1 }],
    ]);
    expect(got[0]).toMatchObject({ context: { user: "ann" }, trace_id: "t-1" });
    expect(typeof got[0]?.position).toBe("string");
    expect(r.stdout + r.stderr).not.toMatch(/s3cret/);
    const text = await cli(["events", "orders.#"]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/orders\.created\s+\{"id":1\}/);
    expect(text.stdout).not.toMatch(/s3cret/);
    expect(text.stderr).toMatch(/2 event\(s\)/);
  });

  it("leaves credential-like keys and --secret-context-keys out of what it prints", async () => {
    await publisher.publishEvent("k.e", 1, {
      sessionToken: "tok-1",
      api_key: "key-1",
      tenant: "ten-1",
      user: "ann",
    });
    const r = await cli(["events", "k.*", "--secret-context-keys", "tenant", "--json"]);
    expect(r.code).toBe(0);
    expect(lines(r.stdout)[0]).toMatchObject({ context: { user: "ann" } });
    expect(r.stdout + r.stderr).not.toMatch(/tok-1|key-1|ten-1/);
    const bad = await cli(["events", "k.*", "--secret-context-keys", "a,,b"]);
    expect(bad.code).toBe(2);
  });

  it("--follow --after X --since T still leaves out events before T", async () => {
    await publisher.publishEvent("fa.e", "a0");
    await publisher.publishEvent("fa.e", "a1");
    await new Promise((r) => setTimeout(r, 20));
    const cut = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 20));
    await publisher.publishEvent("fa.e", "b1");
    await publisher.publishEvent("fa.e", "b2");
    const first = await cli(["events", "fa.*", "--limit", "1", "--json"]);
    const after = lines(first.stdout)[0]?.position as string;
    const r = await cli([
      "events",
      "fa.*",
      "--follow",
      "--after",
      after,
      "--since",
      cut,
      "--limit",
      "2",
      "--json",
    ]);
    expect(r.code).toBe(0);
    // a1 follows the position but was stored before --since.
    expect(lines(r.stdout).map((e) => e.event)).toEqual(["b1", "b2"]);
  });

  it("honours --limit and says how to go on with --after", async () => {
    for (let i = 0; i < 5; i++) await publisher.publishEvent("p.e", i);
    const first = await cli(["events", "p.*", "--limit", "3", "--json"]);
    expect(lines(first.stdout).map((e) => e.event)).toEqual([0, 1, 2]);
    const after = /--after (\S+)/.exec(first.stderr)?.[1];
    expect(after).toBe(lines(first.stdout)[2]?.position);
    const rest = await cli(["events", "p.*", "--after", after as string, "--json"]);
    expect(lines(rest.stdout).map((e) => e.event)).toEqual([3, 4]);
  });

  it("--until leaves out later events", async () => {
    await publisher.publishEvent("u.e", "old");
    await new Promise((r) => setTimeout(r, 20));
    const cut = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 20));
    await publisher.publishEvent("u.e", "new");
    const r = await cli(["events", "u.*", "--until", cut, "--json"]);
    expect(lines(r.stdout).map((e) => e.event)).toEqual(["old"]);
  });

  it("--follow prints the stored events, then new ones, until --limit", async () => {
    await publisher.publishEvent("f.e", "stored");
    const c = capture();
    const done = run(
      ["events", "f.*", "--since", "1h", "--follow", "--limit", "3", "--json", "--url", URL],
      c.io,
      {
        createTransport: () => createMemoryTransport({ hub }),
      },
    );
    for (let i = 0; i < 50 && !c.stderr().includes("following"); i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    await publisher.publishEvent("f.e", "live-1");
    await publisher.publishEvent("other.e", "not this");
    await publisher.publishEvent("f.e", "live-2");
    expect(await done).toBe(0);
    expect(lines(c.stdout()).map((e) => e.event)).toEqual(["stored", "live-1", "live-2"]);
  });

  it("--follow stops on Ctrl-C", async () => {
    const controller = new AbortController();
    const c = capture({ signal: controller.signal });
    const done = run(["events", "f.*", "--follow", "--url", URL], c.io, {
      createTransport: () => createMemoryTransport({ hub }),
    });
    for (let i = 0; i < 50 && !c.stderr().includes("following"); i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    await publisher.publishEvent("f.e", "one");
    for (let i = 0; i < 50 && !c.stdout().includes("one"); i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    controller.abort();
    expect(await done).toBe(0);
    expect(c.stdout()).toMatch(/f\.e\s+"one"/);
  });

  it("refuses bad options with a usage error", async () => {
    for (const argv of [
      ["events", "a..b"],
      ["events", "a.*", "--since", "yesterday"],
      ["events", "a.*", "--limit", "0"],
      ["events", "a.*", "--since", "1h", "--until", "2h"],
      ["events", "a.*", "--follow", "--until", "1h"],
    ]) {
      const r = await cli(argv);
      expect(r.code, argv.join(" ")).toBe(2);
    }
  });
});

describe("nuropb events without a log", () => {
  it("exits 4 with a hint to set the log up", async () => {
    const r = await cli(["events", "orders.*"]);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/not set up/);
    expect(r.stderr).toMatch(/nuropb mesh setup --event-log-max-age/);
    expect(r.stderr).not.toMatch(/hunter22/);
  });
});

describe("duration, point in time and size arguments", () => {
  it("parses the documented forms", () => {
    expect(duration("90s", "x")).toBe(90_000);
    expect(duration("1.5h", "x")).toBe(5_400_000);
    expect(duration("7d", "x")).toBe(604_800_000);
    expect(pointInTime("1h", "x", 10_000_000)).toBe(10_000_000 - 3_600_000);
    expect(pointInTime("2026-12-07T10:00:00Z", "x", 0)).toBe(Date.parse("2026-12-07T10:00:00Z"));
    expect(byteSize("1GiB", "x")).toBe(1024 ** 3);
    expect(byteSize("500MB", "x")).toBe(500e6);
    expect(byteSize("65536", "x")).toBe(65536);
    for (const bad of ["", "1", "h", "-1h", "0s"]) expect(() => duration(bad, "x")).toThrow();
    for (const bad of ["", "1XB", "0", "-5"]) expect(() => byteSize(bad, "x")).toThrow();
  });
});
