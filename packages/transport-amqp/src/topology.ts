import { assertTopicPattern } from "@nuropb/protocol";
import type { ResponseQueueSpec, ServiceQueueSpec } from "@nuropb/protocol";
import type { Channel } from "amqplib";

/** The exchanges a service queue is bound to (PROTOCOL.md §2). */
export interface Exchanges {
  readonly rpcExchange: string;
  readonly eventsExchange: string;
  readonly dlExchange: string;
}

/**
 * Declares a service queue with exactly the flags and arguments Python declares (PROTOCOL.md
 * §2.3), or the broker refuses one of the two with 406 PRECONDITION_FAILED, then binds it for
 * the service name, its aliases and its event patterns; sets the channel's prefetch first.
 */
export async function declareServiceQueue(
  ch: Channel,
  queue: string,
  spec: ServiceQueueSpec,
  x: Exchanges,
): Promise<void> {
  const rpcKeys = [...new Set([spec.service, ...spec.rpcBindings])];
  const eventKeys = [...new Set(spec.eventBindings)];
  await ch.prefetch(spec.prefetch, false);
  await ch.assertQueue(queue, {
    durable: true,
    exclusive: false,
    autoDelete: false,
    arguments: { "x-dead-letter-exchange": x.dlExchange },
  });
  await Promise.all([
    ...rpcKeys.map((k) => ch.bindQueue(queue, x.rpcExchange, k)),
    ...eventKeys.map((k) => ch.bindQueue(queue, x.eventsExchange, k)),
  ]);
}

/** Declares a response queue: transient, deleted with its (exclusive) consumer. */
export async function declareResponseQueue(ch: Channel, queue: string): Promise<void> {
  await ch.assertQueue(queue, { durable: false, exclusive: false, autoDelete: true });
}

/** @throws TypeError when the spec cannot name an AMQP queue and its bindings. */
export function checkServiceSpec(spec: ServiceQueueSpec): void {
  if (typeof spec !== "object" || spec === null)
    throw new TypeError("consumeService: spec must be an object");
  if (
    typeof spec.service !== "string" ||
    spec.service === "" ||
    Buffer.byteLength(spec.service) > 240
  ) {
    throw new TypeError(
      "consumeService: spec.service must be a non-empty string of at most 240 bytes",
    );
  }
  if (
    !Array.isArray(spec.rpcBindings) ||
    !spec.rpcBindings.every((b) => typeof b === "string" && b !== "")
  ) {
    throw new TypeError("consumeService: spec.rpcBindings must be a list of non-empty strings");
  }
  if (!Array.isArray(spec.eventBindings))
    throw new TypeError("consumeService: spec.eventBindings must be a list");
  for (const b of spec.eventBindings) assertTopicPattern(b);
  if (!Number.isInteger(spec.prefetch) || spec.prefetch < 0 || spec.prefetch > 65_535) {
    throw new TypeError(
      "consumeService: spec.prefetch must be an integer from 0 (unlimited) to 65535",
    );
  }
}

/** @throws TypeError when the address cannot name an AMQP queue. */
export function checkResponseSpec(spec: ResponseQueueSpec): void {
  if (
    typeof spec?.address !== "string" ||
    spec.address === "" ||
    Buffer.byteLength(spec.address) > 255
  ) {
    throw new TypeError(
      "consumeResponses: spec.address must be a non-empty string of at most 255 bytes",
    );
  }
}
