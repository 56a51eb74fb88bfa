import { createHash } from "node:crypto";
import {
  MAX_MESSAGE_TTL_MS,
  NuropbNotDeliveredError,
  NuropbTransportError,
  newId,
  serviceQueueName,
} from "@nuropb/protocol";
import type {
  ClaimOutcome,
  Destination,
  Frame,
  Logger,
  TransportScheduling,
} from "@nuropb/protocol";
import {
  assertClaimKey,
  assertClaimTaker,
  assertClaimTtl,
  assertScheduledService,
  scheduledDelayMs,
} from "@nuropb/protocol/transport-kit";
import type { Channel, ChannelModel, ConfirmChannel, Message } from "amqplib";
import { channelError, isNodeDown } from "./connection.ts";
import type { OutgoingMessage } from "./frame-codec.ts";
import { closeQuietly } from "./session.ts";

// Scheduling on RabbitMQ without plugins (the delayed-message plugin is archived and absent from
// 4.3). Everything lives in the broker:
//
// - A delayed frame goes to a delay queue `nuropb-{service}-delay-{bucketMs}` whose queue-level
//   `x-message-ttl` is the bucket and which dead-letters through the default exchange to the
//   service queue. One TTL per queue means no head-of-line blocking (a per-message expiration
//   only expires at the head). Delays round UP to a bucket (see {@link delayBucketMs}).
// - A claim is two queues. `nuropb-claim-{key}` (x-expires = ttl) says the claim is open; it
//   holds one marker message per ttl bucket step, so that a claimer can learn, from the message
//   count of a passive declare, a bound of the ttl. The taker is recorded by declaring
//   `nuropb-claim-{key}-taken` with `x-dead-letter-routing-key` = sha256(taker): RabbitMQ refuses
//   (406 PRECONDITION_FAILED) to re-declare a queue with another value, atomically across the
//   cluster, so the first taker wins, the same taker re-declares fine, any other is refused.

/** The delay buckets, documented in the README: the delay is rounded up to the next one. */
export function delayBucketMs(delayMs: number): number {
  let step: number;
  if (delayMs <= 1_000) step = 100;
  else if (delayMs <= 60_000) step = 1_000;
  else if (delayMs <= 600_000) step = 10_000;
  else step = 60_000;
  return Math.min(MAX_MESSAGE_TTL_MS, Math.ceil(delayMs / step) * step);
}

/** How long an unused delay queue is kept after its last use, beyond its bucket. */
export const DELAY_QUEUE_IDLE_MS = 60_000;

/**
 * The arguments of the delay queue of `bucket` for `service`. Its `x-expires` (counted from the
 * last declare, not from the messages it holds) always exceeds the bucket by
 * {@link DELAY_QUEUE_IDLE_MS}, so RabbitMQ never deletes it holding a frame not yet due; a bucket
 * so large that this would pass the largest `x-expires` RabbitMQ takes (MAX_MESSAGE_TTL_MS) gets
 * no `x-expires`: the top bucket's queue is kept (one per service at most).
 */
export function delayQueueArguments(service: string, bucket: number): Record<string, unknown> {
  const args: Record<string, unknown> = {
    "x-message-ttl": bucket,
    "x-dead-letter-exchange": "",
    "x-dead-letter-routing-key": serviceQueueName(service),
  };
  if (bucket + DELAY_QUEUE_IDLE_MS <= MAX_MESSAGE_TTL_MS) {
    args["x-expires"] = bucket + DELAY_QUEUE_IDLE_MS;
  }
  return args;
}

/** The ttl bound a claim's marker count encodes: 2^(count - 1) seconds (count 1 to 23). */
function claimTtlSteps(ttlMs: number): number {
  let steps = 1;
  while (2 ** (steps - 1) * 1000 < ttlMs && steps < 23) steps++;
  return steps;
}

const PERSISTENT = 2;

/**
 * The header a scheduled copy carries (a fresh id): its publish's return is paired on it, and the
 * receiving transport learns no reply dialect from it (the copy is ours, not the caller's).
 */
export const SCHEDULED_HEADER = "x-nuropb-scheduled";

/** What the scheduling needs from its transport. */
export interface AmqpSchedulingHost {
  readonly log: Logger;
  readonly password: string | undefined;
  /** The open connection. @throws when the transport is not open. */
  connection(): ChannelModel;
  /** Encodes a frame as `send` does. @throws NuropbMessageError for a bad frame. */
  encode(to: Destination, frame: Frame): OutgoingMessage;
  /** Registers an operation that close() lets finish. */
  track<T>(p: Promise<T>): Promise<T>;
}

/** The scheduling capability of one AMQP transport. */
export function createAmqpScheduling(host: AmqpSchedulingHost): TransportScheduling {
  const declaredAt = new WeakMap<ChannelModel, Map<string, number>>();
  let shared: { conn: ChannelModel; ch: Promise<ConfirmChannel> } | undefined;
  const returns = new Map<string, () => void>();

  /** The confirm channel for delayed sends on the current connection (re-opened after an error). */
  const confirmChannel = (conn: ChannelModel): Promise<ConfirmChannel> => {
    if (shared !== undefined && shared.conn === conn) return shared.ch;
    const ch = conn.createConfirmChannel().then((c) => {
      c.on("error", () => undefined);
      c.on("close", () => {
        if (shared?.conn === conn) shared = undefined;
      });
      c.on("return", (msg: Message) => {
        const id: unknown = msg.properties.headers?.[SCHEDULED_HEADER];
        if (typeof id === "string") returns.get(id)?.();
      });
      return c;
    });
    ch.catch(() => {
      if (shared?.conn === conn) shared = undefined;
    });
    shared = { conn, ch };
    return ch;
  };

  /** Publishes with confirm; resolves `"returned"` when the broker could not route it. */
  const publish = (
    ch: ConfirmChannel,
    queue: string,
    content: Buffer,
    properties: OutgoingMessage["properties"],
  ): Promise<"ok" | "returned" | "nacked"> =>
    new Promise((resolve, reject) => {
      // Paired on a header of our own: message_id carries the compact dialect's trace id.
      const mark = newId();
      let returned = false;
      returns.set(mark, () => (returned = true));
      const headers = { ...properties?.headers, [SCHEDULED_HEADER]: mark };
      try {
        ch.publish(
          "",
          queue,
          content,
          { ...properties, headers, mandatory: true, deliveryMode: PERSISTENT },
          (err: unknown) => {
            returns.delete(mark);
            if (err === null || err === undefined) resolve(returned ? "returned" : "ok");
            else if ((err as Error)?.message === "message nacked") resolve("nacked");
            else reject(channelError(err, "the broker did not confirm the message", host.password));
          },
        );
      } catch (err) {
        returns.delete(mark);
        reject(channelError(err, "cannot publish", host.password));
      }
    });

  const declareDelayQueue = async (
    conn: ChannelModel,
    ch: ConfirmChannel,
    service: string,
    bucket: number,
    force: boolean,
  ): Promise<string> => {
    const name = `nuropb-${service}-delay-${bucket}`;
    let seen = declaredAt.get(conn);
    if (seen === undefined) declaredAt.set(conn, (seen = new Map()));
    const last = seen.get(name);
    // Re-declaring renews x-expires; in between, a return says the queue expired.
    if (!force && last !== undefined && Date.now() - last < DELAY_QUEUE_IDLE_MS / 2) return name;
    await ch.assertQueue(name, { durable: true, arguments: delayQueueArguments(service, bucket) });
    seen.set(name, Date.now());
    return name;
  };

  /** Runs `fn` on a channel of its own (a refused declare closes it), then closes it. */
  const withChannel = async <T>(fn: (ch: Channel) => Promise<T>): Promise<T> => {
    const conn = host.connection();
    const ch = await conn.createChannel();
    ch.on("error", () => undefined);
    try {
      return await fn(ch);
    } finally {
      await closeQuietly(ch);
    }
  };

  /**
   * The ready messages of a queue, or undefined when it does not exist (passive declare).
   * @throws NuropbTransportError (retryable) when the 404 says the queue's home node is down or
   *   inaccessible (a cluster node away): the queue may well exist.
   */
  const messageCount = (name: string): Promise<number | undefined> =>
    withChannel(async (ch) => {
      try {
        return (await ch.checkQueue(name)).messageCount;
      } catch (err) {
        if ((err as { code?: unknown }).code !== 404) throw err;
        if (isNodeDown(err)) {
          throw new NuropbTransportError(`the claim queue's cluster node is down or inaccessible`, {
            retryable: true,
          });
        }
        return undefined;
      }
    });

  const claimQueue = (key: string): string => `nuropb-claim-${key}`;

  return Object.freeze({
    /**
     * When a frame sent with `delayMs` is delivered at the earliest: its delay bucket (core's
     * failure pipeline checks a caller's ttl against it). Not part of `TransportScheduling` yet.
     */
    deliveryDelayMs(delayMs: number): number {
      const delay = scheduledDelayMs(delayMs);
      return delay === 0 ? 0 : delayBucketMs(delay);
    },

    serviceReplyAddress(service: string): string {
      assertScheduledService(service);
      return serviceQueueName(service);
    },

    sendDelayed(service: string, frame: Frame, delayMs: number): Promise<void> {
      try {
        assertScheduledService(service);
        const delay = scheduledDelayMs(delayMs);
        const { ttlMs: _ttl, ...rest } = frame ?? ({} as Frame);
        const target = serviceQueueName(service);
        const out = host.encode({ kind: "reply", address: target }, rest as Frame);
        const conn = host.connection();
        return host.track(
          (async () => {
            const ch = await confirmChannel(conn);
            if (delay === 0) {
              // Due now: straight to the service queue. Unlike a delayed frame (whose delay
              // queue dead-letters it later, dropped if the service queue is gone by then), the
              // outcome is known here: a frame the broker returned (no such queue) or refused
              // (basic.nack: a full queue with reject-publish, say) is not held, so it rejects.
              const outcome = await publish(ch, target, out.content, out.properties);
              if (outcome === "returned") {
                throw new NuropbNotDeliveredError(`no queue for service '${service}'`, {
                  details: { service },
                });
              }
              if (outcome === "nacked") {
                throw new NuropbTransportError(
                  `the broker refused the message for service '${service}' (basic.nack)`,
                  { retryable: true },
                );
              }
              return;
            }
            const bucket = delayBucketMs(delay);
            for (let attempt = 0; attempt < 2; attempt++) {
              const queue = await declareDelayQueue(conn, ch, service, bucket, attempt > 0);
              const outcome = await publish(ch, queue, out.content, out.properties);
              if (outcome === "ok") return;
              if (outcome === "nacked") {
                throw new NuropbTransportError(
                  "the broker could not take the delayed message (basic.nack)",
                  { retryable: true },
                );
              }
              // Returned: the delay queue expired since we declared it; declare it again.
              host.log.debug("delay queue gone; declaring it again", { queue });
            }
            throw new NuropbTransportError(
              `the delay queue for service '${service}' vanished twice while sending`,
              { retryable: true },
            );
          })().catch((err: unknown) => {
            throw err instanceof NuropbTransportError || err instanceof NuropbNotDeliveredError
              ? err
              : channelError(err, "cannot send a delayed message", host.password);
          }),
        );
      } catch (err) {
        return Promise.reject(err as Error);
      }
    },

    openClaim(key: string, ttlMs: number): Promise<void> {
      try {
        assertClaimKey(key);
        assertClaimTtl(ttlMs);
        const conn = host.connection();
        const name = claimQueue(key);
        const steps = claimTtlSteps(ttlMs);
        return host.track(
          (async () => {
            if ((await messageCount(name)) !== undefined) return; // open already: idempotent
            // A fresh claim: forget the taker of an earlier claim of that key.
            await withChannel((ch) => ch.deleteQueue(`${name}-taken`).then(() => undefined));
            const opened = await withChannel(async (ch) => {
              try {
                await ch.assertQueue(name, {
                  durable: true,
                  arguments: {
                    "x-expires": ttlMs,
                    "x-max-length": steps,
                    "x-overflow": "reject-publish",
                  },
                });
                return true;
              } catch (err) {
                // 406: opened meanwhile with another ttl, which is as good.
                if ((err as { code?: unknown }).code === 406) return false;
                throw err;
              }
            });
            if (!opened) return;
            const ch = await confirmChannel(conn);
            // The markers (a second opener's are refused by x-max-length: nacked, ignored).
            await Promise.all(
              Array.from({ length: steps }, () => publish(ch, name, Buffer.alloc(0), {})),
            );
          })().catch((err: unknown) => {
            if (err instanceof NuropbTransportError) throw err;
            throw channelError(err, "cannot open the claim", host.password);
          }),
        );
      } catch (err) {
        return Promise.reject(err as Error);
      }
    },

    claim(key: string, taker: string): Promise<ClaimOutcome> {
      try {
        assertClaimKey(key);
        assertClaimTaker(taker);
        host.connection();
        const name = claimQueue(key);
        return host.track(
          (async () => {
            const markers = await messageCount(name);
            if (markers === undefined || markers === 0) return "absent"; // expired, or never opened
            // The taken record outlives the open marker: twice the ttl bound the markers encode.
            const expires = Math.min(MAX_MESSAGE_TTL_MS, 2 ** markers * 1000);
            const digest = createHash("sha256").update(taker).digest("hex");
            return withChannel(async (ch) => {
              try {
                await ch.assertQueue(`${name}-taken`, {
                  durable: true,
                  arguments: {
                    "x-expires": expires,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": digest,
                  },
                });
                return "won" as const;
              } catch (err) {
                // 406 PRECONDITION_FAILED: declared with another taker's digest.
                if ((err as { code?: unknown }).code === 406) return "lost" as const;
                throw err;
              }
            });
          })().catch((err: unknown) => {
            if (err instanceof NuropbTransportError) throw err;
            throw channelError(err, "cannot take the claim", host.password);
          }),
        );
      } catch (err) {
        return Promise.reject(err as Error);
      }
    },
  });
}
