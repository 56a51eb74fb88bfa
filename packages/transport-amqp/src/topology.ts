import { NuropbTransportError, assertTopicPattern } from "@nuropb/protocol";
import type { ResponseQueueSpec, ServiceQueueSpec } from "@nuropb/protocol";
import type { Channel } from "amqplib";

/** The exchanges a service queue is bound to (PROTOCOL.md §2). */
export interface Exchanges {
  readonly rpcExchange: string;
  readonly eventsExchange: string;
  readonly dlExchange: string;
}

/**
 * The arguments of a service queue. Classic (the default): only the dead-letter exchange, exactly
 * what Python declares (PROTOCOL.md §2.3). Quorum: replicated on the cluster's nodes, with the
 * dead-letter exchange reached at-least-once (the broker keeps a message until the dead-letter
 * exchange's queue confirms it; that strategy needs `x-overflow: reject-publish`, so a full
 * queue refuses publishes instead of dropping its head), and the redelivery budget as
 * `x-delivery-limit` when the service gives one (RabbitMQ 4.x defaults it to 20, 3.x to none).
 */
export function serviceQueueArguments(
  spec: ServiceQueueSpec,
  x: Exchanges,
): Record<string, string | number> {
  const args: Record<string, string | number> = { "x-dead-letter-exchange": x.dlExchange };
  if (spec.queueType === "quorum") {
    args["x-queue-type"] = "quorum";
    args["x-dead-letter-strategy"] = "at-least-once";
    args["x-overflow"] = "reject-publish";
    if (spec.deliveryLimit !== undefined) args["x-delivery-limit"] = spec.deliveryLimit;
  }
  return args;
}

/**
 * Declares a service queue with {@link serviceQueueArguments}, then binds it for the service
 * name, its aliases and its event patterns; sets the channel's prefetch first.
 * @throws NuropbTransportError (permanent, `details.conflict`) when the queue exists with other
 * arguments: the broker's 406 PRECONDITION_FAILED, naming the argument that differs.
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
  const args = serviceQueueArguments(spec, x);
  try {
    // A transient queue is the connection's own and goes with its consumer (or connection).
    const transient = spec.transient === true;
    await ch.assertQueue(queue, {
      durable: !transient,
      exclusive: transient,
      autoDelete: transient,
      arguments: args,
    });
  } catch (err) {
    throw queueConflictError(err, queue, args) ?? err;
  }
  await Promise.all([
    ...rpcKeys.map((k) => ch.bindQueue(queue, x.rpcExchange, k)),
    ...eventKeys.map((k) => ch.bindQueue(queue, x.eventsExchange, k)),
  ]);
}

/** AMQP reply code 406 PRECONDITION_FAILED. */
const PRECONDITION_FAILED = 406;

/**
 * The broker refused a queue declaration because the queue exists with other flags or arguments
 * (406 PRECONDITION_FAILED, "inequivalent arg 'x-queue-type' for queue … received the value
 * 'quorum' of type 'longstr' but current is none"): a typed, permanent error that names the
 * argument, what we declared and what the queue has. Undefined for any other error.
 */
export function queueConflictError(
  err: unknown,
  queue: string,
  declared: Readonly<Record<string, string | number>>,
): NuropbTransportError | undefined {
  const e = err as { code?: unknown; message?: unknown };
  if (e?.code !== PRECONDITION_FAILED || typeof e.message !== "string") return undefined;
  const text = e.message;
  const arg = /inequivalent arg '([^']+)'/.exec(text)?.[1];
  const values = /received (.+?) but current is (.+?)"?\s*$/.exec(text);
  const shown = Object.entries(declared)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(", ");
  const difference =
    arg === undefined
      ? text.replace(/^.*PRECONDITION_FAILED - /s, "").replace(/"\s*$/, "")
      : `argument '${arg}' differs (declared: ${values?.[1] ?? "?"}; the queue has: ${values?.[2] ?? "?"})`;
  return new NuropbTransportError(
    `service queue '${queue}' exists with other arguments than declared (PRECONDITION_FAILED): ${difference}. ` +
      `Declared: ${shown}. Every instance of a service must declare its queue alike (queueType, ` +
      "deliveryLimit); to change them, delete the queue (its messages go with it) and start again",
    {
      cause: err,
      retryable: false,
      details: {
        permanent: true,
        replyCode: PRECONDITION_FAILED,
        conflict: { queue, argument: arg, declared: { ...declared } },
      },
    },
  );
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
  if (spec.queueType !== undefined && spec.queueType !== "classic" && spec.queueType !== "quorum") {
    throw new TypeError('consumeService: spec.queueType must be "classic" or "quorum"');
  }
  if (spec.transient !== undefined && typeof spec.transient !== "boolean") {
    throw new TypeError("consumeService: spec.transient must be a boolean when given");
  }
  if (spec.transient === true && spec.queueType === "quorum") {
    throw new TypeError("consumeService: a transient queue cannot be a quorum queue");
  }
  if (
    spec.deliveryLimit !== undefined &&
    (!Number.isSafeInteger(spec.deliveryLimit) || spec.deliveryLimit < 1)
  ) {
    throw new TypeError("consumeService: spec.deliveryLimit must be a positive integer");
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
