import type { Redis } from "ioredis";
import type { Frame } from "@nuropb/protocol";
import type { Script } from "./scripts.ts";
import { frameToBlob, frameToFields, writeBlob, writeFrameFields } from "./frame-codec.ts";
import { SERVICE_GROUP } from "./keys.ts";
import { MsgpackArrayWriter } from "./msgpack.ts";
import {
  runScriptArgs,
  runScriptNow,
  SEND_BATCH,
  SEND_REPLY,
  SEND_RPC,
  writeNow,
} from "./scripts.ts";

/** Most frames in one script call: a call blocks the server while it runs. */
const MAX_BATCH_FRAMES = 256;
/** Body bytes after which a batch is sent at once rather than at the end of the tick. */
const MAX_BATCH_BYTES = 1024 * 1024;

/** What a frame of a batch is: `r` request or command, `e` event, `l` log append, `p` response. */
export type SendKind = "r" | "e" | "l" | "p";

interface Waiter {
  /** Log appends get the entry id; the others nothing. */
  readonly resolve: (id: string) => void;
  readonly reject: (err: Error) => void;
  readonly kind: SendKind;
  /** The rpc name, topic or address. */
  readonly target: string;
}

/** The acknowledgements a {@link SendBatcher} sends ahead of its frames (the transport's). */
export interface PendingAcks {
  /** Sends every collected acknowledgement now. */
  flush(): void;
  /** Takes the collected acknowledgements when they are one stream's, for a script to send. */
  takeOne(): { readonly stream: string; readonly ids: readonly string[] } | undefined;
  /** An acknowledgement sent by a script did not go through. */
  failed(err: unknown): void;
}

/** How a {@link SendBatcher} words its failures: the transport's errors. */
export interface SendErrors {
  /** A request or command that no service is bound to. */
  notDelivered(name: string): Error;
  /** A frame Redis refused, or a batch that failed as a whole. */
  failed(err: unknown, kind: SendKind, target: string): Error;
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
 *
 * At low load a batch would be one frame that waits for the end of the tick for nothing: a
 * request or response sent while no call of this batcher is unanswered and nothing is collected
 * goes at once, in a socket write of its own (after the pending acknowledgements), through a
 * script for that one frame ({@link SEND_RPC}, {@link SEND_REPLY}: the same outcome, a third of
 * the batch script's server time). What follows it in the tick is batched as before, so under
 * load (calls always unanswered) every frame is.
 */
export class SendBatcher {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #responseTtl: string;
  readonly #errors: SendErrors;
  readonly #acks: PendingAcks;
  #batch = new MsgpackArrayWriter();
  #waiters: Waiter[] = [];
  #scheduled = false;
  /** Script calls sent and not answered yet. */
  #unanswered = 0;
  readonly #onTick = (): void => {
    this.#scheduled = false;
    this.flush();
  };

  /**
   * @param acks are sent first whenever a batch or a lone frame is sent, so an ack made before a
   *   send reaches Redis before it even when another send opened this tick's batch earlier (both
   *   flush at the end of the tick, and whichever was scheduled first would otherwise go first).
   *   A lone response takes them into its own script.
   */
  constructor(
    redis: Redis,
    prefix: string,
    responseTtlMs: number,
    errors: SendErrors,
    acks: PendingAcks,
  ) {
    this.#redis = redis;
    this.#prefix = prefix;
    this.#responseTtl = String(responseTtlMs);
    this.#errors = errors;
    this.#acks = acks;
  }

  /** A request or command for the services bound to `name`; rejects when there is none. */
  rpc(name: string, frame: Frame): Promise<void> {
    if (this.#idle()) {
      const args = frameToFields(frame);
      args.unshift(this.#prefix, name);
      return this.#sendNow(SEND_RPC, args, "r", name);
    }
    return this.#addEntry("r", name, frame);
  }

  /** An event, for every service whose bindings match `topic` (none is fine). */
  event(topic: string, frame: Frame): Promise<void> {
    return this.#addEntry("e", topic, frame);
  }

  /**
   * An event that must be stored: added to the mesh's event log (rejects when there is none),
   * then delivered like {@link event}; resolves with the log entry's id.
   */
  logAppend(topic: string, frame: Frame): Promise<string> {
    const b = this.#batch;
    b.shortAscii("l");
    b.str(topic);
    writeFrameFields(b, frame);
    return this.#added<string>("l", topic);
  }

  /** A response to `address` (dropped when nobody holds the address). */
  reply(address: string, frame: Frame): Promise<void> {
    if (this.#idle()) {
      const args = [this.#prefix, address, this.#responseTtl, frameToBlob(frame)];
      // The acknowledgement of the request being answered, usually: in the same script.
      const acks = this.#acks.takeOne();
      if (acks !== undefined) args.push(acks.stream, SERVICE_GROUP, ...acks.ids);
      return this.#sendNow(SEND_REPLY, args, "p", address);
    }
    const b = this.#batch;
    b.shortAscii("p");
    b.str(address);
    b.uint(1);
    writeBlob(b, frame);
    return this.#added("p", address);
  }

  /** Nothing collected and no call unanswered: a frame sent now goes at once. */
  #idle(): boolean {
    return this.#unanswered === 0 && this.#waiters.length === 0;
  }

  /** Sends one frame at once through its own script (see the class comment). */
  #sendNow(s: Script, args: (string | Buffer)[], kind: SendKind, target: string): Promise<void> {
    this.#unanswered++;
    let sent!: Promise<unknown>;
    writeNow(this.#redis, () => {
      this.#acks.flush();
      sent = runScriptNow(this.#redis, s, args);
    });
    return sent.then(
      (answer) => {
        this.#unanswered--;
        let result = answer;
        if (Array.isArray(answer) && kind === "p") {
          // [pushed, why the acknowledgement it carried failed]
          this.#acks.failed(new BatchItemError(String(answer[1])));
          result = answer[0];
        }
        const err = this.#outcome(kind, target, result);
        if (err !== undefined) throw err;
      },
      (err: unknown) => {
        this.#unanswered--;
        throw this.#errors.failed(err, kind, target);
      },
    );
  }

  #addEntry(kind: SendKind, target: string, frame: Frame): Promise<void> {
    const b = this.#batch;
    b.shortAscii(kind);
    b.str(target);
    writeFrameFields(b, frame);
    return this.#added(kind, target);
  }

  #added<T = void>(kind: SendKind, target: string): Promise<T> {
    const promise = new Promise<T>((resolve, reject) => {
      this.#waiters.push({ resolve: resolve as (id: string) => void, reject, kind, target });
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
    this.#acks.flush();
    const batch = this.#batch.finish();
    this.#waiters = [];
    // Room for a batch like this one, without growing.
    this.#batch = new MsgpackArrayWriter(batch.length + 4096);
    this.#unanswered++;
    runScriptArgs(this.#redis, SEND_BATCH, [this.#prefix, this.#responseTtl, batch]).then(
      (results) => {
        this.#unanswered--;
        this.#settle(waiters, results);
      },
      (err: unknown) => {
        this.#unanswered--;
        for (const w of waiters) w.reject(this.#errors.failed(err, w.kind, w.target));
      },
    );
  }

  #settle(waiters: readonly Waiter[], results: unknown): void {
    if (!Array.isArray(results) || results.length !== waiters.length) {
      const err = new Error("unexpected reply to a batch of sends");
      for (const w of waiters) w.reject(this.#errors.failed(err, w.kind, w.target));
      return;
    }
    for (let i = 0; i < waiters.length; i++) {
      const w = waiters[i] as Waiter;
      const r: unknown = results[i];
      if (w.kind === "l" && Array.isArray(r) && typeof r[1] === "string") {
        w.resolve(r[1]);
      } else {
        const err = this.#outcome(w.kind, w.target, r);
        if (err === undefined) w.resolve("");
        else w.reject(err);
      }
    }
  }

  /** The error a frame's result stands for (a number: how many took it), or undefined. */
  #outcome(kind: SendKind, target: string, r: unknown): Error | undefined {
    if (typeof r !== "number" || kind === "l") {
      return this.#errors.failed(new BatchItemError(String(r)), kind, target);
    }
    if (r === 0 && kind === "r") return this.#errors.notDelivered(target);
    return undefined;
  }
}
