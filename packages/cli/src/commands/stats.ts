import { STATS_METHOD, type MethodStats, type ServiceStatsReport } from "@nuropb/core";
import { brokerUrl, milliseconds, serviceName } from "../args.ts";
import { CliError, ExitCode } from "../errors.ts";
import { formatTable } from "../format.ts";
import type { Colors } from "../io.ts";
import { openSession } from "../session.ts";
import { DEFAULT_CALL_TTL_MS, printRemoteError } from "./call.ts";
import { connectTimeoutOf, type CommandContext } from "./context.ts";

/** Options of `nuropb stats`. */
export interface StatsOptions {
  /** `--json`: print the report as JSON. */
  readonly json?: boolean;
  /** `--ttl`: how long to wait for the answer, in milliseconds, as typed. @defaultValue 10000 */
  readonly ttl?: string;
}

/**
 * `nuropb stats <service>`: what one instance of the service answers `nuropb_stats` with — per
 * method counts, errors, the last error and p50/p99 times, its uptime and transport state.
 */
export async function statsCommand(
  cx: CommandContext,
  service: string,
  opts: StatsOptions,
): Promise<ExitCode> {
  serviceName(service);
  const ttlMs = opts.ttl === undefined ? DEFAULT_CALL_TTL_MS : milliseconds(opts.ttl, "--ttl");
  const connectTimeoutMs = connectTimeoutOf(cx);
  const broker = cx.useBroker(brokerUrl(cx.globals.url, cx.io.env));
  const { output } = cx;
  const session = await output.spin(`connecting to ${broker.shown}`, () =>
    openSession(broker, { connectTimeoutMs }, cx.createTransport),
  );
  try {
    const response = await output.spin(`asking ${service} for its stats`, () =>
      session.client.request(
        service,
        STATS_METHOD,
        {},
        {},
        {
          ttlMs,
          rpcResponse: false,
          ...(cx.io.signal !== undefined ? { signal: cx.io.signal } : {}),
        },
      ),
    );
    if (response.error !== null) {
      printRemoteError(cx, response.error);
      if (response.error.error === "NuropbHandlingError") {
        output.note(
          output.err.dim(
            `hint: ${service} does not answer ${STATS_METHOD} (Python NuroPb services do not)`,
          ),
        );
      }
      return ExitCode.remote;
    }
    if (!isStatsReport(response.result)) {
      throw new CliError(
        `${service} answered ${STATS_METHOD} with something that is not a stats report`,
        ExitCode.remote,
      );
    }
    if (opts.json === true) {
      output.data(`${JSON.stringify(response.result, null, 2)}\n`);
      return ExitCode.ok;
    }
    output.data(formatStats(response.result, output.out));
    return ExitCode.ok;
  } finally {
    await session.close();
  }
}

function isStatsReport(x: unknown): x is ServiceStatsReport {
  if (typeof x !== "object" || x === null) return false;
  const r = x as Record<string, unknown>;
  return (
    r.type === "nuropb_stats_response" &&
    typeof r.service_name === "string" &&
    typeof r.methods === "object" &&
    r.methods !== null
  );
}

/** A stats report as a heading and a table of methods, busiest first. */
export function formatStats(r: ServiceStatsReport, colors: Colors): string {
  const out: string[] = [];
  out.push(
    `${colors.bold(r.service_name)}${r.service_version !== null ? colors.dim(` v${r.service_version}`) : ""}` +
      colors.dim(`  instance ${r.instance_id}`),
  );
  const state = r.connected ? colors.green("connected") : colors.red("not connected");
  out.push(
    `  up ${formatDuration(r.uptime_ms)}, ${state} (${r.transport.kind}: ${r.transport.state}), ` +
      `${r.in_flight} in flight`,
  );
  out.push("");
  const names = Object.keys(r.methods).sort(
    (a, b) =>
      (r.methods[b]?.num_requests ?? 0) - (r.methods[a]?.num_requests ?? 0) || (a < b ? -1 : 1),
  );
  if (names.length === 0) out.push("  (no calls yet)");
  else {
    const rows = names.map((name) => row(name, r.methods[name] as MethodStats));
    out.push(
      formatTable(
        [
          { title: "method", style: (t) => colors.cyan(t) },
          { title: "calls" },
          { title: "errors", style: (t) => (t.trim() === "0" ? t : colors.red(t)) },
          { title: "p50 ms" },
          { title: "p99 ms" },
          { title: "avg ms" },
          { title: "last error", style: (t) => colors.dim(t) },
        ],
        rows,
        colors,
      ).trimEnd(),
    );
  }
  if (r.other_method_calls > 0) {
    out.push("", colors.dim(`  ${r.other_method_calls} calls of hidden or unknown methods`));
  }
  return `${out.join("\n")}\n`;
}

function row(name: string, m: MethodStats): string[] {
  const t = m.processing_time_ms;
  const last = m.last_error === null ? "" : `${m.last_error.error}: ${m.last_error.description}`;
  return [
    name,
    String(m.num_requests),
    String(m.num_errors),
    ms(t.p50),
    ms(t.p99),
    ms(t.average),
    last,
  ];
}

function ms(v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

/** `3d 4h`, `2h 5m`, `4m 12s`, `12s`. */
export function formatDuration(totalMs: number): string {
  const s = Math.floor(totalMs / 1000);
  const d = Math.floor(s / 86_400);
  const h = Math.floor((s % 86_400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}
