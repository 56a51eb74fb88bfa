import {
  DEFAULT_RPC_TTL_MS,
  NuropbTimeoutError,
  schedulingOf,
  type Context,
  type Delivery,
  type Frame,
  type Logger,
  type NuropbError,
  type Transport,
  type TransportScheduling,
} from "@nuropb/protocol";
import type { MessageFlow } from "./message-lifecycle.ts";
import { settle, type Outcome } from "./outcomes.ts";
import {
  FailureHeader,
  MAX_FAILURE_DESCRIPTION,
  MAX_FAILURE_ERROR,
  carriedFailureOf,
  checkFailurePolicy,
  failureHeaders,
  isRetryable,
  withoutFailureHeaders,
  type CarriedFailure,
  type FailureRecord,
  type ResolvedFailurePolicy,
} from "./failure-policy.ts";
import type { ServiceConfig } from "./options.ts";
import { EVENT_HOOK } from "./service-definition.ts";
import type { EventToPublish } from "./types.ts";

/** What the failure pipeline needs of its service. */
export interface FailurePipelineParts {
  readonly transport: Transport;
  /** The service: its name (scheduled copies go back to its queue) and policies. */
  readonly service: Pick<ServiceConfig<object>, "name" | "failurePolicy" | "methods">;
  readonly log: Logger;
  /** Publishes a fault event, with the ids of the message that failed. */
  readonly sendEvent: (
    e: EventToPublish,
    context: Context,
    traceId: string | null,
    correlationId: string,
  ) => Promise<void>;
}

/** A message whose handling failed, as the pipeline settles it. */
export interface FailedMessage {
  readonly delivery: Delivery;
  readonly kind: "request" | "command" | "event";
  /** The method, or `handleEvent` for an event. */
  readonly method: string;
  /** The last failure, as answered. */
  readonly error: NuropbError;
  /** The error as the handler threw it (what `retryable` is asked about). */
  readonly thrown: unknown;
  /** Handler runs in this delivery (1 + the immediate retries). */
  readonly runs: number;
  /** `Date.now()` when this delivery's handling began. */
  readonly receivedAt: number;
  readonly traceId: string | null;
  readonly correlationId: string;
  /** The call's params (an event's `event`), for fault events that opt in. */
  readonly params: unknown;
  /** An event's topic. */
  readonly topic?: string;
}

/** How {@link FailurePipeline.settle} settled a failed message. */
export type FailureSettlement = "scheduled" | "dead-lettered";

/**
 * The failure pipeline of one service (see {@link FailurePolicy}): immediate retries, delayed
 * redelivery through the transport's scheduling, dead-lettering with the failure record, and
 * fault events.
 */
export class FailurePipeline {
  readonly #p: FailurePipelineParts;
  readonly #service: string;
  /** The methods with a policy of their own (undefined: `failurePolicy: false`). */
  readonly #methods = new Map<string, ResolvedFailurePolicy | undefined>();

  private constructor(parts: FailurePipelineParts) {
    this.#p = parts;
    this.#service = parts.service.name;
    for (const [name, entry] of parts.service.methods) {
      const own = entry.options.failurePolicy;
      if (own === undefined) continue;
      this.#methods.set(name, own === false ? undefined : checkFailurePolicy(own, name));
    }
    warnOfLongDelays(parts);
  }

  /** The pipeline of a service, or undefined when neither it nor any method has a policy. */
  static of(parts: FailurePipelineParts): FailurePipeline | undefined {
    const s = parts.service;
    if (s.failurePolicy === undefined) {
      if (![...s.methods.values()].some((m) => m.options.failurePolicy)) return undefined;
    }
    return new FailurePipeline(parts);
  }

  /**
   * The policy of `method` (`handleEvent` for events): its own, else the service's; for a method
   * the service does not have, the service's with nothing retried (the call cannot succeed).
   */
  policyFor(method: string): ResolvedFailurePolicy | undefined {
    if (this.#methods.has(method)) return this.#methods.get(method);
    const policy = this.#p.service.failurePolicy;
    if (policy === undefined || method === EVENT_HOOK || this.#p.service.methods.has(method))
      return policy;
    return { ...policy, retryable: neverRetryable };
  }

  /**
   * Runs `rerun` again while the outcome is a retryable failure, at most
   * `policy.immediateRetries` times; returns the last outcome and the runs made (with `first`).
   */
  async retryImmediately(
    policy: ResolvedFailurePolicy,
    first: Outcome,
    rerun: () => Promise<Outcome>,
  ): Promise<{ outcome: Outcome; runs: number }> {
    let outcome = first;
    let runs = 1;
    while (
      outcome.kind === "failure" &&
      runs <= policy.immediateRetries &&
      isRetryable(policy, outcome.thrown)
    ) {
      this.#p.log.debug("retrying at once", { runs, error: outcome.error.wireName });
      outcome = await rerun();
      runs++;
    }
    return { outcome, runs };
  }

  /**
   * Settles a failed message: a retryable failure with a delay left (and time left before the
   * caller's ttl passes) is scheduled again as a copy carrying the failure so far, and the
   * delivery acked once the broker holds the copy (at-least-once); otherwise the message is
   * dead-lettered with its failure record and the fault event published. A request is answered
   * by the caller of this method when it returns `"dead-lettered"`. Never throws.
   */
  async settle(
    policy: ResolvedFailurePolicy,
    m: FailedMessage,
    flow: MessageFlow | undefined,
  ): Promise<FailureSettlement> {
    const now = Date.now();
    const carried = this.#carried(policy, m.delivery, m.kind, m.method, now);
    const before = carried?.attempts ?? 0;
    const redeliveries = carried?.redeliveries ?? 0;
    const record: FailureRecord = {
      error: m.error.wireName.slice(0, MAX_FAILURE_ERROR) || "NuropbException",
      description: m.error.description.slice(0, MAX_FAILURE_DESCRIPTION),
      service: this.#service,
      method: m.method,
      attempts: before + m.runs,
      firstFailureAt: carried?.firstFailureAt ?? iso(now),
      lastFailureAt: iso(now),
    };
    const deadline =
      m.kind === "event"
        ? undefined
        : (carried?.deadline ??
          (m.delivery.ttlMs === undefined ? undefined : m.receivedAt + m.delivery.ttlMs));
    const delay = policy.delays[redeliveries];
    if (delay !== undefined && isRetryable(policy, m.thrown)) {
      if (deadline !== undefined && now + this.#deliveredAfterMs(delay) >= deadline) {
        this.#p.log.debug("the caller's ttl passes before the next delivery; failing now", {
          correlationId: m.correlationId,
        });
      } else if (await this.#schedule(m, record, redeliveries + 1, deadline, delay)) {
        await settle(m.delivery, "ack", flow);
        return "scheduled";
      }
    }
    await this.#deadLetter(m.delivery, failureHeaders(record, redeliveries, deadline), flow);
    // A failed fault event raises none: a subscriber failing on its own faults would loop.
    if (policy.faultEvents && m.topic?.startsWith(FAULT_PREFIX) !== true) {
      await this.#fault(policy, m, record);
    }
    return "dead-lettered";
  }

  /**
   * On arrival of a request or command: when it is a copy this pipeline scheduled and the
   * caller's ttl it carries has passed, dead-letters it as expired (error `NuropbTimeoutError`,
   * the earlier failures in its record) and publishes the fault event if the policy asks, without
   * running it. True when it did: the caller then neither runs nor answers the message.
   */
  async settleIfExpired(
    m: Omit<FailedMessage, "error" | "thrown" | "runs" | "receivedAt" | "topic">,
    flow: MessageFlow | undefined,
  ): Promise<boolean> {
    if (m.kind === "event") return false;
    const policy = this.policyFor(m.method);
    if (policy === undefined) return false;
    const now = Date.now();
    const carried = this.#carried(policy, m.delivery, m.kind, m.method, now);
    if (carried?.deadline === undefined || now < carried.deadline) return false;
    const record: FailureRecord = {
      error: NuropbTimeoutError.wireName,
      description:
        `the caller's ttl passed before delayed redelivery ${String(carried.redeliveries)} could run; the last failure was ${carried.error}: ${carried.description}`.slice(
          0,
          MAX_FAILURE_DESCRIPTION,
        ),
      service: this.#service,
      method: m.method,
      attempts: carried.attempts,
      firstFailureAt: carried.firstFailureAt,
      lastFailureAt: iso(now),
    };
    this.#p.log.debug("a delayed redelivery arrived after its caller's ttl; dead-lettering it", {
      correlationId: m.correlationId,
      redelivery: carried.redeliveries,
    });
    await this.#deadLetter(
      m.delivery,
      failureHeaders(record, carried.redeliveries, carried.deadline),
      flow,
    );
    if (policy.faultEvents) await this.#fault(policy, m, record);
    return true;
  }

  /** The failure a delivery carries, when it is a copy this pipeline scheduled (else undefined). */
  #carried(
    policy: ResolvedFailurePolicy,
    delivery: Delivery,
    kind: FailedMessage["kind"],
    method: string,
    now: number,
  ): CarriedFailure | undefined {
    const carried = carriedFailureOf(
      delivery.headers,
      policy,
      { service: this.#service, method, kind },
      now,
    );
    if (carried === undefined && delivery.headers[FailureHeader.redeliveries] !== undefined) {
      this.#p.log.debug("ignoring failure headers that this pipeline did not set", {
        correlationId: delivery.correlationId,
      });
    }
    return carried;
  }

  /**
   * When a copy sent with `delayMs` is delivered at the earliest: the transport's own figure when
   * its scheduling tells (RabbitMQ rounds up to a delay bucket), else `delayMs` plus a margin.
   */
  #deliveredAfterMs(delayMs: number): number {
    const scheduling = schedulingOf(this.#p.transport) as
      (TransportScheduling & { deliveryDelayMs?: unknown }) | undefined;
    if (typeof scheduling?.deliveryDelayMs === "function") {
      const ms: unknown = (scheduling.deliveryDelayMs as (d: number) => unknown)(delayMs);
      if (typeof ms === "number" && Number.isFinite(ms) && ms >= delayMs) return ms;
    }
    return delayMs + Math.max(DELAY_MARGIN_MS, Math.ceil(delayMs / 10));
  }

  /** Sends the copy for redelivery `n`; false (logged) when the transport could not take it. */
  async #schedule(
    m: FailedMessage,
    record: FailureRecord,
    n: number,
    deadline: number | undefined,
    delayMs: number,
  ): Promise<boolean> {
    const d = m.delivery;
    const frame: Frame = {
      headers: { ...withoutFailureHeaders(d.headers), ...failureHeaders(record, n, deadline) },
      body: d.body,
      correlationId: d.correlationId,
      ...(d.replyTo === undefined ? {} : { replyTo: d.replyTo }),
    };
    try {
      const scheduling = schedulingOf(this.#p.transport);
      if (scheduling === undefined) throw new TypeError("the transport has no scheduling");
      await scheduling.sendDelayed(this.#service, frame, delayMs);
      this.#p.log.debug("failed; redelivery scheduled", {
        correlationId: m.correlationId,
        redelivery: n,
        delayMs,
      });
      return true;
    } catch (err) {
      this.#p.log.warn("could not schedule a redelivery; dead-lettering the message", {
        correlationId: m.correlationId,
        error: String((err as Error)?.message ?? err),
      });
      return false;
    }
  }

  /** Dead-letters with the failure record in the headers (plain `reject` when the transport cannot). */
  async #deadLetter(
    delivery: Delivery,
    headers: Record<string, string>,
    flow: MessageFlow | undefined,
  ): Promise<void> {
    if (typeof delivery.deadLetter === "function") {
      await delivery.deadLetter(headers);
      flow?.emit("service-ack", { settlement: "reject" });
      return;
    }
    this.#p.log.warn("failed for good; dead-lettered without its failure record", {
      correlationId: delivery.correlationId,
      error: headers[FailureHeader.error],
      attempts: headers[FailureHeader.attempts],
    });
    await settle(delivery, "reject", flow);
  }

  /** Publishes `nuropb.fault.{service}.{method}` (no context: it may hold credentials). */
  async #fault(
    policy: ResolvedFailurePolicy,
    m: Pick<FailedMessage, "kind" | "method" | "correlationId" | "traceId" | "params">,
    record: FailureRecord,
  ): Promise<void> {
    const event = {
      ...record,
      kind: m.kind,
      correlationId: m.correlationId,
      traceId: m.traceId,
      ...(policy.faultParams ? { params: m.params } : {}),
    };
    try {
      await this.#p.sendEvent(
        { topic: faultTopic(this.#service, m.method), event },
        {},
        m.traceId,
        m.correlationId,
      );
    } catch (err) {
      this.#p.log.error("could not publish a fault event", {
        correlationId: m.correlationId,
        error: String((err as Error)?.message ?? err),
      });
    }
  }
}

const FAULT_PREFIX = "nuropb.fault.";

const neverRetryable = (): boolean => false;

/** Added to a delay when the transport does not tell when a delayed copy is delivered. */
const DELAY_MARGIN_MS = 100;

/** Services already warned of (a service's call and event handlers each build a pipeline). */
const warned = new WeakSet<object>();

/**
 * Warns when a policy's delays add up to more than the default ttl of a request or command: a
 * call with that ttl fails before its later redeliveries (events, without a ttl, reach them).
 */
function warnOfLongDelays(parts: FailurePipelineParts): void {
  const s = parts.service;
  if (warned.has(s)) return;
  warned.add(s);
  const policies: [string, ResolvedFailurePolicy | undefined][] = [
    ["the service", s.failurePolicy],
  ];
  for (const [name, entry] of s.methods) {
    const own = entry.options.failurePolicy;
    if (own !== undefined && own !== false) policies.push([name, checkFailurePolicy(own, name)]);
  }
  for (const [where, policy] of policies) {
    const totalMs = policy?.delays.reduce((a, b) => a + b, 0) ?? 0;
    if (totalMs <= DEFAULT_RPC_TTL_MS) continue;
    parts.log.warn(
      "failurePolicy delays add up to more than the default ttl of a request or command: calls with that ttl fail before their last redeliveries (give them a longer ttlMs)",
      { service: s.name, policyOf: where, totalDelayMs: totalMs, defaultTtlMs: DEFAULT_RPC_TTL_MS },
    );
  }
}

/** The topic of a fault event: `nuropb.fault.{service}.{method}`. */
export function faultTopic(service: string, method: string): string {
  return `${FAULT_PREFIX}${service}.${method}`;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
