import amqp from "amqplib";
import type { ChannelModel, ConsumeMessage } from "amqplib";
import { runTag } from "../rr.ts";
import { PendingCalls } from "./pending.ts";

/** What the raw amqplib echo does, for the suite's notes. */
export const RAW_AMQP_SETTINGS =
  "amqplib: noDelay, confirm channels both ways, direct exchange + mandatory + expiration 30 s (as nuropb publishes), server prefetch 64 with acks, exclusive reply queue per client (no-ack consumer), correlation ids";

/** A raw amqplib echo server and one client, on their own connections. */
export interface RawAmqpEcho {
  call(params: unknown): Promise<unknown>;
  close(): Promise<void>;
}

/**
 * The hand-written baseline: the server consumes its queue with prefetch 64, JSON.parse +
 * JSON.stringify each body, acks, and publishes the reply (confirmed) to `replyTo` with the
 * correlation id; the client publishes on a confirm channel and matches replies on its exclusive
 * reply queue.
 * @param url `amqp://user:pass@host:port/vhost` (the vhost must exist)
 */
export async function startRawAmqpEcho(url: string): Promise<RawAmqpEcho> {
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
    await sch.assertQueue(queue, { durable: false, autoDelete: true });
    await sch.bindQueue(queue, exchange, queue);
    await sch.prefetch(64);
    await sch.consume(
      queue,
      (msg: ConsumeMessage | null) => {
        if (msg === null) return;
        const out = JSON.stringify(JSON.parse(msg.content.toString("utf8")));
        sch.ack(msg);
        sch.publish(
          "",
          String(msg.properties.replyTo),
          Buffer.from(out),
          { correlationId: String(msg.properties.correlationId), contentType: "application/json" },
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
        pending.resolve(
          String(msg.properties.correlationId),
          JSON.parse(msg.content.toString("utf8")),
        );
      },
      { noAck: true },
    );
    cch.on("return", (msg: ConsumeMessage) => {
      pending.reject(String(msg.properties.correlationId), new Error("request returned"));
    });
    return {
      call(params) {
        const { id, promise } = pending.open();
        cch.publish(
          exchange,
          queue,
          Buffer.from(JSON.stringify(params)),
          {
            correlationId: id,
            replyTo: replyQueue,
            mandatory: true,
            expiration: "30000",
            contentType: "application/json",
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
