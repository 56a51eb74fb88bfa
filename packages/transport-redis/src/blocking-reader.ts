import type { Redis } from "ioredis";
import { coalesceWrites } from "./scripts.ts";

/** What a {@link BlockingReader} reads with: its consumer's side. */
export interface BlockingReads {
  /**
   * Sends one blocking read (XREADGROUP … BLOCK, BLMPOP) on the reading connection, or returns
   * undefined when the consumer wants none now (stopped, or no room in its window).
   */
  next(): Promise<unknown> | undefined;
  /** The answer of a read; answers come in the order the reads were sent. */
  answered(reply: unknown): void;
  /**
   * A read failed (every failed read is reported, `ending` once {@link BlockingReader.end} began):
   * what to do before reading again. The reader waits for it, backs off, then reads again.
   */
  failed(err: unknown, ending: boolean): Promise<void>;
}

/** How long {@link BlockingReader.end} waits for the queued reads to come back, in ms. */
const END_WAIT_MS = 1_000;

/**
 * A consumer's own connection for blocking reads and the reads queued on it. Several reads wait
 * in the connection at once (Redis runs a client's next command as soon as its blocked one is
 * answered), and they are topped up a batch at a time, in one socket write, once half of them
 * came back: a read sent per answer costs a socket write per message, on both sides the dearest
 * part of a message at low load. The connection's client id is learnt at start and after every
 * reconnect, so that ending can CLIENT UNBLOCK the read under way instead of waiting out the block.
 */
export class BlockingReader {
  readonly #blocking: Redis;
  readonly #control: Redis;
  readonly #depth: number;
  #reads: BlockingReads | undefined;
  #clientId: number | undefined;
  #queued = 0;
  #ending = false;
  #retrying = false;
  #backoffMs = 0;
  #retryTimer: NodeJS.Timeout | undefined;
  #onSettled: (() => void) | undefined;
  readonly #answered = (reply: unknown): void => {
    this.#queued--;
    this.#backoffMs = 0;
    this.#reads?.answered(reply);
    this.#settled();
    this.fill();
  };
  readonly #failed = (err: unknown): void => {
    this.#queued--;
    const reads = this.#reads;
    if (reads === undefined) return;
    const recovered = reads.failed(err, this.#ending);
    if (!this.#ending && !this.#retrying) {
      this.#retrying = true;
      this.#backoffMs = nextBackoffMs(this.#backoffMs);
      void recovered
        .catch(() => undefined)
        .then(
          () =>
            new Promise<void>((resolve) => {
              this.#retryTimer = setTimeout(resolve, this.#backoffMs);
            }),
        )
        .then(() => {
          this.#retryTimer = undefined;
          this.#retrying = false;
          this.fill();
        });
    }
    this.#settled();
  };

  /**
   * `blocking`: the reading connection; `control`: a shared one that sends the UNBLOCK;
   * `depth`: most reads queued at once (1: a read at a time).
   */
  constructor(blocking: Redis, control: Redis, depth: number) {
    this.#blocking = blocking;
    this.#control = control;
    this.#depth = Math.max(1, depth);
  }

  /** Learns the connection's client id, then queues the first reads. */
  async start(reads: BlockingReads): Promise<void> {
    this.#blocking.on("ready", () => void this.#learnClientId());
    await this.#learnClientId();
    this.#reads = reads;
    this.fill();
  }

  /**
   * Queues reads up to the depth, in one socket write, while the consumer wants them; does
   * nothing while more than half of the depth is queued (the answers top it up), while backing
   * off after a failure, or once ending.
   */
  fill(): void {
    const reads = this.#reads;
    if (reads === undefined || this.#ending || this.#retrying) return;
    if (this.#queued > this.#depth >> 1) return;
    let first = true;
    while (this.#queued < this.#depth) {
      if (first) coalesceWrites(this.#blocking);
      first = false;
      const read = reads.next();
      if (read === undefined) break;
      this.#queued++;
      read.then(this.#answered, this.#failed);
    }
  }

  /**
   * Stops queueing reads and unblocks the queued ones one by one (what they still bring is
   * answered as usual), for at most 1 s; then disconnects.
   */
  async end(): Promise<void> {
    this.#ending = true;
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    const deadline = Date.now() + END_WAIT_MS;
    while (this.#queued > 0) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      const settled = new Promise<void>((resolve) => (this.#onSettled = resolve));
      if (this.#clientId !== undefined) {
        await this.#control.client("UNBLOCK", this.#clientId).catch(() => undefined);
      }
      let timer: NodeJS.Timeout | undefined;
      // The next read may not be blocked yet when the UNBLOCK lands: try again shortly.
      await Promise.race([
        settled,
        new Promise((r) => (timer = setTimeout(r, Math.min(50, left)))),
      ]);
      clearTimeout(timer);
    }
    this.#onSettled = undefined;
    this.#blocking.disconnect();
  }

  #settled(): void {
    const resolve = this.#onSettled;
    this.#onSettled = undefined;
    resolve?.();
  }

  async #learnClientId(): Promise<void> {
    try {
      this.#clientId = Number(await this.#blocking.client("ID"));
    } catch {
      this.#clientId = undefined;
    }
  }
}

/** The wait before retrying a failed read: 50 ms, doubling up to 1 s. */
export function nextBackoffMs(previousMs: number): number {
  return Math.min(1_000, previousMs === 0 ? 50 : previousMs * 2);
}
