import {
  createInbox,
  type Msg,
  type NatsConnection,
  type NatsError,
  type Subscription,
} from "nats";
import { copyBytes } from "@nuropb/protocol";
import type { Delivery, DeliveryHandler, Listener, Logger } from "@nuropb/protocol";
import { DeadLetterRefused, type DeadLetterReason } from "./dead-letter.ts";
import { decodeFrameHeaders, type DecodedFrameFields } from "./frame-headers.ts";
import { parseAckSubject, type AckInfo } from "./names.ts";

/** A durable JetStream consumer a service listener pulls from. */
export interface PullSource {
  readonly stream: string;
  readonly consumer: string;
  /** For the events consumer: true when this listener's service wants the message's subject. */
  readonly accepts?: (subject: string) => boolean;
}

/** What a {@link ServiceConsumer} needs from its transport. */
export interface ServiceConsumerDeps {
  readonly nc: NatsConnection;
  /** Publishes a control message (pull, ack, nak…); fire-and-forget. Settlements are kept while the link is down. */
  readonly control: (subject: string, payload: string, reply?: string) => void;
  readonly logger: Logger;
  readonly sources: readonly PullSource[];
  /** Most deliveries received and not settled (handed out or waiting for a slot). */
  readonly window: number;
  readonly ackWaitMs: number;
  /**
   * The ack wait of the consumers as the server last reported it (another instance may have
   * declared them with a different one): progress is paced by the lower of the two.
   */
  readonly serverAckWaitMs?: () => number | undefined;
  readonly handler: DeliveryHandler;
  /**
   * Publishes a copy of `msg` to the dead-letter stream; rejects when the broker did not take it,
   * with a {@link DeadLetterRefused} when it definitely refused it.
   */
  readonly deadLetter: (msg: Msg, info: AckInfo, reason: DeadLetterReason) => Promise<void>;
  /** True while the connection is up and the transport open. */
  readonly linkUp: () => boolean;
  /** A consumer was deleted under us: the transport re-declares the topology. */
  readonly onConsumerLost: () => void;
  readonly onStopped: (consumer: ServiceConsumer) => void;
}

/** Period of the clock that sends progress and notices lost pulls, at least, in milliseconds. */
export const CONSUMER_TICK_MS = 250;
/** Longest a pull request waits at the server, in milliseconds. */
const PULL_EXPIRES_MS = 10_000;
/**
 * Longest `stop()` (and a transport's close) waits for the server to confirm that the pull
 * inboxes are withdrawn, in milliseconds: past it (the link dropped meanwhile, say) the listener
 * stops anyway, and the drain completes or ends with the connection.
 */
export const WITHDRAW_WAIT_MS = 2_000;
/**
 * Most messages one pull loop keeps asked for at the server and not yet received (less when
 * the window is smaller). The server hands messages round-robin over the open pulls of every
 * instance, but a pull that has not reached it yet (an instance starting, pulling again after
 * an expiry, reconnecting) gets nothing: meanwhile the open pulls of the others take what comes,
 * up to this much each before they must pull again and queue behind it.
 */
export const PULL_CREDIT = 16;
/** First wait before pulling again after a pull status that gives no count, in milliseconds. */
export const PULL_RETRY_MIN_MS = 100;
/** Longest wait before pulling again after such statuses in a row, in milliseconds. */
export const PULL_RETRY_MAX_MS = 2_000;
/** Dead-letter publishes refused, with the link up, before a message is terminated without one. */
export const DEAD_LETTER_ATTEMPTS = 3;
/** Longest wait between dead-letter publishes that failed without a refusal, in milliseconds. */
export const DEAD_LETTER_RETRY_MAX_MS = 10_000;

class PullLoop {
  outstanding = 0;
  expiresAt = 0;
  /** Wait before the next pull after a status without a count; 0 once a message arrives. */
  backoffMs = 0;
  /** Set while the loop waits out {@link backoffMs}: no pull until it fires. */
  retryTimer: NodeJS.Timeout | undefined;
  readonly inbox = createInbox();
  #sub: Subscription | undefined;
  readonly #nextSubject: string;
  readonly source: PullSource;
  readonly #deps: ServiceConsumerDeps;

  constructor(source: PullSource, deps: ServiceConsumerDeps) {
    this.source = source;
    this.#deps = deps;
    this.#nextSubject = `$JS.API.CONSUMER.MSG.NEXT.${source.stream}.${source.consumer}`;
  }

  subscribe(callback: (err: NatsError | null, msg: Msg) => void): void {
    this.#sub = this.#deps.nc.subscribe(this.inbox, { callback });
  }

  pull(batch: number): void {
    this.#deps.control(
      this.#nextSubject,
      JSON.stringify({ batch, expires: PULL_EXPIRES_MS * 1_000_000 }),
      this.inbox,
    );
    this.outstanding += batch;
    this.expiresAt = Date.now() + PULL_EXPIRES_MS;
  }

  /**
   * Withdraws interest in the inbox so that the pulls still open at the server take nothing
   * more: the server drops a pull whose reply subject nobody listens to. Drained while the link
   * is up: what the server sent before it read the unsubscription still reaches the callback.
   * Resolves once the server has the unsubscription (or the connection is gone); never rejects.
   */
  withdraw(linkUp: boolean): Promise<void> {
    const sub = this.#sub;
    this.#sub = undefined;
    this.cancelRetry();
    if (sub === undefined) return Promise.resolve();
    // With the link down the server has already dropped this connection's interest, and a drain
    // would wait for the reconnect.
    if (!linkUp) {
      sub.unsubscribe();
      return Promise.resolve();
    }
    return sub.drain().catch(() => sub.unsubscribe());
  }

  cancelRetry(): void {
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }
}

interface Held {
  readonly msg: Msg;
  readonly info: AckInfo;
  /** The message's `$JS.ACK…` subject. */
  readonly ackSubject: string;
  readonly loop: PullLoop;
  progressAt: number;
  /** Acked, requeued, rejected or given back: later settle calls are no-ops. */
  settled: boolean;
  /** The handler has returned (or thrown). */
  handlerDone: boolean;
}

/**
 * One service listener: pulls from the service's stream (and the events stream when it has event
 * bindings) into one window of `prefetch` unsettled deliveries, hands them to the handler and
 * settles them with JetStream acks.
 *
 * Pull accounting: each loop keeps at most one small pull alive even when another loop holds the
 * whole window, so a busy rpc stream never starves events; the window can thus be exceeded by
 * one message per extra loop, which waits locally (never in the handler) until a slot frees.
 */
export class ServiceConsumer implements Listener {
  readonly #deps: ServiceConsumerDeps;
  readonly #loops: PullLoop[];
  readonly #waiting: Held[] = [];
  readonly #held = new Set<Held>();
  /** Released deliveries whose dead letter is being stored: progress goes on until +TERM. */
  readonly #deadLettering = new Set<Held>();
  #active = 0;
  #paused = false;
  #stopped = false;
  /** Set once the pull inboxes are being withdrawn; settles when they are (bounded). */
  #withdrawn: Promise<void> | undefined;
  /** The transport closed: nothing more goes to the server. */
  #shutDown = false;
  #timer: NodeJS.Timeout | undefined;
  #tickMs = 0;

  constructor(deps: ServiceConsumerDeps) {
    this.#deps = deps;
    this.#loops = deps.sources.map((s) => new PullLoop(s, deps));
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
    this.#stopped = true;
    this.#returnWaiting();
    // Unsettled deliveries whose handler has returned go back, marked redelivered; a handler
    // still running may still settle its delivery.
    for (const h of [...this.#held]) if (h.handlerDone) this.#giveBack(h);
    this.#deps.onStopped(this);
    await this.#withdraw();
  }

  /**
   * The transport is closing: every unsettled delivery goes back now; settling it later is a
   * no-op. Resolves once the pull inboxes are withdrawn (as {@link stop}); never rejects.
   */
  shutdown(): Promise<void> {
    this.#stopped = true;
    this.#shutDown = true;
    this.#returnWaiting();
    for (const h of [...this.#held]) this.#giveBack(h);
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    return this.#withdraw();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** Messages received but never handed out go back at once rather than after the ack wait. */
  #returnWaiting(): void {
    for (const h of this.#waiting.splice(0)) {
      this.#held.delete(h);
      this.#settle(h, "-NAK");
    }
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
    if (this.#active === 0 && this.#deadLettering.size === 0 && this.#timer !== undefined) {
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
    loop.outstanding = Math.max(0, loop.outstanding - 1);
    loop.backoffMs = 0;
    const held: Held = {
      msg,
      info,
      ackSubject: msg.reply ?? "",
      loop,
      progressAt: Date.now(),
      settled: false,
      handlerDone: false,
    };
    if (this.#stopped) {
      // Sent before the server had the withdrawal: back at once, for another listener.
      this.#settle(held, "-NAK");
      return;
    }
    if (loop.source.accepts !== undefined && !loop.source.accepts(msg.subject)) {
      // An event none of this service's bindings match: done with it.
      this.#settle(held, "+ACK");
      this.#pump();
      return;
    }
    this.#held.add(held);
    this.#waiting.push(held);
    this.#dispatch();
    this.#pump();
  }

  #onStatus(loop: PullLoop, msg: Msg): void {
    const code = msg.headers?.code ?? 0;
    if (code === 100) return; // idle heartbeat / flow control
    // A pull that ends (expired) says how many of its messages never came. A status without
    // that count (consumer deleted, leadership change, no responders…) ends the pull too, and
    // the count is unknown: every pull is taken as over. Pulling again may at worst fetch a
    // batch beyond the window, which waits here until a slot frees; waiting for the expiry
    // instead would stall the loop for a pull that will never deliver. Such a status can answer
    // every pull at once (no consumer, no leader): the next pull waits PULL_RETRY_MIN_MS,
    // doubling up to PULL_RETRY_MAX_MS while they go on, until a message arrives.
    const header = msg.headers?.get("Nats-Pending-Messages") ?? "";
    const pending = header.trim() === "" ? Number.NaN : Number(header);
    const counted = Number.isSafeInteger(pending) && pending >= 0;
    loop.outstanding = counted ? Math.max(0, loop.outstanding - pending) : 0;
    if (code !== 408 || !counted) {
      const description = msg.headers?.description ?? "";
      this.#deps.logger.debug("pull status", { stream: loop.source.stream, code, description });
      // No responders: the consumer (or its stream) is gone, or has no leader for now.
      if (code === 503 || (code === 409 && /deleted/i.test(description)))
        this.#deps.onConsumerLost();
    }
    if (this.#stopped) return;
    if (!counted) {
      loop.backoffMs =
        loop.backoffMs === 0 ? PULL_RETRY_MIN_MS : Math.min(PULL_RETRY_MAX_MS, loop.backoffMs * 2);
      loop.cancelRetry();
      loop.retryTimer = setTimeout(() => {
        loop.retryTimer = undefined;
        this.#pump();
      }, loop.backoffMs);
      loop.retryTimer.unref();
    }
    this.#pump();
  }

  #pump(): void {
    if (this.#stopped || this.#paused) return;
    const window = this.#deps.window;
    const held = this.#held.size;
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
    while (this.#waiting.length > 0 && this.#active < this.#deps.window) {
      const held = this.#waiting.shift() as Held;
      this.#active++;
      void this.#deliver(held);
    }
  }

  #release(held: Held): void {
    if (!this.#held.delete(held)) return;
    this.#active--;
    if (this.#stopped && this.#withdrawn !== undefined) this.#stopTimerIfIdle();
    this.#dispatch();
    this.#pump();
  }

  #giveBack(held: Held): void {
    if (held.settled) return;
    held.settled = true;
    this.#settle(held, "-NAK");
    this.#release(held);
  }

  #settle(held: Held, verb: "+ACK" | "-NAK" | "+TERM" | "+WPI"): void {
    // If the connection is gone for good, the broker redelivers the message after the ack wait.
    this.#deps.control(held.ackSubject, verb);
  }

  /**
   * Stores a copy in the dead-letter stream, then terminates the message. A copy the broker
   * definitely refuses while the link is up (a JetStream API error, or too large even bare;
   * DEAD_LETTER_ATTEMPTS times) would make the message return forever: it is terminated without
   * one, and logged as an error. A copy that fails otherwise (a publish timeout, no responders
   * while the dead-letter stream's leader is elected or its server is down) is sent again,
   * waiting longer each time up to DEAD_LETTER_RETRY_MAX_MS, with progress going on: the message
   * is never terminated without a copy for it. A copy lost to a link that is down, a listener
   * that stops or a transport that closes leaves the message unacknowledged, so it comes back
   * after the ack wait.
   */
  async #deadLetter(held: Held, reason: DeadLetterReason): Promise<void> {
    // Progress goes on while the copy is stored (it may wait for the link, up to the publish
    // timeout, and be tried again), so the message is not redelivered elsewhere meanwhile and
    // dead-lettered a second time.
    this.#deadLettering.add(held);
    try {
      await this.#tryDeadLetter(held, reason);
    } finally {
      this.#deadLettering.delete(held);
    }
  }

  async #tryDeadLetter(held: Held, reason: DeadLetterReason): Promise<void> {
    const { stream, streamSequence: seq } = held.info;
    let refusals = 0;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#deps.deadLetter(held.msg, held.info, reason);
        this.#settle(held, "+TERM");
        return;
      } catch (err) {
        const refused = err instanceof DeadLetterRefused;
        if (refused) refusals++;
        if (this.#shutDown || !this.#deps.linkUp() || (this.#stopped && !refused)) {
          this.#deps.logger.warn("dead-letter publish failed; the message will be redelivered", {
            reason,
            stream,
            seq,
            error: err,
          });
          return;
        }
        if (refusals >= DEAD_LETTER_ATTEMPTS) {
          this.#deps.logger.error(
            "dead-letter publish keeps failing; terminating the message without a dead letter",
            { reason, stream, seq, attempts: attempt, error: err },
          );
          this.#settle(held, "+TERM");
          return;
        }
        const waitMs = Math.min(
          DEAD_LETTER_RETRY_MAX_MS,
          CONSUMER_TICK_MS * 2 ** Math.min(attempt - 1, 10),
        );
        this.#deps.logger.warn("dead-letter publish failed; trying again", {
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

  async #deliver(held: Held): Promise<void> {
    const { msg, info } = held;
    let fields: DecodedFrameFields;
    try {
      fields = decodeFrameHeaders(msg.headers);
    } catch (err) {
      this.#deps.logger.warn("undecodable headers; dead-lettering", {
        stream: info.stream,
        error: err,
      });
      this.#release(held);
      await this.#deadLetter(held, "undecodable");
      return;
    }
    if (fields.ttlMs !== undefined && Date.now() > info.timestampMs + fields.ttlMs) {
      this.#deps.logger.debug("expired; dead-lettering", {
        stream: info.stream,
        seq: info.streamSequence,
      });
      this.#release(held);
      await this.#deadLetter(held, "expired");
      return;
    }
    const once = (fn: () => Promise<void> | void): Promise<void> => {
      if (held.settled) return Promise.resolve();
      held.settled = true;
      this.#release(held);
      return Promise.resolve(fn());
    };
    const delivery: Delivery = {
      headers: fields.headers,
      // A copy: the received bytes are a view into the socket's read buffer.
      body: copyBytes(msg.data),
      correlationId: fields.correlationId,
      ...(fields.replyTo !== undefined ? { replyTo: fields.replyTo } : {}),
      ...(fields.ttlMs !== undefined ? { ttlMs: fields.ttlMs } : {}),
      redelivered: info.deliveryCount > 1,
      ack: () => once(() => this.#settle(held, "+ACK")),
      requeue: () => once(() => this.#settle(held, "-NAK")),
      reject: () => once(() => this.#deadLetter(held, "rejected")),
    };
    try {
      await this.#deps.handler(delivery);
    } catch (err) {
      this.#deps.logger.warn("handler threw without settling; rejecting", { error: err });
      await delivery.reject();
    } finally {
      held.handlerDone = true;
    }
    if (this.#stopped) this.#giveBack(held);
  }

  #onTick(): void {
    const now = Date.now();
    // Tell the server we still hold what we hold, so a slow handler is not redelivered elsewhere.
    const every = this.#ackWaitMs() / 3;
    for (const held of [...this.#held, ...this.#deadLettering]) {
      if (now - held.progressAt >= every) {
        held.progressAt = now;
        this.#settle(held, "+WPI");
      }
    }
    // A pull whose expiry status never came (lost with a connection): forget it and pull again.
    let lost = false;
    for (const loop of this.#loops) {
      if (loop.outstanding > 0 && now > loop.expiresAt + 5_000) {
        loop.outstanding = 0;
        lost = true;
      }
    }
    if (lost) this.#pump();
    if (this.#stopped && this.#withdrawn !== undefined) this.#stopTimerIfIdle();
    // The consumer may have been re-declared meanwhile with another ack wait.
    if (this.#timer !== undefined) this.#armTimer();
  }
}
