import type { Msg, NatsConnection, NatsError } from "nats";
import type { DeliveryHandler, InboundFrame, Listener, Logger } from "@nuropb/protocol";
import { copyBytes, createDeliveryLedger } from "@nuropb/protocol/transport-kit";
import type { DeliveryLedger, HeldDelivery, Settlement } from "@nuropb/protocol/transport-kit";
import { storeDeadLetter, type DeadLetterReason } from "./dead-letter.ts";
import { DeliveryWindow } from "./delivery-window.ts";
import { decodeFrameHeaders, type DecodedFrameFields } from "./frame-headers.ts";
import { parseAckSubject, type AckInfo } from "./names.ts";
import { PULL_CREDIT, PullLoop, type PullSource } from "./pull-loop.ts";

/** What a {@link ServiceConsumer} needs from its transport. */
export interface ServiceConsumerDeps {
  readonly nc: NatsConnection;
  /** Publishes a control message (pull, ack, nak…); fire-and-forget. Settlements are kept while the link is down. */
  readonly control: (subject: string, payload: string, reply?: string) => void;
  readonly logger: Logger;
  readonly sources: readonly PullSource[];
  /** Most deliveries received and not settled (handed out or waiting for a slot). */
  readonly window: number;
  /** The window shared with the listener's core request consumer; else one of its own. */
  readonly shared?: DeliveryWindow;
  readonly ackWaitMs: number;
  /**
   * The ack wait of the consumers as the server last reported it (another instance may have
   * declared them with a different one): progress is paced by the lower of the two.
   */
  readonly serverAckWaitMs?: () => number | undefined;
  readonly handler: DeliveryHandler;
  /**
   * Publishes a copy of `msg` to the dead-letter stream; rejects when the broker did not take it,
   * with a `DeadLetterRefused` when it definitely refused it.
   */
  readonly deadLetter: (
    msg: Msg,
    info: AckInfo,
    reason: DeadLetterReason,
    /** Headers added to the copy (`Delivery.deadLetter`: the failure record). */
    extra?: Readonly<Record<string, string>>,
  ) => Promise<void>;
  /** True while the connection is up and the transport open. */
  readonly linkUp: () => boolean;
  /** A consumer was deleted under us: the transport re-declares the topology. */
  readonly onConsumerLost: () => void;
  readonly onStopped: (consumer: ServiceConsumer) => void;
}

/** Period of the clock that sends progress and notices lost pulls, at least, in milliseconds. */
export const CONSUMER_TICK_MS = 250;
/**
 * Longest `stop()` (and a transport's close) waits for the server to confirm that the pull
 * inboxes are withdrawn, in milliseconds: past it (the link dropped meanwhile, say) the listener
 * stops anyway, and the drain completes or ends with the connection.
 */
export const WITHDRAW_WAIT_MS = 2_000;

/** A message received from a pull, until it is settled. */
interface Pulled {
  readonly msg: Msg;
  readonly info: AckInfo;
  /** The message's `$JS.ACK…` subject. */
  readonly ackSubject: string;
  /** When progress (`+WPI`) was last sent for it, or it arrived. */
  progressAt: number;
}

/** The JetStream ack verb of a handler's settlement (a reject is a dead letter, then `+TERM`). */
const VERB = { ack: "+ACK", requeue: "-NAK" } as const;

/**
 * One service listener: pulls from the service's stream (and the events stream when it has event
 * bindings) into one window of `prefetch` unsettled deliveries, hands them to the handler and
 * settles them with JetStream acks. The delivery bookkeeping (settle once, reject when a handler
 * throws without settling, give back on stop and close, the window's slots) is the transport
 * kit's {@link DeliveryLedger}, which holds the deliveries handed to the handler; those received
 * and waiting for a slot wait here.
 *
 * Pull accounting: each loop keeps at most one small pull alive even when another loop holds the
 * whole window, so a busy rpc stream never starves events; the window can thus be exceeded by
 * one message per extra loop, which waits locally (never in the handler) until a slot frees.
 */
export class ServiceConsumer implements Listener {
  readonly #deps: ServiceConsumerDeps;
  readonly #loops: PullLoop[];
  /** Deliveries handed to the handler and not settled. */
  readonly #ledger: DeliveryLedger<Pulled>;
  /** The prefetch window; the ledger counts this consumer's part of it. */
  readonly #window: DeliveryWindow;
  /** Received, waiting for a slot in the window. */
  readonly #waiting: Pulled[] = [];
  /** Released deliveries whose dead letter is being stored: progress goes on until +TERM. */
  readonly #deadLettering = new Set<Pulled>();
  #paused = false;
  /** Set once the pull inboxes are being withdrawn; settles when they are (bounded). */
  #withdrawn: Promise<void> | undefined;
  /** The transport closed: nothing more goes to the server. */
  #shutDown = false;
  #timer: NodeJS.Timeout | undefined;
  #tickMs = 0;

  constructor(deps: ServiceConsumerDeps) {
    this.#deps = deps;
    this.#loops = deps.sources.map((s) => new PullLoop(s, deps.nc, deps.control));
    this.#ledger = createDeliveryLedger<Pulled>({
      prefetch: 0, // the window counts the slots
      settle: (pulled, outcome) => this.#settleAs(pulled, outcome),
      // Never falls back to a plain reject: the copy is stored as any dead letter is.
      deadLetter: (pulled, headers) => this.#deadLetter(pulled, "rejected", headers),
      // If the connection is gone for good, the broker redelivers them after the ack wait.
      giveBack: (pulled) => {
        for (const p of pulled) this.#settle(p, "-NAK");
      },
      onRelease: () => this.#window.released(),
      logger: deps.logger,
      describe: (p) => ({ stream: p.info.stream, seq: p.info.streamSequence }),
    });
    this.#window = deps.shared ?? new DeliveryWindow(deps.window);
    this.#window.join(
      () => this.#ledger.size,
      () => this.#onRelease(),
    );
  }

  get #stopped(): boolean {
    return this.#ledger.stopped;
  }

  /** Subscribes the pull inboxes and sends the first pulls. */
  start(): void {
    for (const loop of this.#loops) loop.subscribe((err, msg) => this.#onInbox(loop, err, msg));
    this.#armTimer();
    this.#pump();
  }

  /** The ack wait progress is paced by: the lower of the option and the server's, in ms. */
  #ackWaitMs(): number {
    const server = this.#deps.serverAckWaitMs?.();
    return server !== undefined && server > 0 && server < this.#deps.ackWaitMs
      ? server
      : this.#deps.ackWaitMs;
  }

  /** (Re)starts the clock when its period (a third of the ack wait, 250 ms to 5 s) changed. */
  #armTimer(): void {
    const tick = Math.max(CONSUMER_TICK_MS, Math.min(this.#ackWaitMs() / 3, 5_000));
    if (this.#timer !== undefined && tick === this.#tickMs) return;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#tickMs = tick;
    this.#timer = setInterval(() => this.#onTick(), tick);
    this.#timer.unref();
  }

  /** The connection dropped: pulls in flight are lost with it. */
  pause(): void {
    this.#paused = true;
    for (const loop of this.#loops) loop.outstanding = 0;
  }

  /** The connection (and topology) is back: pull again. */
  resume(): void {
    this.#paused = false;
    for (const loop of this.#loops) loop.outstanding = 0;
    if (this.#timer !== undefined) this.#armTimer();
    this.#pump();
  }

  /**
   * Stops pulling. Resolves once the server has withdrawn this listener's pulls (at most
   * {@link WITHDRAW_WAIT_MS}), so a message sent afterwards waits for the next listener.
   */
  async stop(): Promise<void> {
    if (this.#stopped) {
      await this.#withdrawn;
      return;
    }
    // Unsettled deliveries whose handler has returned go back, marked redelivered; a handler
    // still running may still settle its delivery.
    void this.#ledger.stop();
    this.#returnWaiting();
    this.#deps.onStopped(this);
    await this.#withdraw();
  }

  /**
   * The transport is closing: every unsettled delivery goes back now; settling it later is a
   * no-op. Resolves once the pull inboxes are withdrawn (as {@link stop}); never rejects.
   */
  shutdown(): Promise<void> {
    this.#shutDown = true;
    void this.#ledger.close();
    this.#returnWaiting();
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    return this.#withdraw();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** Messages received but never handed out go back at once rather than after the ack wait. */
  #returnWaiting(): void {
    for (const p of this.#waiting.splice(0)) this.#settle(p, "-NAK");
  }

  /**
   * Withdraws the pull inboxes. A pull left open at the server would take the next messages
   * sent to the consumer (nobody would read them: they would come back only after the ack
   * wait), and a message sent back with a nak is redelivered at once only while the server
   * runs: one still unacknowledged when it restarts waits out the ack wait too. So the inboxes
   * are drained rather than kept until the pulls expire: the server stops delivering to them,
   * and the few messages it sent before are read and sent back (see {@link #onInbox}).
   */
  #withdraw(): Promise<void> {
    this.#withdrawn ??= (async () => {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all(this.#loops.map((l) => l.withdraw(!this.#paused && this.#deps.linkUp()))),
        new Promise<void>((r) => {
          timer = setTimeout(r, WITHDRAW_WAIT_MS);
          timer.unref();
        }),
      ]);
      clearTimeout(timer);
      this.#stopTimerIfIdle();
    })();
    return this.#withdrawn;
  }

  /** Once stopped: the clock stops when no delivery needs progress any more. */
  #stopTimerIfIdle(): void {
    if (this.#ledger.size === 0 && this.#deadLettering.size === 0 && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  #onInbox(loop: PullLoop, err: NatsError | null, msg: Msg): void {
    if (err !== null) {
      this.#deps.logger.warn("pull subscription error", { stream: loop.source.stream, error: err });
      return;
    }
    const info = parseAckSubject(msg.reply);
    if (info === undefined) {
      this.#onStatus(loop, msg);
      return;
    }
    loop.received();
    const pulled: Pulled = { msg, info, ackSubject: msg.reply ?? "", progressAt: Date.now() };
    if (this.#stopped) {
      // Sent before the server had the withdrawal: back at once, for another listener.
      this.#settle(pulled, "-NAK");
      return;
    }
    if (loop.source.accepts !== undefined && !loop.source.accepts(msg.subject)) {
      // An event none of this service's bindings match: done with it.
      this.#settle(pulled, "+ACK");
      this.#pump();
      return;
    }
    this.#waiting.push(pulled);
    this.#dispatch();
    this.#pump();
  }

  #onStatus(loop: PullLoop, msg: Msg): void {
    const status = loop.ended(msg);
    if (status === undefined) return;
    const { code, description, counted } = status;
    if (code !== 408 || !counted) {
      this.#deps.logger.debug("pull status", { stream: loop.source.stream, code, description });
      // No responders: the consumer (or its stream) is gone, or has no leader for now.
      if (code === 503 || (code === 409 && /deleted/i.test(description)))
        this.#deps.onConsumerLost();
    }
    if (this.#stopped) return;
    if (!counted) loop.retryLater(() => this.#pump());
    this.#pump();
  }

  #pump(): void {
    if (this.#stopped || this.#paused) return;
    const window = this.#window.limit;
    const held = this.#window.taken + this.#waiting.length;
    let total = 0;
    for (const l of this.#loops) total += l.outstanding;
    const credit = Math.min(window, PULL_CREDIT);
    for (const loop of this.#loops) {
      if (loop.retryTimer !== undefined) continue;
      let room = Math.min(window - held - total, credit - loop.outstanding);
      if (room <= 0) {
        if (loop.outstanding === 0 && held < window) room = 1;
        else continue;
      }
      // Pull again once half of the credit came in (or the window is that nearly full).
      if (loop.outstanding > 0 && room < Math.ceil(credit / 2)) continue;
      try {
        loop.pull(room);
        total += room;
      } catch (err) {
        this.#deps.logger.debug("pull not sent", { error: err });
        return;
      }
    }
  }

  #dispatch(): void {
    while (this.#waiting.length > 0 && this.#ledger.hasRoom() && this.#window.hasRoom()) {
      const held = this.#ledger.hold(this.#waiting.shift() as Pulled);
      void this.#deliver(held);
    }
  }

  /** A slot freed (a delivery settled or given back): hand out and pull again. */
  #onRelease(): void {
    if (this.#stopped && this.#withdrawn !== undefined) this.#stopTimerIfIdle();
    this.#dispatch();
    this.#pump();
  }

  /** How a handler's settlement reaches JetStream. */
  #settleAs(pulled: Pulled, outcome: Settlement): Promise<void> | void {
    if (outcome === "reject") return this.#deadLetter(pulled, "rejected");
    this.#settle(pulled, VERB[outcome]);
  }

  #settle(pulled: Pulled, verb: "+ACK" | "-NAK" | "+TERM" | "+WPI"): void {
    // If the connection is gone for good, the broker redelivers the message after the ack wait.
    this.#deps.control(pulled.ackSubject, verb);
  }

  /**
   * Stores a copy in the dead-letter stream, then terminates the message (see
   * `storeDeadLetter`). Progress goes on while the copy is stored (it may wait for the link, up
   * to the publish timeout, and be tried again), so the message is not redelivered elsewhere
   * meanwhile and dead-lettered a second time. A copy lost to a link that is down, a listener
   * that stops or a transport that closes leaves the message unacknowledged, so it comes back
   * after the ack wait.
   */
  async #deadLetter(
    pulled: Pulled,
    reason: DeadLetterReason,
    extra?: Readonly<Record<string, string>>,
  ): Promise<void> {
    this.#deadLettering.add(pulled);
    try {
      await storeDeadLetter({
        store: () => this.#deps.deadLetter(pulled.msg, pulled.info, reason, extra),
        terminate: () => this.#settle(pulled, "+TERM"),
        abandon: (refused) => this.#shutDown || !this.#deps.linkUp() || (this.#stopped && !refused),
        logger: this.#deps.logger,
        reason,
        info: pulled.info,
      });
    } finally {
      this.#deadLettering.delete(pulled);
    }
  }

  async #deliver(held: HeldDelivery<Pulled>): Promise<void> {
    const pulled = held.message;
    const { msg, info } = pulled;
    let fields: DecodedFrameFields;
    try {
      fields = decodeFrameHeaders(msg.headers);
    } catch (err) {
      this.#deps.logger.warn("undecodable headers; dead-lettering", {
        stream: info.stream,
        error: err,
      });
      this.#ledger.release(held);
      await this.#deadLetter(pulled, "undecodable");
      return;
    }
    // A request spilled from core NATS (or sent again) keeps the ttl of its first send.
    const sentAtMs = Math.min(info.timestampMs, fields.sentAtMs ?? info.timestampMs);
    if (fields.ttlMs !== undefined && Date.now() > sentAtMs + fields.ttlMs) {
      this.#deps.logger.debug("expired; dead-lettering", {
        stream: info.stream,
        seq: info.streamSequence,
      });
      this.#ledger.release(held);
      await this.#deadLetter(pulled, "expired");
      return;
    }
    const frame: InboundFrame = {
      headers: fields.headers,
      // A copy: the received bytes are a view into the socket's read buffer.
      body: copyBytes(msg.data),
      correlationId: fields.correlationId,
      ...(fields.replyTo !== undefined ? { replyTo: fields.replyTo } : {}),
      ...(fields.ttlMs !== undefined ? { ttlMs: fields.ttlMs } : {}),
      redelivered: info.deliveryCount > 1 || fields.redelivered === true,
    };
    await this.#ledger.dispatch(held, frame, this.#deps.handler);
  }

  #onTick(): void {
    const now = Date.now();
    // Tell the server we still hold what we hold, so a slow handler is not redelivered elsewhere.
    const every = this.#ackWaitMs() / 3;
    const holding = [
      ...this.#ledger.unsettled().map((h) => h.message),
      ...this.#waiting,
      ...this.#deadLettering,
    ];
    for (const pulled of holding) {
      if (now - pulled.progressAt >= every) {
        pulled.progressAt = now;
        this.#settle(pulled, "+WPI");
      }
    }
    // A pull whose expiry status never came (lost with a connection): forget it and pull again.
    let lost = false;
    for (const loop of this.#loops) if (loop.forgetLost(now)) lost = true;
    if (lost) this.#pump();
    if (this.#stopped && this.#withdrawn !== undefined) this.#stopTimerIfIdle();
    // The consumer may have been re-declared meanwhile with another ack wait.
    if (this.#timer !== undefined) this.#armTimer();
  }
}
