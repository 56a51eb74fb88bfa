import { NuropbMessageError } from "./errors.ts";

/** Deepest nesting a body may have, counting the body object itself as level 1. */
export const MAX_JSON_DEPTH = 64;

/**
 * Longest integer literal read: Python (3.11 and later) refuses to turn more than 4300 digits
 * into an `int` (`sys.get_int_max_str_digits()`), so no Python peer sends one; the cap also
 * bounds what `BigInt()`, quadratic in the digit count, costs per literal.
 */
export const MAX_INTEGER_DIGITS = 4300;

/**
 * Parses JSON text plus what Python's `json.dumps` may write beyond it, in one pass, in time
 * linear in the text and memory a small constant times the text and the result:
 *
 * - the bare tokens `NaN`, `Infinity` and `-Infinity` as values (never as keys, as Python's
 *   `json.loads` refuses them there);
 * - integer literals outside ±(2^53 − 1) become exact `bigint`s (at most
 *   {@link MAX_INTEGER_DIGITS} digits, else refused); every other number, floats of any length
 *   and exponent forms included, is the `number` `JSON.parse` gives.
 *
 * Everything else is `JSON.parse`'s grammar and result: a `__proto__` key is an own property,
 * a repeated key keeps its last value, strings are decoded by `JSON.parse` itself. Nesting
 * deeper than {@link MAX_JSON_DEPTH} levels is refused, which also bounds the recursion.
 * @throws NuropbMessageError naming the problem and its position.
 */
export function parseTolerantJson(text: string): unknown {
  const parser = new TolerantJsonParser(text);
  const value = parser.value(1);
  parser.end();
  return value;
}

// Character codes.
const TAB = 9;
const LF = 10;
const CR = 13;
const SPACE = 32;
const QUOTE = 34;
const PLUS = 43;
const COMMA = 44;
const MINUS = 45;
const DOT = 46;
const ZERO = 48;
const NINE = 57;
const COLON = 58;
const UPPER_E = 69;
const UPPER_I = 73;
const UPPER_N = 78;
const LEFT_BRACKET = 91;
const BACKSLASH = 92;
const RIGHT_BRACKET = 93;
const LOWER_E = 101;
const LOWER_F = 102;
const LOWER_N = 110;
const LOWER_T = 116;
const LEFT_BRACE = 123;
const RIGHT_BRACE = 125;

class TolerantJsonParser {
  readonly #text: string;
  #pos = 0;

  constructor(text: string) {
    this.#text = text;
  }

  /** Parses the value at the current position (after whitespace), nested `depth` levels deep. */
  value(depth: number): unknown {
    const text = this.#text;
    this.#skipWhitespace();
    const c = text.charCodeAt(this.#pos);
    switch (c) {
      case LEFT_BRACE:
        return this.#object(depth);
      case LEFT_BRACKET:
        return this.#array(depth);
      case QUOTE:
        return this.#string();
      case LOWER_T:
        return this.#literal("true", true);
      case LOWER_F:
        return this.#literal("false", false);
      case LOWER_N:
        return this.#literal("null", null);
      case UPPER_N:
        return this.#literal("NaN", NaN);
      case UPPER_I:
        return this.#literal("Infinity", Infinity);
      case MINUS:
        if (text.charCodeAt(this.#pos + 1) === UPPER_I)
          return this.#literal("-Infinity", -Infinity);
        return this.#number();
      default:
        if (c >= ZERO && c <= NINE) return this.#number();
        return this.#fail(Number.isNaN(c) ? "unexpected end of text" : "unexpected character");
    }
  }

  /** Checks that only whitespace follows the top value. */
  end(): void {
    this.#skipWhitespace();
    if (this.#pos < this.#text.length) this.#fail("unexpected character after the value");
  }

  #object(depth: number): Record<string, unknown> {
    this.#checkDepth(depth);
    const text = this.#text;
    const out: Record<string, unknown> = {};
    this.#pos++;
    this.#skipWhitespace();
    if (text.charCodeAt(this.#pos) === RIGHT_BRACE) {
      this.#pos++;
      return out;
    }
    for (;;) {
      this.#skipWhitespace();
      if (text.charCodeAt(this.#pos) !== QUOTE) {
        const rest = text.slice(this.#pos, this.#pos + 9);
        const token = ["NaN", "Infinity", "-Infinity"].find((t) => rest.startsWith(t));
        this.#fail(token === undefined ? "expected a string key" : `bare ${token} as a key`);
      }
      const key = this.#string();
      this.#skipWhitespace();
      if (text.charCodeAt(this.#pos) !== COLON) this.#fail("expected ':' after a key");
      this.#pos++;
      const item = this.value(depth + 1);
      if (key === "__proto__") {
        // As JSON.parse does: an own property, never the prototype.
        Object.defineProperty(out, key, {
          value: item,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      } else out[key] = item;
      this.#skipWhitespace();
      const c = text.charCodeAt(this.#pos++);
      if (c === RIGHT_BRACE) return out;
      if (c !== COMMA) this.#fail("expected ',' or '}' in an object", this.#pos - 1);
    }
  }

  #array(depth: number): unknown[] {
    this.#checkDepth(depth);
    const text = this.#text;
    const out: unknown[] = [];
    this.#pos++;
    this.#skipWhitespace();
    if (text.charCodeAt(this.#pos) === RIGHT_BRACKET) {
      this.#pos++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth + 1));
      this.#skipWhitespace();
      const c = text.charCodeAt(this.#pos++);
      if (c === RIGHT_BRACKET) return out;
      if (c !== COMMA) this.#fail("expected ',' or ']' in an array", this.#pos - 1);
    }
  }

  /** The string starting at the current `"`: a slice when it has no escape, else decoded by
   * JSON.parse (which also checks the escapes). One pass either way. */
  #string(): string {
    const text = this.#text;
    const start = this.#pos;
    const n = text.length;
    let i = start + 1;
    let escaped = false;
    for (;;) {
      if (i >= n) this.#fail("unterminated string", start);
      const c = text.charCodeAt(i);
      if (c === QUOTE) break;
      if (c === BACKSLASH) {
        escaped = true;
        i += 2;
      } else if (c < SPACE) this.#fail("control character in a string", i);
      else i++;
    }
    this.#pos = i + 1;
    if (!escaped) return text.slice(start + 1, i);
    try {
      return JSON.parse(text.slice(start, i + 1)) as string;
    } catch {
      return this.#fail("bad escape in a string", start);
    }
  }

  /** A number by JSON's grammar; an integer outside ±(2^53 − 1) becomes a bigint. */
  #number(): number | bigint {
    const text = this.#text;
    const start = this.#pos;
    let i = start;
    if (text.charCodeAt(i) === MINUS) i++;
    const digitsStart = i;
    const first = text.charCodeAt(i);
    if (first === ZERO) i++;
    else if (first > ZERO && first <= NINE) i = this.#digits(i + 1);
    else this.#fail("expected a digit", i);
    const digits = i - digitsStart;
    let integer = true;
    if (text.charCodeAt(i) === DOT) {
      integer = false;
      i = this.#digits(this.#digit(i + 1));
    }
    const e = text.charCodeAt(i);
    if (e === LOWER_E || e === UPPER_E) {
      integer = false;
      i++;
      const sign = text.charCodeAt(i);
      if (sign === PLUS || sign === MINUS) i++;
      i = this.#digits(this.#digit(i));
    }
    this.#pos = i;
    const literal = text.slice(start, i);
    const value = Number(literal);
    // 2^53 − 1 has 16 digits: every shorter integer is safe.
    if (!integer || digits < 16 || Number.isSafeInteger(value)) return value;
    if (digits > MAX_INTEGER_DIGITS) {
      this.#fail(`integer literal longer than ${String(MAX_INTEGER_DIGITS)} digits`, start);
    }
    return BigInt(literal);
  }

  /** Requires a digit at `i`; returns the index after it. */
  #digit(i: number): number {
    const c = this.#text.charCodeAt(i);
    if (c < ZERO || c > NINE || Number.isNaN(c)) this.#fail("expected a digit", i);
    return i + 1;
  }

  /** Skips digits from `i`; returns the index of the first non-digit. */
  #digits(i: number): number {
    const text = this.#text;
    let c = text.charCodeAt(i);
    while (c >= ZERO && c <= NINE) c = text.charCodeAt(++i);
    return i;
  }

  #literal<T>(word: string, value: T): T {
    if (!this.#text.startsWith(word, this.#pos)) this.#fail("unexpected character");
    this.#pos += word.length;
    return value;
  }

  #skipWhitespace(): void {
    const text = this.#text;
    let i = this.#pos;
    let c = text.charCodeAt(i);
    while (c === SPACE || c === LF || c === CR || c === TAB) c = text.charCodeAt(++i);
    this.#pos = i;
  }

  #checkDepth(depth: number): void {
    if (depth > MAX_JSON_DEPTH) this.#fail(`nested deeper than ${String(MAX_JSON_DEPTH)} levels`);
  }

  #fail(reason: string, at = this.#pos): never {
    throw new NuropbMessageError(`body is not valid JSON: ${reason} at position ${String(at)}`);
  }
}
