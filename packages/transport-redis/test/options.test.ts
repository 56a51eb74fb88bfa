import { describe, expect, it } from "vitest";
import { createRedisTransport, DEFAULT_REDIS_MAX_FRAME_BYTES } from "@nuropb/transport-redis";
import { entryTimeMs, isKeyName, meshKeys } from "../src/keys.ts";
import { resolveRedisOptions } from "../src/options.ts";

describe("createRedisTransport options", () => {
  it("applies defaults and does no I/O", () => {
    const t = createRedisTransport({ url: "redis://127.0.0.1:1" });
    expect(t.kind).toBe("redis");
    expect(t.mesh).toBe("nuropb");
    expect(t.state).toBe("idle");
    expect(t.capabilities).toEqual({
      notDelivered: true,
      redelivery: true,
      deadLetter: true,
      messageTtl: true,
      maxFrameBytes: DEFAULT_REDIS_MAX_FRAME_BYTES,
      slimBodies: true,
    });
    expect(resolveRedisOptions({ options: { host: "h", port: 1 } })).toMatchObject({
      prefetch: 256,
      claimIdleMs: 30_000,
      sendTimeoutMs: 10_000,
      addressLeaseMs: 15_000,
      responseTtlMs: 60_000,
    });
  });

  it.each([
    [{}, /url' or 'options/],
    [{ url: "http://x" }, /url/],
    [{ url: "redis://x", mesh: "a b" }, /mesh/],
    [{ url: "redis://x", mesh: "a:b" }, /mesh/],
    [{ url: "redis://x", prefetch: 0 }, /prefetch/],
    [{ url: "redis://x", claimIdleMs: 0 }, /claimIdleMs/],
    [{ url: "redis://x", sendTimeoutMs: Number.NaN }, /sendTimeoutMs/],
    [{ url: "redis://x", sendTimeoutMs: 2 ** 31 }, /'sendTimeoutMs' must be from 1 to 2147483647/],
    [{ url: "redis://x", connectTimeoutMs: 3e9 }, /connectTimeoutMs/],
    [{ url: "redis://x", claimIdleMs: 100 }, /'claimIdleMs' must be from 500/],
    [{ url: "redis://x", addressLeaseMs: 100 }, /'addressLeaseMs' must be from 1000/],
    [{ url: "redis://x", logger: {} }, /'logger' must be a Logger/],
    [{ url: "redis://x", logger: null }, /'logger' must be a Logger/],
    [{ options: "redis://x" }, /'options' must be an ioredis options object/],
  ])("refuses %j", (options, message) => {
    expect(() => createRedisTransport(options as never)).toThrowError(message);
  });

  it("rejects operations before connect and after close with typed errors", async () => {
    const t = createRedisTransport({ url: "redis://127.0.0.1:1" });
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

describe("keys", () => {
  it("names every key under the mesh", () => {
    const k = meshKeys("m");
    expect([
      k.serviceStream("s"),
      k.rpcSet("n"),
      k.eventBindings("s"),
      k.eventServices,
      k.deadLetters,
    ]).toEqual(["m:sq:s", "m:rpc:n", "m:evb:s", "m:evs", "m:dl"]);
    expect([k.responseList("a"), k.responseLease("a")]).toEqual(["m:rq:a", "m:rql:a"]);
  });

  it("reads the time of an entry id and checks names", () => {
    expect(entryTimeMs("1700000000123-4")).toBe(1_700_000_000_123);
    expect(isKeyName("svc.a-b_c")).toBe(true);
    for (const bad of ["", "a b", "a\nb"]) expect(isKeyName(bad)).toBe(false);
  });
});
