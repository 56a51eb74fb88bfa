import type { ParticipantStatus, StatusEvent } from "./status-publisher.ts";

/** One instance as the status reports show it. */
export interface InstanceView {
  readonly instanceId: string;
  readonly state: ParticipantStatus;
  readonly leader: boolean;
  /** When its last report arrived (`Date.now()` of the watcher). */
  readonly lastSeen: number;
  /** The heartbeat it announced, in ms. */
  readonly heartbeatMs: number;
}

/** One service: its live instances and which one leads. */
export interface ServiceView {
  readonly name: string;
  /** Sorted by instance id. */
  readonly instances: readonly InstanceView[];
  /** The leading instance's id; undefined while none says it leads. */
  readonly leader: string | undefined;
}

/** The mesh as the status reports show it: services by name, clients apart. */
export interface ServicesView {
  /** Sorted by name. */
  readonly services: readonly ServiceView[];
  /** Client participants (they serve nothing, so they have no service name). */
  readonly clients: readonly InstanceView[];
}

/** Folds status reports into a {@link ServicesView}. */
export interface ServicesViewBuilder {
  /** Takes one status event (anything else is ignored); true when the view changed. */
  apply(event: unknown): boolean;
  /** Drops instances silent for longer than `silentAfterHeartbeats` heartbeats; true when any was. */
  prune(): boolean;
  view(): ServicesView;
}

/**
 * Makes a {@link ServicesViewBuilder}. An instance leaves the view when it reports `stopped`, or
 * when it has been silent for `silentAfterHeartbeats` of its heartbeats (it crashed).
 * @throws TypeError for a bad option.
 */
export function createServicesView(
  options: { readonly silentAfterHeartbeats?: number; readonly now?: () => number } = {},
): ServicesViewBuilder {
  const factor = options.silentAfterHeartbeats ?? 3;
  if (typeof factor !== "number" || !(factor >= 1) || !Number.isFinite(factor)) {
    throw new TypeError("createServicesView: silentAfterHeartbeats must be a number >= 1");
  }
  const now = options.now ?? Date.now;
  /** By instance id; the service name (null: a client) beside. */
  const instances = new Map<string, { service: string | null; view: InstanceView }>();
  return {
    apply(event) {
      if (!isStatusEvent(event)) return false;
      if (event.state === "stopped") return instances.delete(event.instance_id);
      const before = instances.get(event.instance_id)?.view;
      instances.set(event.instance_id, {
        service: event.service,
        view: {
          instanceId: event.instance_id,
          state: event.state,
          leader: event.leader,
          lastSeen: now(),
          heartbeatMs: event.heartbeat_ms,
        },
      });
      return before?.state !== event.state || before.leader !== event.leader;
    },
    prune() {
      const t = now();
      let changed = false;
      for (const [id, { view }] of instances) {
        if (t - view.lastSeen > view.heartbeatMs * factor)
          changed = instances.delete(id) || changed;
      }
      return changed;
    },
    view() {
      const byService = new Map<string, InstanceView[]>();
      const clients: InstanceView[] = [];
      for (const { service, view } of instances.values()) {
        if (service === null) clients.push(view);
        else byService.set(service, [...(byService.get(service) ?? []), view]);
      }
      const byId = (a: InstanceView, b: InstanceView): number =>
        a.instanceId < b.instanceId ? -1 : 1;
      const services = [...byService.entries()]
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([name, list]) => {
          const sorted = list.sort(byId);
          return { name, instances: sorted, leader: sorted.find((i) => i.leader)?.instanceId };
        });
      return { services, clients: clients.sort(byId) };
    },
  };
}

const STATES = new Set<string>(["starting", "operational", "leader", "stopping", "stopped"]);

/** Whether `x` is a well-formed {@link StatusEvent} (it comes off the wire). */
export function isStatusEvent(x: unknown): x is StatusEvent {
  if (typeof x !== "object" || x === null) return false;
  const e = x as Record<string, unknown>;
  return (
    e.type === "nuropb_status" &&
    (e.service === null || typeof e.service === "string") &&
    typeof e.instance_id === "string" &&
    e.instance_id !== "" &&
    typeof e.state === "string" &&
    STATES.has(e.state) &&
    typeof e.leader === "boolean" &&
    typeof e.heartbeat_ms === "number" &&
    e.heartbeat_ms > 0
  );
}
