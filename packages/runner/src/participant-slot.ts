import { createDeferred, newId, type Logger, type Transport } from "@nuropb/protocol";
import type { HealthTarget, LeaderElection, MeshParticipant } from "@nuropb/core";
import { restartDelayMs, type ParticipantContext, type RunnerConfig } from "./options.ts";
import { StatusPublisher } from "./status-publisher.ts";

/** How a slot's drain ended: handlers finished, or the bound passed with some still running. */
export type DrainOutcome = "drained" | "timed-out";

/** What a slot needs of its runner. */
export interface SlotParts {
  readonly kind: "service" | "client";
  /** Position in `options.services` / `options.clients`, for logs. */
  readonly index: number;
  readonly config: RunnerConfig;
  readonly make: (context: ParticipantContext) => MeshParticipant;
  /** True while the runner keeps its participants up (not stopping). */
  readonly running: () => boolean;
  /** True once every participant is connected (the runner is running). */
  readonly operational: () => boolean;
  /** The runner's stop signal: a restart waiting for its delay gives up. */
  readonly signal: AbortSignal;
  /** Restarts ran out: the runner stops. */
  readonly gaveUp: (error: Error) => void;
}

/**
 * One participant the runner keeps: its transport (made here, closed here), the participant made
 * on it, and the restarts when the transport closes for good.
 */
export class ParticipantSlot implements HealthTarget {
  readonly #p: SlotParts;
  readonly #log: Logger;
  #participant: MeshParticipant | undefined;
  #transport: Transport | undefined;
  /** Reports the participant's state on its transport; undefined when reports are off. */
  #status: StatusPublisher | undefined;
  /** The elections the factory asked for, closed once the participant is down. */
  #elections: LeaderElection[] = [];
  /** Settles when restarts ran out: liveness fails from then on. */
  readonly #dead = createDeferred<Error | undefined>();

  constructor(parts: SlotParts) {
    this.#p = parts;
    this.#log = parts.config.logger.child({ participant: `${parts.kind}[${parts.index}]` });
  }

  get participant(): MeshParticipant | undefined {
    return this.#participant;
  }

  /** The service's name (undefined for a client), as `serveHealth` names the slot. */
  get serviceName(): string | undefined {
    return this.#participant?.serviceName;
  }

  /** Connected while its participant is and the runner runs (readiness). */
  get connected(): boolean {
    return this.#p.running() && this.#participant?.connected === true;
  }

  /** Settles when restarts ran out (liveness fails from then on). Never rejects. */
  closed(): Promise<Error | undefined> {
    return this.#dead.promise;
  }

  /**
   * Makes the transport and the participant and connects. On failure both are let go of.
   * @throws what the factory or `connect()` threw.
   */
  async start(): Promise<void> {
    const transport = this.#p.config.transport();
    const { logger, election } = this.#p.config;
    const instanceId = newId();
    const elections: LeaderElection[] = [];
    this.#elections = elections;
    const elect = (service: string): LeaderElection | undefined => {
      if (election === undefined) return undefined;
      const made = election({ service, candidateId: instanceId, transport, logger });
      elections.push(made);
      return made;
    };
    let participant: MeshParticipant;
    try {
      participant = this.#p.make({ transport, instanceId, elect, logger });
    } catch (err) {
      await this.#closeElections();
      await transport.close().catch(() => undefined);
      throw err;
    }
    this.#transport = transport;
    this.#participant = participant;
    try {
      await participant.connect();
    } catch (err) {
      await this.#release();
      throw err;
    }
    this.#startReports(participant, transport);
    this.#log.info("connected", {
      service: participant.serviceName,
      instanceId: participant.instanceId,
      transport: transport.kind,
    });
    void participant.closed().then((reason) => this.#onClosed(participant, reason));
  }

  /** Reports `operational` (or `leader`): the runner is up. */
  markOperational(): void {
    const p = this.#participant;
    if (p !== undefined)
      void this.#status?.report(p.isLeader ? "leader" : "operational", p.isLeader);
  }

  #startReports(participant: MeshParticipant, transport: Transport): void {
    const heartbeat = this.#p.config.status;
    if (heartbeat === undefined) return;
    const status = new StatusPublisher({
      transport,
      service: participant.serviceName,
      instanceId: participant.instanceId,
      heartbeatMs: heartbeat.heartbeatMs,
      log: this.#log,
    });
    this.#status = status;
    const operational = this.#p.operational;
    void status.report(operational() ? "operational" : "starting", participant.isLeader);
    // Leadership changes are reported as they come, while the runner runs.
    void (async () => {
      for await (const e of participant.events()) {
        if ((e.type !== "elected" && e.type !== "deposed") || !this.#p.running()) continue;
        const state = !operational() ? "starting" : e.type === "elected" ? "leader" : "operational";
        void status.report(state, e.type === "elected");
      }
    })();
  }

  /**
   * Stops taking deliveries and lets handlers finish until `deadline` (a `Date.now()` value), then
   * disconnects; resolves with how the drain ended. Never throws.
   */
  async drain(deadline: number): Promise<DrainOutcome> {
    const participant = this.#participant;
    if (participant === undefined) return "drained";
    const status = this.#status;
    // Reports wait for the broker; a broker that is down must not stretch the drain.
    if (status !== undefined)
      await byDeadline(status.report("stopping", participant.isLeader), deadline);
    // A client's requests out are let finish first: their answers may already be on the way.
    if (participant.serviceName === undefined) await untilSettled(participant, deadline);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const bound = new Promise<"timed-out">((resolve) => {
      timer = setTimeout(() => resolve("timed-out"), Math.max(0, deadline - Date.now()));
    });
    const finished = participant.disconnect().then(
      () => "drained" as const,
      () => "drained" as const,
    );
    let outcome: DrainOutcome = await Promise.race([finished, bound]);
    clearTimeout(timer);
    // core bounds its own drain too (a service's drainTimeoutMs) and then moves on: a handler
    // still running after disconnect() is a drain that did not finish either.
    if (outcome === "drained" && inFlight(participant) > 0) outcome = "timed-out";
    if (outcome === "timed-out") {
      this.#log.warn("drain bound passed with handlers still running", {
        inFlight: inFlight(participant),
      });
    }
    // On the transport, which is still open: the participant has let go of it.
    if (status !== undefined) await byDeadline(status.report("stopped", false), deadline);
    return outcome;
  }

  /** Closes the elections and the transport this slot made (unsettled deliveries return to the broker). Never throws. */
  async close(): Promise<void> {
    this.#status?.stop();
    await this.#closeElections();
    await this.#transport?.close().catch(() => undefined);
  }

  async #closeElections(): Promise<void> {
    const elections = this.#elections;
    this.#elections = [];
    await Promise.allSettled(elections.map((e) => e.close()));
  }

  async #release(): Promise<void> {
    await this.#participant?.disconnect().catch(() => undefined);
    await this.close();
  }

  #onClosed(participant: MeshParticipant, reason: Error | undefined): void {
    // Asked to close (the runner is stopping), or a participant already replaced: nothing to do.
    if (reason === undefined || participant !== this.#participant || !this.#p.running()) return;
    this.#log.warn("transport closed for good", { error: reason.message });
    void this.#restart(reason);
  }

  async #restart(reason: Error): Promise<void> {
    await this.#release();
    const policy = this.#p.config.restart;
    let last = reason;
    for (let attempt = 1; attempt <= policy.maxAttempts; attempt++) {
      const delayMs = restartDelayMs(policy, attempt);
      this.#log.info("restarting", { attempt, of: policy.maxAttempts, delayMs });
      if (!(await sleep(delayMs, this.#p.signal)) || !this.#p.running()) return;
      try {
        await this.start();
        // A stop that began while connecting: the runner drains what it finds.
        return;
      } catch (err) {
        last = err instanceof Error ? err : new Error(String(err));
        this.#log.warn("restart failed", { attempt, error: last.message });
      }
    }
    if (!this.#p.running()) return;
    this.#log.error("restarts exhausted", { attempts: policy.maxAttempts, error: last.message });
    this.#dead.resolve(last);
    this.#p.gaveUp(last);
  }
}

/** Handlers still running in a service (0 for a client). */
function inFlight(participant: MeshParticipant): number {
  const stats = (participant as { stats?: () => { in_flight: number } }).stats;
  if (participant.serviceName === undefined || typeof stats !== "function") return 0;
  return stats.call(participant).in_flight;
}

/** Waits for `work` until `deadline` (a `Date.now()` value) at the latest. Never throws. */
async function byDeadline(work: Promise<void>, deadline: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    work.catch(() => undefined),
    new Promise<void>((r) => (timer = setTimeout(r, Math.max(0, deadline - Date.now())))),
  ]);
  clearTimeout(timer);
}

/** How often a draining client looks whether its requests have their answers, in ms. */
const PENDING_POLL_MS = 10;

/** Resolves when `participant` waits for no response, or at `deadline`. */
async function untilSettled(participant: MeshParticipant, deadline: number): Promise<void> {
  while (participant.pendingRequests > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, Math.min(PENDING_POLL_MS, deadline - Date.now())));
  }
}

/** Waits `ms`; false when `signal` aborted first. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
