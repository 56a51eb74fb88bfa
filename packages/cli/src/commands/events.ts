import {
  MAX_EVENT_PAGE_LIMIT,
  NuropbEventLogUnavailableError,
  type EventReplayStart,
  type StoredEvent,
} from "@nuropb/core";
import { toWireJson } from "@nuropb/protocol";
import { brokerUrl, positiveInteger, topicPattern } from "../args.ts";
import { CliError, ExitCode, usageError } from "../errors.ts";
import { formatEvent } from "../format.ts";
import { scrub } from "../scrub.ts";
import { openSession } from "../session.ts";
import { connectTimeoutOf, type CommandContext } from "./context.ts";

/** Options of `nuropb events`. */
export interface EventsOptions {
  /** `--since`: a duration back from now (`1h`, `30m`, `7d`) or a date (ISO 8601), as typed. */
  readonly since?: string;
  /** `--until`: the same forms; only events stored before it. */
  readonly until?: string;
  /** `--after`: a position printed earlier (`--json` shows it): start just after it. */
  readonly after?: string;
  /** `--limit`: most events printed. @defaultValue 100 (without --follow), unbounded with it */
  readonly limit?: string;
  /** `--follow`: after the stored events, print new ones as they are stored, until Ctrl-C. */
  readonly follow?: boolean;
  /** `--json`: one JSON object per event and line. */
  readonly json?: boolean;
  /**
   * `--secret-context-keys`: comma-separated context keys left out of what is printed, beside
   * `Authorization` and the credential-like keys core always leaves out.
   */
  readonly secretContextKeys?: string;
}

/** Events printed without `--follow` and `--limit`. */
export const DEFAULT_EVENTS_LIMIT = 100;

const UNIT_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/**
 * A duration such as `500ms`, `90s`, `15m`, `1h`, `7d`, `2w`, in milliseconds.
 * @throws CliError (usage) naming `what`.
 */
export function duration(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$/.exec(text.trim());
  const ms = m === null ? Number.NaN : Math.round(Number(m[1]) * (UNIT_MS[m[2] as string] ?? 0));
  if (!Number.isSafeInteger(ms) || ms < 1) {
    throw usageError(`${what} must be a duration such as 90s, 15m, 1h, 7d or 2w, got '${text}'`);
  }
  return ms;
}

/**
 * A point in time: a duration back from `now` (`1h`), or an ISO 8601 date; ms since the epoch.
 * @throws CliError (usage) naming `what`.
 */
export function pointInTime(text: string, what: string, now: number): number {
  if (/^\d+(?:\.\d+)?(ms|s|m|h|d|w)$/.test(text.trim())) return now - duration(text, what);
  const ms = /^\d{4}-\d\d-\d\d/.test(text) ? Date.parse(text) : Number.NaN;
  if (!Number.isFinite(ms)) {
    throw usageError(
      `${what} must be a duration back from now (1h, 30m, 7d) or an ISO 8601 date, got '${text}'`,
    );
  }
  return ms;
}

const SIZE_BYTES: Readonly<Record<string, number>> = {
  "": 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

/**
 * A size such as `1GiB`, `512MiB`, `100MB` or `65536`, in bytes.
 * @throws CliError (usage) naming `what`.
 */
export function byteSize(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(text.trim());
  const unit = SIZE_BYTES[(m?.[2] ?? "?").toLowerCase()];
  const bytes = m === null || unit === undefined ? Number.NaN : Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes) || bytes < 1) {
    throw usageError(`${what} must be a size such as 1GiB, 512MiB, 100MB or 65536, got '${text}'`);
  }
  return bytes;
}

/** One stored event as a JSON line (`events --json`): its position resumes with `--after`. */
export function formatStoredEventJson(e: StoredEvent): string {
  return `${toWireJson({
    topic: e.topic,
    event: e.event,
    context: e.context,
    trace_id: e.traceId,
    target: e.target,
    timestamp: new Date(e.timestamp).toISOString(),
    position: e.position,
  })}\n`;
}

/**
 * `nuropb events <pattern>`: prints the stored events matching a topic pattern (oldest first,
 * `--since`/`--until`/`--after`, at most `--limit`), and with `--follow` the new ones as they
 * are stored, until Ctrl-C. Contexts come without credentials (core leaves them out).
 */
export async function eventsCommand(
  cx: CommandContext,
  pattern: string,
  opts: EventsOptions,
): Promise<ExitCode> {
  topicPattern(pattern);
  const now = Date.now();
  const since = opts.since === undefined ? undefined : pointInTime(opts.since, "--since", now);
  const until = opts.until === undefined ? undefined : pointInTime(opts.until, "--until", now);
  if (since !== undefined && until !== undefined && until < since) {
    throw usageError("--until must not be before --since");
  }
  if (opts.after !== undefined && opts.after === "") {
    throw usageError("--after must be a position printed by `nuropb events --json`");
  }
  if (opts.follow === true && until !== undefined) {
    throw usageError("--until cannot be combined with --follow");
  }
  const limit =
    opts.limit !== undefined
      ? positiveInteger(opts.limit, "--limit")
      : opts.follow === true
        ? Infinity
        : DEFAULT_EVENTS_LIMIT;
  const secretContextKeys = contextKeys(opts.secretContextKeys);
  const connectTimeoutMs = connectTimeoutOf(cx);
  const broker = cx.useBroker(brokerUrl(cx.globals.url, cx.io.env));
  const { output, io } = cx;
  const print = (e: StoredEvent): void =>
    output.data(
      opts.json === true
        ? formatStoredEventJson(e)
        : formatEvent({ ...e, receivedAt: new Date(e.timestamp) }, output.out),
    );
  const session = await output.spin(`connecting to ${broker.shown}`, () =>
    openSession(broker, { connectTimeoutMs }, cx.createTransport),
  );
  let printed = 0;
  try {
    if (opts.follow === true) {
      const from: EventReplayStart =
        opts.after !== undefined
          ? { position: opts.after }
          : since !== undefined
            ? { time: since }
            : "now";
      let stopped!: () => void;
      const done = new Promise<void>((resolve) => (stopped = resolve));
      const subscription = await session.client.subscribeEvents(
        { topics: [pattern], from, secretContextKeys },
        (e) => {
          if (printed >= limit) return;
          // From --after, --since still holds (as it does without --follow).
          if (since !== undefined && e.timestamp < since) return;
          print(e);
          printed += 1;
          if (printed >= limit) stopped();
        },
      );
      if (io.signal?.aborted === true) stopped();
      else io.signal?.addEventListener("abort", () => stopped(), { once: true });
      output.note(output.err.dim(`following '${pattern}' on mesh ${broker.vhost}, Ctrl-C to stop`));
      const ended = await Promise.race([done.then(() => undefined), subscription.ended()]);
      await subscription.stop();
      if (ended !== undefined) throw ended;
      return ExitCode.ok;
    }
    let after = opts.after;
    for (;;) {
      const page = await session.client.queryEvents({
        topics: [pattern],
        secretContextKeys,
        limit: Math.min(MAX_EVENT_PAGE_LIMIT, limit - printed),
        ...(since === undefined ? {} : { since }),
        ...(until === undefined ? {} : { until }),
        ...(after === undefined ? {} : { after }),
        ...(io.signal === undefined ? {} : { signal: io.signal }),
      });
      for (const e of page.events) print(e);
      printed += page.events.length;
      after = page.cursor;
      if (after === undefined) break;
      if (printed >= limit) {
        output.note(
          output.err.yellow(`more events follow: add --after ${after} for the next ones`),
        );
        break;
      }
    }
    return ExitCode.ok;
  } catch (err) {
    throw historyError(err, broker);
  } finally {
    await session.close();
    if (opts.json !== true) output.note(output.err.dim(`${printed} event(s)`));
  }
}

/** The keys of `--secret-context-keys` (comma-separated). @throws CliError (usage) */
function contextKeys(text: string | undefined): string[] {
  if (text === undefined) return [];
  const keys = text.split(",").map((k) => k.trim());
  if (keys.some((k) => k === "")) {
    throw usageError(`--secret-context-keys must be comma-separated key names, got '${text}'`);
  }
  return keys;
}

function historyError(
  err: unknown,
  secrets: { readonly password: string; readonly username: string },
): unknown {
  if (err instanceof CliError) return err;
  if (err instanceof TypeError || err instanceof RangeError) {
    return usageError(scrub(err.message, secrets));
  }
  const message = scrub((err as Error)?.message ?? String(err), secrets);
  if (err instanceof NuropbEventLogUnavailableError) {
    return new CliError(message, ExitCode.transport, {
      cause: err,
      hint: "`nuropb mesh setup --event-log-max-age 7d --event-log-max-bytes 1GiB` sets the log up",
    });
  }
  return new CliError(`reading the event log failed: ${message}`, ExitCode.transport, {
    cause: err,
  });
}
