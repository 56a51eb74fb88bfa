import { newId } from "@nuropb/protocol";
import type {
  Frame,
  ServiceQueueSpec,
  Transport,
  TransportEvent,
  WireHeaders,
} from "@nuropb/protocol";

/** Default time a helper waits before failing, in milliseconds. */
export const DEFAULT_WAIT_TIMEOUT_MS = 10_000;

/**
 * Waits until `predicate` returns true, checking every few milliseconds.
 * @param timeoutMs - how long to wait before failing, in milliseconds.
 * @param description - what is awaited, for the failure message.
 * @throws Error naming `description` when the time runs out (or what `predicate` throws).
 * @example
 * ```ts
 * await waitFor(() => received.length === 3, 5_000, "three deliveries");
 * ```
 */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  timeoutMs: number = DEFAULT_WAIT_TIMEOUT_MS,
  description = "a condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${description}`);
    }
    await delay(5);
  }
}

/**
 * Settles like `promise`, or rejects when it has not settled within `timeoutMs`.
 * @throws Error naming `description` on timeout.
 */
export function withTimeout<T>(
  promise: PromiseLike<T>,
  timeoutMs: number = DEFAULT_WAIT_TIMEOUT_MS,
  description = "an operation",
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${description}`)),
      timeoutMs,
    );
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err as Error);
      },
    );
  });
}

/** Items gathered from callbacks, with waits that resolve as soon as enough have arrived. */
export interface Collector<T> {
  /** Everything collected so far, in arrival order. */
  readonly items: readonly T[];
  /** Adds an item (use it as, or inside, a handler). */
  push(item: T): void;
  /**
   * Resolves with all items once at least `count` have arrived.
   * @throws Error when fewer arrived within `timeoutMs`.
   */
  waitForCount(count: number, timeoutMs?: number): Promise<readonly T[]>;
  /**
   * Resolves with the first item (already collected or still to come) for which `predicate` holds.
   * @throws Error when none arrived within `timeoutMs`.
   */
  waitForItem(predicate: (item: T) => boolean, timeoutMs?: number): Promise<T>;
}

/**
 * Creates a {@link Collector}.
 * @param description - names the collected things in timeout messages (e.g. "deliveries on A").
 * @example
 * ```ts
 * const got = createCollector<Delivery>("deliveries");
 * await transport.consumeService(spec, async (d) => { got.push(d); await d.ack(); });
 * await got.waitForCount(2);
 * ```
 */
export function createCollector<T>(description = "items"): Collector<T> {
  const items: T[] = [];
  const waiters = new Set<() => void>();
  const wait = <R>(check: () => R | undefined, timeoutMs: number, what: string): Promise<R> => {
    const now = check();
    if (now !== undefined) return Promise.resolve(now);
    return new Promise<R>((resolve, reject) => {
      const waiter = (): void => {
        const value = check();
        if (value === undefined) return;
        clearTimeout(timer);
        waiters.delete(waiter);
        resolve(value);
      };
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what} (have ${items.length} ${description})`,
          ),
        );
      }, timeoutMs);
      waiters.add(waiter);
    });
  };
  return {
    items,
    push(item) {
      items.push(item);
      for (const waiter of [...waiters]) waiter();
    },
    waitForCount(count, timeoutMs = DEFAULT_WAIT_TIMEOUT_MS) {
      return wait(
        () => (items.length >= count ? (items.slice() as readonly T[]) : undefined),
        timeoutMs,
        `${count} ${description}`,
      );
    },
    waitForItem(predicate, timeoutMs = DEFAULT_WAIT_TIMEOUT_MS) {
      return wait(
        () => {
          const i = items.findIndex(predicate);
          return i < 0 ? undefined : { item: items[i] as T };
        },
        timeoutMs,
        `a matching item among ${description}`,
      ).then((found) => found.item);
    },
  };
}

/** A {@link Collector} of a transport's events, fed from `transport.events()` in the background. */
export interface EventWatcher extends Collector<TransportEvent> {
  /** Resolves when the event stream has ended (the transport closed, or `stop()` was called). */
  readonly ended: Promise<void>;
  /** Stops reading the stream. */
  stop(): void;
}

/**
 * Starts reading `transport.events()` into a collector.
 * @example
 * ```ts
 * const events = watchEvents(transport);
 * await events.waitForItem((e) => e.type === "reconnected");
 * ```
 */
export function watchEvents(transport: Transport): EventWatcher {
  const collector = createCollector<TransportEvent>("transport events");
  const iterator = transport.events()[Symbol.asyncIterator]();
  let stopped = false;
  let onStop: () => void = () => {};
  const stoppedEarly = new Promise<void>((resolve) => (onStop = resolve));
  const reading = (async () => {
    for (;;) {
      const next = await iterator.next();
      if (next.done === true || stopped) return;
      collector.push(next.value);
    }
  })();
  // A pending next() may not settle when the stream is returned early, so stop() ends `ended` itself.
  const ended = Promise.race([reading, stoppedEarly]);
  return {
    ...collector,
    items: collector.items,
    ended,
    stop() {
      if (stopped) return;
      stopped = true;
      onStop();
      void iterator.return?.();
    },
  };
}

/**
 * Resolves after `ms` milliseconds. Only for showing that something does *not* happen within a
 * short window; to wait for something, use {@link waitFor} or a {@link Collector}.
 */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The headers NuroPb 0.1.1 puts on a message of `type` (not encrypted). */
export function testHeaders(type = "request", traceId: string | null = null): WireHeaders {
  return {
    nuropb_protocol: "0.1.1",
    nuropb_version: "0.1.0",
    nuropb_type: type,
    trace_id: traceId,
    encrypted: "",
  };
}

/** A small request frame whose body and correlation id are both `label`, plus `extra`. */
export function testFrame(label: string, extra: Partial<Frame> = {}): Frame {
  return {
    headers: testHeaders("request"),
    body: encoder.encode(label),
    correlationId: label,
    ...extra,
  };
}

/** The body of a frame or delivery as UTF-8 text (the label of a {@link testFrame}). */
export function frameText(frame: { readonly body: Uint8Array }): string {
  return decoder.decode(frame.body);
}

/** A service queue spec with no bindings and prefetch 1, plus `extra`. */
export function testServiceSpec(
  service: string,
  extra: Partial<ServiceQueueSpec> = {},
): ServiceQueueSpec {
  return { service, rpcBindings: [], eventBindings: [], prefetch: 1, ...extra };
}

/** A name unique to this run, `ck<32 hex>`: valid as a service name and as a topic word. */
export function uniqueName(): string {
  return `ck${newId()}`;
}
