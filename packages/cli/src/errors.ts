import { isNuropbError } from "@nuropb/protocol";

/** Exit codes of the `nuropb` command. */
export const ExitCode = {
  /** Done. */
  ok: 0,
  /** An unexpected failure (a bug): the message says what happened. */
  failed: 1,
  /** Bad arguments, bad JSON or a bad URL: nothing was sent. */
  usage: 2,
  /** The service answered with an error (its class and description are printed). */
  remote: 3,
  /** The broker was unreachable, the message was not delivered, or no answer came in time. */
  transport: 4,
  /** Interrupted (SIGINT) while waiting. */
  interrupted: 130,
} as const;
/** One of {@link ExitCode}. */
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** A failure the CLI reports with a one-line message (and an optional hint) and an exit code. */
export class CliError extends Error {
  /** The process exit code this failure maps to. */
  readonly exitCode: ExitCode;
  /** A second line telling the user what to do about it. */
  readonly hint: string | undefined;

  constructor(
    message: string,
    exitCode: ExitCode,
    options: { readonly hint?: string; readonly cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "CliError";
    this.exitCode = exitCode;
    this.hint = options.hint;
  }
}

/** A usage error: bad arguments, JSON or URL (exit code 2). */
export function usageError(message: string, hint?: string): CliError {
  return new CliError(message, ExitCode.usage, hint === undefined ? {} : { hint });
}

/** Wire names of the errors that mean "the message did not get there and back". */
const TRANSPORT_ERRORS = new Set([
  "NuropbTransportError",
  "NuropbConnectionClosedError",
  "NuropbTimeoutError",
  "NuropbNotDeliveredError",
]);

/**
 * The exit code for an error thrown while running a command: {@link CliError} carries its own;
 * transport, not-delivered and timeout errors are 4; other NuroPb errors (what a service answered)
 * are 3; anything else is 1 (arguments are checked before anything is sent, so a `TypeError`
 * here is a bug, not a usage error).
 */
export function exitCodeFor(err: unknown): ExitCode {
  if (err instanceof CliError) return err.exitCode;
  if (isNuropbError(err))
    return TRANSPORT_ERRORS.has(err.wireName) ? ExitCode.transport : ExitCode.remote;
  return ExitCode.failed;
}
