/**
 * The JSON text of `value`, with a `bigint` written as an exact integer literal
 * (`18446744073709551616`), as NuroPb writes a Python `int` beyond 2^53; `JSON.stringify` alone
 * throws on one. Everything else is written as `JSON.stringify` writes it.
 *
 * The client stays free of `@nuropb/protocol` (it runs in browsers as-is), so this is the small
 * part of the protocol's `toWireJson` that a caller's params need.
 * @throws TypeError for a value `JSON.stringify` refuses for another reason (a cycle).
 */
export function toJsonText(value: unknown): string {
  try {
    return JSON.stringify(value) ?? "null";
  } catch (err) {
    // A bigint somewhere (each engine words the TypeError its own way), or a cycle: the second
    // pass writes the one and throws the other again.
    if (!(err instanceof TypeError)) throw err;
  }
  // Each bigint is first written as a string holding a fresh random mark, then the quoted marks
  // are replaced by the bare literal: no string of the caller's can be taken for one.
  const mark = `nuropb-bigint-${randomHex(16)}:`;
  const text = JSON.stringify(value, function (this: unknown, key: string, v: unknown) {
    // `this[key]` is the value before any toJSON() (a BigInt.prototype.toJSON someone defined).
    const raw = (this as Record<string, unknown>)[key];
    const big = typeof raw === "bigint" ? raw : v;
    return typeof big === "bigint" ? mark + big.toString() : v;
  }) as string | undefined;
  return (text ?? "null").replace(new RegExp(`"${mark}(-?[0-9]+)"`, "g"), "$1");
}

function randomHex(bytes: number): string {
  let s = "";
  for (const x of crypto.getRandomValues(new Uint8Array(bytes))) {
    s += x.toString(16).padStart(2, "0");
  }
  return s;
}
