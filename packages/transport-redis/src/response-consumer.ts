import type { Redis } from "ioredis";
import type { Listener, Logger, ResponseHandler } from "@nuropb/protocol";
import { BlockingReader } from "./blocking-reader.ts";
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
/** Pops queued on the connection at once (see {@link BlockingReader}). */
const POP_DEPTH = 8;

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
    this.#reader = new BlockingReader(deps.blocking, deps.redis, POP_DEPTH);
  }

  get address(): string {
    return this.#deps.address;
  }

  async start(): Promise<void> {
    const d = this.#deps;
    this.#timer = setInterval(() => void this.holdLease(), Math.max(100, this.#deps.leaseMs / 3));
    this.#timer.unref();
    await this.#reader.start({
      next: () => this.#pop(),
      answered: (reply) => this.#popped(reply),
      failed: async (err, ending) => {
        if (!ending) d.logger.debug("pop failed; retrying", { address: d.address, error: err });
      },
    });
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

  #pop(): Promise<unknown> | undefined {
    if (this.#stopped) return undefined;
    const d = this.#deps;
    return d.blocking.callBuffer("BLMPOP", BLOCK_SECONDS, 1, d.list, "LEFT", "COUNT", POP_COUNT);
  }

  #popped(reply: unknown): void {
    if (!Array.isArray(reply)) return;
    const items = reply[1] as unknown;
    if (!Array.isArray(items)) return;
    const d = this.#deps;
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
