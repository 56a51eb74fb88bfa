import {
  NuropbConnectionClosedError,
  NuropbMessageError,
  NuropbNotDeliveredError,
  NuropbTransportError,
  buildHeaders,
  noopLogger,
} from "@nuropb/protocol";
import type {
  Delivery,
  Frame,
  LogFields,
  Logger,
  Transport,
  TransportEvent,
} from "@nuropb/protocol";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createAmqpTransport } from "../src/index.ts";
import { FakeConnection, broker } from "./fake-amqplib.ts";
import type { FakeChannel } from "./fake-amqplib.ts";

vi.mock("amqplib", async () => (await import("./fake-amqplib.ts")).fakeAmqplib);

const URL = "amqp://guest:guest@broker:5672/mesh-a";
const enc = new TextEncoder();
const frame = (id: string, extra: Partial<Frame> = {}): Frame => ({
  headers: buildHeaders("request", null),
  body: enc.encode(`{"id":"${id}"}`),
  correlationId: id,
  ...extra,
});
const spec = { service: "svc", rpcBindings: ["alias"], eventBindings: ["a.*"], prefetch: 7 };

const made: Transport[] = [];
function transport(extra: Parameters<typeof createAmqpTransport>[0] = {}): Transport {
  const t = createAmqpTransport({
    url: URL,
    reconnect: { initialDelayMs: 1, maxDelayMs: 5 },
    ...extra,
  });
  made.push(t);
  return t;
}
function events(t: Transport): TransportEvent[] {
  const seen: TransportEvent[] = [];
  void (async () => {
    for await (const e of t.events()) seen.push(e);
  })();
  return seen;
}
const conn = (i = -1): FakeConnection => {
  const c = broker.connections.at(i);
  if (c === undefined) throw new Error("no connection");
  return c;
};

/** Makes every consume on `c` fail as RabbitMQ does for a queue another connection holds exclusively. */
function refuseConsume(c: FakeConnection): void {
  const original = c.createChannel.bind(c);
  c.createChannel = async () => {
    const ch = await original();
    ch.consume = async (queue: string) => {
      const err = Object.assign(
        new Error(
          `Operation failed: BasicConsume; 403 (ACCESS-REFUSED) with message "ACCESS_REFUSED - queue '${queue}' in vhost 'mesh-a' in exclusive use"`,
        ),
        { code: 403 },
      );
      ch.serverClose(403, "ACCESS_REFUSED");
      throw err;
    };
    return ch;
  };
}
const socketError = (message: string, code: string): Error =>
  Object.assign(new Error(message), { code });
const tlsReset = (): Error =>
  socketError(
    "Client network socket disconnected before secure TLS connection was established",
    "ECONNRESET",
  );
const loginRefused = (): Error =>
  new Error(
    'Handshake terminated by server: 403 (ACCESS-REFUSED) with message "ACCESS_REFUSED - Login was refused"',
  );

/** How `p` stands once every queued microtask (the fake broker's confirms) has run. */
async function outcome(p: Promise<unknown>): Promise<"resolved" | "rejected" | "pending"> {
  let state: "resolved" | "rejected" | "pending" = "pending";
  p.then(
    () => (state = "resolved"),
    () => (state = "rejected"),
  );
  await new Promise((r) => setImmediate(r));
  return state;
}

beforeEach(() => broker.reset());
afterEach(async () => {
  await Promise.allSettled(made.splice(0).map((t) => t.close()));
});

describe("connect", () => {
  it("does no I/O until connect(); connects with TCP_NODELAY, heartbeat, connection_name and the vhost", async () => {
    const t = transport({ connectionName: "my-conn", heartbeatSec: 15 });
    expect(broker.connectCalls).toHaveLength(0);
    expect(t.kind).toBe("amqp");
    expect(t.mesh).toBe("mesh-a");
    expect(t.state).toBe("idle");
    await t.connect();
    expect(t.state).toBe("open");
    const [call] = broker.connectCalls;
    expect(call?.url).toMatchObject({
      protocol: "amqp",
      hostname: "broker",
      port: 5672,
      username: "guest",
      vhost: "mesh-a",
      heartbeat: 15,
    });
    expect(call?.socketOptions).toMatchObject({ noDelay: true });
    expect(call?.socketOptions.clientProperties).toMatchObject({
      connection_name: "my-conn",
      product: "Nuropb",
      protocol: "0.1.1",
    });
    // Exchanges are not declared on connect.
    expect(conn().channels.flatMap((c) => c.declared)).toEqual([]);
  });

  it("proposes a 10 s heartbeat unless told otherwise (RabbitMQ recommends 5 to 20 s)", async () => {
    await transport().connect();
    await transport({ url: `${URL}?heartbeat=60` }).connect();
    await transport({ heartbeatSec: 0 }).connect();
    expect(broker.connectCalls.map((c) => c.url.heartbeat)).toEqual([10, 60, 0]);
  });

  it("a refusal fails at once, without retrying, and names the user but not the password", async () => {
    broker.connect = () => Promise.reject(loginRefused());
    const t = transport({
      url: "amqp://alice:Sup3rS3cret@broker/mesh-a",
      connectTimeoutMs: 60_000,
    });
    const err = await t.connect().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect((err as NuropbTransportError).retryable).toBe(false);
    expect((err as Error).message).toContain("alice");
    expect((err as Error).message).not.toContain("Sup3rS3cret");
    expect(broker.connectCalls).toHaveLength(1);
    expect(t.state).toBe("idle");
  });

  it("a missing vhost is a refusal too", async () => {
    broker.connect = () =>
      Promise.reject(new Error("Expected ConnectionOpenOk; got <ConnectionClose channel:0>"));
    const err = await transport()
      .connect()
      .catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/vhost 'mesh-a'/);
    expect(broker.connectCalls).toHaveLength(1);
  });

  it("an unreachable broker is retried until it answers", async () => {
    let attempts = 0;
    broker.connect = () =>
      ++attempts < 3
        ? Promise.reject(
            Object.assign(new Error("connect ECONNREFUSED 10.0.0.1:5672"), {
              code: "ECONNREFUSED",
            }),
          )
        : Promise.resolve(new FakeConnection());
    const t = transport();
    await t.connect();
    expect(attempts).toBe(3);
    expect(t.state).toBe("open");
  });

  it("a TLS handshake reset and an unknown host are retried, not taken as refusals", async () => {
    const failures = [tlsReset(), socketError("getaddrinfo ENOTFOUND broker", "ENOTFOUND")];
    broker.connect = () => {
      const err = failures.shift();
      return err === undefined ? Promise.resolve(new FakeConnection()) : Promise.reject(err);
    };
    const t = transport();
    await t.connect();
    expect(broker.connectCalls).toHaveLength(3);
    expect(t.state).toBe("open");
  });

  it("close() during connect() ends closed; the late connection is closed", async () => {
    let release: (c: FakeConnection) => void = () => {};
    broker.connect = () => new Promise<FakeConnection>((r) => (release = r));
    const t = transport();
    const connecting = t.connect().catch((e: unknown) => e);
    await vi.waitFor(() => expect(broker.connectCalls).toHaveLength(1));
    const closing = t.close();
    const late = new FakeConnection();
    release(late);
    expect(await connecting).toBeInstanceOf(NuropbConnectionClosedError);
    await closing;
    expect(t.state).toBe("closed");
    await vi.waitFor(() => expect(late.closed).toBe(true));
    await expect(t.connect()).rejects.toBeInstanceOf(NuropbConnectionClosedError);
  });
});

describe("send", () => {
  it("maps destinations to exchange, routing key and mandatory, with exactly the NuroPb properties", async () => {
    const t = transport({ rpcExchange: "rpc-x", eventsExchange: "ev-x" });
    await t.connect();
    broker.bound.add("svc");
    await t.send(
      { kind: "rpc", service: "svc" },
      frame("r1", { replyTo: "nuropb-me-rq", ttlMs: 3_600_000 }),
    );
    await t.send(
      { kind: "event", topic: "a.b" },
      frame("e1", { headers: buildHeaders("event", "tr") }),
    );
    await t.send(
      { kind: "reply", address: "nuropb-you-rq" },
      frame("p1", { headers: buildHeaders("response", "tr") }),
    );
    await t.send(
      { kind: "rpc", service: "svc" },
      frame("r0", { replyTo: "nuropb-me-rq", ttlMs: 0 }),
    );
    const published = conn().sent;
    expect(published.map((p) => [p.exchange, p.routingKey, p.options.mandatory])).toEqual([
      ["rpc-x", "svc", true],
      ["ev-x", "a.b", undefined],
      ["", "nuropb-you-rq", undefined],
      ["rpc-x", "svc", true],
    ]);
    // A response goes out on a channel without publisher confirms; the rest are confirmed.
    expect(published.map((p) => p.confirm)).toEqual([true, true, false, true]);
    expect(published[0]?.options).toStrictEqual({
      contentType: "application/json",
      correlationId: "r1",
      replyTo: "nuropb-me-rq",
      headers: buildHeaders("request", null),
      expiration: "3600000",
      mandatory: true,
    });
    expect(published[1]?.options).toStrictEqual({
      contentType: "application/json",
      correlationId: "e1",
      replyTo: "",
      // Events carry when they were sent, for the event log (Python ignores the header).
      headers: { ...buildHeaders("event", "tr"), timestamp_in_ms: expect.stringMatching(/^\d+$/) },
      deliveryMode: 2,
    });
    expect(published[2]?.options.replyTo).toBe("");
    expect(published[3]?.options).not.toHaveProperty("expiration");
    expect(published[0]?.content.toString()).toBe('{"id":"r1"}');
  });

  it("publishes commands and events persistent (delivery mode 2), requests and responses transient", async () => {
    const t = transport();
    await t.connect();
    broker.bound.add("svc");
    const rpc = { kind: "rpc", service: "svc" } as const;
    await t.send(rpc, frame("req", { replyTo: "nuropb-me-rq", ttlMs: 1_000 }));
    await t.send(rpc, frame("cmd", { headers: buildHeaders("command", "tr"), replyTo: "rq" }));
    await t.send(
      { kind: "event", topic: "a.b" },
      frame("ev", { headers: buildHeaders("event", "tr") }),
    );
    await t.send(
      { kind: "reply", address: "nuropb-you-rq" },
      frame("rsp", { headers: buildHeaders("response", "tr") }),
    );
    // An rpc frame whose kind cannot be told is kept rather than risked.
    await t.send(rpc, frame("untyped", { headers: {} }));
    await t.send(rpc, frame("odd", { headers: { nuropb_type: "Request" } }));
    const modes = conn().sent.map((p) => [p.options.correlationId, p.options.deliveryMode]);
    expect(modes).toEqual([
      ["req", undefined],
      ["cmd", 2],
      ["ev", 2],
      ["rsp", undefined],
      ["untyped", 2],
      ["odd", 2],
    ]);
    // Transient messages carry no delivery_mode at all, as Python publishes them.
    const [req, , , rsp] = conn().sent;
    expect(req?.options).not.toHaveProperty("deliveryMode");
    expect(rsp?.options).not.toHaveProperty("deliveryMode");
  });

  it("persistentRequests: true publishes requests persistent too; responses stay transient", async () => {
    const t = transport({ persistentRequests: true });
    await t.connect();
    broker.bound.add("svc");
    await t.send({ kind: "rpc", service: "svc" }, frame("req", { replyTo: "nuropb-me-rq" }));
    await t.send(
      { kind: "reply", address: "nuropb-you-rq" },
      frame("rsp", { headers: buildHeaders("response", "tr") }),
    );
    const [req, rsp] = conn().sent;
    expect(req?.options.deliveryMode).toBe(2);
    expect(rsp?.options).not.toHaveProperty("deliveryMode");
  });

  it("pairs a basic.return with its own publish: only the unroutable request rejects NuropbNotDeliveredError", async () => {
    const t = transport();
    await t.connect();
    broker.bound.add("here");
    const results = await Promise.allSettled([
      t.send({ kind: "rpc", service: "here" }, frame("same")),
      t.send({ kind: "rpc", service: "gone" }, frame("same")),
      t.send({ kind: "rpc", service: "here" }, frame("other")),
    ]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect((results[1] as PromiseRejectedResult).reason).toBeInstanceOf(NuropbNotDeliveredError);
    expect(String((results[1] as PromiseRejectedResult).reason.message)).toContain("gone");
  });

  it("refuses oversize bodies with NuropbMessageError and stays usable", async () => {
    const t = transport({ maxFrameBytes: 8 });
    await t.connect();
    await expect(t.send({ kind: "event", topic: "t" }, frame("a-long-one"))).rejects.toBeInstanceOf(
      NuropbMessageError,
    );
    await t.send({ kind: "event", topic: "t" }, { ...frame("x"), body: new Uint8Array(8) });
    expect(t.capabilities.maxFrameBytes).toBe(8);
  });

  it.each([
    [
      "a correlation id over 255 UTF-8 bytes",
      { correlationId: "é".repeat(128) },
      /frame\.correlationId/,
    ],
    ["a reply address over 255 bytes", { replyTo: "q".repeat(256) }, /frame\.replyTo/],
    [
      "a reply address that is not a string",
      { replyTo: 42 as unknown as string },
      /frame\.replyTo/,
    ],
    ["a header name over 255 bytes", { headers: { ["h".repeat(256)]: "v" } }, /frame\.headers/],
  ] as const)(
    "refuses %s before publishing; later sends settle on their own confirms",
    async (_what, extra, field) => {
      const t = transport();
      await t.connect();
      const pub = conn().publisher();
      const err = await t
        .send({ kind: "reply", address: "nuropb-you-rq" }, frame("bad", extra))
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NuropbMessageError);
      expect((err as Error).message).toMatch(field);
      const later = [
        t.send({ kind: "event", topic: "t" }, frame("e1")),
        t.send({ kind: "rpc", service: "gone" }, frame("r1")),
      ];
      expect(await Promise.all(later.map(outcome))).toEqual(["resolved", "rejected"]);
      await expect(later[1]).rejects.toBeInstanceOf(NuropbNotDeliveredError);
      expect(conn().publisher()).toBe(pub);
      expect(pub.published.map((p) => p.options.correlationId)).toEqual(["e1", "r1"]);
    },
  );

  it("refuses a ttlMs over 4294967295 (the expiration every RabbitMQ accepts) before publishing; the limit itself is sent", async () => {
    const t = transport();
    await t.connect();
    const pub = conn().publisher();
    const err = await t
      .send({ kind: "event", topic: "t" }, frame("long", { ttlMs: 4_294_967_296 }))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NuropbMessageError);
    expect((err as Error).message).toMatch(/frame\.ttlMs must be at most 4294967295 ms/);
    await t.send({ kind: "event", topic: "t" }, frame("max", { ttlMs: 4_294_967_295 }));
    expect(pub.published.map((p) => p.options.expiration)).toEqual(["4294967295"]);
  });

  it("a publish that throws anyway retires its channel: earlier sends keep their confirms, later ones get a fresh channel", async () => {
    const t = transport();
    const seen = events(t);
    await t.connect();
    const pub = conn().publisher();
    const earlier = t.send({ kind: "event", topic: "t" }, frame("before"));
    pub.failNextPublish = new Error("write after end");
    const err = await t.send({ kind: "event", topic: "t" }, frame("bad")).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect((err as NuropbTransportError).retryable).toBe(true);
    await earlier;
    await vi.waitFor(() => expect(pub.closed).toBe(true));
    await vi.waitFor(() => expect(conn().publisher()).not.toBe(pub));
    await t.send({ kind: "event", topic: "t" }, frame("after"));
    expect(
      conn()
        .publisher()
        .published.map((p) => p.options.correlationId),
    ).toEqual(["after"]);
    expect(seen.map((e) => e.type)).toContain("errored");
    expect(t.state).toBe("open");
  });

  it("while the broker blocks publishing (resource alarm) sends reject at once, retryable; unblocked lifts it", async () => {
    const t = transport();
    await t.connect();
    const pub = conn().publisher();
    conn().emit("blocked", "low on memory");
    const err = await t.send({ kind: "event", topic: "t" }, frame("x")).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect((err as NuropbTransportError).retryable).toBe(true);
    expect((err as Error).message).toMatch(
      /broker blocked publishing \(resource alarm: low on memory\)/,
    );
    expect(pub.published).toEqual([]);
    conn().emit("unblocked");
    await t.send({ kind: "event", topic: "t" }, frame("y"));
    expect(pub.published.map((p) => p.options.correlationId)).toEqual(["y"]);
  });

  it("before connect: a non-retryable transport error; after close: NuropbConnectionClosedError", async () => {
    const t = transport();
    const early = await t.send({ kind: "event", topic: "t" }, frame("x")).catch((e: unknown) => e);
    expect(early).toBeInstanceOf(NuropbTransportError);
    expect((early as NuropbTransportError).retryable).toBe(false);
    await t.close();
    await expect(t.send({ kind: "event", topic: "t" }, frame("x"))).rejects.toBeInstanceOf(
      NuropbConnectionClosedError,
    );
  });

  it("a publisher channel the broker closes rejects its in-flight sends with the broker's reason, then is replaced", async () => {
    const t = transport();
    const seen = events(t);
    await t.connect();
    const pub = conn().publisher();
    const inflight = t.send({ kind: "event", topic: "t" }, frame("x"));
    pub.serverClose(404, "NOT_FOUND - no exchange 'nuropb-events-exchange' in vhost 'mesh-a'");
    const err = await inflight.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect((err as Error).message).toContain("NOT_FOUND - no exchange");
    expect((err as NuropbTransportError).retryable).toBe(false);
    await vi.waitFor(() => expect(conn().publisher()).not.toBe(pub));
    await t.send({ kind: "event", topic: "t" }, frame("y"));
    expect(seen.map((e) => e.type)).toContain("errored");
    expect(t.state).toBe("open");
  });
});

describe("consuming", () => {
  it("declares the service queue exactly as Python does, binds rpc and events, sets per-consumer prefetch", async () => {
    const t = transport({ dlExchange: "my-dlx" });
    await t.connect();
    await t.consumeService(spec, () => {});
    const ch = conn().consumerChannel("nuropb-svc-sq");
    expect(ch.qos).toEqual([[7, false]]);
    expect(ch.declared).toEqual([
      {
        queue: "nuropb-svc-sq",
        options: {
          durable: true,
          exclusive: false,
          autoDelete: false,
          arguments: { "x-dead-letter-exchange": "my-dlx" },
        },
      },
    ]);
    expect(ch.bindings).toEqual([
      ["nuropb-svc-sq", "nuropb-rpc-exchange", "svc"],
      ["nuropb-svc-sq", "nuropb-rpc-exchange", "alias"],
      ["nuropb-svc-sq", "nuropb-events-exchange", "a.*"],
    ]);
    expect([...ch.consumers.values()][0]?.options).toEqual({ noAck: false, exclusive: false });
  });

  it("declares the response queue non-durable, auto-delete, no arguments; consumes exclusive and no-ack", async () => {
    const t = transport();
    await t.connect();
    await t.consumeResponses({ address: "nuropb-x-1-rq" }, () => {});
    const ch = conn().consumerChannel("nuropb-x-1-rq");
    expect(ch.declared).toEqual([
      { queue: "nuropb-x-1-rq", options: { durable: false, exclusive: false, autoDelete: true } },
    ]);
    expect([...ch.consumers.values()][0]?.options).toEqual({ noAck: true, exclusive: true });
  });

  it("maps a message to a delivery: headers (absent → {}, bytes → text), replyTo '' → absent, expiration → ttlMs", async () => {
    const t = transport();
    await t.connect();
    const got: Delivery[] = [];
    await t.consumeService(spec, (d) => void got.push(d));
    const ch = conn().consumerChannel("nuropb-svc-sq");
    ch.deliver("a", {
      correlationId: "c1",
      replyTo: "rq",
      expiration: "5000",
      headers: { trace_id: null, x: Buffer.from("y"), n: 5 },
    });
    ch.deliver("b", { correlationId: "c2", replyTo: "" }, true);
    ch.deliver("c", { expiration: "soon" });
    expect(got[0]).toMatchObject({
      correlationId: "c1",
      replyTo: "rq",
      ttlMs: 5000,
      redelivered: false,
    });
    expect({ ...got[0]?.headers }).toStrictEqual({ trace_id: null, x: "y", n: "5" });
    expect(got[1]?.replyTo).toBeUndefined();
    expect(got[1]?.redelivered).toBe(true);
    expect({ ...got[1]?.headers }).toStrictEqual({});
    expect(got[2]?.correlationId).toBe("");
    expect(got[2]?.ttlMs).toBeUndefined();
    expect(Buffer.from(got[0]?.body ?? []).toString()).toBe("a");
  });

  it("settles once: later calls and calls after the channel is gone touch nothing", async () => {
    const t = transport();
    await t.connect();
    const got: Delivery[] = [];
    await t.consumeService(spec, (d) => void got.push(d));
    const ch = conn().consumerChannel("nuropb-svc-sq");
    ch.deliver("a");
    ch.deliver("b");
    await got[0]?.ack();
    await got[0]?.ack();
    await got[0]?.reject();
    await got[0]?.requeue();
    // Acks go out at the end of the tick.
    await vi.waitFor(() => expect(ch.settled).toEqual([{ how: "ack", tag: 1 }]));
    conn().drop(); // the channel goes with the connection
    await expect(got[1]?.ack()).resolves.toBeUndefined();
    expect(ch.settled).toHaveLength(1);
  });

  it("acks of one tick go out as one basic.ack multiple, after the replies sent with them", async () => {
    const t = transport();
    await t.connect();
    await t.consumeService(spec, async (d) => {
      await d.ack();
      await t.send({ kind: "reply", address: "rq" }, frame(`re-${d.correlationId}`));
    });
    const ch = conn().consumerChannel("nuropb-svc-sq");
    for (const id of ["a", "b", "c"]) ch.deliver(id, { correlationId: id, replyTo: "rq" });
    await vi.waitFor(() => expect(ch.settled).toHaveLength(3));
    expect(ch.settled.map((x) => x.how)).toEqual(["ack", "ack", "ack"]);
    expect(conn().writes).toEqual(["publish rq", "publish rq", "publish rq", "ack 3 multiple"]);
  });

  it("an ack never covers a delivery whose handler still runs: acks past it go one by one", async () => {
    const t = transport();
    await t.connect();
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    await t.consumeService(spec, async (d) => {
      if (Buffer.from(d.body).toString() === "slow") await gate;
      await d.ack();
    });
    const ch = conn().consumerChannel("nuropb-svc-sq");
    for (const body of ["a", "slow", "c", "d"]) ch.deliver(body);
    await vi.waitFor(() => expect(ch.settled).toHaveLength(3));
    expect(conn().writes).toEqual(["ack 1 multiple", "ack 3", "ack 4"]);
    release();
    await vi.waitFor(() => expect(ch.settled).toHaveLength(4));
    expect(conn().writes.at(-1)).toBe("ack 2 multiple");
    expect(ch.settled.map((x) => x.tag)).toEqual([1, 3, 4, 2]);
  });

  it("requeue is nack(requeue) and reject is reject(no requeue); a throwing handler has its delivery rejected once", async () => {
    const t = transport();
    await t.connect();
    await t.consumeService(spec, async (d) => {
      const body = Buffer.from(d.body).toString();
      if (body === "requeue") await d.requeue();
      else if (body === "reject") await d.reject();
      else if (body === "sync-throw") throw new Error("boom");
      else if (body === "async-throw") await Promise.reject(new Error("boom"));
      else if (body === "ack-then-throw") {
        await d.ack();
        throw new Error("late boom");
      }
    });
    const ch = conn().consumerChannel("nuropb-svc-sq");
    for (const b of ["requeue", "reject", "sync-throw", "async-throw", "ack-then-throw"])
      ch.deliver(b);
    await vi.waitFor(() => expect(ch.settled).toHaveLength(5));
    expect([...ch.settled].sort((a, b) => a.tag - b.tag)).toEqual([
      { how: "nack", tag: 1, requeue: true },
      { how: "reject", tag: 2, requeue: false },
      { how: "reject", tag: 3, requeue: false },
      { how: "reject", tag: 4, requeue: false },
      { how: "ack", tag: 5 },
    ]);
  });

  it("a refused consumeResponses (exclusive use) is a NuropbTransportError and leaves the transport open", async () => {
    const t = transport();
    await t.connect();
    refuseConsume(conn());
    const err = await t.consumeResponses({ address: "q" }, () => {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect((err as Error).message).toMatch(
      /already consumed by another participant.*exclusive use/,
    );
    expect(t.state).toBe("open");
  });

  it("a response handler whose promise rejects is logged, not left as an unhandled rejection", async () => {
    const warnings: [string, LogFields | undefined][] = [];
    const logger: Logger = {
      ...noopLogger,
      warn: (msg, fields) => void warnings.push([msg, fields]),
      child: () => logger,
    };
    const t = transport({ logger });
    await t.connect();
    const handler = async (): Promise<void> => {
      throw new Error("handler boom");
    };
    await t.consumeResponses({ address: "nuropb-x-rq" }, handler);
    conn().consumerChannel("nuropb-x-rq").deliver("r");
    await vi.waitFor(() =>
      expect(warnings).toContainEqual(["response handler failed", { error: "handler boom" }]),
    );
  });

  it("a stopped listener keeps its channel while a handler runs, then closes it", async () => {
    const t = transport();
    await t.connect();
    let finish: () => void = () => {};
    const running = new Promise<void>((r) => (finish = r));
    const got: Delivery[] = [];
    const l = await t.consumeService(spec, async (d) => {
      got.push(d);
      await running;
      await d.ack();
    });
    const ch = conn().consumerChannel("nuropb-svc-sq");
    ch.deliver("a");
    await l.stop();
    expect(ch.consumers.size).toBe(0);
    expect(ch.closed).toBe(false);
    finish();
    await vi.waitFor(() => expect(ch.closed).toBe(true));
    expect(ch.settled).toEqual([{ how: "ack", tag: 1 }]);
  });
});

describe("connection loss", () => {
  it("reports disconnected, refuses sends at once, reconnects, re-declares and resumes consumers, reports reconnected", async () => {
    const t = transport();
    const seen = events(t);
    await t.connect();
    const got: string[] = [];
    await t.consumeService(spec, async (d) => {
      got.push(Buffer.from(d.body).toString());
      await d.ack();
    });
    await t.consumeResponses(
      { address: "nuropb-x-rq" },
      (f) => void got.push(`reply:${Buffer.from(f.body).toString()}`),
    );
    let release: (c: FakeConnection) => void = () => {};
    broker.connect = () => new Promise<FakeConnection>((r) => (release = r));
    const first = conn();
    first.drop(320, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'");
    await vi.waitFor(() => expect(seen.map((e) => e.type)).toEqual(["disconnected"]));
    expect(t.state).toBe("connecting");
    const err = await t.send({ kind: "event", topic: "t" }, frame("x")).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect((err as NuropbTransportError).retryable).toBe(true);
    await vi.waitFor(() => expect(broker.connectCalls.length).toBeGreaterThan(1));
    release(new FakeConnection());
    await vi.waitFor(() =>
      expect(seen.map((e) => e.type)).toEqual(["disconnected", "reconnected"]),
    );
    expect(t.state).toBe("open");
    const second = conn();
    expect(second).not.toBe(first);
    second.consumerChannel("nuropb-svc-sq").deliver("after");
    second.consumerChannel("nuropb-x-rq").deliver("r");
    expect(got).toEqual(["after", "reply:r"]);
    await t.send({ kind: "event", topic: "t" }, frame("y"));
  });

  it("a consumer cancelled by the broker (queue deleted) is re-declared and consumed again on the same connection", async () => {
    const t = transport();
    await t.connect();
    await t.consumeService(spec, () => {});
    const ch = conn().consumerChannel("nuropb-svc-sq");
    ch.serverCancel();
    await vi.waitFor(() => expect(conn().consumerChannel("nuropb-svc-sq")).not.toBe(ch));
    expect(broker.connections).toHaveLength(1);
  });

  it("stop() while the consumer is being re-established leaves no consumer behind", async () => {
    const t = transport();
    await t.connect();
    const l = await t.consumeService(spec, () => {});
    const ch = conn().consumerChannel("nuropb-svc-sq");
    ch.serverCancel(); // the restart starts now, asynchronously
    await l.stop();
    // The restarted channel gets its consumer, sees the stop, cancels it and closes.
    await vi.waitFor(() => {
      const restarted = conn().channels.filter(
        (c) => c !== ch && !c.confirm && c.declared.length > 0,
      );
      expect(restarted.length).toBeGreaterThan(0);
      expect(restarted.every((c) => c.closed && c.consumers.size === 0)).toBe(true);
    });
  });

  it("the reconnect loop retries what may pass: a TLS reset, DNS, the response queue still in exclusive use", async () => {
    const t = transport();
    const seen = events(t);
    await t.connect();
    await t.consumeResponses({ address: "nuropb-x-rq" }, () => {});
    const first = conn();
    const held = new FakeConnection(); // the broker still holds the old exclusive consumer
    refuseConsume(held);
    const attempts: (() => Promise<FakeConnection>)[] = [
      () => Promise.reject(tlsReset()),
      () => Promise.reject(socketError("getaddrinfo ENOTFOUND broker", "ENOTFOUND")),
      () => Promise.resolve(held),
    ];
    broker.connect = () => (attempts.shift() ?? (() => Promise.resolve(new FakeConnection())))();
    first.drop(320, "CONNECTION_FORCED");
    await vi.waitFor(() =>
      expect(seen.map((e) => e.type)).toEqual(["disconnected", "reconnected"]),
    );
    expect(t.state).toBe("open");
    expect(broker.connectCalls).toHaveLength(5);
    expect(held.closed).toBe(true);
    conn().consumerChannel("nuropb-x-rq").deliver("r");
  });

  it("a connection that dies while connect() is still setting it up is not installed: the attempt is retried", async () => {
    broker.connect = () => {
      const c = new FakeConnection();
      if (broker.connections.length === 1) {
        const original = c.createConfirmChannel.bind(c);
        c.createConfirmChannel = async () => {
          const ch = await original();
          c.drop(); // gone before #establish resumes
          return ch;
        };
      }
      return Promise.resolve(c);
    };
    const t = transport();
    await t.connect();
    expect(broker.connections).toHaveLength(2);
    expect(conn().closed).toBe(false);
    await t.send({ kind: "event", topic: "t" }, frame("x"));
  });

  it.each([
    [
      "the publisher channel is closed by the broker",
      (c: FakeConnection) => c.publisher().serverClose(406, "PRECONDITION_FAILED - unknown"),
    ],
    [
      "the first consumer is cancelled by the broker",
      (c: FakeConnection) => c.consumerChannel("nuropb-svc-sq").serverCancel(),
    ],
    [
      "the first consumer's channel is closed by the broker",
      (c: FakeConnection) =>
        c.consumerChannel("nuropb-svc-sq").serverClose(404, "NOT_FOUND - no queue"),
    ],
  ] as const)(
    "when %s while a reconnect is still setting up, the attempt is retried",
    async (_what, fail) => {
      const t = transport();
      const seen = events(t);
      await t.connect();
      await t.consumeService(spec, () => {});
      await t.consumeResponses({ address: "nuropb-x-rq" }, () => {});
      const first = conn();
      broker.connect = () => {
        const c = new FakeConnection();
        if (broker.connections.length === 2) {
          // The second listener's channel opens after the first consumes: fail something then.
          let opened = 0;
          const original = c.createChannel.bind(c);
          c.createChannel = async () => {
            if (++opened === 2) fail(c);
            return original();
          };
        }
        return Promise.resolve(c);
      };
      first.drop(320, "CONNECTION_FORCED");
      await vi.waitFor(() =>
        expect(seen.map((e) => e.type)).toEqual(["disconnected", "reconnected"]),
      );
      expect(broker.connections).toHaveLength(3);
      expect(broker.connections[1]?.closed).toBe(true);
      conn().consumerChannel("nuropb-svc-sq").deliver("a");
      conn().consumerChannel("nuropb-x-rq").deliver("r");
      await t.send({ kind: "event", topic: "t" }, frame("y"));
    },
  );

  it("a login refused during reconnect closes the transport with that reason", async () => {
    const t = transport();
    await t.connect();
    broker.connect = () => Promise.reject(loginRefused());
    conn().drop(320, "CONNECTION_FORCED");
    const reason = await t.closed();
    expect(reason).toBeInstanceOf(NuropbTransportError);
    expect(reason?.message).toMatch(/refused the login of user 'guest'/);
    expect(t.state).toBe("closed");
  });

  it("access refused after startup closes the transport with that reason", async () => {
    const t = transport();
    const seen = events(t);
    await t.connect();
    conn().drop(403, "ACCESS_REFUSED");
    const reason = await t.closed();
    expect(reason).toBeInstanceOf(NuropbTransportError);
    expect(t.state).toBe("closed");
    await vi.waitFor(() => expect(seen.map((e) => e.type)).toEqual(["disconnected", "closed"]));
  });

  it("close() is idempotent, ends every event stream and settles closed() with undefined", async () => {
    const t = transport();
    const seen = events(t);
    await t.connect();
    await Promise.all([t.close(), t.close()]);
    await t.close();
    expect(await t.closed()).toBeUndefined();
    expect(seen.map((e) => e.type)).toEqual(["closed"]);
    expect(conn().closed).toBe(true);
  });
});

describe("closing", () => {
  it("lets running handlers reply and settle before it closes; nothing new starts meanwhile", async () => {
    const t = transport();
    await t.connect();
    let finish: () => void = () => {};
    const gate = new Promise<void>((r) => (finish = r));
    const replied: string[] = [];
    await t.consumeService(spec, async (d) => {
      await gate;
      const body = new TextDecoder().decode(d.body);
      await t.send({ kind: "reply", address: "nuropb-client-rq" }, frame(`re-${body}`));
      replied.push(body);
      await d.ack();
    });
    const ch = conn().consumerChannel("nuropb-svc-sq");
    ch.deliver("a");
    const closing = t.close();
    await vi.waitFor(() => expect(ch.consumers.size).toBe(0));
    expect(await outcome(closing)).toBe("pending");
    // Only the running handlers' replies may go out now: nothing new starts.
    await expect(t.send({ kind: "rpc", service: "svc" }, frame("new"))).rejects.toThrow(
      NuropbConnectionClosedError,
    );
    await expect(t.consumeService({ ...spec, service: "other" }, () => undefined)).rejects.toThrow(
      NuropbConnectionClosedError,
    );
    finish();
    await closing;
    expect(replied).toEqual(["a"]);
    expect(ch.settled).toEqual([{ how: "ack", tag: 1 }]);
    expect(conn().sent.map((p) => p.options?.correlationId)).toContain("re-a");
    await expect(t.send({ kind: "event", topic: "t" }, frame("late"))).rejects.toThrow(
      NuropbConnectionClosedError,
    );
  });

  it("waits for outstanding confirms before closing the connection", async () => {
    const t = transport();
    await t.connect();
    const pub = conn().publisher() as FakeChannel;
    let confirm: (err: unknown) => void = () => {};
    pub.publish = (exchange, routingKey, content, options, cb) => {
      pub.published.push({ exchange, routingKey, content, options });
      confirm = cb ?? (() => {});
      return true;
    };
    const sent = t.send({ kind: "event", topic: "t" }, frame("x"));
    const closing = t.close();
    await Promise.resolve();
    expect(conn().closed).toBe(false);
    confirm(null);
    await sent;
    await closing;
    expect(conn().closed).toBe(true);
  });
});
