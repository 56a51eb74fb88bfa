import type { Listener, Logger, Transport } from "@nuropb/protocol";
import type { LeaderElection } from "./leader-election.ts";

/** What {@link consumeWithLeaderPrefetch} needs. */
export interface LeaderPrefetchParts {
  readonly transport: Transport;
  readonly election: LeaderElection;
  /** The follower's prefetch. */
  readonly prefetch: number;
  /** The leader's prefetch. */
  readonly leaderPrefetch: number;
  /** Starts consuming the service queue with `prefetch`. */
  readonly consume: (prefetch: number) => Promise<Listener>;
  /** True once the service is disconnecting: its resignation switches nothing. */
  readonly closing: () => boolean;
  readonly log: Logger;
}

/**
 * Consumes the service queue with `leaderPrefetch` while the election says this instance leads
 * and `prefetch` otherwise. A switch starts the new consumer first, then stops the old one (its
 * running handlers settle; what they left unsettled goes back to the queue), so nothing is lost.
 * No switch while the transport is down: the change waits for the reconnection. The listener
 * returned stops whichever consumer is current.
 */
export async function consumeWithLeaderPrefetch(parts: LeaderPrefetchParts): Promise<Listener> {
  const { transport, election, log } = parts;
  const want = (): number => (election.isLeader ? parts.leaderPrefetch : parts.prefetch);
  let prefetch = want();
  let current = await parts.consume(prefetch);
  let up = true;
  let stopped = false;
  /** Switches run one after another. */
  let switching: Promise<void> = Promise.resolve();

  const reconsider = (): void => {
    switching = switching.then(async () => {
      const next = want();
      if (stopped || parts.closing() || !up || next === prefetch) return;
      try {
        const fresh = await parts.consume(next);
        const old = current;
        current = fresh;
        prefetch = next;
        log.info("service prefetch switched", { prefetch: next, leader: election.isLeader });
        if (stopped) await fresh.stop();
        await old.stop();
      } catch (err) {
        log.warn("could not switch the service prefetch", { error: String(err) });
      }
    });
  };

  const stops: (() => void)[] = [];
  const follow = <T extends { type: string }>(
    source: AsyncIterable<T>,
    on: (event: T) => void,
  ): void => {
    const iterator = source[Symbol.asyncIterator]();
    stops.push(() => void iterator.return?.());
    void (async () => {
      for (;;) {
        const next = await iterator.next();
        if (next.done === true || stopped) return;
        on(next.value);
      }
    })().catch((err: unknown) => log.error("prefetch relay failed", { error: String(err) }));
  };
  follow(election.events(), () => reconsider());
  follow(transport.events(), (event) => {
    if (event.type === "disconnected" || event.type === "closed") up = false;
    else if (event.type === "reconnected") {
      up = true;
      reconsider();
    }
  });

  const stop = async (): Promise<void> => {
    if (!stopped) {
      stopped = true;
      for (const s of stops) s();
    }
    await switching;
    await current.stop();
  };
  return { stop, [Symbol.asyncDispose]: stop };
}
