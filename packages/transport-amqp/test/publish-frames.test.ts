import { createRequire } from "node:module";
import { PassThrough } from "node:stream";
import type { Channel, Options } from "amqplib";
import { describe, expect, it } from "vitest";
import { encode, publishFrames } from "../src/publish-frames.ts";

// amqplib's own encoders (its internals, not the mocked package entry): the reference bytes.
const require = createRequire(import.meta.url);
const defs = require("amqplib/lib/defs.js") as {
  BasicPublish: number;
  BasicProperties: number;
  encodeMethod(id: number, ch: number, fields: unknown): Buffer;
  encodeProperties(id: number, ch: number, size: number, fields: unknown): Buffer;
};
const Args = require("amqplib/lib/api_args.js") as {
  publish(exchange: string, routingKey: string, options: Options.Publish): unknown;
};
const { makeBodyFrame } = require("amqplib/lib/frame.js") as {
  makeBodyFrame(ch: number, body: Buffer): Buffer;
};

/** What amqplib's Channel.publish writes (connection.sendMessage), as one buffer. */
function amqplibBytes(
  ch: number,
  exchange: string,
  routingKey: string,
  content: Buffer,
  options: Options.Publish,
): Buffer {
  const fields = Args.publish(exchange, routingKey, options);
  const parts = [
    defs.encodeMethod(defs.BasicPublish, ch, fields),
    defs.encodeProperties(defs.BasicProperties, ch, content.length, fields),
  ];
  if (content.length > 0) parts.push(makeBodyFrame(ch, content));
  return Buffer.concat(parts);
}

const python = (type: string, trace: string | null): Record<string, string | null> => ({
  nuropb_protocol: "0.1.1",
  nuropb_version: "0.1.0",
  nuropb_type: type,
  trace_id: trace,
  encrypted: "",
});
const body = Buffer.from('{"tag":"request","service":"echo","params":{"x":"é€𝄞"}}');

const cases: [string, string, string, Buffer, Options.Publish][] = [
  [
    "a Python-wire request",
    "nuropb-rpc-exchange",
    "echo",
    body,
    {
      headers: python("request", "63b34a62e6cd4aa0b3457f99012e1366"),
      contentType: "application/json",
      correlationId: "c0ffee",
      replyTo: "nuropb-client-rq",
      expiration: "30000",
      mandatory: true,
    },
  ],
  [
    "a Python-wire response (empty reply-to, default exchange)",
    "",
    "nuropb-client-rq",
    body,
    {
      headers: python("response", "t-1"),
      contentType: "application/json",
      correlationId: "c0ffee",
      replyTo: "",
    },
  ],
  [
    "a persistent command with a null trace id and a non-ASCII header",
    "nuropb-rpc-exchange",
    "svc.é",
    body,
    {
      headers: { ...python("command", null), x_note: "naïve ✓ 𝄞" },
      contentType: "application/json",
      correlationId: "c",
      replyTo: "r",
      deliveryMode: 2,
      expiration: "5",
      mandatory: true,
    },
  ],
  [
    "the compact form (no headers: amqplib still sends an empty table)",
    "nuropb-rpc-exchange",
    "echo",
    body,
    {
      type: "request",
      appId: "0.1.1 0.1.0",
      messageId: "trace",
      contentEncoding: "nuropb-encrypted",
      contentType: "application/json",
      correlationId: "c",
      replyTo: "rq",
      expiration: "30000",
      mandatory: true,
    },
  ],
  ["an empty body and no properties", "x", "k", Buffer.alloc(0), {}],
  [
    "a long header value",
    "x",
    "k",
    Buffer.alloc(3000, 7),
    { headers: { long: "v".repeat(19_000) }, mandatory: false },
  ],
];

describe("publish frames", () => {
  it.each(cases)("encodes %s byte for byte as amqplib", (_, exchange, key, content, options) => {
    for (const ch of [1, 300]) {
      // Twice: the second time from the encoded header entries kept.
      for (let i = 0; i < 2; i++) {
        expect(encode(ch, exchange, key, content, options)).toEqual(
          amqplibBytes(ch, exchange, key, content, options),
        );
      }
    }
  });

  it("declines what it does not cover, so that amqplib publishes it", () => {
    const some = { contentType: "application/json" };
    expect(encode(1, "x", "k", body, { ...some, persistent: true })).toBeUndefined();
    expect(encode(1, "x", "k", body, { ...some, timestamp: 5 })).toBeUndefined();
    expect(encode(1, "x", "k", body, { headers: { n: 5 } })).toBeUndefined();
    expect(encode(1, "x", "k", body, { headers: { b: Buffer.from("x") } })).toBeUndefined();
    expect(encode(1, "x", "k", body, { deliveryMode: true })).toBeUndefined();
    expect(encode(1, "x", "k", body, { correlationId: "é".repeat(200) })).toBeUndefined();
    expect(encode(1, "x".repeat(256), "k", body, {})).toBeUndefined();
    expect(encode(1, "x", "k", body, { headers: { long: "v".repeat(21_000) } })).toBeUndefined();
  });

  /** A channel shaped as amqplib's, with its slot in the connection. */
  function channel(frameMax = 131_072): {
    ch: Channel;
    out: Buffer[];
    confirms: unknown[];
  } {
    const out: Buffer[] = [];
    const confirms: unknown[] = [];
    const buffer = new PassThrough({ objectMode: true });
    buffer.on("data", (b: Buffer) => out.push(b));
    const ch = {
      ch: 3,
      connection: { frameMax, channels: [] as unknown[], sentSinceLastCheck: false },
      pushConfirmCallback: (cb: unknown) => void confirms.push(cb),
    };
    ch.connection.channels[3] = { channel: ch, buffer };
    return { ch: ch as unknown as Channel, out, confirms };
  }

  it("writes the frames into the channel's buffer, registering the confirm first", async () => {
    const { ch, out, confirms } = channel();
    const [, exchange, key, content, options] = cases[0] as (typeof cases)[number];
    const cb = (): void => undefined;
    expect(publishFrames(ch, exchange, key, content, options, cb)).toBe(true);
    await new Promise((r) => setImmediate(r));
    expect(confirms).toEqual([cb]);
    expect(Buffer.concat(out)).toEqual(amqplibBytes(3, exchange, key, content, options));
    expect(
      (ch as unknown as { connection: { sentSinceLastCheck: boolean } }).connection,
    ).toMatchObject({ sentSinceLastCheck: true });
  });

  it("leaves to amqplib a closing channel or connection, a body over one frame, or a channel it does not know", () => {
    const cb = (): void => undefined;
    const closing = channel();
    (closing.ch as unknown as { sendMessage: () => never }).sendMessage = () => {
      throw new Error("Channel closing");
    };
    expect(publishFrames(closing.ch, "x", "k", body, {}, cb)).toBeUndefined();
    const small = channel(4096);
    expect(publishFrames(small.ch, "x", "k", Buffer.alloc(4089), {}, cb)).toBeUndefined();
    expect(publishFrames({} as Channel, "x", "k", body, {}, cb)).toBeUndefined();
    const released = channel();
    (released.ch as unknown as { connection: { channels: unknown[] } }).connection.channels[3] =
      null;
    expect(publishFrames(released.ch, "x", "k", body, {}, cb)).toBeUndefined();
    // A closing connection: amqplib (invalidateSend) puts throwing sends on the connection.
    const connClosing = channel();
    (
      connClosing.ch as unknown as { connection: { sendMessage: () => never } }
    ).connection.sendMessage = () => {
      throw new Error("Connection closing");
    };
    expect(publishFrames(connClosing.ch, "x", "k", body, {}, cb)).toBeUndefined();
    expect([
      ...closing.confirms,
      ...small.confirms,
      ...released.confirms,
      ...connClosing.confirms,
    ]).toEqual([]);
    expect(connClosing.out).toEqual([]);
  });
});
