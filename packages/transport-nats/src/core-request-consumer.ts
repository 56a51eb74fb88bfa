import {
  headers as natsHeadersOf,
  nuid,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type Subscription,
} from "nats";
import { NuropbNotDeliveredError } from "@nuropb/protocol";
import type { DeliveryHandler, Listener, Logger } from "@nuropb/protocol";
import { copyBytes, createDeliveryLedger } from "@nuropb/protocol/transport-kit";
import type { DeliveryLedger, HeldDelivery, Settlement } from "@nuropb/protocol/transport-kit";
import type { DeadLetterReason, StoredMsg } from "./dead-letter.ts";
import type { DeliveryWindow } from "./delivery-window.ts";
import {
  compactRedelivered,
  decodeCompactFrame,
  expandCompactFrame,
  isCompactFrame,
} from "./compact-frame.ts";
import {
  decodeFrameHeaders,
  inboundFrame,
  NatsHeader,
  type DecodedFrameFields,
} from "./frame-headers.ts";
import type { AckInfo } from "./names.ts";

/** What a {@link CoreRequestConsumer} needs from its transport. */
export interface CoreRequestConsumerDeps {
  readonly nc: NatsConnection;
  readonly service: string;
  /** The core subjects of the service's rpc names, and the queue group its instances share. */
  readonly subjects: readonly string[];
  readonly queue: string;
  /**
   * The listener's prefetch window, shared with its pull consumer: at most `limit` deliveries
   * are in the handler at once; as many more requests wait here.
   */
  readonly window: DeliveryWindow;
  readonly handler: DeliveryHandler;
  readonly logger: Logger;
  /**
   * Publishes on core NATS and waits for the flush; rejects `NuropbNotDeliveredError` when no
   * instance subscribes.
   */
  readonly publishRequest: (
    subject: string,
    body: Uint8Array,
    headers: MsgHdrs | undefined,
  ) => Promise<void>;
  /** Stores a request in the service's stream (with flow control), for a pull consumer. */
  readonly spill: (msg: StoredMsg, headers: MsgHdrs) => Promise<void>;
  /** Publishes a copy to the dead-letter stream (see `publishDeadLetter`). */
  readonly deadLetter: (
    msg: StoredMsg,
    info: AckInfo,
    reason: DeadLetterReason,
    extra?: Readonly<Record<string, string>>,
  ) => Promise<void>;
  readonly onStopped: (consumer: CoreRequestConsumer) => void;
}

/** A request received on core NATS, until it is settled. */
interface CoreRequest {
  readonly subject: string;
  readonly headers: MsgHdrs | undefined;
  /** A copy: the received bytes are a view into the socket's read buffer. */
  readonly data: Uint8Array;
  /** `data` is in the compact framing (fields, then body; no headers). */
  readonly compact: boolean;
}

/** `req` as JetStream stores it: headers and the body alone. @throws NuropbMessageError. */
function headed(req: CoreRequest): CoreRequest {
  if (!req.compact) return req;
  const { headers, body } = expandCompactFrame(req.data);
  return { subject: req.subject, headers, data: body, compact: false };
}

/**
 * The requests of one service listener on core NATS (`requests: "core"`): a subscription per rpc
 * subject in the service's queue group, so the server hands each request to one instance.
 *
 * The Delivery contract is the transport kit's {@link DeliveryLedger}, as on the pull consumer:
 * settled once; `ack` = done (nothing to tell the server); `requeue` = published again once,
 * marked `Nuropb-Redelivered`; `reject` and `deadLetter` = a copy in the dead-letter stream. A
 * request past its ttl when its turn comes is dead-lettered, never handled.
 *
 * A core subscription has no flow control: the server sends whatever comes. At most `window`
 * requests are in the handler at once and as many more wait here; a request past that is
 * spilled into the service's JetStream stream, where it waits (pulled with flow control, by
 * this instance or another) rather than being dropped. On stop the subscriptions are withdrawn
 * and every request not handed out is published again for another instance (into the stream
 * when there is none).
 */
export class CoreRequestConsumer implements Listener {
  readonly #deps: CoreRequestConsumerDeps;
  readonly #ledger: DeliveryLedger<CoreRequest>;
  readonly #waiting: CoreRequest[] = [];
  readonly #subs: Subscription[] = [];
  /** Requests that arrived after the stop, on their way to another instance. */
  readonly #resending = new Set<Promise<void>>();
  #stopping: Promise<void> | undefined;

  constructor(deps: CoreRequestConsumerDeps) {
    this.#deps = deps;
    this.#ledger = createDeliveryLedger<CoreRequest>({
      prefetch: 0, // the window counts the slots
      settle: (req, outcome) => this.#settleAs(req, outcome),
      deadLetter: (req, headers) => this.#deadLetter(req, "rejected", headers),
      giveBack: async (reqs) => {
        await Promise.all(reqs.map((r) => this.#sendAgain(r)));
      },
      onRelease: () => deps.window.released(),
      logger: deps.logger,
      describe: (r) => ({ subject: r.subject }),
    });
    deps.window.join(
      () => this.#ledger.size,
      () => this.#dispatch(),
    );
  }

  /** Subscribes the request subjects. */
  start(): void {
    for (const subject of this.#deps.subjects) {
      this.#subs.push(
        this.#deps.nc.subscribe(subject, {
          queue: this.#deps.queue,
          callback: (err, msg) => this.#onMessage(err, msg),
        }),
      );
    }
  }

  /** Requests waiting for a slot (for tests and logs). */
  get waiting(): number {
    return this.#waiting.length;
  }

  #onMessage(err: Error | null, msg: Msg): void {
    if (err !== null) {
      this.#deps.logger.warn("request subscription error", { error: err });
      return;
    }
    const req: CoreRequest = {
      subject: msg.subject,
      headers: msg.headers,
      data: copyBytes(msg.data),
      compact: isCompactFrame(msg.headers, msg.data),
    };
    if (this.#ledger.stopped) {
      // Came before the server had the unsubscribe (the drain hands these to us): send it on.
      const sent: Promise<void> = this.#sendAgain(req).finally(() => this.#resending.delete(sent));
      this.#resending.add(sent);
      return;
    }
    if (this.#waiting.length === 0 && this.#deps.window.hasRoom()) {
      void this.#deliver(this.#ledger.hold(req));
      return;
    }
    if (this.#waiting.length < this.#deps.window.limit) {
      this.#waiting.push(req);
      return;
    }
    void this.#spill(req);
  }

  #dispatch(): void {
    while (this.#waiting.length > 0 && this.#ledger.hasRoom() && this.#deps.window.hasRoom()) {
      void this.#deliver(this.#ledger.hold(this.#waiting.shift() as CoreRequest));
    }
  }

  async #deliver(held: HeldDelivery<CoreRequest>): Promise<void> {
    const req = held.message;
    let fields: DecodedFrameFields;
    let body = req.data;
    try {
      if (req.compact) ({ fields, body } = decodeCompactFrame(req.data));
      else fields = decodeFrameHeaders(req.headers);
    } catch (err) {
      this.#deps.logger.warn("undecodable headers; dead-lettering", {
        subject: req.subject,
        error: err,
      });
      this.#ledger.release(held);
      await this.#deadLetter(req, "undecodable");
      return;
    }
    if (
      fields.ttlMs !== undefined &&
      fields.sentAtMs !== undefined &&
      Date.now() > fields.sentAtMs + fields.ttlMs
    ) {
      this.#deps.logger.debug("expired; dead-lettering", { subject: req.subject });
      this.#ledger.release(held);
      await this.#deadLetter(req, "expired");
      return;
    }
    await this.#ledger.dispatch(held, inboundFrame(fields, body), this.#deps.handler);
  }

  #settleAs(req: CoreRequest, outcome: Settlement): Promise<void> | void {
    if (outcome === "reject") return this.#deadLetter(req, "rejected");
    if (outcome === "requeue") return this.#sendAgain(req);
    // ack: a core request is done once handled; there is nothing to tell the server.
  }

  /**
   * Publishes `req` again once, marked redelivered: to the queue group (any instance, this one
   * included), or into the service's stream when no instance subscribes any more.
   */
  async #sendAgain(req: CoreRequest): Promise<void> {
    let again: CoreRequest;
    try {
      again = req.compact
        ? { ...req, data: compactRedelivered(req.data) }
        : { ...req, headers: markedRedelivered(req.headers) };
    } catch (err) {
      this.#deps.logger.warn("undecodable request not sent again; dead-lettering", {
        subject: req.subject,
        error: err,
      });
      await this.#deadLetter(req, "undecodable");
      return;
    }
    try {
      await this.#deps.publishRequest(again.subject, again.data, again.headers);
    } catch (err) {
      if (!(err instanceof NuropbNotDeliveredError)) {
        this.#deps.logger.warn("request not sent again; the caller times out", {
          subject: req.subject,
          error: err,
        });
        return;
      }
      await this.#spill(again, false);
    }
  }

  /** Stores `req` in the service's stream; dead-letters it when the stream does not take it. */
  async #spill(req: CoreRequest, overflow = true): Promise<void> {
    let stored: CoreRequest;
    try {
      stored = headed(req);
    } catch (err) {
      this.#deps.logger.warn("undecodable request not spilled; dead-lettering", {
        subject: req.subject,
        error: err,
      });
      await this.#deadLetter(req, "undecodable");
      return;
    }
    try {
      await this.#deps.spill(stored, copyHeaders(stored.headers));
      if (overflow) {
        this.#deps.logger.debug("request queue full; request spilled into the service stream", {
          subject: req.subject,
        });
      }
    } catch (err) {
      this.#deps.logger.warn("request not spilled into the service stream; dead-lettering", {
        subject: req.subject,
        error: err,
      });
      await this.#deadLetter(req, "overflow");
    }
  }

  async #deadLetter(
    req: CoreRequest,
    reason: DeadLetterReason,
    extra?: Readonly<Record<string, string>>,
  ): Promise<void> {
    const info: AckInfo = {
      stream: "core",
      consumer: this.#deps.service,
      deliveryCount: 1,
      streamSequence: 0,
      timestampMs: Date.now(),
      // Stored once: a core request has no stream sequence to make the id of.
      deadLetterId: `core:${nuid.next()}`,
    };
    try {
      let stored = req;
      try {
        stored = headed(req);
      } catch {
        // Undecodable: its bytes (and any headers) go to the dead-letter stream as they came,
        // marked.
        const marked = copyHeaders(req.headers);
        marked.set(NatsHeader.deadLetterFraming, "compact");
        stored = { ...req, headers: marked, compact: false };
      }
      await this.#deps.deadLetter(stored, info, reason, extra);
    } catch (err) {
      // A core request is not stored anywhere else: the caller fails at its ttl.
      this.#deps.logger.error("request not dead-lettered; dropped", {
        subject: req.subject,
        reason,
        error: err,
      });
    }
  }

  /**
   * Stops taking requests: the subscriptions are withdrawn; requests waiting go to another
   * instance at once, those handed out once their handler returns unsettled.
   */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      const drained = this.#drain();
      void this.#ledger.stop();
      const returned = this.#returnWaiting();
      this.#deps.onStopped(this);
      await drained;
      await this.#deps.nc.flush().catch(() => undefined);
      await returned;
      await Promise.all([...this.#resending]);
    })();
    return this.#stopping;
  }

  /**
   * The transport is closing: unsettled requests are published again now (into the stream when
   * this was the last instance); resolves once they are. Never rejects.
   */
  async shutdown(): Promise<void> {
    const drained = this.#drain();
    await Promise.all([this.#ledger.close(), this.#returnWaiting(), drained]);
    await Promise.all([...this.#resending]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /**
   * Withdraws the subscriptions with a drain, not an unsubscribe: nats.js drops, unseen, whatever
   * the server sent before it had an unsubscribe, and such a request would be lost (the caller
   * timing out). A drain hands them to {@link #onMessage}, which sends them on.
   */
  async #drain(): Promise<void> {
    await Promise.all(
      this.#subs.splice(0).map(async (sub) => {
        try {
          await sub.drain();
        } catch {
          // the connection is closed or draining: the subscription went with it
          try {
            sub.unsubscribe();
          } catch {
            // already gone
          }
        }
      }),
    );
  }

  #returnWaiting(): Promise<void> {
    return Promise.all(this.#waiting.splice(0).map((req) => this.#sendAgain(req))).then(
      () => undefined,
    );
  }
}

function copyHeaders(h: MsgHdrs | undefined): MsgHdrs {
  const out = natsHeadersOf();
  if (h !== undefined) for (const [key, values] of h) for (const v of values) out.append(key, v);
  return out;
}

function markedRedelivered(h: MsgHdrs | undefined): MsgHdrs {
  const out = copyHeaders(h);
  out.set(NatsHeader.redelivered, "1");
  return out;
}
