import { afterEach, describe, expect, it, vi } from "vitest";
import { eventLogOf, newId, type Frame, type TransportEventLog } from "@nuropb/protocol";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";

// What the conformance suite cannot show deterministically: retention by age (on a mocked
// clock), and the memory log's own limits.

const frame = (text: string): Frame => ({
  headers: { nuropb_type: "event" },
  body: new TextEncoder().encode(text),
  correlationId: newId(),
});
const text = (f: Frame): string => new TextDecoder().decode(f.body);

async function openLog(): Promise<TransportEventLog> {
  const transport = createMemoryTransport({ hub: createMemoryHub() });
  await transport.connect();
  const log = eventLogOf(transport);
  if (log === undefined) throw new Error("the memory transport has an event log");
  return log;
}

describe("memory event log", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("drops entries older than maxAgeMs", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: 1_000_000 });
    const log = await openLog();
    await log.setup({ maxAgeMs: 1_000, maxBytes: 1_000_000 });
    await log.append("t.a", frame("old"));
    vi.setSystemTime(1_000_600);
    await log.append("t.b", frame("middle"));
    vi.setSystemTime(1_001_200);
    await log.append("t.c", frame("new"));
    const page = await log.read({ from: "start", limit: 10 });
    expect(page.entries.map((e) => text(e.frame))).toEqual(["middle", "new"]);
    // Reading trims too: nothing is appended, time passes.
    vi.setSystemTime(1_001_700);
    expect(
      (await log.read({ from: "start", limit: 10 })).entries.map((e) => text(e.frame)),
    ).toEqual(["new"]);
  });

  it("a new retention applies at once; the newest entry always stays", async () => {
    const log = await openLog();
    await log.setup({ maxAgeMs: 60_000, maxBytes: 1_000_000 });
    for (const t of ["one", "two", "three"]) await log.append("t.x", frame(t.padEnd(100, ".")));
    await log.setup({ maxAgeMs: 60_000, maxBytes: 1 });
    const page = await log.read({ from: "start", limit: 10 });
    expect(page.entries.map((e) => text(e.frame).replace(/\.+$/, ""))).toEqual(["three"]);
  });

  it("is not there before setup, and refuses foreign positions and bad retention", async () => {
    const log = await openLog();
    expect(await log.available()).toBe(false);
    await expect(log.setup({ maxAgeMs: 0, maxBytes: 10 })).rejects.toThrow(TypeError);
    await expect(log.setup({ maxAgeMs: 10, maxBytes: 1.5 })).rejects.toThrow(TypeError);
    await log.setup({ maxAgeMs: 10_000, maxBytes: 10_000 });
    expect(await log.available()).toBe(true);
    await expect(log.read({ from: { after: "1-0" }, limit: 1 })).rejects.toThrow(TypeError);
    await expect(log.read({ from: "start", limit: 0 })).rejects.toThrow(TypeError);
    await expect(log.append("t.*", frame("x"))).rejects.toThrow(TypeError);
  });
});
