import {
  NuropbAuthenticationError,
  NuropbAuthorizationError,
  NuropbHandlingError,
  NuropbValidationError,
  isNuropbError,
  type Context,
} from "@nuropb/protocol";
import { describeValidationErrors, type MethodEntry } from "./service-definition.ts";

/**
 * The method a call names, if the call may reach it: known, public, and encrypted when the
 * method requires it.
 * @throws NuropbHandlingError for an unknown (or `_`-private) method.
 * @throws NuropbAuthorizationError for a plaintext call to a method that requires encryption.
 */
export function admitMethod(
  methods: ReadonlyMap<string, MethodEntry>,
  service: string,
  method: string,
  encrypted: boolean,
): MethodEntry {
  const entry = methods.get(method);
  if (entry === undefined) throw new NuropbHandlingError(`Unknown method ${method}`);
  if (entry.options.requiresEncryption === true && !encrypted) {
    throw new NuropbAuthorizationError(`${service}.${method} requires an encrypted call`, {
      details: { reason: "encryption-required" },
    });
  }
  return entry;
}

/**
 * The caller's claims, from the method's `authorize` and the token in
 * `context[contextTokenKey]`; undefined for a method without `authorize`.
 * @throws NuropbAuthenticationError without a token.
 * @throws NuropbAuthorizationError when `authorize` refuses or fails (a NuroPb error it throws
 *   passes as itself).
 */
export async function authorise(
  entry: MethodEntry,
  context: Context,
  service: string,
  method: string,
): Promise<unknown> {
  const authorize = entry.options.authorize;
  if (authorize === undefined) return undefined;
  const key = entry.contextTokenKey;
  const token = context[key];
  if (token === undefined || token === null || token === "") {
    throw new NuropbAuthenticationError(`${service}.${method} needs a token in context['${key}']`);
  }
  let claims: unknown;
  try {
    claims = await authorize(token, { service, method, context });
  } catch (err) {
    if (isNuropbError(err)) throw err;
    throw new NuropbAuthorizationError(
      `not authorised to call ${service}.${method}: ${String((err as Error)?.message ?? err)}`,
      { cause: err },
    );
  }
  if (!claims) throw new NuropbAuthorizationError(`not authorised to call ${service}.${method}`);
  return claims;
}

/**
 * Checks `params` against the method's JSON Schema, when it declared one.
 * @throws NuropbValidationError naming the failing paths.
 */
export function validateParams(
  entry: MethodEntry,
  params: unknown,
  service: string,
  method: string,
): void {
  if (entry.validate === undefined || entry.validate(params)) return;
  // Integers beyond ±(2^53 − 1) arrive as bigints (see @nuropb/protocol), which JSON Schema's
  // "integer" and "number" do not know: check them again as the numbers they are. Only a
  // failed check pays for this, so plain params cost nothing.
  if (holdsBigint(params, 0) && entry.validate(bigintsAsNumbers(params))) return;
  throw new NuropbValidationError(
    `invalid params for ${service}.${method}: ${describeValidationErrors(entry.validate)}`,
    { details: { errors: entry.validate.errors ?? [] } },
  );
}

/** Whether `value` holds a bigint anywhere (bodies are at most 64 levels deep). */
function holdsBigint(value: unknown, depth: number): boolean {
  if (typeof value === "bigint") return true;
  if (typeof value !== "object" || value === null || depth > 64) return false;
  for (const item of Object.values(value)) if (holdsBigint(item, depth + 1)) return true;
  return false;
}

/** A copy of `value` with every bigint as the nearest number (for schema checks only). */
function bigintsAsNumbers(value: unknown): unknown {
  if (typeof value === "bigint") return Number(value);
  if (typeof value !== "object" || value === null) return value;
  if (Array.isArray(value)) return value.map(bigintsAsNumbers);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    Object.defineProperty(out, k, {
      value: bigintsAsNumbers(v),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}
