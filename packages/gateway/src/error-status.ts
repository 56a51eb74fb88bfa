import {
  NuropbConnectionClosedError,
  NuropbError,
  NuropbTransportError,
  isNuropbError,
  toErrorPayload,
  toWireJson,
} from "@nuropb/protocol";
import type { ErrorPayload } from "@nuropb/protocol";

/**
 * The HTTP status of each NuroPb error class (by wire name). A name not listed — a handler's
 * runtime failure (`NuropbException`) or a Python class such as `RuntimeError` — is a 500.
 */
export const HTTP_STATUS_BY_ERROR: Readonly<Record<string, number>> = Object.freeze({
  NuropbValidationError: 400,
  NuropbMessageError: 400,
  NuropbAuthenticationError: 401,
  NuropbAuthorizationError: 403,
  NuropbHandlingError: 404,
  NuropbDeprecatedError: 410,
  NuropbTransportError: 502,
  NuropbConnectionClosedError: 502,
  NuropbNotDeliveredError: 503,
  NuropbCallAgainReject: 503,
  NuropbTimeoutError: 504,
});

const STATUS = Symbol("nuropb-gateway-status");

/** `err` answered with `status` instead of its class's (a refusal of the gateway's own: 404, 413, 429). */
export function withStatus<T extends NuropbError>(err: T, status: number): T {
  Object.defineProperty(err, STATUS, { value: status });
  return err;
}

/** The HTTP status to answer `err` with (see {@link HTTP_STATUS_BY_ERROR}). */
export function httpStatusOf(err: unknown): number {
  if (!isNuropbError(err)) return 500;
  const own = (err as unknown as Record<symbol, unknown>)[STATUS];
  if (typeof own === "number") return own;
  return HTTP_STATUS_BY_ERROR[err.wireName] ?? 500;
}

/**
 * The NuroPb error JSON a caller gets for `err`. A remote error is passed on as the service
 * answered it. The gateway's own link failures get a fixed text (theirs may name a broker
 * host), and anything that is not a NuroPb error becomes a bare `NuropbException`: its text
 * stays in the gateway's log.
 */
export function errorBody(err: unknown): ErrorPayload {
  if (!isNuropbError(err)) {
    return { error: NuropbError.wireName, description: "the gateway failed to handle the call" };
  }
  if (err instanceof NuropbConnectionClosedError || err instanceof NuropbTransportError) {
    return {
      error: err.wireName,
      description: "the gateway could not reach the mesh; the outcome is unknown",
      retryable: true,
    };
  }
  return toErrorPayload(err);
}

/**
 * {@link errorBody} as JSON text, written as NuroPb writes JSON: a bigint in the details (a
 * service's integer beyond 2^53) stays an exact integer. Details that cannot be written at all
 * (nested too deep) are left out rather than failing the answer.
 */
export function errorJson(err: unknown): string {
  const body = errorBody(err);
  try {
    return toWireJson(body);
  } catch {
    const { details: _dropped, ...rest } = body;
    return toWireJson(rest);
  }
}
