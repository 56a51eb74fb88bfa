import { ErrorCode } from "nats";
import {
  NuropbConnectionClosedError,
  NuropbMessageError,
  NuropbTransportError,
  type TransportLifecycle,
} from "@nuropb/protocol";

/** JetStream API error codes this transport reacts to. */
export const JsErr = {
  streamNotFound: 10059,
  consumerNotFound: 10014,
  streamNameInUse: 10058,
  subjectsOverlap: 10065,
  consumerExists: 10148,
  consumerNameExists: 10013,
} as const;

/** The JetStream API error code of `err`, when the server refused a request. */
export function apiErrorCode(err: unknown): number | undefined {
  const api = (err as { api_error?: { err_code?: number } } | undefined)?.api_error;
  return typeof api?.err_code === "number" ? api.err_code : undefined;
}

/** The client's error code of `err` (one of the `nats` package's `ErrorCode`s, or a status). */
export function natsCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

/** An error shaped as the `nats` client's own, with `code`, for the paths that mimic it. */
export function natsError(message: string, code: string, fields: object = {}): Error {
  return Object.assign(new Error(message), { code }, fields);
}

/**
 * Translates a broker error at the boundary; the original stays as `cause`. Once the transport
 * is ending, every failure is its closing.
 */
export function translateNatsError(
  err: unknown,
  what: string,
  life: Pick<TransportLifecycle, "ending" | "closedError">,
): Error {
  if (life.ending) return life.closedError(undefined, { cause: err });
  const code = natsCode(err);
  if (code === ErrorCode.ConnectionClosed || code === ErrorCode.ConnectionDraining) {
    return new NuropbConnectionClosedError(`${what}: the NATS connection is closed`, {
      cause: err,
    });
  }
  if (code === ErrorCode.Timeout) {
    return new NuropbTransportError(
      `${what}: NATS did not confirm in time (the frame may still arrive)`,
      { cause: err, retryable: true },
    );
  }
  if (code === ErrorCode.MaxPayloadExceeded) {
    return new NuropbMessageError(`${what}: frame larger than the server accepts`, {
      cause: err,
    });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new NuropbTransportError(`${what}: ${message}`, { cause: err, retryable: true });
}
