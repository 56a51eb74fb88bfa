/**
 * The prefetch window of one service listener, shared by its consumers: with
 * `requests: "core"` the pull consumer (commands, events, requests spilled into the stream) and
 * the core request consumer together hold at most `limit` unsettled deliveries.
 */
export class DeliveryWindow {
  readonly limit: number;
  readonly #members = new Map<() => number, () => void>();

  constructor(limit: number) {
    this.limit = limit;
  }

  /** A consumer counts its unsettled deliveries with `size`, and is told of a freed slot by `onRoom`. */
  join(size: () => number, onRoom: () => void): void {
    this.#members.set(size, onRoom);
  }

  /** Unsettled deliveries of every member. */
  get taken(): number {
    let n = 0;
    for (const size of this.#members.keys()) n += size();
    return n;
  }

  hasRoom(): boolean {
    return this.taken < this.limit;
  }

  /** A slot was freed: every member may hand out (or pull) again. */
  released(): void {
    for (const onRoom of this.#members.values()) onRoom();
  }
}
