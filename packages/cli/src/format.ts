import type { ServiceDescription } from "@nuropb/core";
import { toWireJson } from "@nuropb/protocol";
import type { Colors } from "./io.ts";

/** A column of {@link formatTable}. */
export interface Column {
  /** Heading, printed in upper case. */
  readonly title: string;
  /** Colours a (padded) cell of this column. */
  readonly style?: (text: string) => string;
}

/**
 * Lays rows out in aligned columns separated by two spaces, under bold upper-case headings; the
 * last column is not padded. Widths are measured on the plain text, so colouring never misaligns.
 */
export function formatTable(
  columns: readonly Column[],
  rows: readonly (readonly string[])[],
  colors: Colors,
): string {
  const widths = columns.map((c, i) =>
    Math.max(c.title.length, ...rows.map((r) => displayWidth(r[i] ?? ""))),
  );
  const line = (cells: readonly string[], style: (text: string, col: number) => string): string =>
    cells
      .map((cell, i) => {
        const last = i === cells.length - 1;
        const padded = last ? cell : cell + " ".repeat((widths[i] ?? 0) - displayWidth(cell));
        return style(padded, i);
      })
      .join("  ")
      .trimEnd();
  const out = [
    line(
      columns.map((c) => c.title.toUpperCase()),
      (t) => colors.bold(t),
    ),
  ];
  for (const row of rows) {
    out.push(
      line(
        columns.map((_, i) => row[i] ?? ""),
        (t, i) => columns[i]?.style?.(t) ?? t,
      ),
    );
  }
  return `${out.join("\n")}\n`;
}

function displayWidth(text: string): number {
  return [...text].length;
}

/** A JSON Schema's type as a short TypeScript-like text: `string`, `number[]`, `"a" | "b"`, `any`. */
export function schemaType(schema: unknown): string {
  if (typeof schema !== "object" || schema === null) return "any";
  const s = schema as Record<string, unknown>;
  if (Array.isArray(s.enum)) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  if ("const" in s) return JSON.stringify(s.const);
  const t = s.type;
  if (Array.isArray(t)) return t.map((x) => String(x)).join(" | ");
  if (t === "array") {
    const item = schemaType(s.items);
    return item.includes(" ") ? `(${item})[]` : `${item}[]`;
  }
  if (typeof t === "string") return t;
  if (Array.isArray(s.anyOf ?? s.oneOf)) {
    return ((s.anyOf ?? s.oneOf) as unknown[]).map((x) => schemaType(x)).join(" | ");
  }
  return "any";
}

/**
 * A method's parameters from its JSON Schema: `id: string, note?: string`; `any` when the schema
 * lists no properties (any object is accepted).
 */
export function formatParameters(schema: unknown): string {
  if (typeof schema !== "object" || schema === null) return "any";
  const s = schema as Record<string, unknown>;
  const props = s.properties;
  if (typeof props !== "object" || props === null || Object.keys(props).length === 0) {
    return "any";
  }
  const required = new Set(Array.isArray(s.required) ? s.required.map(String) : []);
  return Object.entries(props as Record<string, unknown>)
    .map(([name, spec]) => `${name}${required.has(name) ? "" : "?"}: ${schemaType(spec)}`)
    .join(", ");
}

/**
 * A service description as text: a heading (name, version, description, keys, warnings) and a
 * table of methods with their parameters and the AUTH and ENCRYPTED flags. `authKnown` says, per
 * method, whether the service announced its authorisation (Python services do not: shown as `?`).
 */
export function formatDescription(
  d: ServiceDescription,
  colors: Colors,
  authKnown: (method: string) => boolean = () => true,
): string {
  const out: string[] = [];
  const title = d.service_name ?? "(unnamed service)";
  out.push(
    `${colors.bold(title)}${d.service_version !== null ? colors.dim(` v${d.service_version}`) : ""}`,
  );
  if (d.description !== null && d.description !== "") out.push(`  ${d.description}`);
  const keys = [
    ...(d.public_key !== null ? ["RSA"] : []),
    ...((d.nacl_public_key ?? null) !== null ? ["nacl"] : []),
  ];
  out.push(
    `  encryption: ${keys.length > 0 ? `public keys ${keys.join(" and ")}` : "no public key"}` +
      `${d.encrypted_methods ? ", some methods require it" : ""}`,
  );
  for (const w of d.warnings) out.push(colors.yellow(`  warning: ${w}`));
  out.push("");
  const names = Object.keys(d.methods).sort();
  if (names.length === 0) {
    out.push("  (no methods)");
    return `${out.join("\n")}\n`;
  }
  const yes = (t: string): string => (t.trim() === "yes" ? colors.green(t) : colors.dim(t));
  const rows = names.map((name) => {
    const m = d.methods[name];
    return [
      name,
      formatParameters(m?.parameters),
      authKnown(name) ? (m?.requires_authorization === true ? "yes" : "no") : "?",
      m?.requires_encryption === true ? "yes" : "no",
      m?.description ?? "",
    ];
  });
  const table = formatTable(
    [
      { title: "method", style: (t) => colors.cyan(t) },
      { title: "parameters" },
      { title: "auth", style: yes },
      { title: "encrypted", style: yes },
      { title: "description", style: (t) => colors.dim(t) },
    ],
    rows,
    colors,
  );
  out.push(table.trimEnd());
  if (rows.some((r) => r[2] === "?")) {
    out.push(
      colors.dim("AUTH ?: the service does not announce authorisation (Python services do not)"),
    );
  }
  return `${out.join("\n")}\n`;
}

/** One service queue as `nuropb services` shows it. */
export interface ServiceQueueInfo {
  /** The service name (the queue `nuropb-{service}-sq`). */
  readonly service: string;
  /** The queue name. */
  readonly queue: string;
  /** Live consumers (service instances). */
  readonly consumers: number;
  /** Messages waiting for an instance. */
  readonly ready: number;
  /** Messages handed to an instance and not yet acknowledged. */
  readonly unacked: number;
}

/** The services table: SERVICE, INSTANCES, READY, UNACKED; no instances shows in yellow. */
export function formatServices(list: readonly ServiceQueueInfo[], colors: Colors): string {
  return formatTable(
    [
      { title: "service", style: (t) => colors.cyan(t) },
      { title: "instances", style: (t) => (t.trim() === "0" ? colors.yellow(t) : t) },
      { title: "ready" },
      { title: "unacked" },
    ],
    list.map((s) => [s.service, String(s.consumers), String(s.ready), String(s.unacked)]),
    colors,
  );
}

/** An event as `nuropb listen` received it. */
export interface ReceivedEvent {
  readonly topic: string;
  readonly event: unknown;
  readonly context: Readonly<Record<string, unknown>>;
  readonly traceId: string | null;
  readonly target: readonly string[] | null;
  /** When it arrived. */
  readonly receivedAt: Date;
}

/** One event as a line: time, topic, event JSON, then context and trace id when present. */
export function formatEvent(e: ReceivedEvent, colors: Colors): string {
  const time = e.receivedAt.toISOString().slice(11, 23);
  const parts = [colors.dim(time), colors.cyan(e.topic), toWireJson(e.event)];
  if (Object.keys(e.context).length > 0) parts.push(colors.dim(`context ${toWireJson(e.context)}`));
  if (e.target !== null && e.target.length > 0)
    parts.push(colors.dim(`target ${e.target.join(",")}`));
  if (e.traceId !== null) parts.push(colors.dim(`trace ${e.traceId}`));
  return `${parts.join("  ")}\n`;
}

/** One event as a JSON line (`listen --json`). */
export function formatEventJson(e: ReceivedEvent): string {
  return `${toWireJson({
    topic: e.topic,
    event: e.event,
    context: e.context,
    trace_id: e.traceId,
    target: e.target,
    received_at: e.receivedAt.toISOString(),
  })}\n`;
}
