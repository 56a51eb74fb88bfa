import { describe, expect, it } from "vitest";
import {
  newId,
  NuropbNotDeliveredError,
  NuropbTransportError,
  type Delivery,
  type Frame,
  type Logger,
  type Transport,
} from "@nuropb/protocol";
import { SEND_BATCH, SEND_REPLY, SEND_RPC } from "../src/scripts.ts";
import { until, useRedisServer } from "./redis-harness.ts";

// A request or response sent while the batcher is idle goes at once through a script of its own
// (SEND_RPC, SEND_REPLY) instead of the batch script: the same outcomes, checked here against
// the server, and the batch taking over for what follows in the tick.
const redis = useRedisServer();

const encoder = new TextEncoder();
const frame = (label: string): Frame => ({
  headers: { nuropb_type: "request" },
  body: encoder.encode(label),
  correlationId: label,
});

/** A logger that keeps the debug messages. */
function debugLog(): { logger: Logger; messages: string[] } {
  const messages: string[] = [];
  const logger: Logger = {
    debug: (msg) => void messages.push(msg),
    info: () => undefined,
    warn: () => undefined,
    error: () => undefined,
    child: () => logger,
  };
  return { logger, messages };
}

/**
 * The scripts Redis ran for `mesh` while `body` ran, by name, in order, and the commands sent
 * outside scripts that name the mesh (`commands`).
 */
async function scriptsRun(
  mesh: string,
  body: () => Promise<void>,
  commands: string[] = [],
): Promise<string[]> {
  const names = new Map([
    [SEND_RPC.sha, "send-rpc"],
    [SEND_REPLY.sha, "send-reply"],
    [SEND_BATCH.sha, "send-batch"],
  ]);
  const monitor = await redis.raw.monitor();
  const run: string[] = [];
  let ended = false;
  const marker = `${mesh}:marker`;
  monitor.on("monitor", (_time: string, args: string[], source: string) => {
    const [name, sha, , first] = args;
    const command = String(name).toLowerCase();
    if (source !== "lua" && args.some((a) => String(a).startsWith(`${mesh}:`))) {
      commands.push(command);
    }
    if (command === "set" && sha === marker) ended = true;
    const script = names.get(String(sha));
    if (command === "evalsha" && script !== undefined && String(first).startsWith(mesh)) {
      run.push(script);
    }
  });
  try {
    await body();
    // MONITOR lines trail the commands: a command sent after them marks the end.
    await redis.raw.set(marker, "1");
    await until(() => ended, "the monitor to see the marker");
    return run;
  } finally {
    monitor.disconnect();
  }
}

/** A service that records the correlation ids it gets and acknowledges them. */
async function recordingService(t: Transport, service: string, rpcBindings: string[] = []) {
  const got: string[] = [];
  const listener = await t.consumeService(
    { service, rpcBindings, eventBindings: [], prefetch: 100 },
    async (d: Delivery) => {
      got.push(d.correlationId);
      await d.ack();
    },
  );
  return { got, listener };
}

describe("a lone frame sent at once", () => {
  it("a request to a name no service is bound to rejects NuropbNotDeliveredError, through its own script", async () => {
    const mesh = `ls${newId().slice(0, 10)}`;
    const t = await redis.open(mesh);
    let outcome: unknown;
    const run = await scriptsRun(mesh, async () => {
      outcome = await t.send({ kind: "rpc", service: "nobody" }, frame("q")).catch((e) => e);
    });
    expect(outcome).toBeInstanceOf(NuropbNotDeliveredError);
    expect(run).toEqual(["send-rpc"]);
    expect(await redis.raw.exists(`${mesh}:sq:nobody`)).toBe(0);
  });

  it("a request reaches every service bound to its name", async () => {
    const mesh = `ls${newId().slice(0, 10)}`;
    const t = await redis.open(mesh);
    const a = await recordingService(t, "a", ["both"]);
    const b = await recordingService(t, "b", ["both"]);
    const run = await scriptsRun(mesh, () => t.send({ kind: "rpc", service: "both" }, frame("q")));
    expect(run).toEqual(["send-rpc"]);
    await until(() => a.got.length === 1 && b.got.length === 1, "both deliveries");
    expect([a.got, b.got]).toEqual([["q"], ["q"]]);
  });

  it("a request to a transient service whose listener stopped rejects NuropbNotDeliveredError", async () => {
    const mesh = `ls${newId().slice(0, 10)}`;
    const t = await redis.open(mesh);
    const listener = await t.consumeService(
      { service: "temp", rpcBindings: [], eventBindings: [], prefetch: 10, transient: true },
      (d) => d.ack(),
    );
    await t.send({ kind: "rpc", service: "temp" }, frame("while-there"));
    await listener.stop();
    await expect(t.send({ kind: "rpc", service: "temp" }, frame("gone"))).rejects.toBeInstanceOf(
      NuropbNotDeliveredError,
    );
  });

  it("a request the server refuses rejects NuropbTransportError with the server's word", async () => {
    const mesh = `ls${newId().slice(0, 10)}`;
    const t = await redis.open(mesh);
    await redis.raw.set(`${mesh}:rpc:broken`, "not a set");
    const err: unknown = await t
      .send({ kind: "rpc", service: "broken" }, frame("q"))
      .catch((e) => e);
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect(String((err as Error).message)).toMatch(/WRONGTYPE/);
  });

  it("a response to an address nobody holds is dropped; one to a held address is pushed and expires", async () => {
    const mesh = `ls${newId().slice(0, 10)}`;
    const t = await redis.open(mesh, { responseTtlMs: 30_000 });
    const run = await scriptsRun(mesh, () =>
      t.send({ kind: "reply", address: "ghost" }, frame("r1")),
    );
    expect(run).toEqual(["send-reply"]);
    expect(await redis.raw.exists(`${mesh}:rq:ghost`)).toBe(0);
    // The lease of a consumer that is not popping right now (another process, say).
    await redis.raw.set(`${mesh}:rql:held`, "someone", "PX", 10_000);
    await t.send({ kind: "reply", address: "held" }, frame("r2"));
    expect(await redis.raw.llen(`${mesh}:rq:held`)).toBe(1);
    const ttl = await redis.raw.pttl(`${mesh}:rq:held`);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(30_000);
  });

  it("a response reaches the consumer of its address", async () => {
    const mesh = `ls${newId().slice(0, 10)}`;
    const t = await redis.open(mesh);
    const got: string[] = [];
    await t.consumeResponses({ address: "me" }, (f) => void got.push(f.correlationId));
    await t.send({ kind: "reply", address: "me" }, frame("answer"));
    await until(() => got.length === 1, "the response");
    expect(got).toEqual(["answer"]);
  });

  it("what follows a lone frame in its tick goes in one batch, in order", async () => {
    const mesh = `ls${newId().slice(0, 10)}`;
    const t = await redis.open(mesh);
    const { got } = await recordingService(t, "orders");
    const run = await scriptsRun(mesh, async () => {
      await Promise.all(
        ["one", "two", "three"].map((l) => t.send({ kind: "rpc", service: "orders" }, frame(l))),
      );
    });
    expect(run).toEqual(["send-rpc", "send-batch"]);
    await until(() => got.length === 3, "the three requests");
    expect(got).toEqual(["one", "two", "three"]);
  });

  it("a lone response carries the acknowledgement of the request it answers, in its script", async () => {
    const mesh = `ls${newId().slice(0, 10)}`;
    const t = await redis.open(mesh);
    // The caller on a transport of its own (its batcher's calls are its own).
    const caller = await redis.open(mesh);
    const got: string[] = [];
    await caller.consumeResponses({ address: "me" }, (f) => void got.push(f.correlationId));
    await t.consumeService(
      { service: "svc", rpcBindings: [], eventBindings: [], prefetch: 10 },
      async (d: Delivery) => {
        await d.ack();
        await t.send({ kind: "reply", address: "me" }, frame(`re-${d.correlationId}`));
      },
    );
    const commands: string[] = [];
    const run = await scriptsRun(
      mesh,
      async () => {
        await caller.send({ kind: "rpc", service: "svc" }, { ...frame("q"), replyTo: "me" });
        await until(() => got.length === 1, "the response");
      },
      commands,
    );
    expect(got).toEqual(["re-q"]);
    expect(run).toEqual(["send-rpc", "send-reply"]);
    expect(commands).not.toContain("xack");
    expect(await redis.raw.xlen(`${mesh}:sq:svc`)).toBe(0);
    const pending = (await redis.raw.xpending(`${mesh}:sq:svc`, "nuropb")) as unknown[];
    expect(pending[0]).toBe(0);
  });

  it("a lone response goes even when the acknowledgement it carries fails; the failure is logged", async () => {
    const mesh = `ls${newId().slice(0, 10)}`;
    const { logger, messages } = debugLog();
    const t = await redis.open(mesh, { logger });
    const caller = await redis.open(mesh);
    const got: string[] = [];
    await caller.consumeResponses({ address: "me" }, (f) => void got.push(f.correlationId));
    await t.consumeService(
      { service: "svc", rpcBindings: [], eventBindings: [], prefetch: 10 },
      async (d: Delivery) => {
        // An operator's mistake under the listener: its stream is no stream any more.
        await redis.raw.del(`${mesh}:sq:svc`);
        await redis.raw.set(`${mesh}:sq:svc`, "not a stream");
        await d.ack();
        await t.send({ kind: "reply", address: "me" }, frame(`re-${d.correlationId}`));
      },
    );
    const run = await scriptsRun(mesh, async () => {
      await caller.send({ kind: "rpc", service: "svc" }, { ...frame("q"), replyTo: "me" });
      await until(() => got.length === 1, "the response");
    });
    expect(run).toEqual(["send-rpc", "send-reply"]);
    expect(got).toEqual(["re-q"]);
    await until(
      () => messages.some((m) => m.startsWith("acknowledgement not sent")),
      "the failed acknowledgement in the log",
    );
    await redis.raw.del(`${mesh}:sq:svc`);
  });
});
