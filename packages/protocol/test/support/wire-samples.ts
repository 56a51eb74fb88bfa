import { readFileSync } from "node:fs";
import type { DecodableFrame } from "@nuropb/protocol";

/** AMQP basic properties of a captured message, as recorded. */
export interface SampleProperties {
  readonly content_type: string;
  readonly headers: Readonly<Record<string, string | null>>;
  readonly correlation_id: string;
  readonly reply_to: string;
  readonly expiration?: string;
}

/** One captured message of WIRE-SAMPLES.md. */
export interface WireSample {
  readonly kind: "request" | "command" | "event" | "response";
  readonly ordinal: number;
  readonly of?: number;
  readonly heading: string;
  readonly capturedVia: string;
  readonly exchange: string;
  readonly routingKey: string;
  readonly properties: SampleProperties;
  readonly bodyBytes: number;
  /** The plaintext body, byte for byte (absent for encrypted messages). */
  readonly rawBody?: string;
  /** Encrypted messages: the shortened ciphertext of the recording. */
  readonly encryptedBodyShortened?: string;
  /** Encrypted messages the client could open: the decrypted JSON (values and key order). */
  readonly decryptedBody?: Record<string, unknown>;
  /** The one message nobody can decrypt: why. */
  readonly notDecryptable?: string;
  readonly encryptedBodyPrefix?: string;
}

/** A captured message plus the scenario it belongs to. */
export interface LabelledSample extends WireSample {
  readonly scenario: string;
  /** `scenario › heading`, for test names. */
  readonly label: string;
}

interface FixtureFile {
  readonly scenarios: readonly { scenario: string; messages: readonly WireSample[] }[];
}

const fixture = JSON.parse(
  readFileSync(new URL("../fixtures/wire-samples.json", import.meta.url), "utf8"),
) as FixtureFile;

/** Every captured message, in recording order. */
export const ALL_SAMPLES: readonly LabelledSample[] = fixture.scenarios.flatMap((s) =>
  s.messages.map((m) => ({ ...m, scenario: s.scenario, label: `${s.scenario} › ${m.heading}` })),
);

/** Messages whose plaintext body we have (raw plaintext, or decrypted). */
export const DECODABLE_SAMPLES: readonly LabelledSample[] = ALL_SAMPLES.filter(
  (m) => m.rawBody !== undefined || m.decryptedBody !== undefined,
);

/** The first captured message of a scenario with the given kind and ordinal. */
export function sample(scenario: string, kind: WireSample["kind"], ordinal = 1): LabelledSample {
  const found = ALL_SAMPLES.find(
    (m) => m.scenario === scenario && m.kind === kind && m.ordinal === ordinal,
  );
  if (found === undefined) throw new Error(`no sample ${scenario} / ${kind} #${String(ordinal)}`);
  return found;
}

/** The plaintext body text of a sample: the raw body, or the decrypted body as Python writes it. */
export function plaintextOf(m: WireSample): string {
  if (m.rawBody !== undefined) return m.rawBody;
  if (m.decryptedBody !== undefined) return pythonDumps(m.decryptedBody);
  throw new Error(`sample ${m.heading} has no plaintext body`);
}

/** The parsed plaintext body of a sample. */
export function bodyOf(m: WireSample): Record<string, unknown> {
  return JSON.parse(plaintextOf(m)) as Record<string, unknown>;
}

const utf8 = new TextEncoder();

/** The frame a transport would hand to `decodeFrame` for this captured message. */
export function frameOf(m: WireSample): DecodableFrame {
  return {
    headers: m.properties.headers,
    body: utf8.encode(plaintextOf(m)),
    correlationId: m.properties.correlation_id,
  };
}

/**
 * JSON text as Python's `json.dumps` writes it by default: `", "` / `": "` separators,
 * `ensure_ascii` (everything outside printable ASCII as `\uXXXX`, astral characters as surrogate
 * pairs) and bare `NaN` / `Infinity` / `-Infinity` tokens.
 */
export function pythonDumps(value: unknown): string {
  if (value === null || value === undefined) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "number":
      if (Number.isNaN(value)) return "NaN";
      if (value === Infinity) return "Infinity";
      if (value === -Infinity) return "-Infinity";
      return String(value);
    case "string":
      return pythonString(value);
    case "object":
      if (Array.isArray(value)) return `[${value.map(pythonDumps).join(", ")}]`;
      return `{${Object.entries(value as Record<string, unknown>)
        .map(([k, v]) => `${pythonString(k)}: ${pythonDumps(v)}`)
        .join(", ")}}`;
    default:
      throw new Error(`pythonDumps cannot write ${typeof value}`);
  }
}

const SHORT_ESCAPES: Readonly<Record<string, string>> = {
  '"': '\\"',
  "\\": "\\\\",
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
  "\b": "\\b",
  "\f": "\\f",
};

function pythonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const ch = s.charAt(i);
    const code = s.charCodeAt(i);
    const short = SHORT_ESCAPES[ch];
    if (short !== undefined) out += short;
    else if (code < 0x20 || code > 0x7e) out += `\\u${code.toString(16).padStart(4, "0")}`;
    else out += ch;
  }
  return `${out}"`;
}
