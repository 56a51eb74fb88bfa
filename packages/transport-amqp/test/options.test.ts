import { describe, expect, it } from "vitest";
import { DEFAULT_MAX_FRAME_BYTES, createAmqpTransport, obfuscateUrl } from "../src/index.ts";
import { resolveOptions, resolveTarget } from "../src/options.ts";

const SECRET = "n0t-For-Logs";

describe("URL targets (PROTOCOL.md §2.1, §11)", () => {
  it.each([
    [
      "amqp://guest:guest@localhost:5672/nuropb",
      {
        tls: false,
        host: "localhost",
        port: 5672,
        username: "guest",
        password: "guest",
        vhost: "nuropb",
      },
    ],
    [
      "amqp://rabbit/mesh",
      {
        tls: false,
        host: "rabbit",
        port: 5672,
        username: "guest",
        password: "guest",
        vhost: "mesh",
      },
    ],
    ["amqps://u:p@rabbit/mesh", { tls: true, port: 5671, username: "u", password: "p" }],
    [
      "amqp://u%40x:p%2Fw@rabbit:1234/%2F",
      { port: 1234, username: "u@x", password: "p/w", vhost: "/" },
    ],
    ["amqp://[::1]:5673/v", { host: "::1", port: 5673, vhost: "v" }],
    ["amqp://h/v?heartbeat=7", { vhost: "v", heartbeatSec: 7 }],
  ] as const)("%s", (url, expected) => {
    expect(resolveTarget(url)).toMatchObject(expected);
  });

  it.each([
    [`amqp://guest:${SECRET}@host:5672`, /no vhost/],
    [`amqp://guest:${SECRET}@host:5672/`, /no vhost/],
    [`amqp://guest:${SECRET}@host:5672/a/b`, /single vhost segment/],
    [`http://guest:${SECRET}@host:5672/v`, /amqp: or amqps:/],
    [`amqp://guest:${SECRET}@host:notaport/v`, /not a valid AMQP URL/],
    [`amqp://guest:${SECRET}@host:5672/v?heartbeat=-1`, /heartbeat/],
  ])("refuses %s without echoing the password", (url, message) => {
    let err: unknown;
    try {
      createAmqpTransport({ url });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TypeError);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).not.toContain(SECRET);
  });

  it("the mesh is the vhost", () => {
    expect(createAmqpTransport({ url: "amqp://h/orders-mesh" }).mesh).toBe("orders-mesh");
  });
});

describe("settings targets", () => {
  it("defaults to guest@localhost:5672, vhost nuropb (the factory defaults of Python)", () => {
    expect(resolveTarget({})).toEqual({
      tls: false,
      host: "localhost",
      port: 5672,
      username: "guest",
      password: "guest",
      vhost: "nuropb",
      heartbeatSec: undefined,
    });
    expect(createAmqpTransport().mesh).toBe("nuropb");
  });

  it("TLS by flag or by a CA, with port 5671", () => {
    expect(resolveTarget({ tls: true })).toMatchObject({ tls: true, port: 5671 });
    expect(resolveTarget({}, { caFile: "/ca.pem" })).toMatchObject({ tls: true, port: 5671 });
    expect(resolveTarget("amqp://h/v", { ca: "PEM" })).toMatchObject({ tls: true, port: 5671 });
  });

  it.each([
    [{ url: { port: 0 } }, /url.port/],
    [{ url: { vhost: "" } }, /url.vhost/],
    [{ heartbeatSec: -1 }, /heartbeatSec/],
    [{ connectTimeoutMs: 0 }, /connectTimeoutMs/],
    [{ reconnect: { initialDelayMs: 10, maxDelayMs: 5 } }, /maxDelayMs/],
    [{ maxFrameBytes: 1.5 }, /maxFrameBytes/],
    [{ rpcExchange: "" }, /rpcExchange/],
    [{ tls: { ca: "x", caFile: "y" } }, /tls.ca or tls.caFile/],
    [{ tls: { verify: "yes" as unknown as boolean } }, /tls.verify/],
    [{ connectionName: "" }, /connectionName/],
  ] as const)("refuses %j", (options, message) => {
    expect(() => createAmqpTransport(options as Parameters<typeof createAmqpTransport>[0])).toThrow(
      message,
    );
  });
});

describe("defaults", () => {
  it("match PROTOCOL.md and RabbitMQ's limits", () => {
    const o = resolveOptions({});
    expect(o).toMatchObject({
      rpcExchange: "nuropb-rpc-exchange",
      eventsExchange: "nuropb-events-exchange",
      dlExchange: "nuropb-dl-exchange",
      heartbeatSec: 60,
      connectTimeoutMs: 10_000,
      initialDelayMs: 100,
      maxDelayMs: 5_000,
      maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
    });
    expect(DEFAULT_MAX_FRAME_BYTES).toBe(128 * 1024 * 1024);
    expect(o.connectionName).toMatch(/^nuropb-ts-nuropb-[0-9a-f]{8}$/);
    const t = createAmqpTransport();
    expect(t.capabilities).toEqual({
      notDelivered: true,
      redelivery: true,
      deadLetter: true,
      messageTtl: true,
      maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
    });
  });
});

describe("obfuscateUrl", () => {
  it.each([
    ["amqp://guest:guest@host:5672/v", "amqp://guest:****@host:5672/v"],
    ["amqps://u:p@h/v", "amqps://u:****@h/v"],
    ["http://a:b@h:15672/api", "http://a:****@h:15672/api"],
    ["amqp://h/v", "amqp://h/v"],
    ["not a url //user:secret@x", "not a url //user:****@x"],
  ])("%s → %s", (input, output) => {
    expect(obfuscateUrl(input)).toBe(output);
  });
});
