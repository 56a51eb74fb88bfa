import {
  AckPolicy,
  DeliverPolicy,
  ErrorCode,
  headers as natsHeaders,
  nanos,
  RetentionPolicy,
  StorageType,
  type ConsumerMessages,
  type JetStreamManager,
  type JsMsg,
  type KV,
  type MsgHdrs,
  type NatsConnection,
} from "nats";
import {
  MAX_MESSAGE_TTL_MS,
  NuropbMessageError,
  NuropbTransportError,
  newId,
  serviceQueueName,
  type ClaimOutcome,
  type Frame,
  type Logger,
  type TransportScheduling,
} from "@nuropb/protocol";
import {
  assertClaimKey,
  assertClaimTaker,
  assertClaimTtl,
  assertScheduledService,
  scheduledDelayMs,
} from "@nuropb/protocol/transport-kit";
import { encodeFrameHeaders, NatsHeader } from "./frame-headers.ts";
import { encodeName, isLiteralSubject, rpcSubject } from "./names.ts";
import { natsCode } from "./nats-errors.ts";

// Scheduling on NATS JetStream 2.9, which has no scheduled publish:
//
// - Delayed frames go to the stream `NUROPB-{mesh}-DELAYED` (subject `{mesh}.delayed`, work
//   queue, file storage) with the service and the delay in headers. Every connected transport
//   works its durable pull consumer `mover` (competing): a message not yet due (stored time +
//   delay, against the mover's clock) is `nak`ed with the remaining delay; a due one is published
//   to the service's rpc subject, as sends do, then acked. Its Nats-Msg-Id is the unique id
//   `sendDelayed` gave the frame (header `Nuropb-Delayed-Id`): a mover that dies between publish
//   and ack does not store it twice within the service stream's duplicate window (a mover that
//   comes back later than that may: at least once), and a delay stream re-created (sequences
//   start again) never has a new frame taken for a duplicate. A service without a stream drops
//   it (no responders), as AMQP's default exchange does.
// - Claims live in KV buckets; 2.9 KV has no per-key TTL, so the value keeps the expiry
//   (`{"t": taker | null, "e": expiry ms}`), updated with the expected revision, and the server
//   removes an entry only by its bucket's max age (counted from the entry's last write). So
//   claims are tiered by ttl (CLAIM_TIERS): `nuropb_claims_{mesh hex}_1h` (max age 1 h),
//   `…_1d` (1 day) and `nuropb_claims_{mesh hex}` (49.7 days, the longest ttl; the one bucket of
//   earlier versions). A claim goes to the smallest tier whose max age covers its ttl plus
//   CLAIM_AGE_MARGIN_MS, so an entry is gone at most a tier's age after it expired: core's
//   usual claim (request ttl + 10 min) lives under an hour, not 7 weeks. `claim()` gets only the
//   key: it looks in each tier, smallest first (one get where the claim is; one per tier when it
//   is absent), and the first live entry decides. `openClaim` first looks in the other tiers, so
//   reopening a live claim with a ttl of another tier stays idempotent.
// - Both take the transport's `replicas` when they are created (an existing stream or bucket
//   keeps its own).

/** Ack wait of the mover: a mover that dies holding messages gives them back after this. */
const MOVER_ACK_WAIT_MS = 10_000;
/** Delay before a frame that could not be moved (a publish error) is tried again. */
const MOVE_RETRY_MS = 1_000;
const SERVICE_HEADER = "Nuropb-Service";
const DELAY_HEADER = "Nuropb-Delay-Ms";
const DELAYED_ID_HEADER = "Nuropb-Delayed-Id";
const MOVER = "mover";
const SERVICE_ADDRESS = /^nuropb-(.+)-sq$/;

/** A bucket of claims: its name's suffix and its max age. */
interface ClaimTier {
  readonly suffix: string;
  readonly maxAgeMs: number;
}

/**
 * The claim buckets, smallest first: a claim goes to the first whose max age is at least its ttl
 * plus {@link CLAIM_AGE_MARGIN_MS} (the last takes any ttl). The last has no suffix: it is the
 * single bucket of earlier versions, so their claims are still found.
 */
export const CLAIM_TIERS: readonly ClaimTier[] = Object.freeze([
  Object.freeze({ suffix: "_1h", maxAgeMs: 3_600_000 }),
  Object.freeze({ suffix: "_1d", maxAgeMs: 86_400_000 }),
  Object.freeze({ suffix: "", maxAgeMs: MAX_MESSAGE_TTL_MS }),
]);

/**
 * How much longer than its claim's ttl an entry is kept at least: room for the clocks of the
 * participant writing the expiry and of the server counting the max age to differ.
 */
export const CLAIM_AGE_MARGIN_MS = 60_000;

/** The index in {@link CLAIM_TIERS} of the bucket for a claim living `ttlMs`. */
export function claimTierOf(ttlMs: number): number {
  const i = CLAIM_TIERS.findIndex((t) => t.maxAgeMs >= ttlMs + CLAIM_AGE_MARGIN_MS);
  return i === -1 ? CLAIM_TIERS.length - 1 : i;
}

/** What the scheduling needs from its transport. */
export interface NatsSchedulingHost {
  readonly mesh: string;
  /** Replicas of the delay stream and the claims bucket (the transport's `replicas`). @defaultValue 1 */
  readonly replicas?: number;
  readonly logger: Logger;
  maxFrameBytes(): number;
  /** The open connection. @throws when the transport is not open. */
  requireOpen(): { nc: NatsConnection; jsm: JetStreamManager };
  /** Publishes into JetStream and waits for the stream's acknowledgement (client errors). */
  publishConfirmed(
    subject: string,
    body: Uint8Array,
    headers: MsgHdrs,
    msgID?: string,
  ): Promise<void>;
  /** Translates a client error as `send` does. */
  translate(err: unknown, what: string): Error;
}

/** The scheduling capability of a NATS transport, with its mover. */
export interface NatsScheduling {
  readonly scheduling: TransportScheduling;
  /** The service addressed by a reply address from `serviceReplyAddress`, else undefined. */
  serviceOfAddress(address: string): string | undefined;
  /** Publishes a reply addressed to a service to its stream (dropped when it has none). */
  deliverReply(service: string, frame: Frame): Promise<void>;
  /** Starts the mover (the transport is open). */
  start(): void;
  /** Stops the mover. */
  stop(): Promise<void>;
}

interface ClaimValue {
  readonly t: string | null;
  readonly e: number;
}

/** Creates the scheduling of one NATS transport. */
export function createNatsScheduling(host: NatsSchedulingHost): NatsScheduling {
  const mesh = host.mesh;
  const streamName = `NUROPB-${encodeName(mesh)}-DELAYED`;
  const subject = `${mesh}.delayed`;
  const bucket = `nuropb_claims_${Buffer.from(mesh).toString("hex")}`;
  let ensured: Promise<void> | undefined;
  /** The claim buckets, by tier, for the connection they were opened on. */
  const kvs: ({ nc: NatsConnection; kv: Promise<KV> } | undefined)[] = CLAIM_TIERS.map(
    () => undefined,
  );
  let messages: ConsumerMessages | undefined;
  let running = false;

  const ensureStream = (jsm: JetStreamManager): Promise<void> => {
    ensured ??= (async () => {
      try {
        await jsm.streams.info(streamName);
      } catch (err) {
        if (natsCode(err) !== "404" && !/not found/i.test(String(err))) throw err;
        await jsm.streams.add({
          name: streamName,
          subjects: [subject],
          retention: RetentionPolicy.Workqueue,
          storage: StorageType.File,
          num_replicas: host.replicas ?? 1,
        });
      }
      try {
        await jsm.consumers.info(streamName, MOVER);
      } catch {
        await jsm.consumers.add(streamName, {
          durable_name: MOVER,
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.All,
          ack_wait: nanos(MOVER_ACK_WAIT_MS),
          max_deliver: -1,
          // Waiting (nak'ed) messages count as pending: no limit, or they would stall the mover.
          max_ack_pending: -1,
        });
      }
    })();
    ensured.catch(() => (ensured = undefined));
    return ensured;
  };

  /** The claim bucket of tier `i` of {@link CLAIM_TIERS} (created when missing). */
  const claims = (i: number): Promise<KV> => {
    const { nc } = host.requireOpen();
    const open = kvs[i];
    if (open !== undefined && open.nc === nc) return open.kv;
    const tier = CLAIM_TIERS[i] as ClaimTier;
    const opening = nc.jetstream().views.kv(`${bucket}${tier.suffix}`, {
      history: 1,
      ttl: tier.maxAgeMs,
      storage: StorageType.File,
      replicas: host.replicas ?? 1,
    });
    kvs[i] = { nc, kv: opening };
    opening.catch(() => {
      if (kvs[i]?.kv === opening) kvs[i] = undefined;
    });
    return opening;
  };

  /** The live (unexpired) claim `k` in tier `i`, with its revision, or undefined. */
  const liveIn = async (
    i: number,
    k: string,
  ): Promise<{ store: KV; value: ClaimValue; revision: number } | undefined> => {
    const store = await claims(i);
    const entry = await store.get(k);
    if (entry === null || entry.operation !== "PUT") return undefined;
    const value = decode(entry.value);
    return value.e > Date.now() ? { store, value, revision: entry.revision } : undefined;
  };

  const checkFrame = (frame: Frame): Frame => {
    if (typeof frame !== "object" || frame === null) {
      throw new NuropbMessageError("frame must be an object");
    }
    if (!(frame.body instanceof Uint8Array)) {
      throw new NuropbMessageError("frame.body must be a Uint8Array");
    }
    if (frame.body.byteLength > host.maxFrameBytes()) {
      throw new NuropbMessageError(
        `frame body of ${frame.body.byteLength} bytes exceeds maxFrameBytes (${host.maxFrameBytes()})`,
      );
    }
    if (typeof frame.correlationId !== "string") {
      throw new NuropbMessageError("frame.correlationId must be a string");
    }
    // The ttl is dropped: it would otherwise count from when the frame lands in the stream.
    const { ttlMs: _ttl, ...rest } = frame;
    return rest;
  };

  /** Publishes to the service's stream; false when it has none (no responders). */
  const toService = async (
    service: string,
    body: Uint8Array,
    headers: MsgHdrs,
    msgID?: string,
  ): Promise<boolean> => {
    try {
      await host.publishConfirmed(rpcSubject(mesh, service), body, headers, msgID);
      return true;
    } catch (err) {
      if (natsCode(err) === ErrorCode.NoResponders) return false;
      throw err;
    }
  };

  const moveOne = async (m: JsMsg): Promise<void> => {
    const service = m.headers?.get(SERVICE_HEADER) ?? "";
    const delay = Number(m.headers?.get(DELAY_HEADER) ?? "0");
    const packed = m.headers?.get(NatsHeader.frame) ?? "";
    if (service === "" || !Number.isFinite(delay) || packed === "") {
      host.logger.warn("dropping a malformed delayed message", { seq: m.seq });
      m.term();
      return;
    }
    const due = Math.floor(m.info.timestampNanos / 1e6) + delay;
    const wait = due - Date.now();
    if (wait > 0) {
      m.nak(wait + 1);
      return;
    }
    const h = natsHeaders();
    h.set(NatsHeader.frame, packed);
    try {
      // Frames held before the id header existed fall back to their (less unique) sequence.
      const id = m.headers?.get(DELAYED_ID_HEADER) || `${streamName}-${m.seq}`;
      const routed = await toService(service, m.data, h, `nuropb-delayed-${id}`);
      if (!routed) host.logger.debug("delayed frame dropped: no such service", { service });
      m.ack();
    } catch (err) {
      host.logger.warn("could not move a due frame; trying again", { service, error: err });
      m.nak(MOVE_RETRY_MS);
    }
  };

  const run = async (): Promise<void> => {
    while (running) {
      try {
        const { nc, jsm } = host.requireOpen();
        await ensureStream(jsm);
        const consumer = await nc.jetstream().consumers.get(streamName, MOVER);
        if (!running) return;
        messages = await consumer.consume({ max_messages: 256, expires: 5_000 });
        for await (const m of messages) {
          // Stopping: what the server sent meanwhile goes back at once, not after the ack wait.
          if (running) await moveOne(m);
          else m.nak();
        }
      } catch (err) {
        if (!running) return;
        ensured = undefined; // the stream or its consumer may be gone: make sure of them again
        host.logger.debug("mover stopped; starting again", { error: err });
      }
      if (running) await new Promise((r) => setTimeout(r, MOVE_RETRY_MS).unref());
    }
  };

  const scheduling: TransportScheduling = Object.freeze({
    serviceReplyAddress(service: string): string {
      assertScheduledService(service);
      return serviceQueueName(service);
    },
    async sendDelayed(service: string, frame: Frame, delayMs: number): Promise<void> {
      assertScheduledService(service);
      const delay = scheduledDelayMs(delayMs);
      if (!isLiteralSubject(service)) {
        throw new TypeError(`service '${service}' cannot name a NATS subject`);
      }
      const checked = checkFrame(frame);
      const { jsm } = host.requireOpen();
      const h = encodeFrameHeaders(checked);
      h.set(SERVICE_HEADER, service);
      h.set(DELAY_HEADER, String(delay));
      h.set(DELAYED_ID_HEADER, newId());
      try {
        await ensureStream(jsm);
        try {
          await host.publishConfirmed(subject, checked.body, h);
        } catch (err) {
          // The stream was deleted since we made sure of it: make it again, once.
          if (natsCode(err) !== ErrorCode.NoResponders) throw err;
          ensured = undefined;
          await ensureStream(jsm);
          await host.publishConfirmed(subject, checked.body, h);
        }
      } catch (err) {
        throw host.translate(err, `send a delayed frame to service '${service}'`);
      }
    },
    async openClaim(key: string, ttlMs: number): Promise<void> {
      assertClaimKey(key);
      assertClaimTtl(ttlMs);
      const k = claimKey(key);
      const tier = claimTierOf(ttlMs);
      try {
        // Open (or taken) in another tier: idempotent, as within one.
        const elsewhere = await Promise.all(
          CLAIM_TIERS.map((_, i) => (i === tier ? undefined : liveIn(i, k))),
        );
        if (elsewhere.some((e) => e !== undefined)) return;
        const store = await claims(tier);
        for (;;) {
          const fresh = encode({ t: null, e: Date.now() + ttlMs });
          try {
            await store.create(k, fresh);
            return;
          } catch (err) {
            if (!isWrongSequence(err)) throw err;
          }
          const entry = await store.get(k);
          if (entry === null || entry.operation !== "PUT") continue;
          if (decode(entry.value).e > Date.now()) return; // open (or taken): idempotent
          try {
            await store.update(k, fresh, entry.revision); // expired: open afresh
            return;
          } catch (err) {
            if (!isWrongSequence(err)) throw err;
          }
        }
      } catch (err) {
        throw host.translate(err, "open a claim");
      }
    },
    async claim(key: string, taker: string): Promise<ClaimOutcome> {
      assertClaimKey(key);
      assertClaimTaker(taker);
      const k = claimKey(key);
      try {
        for (let i = 0; i < CLAIM_TIERS.length; i++) {
          for (;;) {
            const live = await liveIn(i, k);
            if (live === undefined) break; // not in this tier (or expired there): the next
            const { store, value, revision } = live;
            if (value.t !== null) return value.t === taker ? "won" : "lost";
            try {
              await store.update(k, encode({ t: taker, e: value.e }), revision);
              return "won";
            } catch (err) {
              if (!isWrongSequence(err)) throw err;
              // Someone wrote it meanwhile: read again.
            }
          }
        }
        return "absent";
      } catch (err) {
        if (err instanceof NuropbTransportError) throw err;
        throw host.translate(err, "take a claim");
      }
    },
  });

  return {
    scheduling,
    serviceOfAddress(address) {
      const m = SERVICE_ADDRESS.exec(address);
      return m === null ? undefined : m[1];
    },
    async deliverReply(service, frame) {
      const checked = checkFrame(frame);
      if (!isLiteralSubject(service)) return; // no stream can be bound for it
      try {
        await toService(service, checked.body, encodeFrameHeaders(checked));
      } catch (err) {
        throw host.translate(err, `send a reply to service '${service}'`);
      }
    },
    start() {
      if (running) return;
      running = true;
      void run();
    },
    async stop() {
      running = false;
      const m = messages;
      messages = undefined;
      m?.stop();
    },
  };
}

/** A KV key for a claim key: `[-_A-Za-z0-9]` as is, anything else `=` and two hex digits. */
function claimKey(key: string): string {
  return key.replace(/[^-_A-Za-z0-9]/g, (c) => `=${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

const utf8 = new TextDecoder();
const encoder = new TextEncoder();

function encode(value: ClaimValue): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

function decode(bytes: Uint8Array): ClaimValue {
  try {
    const v = JSON.parse(utf8.decode(bytes)) as Partial<ClaimValue>;
    if (typeof v.e === "number" && (v.t === null || typeof v.t === "string")) {
      return { t: v.t, e: v.e };
    }
  } catch {
    // fall through: a value we did not write is an expired claim
  }
  return { t: null, e: 0 };
}

/** The server refused a create or update: the key exists, or its revision moved on. */
function isWrongSequence(err: unknown): boolean {
  const text = String((err as Error)?.message ?? err);
  return /wrong last sequence|key exists/i.test(text);
}
