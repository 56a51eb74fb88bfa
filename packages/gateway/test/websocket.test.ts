import { CloseCode, GatewayError, createGatewayClient } from "@nuropb/gateway-client";
import type { GatewayClient, GatewayEvent } from "@nuropb/gateway-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import type { Gateway, GatewayExposure, GatewayOptions } from "../src/index.ts";
import { HUGE, startMesh } from "./mesh.ts";
import type { Orders, TestMesh } from "./mesh.ts";
import { servePythonShaped } from "./python-shaped.ts";

let mesh: TestMesh;
const clients: GatewayClient[] = [];
const sockets: WebSocket[] = [];
beforeEach(async () => {
  mesh = await startMesh();
});
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const s of sockets.splice(0)) s.terminate();
  await mesh.close();
});

const EXPOSE: GatewayExposure = {
  services: {
    orders: {
      requests: ["getOrder", "add", "create", "whoami", "fail", "sleep"],
      commands: ["record"],
    },
  },
  publish: ["chat.*"],
  subscribe: ["orders.#", "chat.*"],
};

async function listening(
  extra: Omit<GatewayOptions, "transport"> = {},
): Promise<{ gateway: Gateway; url: string }> {
  const gateway = mesh.gateway({ expose: EXPOSE, ...extra });
  const url = await gateway.listen();
  return { gateway, url };
}

function client(url: string, token?: string): GatewayClient {
  const c = createGatewayClient({
    url,
    WebSocket,
    ...(token === undefined ? {} : { token }),
    reconnect: { initialDelayMs: 20, maxDelayMs: 100 },
  });
  clients.push(c);
  return c;
}

/** A bare socket to the gateway, and the messages it receives. */
async function rawSocket(url: string, options: ConstructorParameters<typeof WebSocket>[2] = {}) {
  const ws = new WebSocket(`${url.replace("http", "ws")}/ws`, options);
  sockets.push(ws);
  const received: Record<string, unknown>[] = [];
  const texts: string[] = [];
  ws.on("message", (data) => {
    texts.push(String(data));
    received.push(JSON.parse(String(data)) as Record<string, unknown>);
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on("close", (code, reason) => resolve({ code, reason: String(reason) })),
  );
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  const answer = async (id: unknown) => {
    await expect.poll(() => received.some((m) => m.id === id)).toBe(true);
    return received.find((m) => m.id === id) as Record<string, unknown>;
  };
  return { ws, received, texts, closed, answer };
}

describe("calls over the WebSocket", () => {
  it("requests, commands and typed proxies, with the connection's token", async () => {
    const { url } = await listening();
    const c = client(url, "Bearer ok");
    await c.connect();
    expect(await c.request("orders", "add", { a: 1, b: 2 })).toBe(3);
    const orders = c.proxy<Orders>("orders");
    const order: { id: string; owner: string } = await orders.getOrder({ id: "9" });
    expect(order).toEqual({ id: "9", owner: "ada" });
    expect(await orders.whoami({})).toEqual({ Authorization: "Bearer ok" });
    await c.command("orders", "record", { n: 5 });
    await expect.poll(() => mesh.orders.commands).toEqual([{ n: 5 }]);
    expect(await c.services()).toEqual(["orders"]);
    const d = await c.describe("orders");
    expect(Object.keys(d.methods).sort()).toEqual([
      "add",
      "create",
      "fail",
      "getOrder",
      "record",
      "sleep",
      "whoami",
    ]);
  });

  it("answers failures with the NuroPb error and the HTTP status REST would give", async () => {
    const { url } = await listening();
    const c = client(url);
    const failure = (p: Promise<unknown>) =>
      p.then(
        () => undefined,
        (e: unknown) => e as GatewayError,
      );
    const noToken = await failure(c.request("orders", "getOrder", { id: "1" }));
    expect(noToken).toBeInstanceOf(GatewayError);
    expect(noToken).toMatchObject({ wireName: "NuropbAuthenticationError", status: 401 });
    expect(await failure(c.request("orders", "internal", {}))).toMatchObject({
      wireName: "NuropbHandlingError",
      status: 404,
    });
    expect(await failure(c.request("orders", "fail", {}))).toMatchObject({
      wireName: "NuropbException",
      status: 500,
    });
    expect(await failure(c.request("orders", "add", { a: "x" }))).toMatchObject({ status: 400 });
    expect(await failure(c.publish("orders.created", {}))).toMatchObject({
      wireName: "NuropbAuthorizationError",
      status: 403,
    });
  });

  it("answers bad messages with an error and keeps the connection", async () => {
    const { url } = await listening();
    const s = await rawSocket(url);
    s.ws.send("{not json");
    s.ws.send(JSON.stringify([1, 2]));
    s.ws.send(JSON.stringify({ type: "request", service: "orders" })); // no id
    s.ws.send(JSON.stringify({ id: 1, type: "launch" }));
    s.ws.send(
      JSON.stringify({
        id: 2,
        type: "request",
        service: "orders",
        method: "add",
        params: { a: 1, b: 1 },
        ttlMs: -1,
      }),
    );
    s.ws.send(
      JSON.stringify({
        id: 3,
        type: "request",
        service: "orders",
        method: "add",
        params: { a: 1, b: 1 },
      }),
    );
    expect(await s.answer(3)).toEqual({
      id: 3,
      type: "result",
      result: 2,
      traceId: expect.any(String),
    });
    expect((await s.answer(1)).status).toBe(400);
    expect(((await s.answer(2)).error as { error: string }).error).toBe("NuropbValidationError");
    expect(s.received.filter((m) => m.id === null).length).toBe(3);
    s.ws.send(JSON.stringify({ type: "ping" }));
    await expect.poll(() => s.received.some((m) => m.type === "pong")).toBe(true);
  });

  it("writes a service's bigints exactly, in its result and in its error's details", async () => {
    const { url } = await listening({
      expose: { services: { orders: { requests: ["huge"] } } },
    });
    const s = await rawSocket(url);
    s.ws.send('{"id":"ok","type":"request","service":"orders","method":"huge","params":{}}');
    s.ws.send(
      '{"id":"no","type":"request","service":"orders","method":"huge","params":{"fail":true}}',
    );
    await s.answer("ok");
    await s.answer("no");
    expect(s.texts.find((t) => t.startsWith('{"id":"ok"'))).toMatch(
      new RegExp(`^\\{"id":"ok","type":"result","result":\\{"n":${String(HUGE)}\\},`),
    );
    expect(s.texts.find((t) => t.startsWith('{"id":"no"'))).toBe(
      `{"id":"no","type":"error","error":{"error":"NuropbValidationError","description":"over the limit","details":{"limit":${String(HUGE)}}},"status":400}`,
    );
    // A message type that is a big integer is refused as such, not a failure of the gateway.
    s.ws.send('{"id":"t","type":18446744073709551616}');
    expect(await s.answer("t")).toMatchObject({
      status: 400,
      error: {
        error: "NuropbValidationError",
        description: "unknown message type 18446744073709551616",
      },
    });
  });

  it("refuses sealed calls to a service not exposed for them, and bad correlation ids", async () => {
    const { url } = await listening({
      expose: { services: { orders: { requests: ["add"] }, vault: { sealed: true } } },
    });
    const s = await rawSocket(url);
    const sealed = (id: number, service: string, correlationId: string) =>
      s.ws.send(
        JSON.stringify({ id, type: "sealed-request", service, correlationId, body: "AAAA.BBBB" }),
      );
    sealed(1, "orders", "0123456789abcdef0123456789abcdef");
    sealed(2, "vault", "short");
    sealed(3, "vault", "0123456789abcdef0123456789abcdef"); // nobody serves vault
    expect(await s.answer(1)).toMatchObject({
      status: 404,
      error: { error: "NuropbHandlingError" },
    });
    expect(await s.answer(2)).toMatchObject({
      status: 400,
      error: { error: "NuropbValidationError" },
    });
    expect(await s.answer(3)).toMatchObject({
      status: 503,
      error: { error: "NuropbNotDeliveredError" },
    });
  });

  it("limits the calls in flight per connection (429)", async () => {
    const { url } = await listening({
      websocket: { maxInFlight: 2 },
      expose: { services: { orders: { requests: ["sleep"] } } },
    });
    const s = await rawSocket(url);
    for (const id of [1, 2, 3]) {
      s.ws.send(
        JSON.stringify({
          id,
          type: "request",
          service: "orders",
          method: "sleep",
          params: { ms: 100 },
        }),
      );
    }
    expect(await s.answer(3)).toMatchObject({ type: "error", status: 429 });
    expect(await s.answer(1)).toMatchObject({ type: "result", result: "slept" });
    expect(await s.answer(2)).toMatchObject({ type: "result", result: "slept" });
  });

  it("closes a connection that sends a message over maxMessageBytes (1009)", async () => {
    const { url } = await listening({ websocket: { maxMessageBytes: 1024 } });
    const s = await rawSocket(url);
    s.ws.send(JSON.stringify({ id: 1, type: "publish", topic: "chat.x", event: "x".repeat(2000) }));
    expect((await s.closed).code).toBe(CloseCode.messageTooBig);
  });
});

describe("stats over the WebSocket", () => {
  it("answers a stats message as GET /stats/{service} does, through the hook", async () => {
    const py = await servePythonShaped(mesh.transport(), "py_orders");
    try {
      const asked: string[] = [];
      const { url } = await listening({
        expose: { ...EXPOSE, services: { ...EXPOSE.services, py_orders: { requests: "*" } } },
        authorize: (r) => {
          if (r.kind === "stats") asked.push(`${r.service ?? ""} ${r.token ?? "-"} ${r.via}`);
          return r.kind !== "stats" || r.token === "Bearer ops";
        },
      });
      await client(url).request("orders", "add", { a: 1, b: 2 });
      const s = await rawSocket(url);
      s.ws.send(JSON.stringify({ id: 1, type: "stats", service: "orders" }));
      expect(await s.answer(1)).toMatchObject({
        type: "error",
        status: 403,
        error: { error: "NuropbAuthorizationError" },
      });
      s.ws.send(JSON.stringify({ id: 2, type: "authenticate", token: "Bearer ops" }));
      s.ws.send(JSON.stringify({ id: 3, type: "stats", service: "orders" }));
      const ok = await s.answer(3);
      expect(ok).toMatchObject({
        type: "result",
        result: {
          service: "orders",
          stats: {
            service_name: "orders",
            transport: { kind: "memory", state: "open" },
            methods: { add: { num_requests: 1, num_errors: 0 } },
          },
        },
      });
      s.ws.send(JSON.stringify({ id: 4, type: "stats", service: "billing" }));
      expect(await s.answer(4)).toMatchObject({
        type: "error",
        status: 404,
        error: { error: "NuropbHandlingError" },
      });
      s.ws.send(JSON.stringify({ id: 5, type: "stats", service: "py_orders" }));
      expect(await s.answer(5)).toEqual({
        id: 5,
        type: "result",
        result: { service: "py_orders", stats: null },
      });
      s.ws.send(JSON.stringify({ id: 6, type: "stats" }));
      expect(await s.answer(6)).toMatchObject({ type: "error", status: 400 });
      // The unexposed service is refused before the hook is asked.
      expect(asked).toEqual([
        "orders - websocket",
        "orders Bearer ops websocket",
        "py_orders Bearer ops websocket",
      ]);
    } finally {
      await py.stop();
    }
  });
});

describe("subscriptions", () => {
  it("fans events out to the sockets whose patterns match, without their context", async () => {
    const { gateway, url } = await listening();
    const a = client(url, "Bearer ok");
    const b = client(url);
    const gotA: GatewayEvent[] = [];
    const gotB: GatewayEvent[] = [];
    await a.subscribe("orders.#", (e) => gotA.push(e));
    await b.subscribe("orders.created", (e) => gotB.push(e));
    await b.subscribe("chat.*", (e) => gotB.push(e));
    expect(gateway.stats()).toMatchObject({ connections: 2, subscriptions: 3 });

    expect(await a.request("orders", "create", { id: "o1" })).toEqual({ created: "o1" });
    const sender = await mesh.client();
    await sender.publishEvent(
      "orders.shipped",
      { id: "o1" },
      { Authorization: "Bearer someone-else" },
    );
    await a.publish("chat.hello", { text: "hi" });

    await expect
      .poll(() => gotA.map((e) => e.topic).sort())
      .toEqual(["orders.created", "orders.shipped"]);
    await expect
      .poll(() => gotB.map((e) => e.topic).sort())
      .toEqual(["chat.hello", "orders.created"]);
    expect(gotA.find((e) => e.topic === "orders.created")).toEqual({
      topic: "orders.created",
      event: { id: "o1" },
      target: null,
      traceId: expect.any(String),
    });
    expect(JSON.stringify(gotA)).not.toContain("someone-else");
  });

  it("refuses patterns outside the exposed topics, and those the hook refuses", async () => {
    const { url } = await listening({
      authorize: (r) => r.kind !== "subscribe" || r.token === "Bearer ok" || r.topic !== "orders.#",
    });
    const anon = client(url);
    const failure = (p: Promise<unknown>) =>
      p.then(
        () => undefined,
        (e: unknown) => e as GatewayError,
      );
    expect(await failure(anon.subscribe("#", () => {}))).toMatchObject({
      wireName: "NuropbAuthorizationError",
      status: 403,
    });
    expect(await failure(anon.subscribe("billing.#", () => {}))).toMatchObject({ status: 403 });
    expect(await failure(anon.subscribe("chat.#", () => {}))).toMatchObject({ status: 403 }); // chat.* is one word
    expect(await failure(anon.subscribe("orders..x", () => {}))).toMatchObject({ status: 400 });
    expect(await failure(anon.subscribe("orders.#", () => {}))).toMatchObject({ status: 403 }); // the hook
    await expect(anon.subscribe("orders.created", () => {})).resolves.toBeDefined();
    const admin = client(url, "Bearer ok");
    await expect(admin.subscribe("orders.#", () => {})).resolves.toBeDefined();
  });

  it("stops delivering after unsubscribe and when a socket closes", async () => {
    const { gateway, url } = await listening();
    const c = client(url);
    const got: GatewayEvent[] = [];
    const sub = await c.subscribe("chat.*", (e) => got.push(e));
    await c.publish("chat.one", 1);
    await expect.poll(() => got.length).toBe(1);
    await sub.unsubscribe();
    expect(gateway.stats().subscriptions).toBe(0);
    await c.publish("chat.two", 2);
    await c.subscribe("chat.*", () => {});
    await c.close();
    await expect.poll(() => gateway.stats()).toMatchObject({ connections: 0, subscriptions: 0 });
    expect(got.length).toBe(1);
  });

  it("limits the subscriptions per connection (429)", async () => {
    const { url } = await listening({ websocket: { maxSubscriptions: 2 } });
    const c = client(url);
    await c.subscribe("chat.*", () => {});
    await c.subscribe("orders.#", () => {});
    await expect(c.subscribe("orders.created", () => {})).rejects.toMatchObject({ status: 429 });
  });
});

describe("a slow reader", () => {
  it("is closed with 4001 once its send buffer passes the limit; memory stays bounded; others go on", async () => {
    const limit = 64 * 1024;
    const { gateway, url } = await listening({ websocket: { maxBufferedBytes: limit } });
    const slow = await rawSocket(url);
    slow.ws.send(JSON.stringify({ id: 1, type: "subscribe", pattern: "chat.*" }));
    await slow.answer(1);
    const fast = client(url);
    let fastGot = 0;
    await fast.subscribe("chat.*", () => void fastGot++);
    slow.ws.pause(); // stops reading its socket: the kernel buffers fill, then the gateway's

    const publisher = await mesh.client();
    const event = { text: "x".repeat(4096) };
    let sent = 0;
    // The kernel's socket buffers take some megabytes first; then the gateway's own buffer grows.
    while (gateway.stats().slowConsumerCloses === 0 && sent < 40_000) {
      await Promise.all(
        Array.from({ length: 100 }, () => publisher.publishEvent("chat.flood", event)),
      );
      sent += 100;
      // Each batch reaches the fast reader, so the gateway has handed it to the slow one too.
      await expect.poll(() => fastGot, { timeout: 10_000 }).toBe(sent);
    }
    expect(gateway.stats().slowConsumerCloses).toBe(1);
    const stats = gateway.stats();
    expect(stats.peakBufferedBytes).toBeGreaterThan(0);
    expect(stats.peakBufferedBytes).toBeLessThanOrEqual(limit + 4096 + 200);

    slow.ws.resume();
    const closed = await slow.closed;
    expect(closed).toEqual({
      code: CloseCode.slowConsumer,
      reason: `send buffer over ${String(limit)} bytes: the client reads too slowly`,
    });
    await expect.poll(() => fastGot, { timeout: 10_000 }).toBe(sent);
    await expect.poll(() => gateway.stats().connections).toBe(1);
  });
});

describe("heartbeats", () => {
  it("drops a connection that answers no pings", async () => {
    const { gateway, url } = await listening({ websocket: { heartbeatIntervalMs: 50 } });
    const mute = await rawSocket(url, { autoPong: false });
    const alive = client(url);
    await alive.connect();
    await expect.poll(() => gateway.stats().heartbeatCloses, { timeout: 2_000 }).toBe(1);
    expect((await mute.closed).code).toBe(1006);
    // The gateway forgets the connection when its side of the socket has closed, which may
    // come after the client side saw the close.
    await expect.poll(() => gateway.stats().connections, { timeout: 2_000 }).toBe(1);
    expect(alive.state).toBe("open");
  });
});

describe("reconnection", () => {
  it("the client reconnects and resubscribes after its socket is dropped", async () => {
    const { gateway, url } = await listening();
    const states: string[] = [];
    const c = createGatewayClient({
      url,
      WebSocket,
      token: "Bearer ok",
      reconnect: { initialDelayMs: 20, maxDelayMs: 50 },
      onStateChange: (s) => states.push(s),
    });
    clients.push(c);
    const got: GatewayEvent[] = [];
    await c.subscribe("chat.*", (e) => got.push(e));
    const slow = c.request("orders", "sleep", { ms: 300 }).catch((e: unknown) => e);
    await expect.poll(() => mesh.orders.sleeps).toBe(1);

    for (const ws of gateway.server.websocketServer.clients) ws.terminate();
    const failed = await slow;
    expect(failed).toMatchObject({ name: "GatewayConnectionError", retryable: true });
    await expect.poll(() => c.state).toBe("open");
    expect(states).toEqual(["connecting", "open", "reconnecting", "open"]);
    await expect.poll(() => gateway.stats().subscriptions).toBe(1);

    const sender = await mesh.client();
    await sender.publishEvent("chat.again", { n: 2 });
    await expect.poll(() => got.map((e) => e.topic)).toEqual(["chat.again"]);
    // The token was sent again on the new link.
    expect(await c.request("orders", "whoami", {})).toEqual({ Authorization: "Bearer ok" });
  });
});

describe("shutdown", () => {
  it("closes the sockets with 1001 and the client does not come back", async () => {
    const { gateway, url } = await listening();
    const s = await rawSocket(url);
    await gateway.close();
    expect((await s.closed).code).toBe(CloseCode.goingAway);
  });
});
