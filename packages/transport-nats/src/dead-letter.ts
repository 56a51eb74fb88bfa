import { Empty, ErrorCode, headers as natsHeaders, type MsgHdrs } from "nats";
import type { Logger } from "@nuropb/protocol";
import { NatsHeader, decodeFrameHeaders, encodeFrameHeaders } from "./frame-headers.ts";
import type { AckInfo } from "./names.ts";
import { apiErrorCode, natsCode } from "./nats-errors.ts";

/** Dead-letter publishes refused, with the link up, before a message is terminated without one. */
export const DEAD_LETTER_ATTEMPTS = 3;
/** First wait between dead-letter publishes that failed, in milliseconds (doubling). */
export const DEAD_LETTER_RETRY_MIN_MS = 250;
/** Longest wait between dead-letter publishes that failed without a refusal, in milliseconds. */
export const DEAD_LETTER_RETRY_MAX_MS = 10_000;

/** Why a message went to the dead-letter stream. */
export type DeadLetterReason = "rejected" | "expired" | "undecodable" | "overflow";

/** What a dead letter copies of a message: a JetStream delivery, or a core request. */
export interface StoredMsg {
  readonly subject: string;
  readonly headers?: MsgHdrs | undefined;
  readonly data: Uint8Array;
}

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
  msg: StoredMsg,
  info: AckInfo,
  reason: DeadLetterReason,
  copy: DeadLetterCopy = DeadLetterCopy.whole,
  extra?: Readonly<Record<string, string>>,
): MsgHdrs {
  const h = natsHeaders();
  if (msg.headers !== undefined && copy !== DeadLetterCopy.bare) {
    for (const [key, values] of msg.headers) {
      const name = /^nats-/i.test(key) ? `${NatsHeader.deadLetterKept}${key}` : key;
      for (const v of values) h.append(name, v);
    }
  }
  if (extra !== undefined) addFrameHeaders(h, msg, extra, copy);
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
 * Adds `extra` (the failure record of `Delivery.deadLetter`) to the frame headers a dead letter
 * carries: the stored `Nuropb-Frame` is packed again with them, so the dead letter reads as the
 * frame plus the record. A bare copy keeps only the record and the correlation id. Stored headers
 * that cannot be read (written by someone else) are left as they are, the record packed alone.
 */
function addFrameHeaders(
  h: MsgHdrs,
  msg: StoredMsg,
  extra: Readonly<Record<string, string>>,
  copy: DeadLetterCopy,
): void {
  let fields: ReturnType<typeof decodeFrameHeaders> = { headers: {}, correlationId: "" };
  try {
    fields = decodeFrameHeaders(msg.headers);
  } catch {
    // keep the stored headers as they are
  }
  const headers = copy === DeadLetterCopy.bare ? extra : { ...fields.headers, ...extra };
  const packed = encodeFrameHeaders({ ...fields, headers, body: Empty }).get(NatsHeader.frame);
  h.set(NatsHeader.frame, packed);
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
  if (info.deadLetterId !== undefined) return info.deadLetterId;
  return `${info.stream}:${info.consumer}:${String(info.streamSequence)}`;
}

/** Where and how {@link publishDeadLetter} stores a copy. */
export interface DeadLetterTarget {
  /** The service whose message it is, and the subject of its dead letters. */
  readonly service: string;
  readonly subject: string;
  /** Publishes into JetStream, resolving on the stream's acknowledgement. */
  readonly publish: (
    subject: string,
    body: Uint8Array,
    headers: MsgHdrs,
    msgID: string,
  ) => Promise<void>;
  /** Declares the dead-letter stream (again); never rejects. */
  readonly redeclare: () => Promise<void>;
  readonly logger: Logger;
}

/**
 * Publishes a copy of `msg` to the dead-letter stream. The dead-letter headers can take a
 * message that just fit over the server's max_payload: then the copy leaves out the body, and if
 * still too large the stored headers.
 * @throws DeadLetterRefused when the stream definitely refused the copy; the client's error when
 * it failed otherwise.
 */
export async function publishDeadLetter(
  target: DeadLetterTarget,
  msg: StoredMsg,
  info: AckInfo,
  reason: DeadLetterReason,
  extra?: Readonly<Record<string, string>>,
): Promise<void> {
  const copies = [DeadLetterCopy.whole, DeadLetterCopy.headers, DeadLetterCopy.bare];
  for (const [i, copy] of copies.entries()) {
    try {
      await target.publish(
        target.subject,
        copy === DeadLetterCopy.whole ? msg.data : Empty,
        deadLetterHeaders(msg, info, reason, copy, extra),
        deadLetterMsgId(info),
      );
      return;
    } catch (err) {
      // The dead-letter stream is gone (deleted by hand): declare it for the next attempt.
      if (natsCode(err) === ErrorCode.NoResponders) await target.redeclare();
      const tooLarge = natsCode(err) === ErrorCode.MaxPayloadExceeded;
      // A definite refusal: sending it again cannot help.
      if (apiErrorCode(err) !== undefined || (tooLarge && i === copies.length - 1)) {
        throw new DeadLetterRefused(
          `the dead-letter stream refused the copy: ${(err as Error).message}`,
          { cause: err },
        );
      }
      if (!tooLarge) throw err;
      target.logger.warn("dead letter larger than the server accepts; leaving out more", {
        service: target.service,
        stream: info.stream,
        seq: info.streamSequence,
        left: copies[i + 1],
      });
    }
  }
}

/** One message's way to the dead-letter stream, for {@link storeDeadLetter}. */
export interface DeadLetterJob {
  /** Stores the copy; rejects as {@link publishDeadLetter} does. */
  readonly store: () => Promise<void>;
  /** Terminates the message (`+TERM`): the server never delivers it again. */
  readonly terminate: () => void;
  /**
   * True when a failed copy is not to be tried again now (the link is down, the listener stopped
   * or the transport closed): the message stays unacknowledged and comes back after the ack wait.
   */
  readonly abandon: (refused: boolean) => boolean;
  readonly logger: Logger;
  readonly reason: DeadLetterReason;
  readonly info: AckInfo;
}

/**
 * Stores a copy in the dead-letter stream, then terminates the message. A copy the broker
 * definitely refuses while the link is up (a JetStream API error, or too large even bare;
 * DEAD_LETTER_ATTEMPTS times) would make the message return forever: it is terminated without
 * one, and logged as an error. A copy that fails otherwise (a publish timeout, no responders
 * while the dead-letter stream's leader is elected or its server is down) is sent again,
 * waiting longer each time up to DEAD_LETTER_RETRY_MAX_MS: the message is never terminated
 * without a copy for it. A copy the job abandons leaves the message unacknowledged.
 */
export async function storeDeadLetter(job: DeadLetterJob): Promise<void> {
  const { reason, logger } = job;
  const { stream, streamSequence: seq } = job.info;
  let refusals = 0;
  for (let attempt = 1; ; attempt++) {
    try {
      await job.store();
      job.terminate();
      return;
    } catch (err) {
      const refused = err instanceof DeadLetterRefused;
      if (refused) refusals++;
      if (job.abandon(refused)) {
        logger.warn("dead-letter publish failed; the message will be redelivered", {
          reason,
          stream,
          seq,
          error: err,
        });
        return;
      }
      if (refusals >= DEAD_LETTER_ATTEMPTS) {
        logger.error(
          "dead-letter publish keeps failing; terminating the message without a dead letter",
          { reason, stream, seq, attempts: attempt, error: err },
        );
        job.terminate();
        return;
      }
      const waitMs = Math.min(
        DEAD_LETTER_RETRY_MAX_MS,
        DEAD_LETTER_RETRY_MIN_MS * 2 ** Math.min(attempt - 1, 10),
      );
      logger.warn("dead-letter publish failed; trying again", {
        reason,
        stream,
        seq,
        attempt,
        refused,
        waitMs,
        error: err,
      });
      await new Promise((r) => setTimeout(r, waitMs).unref());
    }
  }
}
