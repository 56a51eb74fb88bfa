import { Buffer } from "node:buffer";
import { NuropbMessageError } from "./errors.ts";
import { MAX_JSON_DEPTH, parseTolerantJson } from "./tolerant-json.ts";

export { MAX_JSON_DEPTH };

/**
 * Turns any value into the JSON text NuroPb sends. Values JSON cannot hold are written as:
 *
 * | value | written as |
 * |---|---|
 * | `Date` | ISO 8601 UTC string with `Z` (`2020-01-01T00:00:00.000Z`); an invalid date → `null` |
 * | `bigint` | decimal string (`"9223372036854775807"`), as Python writes `Decimal` |
 * | `Map` | object, keys turned into strings |
 * | `Set` | array |
 * | `Uint8Array` / `Buffer` / other typed arrays | standard base64 string of the bytes |
 * | `undefined`, function, symbol | key left out of an object; `null` inside an array |
 * | `NaN`, `Infinity`, `-Infinity` | `null` (never the bare tokens Python emits) |
 * | object with `toJSON()` | what `toJSON()` returns, normalised again |
 *
 * @throws NuropbMessageError for a cyclic value or one nested deeper than {@link MAX_JSON_DEPTH}.
 */
export function toWireJson(value: unknown): string {
  return JSON.stringify(normaliseJson(value, 1)) ?? "null";
}

/**
 * The JSON-safe form of `value` (see {@link toWireJson}). Returns the same object when nothing
 * needed changing, so plain data costs one walk and no copies.
 * @throws NuropbMessageError for cyclic or too deeply nested values.
 */
export function normaliseJson(value: unknown, depth = 1): unknown {
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      return Number.isFinite(value) ? value : null;
    case "bigint":
      return value.toString();
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

/** True for values JSON writes as they are: strings, booleans, null, finite numbers. */
function isJsonLeaf(value: unknown): boolean {
  const t = typeof value;
  return (
    t === "string" ||
    t === "boolean" ||
    value === null ||
    (t === "number" && Number.isFinite(value))
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
 * Parses a body's JSON text. Standard JSON goes to `JSON.parse`; text it refuses goes to a
 * one-pass parser that also accepts the bare `NaN`, `Infinity` and `-Infinity` tokens Python
 * peers may send (as the numbers they name; not as keys), and refuses nesting deeper than
 * {@link MAX_JSON_DEPTH}. Time is linear in the text and memory a small multiple of the text and
 * the result, whatever the input.
 * @throws NuropbMessageError when the text is not JSON.
 */
export function parseWireJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // Not standard JSON: Python's tokens, or an error the tolerant parser names with its
    // position (JSON.parse's own message would point at the first NaN).
    return parseTolerantJson(text);
  }
}
