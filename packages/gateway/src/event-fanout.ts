import { topicMatches, toWireJson } from "@nuropb/protocol";
import type { Logger } from "@nuropb/protocol";
import type { MessageId } from "@nuropb/gateway-client";
import type { MeshEvent } from "./mesh-link.ts";

/** Where a matching event goes: one WebSocket connection. */
export interface EventReceiver {
  /** Queues the text of one `event` message (the receiver enforces its send-buffer limit). */
  deliverEvent(text: string): void;
}

interface Subscription {
  readonly id: MessageId;
  /** `"subscription":<id>,` ready to splice into the message. */
  readonly idField: string;
  readonly pattern: string;
}

/**
 * The subscriptions of every connection, and the fan-out of each event the gateway's mesh
 * service receives to the connections whose patterns match its topic. An event is written to
 * JSON once; each matching subscription costs one string concatenation.
 */
export class EventFanout {
  readonly #byReceiver = new Map<EventReceiver, Map<string, Subscription>>();
  readonly #logger: Logger;
  #subscriptions = 0;
  #delivered = 0;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** Open subscriptions across all connections. */
  get subscriptions(): number {
    return this.#subscriptions;
  }

  /** Event messages handed to connections since the start. */
  get delivered(): number {
    return this.#delivered;
  }

  /** How many subscriptions `receiver` holds. */
  countOf(receiver: EventReceiver): number {
    return this.#byReceiver.get(receiver)?.size ?? 0;
  }

  /** True when `receiver` has a subscription with this id. */
  has(receiver: EventReceiver, id: MessageId): boolean {
    return this.#byReceiver.get(receiver)?.has(JSON.stringify(id)) === true;
  }

  /** Adds (or replaces) the subscription `id` of `receiver`. */
  add(receiver: EventReceiver, id: MessageId, pattern: string): void {
    let subs = this.#byReceiver.get(receiver);
    if (subs === undefined) {
      subs = new Map();
      this.#byReceiver.set(receiver, subs);
    }
    const key = JSON.stringify(id);
    if (!subs.has(key)) this.#subscriptions++;
    subs.set(key, { id, idField: `"subscription":${key},`, pattern });
  }

  /** Removes one subscription; false when there was none. */
  remove(receiver: EventReceiver, id: MessageId): boolean {
    const subs = this.#byReceiver.get(receiver);
    if (subs?.delete(JSON.stringify(id)) !== true) return false;
    this.#subscriptions--;
    if (subs.size === 0) this.#byReceiver.delete(receiver);
    return true;
  }

  /** Removes every subscription of `receiver` (its connection closed). */
  removeAll(receiver: EventReceiver): void {
    const subs = this.#byReceiver.get(receiver);
    if (subs === undefined) return;
    this.#subscriptions -= subs.size;
    this.#byReceiver.delete(receiver);
  }

  /**
   * Sends `e` to every subscription whose pattern matches its topic. The event's context is
   * not passed on: it may hold another caller's token.
   */
  publish(e: MeshEvent): void {
    if (this.#subscriptions === 0) return;
    let rest: string;
    try {
      // `{"topic":…,"event":…}` without its opening brace, to follow each subscription's id.
      rest = toWireJson({
        topic: e.topic,
        event: e.event ?? null,
        target: e.target,
        traceId: e.traceId,
      }).slice(1);
    } catch (err) {
      this.#logger.warn("an event could not be written as JSON; dropped", {
        topic: e.topic,
        error: (err as Error).message,
      });
      return;
    }
    const matched = new Map<string, boolean>();
    // A snapshot: a receiver closed while delivering (slow consumer) leaves the map.
    for (const [receiver, subs] of [...this.#byReceiver]) {
      for (const sub of subs.values()) {
        let hit = matched.get(sub.pattern);
        if (hit === undefined) {
          hit = topicMatches(sub.pattern, e.topic);
          matched.set(sub.pattern, hit);
        }
        if (!hit) continue;
        this.#delivered++;
        receiver.deliverEvent(`{"type":"event",${sub.idField}${rest}`);
      }
    }
  }
}
