import type { Logger } from "@nuropb/protocol";

/** Pause after a probe found no queue, in ms. */
const RETRY_MS = 100;

/** What {@link waitForTopology} needs. */
export interface TopologyWaitParts {
  /**
   * Sends the service one describe request WITHOUT a ttl, mandatory: resolves once the service
   * queue took it, rejects (`NuropbNotDeliveredError`) while there is no such queue. Without a
   * ttl the broker never expires the probe, so it is never dead-lettered: whoever consumes the
   * queue next (the leader, or this instance once it goes ahead) answers it, and the answer,
   * which nobody awaits, is dropped.
   */
  readonly probe: () => Promise<void>;
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
 * bindings when it starts consuming, so the topology is there once the queue takes a request
 * for the service. Probes (see {@link TopologyWaitParts.probe}: one message that never expires,
 * sent only once a queue is there to take it; the attempts before that leave nothing anywhere)
 * until one is taken, this instance becomes the leader, or `waitMs` passes; then the caller
 * consumes (declaring what is missing itself). The queue may be a durable one left by an
 * earlier run that nobody consumes yet: its topology is there all the same. Passing the bound
 * is logged at warn, never thrown: every instance declares the same topology, idempotently, so
 * a follower that goes ahead is safe, and refusing to start would leave the service short of
 * instances whenever its leader is slow or stuck.
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
    // A send that hangs (the link is down) is given up at the bound; if it lands later, this
    // instance answers it once it consumes.
    const sent = await within(parts.probe(), left, parts.signal);
    if (sent === "sent") {
      parts.log.info("the service's topology is there; consuming");
      return "ready";
    }
    // No queue yet (not delivered), or the link is down: try again shortly.
    if (sent === "failed") {
      await pause(Math.min(RETRY_MS, Math.max(0, deadline - Date.now())), parts.signal);
    }
  }
}

/** Settles with how `sending` went within `ms` (or until `signal` aborts): never rejects. */
function within(
  sending: Promise<void>,
  ms: number,
  signal: AbortSignal,
): Promise<"sent" | "failed" | "gave-up"> {
  return new Promise((resolve) => {
    const done = (outcome: "sent" | "failed" | "gave-up"): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", abort);
      resolve(outcome);
    };
    const abort = (): void => done("gave-up");
    const timer = setTimeout(abort, ms);
    signal.addEventListener("abort", abort, { once: true });
    sending.then(
      () => done("sent"),
      () => done("failed"),
    );
  });
}

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
