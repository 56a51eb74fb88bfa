import { createRunner, type Runner, type RunnerExit } from "./runner.ts";
import type { RunnerOptions } from "./options.ts";

/** Options of {@link runUntilSignalled}. */
export interface SignalOptions {
  /** The signals that start the drain; a second one forces the stop. @defaultValue ["SIGTERM", "SIGINT"] */
  readonly signals?: readonly NodeJS.Signals[];
}

/**
 * Starts a runner (made from `options`, or given) and runs it until a signal: the first SIGTERM
 * or SIGINT drains and stops it, a second one closes the transports at once. Resolves with how it
 * ended (also when the start failed, or the restarts ran out); set the process's exit code from
 * it. The signal handlers are removed when it resolves.
 * @throws TypeError for bad options (at once).
 * @example
 * const exit = await runUntilSignalled({ transport, services: [makeOrders] });
 * process.exitCode = exit.code;
 */
export async function runUntilSignalled(
  options: RunnerOptions | Runner,
  signalOptions: SignalOptions = {},
): Promise<RunnerExit> {
  const runner = isRunner(options) ? options : createRunner(options);
  const signals = signalOptions.signals ?? ["SIGTERM", "SIGINT"];
  if (!Array.isArray(signals) || signals.some((s) => typeof s !== "string")) {
    throw new TypeError("runUntilSignalled: signals must be an array of signal names");
  }
  let received = 0;
  const onSignal = (): void => {
    received++;
    void runner.stop(received > 1 ? { force: true } : {});
  };
  for (const s of signals) process.on(s, onSignal);
  try {
    // A failed start has stopped the runner already; done() says how.
    await runner.start().catch(() => undefined);
    return await runner.done();
  } finally {
    for (const s of signals) process.off(s, onSignal);
  }
}

function isRunner(value: RunnerOptions | Runner): value is Runner {
  return (
    typeof (value as Runner).start === "function" && typeof (value as Runner).done === "function"
  );
}
