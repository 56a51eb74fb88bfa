import { createClient, createService } from "@nuropb/core";
import type { MeshParticipant, ServiceDescription } from "@nuropb/core";
import type { Logger } from "@nuropb/protocol";
import type { ResolvedOptions } from "./options.ts";

/** An event as the gateway's mesh service receives it (what core gives `handleEvent`). */
export interface MeshEvent {
  readonly topic: string;
  readonly event: unknown;
  readonly target: readonly string[] | null;
  readonly traceId: string | null;
}

/** Where the gateway's mesh service hands the events it receives. */
export type MeshEventSink = (event: MeshEvent) => void;

/**
 * The gateway's participant on the mesh: a service bound to the exposed topic patterns when any
 * are exposed (so it receives their events), else a plain client. It also caches the
 * descriptions of exposed services for `describeCacheMs`.
 */
export class MeshLink {
  readonly participant: MeshParticipant;
  readonly #describeCacheMs: number;
  readonly #describeTtlMs: number;
  readonly #logger: Logger;
  readonly #described = new Map<string, { at: number; value: Promise<ServiceDescription> }>();

  constructor(options: ResolvedOptions, sink: MeshEventSink) {
    this.#describeCacheMs = options.describeCacheMs;
    this.#describeTtlMs = options.describeTtlMs;
    this.#logger = options.logger;
    const common = {
      transport: options.transport,
      defaultTtlMs: options.defaultTtlMs,
      logger: options.logger,
    };
    if (options.subscribe.length > 0) {
      // A class whose only member is the event hook: the gateway serves no methods of its own.
      const instance = {
        handleEvent(e: {
          readonly topic: string;
          readonly event: unknown;
          readonly target?: readonly string[] | null;
          readonly traceId?: string | null;
        }): void {
          sink({
            topic: e.topic,
            event: e.event,
            target: e.target ?? null,
            traceId: e.traceId ?? null,
          });
        },
      };
      this.participant = createService({
        ...common,
        name: options.name,
        instance,
        eventBindings: options.subscribe,
        description: "the nuropb gateway: serves no methods, fans events out to its clients",
      });
    } else {
      this.participant = createClient({ ...common, name: options.name });
    }
  }

  /**
   * The description of `service`, reused for `describeCacheMs`; a failed one is not kept.
   * @throws the describe's error (NuropbNotDeliveredError, NuropbTimeoutError…).
   */
  describe(service: string): Promise<ServiceDescription> {
    const now = performance.now();
    const hit = this.#described.get(service);
    if (hit !== undefined && now - hit.at < this.#describeCacheMs) return hit.value;
    const value = this.participant.describeService(service, {
      refresh: true,
      ttlMs: this.#describeTtlMs,
    });
    const entry = { at: now, value };
    this.#described.set(service, entry);
    value.catch((err: unknown) => {
      if (this.#described.get(service) === entry) this.#described.delete(service);
      this.#logger.debug("describe failed", { service, error: (err as Error).message });
    });
    return value;
  }
}
