import { describe, expect, it } from "vitest";
import {
  NuropbConnectionClosedError,
  NuropbMessageError,
  NuropbNotDeliveredError,
  NuropbTransportError,
  noopLogger,
} from "@nuropb/protocol";
import type { Logger, LogFields, TransportEvent } from "@nuropb/protocol";
import {
  DEFAULT_MEMORY_MAX_FRAME_BYTES,
  createMemoryHub,
  createMemoryTransport,
} from "@nuropb/transport-memory";
import {
  decode,
  encode,
  makeFrame,
  quiesce,
  recorder,
  responseRecorder,
  serviceSpec,
  useHub,
  waitFor,
} from "./support.ts";

const env = useHub();

describe("createMemoryTransport options", () => {
  it("has kind memory, default mesh and all capabilities", () => {
    const t = env.create();
    expect(t.kind).toBe("memory");
    expect(t.mesh).toBe("nuropb");
    expect(t.state).toBe("idle");
    expect(t.capabilities).toEqual({
      notDelivered: true,
      redelivery: true,
      deadLetter: true,
      messageTtl: true,
      maxFrameBytes: DEFAULT_MEMORY_MAX_FRAME_BYTES,
      slimBodies: true,
    });
    expect(DEFAULT_MEMORY_MAX_FRAME_BYTES).toBe(16 * 1024 * 1024);
  });

  it("takes mesh and maxFrameBytes", () => {
    const t = env.create({ mesh: "other", maxFrameBytes: 10 });
    expect(t.mesh).toBe("other");
    expect(t.capabilities.maxFrameBytes).toBe(10);
  });

  it.each([
    ["no options", undefined, /options object/],
    ["a foreign hub", { hub: {} }, /createMemoryHub/],
    ["an empty mesh", { mesh: "" }, /mesh/],
    ["a fractional maxFrameBytes", { maxFrameBytes: 1.5 }, /maxFrameBytes/],
    ["a zero maxFrameBytes", { maxFrameBytes: 0 }, /maxFrameBytes/],
    ["a logger without methods", { logger: {} }, /logger/],
    [
      "a logger with child and error only (no debug, info, warn)",
      { logger: { child: () => ({}), error: () => {} } },
      /logger/,
    ],
  ])("throws TypeError for %s", (_label, extra, message) => {
    const hub = createMemoryHub();
    const options =
      extra === undefined ? undefined : { hub, ...(extra as Record<string, unknown>) };
    expect(() => createMemoryTransport(options as never)).toThrow(TypeError);
    expect(() => createMemoryTransport(options as never)).toThrow(message);
  });

  it("does no work when constructed: no queue exists before consuming", () => {
    env.create();
    expect(env.hub().queueNames()).toEqual([]);
  });

  it("logs lifecycle through a child of the given logger", async () => {
    const lines: [string, string, LogFields | undefined][] = [];
    const make = (bindings: LogFields): Logger => ({
      debug: (m, f) => lines.push(["debug", m, { ...bindings, ...f }]),
      info: (m, f) => lines.push(["info", m, { ...bindings, ...f }]),
      warn: (m, f) => lines.push(["warn", m, { ...bindings, ...f }]),
      error: (m, f) => lines.push(["error", m, { ...bindings, ...f }]),
      child: (b) => make({ ...bindings, ...b }),
    });
    const t = await env.open({ logger: make({}) });
    await t.close();
    expect(lines.filter(([level]) => level === "info").map(([, msg]) => msg)).toEqual([
      "connected",
      "closed",
    ]);
    expect(lines[0]?.[2]).toMatchObject({ component: "transport-memory", mesh: "nuropb" });
  });
});

describe("lifecycle", () => {
  it("goes idle → connecting → open → closed; connect and close are idempotent", async () => {
    const t = env.create();
    const first = t.connect();
    expect(t.state).toBe("connecting");
    const second = t.connect();
    await Promise.all([first, second]);
    expect(t.state).toBe("open");
    await t.connect();
    await Promise.all([t.close(), t.close()]);
    expect(t.state).toBe("closed");
    await t.close();
    await expect(t.closed()).resolves.toBeUndefined();
  });

  it("close during connect rejects the connect with NuropbConnectionClosedError", async () => {
    const t = env.create();
    const connecting = t.connect();
    await t.close();
    await expect(connecting).rejects.toBeInstanceOf(NuropbConnectionClosedError);
    expect(t.state).toBe("closed");
  });

  it("close before connect closes for good", async () => {
    const t = env.create();
    await t.close();
    expect(t.state).toBe("closed");
    await expect(t.connect()).rejects.toBeInstanceOf(NuropbConnectionClosedError);
  });

  it("rejects every operation after close with NuropbConnectionClosedError", async () => {
    const t = await env.open();
    await t.close();
    const ops = [
      t.connect(),
      t.send({ kind: "rpc", service: "s" }, makeFrame("a")),
      t.send({ kind: "event", topic: "x" }, makeFrame("a")),
      t.send({ kind: "reply", address: "r" }, makeFrame("a")),
      t.consumeService(serviceSpec("s"), () => {}),
      t.consumeResponses({ address: "r" }, () => {}),
    ];
    for (const op of ops) await expect(op).rejects.toBeInstanceOf(NuropbConnectionClosedError);
  });

  it("rejects operations before connect with NuropbTransportError", async () => {
    const t = env.create();
    await expect(t.send({ kind: "event", topic: "x" }, makeFrame("a"))).rejects.toThrow(
      /connect\(\)/,
    );
    await expect(t.consumeService(serviceSpec("s"), () => {})).rejects.toBeInstanceOf(
      NuropbTransportError,
    );
  });

  it("operations issued while connecting wait for the connection", async () => {
    const t = env.create();
    void t.connect();
    const rec = recorder();
    await t.consumeService(serviceSpec("s"), rec.handler);
    await t.send({ kind: "rpc", service: "s" }, makeFrame("a"));
    await waitFor(() => rec.items.length === 1);
  });

  it("an aborted signal rejects connect with NuropbTransportError", async () => {
    const t = env.create();
    const controller = new AbortController();
    controller.abort(new Error("stop"));
    await expect(t.connect({ signal: controller.signal })).rejects.toBeInstanceOf(
      NuropbTransportError,
    );
    expect(t.state).toBe("idle");
    const late = new AbortController();
    const pending = t.connect({ signal: late.signal });
    late.abort();
    await expect(pending).rejects.toThrow(/aborted/);
    expect(t.state).toBe("idle"); // the attempt itself was aborted, as on a broker
    await t.connect();
    expect(t.state).toBe("open");
  });

  it("Symbol.asyncDispose closes", async () => {
    const hub = createMemoryHub();
    let seen: ReturnType<typeof createMemoryTransport> | undefined;
    {
      await using t = createMemoryTransport({ hub });
      seen = t;
      await t.connect();
    }
    expect(seen.state).toBe("closed");
  });

  it("events() streams end at close, after a closed event; late streams end at once", async () => {
    const t = await env.open();
    const seen: TransportEvent[] = [];
    const reading = (async () => {
      for await (const e of t.events()) seen.push(e);
    })();
    await t.close();
    await reading;
    expect(seen).toEqual([{ type: "closed" }]);
    const late: TransportEvent[] = [];
    for await (const e of t.events()) late.push(e);
    expect(late).toEqual([]);
  });
});

describe("send", () => {
  it("rejects an rpc for a service no queue is bound for with NuropbNotDeliveredError", async () => {
    const t = await env.open();
    await expect(t.send({ kind: "rpc", service: "nobody" }, makeFrame("a"))).rejects.toBeInstanceOf(
      NuropbNotDeliveredError,
    );
  });

  it("queues an rpc for a bound queue without consumers (durable queue)", async () => {
    const t = await env.open();
    const listener = await t.consumeService(serviceSpec("svc"), () => {});
    await listener.stop();
    await t.send({ kind: "rpc", service: "svc" }, makeFrame("a"));
    expect(env.hub().queueDepth("nuropb-svc-sq")).toBe(1);
    const rec = recorder();
    await t.consumeService(serviceSpec("svc"), rec.handler);
    await waitFor(() => rec.items.length === 1);
    expect(env.hub().queueDepth("nuropb-svc-sq")).toBe(0);
  });

  it("drops events nobody is bound for and replies to unknown addresses", async () => {
    const t = await env.open();
    await t.send({ kind: "event", topic: "nobody.cares" }, makeFrame("a"));
    await t.send({ kind: "reply", address: "nowhere" }, makeFrame("b"));
    expect(env.hub().queueNames()).toEqual([]);
    expect(env.hub().deadLetters()).toEqual([]);
  });

  it("rejects a body over maxFrameBytes with NuropbMessageError and accepts one at the limit", async () => {
    const t = await env.open({ maxFrameBytes: 8 });
    const rec = recorder();
    await t.consumeService(serviceSpec("svc"), rec.handler);
    const over = { ...makeFrame("x"), body: new Uint8Array(9) };
    await expect(t.send({ kind: "rpc", service: "svc" }, over)).rejects.toBeInstanceOf(
      NuropbMessageError,
    );
    await t.send({ kind: "rpc", service: "svc" }, { ...makeFrame("x"), body: new Uint8Array(8) });
    await waitFor(() => rec.items.length === 1);
    expect(rec.items[0]?.body.byteLength).toBe(8);
  });

  it.each([
    ["an unknown kind", { kind: "queue" }, makeFrame("a")],
    ["an empty service", { kind: "rpc", service: "" }, makeFrame("a")],
    ["an empty topic", { kind: "event", topic: "" }, makeFrame("a")],
    ["an empty address", { kind: "reply", address: "" }, makeFrame("a")],
    ["a string body", { kind: "event", topic: "t" }, { ...makeFrame("a"), body: "a" }],
    ["a numeric header", { kind: "event", topic: "t" }, { ...makeFrame("a"), headers: { a: 1 } }],
    [
      "a missing correlation id",
      { kind: "event", topic: "t" },
      { ...makeFrame("a"), correlationId: 3 },
    ],
  ])("rejects %s with TypeError", async (_label, to, frame) => {
    const t = await env.open();
    await expect(t.send(to as never, frame as never)).rejects.toBeInstanceOf(TypeError);
  });

  it.each([
    ["negative", -1, /non-negative integer/],
    ["fractional", 1.5, /non-negative integer/],
    ["beyond what RabbitMQ accepts", 4_294_967_296, /at most 4294967295 ms/],
  ])(
    "rejects a %s ttl with NuropbMessageError, as the AMQP transport does",
    async (_l, ttl, msg) => {
      const t = await env.open();
      const sent = t.send({ kind: "event", topic: "t" }, makeFrame("a", { ttlMs: ttl }));
      await expect(sent).rejects.toBeInstanceOf(NuropbMessageError);
      await expect(sent).rejects.toThrow(msg);
    },
  );

  it("delivers asynchronously, never inside the send call", async () => {
    const t = await env.open();
    let delivered = false;
    await t.consumeService(serviceSpec("svc"), async (d) => {
      delivered = true;
      await d.ack();
    });
    const sending = t.send({ kind: "rpc", service: "svc" }, makeFrame("a"));
    expect(delivered).toBe(false);
    await sending;
    await waitFor(() => delivered);
  });

  it("copies frames: sender and receivers never share bytes or headers", async () => {
    const t = await env.open();
    const seen: string[] = [];
    await t.consumeService(serviceSpec("svc"), async (d) => {
      seen.push(`${decode(d.body)}:${String(d.headers.h)}`);
      d.body.fill(0x7a);
      await (d.redelivered ? d.ack() : d.requeue());
    });
    const body = encode("original");
    const headers: Record<string, string | null> = { h: "v" };
    const sending = t.send({ kind: "rpc", service: "svc" }, { headers, body, correlationId: "c" });
    body.fill(0x41);
    headers.h = "changed";
    await sending;
    await waitFor(() => seen.length === 2);
    expect(seen).toEqual(["original:v", "original:v"]);
  });

  it("preserves headers byte-exactly, including null and __proto__ keys", async () => {
    const t = await env.open();
    const rec = recorder();
    await t.consumeService(serviceSpec("svc"), rec.handler);
    const headers = JSON.parse(
      '{"nuropb_type":"request","trace_id":null,"encrypted":"","x":"ünï ✓ 🚀","__proto__":"p"}',
    ) as Record<string, string | null>;
    await t.send(
      { kind: "rpc", service: "svc" },
      { headers, body: new Uint8Array([0, 255]), correlationId: "c1", replyTo: "r", ttlMs: 5000 },
    );
    await waitFor(() => rec.items.length === 1);
    const d = rec.items[0];
    expect(Object.entries(d?.headers ?? {})).toEqual(Object.entries(headers));
    expect(d?.correlationId).toBe("c1");
    expect(d?.replyTo).toBe("r");
    expect(d?.ttlMs).toBe(5000);
    expect(d?.redelivered).toBe(false);
    expect([...(d?.body ?? [])]).toEqual([0, 255]);
    expect(Object.isFrozen(d?.headers)).toBe(true);
  });

  it("omits replyTo and ttlMs when the frame has none", async () => {
    const t = await env.open();
    const rec = responseRecorder();
    await t.consumeResponses({ address: "me" }, rec.handler);
    await t.send({ kind: "reply", address: "me" }, makeFrame("r"));
    await waitFor(() => rec.items.length === 1);
    const frame = rec.items[0];
    expect(frame !== undefined && "replyTo" in frame).toBe(false);
    expect(frame !== undefined && "ttlMs" in frame).toBe(false);
    expect(frame?.redelivered).toBe(false);
  });
});

describe("consumeService", () => {
  it.each([
    ["an empty service", serviceSpec("")],
    ["a non-array rpcBindings", { ...serviceSpec("s"), rpcBindings: "a" }],
    ["an empty alias", serviceSpec("s", { rpcBindings: [""] })],
    ["a bad topic pattern", serviceSpec("s", { eventBindings: ["a.b*"] })],
    ["a negative prefetch", serviceSpec("s", { prefetch: -1 })],
  ])("rejects %s with TypeError", async (_label, spec) => {
    const t = await env.open();
    await expect(t.consumeService(spec as never, () => {})).rejects.toBeInstanceOf(TypeError);
  });

  it("declares nuropb-{service}-sq with its rpc aliases and event bindings", async () => {
    const t = await env.open();
    await t.consumeService(
      serviceSpec("orders", { rpcBindings: ["sales"], eventBindings: ["a.*", "b.#"] }),
      () => {},
    );
    expect(env.hub().queueNames()).toEqual(["nuropb-orders-sq"]);
    expect(env.hub().eventBindings("nuropb-orders-sq")).toEqual(["a.*", "b.#"]);
    expect(env.hub().consumerCount("nuropb-orders-sq")).toBe(1);
  });

  it("routes requests by service name and by alias", async () => {
    const t = await env.open();
    const rec = recorder();
    await t.consumeService(serviceSpec("orders", { rpcBindings: ["sales"] }), rec.handler);
    await t.send({ kind: "rpc", service: "orders" }, makeFrame("by-name"));
    await t.send({ kind: "rpc", service: "sales" }, makeFrame("by-alias"));
    await waitFor(() => rec.items.length === 2);
    expect(rec.bodies()).toEqual(["by-name", "by-alias"]);
  });

  it("keeps bindings after the consumer stops; later declarations add bindings", async () => {
    const t = await env.open();
    const l = await t.consumeService(serviceSpec("svc", { eventBindings: ["a"] }), () => {});
    await l.stop();
    await t.consumeService(serviceSpec("svc", { eventBindings: ["b"] }), () => {});
    expect(env.hub().eventBindings("nuropb-svc-sq")).toEqual(["a", "b"]);
  });

  it("fans events out to every matching queue once, with AMQP topic semantics", async () => {
    const t = await env.open();
    const star = recorder();
    const hash = recorder();
    const both = recorder();
    const middle = recorder();
    const other = recorder();
    await t.consumeService(serviceSpec("star", { eventBindings: ["orders.*"] }), star.handler);
    await t.consumeService(serviceSpec("hash", { eventBindings: ["orders.#"] }), hash.handler);
    await t.consumeService(
      serviceSpec("both", { eventBindings: ["orders.*", "orders.#", "#"] }),
      both.handler,
    );
    await t.consumeService(serviceSpec("middle", { eventBindings: ["#.eu"] }), middle.handler);
    await t.consumeService(serviceSpec("other", { eventBindings: ["invoices.*"] }), other.handler);
    for (const topic of ["orders.created", "orders.created.eu", "orders"]) {
      await t.send({ kind: "event", topic }, makeFrame(topic));
    }
    await waitFor(() => hash.items.length === 3 && both.items.length === 3);
    await quiesce();
    expect(star.bodies()).toEqual(["orders.created"]);
    expect(hash.bodies()).toEqual(["orders.created", "orders.created.eu", "orders"]);
    expect(both.bodies()).toEqual(["orders.created", "orders.created.eu", "orders"]);
    expect(middle.bodies()).toEqual(["orders.created.eu"]);
    expect(other.bodies()).toEqual([]);
  });

  it("delivers each event to one instance of a service (shared queue)", async () => {
    const a = await env.open();
    const b = await env.open();
    const ra = recorder();
    const rb = recorder();
    await a.consumeService(serviceSpec("svc", { eventBindings: ["e"] }), ra.handler);
    await b.consumeService(serviceSpec("svc", { eventBindings: ["e"] }), rb.handler);
    for (let i = 0; i < 4; i++) await a.send({ kind: "event", topic: "e" }, makeFrame(`e${i}`));
    await waitFor(() => ra.items.length + rb.items.length === 4);
    await quiesce();
    expect([...ra.bodies(), ...rb.bodies()].sort()).toEqual(["e0", "e1", "e2", "e3"]);
  });

  it("isolates meshes", async () => {
    const a = await env.open({ mesh: "one" });
    const b = await env.open({ mesh: "two" });
    await a.consumeService(serviceSpec("svc"), () => {});
    await expect(b.send({ kind: "rpc", service: "svc" }, makeFrame("x"))).rejects.toBeInstanceOf(
      NuropbNotDeliveredError,
    );
    expect(env.hub().queueNames("one")).toEqual(["nuropb-svc-sq"]);
    expect(env.hub().queueNames("two")).toEqual([]);
  });
});

describe("consumeResponses", () => {
  it("delivers replies to the right address, in order", async () => {
    const t = await env.open();
    const one = responseRecorder();
    const two = responseRecorder();
    await t.consumeResponses({ address: "one" }, one.handler);
    await t.consumeResponses({ address: "two" }, two.handler);
    await t.send({ kind: "reply", address: "one" }, makeFrame("r1"));
    await t.send({ kind: "reply", address: "one" }, makeFrame("r2"));
    await t.send({ kind: "reply", address: "two" }, makeFrame("r3"));
    await waitFor(() => one.items.length === 2 && two.items.length === 1);
    expect(one.items.map((f) => decode(f.body))).toEqual(["r1", "r2"]);
    expect(two.items.map((f) => decode(f.body))).toEqual(["r3"]);
  });

  it("refuses a second live consumer of an address, and allows one after stop", async () => {
    const a = await env.open();
    const b = await env.open();
    const first = await a.consumeResponses({ address: "addr" }, () => {});
    await expect(b.consumeResponses({ address: "addr" }, () => {})).rejects.toBeInstanceOf(
      NuropbTransportError,
    );
    await expect(a.consumeResponses({ address: "addr" }, () => {})).rejects.toThrow(
      /exclusive use/,
    );
    expect(env.hub().consumerCount("addr")).toBe(1);
    await first.stop();
    expect(env.hub().queueNames()).toEqual([]);
    await b.consumeResponses({ address: "addr" }, () => {});
  });

  it("drops replies sent after the consumer stopped (auto-delete queue)", async () => {
    const t = await env.open();
    const rec = responseRecorder();
    const listener = await t.consumeResponses({ address: "addr" }, rec.handler);
    await t.send({ kind: "reply", address: "addr" }, makeFrame("r1"));
    await waitFor(() => rec.items.length === 1);
    await listener.stop();
    await listener.stop();
    await t.send({ kind: "reply", address: "addr" }, makeFrame("r2"));
    await quiesce();
    expect(rec.items).toHaveLength(1);
  });

  it("survives a throwing response handler and logs it", async () => {
    const errors: string[] = [];
    const logger: Logger = {
      ...noopLogger,
      error: (m) => void errors.push(m),
      child: () => logger,
    };
    const t = await env.open({ logger });
    let calls = 0;
    await t.consumeResponses({ address: "addr" }, () => {
      calls++;
      throw new Error("boom");
    });
    await t.send({ kind: "reply", address: "addr" }, makeFrame("r1"));
    await t.send({ kind: "reply", address: "addr" }, makeFrame("r2"));
    await waitFor(() => calls === 2);
    expect(errors).toEqual(["response handler failed", "response handler failed"]);
  });
});
