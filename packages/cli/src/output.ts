import ora from "ora";
import { colorsFor, type CliIo, type Colors } from "./io.ts";

/** How commands write: data to stdout, messages to stderr, a spinner while waiting. */
export interface Output {
  /** Colours for standard output. */
  readonly out: Colors;
  /** Colours for standard error. */
  readonly err: Colors;
  /** Writes data (results, tables, events) to standard output. */
  data(text: string): void;
  /** Writes a message line to standard error. */
  note(line: string): void;
  /** Runs `work` with a spinner on standard error (only on a terminal). */
  spin<T>(text: string, work: () => Promise<T>): Promise<T>;
}

/** The {@link Output} of an io. */
export function createOutput(io: CliIo): Output {
  const { out, err } = colorsFor(io);
  const stream = io.stderrIsTTY === true ? io.spinnerStream : undefined;
  return {
    out,
    err,
    data: (text) => io.stdout(text),
    note: (line) => io.stderr(`${line}\n`),
    async spin<T>(text: string, work: () => Promise<T>): Promise<T> {
      if (stream === undefined) return work();
      const spinner = ora({ text, stream, isEnabled: true, discardStdin: false }).start();
      try {
        return await work();
      } finally {
        spinner.stop();
      }
    },
  };
}
