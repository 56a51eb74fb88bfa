import {
  DEFAULT_RPC_TTL_MS,
  schedulingOf,
  type Context,
  type Delivery,
  type Frame,
  type Logger,
  type NuropbError,
  type Transport,
} from "@nuropb/protocol";
import type { MessageFlow } from "./message-lifecycle.ts";
import { settle, type Outcome } from "./outcomes.ts";
import {
  FailureHeader,
  MAX_FAILURE_DESCRIPTION,
  checkFailurePolicy,
  countOf,
  failureHeaders,
  isRetryable,
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
    const h = m.delivery.headers;
    const now = Date.now();
    const before = countOf(h[FailureHeader.attempts]);
    const redeliveries = countOf(h[FailureHeader.redeliveries]);
    const first = h[FailureHeader.firstAt];
    const record: FailureRecord = {
      error: m.error.wireName,
      description: m.error.description.slice(0, MAX_FAILURE_DESCRIPTION),
      service: this.#service,
      method: m.method,
      attempts: before + m.runs,
      firstFailureAt: typeof first === "string" && first !== "" ? first : iso(now),
      lastFailureAt: iso(now),
    };
    const deadline = deadlineOf(m.delivery, m.receivedAt);
    const delay = policy.delays[redeliveries];
    if (delay !== undefined && isRetryable(policy, m.thrown)) {
      if (deadline !== undefined && now + delay >= deadline) {
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
      headers: { ...d.headers, ...failureHeaders(record, n, deadline) },
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
    m: FailedMessage,
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

/**
 * When the caller's ttl passes: from an earlier redelivery's header, else from the delivery's
 * ttl counted from when it was received (the time it waited in the queue is not known, so this
 * is an upper bound); undefined for an event or a message without a ttl.
 */
function deadlineOf(delivery: Delivery, receivedAt: number): number | undefined {
  const carried = delivery.headers[FailureHeader.deadline];
  if (typeof carried === "string" && /^\d{1,16}$/.test(carried)) return Number(carried);
  return delivery.ttlMs === undefined ? undefined : receivedAt + delivery.ttlMs;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
