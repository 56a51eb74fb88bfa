import { ErrorCode, type NatsConnection } from "nats";
import { LifecycleState, type Logger, type TransportLifecycle } from "@nuropb/protocol";
import { natsError } from "./nats-errors.ts";

/**
 * The transport's NATS connection and whether its socket is up. The client reconnects by itself
 * and drops what is written while it does: publishes wait here for the link
 * ({@link NatsLink.ready}), settlements are kept and sent once it is back
 * ({@link NatsLink.control}).
 */
export class NatsLink {
  #nc: NatsConnection | undefined;
  /** The socket is up (false between a disconnect and the client's reconnect). */
  #up = false;
  /** Settles once the link is up again; replaced at every disconnect. */
  #back: { promise: Promise<void>; resolve: () => void } = settled();
  /** Settlements written while the link was down: sent when it is back (acks stay valid). */
  readonly #heldControl: [subject: string, payload: string][] = [];
  #nextFlush: Promise<void> | undefined;
  readonly #life: TransportLifecycle;
  readonly #logger: Logger;

  constructor(life: TransportLifecycle, logger: Logger) {
    this.#life = life;
    this.#logger = logger;
  }

  /** The connection, once connected (kept after it closes). */
  get nc(): NatsConnection | undefined {
    return this.#nc;
  }

  get up(): boolean {
    return this.#up;
  }

  /** The connection is made: the link is up. */
  attach(nc: NatsConnection): void {
    this.#nc = nc;
    this.#up = true;
  }

  /** The socket dropped. True when the link was up until now (a new outage). */
  lost(): boolean {
    if (!this.#up) return false;
    this.#up = false;
    this.#back = pending();
    return true;
  }

  /** The client reconnected: whatever waits on the link goes on, held settlements go out. */
  restored(): void {
    if (this.#up) return;
    this.#up = true;
    this.#back.resolve();
    for (const [subject, payload] of this.#heldControl.splice(0)) this.control(subject, payload);
  }

  /** The transport is ending: nothing waits for the link any more. */
  release(): void {
    this.#back.resolve();
  }

  /**
   * Waits until the link is up (the client drops what is written while it reconnects), within
   * `deadline`.
   * @throws NATS-style timeout error when the deadline passes first.
   */
  async ready(deadline: number): Promise<void> {
    while (!this.#up) {
      if (this.#life.state !== LifecycleState.open) throw this.#life.closedError();
      const left = deadline - Date.now();
      if (left <= 0) throw natsError("NATS link down", ErrorCode.Timeout);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.#back.promise,
        new Promise<void>((r) => (timer = setTimeout(r, left))),
      ]);
      clearTimeout(timer);
    }
  }

  /** Acks, naks, progress and pulls: fire-and-forget, kept while the link is down. */
  control(subject: string, payload: string, reply?: string): void {
    const nc = this.#nc;
    if (nc === undefined || nc.isClosed()) return;
    if (!this.#up) {
      // Settlements stay valid across a reconnect; pulls and progress are sent afresh after it.
      if (reply === undefined && payload !== "+WPI") this.#heldControl.push([subject, payload]);
      return;
    }
    try {
      nc.publish(subject, payload, reply === undefined ? undefined : { reply });
    } catch (err) {
      this.#logger.debug("control message not sent", { error: err });
    }
  }

  /** One flush (PING/PONG) shared by every publish written before it goes out. */
  flushSoon(nc: NatsConnection): Promise<void> {
    this.#nextFlush ??= Promise.resolve().then(() => {
      this.#nextFlush = undefined;
      return nc.flush();
    });
    return this.#nextFlush;
  }
}

function settled(): { promise: Promise<void>; resolve: () => void } {
  return { promise: Promise.resolve(), resolve: () => {} };
}

function pending(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}
