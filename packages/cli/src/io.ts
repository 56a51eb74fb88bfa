import pc from "picocolors";

/** Where the CLI reads its environment and writes its output; `run` takes one so tests can capture it. */
export interface CliIo {
  /** Writes text to standard output as is (lines end in `\n`). */
  readonly stdout: (text: string) => void;
  /** Writes text to standard error as is. */
  readonly stderr: (text: string) => void;
  /** Environment variables (`NUROPB_AMQP_URL`, `NUROPB_MANAGEMENT_URL`, `NO_COLOR`). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Standard output is a terminal: colours on (unless `NO_COLOR`). @defaultValue false */
  readonly stdoutIsTTY?: boolean;
  /** Standard error is a terminal: colours and the spinner on. @defaultValue false */
  readonly stderrIsTTY?: boolean;
  /** The stream the spinner draws on (standard error); no spinner without it. */
  readonly spinnerStream?: NodeJS.WritableStream;
  /** Aborted on SIGINT / SIGTERM: `listen` stops cleanly, a pending call gives up. */
  readonly signal?: AbortSignal;
}

/** The colour functions of picocolors, enabled or not. */
export type Colors = ReturnType<typeof pc.createColors>;

/** Whether `NO_COLOR` asks for no colour (set and not empty, see no-color.org). */
export function noColor(env: CliIo["env"]): boolean {
  const v = env.NO_COLOR;
  return v !== undefined && v !== "";
}

/** Colours for standard output and standard error: on only for a terminal without `NO_COLOR`. */
export function colorsFor(io: CliIo): { readonly out: Colors; readonly err: Colors } {
  const off = noColor(io.env);
  return {
    out: pc.createColors(!off && io.stdoutIsTTY === true),
    err: pc.createColors(!off && io.stderrIsTTY === true),
  };
}
