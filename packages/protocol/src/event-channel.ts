/**
 * A broadcast channel for a transport's {@link TransportEvent}s: every call to `iterate()` gets its
 * own buffered stream; `end()` finishes all streams. Transports outside this repo may use it.
 */
export interface EventChannel<T> {
  emit(event: T): void;
  iterate(): AsyncIterable<T>;
  /** Calls `fn` for each event until the returned function is called. */
  on(fn: (event: T) => void): () => void;
  end(): void;
}

/** Creates an {@link EventChannel}. */
export function createEventChannel<T>(): EventChannel<T> {
  const subscribers = new Set<(event: T | typeof END) => void>();
  let ended = false;
  const END = Symbol("end");
  return {
    emit(event) {
      if (ended) return;
      for (const s of [...subscribers]) s(event);
    },
    on(fn) {
      const sub = (e: T | typeof END): void => {
        if (e !== END) fn(e);
      };
      subscribers.add(sub);
      return () => subscribers.delete(sub);
    },
    end() {
      if (ended) return;
      for (const s of [...subscribers]) s(END);
      ended = true;
      subscribers.clear();
    },
    iterate() {
      return {
        [Symbol.asyncIterator](): AsyncIterator<T> {
          const buffer: (T | typeof END)[] = [];
          let wake: (() => void) | undefined;
          const sub = (e: T | typeof END): void => {
            buffer.push(e);
            wake?.();
          };
          if (ended) buffer.push(END);
          else subscribers.add(sub);
          return {
            async next(): Promise<IteratorResult<T>> {
              while (buffer.length === 0) await new Promise<void>((r) => (wake = r));
              wake = undefined;
              const e = buffer[0] as T | typeof END;
              if (e === END) {
                // END stays in the buffer: every later next() is done at once too.
                subscribers.delete(sub);
                return { done: true, value: undefined };
              }
              buffer.shift();
              return { done: false, value: e };
            },
            async return(): Promise<IteratorResult<T>> {
              subscribers.delete(sub);
              buffer.length = 0;
              buffer.push(END);
              wake?.(); // a next() waiting right now must end too
              return { done: true, value: undefined };
            },
          };
        },
      };
    },
  };
}
