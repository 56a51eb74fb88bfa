import { timerOption, type Logger } from "@nuropb/protocol";
import type { MeshService } from "@nuropb/core";
import type { ServiceFactory } from "./options.ts";

/** The event topic a leader publishes its service's alerts on. */
export const ALERT_TOPIC = "nuropb.service.alert";

/** What a backlog probe measures of a service: its waiting messages and its dead letters. */
export interface Backlog {
  /** Messages waiting in the service's queue (not yet handed to a consumer, or not yet acknowledged where the broker counts them so). */
  readonly depth: number;
  /** Messages in the service's dead letters; undefined when the transport cannot tell. */
  readonly deadLetters: number | undefined;
}

/** Measures the backlog of a service on one transport (see each transport's `create…BacklogProbe`). */
export type BacklogProbe = (service: string) => Promise<Backlog>;

/** What is watched: the depth of the service's queue or the count of its dead letters. */
export type AlertKind = "queue-depth" | "dead-letters";

/** The event published on {@link ALERT_TOPIC} when a watched value rises above its threshold. */
export interface ServiceAlertEvent {
  readonly type: "nuropb_service_alert";
  readonly service: string;
  /** The leader instance that saw it. */
  readonly instance_id: string;
  readonly kind: AlertKind;
  /** The value measured. */
  readonly value: number;
  /** The threshold it went above. */
  readonly threshold: number;
  /** When it was measured, ISO 8601. */
  readonly at: string;
}

/** Options of {@link withLeaderWatch}. */
export interface LeaderWatchOptions {
  /** The probe for the service's transport (it keeps its own connection; whoever made it closes it). */
  readonly probe: BacklogProbe;
  /** Alert when the service queue holds more than this many messages. @defaultValue none */
  readonly queueDepth?: number;
  /** Alert when the dead letters number more than this. @defaultValue none */
  readonly deadLetters?: number;
  /** How often the leader probes, in ms; a probe that takes longer is given up. @defaultValue 5000 */
  readonly intervalMs?: number;
}

const OWNER = "withLeaderWatch";

/**
 * Wraps a service factory of the runner: the instance that leads its service (from its
 * `elected` / `deposed` events, or always without an election) probes the service's backlog every
 * `intervalMs` and publishes a {@link ServiceAlertEvent} on {@link ALERT_TOPIC} when a value goes
 * above its threshold: once per crossing, and again only after it fell back to the threshold or
 * below. Probing stops when the instance is deposed or closes. A failing probe is logged.
 * @throws TypeError naming the bad option.
 */
export function withLeaderWatch(
  factory: ServiceFactory,
  options: LeaderWatchOptions,
): ServiceFactory {
  if (typeof factory !== "function") {
    throw new TypeError(`${OWNER}: the first argument must be a service factory`);
  }
  if (typeof options !== "object" || options === null || typeof options.probe !== "function") {
    throw new TypeError(`${OWNER}: options.probe must be a function`);
  }
  const thresholds: [AlertKind, number][] = [];
  for (const [kind, value] of [
    ["queue-depth", options.queueDepth],
    ["dead-letters", options.deadLetters],
  ] as const) {
    if (value === undefined) continue;
    if (!Number.isSafeInteger(value) || value < 0) {
      const name = kind === "queue-depth" ? "queueDepth" : "deadLetters";
      throw new TypeError(`${OWNER}: options.${name} must be an integer >= 0`);
    }
    thresholds.push([kind, value]);
  }
  if (thresholds.length === 0) {
    throw new TypeError(`${OWNER}: give options.queueDepth, options.deadLetters or both`);
  }
  const intervalMs = timerOption(OWNER, "intervalMs", options.intervalMs, 5_000);
  const probe = options.probe;
  return (context) => {
    const service = factory(context);
    const watch = new LeaderWatch(service, probe, thresholds, intervalMs, context.logger);
    watch.follow();
    return service;
  };
}

/** Polls one service instance's backlog while it leads. */
class LeaderWatch {
  readonly #service: MeshService;
  readonly #probe: BacklogProbe;
  readonly #thresholds: readonly [AlertKind, number][];
  readonly #intervalMs: number;
  readonly #log: Logger;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Bumped at each start and stop: a poll of an older term publishes nothing. */
  #term = 0;
  /** The kinds above their threshold at the last probe (already alerted). */
  readonly #above = new Set<AlertKind>();

  constructor(
    service: MeshService,
    probe: BacklogProbe,
    thresholds: readonly [AlertKind, number][],
    intervalMs: number,
    log: Logger,
  ) {
    this.#service = service;
    this.#probe = probe;
    this.#thresholds = thresholds;
    this.#intervalMs = intervalMs;
    this.#log = log.child({ component: "leader-watch" });
  }

  /** Follows the instance's events until it closes. */
  follow(): void {
    const events = this.#service.events();
    void (async () => {
      try {
        for await (const e of events) {
          if (e.type === "closed") break;
          this.#reconcile();
        }
      } finally {
        this.#stop();
      }
    })();
  }

  /** Polls while the instance is connected and leads; not otherwise. */
  #reconcile(): void {
    const leading = this.#service.connected && this.#service.isLeader;
    if (leading && this.#timer === undefined) this.#start();
    else if (!leading && this.#timer !== undefined) this.#stop();
  }

  #start(): void {
    this.#term++;
    this.#above.clear();
    this.#log.info("watching the backlog as leader", { service: this.#service.serviceName });
    this.#schedule(0);
  }

  #stop(): void {
    this.#term++;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(delayMs: number): void {
    const term = this.#term;
    this.#timer = setTimeout(() => void this.#poll(term), delayMs);
    this.#timer.unref?.();
  }

  async #poll(term: number): Promise<void> {
    const service = this.#service.serviceName;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const backlog = await Promise.race([
        this.#probe(service),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`probe took over ${String(this.#intervalMs)} ms`)),
            this.#intervalMs,
          );
          timer.unref?.();
        }),
      ]);
      if (term === this.#term) await this.#check(backlog);
    } catch (err) {
      this.#log.warn("backlog probe failed", { service, error: String(err) });
    } finally {
      clearTimeout(timer);
    }
    if (term === this.#term) this.#schedule(this.#intervalMs);
  }

  async #check(backlog: Backlog): Promise<void> {
    for (const [kind, threshold] of this.#thresholds) {
      const value = kind === "queue-depth" ? backlog.depth : backlog.deadLetters;
      if (value === undefined) continue;
      if (value <= threshold) {
        this.#above.delete(kind);
        continue;
      }
      if (this.#above.has(kind)) continue;
      this.#above.add(kind);
      const event: ServiceAlertEvent = {
        type: "nuropb_service_alert",
        service: this.#service.serviceName,
        instance_id: this.#service.instanceId,
        kind,
        value,
        threshold,
        at: new Date().toISOString(),
      };
      this.#log.warn("service alert", { kind, value, threshold });
      try {
        await this.#service.publishEvent(ALERT_TOPIC, event);
      } catch (err) {
        // Not sent: the next probe tries again.
        this.#above.delete(kind);
        this.#log.warn("service alert not sent", { kind, error: String(err) });
      }
    }
  }
}
