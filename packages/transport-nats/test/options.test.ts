import { describe, expect, it } from "vitest";
import { createNatsTransport, DEFAULT_NATS_MAX_FRAME_BYTES } from "@nuropb/transport-nats";
import { resolveNatsOptions } from "../src/options.ts";

describe("createNatsTransport options", () => {
  it("applies defaults and does no I/O", () => {
    const t = createNatsTransport({ servers: "nats://127.0.0.1:1" });
    expect(t.kind).toBe("nats");
    expect(t.mesh).toBe("nuropb");
    expect(t.state).toBe("idle");
    expect(t.capabilities).toEqual({
      notDelivered: true,
      redelivery: true,
      deadLetter: true,
      messageTtl: true,
      maxFrameBytes: DEFAULT_NATS_MAX_FRAME_BYTES,
      slimBodies: true,
    });
    const o = resolveNatsOptions({ servers: ["nats://a:4222", "nats://b:4222"] });
    expect(o).toMatchObject({
      prefetch: 256,
      ackWaitMs: 30_000,
      publishTimeoutMs: 10_000,
      name: "nuropb-nuropb",
    });
  });

  it.each([
    [{}, /servers/],
    [{ servers: [] }, /servers/],
    [{ servers: "" }, /servers/],
    [{ servers: "nats://x", mesh: "a.b" }, /mesh/],
    [{ servers: "nats://x", mesh: "a b" }, /mesh/],
    [{ servers: "nats://x", mesh: "" }, /mesh/],
    [{ servers: "nats://x", prefetch: 0 }, /prefetch/],
    [{ servers: "nats://x", ackWaitMs: -1 }, /ackWaitMs/],
    [{ servers: "nats://x", maxFrameBytes: 1.5 }, /maxFrameBytes/],
    // Node fires a timer longer than 2^31-1 ms after 1 ms.
    [{ servers: "nats://x", connectTimeoutMs: 2_147_483_648 }, /'connectTimeoutMs'/],
    [{ servers: "nats://x", reconnectWaitMs: 2_147_483_648 }, /'reconnectWaitMs'/],
    [{ servers: "nats://x", publishTimeoutMs: 2_147_483_648 }, /'publishTimeoutMs'/],
    [{ servers: "nats://x", ackWaitMs: 2_147_483_648 }, /'ackWaitMs'/],
    // Progress goes out on a 250 ms clock: an ack wait under three ticks would expire first.
    [{ servers: "nats://x", ackWaitMs: 250 }, /'ackWaitMs'/],
    [{ servers: "nats://x", ackWaitMs: 749 }, /'ackWaitMs'/],
    [{ servers: "nats://x", logger: console.log }, /'logger'/],
    [{ servers: "nats://x", logger: { info: () => undefined } }, /'logger'/],
    [{ servers: "nats://x", logger: null }, /'logger'/],
    [{ servers: "nats://x", connectionOptions: "user:pass" }, /'connectionOptions'/],
    [{ servers: "nats://x", connectionOptions: null }, /'connectionOptions'/],
    [{ servers: "nats://x", connectionOptions: [] }, /'connectionOptions'/],
    [{ servers: "nats://x", name: 42 }, /'name'/],
    // A dead letter may wait publishTimeoutMs for the link before its message is terminated.
    [
      { servers: "nats://x", ackWaitMs: 5_000, publishTimeoutMs: 5_000 },
      /'ackWaitMs'.*'publishTimeoutMs'/,
    ],
    [{ servers: "nats://x", publishTimeoutMs: 30_000 }, /'ackWaitMs'.*'publishTimeoutMs'/],
  ])("refuses %j", (options, message) => {
    expect(() => createNatsTransport(options as never)).toThrowError(TypeError);
    expect(() => createNatsTransport(options as never)).toThrowError(message);
  });

  it("takes half the ack wait as publish timeout when that is less than 10 s", () => {
    expect(resolveNatsOptions({ servers: "nats://x", ackWaitMs: 2_000 })).toMatchObject({
      ackWaitMs: 2_000,
      publishTimeoutMs: 1_000,
    });
    expect(resolveNatsOptions({ servers: "nats://x", ackWaitMs: 60_000 })).toMatchObject({
      publishTimeoutMs: 10_000,
    });
  });

  it("accepts delays up to what a Node timer keeps and an ack wait of three ticks", () => {
    const o = resolveNatsOptions({
      servers: "nats://x",
      connectTimeoutMs: 2_147_483_647,
      reconnectWaitMs: 2_147_483_647,
      ackWaitMs: 750,
      publishTimeoutMs: 500,
    });
    expect(o).toMatchObject({ connectTimeoutMs: 2_147_483_647, ackWaitMs: 750 });
  });

  it("rejects operations before connect and after close with typed errors", async () => {
    const t = createNatsTransport({ servers: "nats://127.0.0.1:1" });
    const frame = { headers: {}, body: new Uint8Array(), correlationId: "c" };
    await expect(t.send({ kind: "rpc", service: "x" }, frame)).rejects.toMatchObject({
      name: "NuropbTransportError",
    });
    await t.close();
    expect(t.state).toBe("closed");
    await expect(t.closed()).resolves.toBeUndefined();
    await expect(t.send({ kind: "rpc", service: "x" }, frame)).rejects.toMatchObject({
      name: "NuropbConnectionClosedError",
    });
    await expect(t.connect()).rejects.toMatchObject({ name: "NuropbConnectionClosedError" });
  });
});
