import { encodePayload } from "@nuropb/protocol";
import amqp, { type ChannelModel, type ConsumeMessage } from "amqplib";
import { afterEach, describe, expect, it, vi } from "vitest";
import { run } from "../src/index.ts";
import { capture } from "./helpers.ts";

// `listen` over a fake amqplib connection; nothing here reaches a network.

const URL = "amqp://guest:hunter22@rabbit.invalid:5672/nuropb";

function eventMessage(i: number): ConsumeMessage {
  const frame = encodePayload({
    tag: "event",
    topic: "orders.created",
    event: { i },
    context: {},
    trace_id: null,
    correlation_id: `c${i}`,
    target: null,
  });
  return {
    content: Buffer.from(frame.body),
    properties: { headers: frame.headers, correlationId: frame.correlationId },
    fields: {},
  } as unknown as ConsumeMessage;
}

/** A connection whose consumer gets `burst` events in one go (as from one socket read). */
function fakeConnection(burst: number) {
  const calls: string[] = [];
  let deliver: ((msg: ConsumeMessage | null) => void) | undefined;
  const channel = {
    on: () => channel,
    assertQueue: () => Promise.resolve({}),
    bindQueue: () => Promise.resolve({}),
    consume: (_queue: string, onMessage: (msg: ConsumeMessage | null) => void) => {
      deliver = onMessage;
      queueMicrotask(() => {
        for (let i = 0; i < burst; i++) onMessage(eventMessage(i));
      });
      return Promise.resolve({ consumerTag: "ctag" });
    },
    cancel: (tag: string) => {
      calls.push(`cancel ${tag}`);
      return Promise.resolve({});
    },
  };
  const conn = {
    on: () => conn,
    createChannel: () => Promise.resolve(channel),
    close: async () => {
      calls.push("close");
      // Messages still in the socket arrive while the connection closes.
      for (let i = 0; i < burst; i++) deliver?.(eventMessage(100 + i));
      await Promise.resolve();
    },
  };
  return { conn: conn as unknown as ChannelModel, calls };
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe("listen", () => {
  it("prints exactly --count events when more arrive at once, and cancels before closing", async () => {
    const { conn, calls } = fakeConnection(5);
    vi.spyOn(amqp, "connect").mockResolvedValue(conn);
    const c = capture();
    const code = await run(["listen", "orders.#", "--count", "1", "--json", "--url", URL], c.io);
    expect(code).toBe(0);
    const lines = c.stdout().trim().split("\n");
    expect(lines).toHaveLength(1);
    expect((JSON.parse(lines[0] ?? "") as { event: unknown }).event).toEqual({ i: 0 });
    expect(calls).toEqual(["cancel ctag", "close"]);
  });

  it("prints nothing more once interrupted", async () => {
    const { conn } = fakeConnection(3);
    vi.spyOn(amqp, "connect").mockResolvedValue(conn);
    const controller = new AbortController();
    const c = capture({ signal: controller.signal });
    const pending = run(["listen", "orders.#", "--json", "--url", URL], c.io);
    await vi.waitFor(() => expect(c.stdout().trim().split("\n")).toHaveLength(3));
    controller.abort();
    expect(await pending).toBe(0);
    expect(c.stdout().trim().split("\n")).toHaveLength(3);
  });
});
