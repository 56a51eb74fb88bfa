#!/usr/bin/env node
/**
 * The `nuropb` binary: runs {@link run} on the process's arguments, streams and environment.
 * SIGINT / SIGTERM stop `listen` cleanly and abandon a pending call; a second one exits at once.
 */
import { run } from "./run.ts";

const controller = new AbortController();
const onSignal = (): void => {
  if (controller.signal.aborted) process.exit(130);
  controller.abort();
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
// A reader that goes away (`nuropb listen | head -3`) closes the pipe: stop as a signal would,
// quietly, instead of dying on an unhandled EPIPE. Any other stream error is a real failure.
const onStdoutError = (err: NodeJS.ErrnoException): void => {
  if (err.code !== "EPIPE") throw err;
  controller.abort();
};
process.stdout.on("error", onStdoutError);

const code = await run(process.argv.slice(2), {
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
  env: process.env,
  stdoutIsTTY: process.stdout.isTTY === true,
  stderrIsTTY: process.stderr.isTTY === true,
  spinnerStream: process.stderr,
  signal: controller.signal,
});
process.off("SIGINT", onSignal);
process.off("SIGTERM", onSignal);
process.exitCode = code;
