import { Buffer } from "node:buffer";
import { NuropbMessageError } from "./errors.ts";
import { hasJsonParseSource } from "./runtime.ts";
import type { JsonReviverContext } from "./runtime.ts";
import { MAX_INTEGER_DIGITS, MAX_JSON_DEPTH, parseTolerantJson } from "./tolerant-json.ts";

export { MAX_JSON_DEPTH };

/**
 * Turns any value into the JSON text NuroPb sends. Values JSON cannot hold are written as:
 *
 * | value | written as |
 * |---|---|
 * | `bigint` | bare JSON integer (`9223372036854775807`), exact, as Python writes an `int` |
 * | `number` beyond ±(2^53 − 1) below 1e21 | with `.0` (`9007199254740992.0`), as Python writes a `float` |
 * | `Date` | ISO 8601 UTC string with `Z` (`2020-01-01T00:00:00.000Z`); an invalid date → `null` |
 * | `Map` | object, keys turned into strings |
 * | `Set` | array |
 * | `Uint8Array` / `Buffer` / other typed arrays | standard base64 string of the bytes |
 * | `undefined`, function, symbol | key left out of an object; `null` inside an array |
 * | `NaN`, `Infinity`, `-Infinity` | `null` (never the bare tokens Python emits) |
 * | object with `toJSON()` | what `toJSON()` returns, normalised again |
 *
 * Reading ({@link parseWireJson}) gives a `bigint` for an integer literal outside ±(2^53 − 1)
 * and a `number` for every other number, so values keep their type both ways (a bigint inside
 * ±(2^53 − 1) comes back as a number): `JSON.stringify` would write 2^53 as an integer literal,
 * which a reader of exact integers takes for a different type.
 * `options.indent` (0–10 spaces) pretty-prints, as `JSON.stringify`'s third argument does (for
 * people: a command line's output, a log); bodies are written without it.
 * @throws NuropbMessageError for a cyclic value or one nested deeper than {@link MAX_JSON_DEPTH}.
 * @throws TypeError for an `indent` that is not a whole number from 0 to 10.
 */
export function toWireJson(value: unknown, options?: { readonly indent?: number }): string {
  const indent = options?.indent;
  if (indent !== undefined && !(Number.isInteger(indent) && indent >= 0 && indent <= 10)) {
    throw new TypeError(
      `toWireJson: indent must be a whole number from 0 to 10, got ${String(indent)}`,
    );
  }
  const since = markedCount;
  return stringifyNormalised(normaliseJson(value, 1), since, indent) ?? "null";
}

/**
 * How many values {@link normaliseJson} has met that `JSON.stringify` cannot write our way (a
 * bigint; a number beyond ±(2^53 − 1) below 1e21). Only grows, so nested calls (a `toJSON()`
 * that writes JSON itself) cannot hide one; a body whose walk left it unchanged is written by
 * plain `JSON.stringify`, paying nothing for these rules.
 */
let markedCount = 0;

/** The current {@link markedCount}, to pass to {@link stringifyNormalised}. Internal. */
export function normalisedMarks(): number {
  return markedCount;
}

/**
 * `JSON.stringify` of what {@link normaliseJson} returned, writing bigints and large whole
 * numbers by the rules of {@link toWireJson}. `since` is {@link normalisedMarks} from before the
 * normalising walk. Internal: the codec writes bodies with it.
 */
export function stringifyNormalised(
  value: unknown,
  since: number,
  indent?: number,
): string | undefined {
  if (markedCount === since) return JSON.stringify(value, null, indent);
  // Each such value is written as a string holding a fresh random mark, then the quoted marks
  // are replaced by the bare literal. Nobody can know the mark beforehand, so no string a peer
  // or a caller wrote can be mistaken for one.
  const mark = `nuropb-literal-${globalThis.crypto.randomUUID()}:`;
  const text = JSON.stringify(
    value,
    function (this: unknown, key: string, v: unknown) {
      // `this[key]` is the value before any toJSON(): a BigInt.prototype.toJSON an application
      // may define does not change what is written.
      const raw = (this as Record<string, unknown>)[key];
      if (typeof raw === "bigint") return mark + raw.toString();
      if (typeof raw === "number" && isLargeWholeNumber(raw)) return `${mark + String(raw)}.0`;
      return v;
    },
    indent,
  ) as string | undefined;
  return text?.replace(new RegExp(`"${mark}(-?[0-9]+(?:\\.0)?)"`, "g"), "$1");
}

/** A number `JSON.stringify` writes as an integer literal although it lies beyond ±(2^53 − 1)
 * (from 1e21 on it writes an exponent). Every double that large is whole. */
function isLargeWholeNumber(n: number): boolean {
  return (n > Number.MAX_SAFE_INTEGER && n < 1e21) || (n < Number.MIN_SAFE_INTEGER && n > -1e21);
}

/**
 * The JSON-safe form of `value` (see {@link toWireJson}), except that a `bigint` and a number
 * beyond ±(2^53 − 1) are kept as they are: {@link toWireJson} and the codec write them (a
 * bigint would make `JSON.stringify` throw). Returns the same object when nothing needed
 * changing, so plain data costs one walk and no copies.
 * @throws NuropbMessageError for cyclic or too deeply nested values.
 */
export function normaliseJson(value: unknown, depth = 1): unknown {
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      if (value <= Number.MAX_SAFE_INTEGER && value >= Number.MIN_SAFE_INTEGER) return value;
      if (!Number.isFinite(value)) return null;
      if (isLargeWholeNumber(value)) markedCount++;
      return value;
    case "bigint":
      markedCount++;
      return value;
    case "object":
      return value === null ? null : normaliseObject(value, depth);
    default: // undefined, function, symbol
      return undefined;
  }
}

/** `normaliseJson` of a non-null object; strings, booleans, null and finite numbers inside are
 * the bulk of most bodies and are handled inline, without a call. */
function normaliseObject(value: object, depth: number): unknown {
  if (depth > MAX_JSON_DEPTH) {
    throw new NuropbMessageError(
      `value is cyclic or nested deeper than ${String(MAX_JSON_DEPTH)} levels; it cannot be sent as JSON`,
    );
  }
  const next = depth + 1;
  if (Array.isArray(value)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i];
      let n: unknown;
      if (typeof item === "object" && item !== null) n = normaliseObject(item, next) ?? null;
      else if (isJsonLeaf(item)) {
        if (out !== undefined) out.push(item);
        continue;
      } else n = normaliseJson(item, next) ?? null;
      if (n !== item && out === undefined) out = value.slice(0, i);
      if (out !== undefined) out.push(n);
    }
    return out ?? value;
  }
  // Plain data (what JSON.parse makes, object literals, null-prototype records) is by far the
  // common case: walk it with for-in, which allocates nothing, and skip the class checks.
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return normaliseOtherObject(value, depth, next);
  const rec = value as Record<string, unknown>;
  if (typeof rec.toJSON === "function") return normaliseOtherObject(value, depth, next);
  let out: Record<string, unknown> | undefined;
  for (const key in rec) {
    // Enumerable keys inherited from a polluted Object.prototype: JSON.stringify skips them too.
    // (V8 optimises this exact for-in + hasOwnProperty.call pattern; Object.hasOwn is slower.)
    if (!Object.prototype.hasOwnProperty.call(rec, key)) continue;
    const item = rec[key];
    let n: unknown;
    if (typeof item === "object" && item !== null) n = normaliseObject(item, next);
    else if (isJsonLeaf(item)) {
      if (out !== undefined) setKey(out, key, item);
      continue;
    } else n = normaliseJson(item, next);
    if (n !== item && out === undefined) {
      out = {};
      for (const k in rec) {
        if (k === key) break;
        if (Object.prototype.hasOwnProperty.call(rec, k)) setKey(out, k, rec[k]);
      }
    }
    if (out !== undefined && n !== undefined) setKey(out, key, n);
  }
  return out ?? rec;
}

function normaliseOtherObject(obj: object, depth: number, next: number): unknown {
  if (obj instanceof Date) {
    return Number.isNaN(obj.getTime()) ? null : obj.toISOString();
  }
  if (ArrayBuffer.isView(obj)) {
    return Buffer.from(obj.buffer, obj.byteOffset, obj.byteLength).toString("base64");
  }
  if (obj instanceof Map) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of obj) {
      const n = normaliseJson(v, next);
      if (n !== undefined) setKey(out, String(k), n);
    }
    return out;
  }
  if (obj instanceof Set) {
    return normaliseJson([...obj], depth);
  }
  const toJSON = (obj as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === "function") {
    return normaliseJson((toJSON as () => unknown).call(obj), next);
  }
  let out: Record<string, unknown> | undefined;
  const rec = obj as Record<string, unknown>;
  const keys = Object.keys(rec);
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i] as string;
    const item = rec[key];
    const n = normaliseJson(item, next);
    if (n !== item && out === undefined) {
      out = {};
      for (let j = 0; j < i; j++) setKey(out, keys[j] as string, rec[keys[j] as string]);
    }
    if (out !== undefined && n !== undefined) setKey(out, key, n);
  }
  return out ?? obj;
}

/** True for values JSON writes as they are: strings, booleans, null, numbers within
 * ±(2^53 − 1) (larger ones go through {@link normaliseJson}). */
function isJsonLeaf(value: unknown): boolean {
  const t = typeof value;
  return (
    t === "string" ||
    t === "boolean" ||
    value === null ||
    (t === "number" &&
      (value as number) <= Number.MAX_SAFE_INTEGER &&
      (value as number) >= Number.MIN_SAFE_INTEGER)
  );
}

/** `out[key] = value`, except that a `__proto__` key becomes an own property, as in JSON. */
function setKey(out: Record<string, unknown>, key: string, value: unknown): void {
  if (key === "__proto__") {
    Object.defineProperty(out, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  } else out[key] = value;
}

/**
 * Parses a body's JSON text. Standard JSON goes to `JSON.parse`; text it refuses, and text
 * where it rounded an integer outside ±(2^53 − 1), goes to a one-pass parser that reads such
 * integers as exact `bigint`s and also accepts the bare `NaN`, `Infinity` and `-Infinity`
 * tokens Python peers may send (as the numbers they name; not as keys). Integers longer than
 * 4300 digits are refused (as Python does), and so is nesting deeper than
 * {@link MAX_JSON_DEPTH}, the deepest value {@link toWireJson} writes: a text of
 * {@link DEPTH_SCAN_MIN_CHARS} characters or more is scanned for it before anything is built
 * (`JSON.parse` of megabytes of `[[[[…` costs ~0.2 µs and ~90 bytes of heap per character),
 * a shorter one is checked on the parsed values. Time is linear in the text and memory a small
 * multiple of the text and the result, whatever the input.
 * @throws NuropbMessageError when the text is not JSON, or is nested too deeply.
 */
export function parseWireJson(text: string): unknown {
  if (text.length >= DEPTH_SCAN_MIN_CHARS) assertNestingWithinLimit(text);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    // Not standard JSON: Python's tokens, or an error the tolerant parser names with its
    // position (JSON.parse's own message would point at the first NaN).
    return parseTolerantJson(text);
  }
  const reread =
    typeof value === "object"
      ? value !== null && needsReread(value, 1)
      : typeof value === "number" && isBeyondSafe(value);
  if (!reread) return value;
  if (!readWithSource) return parseTolerantJson(text);
  // needsReread stops at the first large number, before it has seen the whole depth (the
  // tolerant parser checks it as it goes).
  if (text.length < DEPTH_SCAN_MIN_CHARS) assertNestingWithinLimit(text);
  try {
    return JSON.parse(text, reviveLargeInteger) as unknown;
  } catch (err) {
    // The tolerant parser refuses the literal naming its position, as on Node 20.
    if (err instanceof IntegerTooLong) return parseTolerantJson(text);
    throw err;
  }
}

/**
 * Whether {@link parseWireJson} re-reads standard JSON holding a large integer with `JSON.parse`
 * and a reviver reading each literal's source text (Node 22 and later, {@link
 * hasJsonParseSource}) instead of the one-pass parser. Off on every line: it gives the same
 * values but costs more, since V8 calls a reviver for every value of the body. `decodeFrame` of
 * a 172 B request holding one int64, same process, Node 24.22: 405k/s with the one-pass parser,
 * 159k/s with the reviver (Node 22.23: 318k/s and 162k/s). Kept, and tested on both paths, so
 * that a line whose revivers are cheap can turn it on by changing this line.
 */
let readWithSource = false;

/**
 * Makes {@link parseWireJson} re-read standard JSON holding a large integer with `JSON.parse`
 * and its source text (`true`) or with the one-pass parser (`false`); returns the previous
 * choice. Internal, not exported from the package: tests force each path with it.
 * @throws Error when `true` is asked of a Node line whose `JSON.parse` gives no source text.
 */
export function setJsonSourceReading(on: boolean): boolean {
  if (on && !hasJsonParseSource) {
    throw new Error(`JSON.parse gives revivers no source text on Node ${process.version}`);
  }
  const previous = readWithSource;
  readWithSource = on;
  return previous;
}

/** An integer literal: digits with an optional minus, no fraction, no exponent. */
const INTEGER_LITERAL = /^-?[0-9]+$/;

/** Thrown by {@link reviveLargeInteger} for a literal longer than {@link MAX_INTEGER_DIGITS}. */
class IntegerTooLong extends Error {}

/** The `JSON.parse` reviver of {@link parseWireJson}: an integer literal beyond ±(2^53 − 1),
 * which `JSON.parse` rounded, becomes the exact `bigint` its source text names. */
function reviveLargeInteger(_key: string, value: unknown, context?: JsonReviverContext): unknown {
  if (typeof value !== "number" || !isBeyondSafe(value)) return value;
  const source = context?.source;
  if (source === undefined || !INTEGER_LITERAL.test(source)) return value; // a float: 1e20
  const digits = source.charCodeAt(0) === 45 /* - */ ? source.length - 1 : source.length;
  if (digits > MAX_INTEGER_DIGITS) throw new IntegerTooLong();
  return BigInt(source);
}

/**
 * Whether `JSON.parse`'s result must be read again by the tolerant parser: it holds a number
 * beyond ±(2^53 − 1) (an integer literal JSON.parse rounded, or a float such as `1e20`, which
 * the tolerant parser leaves a number). A walk over the parsed values, not the text: it costs
 * nothing per character of a string.
 */
function needsReread(value: object, depth: number): boolean {
  if (depth > MAX_JSON_DEPTH) throw tooDeep();
  const next = depth + 1;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i];
      if (typeof item === "number") {
        if (isBeyondSafe(item)) return true;
      } else if (typeof item === "object" && item !== null && needsReread(item, next)) return true;
    }
    return false;
  }
  const rec = value as Record<string, unknown>;
  for (const key in rec) {
    const item = rec[key];
    if (typeof item === "number") {
      if (isBeyondSafe(item)) return true;
    } else if (typeof item === "object" && item !== null && needsReread(item, next)) return true;
  }
  return false;
}

/**
 * Texts at least this long are scanned for their nesting depth before `JSON.parse` builds
 * anything: at this size a too-deep text costs `JSON.parse` ~13 ms, the scan ~0.1 ms.
 */
export const DEPTH_SCAN_MIN_CHARS = 65_536;

function tooDeep(): NuropbMessageError {
  return new NuropbMessageError(
    `body is nested deeper than ${String(MAX_JSON_DEPTH)} levels; it is refused unread`,
  );
}

/**
 * Refuses a text whose brackets nest deeper than {@link MAX_JSON_DEPTH} outside strings, in one
 * pass (strings are skipped with `indexOf`; each backslash is looked at once at most).
 * Malformed text is left for the parsers to name.
 */
function assertNestingWithinLimit(text: string): void {
  let depth = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 34 /* " */) {
      // The string ends at the next quote preceded by an even number of backslashes.
      for (;;) {
        const q = text.indexOf('"', i + 1);
        if (q < 0) return;
        let b = q - 1;
        while (b > i && text.charCodeAt(b) === 92 /* \ */) b--;
        i = q;
        if ((q - 1 - b) % 2 === 0) break;
      }
    } else if (c === 91 /* [ */ || c === 123 /* { */) {
      if (++depth > MAX_JSON_DEPTH) throw tooDeep();
    } else if (c === 93 /* ] */ || c === 125 /* } */) depth--;
  }
}

/** True for a number beyond ±(2^53 − 1): every such double is whole (and JSON.parse gives
 * no infinities). */
function isBeyondSafe(n: number): boolean {
  return n > Number.MAX_SAFE_INTEGER || n < Number.MIN_SAFE_INTEGER;
}
