import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import { NuropbTransportError } from "@nuropb/protocol";
import { KERNELS, KernelOp, KernelStatus, cipherKernels, runKernelOp } from "./kernels.ts";
import type { CipherKernels, FernetOpenFailure } from "./kernels.ts";

// Cipher threads: the symmetric work of both suites (kernels.ts) moved off the event loop. Ops
// made together travel together: one transferred ArrayBuffer to a thread, one back. Inputs are
// written into the batch when an op is made (as the synchronous path reads them at once); an
// opened plaintext is copied out of the answer into a buffer of its own (it never shares memory
// with another's), a ciphertext stays a view into the answer.
// Measured alone: handing a 300-byte secretbox over costs the event loop ≈ 0.7 µs on an idle
// machine, doing it there ≈ 3.3 µs; on a machine with no idle core the hand-over costs far more.

/** Per op in a batch: opcode (1), length of part A (4), length of part B (4), key (32). */
const OP_HEAD = 1 + 4 + 4 + 32;
/** Per result: status (1), length (4). */
const RESULT_HEAD = 1 + 4;
/** A batch is sent at once when it holds this many ops or bytes, however busy the threads. */
const BATCH_OPS = 16;
const BATCH_BYTES = 1 << 20;
/** First room of a batch's buffer; it doubles as ops need (a large buffer per batch costs GC). */
const BATCH_ROOM = 4096;
/**
 * Batches a thread may have in flight. Ops wait while every thread has one out: the next batch
 * leaves when one comes back, with all that gathered meanwhile (each hand-over is a cross-thread
 * wake-up, several µs on a busy machine); when idle an op leaves at once. A burst is cut into
 * batches of BATCH_OPS that leave at once, so the event loop and the threads work side by side.
 * Measured (echo at c=64, memory transport, nacl): 16 ops + 1 in flight 31.2k req/s; one batch
 * per turn of the event loop 19.1k (every call then moves in lock-step with the others).
 */
const MAX_INFLIGHT = 1;
/** close() waits this long for batches already handed over, then stops the thread anyway. */
const CLOSE_WAIT_MS = 5000;

type Result = { readonly status: number; readonly bytes: Uint8Array };

/** An op written into its batch's buffer at `at` (header, key, part A, part B). */
interface Op {
  readonly code: number;
  readonly at: number;
  readonly resolve: (result: Result) => void;
  readonly reject: (err: Error) => void;
}

interface Thread {
  readonly worker: Worker;
  /** Batches sent and not yet answered, oldest first (a thread answers in order). */
  readonly inflight: Op[][];
  /** Called when `inflight` empties or the thread dies. */
  readonly idle: (() => void)[];
  dead: boolean;
  /** Whether it has answered a batch: a thread that dies before that is taken as unable to run. */
  answered: boolean;
}

/**
 * Runs one batch (count at 0, then per op: opcode, length of part A, length of part B, key,
 * part A, part B) with `run` and returns the answer (count, then per op: status, length, bytes).
 * Self-contained: cipher threads get it as source text; the calling thread runs it too.
 */
function runBatch(kernels: CipherKernels, run: typeof runKernelOp, buf: ArrayBuffer): ArrayBuffer {
  const view = new DataView(buf);
  const bytes = new Uint8Array(buf);
  const count = view.getUint32(0, true);
  const results: { status: number; out: Uint8Array }[] = [];
  let at = 4;
  let outBytes = 4;
  for (let i = 0; i < count; i++) {
    const code = bytes[at] as number;
    const aLength = view.getUint32(at + 1, true);
    const bLength = view.getUint32(at + 5, true);
    const key = bytes.subarray(at + 9, at + 41);
    const a = bytes.subarray(at + 41, at + 41 + aLength);
    const b = bytes.subarray(at + 41 + aLength, at + 41 + aLength + bLength);
    at += 41 + aLength + bLength;
    const r = run(kernels, code, key, a, b);
    results.push(r);
    outBytes += 5 + r.out.length;
  }
  const answer = new ArrayBuffer(outBytes);
  const answerView = new DataView(answer);
  const answerBytes = new Uint8Array(answer);
  answerView.setUint32(0, count, true);
  let w = 4;
  for (const r of results) {
    answerBytes[w] = r.status;
    answerView.setUint32(w + 1, r.out.length, true);
    answerBytes.set(r.out, w + 5);
    w += 5 + r.out.length;
  }
  return answer;
}

/**
 * The body of a cipher thread. Self-contained (it is sent as source text): it answers each batch
 * from `port` with `answer` and sends the answer back, transferred.
 */
function cipherThreadMain(
  port: {
    on(event: "message", fn: (buf: ArrayBuffer) => void): void;
    postMessage(value: ArrayBuffer, transfer: ArrayBuffer[]): void;
  },
  answer: (buf: ArrayBuffer) => ArrayBuffer,
): void {
  port.on("message", (buf) => {
    const out = answer(buf);
    port.postMessage(out, [out]);
  });
}

/**
 * Why an op was not done: not the message's fault, so a retryable NuropbTransportError (core
 * requeues a request it could not open for this reason instead of dead-lettering it).
 */
function stopped(description: string, cause?: unknown): NuropbTransportError {
  return new NuropbTransportError(
    `${description} before the operation completed`,
    cause === undefined ? { retryable: true } : { retryable: true, cause },
  );
}

let threadSource: string | undefined;

function source(): string {
  // `__name`: esbuild's keepNames (tsx, vitest) may wrap named functions in the text with it.
  threadSource ??= [
    '"use strict";',
    "var __name = (fn) => fn;",
    'const { parentPort, workerData } = require("node:worker_threads");',
    `const kernels = (${cipherKernels.toString()})(require(workerData.tweetnacl).lowlevel, require("node:crypto"));`,
    `const runKernelOp = (${runKernelOp.toString()});`,
    `const runBatch = (${runBatch.toString()});`,
    `(${cipherThreadMain.toString()})(parentPort, (buf) => runBatch(kernels, runKernelOp, buf));`,
  ].join("\n");
  return threadSource;
}

/** Starts a cipher thread. */
export function spawnCipherThread(): Worker {
  return new Worker(source(), {
    eval: true,
    // None of the process's flags: the source is plain CommonJS (a --input-type=module or a
    // loader such as tsx, inherited, would break it or slow it down).
    execArgv: [],
    workerData: { tweetnacl: createRequire(import.meta.url).resolve("tweetnacl") },
  });
}

/** An op on this thread, as a cipher thread would answer it. */
function runHere(code: number, key: Uint8Array, a: Uint8Array, b: Uint8Array): Promise<Result> {
  const r = runKernelOp(KERNELS, code, key, a, b);
  return Promise.resolve({ status: r.status, bytes: r.out });
}

/**
 * Runs the cipher kernels on `threads` worker threads. Threads start on first use and keep the
 * process alive only while they have work. Where threads cannot start (a permission model, a
 * bundle without tweetnacl on disk), and after {@link close}, ops run on the calling thread.
 * A thread that dies fails its batches with a retryable NuropbTransportError; ops waiting for it
 * go to a new one.
 */
export class CipherPool {
  readonly #size: number;
  readonly #threads: (Thread | undefined)[] = [];
  /** The batch being gathered: its ops, and the buffer they are written into (count at 0). */
  #batch: Op[] = [];
  #buf: Uint8Array<ArrayBuffer> | undefined;
  #used = 4;
  #scheduled = false;
  /** Ops run on the calling thread: after close(), or when threads cannot be started. */
  #here = false;
  #closing: Promise<void> | undefined;

  readonly #spawn: () => Worker;

  /** `spawn` starts one thread (tests pass one that fails, as a permission model would). */
  constructor(threads: number, spawn: () => Worker = spawnCipherThread) {
    this.#size = threads;
    this.#spawn = spawn;
  }

  /** Threads running now (for diagnostics and tests). */
  get threadCount(): number {
    return this.#threads.filter((t) => t !== undefined && !t.dead).length;
  }

  /** `kernels.box` on a thread: the sealed `m` (same length). */
  async box(key: Uint8Array, nonce: Uint8Array, m: Uint8Array): Promise<Uint8Array> {
    return this.#expectOk(await this.#run(KernelOp.box, key, nonce, m));
  }

  /** `kernels.unbox` on a thread: the opened bytes, or null when `c` fails to authenticate. */
  async unbox(key: Uint8Array, nonce: Uint8Array, c: Uint8Array): Promise<Uint8Array | null> {
    const r = await this.#run(KernelOp.unbox, key, nonce, c);
    return r.status === KernelStatus.mac ? null : this.#expectOk(r);
  }

  /** `kernels.fernetSeal` on a thread: returns the completed token (prefix from `token`). */
  async fernetSeal(key: Uint8Array, plain: Uint8Array, token: Uint8Array): Promise<Uint8Array> {
    return this.#expectOk(await this.#run(KernelOp.fernetSeal, key, plain, token));
  }

  /** `kernels.fernetOpen` on a thread. */
  async fernetOpen(key: Uint8Array, token: Uint8Array): Promise<Uint8Array | FernetOpenFailure> {
    const r = await this.#run(KernelOp.fernetOpen, key, token, new Uint8Array(0));
    if (r.status === KernelStatus.mac) return "mac";
    if (r.status === KernelStatus.padding) return "padding";
    return this.#expectOk(r);
  }

  /** `kernels.aeadSeal` on a thread: ciphertext ‖ tag. `nonceAad` is nonce (12) ‖ associated data. */
  async aeadSeal(key: Uint8Array, nonceAad: Uint8Array, plain: Uint8Array): Promise<Uint8Array> {
    return this.#expectOk(await this.#run(KernelOp.aeadSeal, key, nonceAad, plain));
  }

  /** `kernels.aeadOpen` on a thread: the plaintext, or null when `sealed` fails to authenticate. */
  async aeadOpen(
    key: Uint8Array,
    nonceAad: Uint8Array,
    sealed: Uint8Array,
  ): Promise<Uint8Array | null> {
    const r = await this.#run(KernelOp.aeadOpen, key, nonceAad, sealed);
    return r.status === KernelStatus.mac ? null : this.#expectOk(r);
  }

  /**
   * Lets the threads finish the batches already handed over (at most 5 s), then stops them.
   * Ops made from now on run on the calling thread. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#here = true;
    this.#runBatchHere();
    const threads = this.#threads.splice(0);
    await Promise.all(
      threads.map(async (t) => {
        if (t === undefined) return;
        if (!t.dead && t.inflight.length > 0) {
          let timer: ReturnType<typeof setTimeout> | undefined;
          await Promise.race([
            new Promise<void>((r) => t.idle.push(r)),
            new Promise<void>((r) => (timer = setTimeout(r, CLOSE_WAIT_MS))),
          ]);
          clearTimeout(timer);
        }
        t.dead = true;
        this.#failThread(t, stopped("the cipher threads were stopped"));
        await t.worker.terminate();
      }),
    );
  }

  #expectOk(r: Result): Uint8Array {
    if (r.status !== KernelStatus.ok) {
      throw new Error(`a cipher operation failed (status ${r.status})`);
    }
    return r.bytes;
  }

  #run(code: number, key: Uint8Array, a: Uint8Array, b: Uint8Array): Promise<Result> {
    if (this.#here) return runHere(code, key, a, b);
    const need = OP_HEAD + a.length + b.length;
    if (this.#used + need > BATCH_BYTES) this.#flush(true);
    if (this.#here) return runHere(code, key, a, b); // the flush found no thread
    return new Promise((resolve, reject) => {
      // Written into the batch now: the caller may reuse its buffers before the batch leaves.
      const buf = this.#room(need);
      const at = this.#used;
      buf[at] = code;
      const view = new DataView(buf.buffer);
      view.setUint32(at + 1, a.length, true);
      view.setUint32(at + 5, b.length, true);
      buf.set(key, at + 9);
      buf.set(a, at + OP_HEAD);
      buf.set(b, at + OP_HEAD + a.length);
      this.#used = at + need;
      this.#batch.push({ code, at, resolve, reject });
      if (this.#batch.length >= BATCH_OPS) this.#flush(true);
      else if (!this.#scheduled) {
        // Ops made in the same run of this thread's code go together.
        this.#scheduled = true;
        queueMicrotask(() => {
          this.#scheduled = false;
          this.#flush(false);
        });
      }
    });
  }

  /** The batch's buffer, with room for `need` more bytes (grown by doubling). */
  #room(need: number): Uint8Array<ArrayBuffer> {
    const buf = this.#buf;
    if (buf !== undefined && this.#used + need <= buf.length) return buf;
    let size = buf?.length ?? BATCH_ROOM;
    while (size < this.#used + need) size *= 2;
    const grown = new Uint8Array(size);
    if (buf !== undefined) grown.set(buf.subarray(0, this.#used));
    this.#buf = grown;
    return grown;
  }

  /** Runs the gathered ops on this thread (after close(), or when no thread can start). */
  #runBatchHere(): void {
    const ops = this.#batch;
    const buf = this.#buf;
    this.#batch = [];
    this.#buf = undefined;
    this.#used = 4;
    if (buf === undefined) return;
    new DataView(buf.buffer).setUint32(0, ops.length, true);
    this.#resolveBatch(ops, runBatch(KERNELS, runKernelOp, buf.buffer));
  }

  /** Sends the gathered ops to the least busy thread, unless all are busy and not `force`. */
  #flush(force: boolean): void {
    const buf = this.#buf;
    if (this.#batch.length === 0 || buf === undefined) return;
    const thread = this.#thread();
    if (thread === undefined) {
      this.#runBatchHere(); // no thread can start here: the ops run on this thread
      return;
    }
    if (!force && thread.inflight.length >= MAX_INFLIGHT) return; // sent when a batch returns
    const ops = this.#batch;
    this.#batch = [];
    this.#buf = undefined;
    this.#used = 4;
    new DataView(buf.buffer).setUint32(0, ops.length, true);
    if (thread.inflight.length === 0) thread.worker.ref(); // work to do: keep the process up
    thread.inflight.push(ops);
    thread.worker.postMessage(buf.buffer, [buf.buffer]);
  }

  /** The live thread with the fewest batches in flight (started when missing or dead). */
  #thread(): Thread | undefined {
    if (this.#here) return undefined;
    let i = 0;
    let least = Infinity;
    for (let k = 0; k < this.#size; k++) {
      const t = this.#threads[k];
      const load = t === undefined || t.dead ? -1 : t.inflight.length;
      if (load < least) {
        least = load;
        i = k;
      }
    }
    const existing = this.#threads[i];
    if (existing !== undefined && !existing.dead) return existing;
    let worker: Worker;
    try {
      worker = this.#spawn();
    } catch {
      this.#here = true;
      return undefined;
    }
    const thread: Thread = { worker, inflight: [], idle: [], dead: false, answered: false };
    worker.on("message", (answer: ArrayBuffer) => this.#settle(thread, answer));
    worker.on("error", (err) => {
      this.#died(thread, stopped(`a cipher thread failed: ${err.message}`, err));
    });
    worker.on("exit", (code) => {
      if (!thread.dead) this.#died(thread, stopped(`a cipher thread exited (code ${code})`));
    });
    // After the listeners (adding one refs the worker again): idle, it keeps no process alive.
    worker.unref();
    this.#threads[i] = thread;
    return thread;
  }

  #settle(thread: Thread, answer: ArrayBuffer): void {
    thread.answered = true;
    const ops = thread.inflight.shift();
    if (thread.inflight.length === 0) {
      thread.worker.unref();
      for (const done of thread.idle.splice(0)) done();
    }
    if (ops !== undefined) this.#resolveBatch(ops, answer);
    this.#flush(false);
  }

  /** Settles a batch's ops from its answer (whether a thread or this one made it). */
  #resolveBatch(ops: readonly Op[], answer: ArrayBuffer): void {
    const view = new DataView(answer);
    let at = 4;
    for (const op of ops) {
      const status = view.getUint8(at);
      const length = view.getUint32(at + 1, true);
      let bytes: Uint8Array;
      if (
        op.code === KernelOp.unbox ||
        op.code === KernelOp.fernetOpen ||
        op.code === KernelOp.aeadOpen
      ) {
        // A plaintext gets a buffer of its own: it never shares memory with another's.
        bytes = new Uint8Array(length); // a Uint8Array, as the synchronous path gives
        bytes.set(new Uint8Array(answer, at + RESULT_HEAD, length));
      } else bytes = new Uint8Array(answer, at + RESULT_HEAD, length); // ciphertext: a view
      at += RESULT_HEAD + length;
      op.resolve({ status, bytes }); // a failed op fails as on this thread (#expectOk)
    }
  }

  /**
   * A thread that dies fails its batches; ops waiting for it go to a new one. One that dies
   * before answering anything cannot run here (it failed to start): ops then run on this thread.
   */
  #died(thread: Thread, err: Error): void {
    thread.dead = true;
    this.#failThread(thread, err);
    if (!thread.answered) this.#here = true;
    this.#flush(false);
  }

  #failThread(thread: Thread, err: Error): void {
    for (const ops of thread.inflight.splice(0)) for (const op of ops) op.reject(err);
    thread.worker.unref();
    for (const done of thread.idle.splice(0)) done();
  }
}
