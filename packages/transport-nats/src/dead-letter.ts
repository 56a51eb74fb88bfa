import { headers as natsHeaders, type Msg, type MsgHdrs } from "nats";
import { NatsHeader } from "./frame-headers.ts";
import type { AckInfo } from "./names.ts";

/** Why a message went to the dead-letter stream. */
export type DeadLetterReason = "rejected" | "expired" | "undecodable";

/**
 * The dead-letter stream definitely refused the copy (a JetStream API error such as 10060, or a
 * copy too large even bare): sending it again cannot help. Any other failure (a timeout, no
 * responders while the stream's leader is elected…) may pass.
 */
export class DeadLetterRefused extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DeadLetterRefused";
  }
}

/** How much of the stored message a dead letter keeps: less when the whole would not fit. */
export const DeadLetterCopy = {
  /** Headers and body as stored. */
  whole: "whole",
  /** The headers; the body is left out. */
  headers: "headers",
  /** Only the dead-letter headers. */
  bare: "bare",
} as const;
export type DeadLetterCopy = (typeof DeadLetterCopy)[keyof typeof DeadLetterCopy];

/**
 * The headers of `msg`'s dead letter: the stored headers, then `Nuropb-Dl-Reason`,
 * `Nuropb-Dl-Subject` and `Nuropb-Dl-Sequence`.
 *
 * The stored message's own `Nats-…` headers (a publisher's `Nats-Expected-Stream`, its
 * `Nats-Msg-Id`…) are kept as `Nuropb-Dl-Nats-…`: sent as they are, the server would act on
 * them again, and `Nats-Expected-Stream` naming the service's stream makes the dead-letter stream
 * refuse the copy (error 10060) every time.
 */
export function deadLetterHeaders(
  msg: Msg,
  info: AckInfo,
  reason: DeadLetterReason,
  copy: DeadLetterCopy = DeadLetterCopy.whole,
): MsgHdrs {
  const h = natsHeaders();
  if (msg.headers !== undefined && copy !== DeadLetterCopy.bare) {
    for (const [key, values] of msg.headers) {
      const name = /^nats-/i.test(key) ? `${NatsHeader.deadLetterKept}${key}` : key;
      for (const v of values) h.append(name, v);
    }
  }
  h.set(NatsHeader.deadLetterReason, reason);
  h.set(NatsHeader.deadLetterSubject, msg.subject);
  h.set(NatsHeader.deadLetterSequence, `${info.stream}:${String(info.streamSequence)}`);
  if (copy !== DeadLetterCopy.whole) {
    h.set(NatsHeader.deadLetterDropped, copy === DeadLetterCopy.bare ? "body,headers" : "body");
    h.set(NatsHeader.deadLetterBodyBytes, String(msg.data.byteLength));
  }
  return h;
}

/**
 * `Nats-Msg-Id` of a message's dead letter: its stream, the consumer that delivered it and its
 * sequence, the same at every delivery through that consumer. A copy stored again (sent again
 * after a disconnect, or by another instance of the service that got the message after a link
 * outage longer than the ack wait) is dropped by the dead-letter stream's duplicate window
 * (2 minutes by default), so a message is dead-lettered once per consumer. The consumer is part
 * of it because the one events stream is read by every service through its own consumer: each
 * service's dead letter of an event is its own.
 */
export function deadLetterMsgId(info: AckInfo): string {
  return `${info.stream}:${info.consumer}:${String(info.streamSequence)}`;
}
