import type { Redis } from "ioredis";

/**
 * A consumer's own connection for blocking reads (XREADGROUP … BLOCK, BLMPOP) and the loop that
 * reads on it. Its client id is learnt at start and after every reconnect, so that ending it can
 * CLIENT UNBLOCK a read under way instead of waiting out the block.
 */
export class BlockingReader {
  readonly #blocking: Redis;
  readonly #control: Redis;
  #clientId: number | undefined;
  #loop: Promise<void> = Promise.resolve();

  /** `blocking`: the reading connection; `control`: a shared one that sends the UNBLOCK. */
  constructor(blocking: Redis, control: Redis) {
    this.#blocking = blocking;
    this.#control = control;
  }

  /** Learns the connection's client id, then runs `loop` (until it returns). */
  async start(loop: () => Promise<void>): Promise<void> {
    this.#blocking.on("ready", () => void this.#learnClientId());
    await this.#learnClientId();
    this.#loop = loop();
  }

  /** Ends the read under way, waits for the loop (at most 1 s), and disconnects. */
  async end(): Promise<void> {
    if (this.#clientId !== undefined) {
      await this.#control.client("UNBLOCK", this.#clientId).catch(() => undefined);
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.#loop, new Promise((r) => (timer = setTimeout(r, 1_000)))]);
    clearTimeout(timer);
    this.#blocking.disconnect();
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
