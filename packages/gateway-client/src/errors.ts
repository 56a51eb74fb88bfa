import type { ErrorObject } from "./wire.ts";

/**
 * A call through the gateway failed: the service's NuroPb error (`wireName`, e.g.
 * `NuropbAuthorizationError`) or the gateway's refusal, with the HTTP status the same failure
 * gets over REST when the gateway gave one.
 */
export class GatewayError extends Error {
  /** The error's class name on the mesh (`error.error`). */
  readonly wireName: string;
  /** The error's text (`error.description`). */
  readonly description: string;
  /** The HTTP status the gateway gives this failure; undefined for a sealed call's answer. */
  readonly status: number | undefined;
  /** True when repeating the call may succeed (the outcome of this one is unknown). */
  readonly retryable: boolean;
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(error: ErrorObject, status?: number) {
    super(`${error.error}: ${error.description}`);
    this.name = "GatewayError";
    this.wireName = error.error;
    this.description = error.description;
    this.status = status;
    this.retryable = error.retryable === true;
    this.details = error.details;
  }
}

/**
 * The link to the gateway failed: the call may or may not have reached the mesh
 * (`retryable`: true), or the client was closed (`closed`: true).
 */
export class GatewayConnectionError extends Error {
  readonly retryable: boolean;
  /** True after `client.close()`. */
  readonly closed: boolean;

  constructor(
    message: string,
    options: { readonly closed?: boolean; readonly cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "GatewayConnectionError";
    this.closed = options.closed === true;
    this.retryable = !this.closed;
  }
}
