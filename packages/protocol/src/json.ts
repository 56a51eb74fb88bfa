import { Buffer } from "node:buffer";
import { NuropbMessageError } from "./errors.ts";

/** Deepest nesting a body may have, counting the body object itself as level 1. */
export const MAX_JSON_DEPTH = 64;

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
 * Parses a body's JSON text. Standard JSON first; if that fails, the bare `NaN`, `Infinity`
 * and `-Infinity` tokens Python peers may send are accepted (as the numbers they name).
 * @throws NuropbMessageError when the text is not JSON.
 */
export function parseWireJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (first) {
    const lenient = parseWithNonFiniteTokens(text);
    if (lenient.ok) return lenient.value;
    throw new NuropbMessageError(`body is not valid JSON: ${(first as Error).message}`, {
      cause: first,
    });
  }
}

function parseWithNonFiniteTokens(text: string): { ok: true; value: unknown } | { ok: false } {
  // Rewrite NaN / Infinity / -Infinity tokens that stand outside strings into marked strings,
  // then turn the marks back into numbers with a reviver. The mark carries a fresh random
  // nonce, so a string the peer sent can never be mistaken for one (a fixed mark could be
  // written as "\u0000…" by anyone and would come back as a number).
  const mark = `\u0000nuropb-nonfinite-${globalThis.crypto.randomUUID()}:`;
  let out = "";
  let changed = false;
  let i = 0;
  let last = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 34 /* " */) {
      i++;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d === 92 /* \ */) i += 2;
        else if (d === 34) break;
        else i++;
      }
      i++;
      continue;
    }
    let token: string | undefined;
    if (text.startsWith("NaN", i)) token = "NaN";
    else if (text.startsWith("Infinity", i)) token = "Infinity";
    else if (text.startsWith("-Infinity", i)) token = "-Infinity";
    if (token !== undefined) {
      out += text.slice(last, i) + JSON.stringify(mark + token);
      i += token.length;
      last = i;
      changed = true;
      continue;
    }
    i++;
  }
  if (!changed) return { ok: false };
  out += text.slice(last);
  try {
    const value = JSON.parse(out, (key, v: unknown) => {
      // A token in key position ({NaN: 1}) was rewritten too; Python's json.loads refuses it,
      // and so do we, rather than hand out a key holding the marker.
      if (key.startsWith(mark)) throw new SyntaxError(`bare ${key.slice(mark.length)} as a key`);
      if (typeof v === "string" && v.startsWith(mark)) {
        return Number(v.slice(mark.length));
      }
      return v;
    }) as unknown;
    return { ok: true, value };
  } catch {
    return { ok: false };
  }
}
