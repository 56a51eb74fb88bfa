import type { Redis } from "ioredis";
import type { Frame } from "@nuropb/protocol";
import { writeBlob, writeFrameFields } from "./frame-codec.ts";
import { MsgpackArrayWriter } from "./msgpack.ts";
import { runScriptArgs, SEND_BATCH } from "./scripts.ts";

/** Most frames in one script call: a call blocks the server while it runs. */
const MAX_BATCH_FRAMES = 256;
/** Body bytes after which a batch is sent at once rather than at the end of the tick. */
const MAX_BATCH_BYTES = 1024 * 1024;

interface Waiter {
  readonly resolve: (result: number) => void;
  readonly reject: (err: Error) => void;
}

/**
 * A frame of a batch that failed on the server while the others went through (the error that
 * Redis gave for it, e.g. `WRONGTYPE …`).
 */
export class BatchItemError extends Error {
  override name = "BatchItemError";
}

/**
 * Collects the frames sent in one tick and sends them in one call of the {@link SEND_BATCH}
 * script, in the order they were sent (a call per frame costs a command on both sides and a
 * script run on the server). Each frame still gets its own outcome: how many queues took it,
 * or its own error; a call that fails as a whole (timeout, connection closed) fails every frame
 * of it. Like any command on the connection, a batch caught by a dropped connection is sent
 * again after the reconnect.
 */
export class SendBatcher {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #responseTtl: string;
  #batch = new MsgpackArrayWriter();
  #waiters: Waiter[] = [];
  #scheduled = false;
  readonly #onTick = (): void => {
    this.#scheduled = false;
    this.flush();
  };

  constructor(redis: Redis, prefix: string, responseTtlMs: number) {
    this.#redis = redis;
    this.#prefix = prefix;
    this.#responseTtl = String(responseTtlMs);
  }

  /** A request or command for the services bound to `name`; resolves how many got it. */
  rpc(name: string, frame: Frame): Promise<number> {
    return this.#addEntry("r", name, frame);
  }

  /** An event; resolves how many services got it. */
  event(topic: string, frame: Frame): Promise<number> {
    return this.#addEntry("e", topic, frame);
  }

  /** A response to `address`; resolves 1 when pushed, 0 when nobody holds the address. */
  reply(address: string, frame: Frame): Promise<number> {
    const b = this.#batch;
    b.shortAscii("p");
    b.str(address);
    b.uint(1);
    writeBlob(b, frame);
    return this.#added();
  }

  #addEntry(kind: string, target: string, frame: Frame): Promise<number> {
    const b = this.#batch;
    b.shortAscii(kind);
    b.str(target);
    writeFrameFields(b, frame);
    return this.#added();
  }

  #added(): Promise<number> {
    const promise = new Promise<number>((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
    });
    if (this.#waiters.length >= MAX_BATCH_FRAMES || this.#batch.byteLength >= MAX_BATCH_BYTES) {
      this.flush();
    } else if (!this.#scheduled) {
      this.#scheduled = true;
      // After the microtasks of this tick: the sends their continuations make join the batch.
      process.nextTick(this.#onTick);
    }
    return promise;
  }

  /** Sends what is collected now. */
  flush(): void {
    const waiters = this.#waiters;
    if (waiters.length === 0) return;
    const batch = this.#batch.finish();
    this.#waiters = [];
    // Room for a batch like this one (and what a header record reserves), without growing.
    this.#batch = new MsgpackArrayWriter(batch.length + 4096);
    runScriptArgs(this.#redis, SEND_BATCH, [this.#prefix, this.#responseTtl, batch]).then(
      (results) => settle(waiters, results),
      (err: unknown) => {
        const e = err instanceof Error ? err : new Error(String(err));
        for (const w of waiters) w.reject(e);
      },
    );
  }
}

function settle(waiters: readonly Waiter[], results: unknown): void {
  if (!Array.isArray(results) || results.length !== waiters.length) {
    const err = new Error("unexpected reply to a batch of sends");
    for (const w of waiters) w.reject(err);
    return;
  }
  for (let i = 0; i < waiters.length; i++) {
    const w = waiters[i] as Waiter;
    const r: unknown = results[i];
    if (typeof r === "number") w.resolve(r);
    else w.reject(new BatchItemError(String(r)));
  }
}
