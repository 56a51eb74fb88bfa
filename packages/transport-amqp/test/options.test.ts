import { noopLogger } from "@nuropb/protocol";
import { describe, expect, it } from "vitest";
import {
  DEFAULT_HEARTBEAT_SEC,
  DEFAULT_MAX_FRAME_BYTES,
  createAmqpTransport,
  obfuscateUrl,
} from "../src/index.ts";
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
    // Node fires a timer over 2^31 - 1 ms after 1 ms.
    [{ connectTimeoutMs: 2_147_483_648 }, /'connectTimeoutMs' must be from 1 to 2147483647 ms/],
    [{ closeTimeoutMs: 2_147_483_648 }, /'closeTimeoutMs' must be from 1 to 2147483647 ms/],
    [
      { reconnect: { initialDelayMs: 2_147_483_648, maxDelayMs: 2_147_483_648 } },
      /'reconnect\.initialDelayMs' must be from 1 to 2147483647 ms/,
    ],
    [{ reconnect: { maxDelayMs: 2_147_483_648 } }, /'reconnect\.maxDelayMs' must be from 1 to/],
    [{ reconnect: 5 }, /reconnect must be an object/],
    [{ heartbeatSec: 65_536 }, /heartbeatSec must be an integer from 0 to 65535 seconds/],
    ["amqp://h/v?heartbeat=65536", /url parameter heartbeat .* 0 to 65535/],
    ["amqp://h:0/v", /url port must be from 1 to 65535, got 0/],
    [{ clientProperties: "x" }, /clientProperties must be an object/],
    [{ clientProperties: ["x"] }, /clientProperties must be an object/],
    [{ url: { tls: "yes" } }, /url\.tls must be a boolean/],
    [{ tls: null }, /tls must be an object of TLS settings, got null/],
    [{ tls: true }, /tls must be an object of TLS settings, got boolean .*amqps:\/\//],
    [{ logger: {} }, /logger must implement the Logger interface/],
    [{ persistentRequests: "yes" }, /persistentRequests must be a boolean, got string/],
    [{ persistentRequests: 1 }, /persistentRequests must be a boolean, got number/],
    [{ persistentRequests: null }, /persistentRequests must be a boolean, got null/],
    [
      { logger: { ...noopLogger, child: "not a function" } },
      /logger must implement the Logger interface/,
    ],
  ] as const)("refuses %j with a TypeError naming the option", (input, message) => {
    const options = typeof input === "string" ? { url: input } : input;
    let err: unknown;
    try {
      createAmqpTransport(options as Parameters<typeof createAmqpTransport>[0]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TypeError);
    expect((err as Error).message).toMatch(message);
  });

  it("accepts the limits themselves", () => {
    const o = resolveOptions({
      url: "amqp://h:65535/v",
      connectTimeoutMs: 2_147_483_647,
      closeTimeoutMs: 2_147_483_647,
      reconnect: { initialDelayMs: 2_147_483_647, maxDelayMs: 2_147_483_647 },
      heartbeatSec: 65_535,
    });
    expect(o).toMatchObject({
      connectTimeoutMs: 2_147_483_647,
      closeTimeoutMs: 2_147_483_647,
      initialDelayMs: 2_147_483_647,
      maxDelayMs: 2_147_483_647,
      heartbeatSec: 65_535,
    });
    expect(o.target.port).toBe(65_535);
    expect(resolveOptions({ url: "amqp://h/v?heartbeat=65535" }).heartbeatSec).toBe(65_535);
  });
});

describe("defaults", () => {
  it("match PROTOCOL.md and RabbitMQ's limits", () => {
    const o = resolveOptions({});
    expect(o).toMatchObject({
      rpcExchange: "nuropb-rpc-exchange",
      eventsExchange: "nuropb-events-exchange",
      dlExchange: "nuropb-dl-exchange",
      heartbeatSec: 10,
      persistentRequests: false,
      connectTimeoutMs: 10_000,
      initialDelayMs: 100,
      maxDelayMs: 5_000,
      maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
    });
    expect(DEFAULT_MAX_FRAME_BYTES).toBe(128 * 1024 * 1024);
    // RabbitMQ recommends 5 to 20 s: a half-open link is noticed after two to three intervals.
    expect(DEFAULT_HEARTBEAT_SEC).toBe(10);
    expect(resolveOptions({ persistentRequests: true }).persistentRequests).toBe(true);
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

describe("heartbeat", () => {
  it("an explicit heartbeatSec wins over the URL's ?heartbeat=, which wins over the default", () => {
    expect(resolveOptions({ url: "amqp://h/v" }).heartbeatSec).toBe(DEFAULT_HEARTBEAT_SEC);
    expect(resolveOptions({ url: "amqp://h/v?heartbeat=60" }).heartbeatSec).toBe(60);
    expect(resolveOptions({ url: "amqp://h/v?heartbeat=0" }).heartbeatSec).toBe(0);
    expect(resolveOptions({ url: "amqp://h/v?heartbeat=60", heartbeatSec: 5 }).heartbeatSec).toBe(
      5,
    );
    expect(resolveOptions({ url: "amqp://h/v?heartbeat=5", heartbeatSec: 0 }).heartbeatSec).toBe(0);
    expect(resolveOptions({ url: { host: "h" }, heartbeatSec: 60 }).heartbeatSec).toBe(60);
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
