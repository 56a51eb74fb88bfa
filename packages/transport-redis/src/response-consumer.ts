import type { Redis } from "ioredis";
import type { Listener, Logger, ResponseHandler } from "@nuropb/protocol";
import { BlockingReader, nextBackoffMs } from "./blocking-reader.ts";
import { blobToFrame } from "./frame-codec.ts";
import { HOLD_LEASE, RELEASE_LEASE, runScript } from "./scripts.ts";

/** What a {@link ResponseConsumer} needs from its transport. */
export interface ResponseConsumerDeps {
  readonly redis: Redis;
  /** This consumer's own connection for blocking pops. */
  readonly blocking: Redis;
  readonly logger: Logger;
  readonly address: string;
  readonly list: string;
  readonly lease: string;
  /** Random token that marks our lease. */
  readonly token: string;
  readonly leaseMs: number;
  readonly handler: ResponseHandler;
  /** The lease is held by someone else (after a Redis restart, say). */
  readonly onLeaseLost: (address: string) => void;
  readonly onStopped: (consumer: ResponseConsumer) => void;
}

/** Seconds one blocking pop waits. */
const BLOCK_SECONDS = 5;
/** Most responses taken by one pop. */
const POP_COUNT = 256;

/**
 * The response list of one participant: popped in batches (BLMPOP) on a dedicated connection,
 * while a renewed lease keeps the address exclusive.
 */
export class ResponseConsumer implements Listener {
  readonly #deps: ResponseConsumerDeps;
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;
  readonly #reader: BlockingReader;

  constructor(deps: ResponseConsumerDeps) {
    this.#deps = deps;
    this.#reader = new BlockingReader(deps.blocking, deps.redis);
  }

  get address(): string {
    return this.#deps.address;
  }

  async start(): Promise<void> {
    this.#timer = setInterval(() => void this.holdLease(), Math.max(100, this.#deps.leaseMs / 3));
    this.#timer.unref();
    await this.#reader.start(() => this.#popLoop());
  }

  /** Takes or renews the lease; true when we hold it. */
  async holdLease(): Promise<boolean> {
    const d = this.#deps;
    if (this.#stopped) return false;
    try {
      const held = (await runScript(d.redis, HOLD_LEASE, [d.lease], [d.token, d.leaseMs])) === 1;
      if (!held && !this.#stopped) d.onLeaseLost(d.address);
      return held;
    } catch (err) {
      d.logger.debug("lease renewal failed", { address: d.address, error: err });
      return false;
    }
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    const d = this.#deps;
    await runScript(d.redis, RELEASE_LEASE, [d.lease], [d.token]).catch(() => undefined);
    await this.#reader.end();
    d.onStopped(this);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  async #popLoop(): Promise<void> {
    const d = this.#deps;
    let backoff = 0;
    while (!this.#stopped) {
      let reply: unknown;
      try {
        reply = await d.blocking.callBuffer(
          "BLMPOP",
          BLOCK_SECONDS,
          1,
          d.list,
          "LEFT",
          "COUNT",
          POP_COUNT,
        );
        backoff = 0;
      } catch (err) {
        if (this.#stopped) break;
        d.logger.debug("pop failed; retrying", { address: d.address, error: err });
        backoff = nextBackoffMs(backoff);
        await new Promise((r) => setTimeout(r, backoff));
        continue;
      }
      if (!Array.isArray(reply)) continue;
      const items = reply[1] as unknown;
      if (!Array.isArray(items)) continue;
      for (const item of items as unknown[]) {
        if (!Buffer.isBuffer(item)) continue;
        try {
          d.handler(blobToFrame(item));
        } catch (err) {
          d.logger.warn("response dropped", { address: d.address, error: err });
        }
      }
    }
  }
}
