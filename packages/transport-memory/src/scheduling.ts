import { MAX_TIMER_MS, serviceQueueName } from "@nuropb/protocol";
import type { ClaimOutcome, Frame, TransportScheduling } from "@nuropb/protocol";
import {
  assertClaimKey,
  assertClaimTaker,
  assertClaimTtl,
  assertScheduledService,
  scheduledDelayMs,
} from "@nuropb/protocol/transport-kit";
import type { VHost } from "./broker.ts";

// Scheduling on the memory hub. The hub plays the broker: delayed frames and claims live in the
// VHost (which outlives every transport attached to it), never in a transport, so a frame scheduled
// by a transport that then closes is still delivered to whichever instance consumes the queue.

/** A claim as the hub keeps it. */
interface ClaimEntry {
  taker: string | undefined;
  readonly expiresAt: number;
}

/** The delayed frames and claims of one mesh of a hub (internal). */
export class HubScheduler {
  readonly #vhost: VHost;
  readonly #claims = new Map<string, ClaimEntry>();
  /** Claims held after the last sweep of expired ones; the next sweep runs at twice as many. */
  #sweepAt = 64;
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();

  constructor(vhost: VHost) {
    this.#vhost = vhost;
  }

  /** Frames waiting for their time. */
  get delayedCount(): number {
    return this.#timers.size;
  }

  /** Claims held (open or taken; expired ones until they are swept). */
  get claimCount(): number {
    return this.#claims.size;
  }

  /**
   * Holds `frame` (already copied, without ttl) and puts it on `service`'s queue once `dueAt`
   * (a `Date.now()` value) has passed; dropped if the queue does not exist then.
   * The timers are unref'd: like the expiry sweep, a waiting frame does not keep the process alive.
   */
  hold(service: string, frame: Frame, dueAt: number): void {
    const arm = (): void => {
      // A Node timer holds at most 2^31 - 1 ms; a later time is reached in steps of that.
      const wait = Math.min(MAX_TIMER_MS, Math.max(0, dueAt - Date.now()));
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        // Timers may fire a millisecond early against Date.now(): never deliver early.
        if (Date.now() < dueAt) arm();
        else this.#vhost.serviceQueues.get(serviceQueueName(service))?.enqueue(frame);
      }, wait);
      (timer as { unref?: () => void }).unref?.();
      this.#timers.add(timer);
    };
    arm();
  }

  open(key: string, ttlMs: number): void {
    const now = Date.now();
    const entry = this.#claims.get(key);
    if (entry !== undefined && entry.expiresAt > now) return;
    this.#claims.set(key, { taker: undefined, expiresAt: now + ttlMs });
    if (this.#claims.size >= this.#sweepAt) this.#sweep(now);
  }

  claim(key: string, taker: string): ClaimOutcome {
    const entry = this.#claims.get(key);
    if (entry === undefined) return "absent";
    if (entry.expiresAt <= Date.now()) {
      this.#claims.delete(key);
      return "absent";
    }
    if (entry.taker === undefined) {
      entry.taker = taker;
      return "won";
    }
    return entry.taker === taker ? "won" : "lost";
  }

  /** Forgets expired claims: amortised O(1) per opened claim. */
  #sweep(now: number): void {
    for (const [key, entry] of this.#claims) {
      if (entry.expiresAt <= now) this.#claims.delete(key);
    }
    this.#sweepAt = Math.max(64, this.#claims.size * 2);
  }
}

/** What {@link createMemoryScheduling} needs from its transport. */
export interface SchedulingHost {
  readonly vhost: VHost;
  /** Throws when the transport is closed; waits while it connects or is disconnected. */
  whenUsable(): Promise<void>;
  /** Checks and copies an outgoing frame as `send` does. */
  copyFrame(frame: Frame): Frame;
}

/**
 * The scheduling capability of one memory transport. Service replies use the service queue's name
 * as the address, as on RabbitMQ: the hub's reply routing (the default exchange) delivers a
 * response sent there into the service queue.
 */
export function createMemoryScheduling(host: SchedulingHost): TransportScheduling {
  return Object.freeze({
    serviceReplyAddress(service: string): string {
      assertScheduledService(service);
      return serviceQueueName(service);
    },
    async sendDelayed(service: string, frame: Frame, delayMs: number): Promise<void> {
      assertScheduledService(service);
      const delay = scheduledDelayMs(delayMs);
      const { ttlMs: _ttl, ...copy } = host.copyFrame(frame);
      await host.whenUsable();
      host.vhost.scheduler.hold(service, copy, Date.now() + delay);
    },
    async openClaim(key: string, ttlMs: number): Promise<void> {
      assertClaimKey(key);
      assertClaimTtl(ttlMs);
      await host.whenUsable();
      host.vhost.scheduler.open(key, ttlMs);
    },
    async claim(key: string, taker: string): Promise<ClaimOutcome> {
      assertClaimKey(key);
      assertClaimTaker(taker);
      await host.whenUsable();
      return host.vhost.scheduler.claim(key, taker);
    },
  });
}
