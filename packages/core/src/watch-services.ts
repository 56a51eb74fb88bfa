import {
  NuropbConnectionClosedError,
  createEventChannel,
  decodeFrame,
  isLogger,
  newId,
  noopLogger,
  timerOption,
  type Listener,
  type Logger,
  type Transport,
} from "@nuropb/protocol";

/** The event topic every runner participant reports its state on. */
export const STATUS_TOPIC = "nuropb.status";

/** A participant's state as it reports it. */
export type ParticipantStatus = "starting" | "operational" | "leader" | "stopping" | "stopped";

/** The event published on {@link STATUS_TOPIC} at each change, and again every heartbeat. */
export interface StatusEvent {
  readonly type: "nuropb_status";
  /** The service name; null for a client. */
  readonly service: string | null;
  readonly instance_id: string;
  readonly state: ParticipantStatus;
  /** Whether the instance leads its service (true without an election). */
  readonly leader: boolean;
  /** The next report comes within this many ms unless the state is `stopped`: a watcher may drop an instance silent for a few of them. */
  readonly heartbeat_ms: number;
  /** When it was sent, ISO 8601. */
  readonly at: string;
}

/** The shortest heartbeat a watcher takes from a report, in ms (a shorter one counts as this). */
export const MIN_STATUS_HEARTBEAT_MS = 100;
/**
 * The longest heartbeat a watcher takes from a report, in ms (a longer one counts as this): an
 * instance that announced more still drops out of the view once silent for a few of these.
 */
export const MAX_STATUS_HEARTBEAT_MS = 300_000;

/** One instance as the status reports show it. */
export interface InstanceView {
  readonly instanceId: string;
  readonly state: ParticipantStatus;
  readonly leader: boolean;
  /** When its last report arrived (`Date.now()` of the watcher). */
  readonly lastSeen: number;
  /** The heartbeat it announced, in ms, clamped to {@link MIN_STATUS_HEARTBEAT_MS}..{@link MAX_STATUS_HEARTBEAT_MS}. */
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
          heartbeatMs: Math.min(
            MAX_STATUS_HEARTBEAT_MS,
            Math.max(MIN_STATUS_HEARTBEAT_MS, event.heartbeat_ms),
          ),
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

/** Options of {@link watchServices}. */
export interface WatchServicesOptions {
  /** How often silent instances are looked for, in ms. @defaultValue 1000 */
  readonly pruneEveryMs?: number;
  /** Heartbeats an instance may miss before it leaves the view. @defaultValue 3 */
  readonly silentAfterHeartbeats?: number;
  /** Logs the subscription's lifecycle (info) and dropped reports (debug). @defaultValue no-op */
  readonly logger?: Logger;
}

/** A running watch; `close()` (or `await using`) stops it. */
export interface ServicesWatch extends AsyncDisposable {
  /** The view now. */
  view(): ServicesView;
  /**
   * The view after each change (a new instance, a state or leader change, one gone); ends at
   * `close()` and when the transport is closed. When the transport closes for good without being
   * asked (it gave up reconnecting), iterating throws `NuropbConnectionClosedError` (the reason as
   * `cause`) instead, and the view stays as it was last heard (nothing is pruned any more).
   */
  updates(): AsyncIterable<ServicesView>;
  /** Stops listening and removes the watcher's queue (the transport stays open). Idempotent. */
  close(): Promise<void>;
}

/** The name of a watcher's transient queue: `nuropb-watch-` and a fresh id. */
const watcherName = (): string => `nuropb-watch-${newId().slice(0, 16)}`;

/**
 * Watches the status reports on {@link STATUS_TOPIC} (what `@nuropb/runner` participants
 * publish) and keeps the live view of the mesh: services, their instances and states, leaders,
 * last seen. An instance that reports `stopped` leaves the view at once; one that goes silent
 * (it crashed) leaves it after `silentAfterHeartbeats` of its heartbeats, looked for every
 * `pruneEveryMs`. The watcher reads a transient queue of its own (`ServiceQueueSpec.transient`),
 * so nothing of it stays on the broker after `close()`. The transport must be connected; the
 * caller closes it. `client.watchServices()` is this on the participant's transport.
 * @throws TypeError for a bad option; the promise rejects when the queue cannot be declared.
 * @example
 * await using watch = await watchServices(transport);
 * for await (const view of watch.updates()) render(view);
 */
export async function watchServices(
  transport: Transport,
  options: WatchServicesOptions = {},
): Promise<ServicesWatch> {
  if (typeof transport !== "object" || transport === null) {
    throw new TypeError("watchServices: transport must be a Transport");
  }
  if (typeof options !== "object" || options === null) {
    throw new TypeError("watchServices: options must be an object");
  }
  const pruneEveryMs = timerOption("watchServices", "pruneEveryMs", options.pruneEveryMs, 1000);
  if (options.logger !== undefined && !isLogger(options.logger)) {
    throw new TypeError("watchServices: options.logger must be a Logger");
  }
  const builder = createServicesView(
    options.silentAfterHeartbeats === undefined
      ? {}
      : { silentAfterHeartbeats: options.silentAfterHeartbeats },
  );
  const name = watcherName();
  const log = (options.logger ?? noopLogger).child({ component: "watch-services", name });
  const channel = createEventChannel<ServicesView>();
  const changed = (): void => channel.emit(builder.view());
  const listener: Listener = await transport.consumeService(
    { service: name, rpcBindings: [], eventBindings: [STATUS_TOPIC], prefetch: 0, transient: true },
    async (delivery) => {
      try {
        const decoded = decodeFrame(delivery);
        if (
          decoded.type === "event" &&
          decoded.payload.topic === STATUS_TOPIC &&
          builder.apply(decoded.payload.event)
        ) {
          changed();
        }
      } catch (err) {
        log.debug("status report dropped", { error: String(err) });
      }
      await delivery.ack();
    },
  );
  log.info("watching service status", { topic: STATUS_TOPIC });
  const timer = setInterval(() => {
    if (builder.prune()) changed();
  }, pruneEveryMs);
  timer.unref?.();
  let closing: Promise<void> | undefined;
  /** Why the transport closed, when it was not asked to; set before the updates end. */
  let lost: NuropbConnectionClosedError | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      clearInterval(timer);
      try {
        await listener.stop();
      } finally {
        channel.end();
      }
    })());
  // The transport closed (for good): nothing more will be heard, so the watch ends with it.
  void transport.closed().then((reason) => {
    if (closing !== undefined) return;
    clearInterval(timer);
    if (reason !== undefined) {
      lost = new NuropbConnectionClosedError("the transport of the status watch closed", {
        cause: reason,
      });
      log.warn("the transport closed; the status watch ends", { error: String(reason) });
    }
    channel.end();
  });
  const updates = async function* (): AsyncGenerator<ServicesView> {
    yield* channel.iterate();
    if (lost !== undefined) throw lost;
  };
  return {
    view: () => builder.view(),
    updates,
    close,
    [Symbol.asyncDispose]: close,
  };
}
