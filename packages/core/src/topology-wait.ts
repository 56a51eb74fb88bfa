import { isNuropbError } from "@nuropb/protocol";
import type { Logger } from "@nuropb/protocol";

/** Longest wait for one probe's answer, in ms (a queue nobody consumes yet holds it that long). */
const PROBE_TTL_MS = 1_000;
/** Pause after a probe found no queue, in ms. */
const RETRY_MS = 100;

/** What {@link waitForTopology} needs. */
export interface TopologyWaitParts {
  /** Asks the service itself (its describe method) with this ttl; resolves once anyone answered. */
  readonly probe: (ttlMs: number) => Promise<unknown>;
  /** Whether this instance leads now (it then declares the topology itself, at once). */
  readonly isLeader: () => boolean;
  /** Aborts the wait (the participant is being disconnected). */
  readonly signal: AbortSignal;
  /** The bound, in ms. */
  readonly waitMs: number;
  readonly log: Logger;
}

/** How a follower's wait ended. */
export type TopologyWaitOutcome = "ready" | "leader" | "timed-out" | "aborted";

/**
 * A follower's wait for its service's topology: the leader declares the service queue and its
 * bindings when it starts consuming, so the topology is there once the service answers a
 * describe request. Probes until one is answered (by any instance), this instance becomes the
 * leader, or `waitMs` passes; then the caller consumes (declaring what is missing itself).
 * Passing the bound is logged at warn, never thrown: every instance declares the same topology,
 * idempotently, so a follower that goes ahead is safe, and refusing to start would leave the
 * service short of instances whenever its leader is slow or stuck.
 */
export async function waitForTopology(parts: TopologyWaitParts): Promise<TopologyWaitOutcome> {
  const deadline = Date.now() + parts.waitMs;
  for (;;) {
    if (parts.signal.aborted) return "aborted";
    if (parts.isLeader()) return "leader";
    const left = deadline - Date.now();
    if (left <= 0) {
      parts.log.warn("the service's topology did not answer in time; declaring it here", {
        topologyWaitMs: parts.waitMs,
      });
      return "timed-out";
    }
    try {
      await parts.probe(Math.max(1, Math.min(PROBE_TTL_MS, left)));
      parts.log.info("the service's topology is there; consuming");
      return "ready";
    } catch (err) {
      // Any answer, a remote error too, came from a consuming instance.
      if (isNuropbError(err) && !UNANSWERED.has((err as Error).name)) {
        parts.log.info("the service's topology is there; consuming");
        return "ready";
      }
      // No queue yet (not delivered; a timeout: nobody consumes it yet), or the link is down.
      if ((err as Error)?.name !== "NuropbTimeoutError") {
        await pause(Math.min(RETRY_MS, Math.max(0, deadline - Date.now())), parts.signal);
      }
    }
  }
}

/** Errors of a probe nobody answered. */
const UNANSWERED = new Set([
  "NuropbNotDeliveredError",
  "NuropbTimeoutError",
  "NuropbTransportError",
  "NuropbConnectionClosedError",
]);

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
