import type { Attributes } from "@opentelemetry/api";
import { isNuropbError } from "@nuropb/protocol";
import type { ClientCall, ServiceCall } from "@nuropb/core";

/**
 * Attribute names, after the OpenTelemetry messaging and RPC semantic conventions (1.27+), plus
 * the deprecated `messaging.operation` that older backends still group by, and NuroPb's own
 * under `nuropb.`. Written out here so that no semantic-conventions package is needed at run time.
 */
export const Attr = {
  messagingSystem: "messaging.system",
  messagingOperation: "messaging.operation",
  messagingOperationType: "messaging.operation.type",
  messagingOperationName: "messaging.operation.name",
  messagingDestination: "messaging.destination.name",
  messagingMessageId: "messaging.message.id",
  messagingConversationId: "messaging.message.conversation_id",
  messagingBodySize: "messaging.message.body.size",
  rpcSystem: "rpc.system",
  rpcService: "rpc.service",
  rpcMethod: "rpc.method",
  errorType: "error.type",
  kind: "nuropb.kind",
  outcome: "nuropb.outcome",
  traceId: "nuropb.trace_id",
  redelivered: "nuropb.redelivered",
  encrypted: "nuropb.encrypted",
  lifecycleState: "nuropb.lifecycle.state",
} as const;

/** How a call ended: `ok`, `error` (it threw), or `call_again` (a redelivery was asked for). */
export const Outcome = { ok: "ok", error: "error", callAgain: "call_again" } as const;
/** One of {@link Outcome}. */
export type Outcome = (typeof Outcome)[keyof typeof Outcome];

/** `messaging.system` of our transports' kinds; another transport's kind is used as it is. */
const SYSTEMS: Readonly<Record<string, string>> = {
  amqp: "rabbitmq",
  nats: "nats",
  redis: "redis",
  memory: "nuropb_memory",
};

/** The `messaging.system` value of a transport kind (`amqp` → `rabbitmq`…). */
export function messagingSystemOf(kind: string): string {
  return SYSTEMS[kind] ?? kind;
}

/** The error's wire name (`NuropbValidationError`…) or a JavaScript error's name. */
export function errorTypeOf(err: unknown): string {
  if (isNuropbError(err)) return err.wireName;
  if (err instanceof Error) return err.name;
  return "_OTHER";
}

/** The outcome of a call that threw `err`. */
export function outcomeOfError(err: unknown): Outcome {
  return isNuropbError(err) && err.wireName === "NuropbCallAgain"
    ? Outcome.callAgain
    : Outcome.error;
}

/** What is sent to (a service) or published on (a topic). */
export function destinationOf(call: ClientCall | ServiceCall): string {
  return call.kind === "event" ? call.topic : call.service;
}

/** The low-cardinality attributes of a call: those metrics are split by. */
export function callAttributes(call: ClientCall | ServiceCall, system: string): Attributes {
  if (call.kind === "event") {
    return {
      [Attr.messagingSystem]: system,
      [Attr.kind]: "event",
      [Attr.messagingDestination]: call.topic,
      ...(isServiceCall(call) ? { [Attr.rpcService]: call.service } : {}),
    };
  }
  return {
    [Attr.messagingSystem]: system,
    [Attr.kind]: call.kind,
    [Attr.rpcSystem]: "nuropb",
    [Attr.rpcService]: call.service,
    [Attr.rpcMethod]: call.method,
  };
}

/** Whether a call is one a service handles (it has `redelivered`). */
export function isServiceCall(call: ClientCall | ServiceCall): call is ServiceCall {
  return "redelivered" in call;
}
