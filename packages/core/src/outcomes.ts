import {
  NuropbCallAgain,
  NuropbCallAgainReject,
  NuropbError,
  NuropbMessageError,
  NuropbSuccess,
  NuropbTransportError,
  fromErrorPayload,
  isNuropbError,
  type Context,
  type DecodedMessage,
  type Delivery,
  type Logger,
} from "@nuropb/protocol";
import type { MessageFlow } from "./message-lifecycle.ts";
import type { EventToPublish } from "./types.ts";

/**
 * What handling a service message came to: a result (with the events to publish after it), a
 * request to be called again, or a failure to answer.
 */
export type Outcome =
  | {
      readonly kind: "success";
      readonly result: unknown;
      readonly events: readonly EventToPublish[];
    }
  | { readonly kind: "call-again" }
  | {
      readonly kind: "failure";
      readonly error: NuropbError;
      /** The error as the handler (or its middleware) threw it. */
      readonly thrown: unknown;
    };

/** Whether `err` is `NuropbSuccess` (control flow: a result and events), from any copy of protocol. */
export function isSuccessSignal(err: unknown): err is NuropbSuccess {
  return err instanceof NuropbSuccess || (isNuropbError(err) && err.wireName === "NuropbSuccess");
}

/** Whether `err` asks for the message to be delivered again (`NuropbCallAgain`). */
export function isCallAgain(err: unknown): boolean {
  return (
    err instanceof NuropbCallAgain || (isNuropbError(err) && err.wireName === "NuropbCallAgain")
  );
}

/**
 * The outcome of a handler (or its middleware) that threw `err`: `NuropbSuccess` is a success
 * whose events follow `raised` (those the handler added before throwing), `NuropbCallAgain` asks
 * for a redelivery, anything else is a failure answered as {@link asRuntimeError} says.
 */
export function outcomeOfThrown(
  err: unknown,
  raised: readonly EventToPublish[],
  service: string,
  method: string,
): Outcome {
  if (isSuccessSignal(err)) {
    return { kind: "success", result: err.result, events: [...raised, ...(err.events ?? [])] };
  }
  if (isCallAgain(err)) return { kind: "call-again" };
  return { kind: "failure", error: asRuntimeError(err, service, method), thrown: err };
}

/**
 * What a handler's failure is answered with: a NuroPb error as itself; any other exception as
 * the base `NuropbError` (wire name `NuropbException`) with Python's runtime description
 * (PROTOCOL.md §4.5). Not `NuropbHandlingError`: on Python's wire that means "unknown method".
 */
export function asRuntimeError(err: unknown, service: string, method: string): NuropbError {
  if (isNuropbError(err)) return err;
  const name = err instanceof Error ? err.name : typeof err;
  const message = err instanceof Error ? err.message : String(err);
  return new NuropbError(`Runtime exception calling ${service}.${method}:${name}: ${message}`, {
    cause: err,
  });
}

/** The answer to a request asking to be called again a second time (as Python words it). */
export function callAgainRejected(traceId: string | null, correlationId: string): NuropbError {
  return new NuropbCallAgainReject(
    `Rejecting second call again request for trace_id: ${String(traceId)}, correlation_id: ${correlationId}`,
  );
}

/** The error of a body over `maxInboundBodyBytes`; says only its size and the limit. */
export function tooLargeError(what: string, bytes: number, max: number): NuropbMessageError {
  return new NuropbMessageError(
    `the ${what} body of ${String(bytes)} bytes exceeds maxInboundBodyBytes (${String(max)})`,
    { details: { bytes, maxInboundBodyBytes: max } },
  );
}

/** A message that could not be read, as the `NuropbMessageError` it is answered with. */
export function asMessageError(err: unknown): NuropbMessageError {
  return err instanceof NuropbMessageError
    ? err
    : new NuropbMessageError(String((err as Error)?.message ?? err), { cause: err });
}

/**
 * What a call whose send failed rejects with: "not delivered" in Python's words, another NuroPb
 * error as itself, anything else as a retryable `NuropbTransportError`.
 */
export function sendError(err: unknown, service: string, method: string): Error {
  if (isNuropbError(err)) {
    if (err.wireName === "NuropbNotDeliveredError") {
      return fromErrorPayload(
        {
          error: "NuropbNotDeliveredError",
          description: `Service ${service} not available. unable to call method ${method}`,
        },
        { cause: err },
      );
    }
    return err;
  }
  return new NuropbTransportError(
    `sending to ${service}.${method} failed: ${String((err as Error)?.message ?? err)}`,
    { cause: err, retryable: true },
  );
}

/** Settles `delivery` (ack, requeue or reject) and reports it as `service-ack`. */
export async function settle(
  delivery: Delivery,
  how: "ack" | "requeue" | "reject",
  flow: MessageFlow | undefined,
): Promise<void> {
  await delivery[how]();
  flow?.emit("service-ack", { settlement: how });
}

/**
 * Publishes the events a handler raised (after its success), with the ids of the message it
 * handled; one that cannot be published is logged, the others still go.
 */
export async function publishRaised(
  events: readonly EventToPublish[],
  context: Context,
  handled: DecodedMessage,
  send: (e: EventToPublish, context: Context, traceId: string | null, id: string) => Promise<void>,
  log: Logger,
): Promise<void> {
  for (const e of events) {
    try {
      await send(e, context, handled.traceId, handled.correlationId);
    } catch (err) {
      log.error("could not publish an event raised by a handler", {
        topic: e.topic,
        error: String((err as Error)?.message ?? err),
      });
    }
  }
}
