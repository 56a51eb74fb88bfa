import type { LogFields, Logger, Transport } from "@nuropb/protocol";
import { createRunner, loadRunnerModule, type RunnerOptions } from "@nuropb/runner";
import { brokerUrl, milliseconds, type BrokerUrl } from "../args.ts";
import { CliError, ExitCode, usageError } from "../errors.ts";
import type { CliIo } from "../io.ts";
import { scrub } from "../scrub.ts";
import { connectTimeoutOf, type CommandContext } from "./context.ts";

/** Options of `nuropb run`. */
export interface RunModuleOptions {
  /** `--health-port`: serve `/healthz` and `/readyz` on this port, as typed. */
  readonly healthPort?: string;
  /** `--drain-timeout`: the drain bound in milliseconds, as typed. */
  readonly drainTimeout?: string;
}

/**
 * `nuropb run <module>`: loads a runner module (`defineRunner` of `@nuropb/runner`) and runs it
 * until SIGTERM / SIGINT, then drains. With a broker URL (`--url`, `NUROPB_URL`), a module that
 * gives no transport gets the one of the URL's scheme. Exits with the runner's code: 0 drained,
 * 1 start failed, 3 drain bound passed, 4 restarts ran out.
 */
export async function runModuleCommand(
  cx: CommandContext,
  module: string,
  opts: RunModuleOptions,
): Promise<ExitCode> {
  const drainTimeoutMs =
    opts.drainTimeout === undefined
      ? undefined
      : milliseconds(opts.drainTimeout, "--drain-timeout");
  const healthPort = opts.healthPort === undefined ? undefined : port(opts.healthPort);
  const { env } = cx.io;
  const hasUrl =
    cx.globals.url !== undefined ||
    [env.NUROPB_URL, env.NUROPB_AMQP_URL].some((v) => v !== undefined && v !== "");
  let broker: BrokerUrl | undefined;
  let createTransport: (() => Transport) | undefined;
  if (hasUrl) {
    const b = cx.useBroker(brokerUrl(cx.globals.url, env));
    broker = b;
    const connectTimeoutMs = connectTimeoutOf(cx);
    createTransport = () => cx.createTransport(b.url, { connectTimeoutMs });
  }
  const clean = (text: string): string => (broker === undefined ? text : scrub(text, broker));
  const logger = jsonLinesLogger(cx.io, clean);
  let options: RunnerOptions;
  try {
    options = await loadRunnerModule(module, {
      ...(createTransport !== undefined ? { createTransport } : {}),
      logger,
    });
  } catch (err) {
    const message = clean(err instanceof Error ? err.message : String(err));
    if (err instanceof TypeError) {
      throw usageError(
        message,
        hasUrl ? undefined : "pass --url (or set NUROPB_URL) for a transport",
      );
    }
    throw new CliError(`cannot load ${module}: ${message}`, ExitCode.failed, { cause: err });
  }
  let runner: ReturnType<typeof createRunner>;
  try {
    runner = createRunner({
      ...options,
      ...(drainTimeoutMs !== undefined ? { drainTimeoutMs } : {}),
      ...(healthPort !== undefined ? { health: { port: healthPort } } : {}),
    });
  } catch (err) {
    throw usageError(clean(err instanceof Error ? err.message : String(err)));
  }
  const stop = (): void => void runner.stop();
  cx.io.signal?.addEventListener("abort", stop, { once: true });
  try {
    if (cx.io.signal?.aborted === true) stop();
    // A failed start has stopped the runner already: done() says how.
    await runner.start().catch(() => undefined);
    const exit = await runner.done();
    const why = exit.error === undefined ? "" : `: ${clean(exit.error.message)}`;
    if (exit.code !== 0) cx.output.note(`${cx.output.err.red("stopped")} (${exit.reason})${why}`);
    return exit.code;
  } finally {
    cx.io.signal?.removeEventListener("abort", stop);
  }
}

function port(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || n > 65_535) {
    throw usageError(`--health-port must be a port number from 0 to 65535, got '${text}'`);
  }
  return n;
}

/** Structured logs for `nuropb run`: one JSON object a line on standard error, credentials scrubbed. */
function jsonLinesLogger(
  io: CliIo,
  clean: (text: string) => string,
  bindings: LogFields = {},
): Logger {
  const write =
    (level: string) =>
    (msg: string, fields?: LogFields): void => {
      const line = JSON.stringify(
        { time: new Date().toISOString(), level, msg, ...bindings, ...fields },
        (_k, v: unknown) =>
          v instanceof Error
            ? { name: v.name, message: v.message }
            : typeof v === "bigint"
              ? String(v)
              : v,
      );
      io.stderr(`${clean(line)}\n`);
    };
  return {
    debug: () => {},
    info: write("info"),
    warn: write("warn"),
    error: write("error"),
    child: (b) => jsonLinesLogger(io, clean, { ...bindings, ...b }),
  };
}
