/** Structured fields attached to a log line. Never bodies, keys or credentials. */
export type LogFields = Readonly<Record<string, unknown>>;

/** The logger every package accepts; default is {@link noopLogger}. */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `bindings` to every line. */
  child(bindings: LogFields): Logger;
}

/** A logger that discards everything. */
export const noopLogger: Logger = Object.freeze({
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return noopLogger;
  },
});

/** A logger writing one JSON line per entry to the console, at or above `level`. */
export function createConsoleLogger(
  level: "debug" | "info" | "warn" | "error" = "info",
  bindings: LogFields = {},
): Logger {
  const order = { debug: 10, info: 20, warn: 30, error: 40 } as const;
  const min = order[level];
  const write = (lvl: keyof typeof order, msg: string, fields?: LogFields): void => {
    if (order[lvl] < min) return;
    const line = JSON.stringify({ level: lvl, msg, ...bindings, ...fields }, (_k, v: unknown) =>
      v instanceof Error
        ? { name: v.name, message: v.message }
        : typeof v === "bigint"
          ? v.toString()
          : v,
    );
    // The console logger is the one place that may write to the console.
    // eslint-disable-next-line no-console
    (lvl === "error" || lvl === "warn" ? console.error : console.log)(line);
  };
  return {
    debug: (m, f) => write("debug", m, f),
    info: (m, f) => write("info", m, f),
    warn: (m, f) => write("warn", m, f),
    error: (m, f) => write("error", m, f),
    child: (b) => createConsoleLogger(level, { ...bindings, ...b }),
  };
}

/** True when `value` has every method of {@link Logger} (for checking a `logger` option). */
export function isLogger(value: unknown): value is Logger {
  if (typeof value !== "object" || value === null) return false;
  const methods = value as Record<string, unknown>;
  return ["debug", "info", "warn", "error", "child"].every((m) => typeof methods[m] === "function");
}
