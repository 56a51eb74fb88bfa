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

/** An integer literal too long to be exact as a `number` has at least 16 digits. */
const LONG_DIGITS = /\d{16}/;

type SourceReviver = (key: string, value: unknown, context?: { source?: string }) => unknown;

/** Whether `JSON.parse` hands a reviver each primitive's source text (Node 22+, current browsers). */
const hasSourceText: boolean = (() => {
  try {
    const probe = ((_k: string, _v: unknown, c?: { source?: string }) =>
      c?.source === "1") as SourceReviver;
    return (JSON.parse("1", probe as Parameters<typeof JSON.parse>[1]) as unknown) === true;
  } catch {
    return false;
  }
})();

/** Integers outside the safe range become bigints, from their source text. */
const exactIntegers: SourceReviver = (_key, value, context) => {
  if (typeof value !== "number" || Number.isSafeInteger(value)) return value;
  const source = context?.source;
  return source !== undefined && /^-?\d+$/.test(source) ? BigInt(source) : value;
};

/**
 * Reads JSON text as NuroPb writes it: an integer beyond 2^53 is read as an exact `bigint`
 * where the runtime gives `JSON.parse` revivers the source text (Node 22 and later, current
 * browsers), and as the nearest `number` elsewhere (Node 20). Text without a run of 16 digits
 * (nearly all of it) is read by `JSON.parse` alone.
 * @throws SyntaxError for text that is not JSON.
 */
export function fromJsonText(text: string): unknown {
  if (!hasSourceText || !LONG_DIGITS.test(text)) return JSON.parse(text);
  return JSON.parse(text, exactIntegers as Parameters<typeof JSON.parse>[1]);
}

/** @internal For tests: whether {@link fromJsonText} can read big integers exactly here. */
export const readsBigIntegersExactly: boolean = hasSourceText;
