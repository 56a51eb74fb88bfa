import type { LifecycleListener, ServiceMiddleware } from "@nuropb/core";

/** One timed message. */
export interface Timing {
  readonly name: string;
  readonly ms: number;
  readonly ok: boolean;
}

/** Times each message a service handles, middleware and handler included. */
export function timeHandling(record: (t: Timing) => void): ServiceMiddleware {
  return async (call, next) => {
    const name = call.kind === "event" ? call.topic : `${call.service}.${call.method}`;
    const t0 = performance.now();
    let ok = false;
    try {
      const result = await next();
      ok = true;
      return result;
    } finally {
      record({ name, ms: performance.now() - t0, ok });
    }
  };
}

/**
 * The same from the lifecycle hook, on a client: each call from `client-start` to `client-end`
 * (wire and service time included), without any middleware.
 */
export function timeCalls(record: (t: Timing) => void): LifecycleListener {
  const started = new Map<string, number>();
  return (t) => {
    if (t.state === "client-start") started.set(t.correlationId, t.at);
    if (t.state !== "client-end") return;
    const at = started.get(t.correlationId);
    started.delete(t.correlationId);
    if (at === undefined) return;
    const name = t.type === "event" ? String(t.topic) : `${String(t.service)}.${String(t.method)}`;
    record({ name, ms: t.at - at, ok: t.error === undefined });
  };
}
