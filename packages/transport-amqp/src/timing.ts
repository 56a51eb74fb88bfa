import { NuropbTransportError } from "@nuropb/protocol";

/** Waits `ms`, or less when a signal aborts (it resolves either way). */
export function sleep(ms: number, signals: readonly (AbortSignal | undefined)[]): Promise<void> {
  return new Promise((resolve) => {
    const live = signals.filter((s): s is AbortSignal => s !== undefined);
    if (live.some((s) => s.aborted)) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      for (const s of live) s.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    for (const s of live) s.addEventListener("abort", done, { once: true });
  });
}

/** Resolves with `p` unless a signal aborts first; a late result is handed to `onLate`. */
export function raceAbort<T>(
  p: Promise<T>,
  signals: readonly (AbortSignal | undefined)[],
  onLate: (value: T) => void,
): Promise<T> {
  const live = signals.filter((s): s is AbortSignal => s !== undefined);
  if (live.length === 0) return p;
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const onAbort = (): void => {
      if (settled) return;
      settled = true;
      cleanup();
      reject(new NuropbTransportError("aborted"));
    };
    const cleanup = (): void => {
      for (const s of live) s.removeEventListener("abort", onAbort);
    };
    for (const s of live) {
      if (s.aborted) return onAbort();
      s.addEventListener("abort", onAbort, { once: true });
    }
    p.then(
      (v) => {
        if (settled) return onLate(v);
        settled = true;
        cleanup();
        resolve(v);
      },
      (err: unknown) => {
        if (settled) return;
        settled = true;
        cleanup();
        reject(err as Error);
      },
    );
  });
}

/** Resolves once `p` settles or after `ms`, whichever comes first; never rejects. */
export function withDeadline(p: Promise<unknown>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    p.then(
      () => {
        clearTimeout(timer);
        resolve();
      },
      () => {
        clearTimeout(timer);
        resolve();
      },
    );
  });
}
