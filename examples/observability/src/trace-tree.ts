import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { SpanKind } from "@opentelemetry/api";

const KINDS: Readonly<Record<number, string>> = {
  [SpanKind.INTERNAL]: "internal",
  [SpanKind.SERVER]: "server",
  [SpanKind.CLIENT]: "client",
  [SpanKind.PRODUCER]: "producer",
  [SpanKind.CONSUMER]: "consumer",
};

/**
 * The spans of each trace as an indented tree, children in start order: one line per span with
 * its kind, the RPC method or topic, the outcome and error type, and a mark for a link.
 */
export function formatTraceTree(spans: readonly ReadableSpan[]): string[] {
  const ids = new Set(spans.map((s) => s.spanContext().spanId));
  const children = new Map<string | undefined, ReadableSpan[]>();
  for (const s of [...spans].sort((a, b) => compareTime(a.startTime, b.startTime))) {
    const parent = s.parentSpanContext?.spanId;
    const key = parent !== undefined && ids.has(parent) ? parent : undefined;
    children.set(key, [...(children.get(key) ?? []), s]);
  }
  const lines: string[] = [];
  const walk = (span: ReadableSpan, depth: number): void => {
    lines.push(`${"   ".repeat(depth)}${depth === 0 ? "" : "└─ "}${describeSpan(span)}`);
    for (const c of children.get(span.spanContext().spanId) ?? []) walk(c, depth + 1);
  };
  for (const root of children.get(undefined) ?? []) {
    lines.push(`trace ${root.spanContext().traceId}`);
    walk(root, 0);
  }
  return lines;
}

function describeSpan(s: ReadableSpan): string {
  const a = s.attributes;
  const what =
    a["rpc.method"] !== undefined ? ` ${String(a["rpc.service"])}.${String(a["rpc.method"])}` : "";
  const outcome = a["nuropb.outcome"] !== undefined ? ` ${String(a["nuropb.outcome"])}` : "";
  const error = a["error.type"] !== undefined ? ` (${String(a["error.type"])})` : "";
  const link = s.links.length > 0 ? " [linked to its sender]" : "";
  return `${s.name} [${KINDS[s.kind] ?? "?"}]${what}${outcome}${error}${link}`;
}

function compareTime(a: readonly [number, number], b: readonly [number, number]): number {
  return a[0] - b[0] || a[1] - b[1];
}
