/** Calls waiting for their reply, by correlation id, each with a timeout (a lost reply fails). */
export class PendingCalls {
  readonly #calls = new Map<
    string,
    { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }
  >();
  #next = 0;
  readonly #timeoutMs: number;
  readonly #what: string;

  constructor(what: string, timeoutMs = 10_000) {
    this.#what = what;
    this.#timeoutMs = timeoutMs;
  }

  /** Registers a call; `id` is the correlation id to send with it. */
  open(): { id: string; promise: Promise<unknown> } {
    const id = (this.#next++).toString(36);
    const promise = new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#calls.delete(id);
        reject(new Error(`${this.#what}: no reply within ${String(this.#timeoutMs)} ms`));
      }, this.#timeoutMs);
      this.#calls.set(id, { resolve, reject, timer });
    });
    return { id, promise };
  }

  resolve(id: string, value: unknown): void {
    const c = this.#calls.get(id);
    if (c === undefined) return;
    this.#calls.delete(id);
    clearTimeout(c.timer);
    c.resolve(value);
  }

  reject(id: string, err: Error): void {
    const c = this.#calls.get(id);
    if (c === undefined) return;
    this.#calls.delete(id);
    clearTimeout(c.timer);
    c.reject(err);
  }

  rejectAll(err: Error): void {
    for (const id of [...this.#calls.keys()]) this.reject(id, err);
  }
}
