import type { Transport, TransportEvent } from "@nuropb/protocol";
import { buildHeaders } from "@nuropb/protocol";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { COMPACT_MESH_MARKER } from "../src/dialect.ts";
import { createAmqpTransport, markMeshCompact } from "../src/index.ts";
import { FakeConnection, broker } from "./fake-amqplib.ts";
import type { FakeChannel } from "./fake-amqplib.ts";

vi.mock("amqplib", async () => (await import("./fake-amqplib.ts")).fakeAmqplib);

// Issue #19 against the fake amqplib: failover between a cluster's nodes, quorum settlement,
// a publisher channel retired after a nack, and a cancelled consumer started again in place.

const made: Transport[] = [];
function transport(extra: Parameters<typeof createAmqpTransport>[0] = {}): Transport {
  const t = createAmqpTransport({ reconnect: { initialDelayMs: 1, maxDelayMs: 5 }, ...extra });
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
const frame = (id: string) => ({
  headers: buildHeaders("command", null),
  body: new TextEncoder().encode(id),
  correlationId: id,
});
const spec = { service: "svc", rpcBindings: [], eventBindings: [], prefetch: 4 };

beforeEach(() => broker.reset());
afterEach(async () => {
  await Promise.allSettled(made.splice(0).map((t) => t.close()));
});

describe("failover", () => {
  it("connects to the next node of a comma list when one refuses, in order, on every reconnect", async () => {
    const down = new Set(["h1"]);
    broker.connect = (url) => {
      const host = (url as { hostname: string }).hostname;
      if (down.has(host)) {
        return Promise.reject(
          Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }),
        );
      }
      return Promise.resolve(new FakeConnection());
    };
    const t = transport({ url: "amqp://u:pw-secret@h1:5672,h2:5673,h3:5674/mesh" });
    await t.connect();
    expect(
      broker.connectCalls.map((c) => `${String(c.url.hostname)}:${String(c.url.port)}`),
    ).toEqual(["h1:5672", "h2:5673"]);
    const seen = events(t);
    down.add("h2");
    broker.connectCalls.length = 0;
    conn().drop();
    await vi.waitFor(() => expect(seen.map((e) => e.type)).toContain("reconnected"));
    expect(broker.connectCalls.map((c) => c.url.hostname)).toEqual(["h1", "h2", "h3"]);
  });

  it("fails retryable naming every node, without the password, when none answers", async () => {
    broker.connect = () =>
      Promise.reject(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }));
    const t = transport({
      urls: ["amqp://u:pw-secret@h1:5672/mesh", "amqp://u:pw-secret@h2:5672/mesh"],
      connectTimeoutMs: 50,
    });
    const err = await t.connect().then(
      () => undefined,
      (e: unknown) => e as Error & { retryable?: boolean },
    );
    expect(err?.message).toMatch(/no broker of the cluster could be reached/);
    expect(err?.message).toContain("h1");
    expect(err?.message).toContain("h2");
    expect(err?.message).not.toContain("pw-secret");
  });
});

describe("failover past a refusing node", () => {
  const vhostDown = (): Error =>
    new Error(
      "Expected ConnectionOpenOk; got <ConnectionClose channel:0 replyCode:530 replyText:NOT_ALLOWED - vhost mesh is down on node rabbit@h1>",
    );

  it("tries the next node when one refuses the vhost, at connect and on reconnect", async () => {
    const refusing = new Set(["h1"]);
    broker.connect = (url) =>
      refusing.has((url as { hostname: string }).hostname)
        ? Promise.reject(vhostDown())
        : Promise.resolve(new FakeConnection());
    const t = transport({ url: "amqp://u:pw-secret@h1:5672,h2:5673,h3:5674/mesh" });
    await t.connect();
    expect(broker.connectCalls.map((c) => c.url.hostname)).toEqual(["h1", "h2"]);
    const seen = events(t);
    refusing.add("h2");
    broker.connectCalls.length = 0;
    conn().drop();
    await vi.waitFor(() => expect(seen.map((e) => e.type)).toContain("reconnected"));
    expect(broker.connectCalls.map((c) => c.url.hostname)).toEqual(["h1", "h2", "h3"]);
    expect(seen.map((e) => e.type)).not.toContain("closed");
  });

  it("gives up only when every node refuses, naming each, without the password", async () => {
    broker.connect = () =>
      Promise.reject(
        new Error(
          'Handshake terminated by server: 403 (ACCESS-REFUSED) with message "ACCESS_REFUSED - Login was refused"',
        ),
      );
    const t = transport({
      url: "amqp://u:pw-secret@h1:5672,h2:5673/mesh",
      connectTimeoutMs: 5_000,
    });
    const err = await t.connect().then(
      () => undefined,
      (e: unknown) => e as Error & { retryable?: boolean },
    );
    expect(err?.message).toMatch(/refused the login of user 'u'/);
    expect(err?.message).toContain("h1");
    expect(err?.message).toContain("h2");
    expect(err?.message).not.toContain("pw-secret");
    expect(err?.retryable).toBe(false);
    expect(broker.connectCalls).toHaveLength(2); // permanent: not retried until the deadline
  });
});

describe("cluster-wide helpers", () => {
  it("markMeshCompact marks the mesh through the next node when the first is down", async () => {
    broker.connect = (url) =>
      (url as { hostname: string }).hostname === "h1"
        ? Promise.reject(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }))
        : Promise.resolve(new FakeConnection());
    await markMeshCompact({ url: "amqp://u:pw-secret@h1:5672,h2:5673/mesh" });
    expect(broker.connectCalls.map((c) => c.url.hostname)).toEqual(["h1", "h2"]);
    expect(broker.exchanges.get(COMPACT_MESH_MARKER)).toBe("fanout");
  });

  it("labels log lines with every node of the cluster, without the password", () => {
    const bindings: Record<string, unknown>[] = [];
    const logger = {
      debug: () => undefined,
      info: () => undefined,
      warn: () => undefined,
      error: () => undefined,
      child(b: Record<string, unknown>) {
        bindings.push(b);
        return logger;
      },
    };
    transport({ url: "amqp://u:pw-secret@h1:5672,h2:5673/mesh", logger });
    const target = String(bindings[0]?.target);
    expect(target).toContain("h1:5672");
    expect(target).toContain("h2:5673");
    expect(target).not.toContain("pw-secret");
  });

  it("sets the event log's policy through the management API of the node it is connected to", async () => {
    broker.connect = (url) =>
      (url as { hostname: string }).hostname === "h1"
        ? Promise.reject(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }))
        : Promise.resolve(new FakeConnection());
    const urls: string[] = [];
    vi.stubGlobal("fetch", (url: unknown) => {
      urls.push(String(url));
      return Promise.resolve(new Response(null, { status: 204 }));
    });
    try {
      const t = transport({ url: "amqp://u:pw-secret@h1:5672,h2:5673/mesh" });
      await t.connect();
      await t.eventLog?.setup({ maxAgeMs: 60_000, maxBytes: 1_000_000 }).catch(() => undefined);
      expect(urls.length).toBeGreaterThan(0);
      for (const u of urls) expect(u).toMatch(/^http:\/\/h2:15673\//);
    } finally {
      vi.unstubAllGlobals();
    }
  });
});

describe("quorum queues", () => {
  it("declares the quorum arguments and settles call-again with basic.reject(requeue)", async () => {
    const t = transport({ url: "amqp://broker/mesh" });
    await t.connect();
    await t.consumeService({ ...spec, queueType: "quorum", deliveryLimit: 3 }, (d) => d.requeue());
    const ch = conn().consumerChannel("nuropb-svc-sq");
    expect(ch.declared.find((d) => d.queue === "nuropb-svc-sq")?.options).toMatchObject({
      arguments: {
        "x-queue-type": "quorum",
        "x-delivery-limit": 3,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
      },
    });
    ch.deliver("again");
    await vi.waitFor(() => expect(ch.settled).toEqual([{ how: "reject", tag: 1, requeue: true }]));
  });

  it("keeps basic.nack(requeue) for classic queues (as Python)", async () => {
    const t = transport({ url: "amqp://broker/mesh" });
    await t.connect();
    await t.consumeService(spec, (d) => d.requeue());
    const ch = conn().consumerChannel("nuropb-svc-sq");
    ch.deliver("again");
    await vi.waitFor(() => expect(ch.settled).toEqual([{ how: "nack", tag: 1, requeue: true }]));
  });
});

describe("publisher after a nack", () => {
  it("retires the nacked channel: later sends go on a fresh one", async () => {
    const t = transport({ url: "amqp://broker/mesh" });
    await t.connect();
    broker.bound.add("svc");
    const first = conn().publisher();
    // As RabbitMQ 3.10 after a quorum queue's leader change: this channel nacks for good.
    first.publish = ((...args: unknown[]) => {
      const cb = args[4] as (err: unknown) => void;
      queueMicrotask(() => cb(new Error("message nacked")));
      return true;
    }) as FakeChannel["publish"];
    await expect(t.send({ kind: "rpc", service: "svc" }, frame("a"))).rejects.toThrow(
      /basic\.nack/,
    );
    await vi.waitFor(() => expect(conn().publisher()).not.toBe(first));
    await vi.waitFor(() =>
      t.send({ kind: "rpc", service: "svc" }, frame("b")).then(() => undefined),
    );
    expect(first.closed).toBe(true);
  });
});

describe("publisher swap after a nack", () => {
  it("has no window where sends fail, and keeps the old channel until its confirms are in", async () => {
    const t = transport({ url: "amqp://broker/mesh" });
    await t.connect();
    broker.bound.add("svc");
    broker.bound.add("healthy");
    const first = conn().publisher();
    const confirms: ((err: unknown) => void)[] = [];
    first.publish = ((...args: unknown[]) => {
      confirms.push(args[4] as (err: unknown) => void);
      return true;
    }) as FakeChannel["publish"];
    const inFlight = t.send({ kind: "rpc", service: "healthy" }, frame("pending"));
    const nacked = t.send({ kind: "rpc", service: "svc" }, frame("full"));
    await vi.waitFor(() => expect(confirms).toHaveLength(2));
    // The broker nacks the second publish (a full reject-publish queue) before acking the first.
    confirms[1]?.(new Error("message nacked"));
    const afterNack = nacked.then(
      () => "resolved",
      // Sent at once, while the replacement channel is still opening.
      (e: unknown) => ({
        error: (e as Error).message,
        next: t.send({ kind: "rpc", service: "healthy" }, frame("next")).then(
          () => "ok",
          (err: unknown) => (err as Error).message,
        ),
      }),
    );
    const outcome = await afterNack;
    expect(outcome).toMatchObject({ error: expect.stringMatching(/basic\.nack/) });
    expect(await (outcome as { next: Promise<string> }).next).toBe("ok");
    const fresh = conn()
      .channels.filter((c) => c.confirm)
      .at(-1);
    expect(fresh).not.toBe(first);
    expect(fresh?.published.map((m) => m.options.correlationId)).toEqual(["next"]);
    expect(first.closed).toBe(false); // "pending" still awaits its confirm there
    confirms[0]?.(null);
    await expect(inFlight).resolves.toBeUndefined();
    await vi.waitFor(() => expect(first.closed).toBe(true));
  });
});

describe("a consumer cancelled by the broker", () => {
  it("is started again on the same connection, retrying a passing failure", async () => {
    const t = transport({ url: "amqp://broker/mesh" });
    await t.connect();
    const got: string[] = [];
    await t.consumeService(spec, async (d) => {
      got.push(new TextDecoder().decode(d.body));
      await d.ack();
    });
    const seen = events(t);
    const c = conn();
    const original = c.createChannel.bind(c);
    let refusals = 2;
    c.createChannel = async () => {
      if (refusals-- > 0) throw new Error("channel not available yet");
      return original();
    };
    c.consumerChannel("nuropb-svc-sq").serverCancel();
    await vi.waitFor(() => expect(() => c.consumerChannel("nuropb-svc-sq")).not.toThrow(), {
      timeout: 5_000,
    });
    c.consumerChannel("nuropb-svc-sq").deliver("after");
    await vi.waitFor(() => expect(got).toEqual(["after"]));
    expect(c.closed).toBe(false);
    expect(broker.connections).toHaveLength(1);
    expect(seen.map((e) => e.type)).not.toContain("disconnected");
  });
});

describe("a cancelled consumer with a handler still running", () => {
  it("keeps its old channel open until the handler has settled, then closes it", async () => {
    const t = transport({ url: "amqp://broker/mesh" });
    await t.connect();
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const got: string[] = [];
    await t.consumeService(spec, async (d) => {
      got.push(new TextDecoder().decode(d.body));
      if (got.length === 1) await gate;
      await d.ack();
    });
    const c = conn();
    const old = c.consumerChannel("nuropb-svc-sq");
    old.deliver("slow");
    await vi.waitFor(() => expect(got).toEqual(["slow"]));
    old.serverCancel(); // as when the queue's leader moved
    await vi.waitFor(() => expect(c.consumerChannel("nuropb-svc-sq")).not.toBe(old));
    expect(old.closed).toBe(false);
    release();
    await vi.waitFor(() => expect(old.closed).toBe(true));
    expect(old.settled).toEqual([{ how: "ack", tag: 1 }]); // settled once, not redelivered
  });
});

describe("a queue whose home node is down", () => {
  const nodeDown = (): Error =>
    Object.assign(
      new Error(
        "Operation failed: QueueDeclare; 404 (NOT-FOUND) with message \"NOT_FOUND - home node 'rabbit@a' of durable queue 'nuropb-svc-sq' in vhost 'mesh' is down or inaccessible\"",
      ),
      { code: 404 },
    );

  it("is retried when the consumer is cancelled, never closing the transport", async () => {
    const t = transport({ url: "amqp://broker/mesh" });
    await t.connect();
    const got: string[] = [];
    await t.consumeService(spec, async (d) => {
      got.push(new TextDecoder().decode(d.body));
      await d.ack();
    });
    const seen = events(t);
    const c = conn();
    const original = c.createChannel.bind(c);
    let refusals = 2;
    c.createChannel = async () => {
      const ch = await original();
      if (refusals-- > 0) {
        ch.assertQueue = () => {
          ch.serverClose(404, "NOT_FOUND - home node down");
          return Promise.reject(nodeDown());
        };
      }
      return ch;
    };
    c.consumerChannel("nuropb-svc-sq").serverCancel();
    await vi.waitFor(() => expect(() => c.consumerChannel("nuropb-svc-sq")).not.toThrow(), {
      timeout: 5_000,
    });
    c.consumerChannel("nuropb-svc-sq").deliver("after");
    await vi.waitFor(() => expect(got).toEqual(["after"]));
    expect(seen.map((e) => e.type)).not.toContain("closed");
    expect(refusals).toBeLessThan(0);
  });

  it("makes consumeService fail retryable, not permanent", async () => {
    const t = transport({ url: "amqp://broker/mesh" });
    await t.connect();
    const c = conn();
    const original = c.createChannel.bind(c);
    c.createChannel = async () => {
      const ch = await original();
      ch.assertQueue = () => Promise.reject(nodeDown());
      return ch;
    };
    const err = await t
      .consumeService(spec, () => undefined)
      .then(
        () => undefined,
        (e: unknown) => e as Error & { retryable?: boolean; details?: { permanent?: boolean } },
      );
    expect(err?.message).toMatch(/down or inaccessible/);
    expect(err?.retryable).toBe(true);
    expect(err?.details?.permanent).toBe(false);
  });
});
