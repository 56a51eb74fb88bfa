import { NuropbMessageError, isNuropbError } from "@nuropb/protocol";

/** Why a ciphertext could not be opened; carried as `details.reason` of a {@link NuropbMessageError}. */
export const DecryptFailure = {
  /** Authentication failed: the bytes were changed, or were sealed with another key. */
  tampered: "tampered",
  /** Not the expected shape: bad base64, truncated, missing header, wrong length. */
  malformed: "malformed",
  /** Sealed for a key this participant does not hold (unknown key id, RSA unwrap failed). */
  wrongKey: "wrong-key",
  /** Older than the allowed age, or dated too far in the future. */
  expired: "expired",
  /** Unknown suite or format version, or a suite this participant has no key for. */
  unsupported: "unsupported",
} as const;
/** One of {@link DecryptFailure}. */
export type DecryptFailure = (typeof DecryptFailure)[keyof typeof DecryptFailure];

const REASONS: ReadonlySet<string> = new Set(Object.values(DecryptFailure));

/** Builds the typed error every failed open throws. */
export function cryptoError(
  reason: DecryptFailure,
  description: string,
  suite?: string,
  cause?: unknown,
): NuropbMessageError {
  return new NuropbMessageError(description, {
    details: suite === undefined ? { reason } : { reason, suite },
    ...(cause === undefined ? {} : { cause }),
  });
}

/**
 * The failure reason of an error thrown by this package's open/decrypt functions, or `undefined`
 * for any other value.
 *
 * @example
 * ```ts
 * try { enc.openRequest(body, headers) } catch (err) {
 *   if (decryptFailureReason(err) === "expired") { ... }
 * }
 * ```
 */
export function decryptFailureReason(err: unknown): DecryptFailure | undefined {
  if (!isNuropbError(err)) return undefined;
  const reason = err.details?.["reason"];
  return typeof reason === "string" && REASONS.has(reason) ? (reason as DecryptFailure) : undefined;
}

/**
 * Runs `fn`, turning anything it throws that is not already a NuroPb error into a
 * `malformed` {@link NuropbMessageError}: no TypeError from deep inside ever escapes an open.
 */
export function guardOpen<T>(suite: string | undefined, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw openFailure(suite, err);
  }
}

/** {@link guardOpen} for an async open. */
export async function guardOpenAsync<T>(
  suite: string | undefined,
  fn: () => Promise<T>,
): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw openFailure(suite, err);
  }
}

function openFailure(suite: string | undefined, err: unknown): unknown {
  if (isNuropbError(err)) return err;
  return cryptoError(
    DecryptFailure.malformed,
    `Cannot open the encrypted body: ${err instanceof Error ? err.message : String(err)}`,
    suite,
    err,
  );
}
