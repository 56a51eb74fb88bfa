import type { ErrorPayload } from "./payloads.ts";

const BRAND: unique symbol = Symbol.for("@nuropb/error");

/** Options every NuroPb error takes besides its description. */
export interface NuropbErrorOptions {
  /** The underlying error, kept for logs; never sent on the wire. */
  readonly cause?: unknown;
  /** The wire payload involved, when there is one (for diagnostics). */
  readonly payload?: unknown;
  /** True when repeating the operation may succeed. */
  readonly retryable?: boolean;
  /** Extra machine-readable detail; travels in the error object (Python peers ignore it). */
  readonly details?: Readonly<Record<string, unknown>>;
  /**
   * The wire name this error had when it arrived from a peer whose class we do not know
   * (e.g. `RuntimeError`). Defaults to the class's own wire name.
   */
  readonly wireName?: string;
}

/**
 * Base of every NuroPb error; its wire name is `NuropbException`, as in Python.
 * `isNuropbError` recognises it across duplicate installs by a symbol brand.
 */
export class NuropbError extends Error {
  /** Name of this class on the wire (`error.error` in a response). */
  static readonly wireName: string = "NuropbException";
  readonly [BRAND] = true;
  /** Human text; on the wire as `error.description`. */
  readonly description: string;
  readonly payload: unknown;
  readonly retryable: boolean;
  readonly details: Readonly<Record<string, unknown>> | undefined;
  /** The name this error carries on the wire. */
  readonly wireName: string;

  constructor(description?: string, options: NuropbErrorOptions = {}) {
    const ctor = new.target as unknown as { wireName: string; name: string };
    // Like Python's NuropbException: no description means the (wire) class name. An unknown
    // peer error (wireName "KeyError" with description "") falls back to its own name.
    const text =
      description === undefined || description === ""
        ? (options.wireName ?? ctor.wireName)
        : description;
    super(text, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = ctor.name;
    this.description = text;
    this.payload = options.payload;
    this.retryable = options.retryable ?? false;
    this.details = options.details;
    this.wireName = options.wireName ?? ctor.wireName;
  }
}

/** A request's ttl passed without a response. Retryable: the outcome is unknown. */
export class NuropbTimeoutError extends NuropbError {
  static override readonly wireName: string = "NuropbTimeoutError";
}
/** The transport failed (connection lost, broker refused, closed). */
export class NuropbTransportError extends NuropbError {
  static override readonly wireName: string = "NuropbTransportError";
}
/** An operation was attempted on a transport, client or service that is closed. */
export class NuropbConnectionClosedError extends NuropbTransportError {
  static override readonly wireName: string = "NuropbConnectionClosedError";
}
/** A message could not be encoded or decoded (bad JSON, unknown version, bad fields…). */
export class NuropbMessageError extends NuropbError {
  static override readonly wireName: string = "NuropbMessageError";
}
/** The service could not handle the message (unknown method, runtime failure). */
export class NuropbHandlingError extends NuropbError {
  static override readonly wireName: string = "NuropbHandlingError";
}
/** The method is deprecated. */
export class NuropbDeprecatedError extends NuropbHandlingError {
  static override readonly wireName: string = "NuropbDeprecatedError";
}
/** Parameters or a value failed validation. */
export class NuropbValidationError extends NuropbError {
  static override readonly wireName: string = "NuropbValidationError";
}
/** The caller could not be authenticated (e.g. no token). */
export class NuropbAuthenticationError extends NuropbError {
  static override readonly wireName: string = "NuropbAuthenticationError";
}
/** The caller is authenticated but not allowed to call the method. */
export class NuropbAuthorizationError extends NuropbError {
  static override readonly wireName: string = "NuropbAuthorizationError";
}
/** No service was there to take a request or command. */
export class NuropbNotDeliveredError extends NuropbError {
  static override readonly wireName: string = "NuropbNotDeliveredError";
}
/** Thrown by a handler to have the message delivered once more. */
export class NuropbCallAgain extends NuropbError {
  static override readonly wireName: string = "NuropbCallAgain";
}
/** Answer to a request whose handler asked to be called again on its redelivered copy. */
export class NuropbCallAgainReject extends NuropbError {
  static override readonly wireName: string = "NuropbCallAgainReject";
}

/** An event a handler asks to publish after it succeeds. */
export interface PendingEvent {
  readonly topic: string;
  readonly event: unknown;
  readonly target?: readonly string[] | null;
}

/** Control flow: a handler throws this to answer with `result` and publish `events`. */
export class NuropbSuccess extends NuropbError {
  static override readonly wireName: string = "NuropbSuccess";
  readonly result: unknown;
  readonly events: readonly PendingEvent[];
  constructor(
    result: unknown,
    events: readonly PendingEvent[] = [],
    options: NuropbErrorOptions = {},
  ) {
    super("NuropbSuccess", options);
    this.result = result;
    this.events = events;
  }
}

type NuropbErrorClass = (new (
  description?: string,
  options?: NuropbErrorOptions,
) => NuropbError) & {
  readonly wireName: string;
};

const CLASSES: readonly NuropbErrorClass[] = [
  NuropbError,
  NuropbTimeoutError,
  NuropbTransportError,
  NuropbConnectionClosedError,
  NuropbMessageError,
  NuropbHandlingError,
  NuropbDeprecatedError,
  NuropbValidationError,
  NuropbAuthenticationError,
  NuropbAuthorizationError,
  NuropbNotDeliveredError,
  NuropbCallAgain,
  NuropbCallAgainReject,
];
const BY_WIRE_NAME = new Map<string, NuropbErrorClass>(CLASSES.map((c) => [c.wireName, c]));

/** True for any NuroPb error, even one created by another installed copy of this package. */
export function isNuropbError(value: unknown): value is NuropbError {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as Record<symbol, unknown>)[BRAND] === true
  );
}

/**
 * The wire error object for any thrown value. NuroPb errors keep their class name and
 * description; other errors become `{ error: <their name>, description: <their message> }`.
 * Stacks never leave the process.
 */
export function toErrorPayload(err: unknown): ErrorPayload {
  if (isNuropbError(err)) {
    // `err` may come from another installed copy (or be a look-alike carrying the brand), so
    // every field is checked rather than trusted.
    const e = err as Partial<Record<keyof NuropbError, unknown>>;
    const error = nonEmptyString(e.wireName) ?? nonEmptyString(e.name) ?? NuropbError.wireName;
    const out: {
      error: string;
      description: string;
      retryable?: boolean;
      details?: Record<string, unknown>;
    } = {
      error,
      description: nonEmptyString(e.description) ?? nonEmptyString(e.message) ?? error,
    };
    if (e.retryable === true) out.retryable = true;
    if (typeof e.details === "object" && e.details !== null) out.details = { ...e.details };
    return out;
  }
  if (err instanceof Error) {
    const error = nonEmptyString(err.name) ?? "Error";
    const message: unknown = err.message;
    const description =
      typeof message === "string" ? message : message === undefined ? "" : safeString(message);
    return { error, description: description === "" ? error : description };
  }
  return { error: "Error", description: typeof err === "string" ? err : safeString(err) };
}

function nonEmptyString(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}

/** Printable text for any value; never throws. */
function safeString(value: unknown): string {
  try {
    const json = JSON.stringify(value);
    if (json !== undefined) return json;
  } catch {
    // cyclic, bigint or a throwing toJSON: fall through
  }
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/**
 * Rebuilds the NuroPb error named by a wire error object. A name we do not know (a Python
 * `RuntimeError`, say) becomes a {@link NuropbError} whose `wireName` keeps the original name.
 */
export function fromErrorPayload(
  payload: ErrorPayload,
  options: NuropbErrorOptions = {},
): NuropbError {
  const cls = BY_WIRE_NAME.get(payload.error);
  const opts: NuropbErrorOptions = {
    ...options,
    ...(payload.retryable === true ? { retryable: true } : {}),
    ...(payload.details !== undefined ? { details: payload.details } : {}),
  };
  if (cls !== undefined) return new cls(payload.description, opts);
  return new NuropbError(payload.description, { ...opts, wireName: payload.error });
}
