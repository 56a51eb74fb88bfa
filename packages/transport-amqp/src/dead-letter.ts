import { NuropbTransportError, newId } from "@nuropb/protocol";
import type { ConsumeMessage, Options } from "amqplib";
import type { OutgoingMessage } from "./frame-codec.ts";
import type { PublisherHost } from "./publisher.ts";

/** The header with a dead letter's id, stamped as the transport dead-letters a message. */
export const DEAD_LETTER_ID_HEADER = "nuropb_dead_letter_id";

/**
 * Publishes a copy of `msg` with `headers` added to the dead-letter exchange (`dlExchange`,
 * routing key the queue it came from, as the broker's own dead-lettering does) and resolves on
 * the broker's confirm: `Delivery.deadLetter` (the failure record of core's failure pipeline).
 * The copy keeps the message's properties but its expiration (the broker drops that when it
 * dead-letters too) and `user_id` (the broker refuses one that is not this connection's user).
 * The copy gets a fresh {@link DEAD_LETTER_ID_HEADER}: its id in the dead letters, stable and
 * unique (a queue has no ids of its own), which `createAmqpDeadLetterStore` lists and removes by.
 * @throws NuropbTransportError when the broker cannot take it now (the caller then rejects the
 * original instead, so the message is never lost).
 */
export async function publishDeadLetterCopy(
  host: PublisherHost,
  dlExchange: string,
  msg: ConsumeMessage,
  headers: Readonly<Record<string, string>>,
): Promise<void> {
  const session = host.current();
  const publisher = session?.publisher;
  if (session === undefined || publisher === undefined || publisher.handle.closed) {
    throw new NuropbTransportError("cannot dead-letter with headers: no publisher channel now", {
      retryable: true,
    });
  }
  if (session.blocked !== undefined) {
    throw new NuropbTransportError(
      "cannot dead-letter with headers: the broker blocked publishing",
      {
        retryable: true,
      },
    );
  }
  const p = msg.properties;
  const properties: Options.Publish = {
    headers: { ...(p.headers ?? {}), ...headers, [DEAD_LETTER_ID_HEADER]: newId() },
    persistent: true,
  };
  if (p.contentType !== undefined) properties.contentType = p.contentType as string;
  if (p.contentEncoding !== undefined) properties.contentEncoding = p.contentEncoding as string;
  if (p.correlationId !== undefined) properties.correlationId = p.correlationId as string;
  if (p.replyTo !== undefined) properties.replyTo = p.replyTo as string;
  if (p.messageId !== undefined) properties.messageId = p.messageId as string;
  if (p.timestamp !== undefined) properties.timestamp = p.timestamp as number;
  if (p.type !== undefined) properties.type = p.type as string;
  if (p.appId !== undefined) properties.appId = p.appId as string;
  if (p.priority !== undefined) properties.priority = p.priority as number;
  const out: OutgoingMessage = {
    exchange: dlExchange,
    routingKey: msg.fields.routingKey,
    mandatory: false,
    content: msg.content,
    properties,
  };
  await publisher.publish(out, { kind: "event", topic: dlExchange });
}
