import { NuropbTransportError, buildHeaders } from "@nuropb/protocol";
import type { Frame, Transport } from "@nuropb/protocol";
import type { Message } from "amqplib";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { COMPACT_MESH_MARKER } from "../src/dialect.ts";
import { encodeFrame, isCompact, toInboundFrame } from "../src/frame-codec.ts";
import { createAmqpTransport } from "../src/index.ts";
import { FakeConnection, broker } from "./fake-amqplib.ts";

vi.mock("amqplib", async () => (await import("./fake-amqplib.ts")).fakeAmqplib);

const URL = "amqp://guest:guest@broker:5672/mesh-a";
const enc = new TextEncoder();
const spec = { service: "svc", rpcBindings: [], eventBindings: [], prefetch: 64 };
const settings = {
  rpcExchange: "rpc",
  eventsExchange: "ev",
  maxFrameBytes: 1 << 20,
  persistentRequests: false,
};
const frame = (id: string, extra: Partial<Frame> = {}): Frame => ({
  headers: buildHeaders("request", "trace-1"),
  body: enc.encode(`{"id":"${id}"}`),
  correlationId: id,
  ...extra,
});

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
const conn = (): FakeConnection => {
  const c = broker.connections.at(-1);
  if (c === undefined) throw new Error("no connection");
  return c;
};

/** What amqplib hands a consumer for a publish of `out`. */
function received(out: ReturnType<typeof encodeFrame>): Message {
  return {
    content: out.content,
    fields: {
      deliveryTag: 1,
      redelivered: false,
      exchange: out.exchange,
      routingKey: out.routingKey,
    },
    properties: { ...out.properties },
  } as unknown as Message;
}

beforeEach(() => broker.reset());
afterEach(async () => {
  await Promise.allSettled(made.splice(0).map((t) => t.close()));
});

describe("replies without publisher confirms", () => {
  it("a reply that cannot be written rejects with a transport error (no unhandled rejection)", async () => {
    const t = transport();
    await t.connect();
    const replies = conn().channels.find((c) => !c.confirm && c.declared.length === 0);
    expect(replies).toBeDefined();
    if (replies === undefined) return;
    replies.failNextPublish = new Error("write after end");
    const err = await t
      .send(
        { kind: "reply", address: "rq" },
        frame("r", { headers: buildHeaders("response", null) }),
      )
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect((err as Error).message).toMatch(/cannot reply: write after end/);
    expect(conn().publisher().published).toEqual([]); // not retried on the confirm channel
  });
});

describe("replies skip the confirm channel", () => {
  it("a reply resolves while the broker confirms nothing, written on a channel without confirms", async () => {
    const t = transport();
    await t.connect();
    broker.bound.add("svc");
    // The broker sits on every confirm: anything sent on the confirm channel never settles.
    const confirming = conn().publisher();
    const held: unknown[] = [];
    confirming.publish = ((...args: unknown[]) => {
      held.push(args);
      return true;
    }) as typeof confirming.publish;
    const request = t.send({ kind: "rpc", service: "svc" }, frame("req", { replyTo: "rq" }));
    let requestSettled = false;
    void request.then(
      () => (requestSettled = true),
      () => (requestSettled = true),
    );
    await t.send(
      { kind: "reply", address: "rq" },
      frame("r", { headers: buildHeaders("response", null) }),
    );
    const sent = conn().sent.filter((m) => m.routingKey === "rq");
    expect(sent).toHaveLength(1);
    expect(sent[0]?.confirm).toBe(false);
    expect(held).toHaveLength(1); // only the request went to the confirm channel
    expect(requestSettled).toBe(false);
  });
});

describe("reply backpressure", () => {
  it("a reply written to a full buffer resolves only once the channel drains", async () => {
    const t = transport();
    await t.connect();
    const replies = conn().channels.find((c) => !c.confirm && c.declared.length === 0);
    if (replies === undefined) throw new Error("no reply channel");
    const write = replies.publish.bind(replies);
    replies.publish = ((...args: Parameters<typeof write>) => {
      write(...args);
      return false; // amqplib: the write buffer is full, wait for "drain"
    }) as typeof replies.publish;
    let settled = false;
    const reply = t
      .send(
        { kind: "reply", address: "rq" },
        frame("r", { headers: buildHeaders("response", null) }),
      )
      .then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(replies.published).toHaveLength(1); // written once, not held back
    expect(settled).toBe(false);
    replies.emit("drain");
    await reply;
    expect(settled).toBe(true);
  });
});

describe("compact dialect", () => {
  it("carries the five header fields in basic properties, no headers table", () => {
    const out = encodeFrame(
      { kind: "rpc", service: "svc" },
      frame("c1", {
        headers: { ...buildHeaders("request", "t-9"), encrypted: "yes" },
        replyTo: "rq",
      }),
      settings,
      "compact",
    );
    expect(out.properties).not.toHaveProperty("headers");
    expect(out.properties).toMatchObject({
      type: "request",
      messageId: "t-9",
      contentEncoding: "nuropb-encrypted",
      contentType: "application/json",
    });
    expect(out.properties.appId).toMatch(/^0\.1\.1 /);
    const back = toInboundFrame(received(out));
    expect(back.headers).toStrictEqual({ ...buildHeaders("request", "t-9"), encrypted: "yes" });
  });

  it("round-trips a null trace id and keeps other headers in a table", () => {
    const headers = { ...buildHeaders("event", null), x_extra: "1" };
    const out = encodeFrame(
      { kind: "event", topic: "a" },
      frame("e", { headers }),
      settings,
      "compact",
    );
    expect(out.properties.headers).toStrictEqual({
      x_extra: "1",
      timestamp_in_ms: expect.stringMatching(/^\d+$/),
    });
    expect(out.properties).not.toHaveProperty("messageId");
    expect(toInboundFrame(received(out)).headers).toStrictEqual(headers);
  });

  it("keeps in the table each value the properties cannot carry, and round-trips it", () => {
    const headers = {
      ...buildHeaders("request", "t-1"),
      nuropb_protocol: "0.1 beta",
      trace_id: "",
      encrypted: "maybe",
    };
    const out = encodeFrame(
      { kind: "rpc", service: "svc" },
      frame("c", { headers }),
      settings,
      "compact",
    );
    expect(out.properties.headers).toStrictEqual({
      nuropb_protocol: "0.1 beta",
      nuropb_version: (headers as Record<string, string | null>).nuropb_version,
      trace_id: "",
      encrypted: "maybe",
    });
    expect(out.properties).toMatchObject({ type: "request" });
    expect(out.properties).not.toHaveProperty("appId");
    expect(out.properties).not.toHaveProperty("messageId");
    expect(out.properties).not.toHaveProperty("contentEncoding");
    expect(toInboundFrame(received(out)).headers).toStrictEqual(headers);
  });

  it("the Python form is read as before and is not taken for compact", () => {
    const out = encodeFrame({ kind: "rpc", service: "svc" }, frame("p"), settings);
    expect(out.properties.headers).toStrictEqual(buildHeaders("request", "trace-1"));
    expect(isCompact(received(out))).toBe(false);
    expect(toInboundFrame(received(out)).headers).toStrictEqual(buildHeaders("request", "trace-1"));
  });

  it('dialect "compact" refuses a mesh not marked compact, at connect, permanently', async () => {
    const t = transport({ dialect: "compact", connectTimeoutMs: 200 });
    const err = await t.connect().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect((err as Error).message).toMatch(/not marked compact|markMeshCompact/);
  });

  it("sends requests compact on a marked mesh, and answers each request in its own form", async () => {
    broker.exchanges.set(COMPACT_MESH_MARKER, "fanout");
    broker.bound.add("svc");
    const t = transport({ dialect: "compact" });
    await t.connect();
    await t.send({ kind: "rpc", service: "svc" }, frame("q", { replyTo: "my-rq" }));
    expect(conn().sent.at(-1)?.options).toMatchObject({ type: "request" });
    expect(conn().sent.at(-1)?.options).not.toHaveProperty("headers");

    // A service of the default dialect: replies mirror the request's form.
    const s = transport();
    await s.connect();
    await s.consumeService(spec, async (d) => {
      const to = d.replyTo;
      if (to !== undefined) {
        await s.send(
          { kind: "reply", address: to },
          frame(d.correlationId, { headers: buildHeaders("response", null) }),
        );
      }
      await d.ack();
    });
    const ch = conn().consumerChannel("nuropb-svc-sq");
    const compact = encodeFrame(
      { kind: "rpc", service: "svc" },
      frame("from-compact", { replyTo: "compact-rq" }),
      settings,
      "compact",
    );
    const python = encodeFrame(
      { kind: "rpc", service: "svc" },
      frame("from-python", { replyTo: "python-rq" }),
      settings,
    );
    ch.deliver("x", { ...compact.properties });
    ch.deliver("y", { ...python.properties });
    await vi.waitFor(() => expect(conn().sent).toHaveLength(2));
    const [toCompact, toPython] = conn().sent;
    expect(toCompact?.routingKey).toBe("compact-rq");
    expect(toCompact?.options).toMatchObject({ type: "response" });
    expect(toCompact?.options).not.toHaveProperty("headers");
    expect(toPython?.routingKey).toBe("python-rq");
    expect(toPython?.options.headers).toStrictEqual(buildHeaders("response", null));
    expect(toPython?.options).not.toHaveProperty("type");
  });

  it("rejects an unknown dialect at once", () => {
    expect(() => createAmqpTransport({ url: URL, dialect: "tiny" as never })).toThrow(
      /dialect must be "python" or "compact", got "tiny"/,
    );
  });
});

describe("scheduled copies on a compact mesh", () => {
  it("keep the trace id, pair returns on their own header and keep a Python request's form", async () => {
    broker.exchanges.set(COMPACT_MESH_MARKER, "fanout");
    const t = transport({ dialect: "compact" });
    await t.connect();
    const scheduling = t.scheduling;
    if (scheduling === undefined) throw new Error("no scheduling");

    // No queue yet: the broker returns the copy, and the return is paired with its send.
    const lost = await scheduling
      .sendDelayed("svc", frame("gone", { headers: buildHeaders("command", "trace-abc") }), 0)
      .catch((e: unknown) => e);
    expect((lost as Error)?.name).toBe("NuropbNotDeliveredError");

    broker.bound.add("nuropb-svc-sq");
    await scheduling.sendDelayed(
      "svc",
      frame("cmd", { headers: buildHeaders("command", "trace-abc") }),
      0,
    );
    const copy = conn().sent.at(-1);
    expect(copy?.options.messageId).toBe("trace-abc");
    await scheduling.sendDelayed("svc", frame("n", { headers: buildHeaders("command", null) }), 0);
    expect(conn().sent.at(-1)?.options).not.toHaveProperty("messageId");

    // A Python caller's request re-sent by a delayed retry: still in headers, its reply too.
    const replies: string[] = [];
    await t.consumeService(spec, async (d) => {
      replies.push(d.correlationId);
      if (d.correlationId === "py" && replies.length === 1) {
        await scheduling.sendDelayed("svc", d, 0);
      } else if (d.replyTo !== undefined) {
        expect(d.headers).toStrictEqual(buildHeaders("request", "trace-1"));
        await t.send(
          { kind: "reply", address: d.replyTo },
          frame(d.correlationId, { headers: buildHeaders("response", null) }),
        );
      }
      await d.ack();
    });
    const ch = conn().consumerChannel("nuropb-svc-sq");
    const python = encodeFrame(
      { kind: "rpc", service: "svc" },
      frame("py", { replyTo: "python-rq" }),
      settings,
    );
    ch.deliver("x", { ...python.properties });
    await vi.waitFor(() => expect(replies).toEqual(["py"]));
    const resent = await vi.waitFor(() => {
      const s = conn().sent.find((m) => m.routingKey === "nuropb-svc-sq" && m.confirm);
      const last = conn()
        .sent.filter((m) => m.routingKey === "nuropb-svc-sq")
        .at(-1);
      expect(last?.options.correlationId).toBe("py");
      return s === undefined ? undefined : last;
    });
    expect(resent?.options.headers).toMatchObject(buildHeaders("request", "trace-1"));
    expect(resent?.options).not.toHaveProperty("type");
    ch.deliver("x", { ...resent?.options });
    await vi.waitFor(() =>
      expect(conn().sent.find((m) => m.routingKey === "python-rq")).toBeDefined(),
    );
    const reply = conn().sent.find((m) => m.routingKey === "python-rq");
    expect(reply?.options.headers).toStrictEqual(buildHeaders("response", null));
    expect(reply?.options).not.toHaveProperty("type");
  });
});
