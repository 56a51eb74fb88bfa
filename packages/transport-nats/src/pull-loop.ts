import {
  createInbox,
  type Msg,
  type NatsConnection,
  type NatsError,
  type Subscription,
} from "nats";

/** A durable JetStream consumer a service listener pulls from. */
export interface PullSource {
  readonly stream: string;
  readonly consumer: string;
  /** For the events consumer: true when this listener's service wants the message's subject. */
  readonly accepts?: (subject: string) => boolean;
}

/** Longest a pull request waits at the server, in milliseconds. */
const PULL_EXPIRES_MS = 10_000;
/** How long after its expiry a pull whose status never came is taken as lost, in milliseconds. */
const PULL_LOST_AFTER_MS = 5_000;
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

/** A status that ended pulls (a message on the pull inbox that carries none). */
export interface PullStatus {
  readonly code: number;
  readonly description: string;
  /** The status said how many messages of its pull never came (a 408 expiry does). */
  readonly counted: boolean;
}

/**
 * Pulls from one durable consumer into one inbox: counts the messages asked for and not yet
 * received, and how long to wait before pulling again after statuses that give no count.
 */
export class PullLoop {
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
  readonly #nc: NatsConnection;
  readonly #control: (subject: string, payload: string, reply?: string) => void;

  constructor(
    source: PullSource,
    nc: NatsConnection,
    control: (subject: string, payload: string, reply?: string) => void,
  ) {
    this.source = source;
    this.#nc = nc;
    this.#control = control;
    this.#nextSubject = `$JS.API.CONSUMER.MSG.NEXT.${source.stream}.${source.consumer}`;
  }

  subscribe(callback: (err: NatsError | null, msg: Msg) => void): void {
    this.#sub = this.#nc.subscribe(this.inbox, { callback });
  }

  pull(batch: number): void {
    this.#control(
      this.#nextSubject,
      JSON.stringify({ batch, expires: PULL_EXPIRES_MS * 1_000_000 }),
      this.inbox,
    );
    this.outstanding += batch;
    this.expiresAt = Date.now() + PULL_EXPIRES_MS;
  }

  /** A message of a pull came in. */
  received(): void {
    this.outstanding = Math.max(0, this.outstanding - 1);
    this.backoffMs = 0;
  }

  /**
   * Reads a status on the inbox; undefined for a heartbeat. A pull that ends (expired) says how
   * many of its messages never came. A status without that count (consumer deleted, leadership
   * change, no responders…) ends the pull too, and the count is unknown: every pull is taken as
   * over. Pulling again may at worst fetch a batch beyond the window, which waits in the
   * listener until a slot frees; waiting for the expiry instead would stall the loop for a pull
   * that will never deliver.
   */
  ended(msg: Msg): PullStatus | undefined {
    const code = msg.headers?.code ?? 0;
    if (code === 100) return undefined; // idle heartbeat / flow control
    const header = msg.headers?.get("Nats-Pending-Messages") ?? "";
    const pending = header.trim() === "" ? Number.NaN : Number(header);
    const counted = Number.isSafeInteger(pending) && pending >= 0;
    this.outstanding = counted ? Math.max(0, this.outstanding - pending) : 0;
    return { code, description: msg.headers?.description ?? "", counted };
  }

  /**
   * After a status without a count, which can answer every pull at once (no consumer, no
   * leader): the next pull waits PULL_RETRY_MIN_MS, doubling up to PULL_RETRY_MAX_MS while they
   * go on, until a message arrives. Then `pump` runs.
   */
  retryLater(pump: () => void): void {
    this.backoffMs =
      this.backoffMs === 0 ? PULL_RETRY_MIN_MS : Math.min(PULL_RETRY_MAX_MS, this.backoffMs * 2);
    this.cancelRetry();
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      pump();
    }, this.backoffMs);
    this.retryTimer.unref();
  }

  /** A pull whose expiry status never came (lost with a connection) is forgotten; true if so. */
  forgetLost(now: number): boolean {
    if (this.outstanding === 0 || now <= this.expiresAt + PULL_LOST_AFTER_MS) return false;
    this.outstanding = 0;
    return true;
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
