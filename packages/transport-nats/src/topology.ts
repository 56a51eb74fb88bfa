import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  nanos,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type JetStreamManager,
  type NatsConnection,
  type StreamConfig,
  type Subscription,
} from "nats";
import {
  assertTopicPattern,
  NuropbTransportError,
  topicMatches,
  type Logger,
  type ServiceQueueSpec,
} from "@nuropb/protocol";
import {
  bindingsSubject,
  deadLetterStreamName,
  deadLetterWildcard,
  eventsConsumerName,
  eventsStreamName,
  eventsWildcard,
  isLiteralSubject,
  rpcSubject,
  SERVICE_CONSUMER,
  serviceStreamName,
  topicOfSubject,
} from "./names.ts";
import { apiErrorCode, JsErr } from "./nats-errors.ts";
import type { PullSource } from "./pull-loop.ts";

/** What a service listener consumes. */
export interface ServiceTopology {
  readonly service: string;
  /**
   * The rpc names routed to the service's stream. Empty for a transient queue with event
   * bindings alone: it then has no stream of its own (JetStream streams never expire, so one
   * left by a consumer that crashed would stay), only its expiring events consumer.
   */
  readonly rpcNames: readonly string[];
  readonly eventBindings: readonly string[];
  /** A transient queue (`ServiceQueueSpec.transient`): its consumers expire, all is removed at stop. */
  readonly transient?: boolean;
}

/**
 * How long the consumers of a transient service queue outlive their last pull, in
 * milliseconds: the server deletes them once nobody pulls (a consumer that crashed), so the
 * events stream stops keeping messages for them.
 */
export const TRANSIENT_INACTIVE_MS = 30_000;

/** A service listener's topology and the event patterns it currently serves. */
export interface ServiceRecord extends ServiceTopology {
  /** Union of the event patterns of every instance of the service (grows, never shrinks). */
  patterns: string[];
  /** Announcements of that union by other instances. */
  announcements?: Subscription;
  /** Lowest ack wait of the service's consumers as the server has it, in milliseconds. */
  serverAckWaitMs?: number;
}

/** Configuration of a stream: its name and subjects, and whatever else it sets. */
type StreamSpec = Partial<StreamConfig> & { name: string; subjects: string[] };

/** What a {@link Topology} needs from its transport. */
export interface TopologyDeps {
  readonly mesh: string;
  readonly ackWaitMs: number;
  readonly eventRetentionMs: number;
  readonly deadLetterRetentionMs: number;
  /** `num_replicas` of the streams it creates (an existing stream keeps its own). @defaultValue 1 */
  readonly replicas?: number;
  /** The open connection and its JetStream manager; throws once the transport is not open. */
  readonly requireOpen: () => { nc: NatsConnection; jsm: JetStreamManager };
}

/**
 * Declares the streams and durable consumers services read from, idempotently: a service's
 * stream of requests and commands, the mesh's events stream and dead-letter stream. Declaring
 * over what another transport declared merges into it (subjects, event patterns), raises the
 * consumers' ack wait to the options and brings the streams' retention to them.
 */
export class Topology {
  readonly #deps: TopologyDeps;

  constructor(deps: TopologyDeps) {
    this.#deps = deps;
  }

  /**
   * Subscribes to the announcements of the service's event patterns by its other instances,
   * merged into `topo.patterns`. Announcements arrive on this connection in order with the
   * events themselves, so an event published after another instance widened the bindings is
   * never filtered out here.
   */
  watchAnnouncements(nc: NatsConnection, topo: ServiceRecord, logger: Logger): void {
    topo.announcements = nc.subscribe(bindingsSubject(this.#deps.mesh, topo.service), {
      callback: (err, msg) => {
        if (err !== null) return;
        try {
          const announced = JSON.parse(new TextDecoder().decode(msg.data)) as unknown;
          if (Array.isArray(announced)) {
            const valid = announced.filter((p): p is string => typeof p === "string");
            topo.patterns = [...new Set([...topo.patterns, ...valid])].sort();
          }
        } catch {
          logger.debug("malformed bindings announcement", { service: topo.service });
        }
      },
    });
  }

  /**
   * The durable consumers a service listener pulls from: its stream's, and the events stream's
   * when it has event bindings, taking only the events the service's patterns match.
   */
  pullSources(topo: ServiceRecord): PullSource[] {
    const mesh = this.#deps.mesh;
    const sources: PullSource[] =
      topo.rpcNames.length === 0
        ? []
        : [{ stream: serviceStreamName(mesh, topo.service), consumer: SERVICE_CONSUMER }];
    if (topo.eventBindings.length > 0) {
      sources.push({
        stream: eventsStreamName(mesh),
        consumer: eventsConsumerName(topo.service),
        accepts: (subject: string): boolean => {
          const topic = topicOfSubject(mesh, subject);
          return topo.patterns.some((p) => topicMatches(p, topic));
        },
      });
    }
    return sources;
  }

  /** Configuration of the mesh's dead-letter stream. */
  deadLetterStream(): StreamSpec {
    return {
      name: deadLetterStreamName(this.#deps.mesh),
      subjects: [deadLetterWildcard(this.#deps.mesh)],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      max_age: nanos(this.#deps.deadLetterRetentionMs),
    };
  }

  /**
   * Declares (idempotently) what a service consumes, merges the service's event patterns into
   * `topo.patterns` and announces them to the other instances.
   */
  async ensureService(topo: ServiceRecord): Promise<void> {
    const { mesh, ackWaitMs } = this.#deps;
    await this.ensureStream(this.deadLetterStream(), false);
    const expiring: Partial<ConsumerConfig> =
      topo.transient === true ? { inactive_threshold: nanos(TRANSIENT_INACTIVE_MS) } : {};
    let rpcAckWaitMs = Number.POSITIVE_INFINITY;
    if (topo.rpcNames.length > 0) {
      const streamName = serviceStreamName(mesh, topo.service);
      await this.ensureStream(
        {
          name: streamName,
          subjects: topo.rpcNames.map((n) => rpcSubject(mesh, n)),
          retention: RetentionPolicy.Workqueue,
          storage: StorageType.File,
          discard: DiscardPolicy.Old,
        },
        true,
      );
      const rpc = await this.#ensureConsumer(streamName, {
        ...expiring,
        durable_name: SERVICE_CONSUMER,
        ack_policy: AckPolicy.Explicit,
        ack_wait: nanos(ackWaitMs),
        deliver_policy: DeliverPolicy.All,
        max_deliver: -1,
        max_ack_pending: -1,
      });
      rpcAckWaitMs = rpc.ackWaitMs;
      topo.serverAckWaitMs = rpc.ackWaitMs;
    }
    if (topo.eventBindings.length === 0) return;
    const eventsName = eventsStreamName(mesh);
    await this.ensureStream(
      {
        name: eventsName,
        subjects: [eventsWildcard(mesh)],
        retention: RetentionPolicy.Interest,
        storage: StorageType.File,
        discard: DiscardPolicy.Old,
        max_age: nanos(this.#deps.eventRetentionMs),
      },
      false,
    );
    const events = await this.#ensureConsumer(
      eventsName,
      {
        ...expiring,
        durable_name: eventsConsumerName(topo.service),
        ack_policy: AckPolicy.Explicit,
        ack_wait: nanos(ackWaitMs),
        deliver_policy: DeliverPolicy.New,
        filter_subject: eventsWildcard(mesh),
        max_deliver: -1,
        max_ack_pending: -1,
        description: JSON.stringify([...topo.eventBindings].sort()),
      },
      topo.eventBindings,
    );
    topo.serverAckWaitMs = Math.min(rpcAckWaitMs, events.ackWaitMs);
    topo.patterns = [...new Set([...topo.patterns, ...events.union])].sort();
    const { nc } = this.#deps.requireOpen();
    nc.publish(bindingsSubject(mesh, topo.service), JSON.stringify(topo.patterns));
    await nc.flush();
  }

  /**
   * Removes a transient service queue: its events consumer and its stream (with the stream's
   * consumer) when it has one. Never rejects: what cannot be removed now expires (consumers) or stays empty.
   */
  async removeService(topo: ServiceTopology, jsm: JetStreamManager, logger: Logger): Promise<void> {
    const { mesh } = this.#deps;
    const steps: (() => Promise<unknown>)[] =
      topo.rpcNames.length === 0
        ? []
        : [() => jsm.streams.delete(serviceStreamName(mesh, topo.service))];
    if (topo.eventBindings.length > 0) {
      steps.unshift(() =>
        jsm.consumers.delete(eventsStreamName(mesh), eventsConsumerName(topo.service)),
      );
    }
    for (const step of steps) {
      try {
        await step();
      } catch (err) {
        const code = apiErrorCode(err);
        if (code !== JsErr.streamNotFound && code !== JsErr.consumerNotFound) {
          logger.warn("transient queue not removed", { service: topo.service, error: String(err) });
        }
      }
    }
  }

  /** Declares a stream, or merges `config` into the one there (subjects when `mergeSubjects`). */
  async ensureStream(config: StreamSpec, mergeSubjects: boolean): Promise<void> {
    const { jsm } = this.#deps.requireOpen();
    for (let attempt = 0; ; attempt++) {
      try {
        const info = await jsm.streams.info(config.name);
        const changes: Partial<StreamConfig> = {};
        const have = new Set(info.config.subjects ?? []);
        if (mergeSubjects && !config.subjects.every((s) => have.has(s))) {
          changes.subjects = [...new Set([...have, ...config.subjects])];
        }
        // A retention changed in the options reaches a stream declared before: the last
        // transport to declare it wins. Not when the stream's retention policy is another:
        // the events stream turned into the event log (limits) keeps the log's retention.
        if (
          config.max_age !== undefined &&
          info.config.max_age !== config.max_age &&
          (config.retention === undefined || config.retention === info.config.retention)
        ) {
          changes.max_age = config.max_age;
          // The server refuses a duplicate window longer than the retention.
          if (info.config.duplicate_window > config.max_age)
            changes.duplicate_window = config.max_age;
        }
        if (Object.keys(changes).length === 0) return;
        await jsm.streams.update(config.name, { ...info.config, ...changes });
        return;
      } catch (err) {
        const code = apiErrorCode(err);
        if (code === JsErr.subjectsOverlap) throw overlapError(config, err);
        if (code !== JsErr.streamNotFound || attempt > 3) throw err;
      }
      try {
        await jsm.streams.add({ num_replicas: this.#deps.replicas ?? 1, ...config });
        return;
      } catch (err) {
        const code = apiErrorCode(err);
        if (code === JsErr.subjectsOverlap) throw overlapError(config, err);
        // Created by someone else meanwhile: look again.
        if (code !== JsErr.streamNameInUse || attempt > 3) throw err;
      }
    }
  }

  /**
   * Declares a durable consumer. With `bindings`, the consumer's description keeps the union of
   * the event patterns of every instance of the service (the patterns this consumer serves).
   * Resolves to that union and the consumer's ack wait as the server now has it, in ms.
   */
  async #ensureConsumer(
    stream: string,
    config: Partial<ConsumerConfig> & { durable_name: string },
    bindings?: readonly string[],
  ): Promise<{ union: string[]; ackWaitMs: number }> {
    const ms = (ns: number | undefined): number =>
      ns === undefined || ns <= 0 ? Number.POSITIVE_INFINITY : ns / 1_000_000;
    const { jsm } = this.#deps.requireOpen();
    for (let attempt = 0; ; attempt++) {
      try {
        const info = await jsm.consumers.info(stream, config.durable_name);
        const changes: Partial<ConsumerConfig> = {};
        // A longer ackWaitMs in the options reaches a consumer declared before; a shorter one
        // does not lower it (delete the consumer for that). Instances with different settings
        // would otherwise flip it back and forth, and one that lowered it would get messages
        // redelivered from the others, whose progress is paced by their longer ack wait. Only
        // raised, it never drops under what a running instance paces its progress by: each
        // paces it by the lower of its own ackWaitMs and the consumer's.
        if (
          config.ack_wait !== undefined &&
          (info.config.ack_wait === undefined || info.config.ack_wait < config.ack_wait)
        )
          changes.ack_wait = config.ack_wait;
        let union: string[] = [];
        if (bindings !== undefined) {
          const known = knownPatterns(info.config.description);
          union = [...new Set([...known, ...bindings])].sort();
          if (union.length !== known.length) changes.description = JSON.stringify(union);
        }
        const now =
          Object.keys(changes).length > 0
            ? await jsm.consumers.update(stream, config.durable_name, changes)
            : info;
        return { union, ackWaitMs: ms(now.config.ack_wait) };
      } catch (err) {
        if (apiErrorCode(err) !== JsErr.consumerNotFound || attempt > 3) throw err;
      }
      try {
        const made = await jsm.consumers.add(stream, config);
        return {
          union: bindings === undefined ? [] : [...bindings],
          ackWaitMs: ms(made.config.ack_wait),
        };
      } catch (err) {
        const code = apiErrorCode(err);
        if ((code !== JsErr.consumerExists && code !== JsErr.consumerNameExists) || attempt > 3)
          throw err;
      }
    }
  }
}

/** The event patterns an events consumer's description keeps (none when unreadable). */
function knownPatterns(description: string | undefined): string[] {
  try {
    const parsed = JSON.parse(description ?? "[]") as unknown;
    return Array.isArray(parsed) ? parsed.filter((p): p is string => typeof p === "string") : [];
  } catch {
    return [];
  }
}

function overlapError(config: StreamSpec, cause: unknown): NuropbTransportError {
  return new NuropbTransportError(
    `an rpc name of stream ${config.name} is already bound to another service (subjects ${config.subjects.join(", ")})`,
    { cause },
  );
}

/**
 * Checks that a service's names can be subjects on NATS.
 * @throws TypeError for a name or pattern NATS cannot carry, or a negative prefetch.
 */
export function validateServiceSpec(spec: ServiceQueueSpec): void {
  if (!isLiteralSubject(spec.service)) {
    throw new TypeError(
      `service name '${spec.service}' is not usable on NATS (no spaces, '*', '>' or empty words)`,
    );
  }
  for (const name of spec.rpcBindings) {
    if (!isLiteralSubject(name)) throw new TypeError(`rpc binding '${name}' is not usable on NATS`);
  }
  for (const pattern of spec.eventBindings) assertTopicPattern(pattern);
  if (!Number.isSafeInteger(spec.prefetch) || spec.prefetch < 0) {
    throw new TypeError(`prefetch must be an integer >= 0, got ${String(spec.prefetch)}`);
  }
  if (spec.transient !== undefined && typeof spec.transient !== "boolean") {
    throw new TypeError("transient must be a boolean when given");
  }
}
