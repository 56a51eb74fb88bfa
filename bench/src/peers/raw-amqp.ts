import amqp from "amqplib";
import type { ChannelModel, ConsumeMessage } from "amqplib";
import { runTag } from "../rr.ts";
import { PendingCalls } from "./pending.ts";

/** What the raw amqplib echo does, for the suite's notes. */
export const RAW_AMQP_SETTINGS =
  "amqplib: noDelay, confirm channels both ways, direct exchange + mandatory + expiration 30 s (as nuropb publishes), server prefetch 64 with acks, exclusive reply queue per client (no-ack consumer), correlation ids";

/** What the `nuropbWire` variant adds, for the suite's notes. */
export const RAW_AMQP_NUROPB_WIRE =
  "the same raw amqplib code carrying nuropb's wire: the 5 nuropb headers, the full request/response JSON envelopes (service, method, correlation and trace ids, context…), a durable service queue with a dead-letter exchange";

// What nuropb puts on every message (PROTOCOL.md), copied so the raw client pays the same bytes.
const NUROPB_HEADERS = {
  nuropb_protocol: "0.1.1",
  nuropb_version: "0.1.0",
  trace_id: "63b34a62e6cd4aa0b3457f99012e1366",
  encrypted: "",
};

/** A raw amqplib echo server and one client, on their own connections. */
export interface RawAmqpEcho {
  call(params: unknown): Promise<unknown>;
  close(): Promise<void>;
}

/**
 * The hand-written baseline: the server consumes its queue with prefetch 64, JSON.parse +
 * JSON.stringify each body, acks, and publishes the reply (confirmed) to `replyTo` with the
 * correlation id; the client publishes on a confirm channel and matches replies on its exclusive
 * reply queue. With `nuropbWire`, messages carry nuropb's headers and JSON envelopes and the
 * queue is durable with a dead-letter exchange, as nuropb's are: the ceiling for nuropb's wire.
 * @param url `amqp://user:pass@host:port/vhost` (the vhost must exist)
 */
export async function startRawAmqpEcho(
  url: string,
  options: { readonly nuropbWire?: boolean } = {},
): Promise<RawAmqpEcho> {
  const wire = options.nuropbWire === true;
  const tag = runTag();
  const exchange = `bench-raw-rpc-${tag}`;
  const queue = `bench-raw-echo-${tag}`;
  const conns: ChannelModel[] = [];
  const pending = new PendingCalls("raw amqplib echo");
  const close = async (): Promise<void> => {
    pending.rejectAll(new Error("raw amqplib echo closed"));
    for (const c of conns.reverse()) await c.close().catch(() => undefined);
  };
  try {
    // server
    const sconn = await amqp.connect(url, { noDelay: true });
    conns.push(sconn);
    const sch = await sconn.createConfirmChannel();
    await sch.assertExchange(exchange, "direct", { durable: false, autoDelete: true });
    await sch.assertQueue(
      queue,
      wire
        ? { durable: true, autoDelete: true, arguments: { "x-dead-letter-exchange": exchange } }
        : { durable: false, autoDelete: true },
    );
    await sch.bindQueue(queue, exchange, queue);
    await sch.prefetch(64);
    await sch.consume(
      queue,
      (msg: ConsumeMessage | null) => {
        if (msg === null) return;
        const replyTo = String(msg.properties.replyTo);
        const correlationId = String(msg.properties.correlationId);
        const request = JSON.parse(msg.content.toString("utf8")) as Record<string, unknown>;
        const out = wire
          ? JSON.stringify({
              tag: "response",
              result: request.params,
              error: null,
              correlation_id: request.correlation_id,
              trace_id: request.trace_id,
              context: request.context,
              warning: null,
              reply_to: replyTo,
            })
          : JSON.stringify(request);
        sch.ack(msg);
        sch.publish(
          "",
          replyTo,
          Buffer.from(out),
          {
            correlationId,
            contentType: "application/json",
            ...(wire ? { headers: { ...NUROPB_HEADERS, nuropb_type: "response" } } : {}),
          },
          () => undefined,
        );
      },
      { noAck: false },
    );
    // client
    const cconn = await amqp.connect(url, { noDelay: true });
    conns.push(cconn);
    const cch = await cconn.createConfirmChannel();
    const { queue: replyQueue } = await cch.assertQueue("", { exclusive: true, autoDelete: true });
    await cch.consume(
      replyQueue,
      (msg: ConsumeMessage | null) => {
        if (msg === null) return;
        const reply = JSON.parse(msg.content.toString("utf8")) as Record<string, unknown>;
        pending.resolve(String(msg.properties.correlationId), wire ? reply.result : reply);
      },
      { noAck: true },
    );
    cch.on("return", (msg: ConsumeMessage) => {
      pending.reject(String(msg.properties.correlationId), new Error("request returned"));
    });
    return {
      call(params) {
        const { id, promise } = pending.open();
        const body = wire
          ? {
              tag: "request",
              service: queue,
              method: "echo",
              params,
              correlation_id: id,
              context: {},
              trace_id: NUROPB_HEADERS.trace_id,
            }
          : params;
        cch.publish(
          exchange,
          queue,
          Buffer.from(JSON.stringify(body)),
          {
            correlationId: id,
            replyTo: replyQueue,
            mandatory: true,
            expiration: "30000",
            contentType: "application/json",
            ...(wire ? { headers: { ...NUROPB_HEADERS, nuropb_type: "request" } } : {}),
          },
          (err: unknown) => {
            if (err !== null && err !== undefined) pending.reject(id, new Error(String(err)));
          },
        );
        return promise;
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
