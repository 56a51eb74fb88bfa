import type { CliIo } from "../src/index.ts";

/** An io that records what the CLI writes. */
export interface Captured {
  readonly io: CliIo;
  /** Everything written to stdout. */
  stdout(): string;
  /** Everything written to stderr. */
  stderr(): string;
}

/** Captures output; `env` defaults to none (so NUROPB_AMQP_URL of the shell does not leak in). */
export function capture(overrides: Partial<CliIo> = {}): Captured {
  let out = "";
  let err = "";
  const io: CliIo = {
    stdout: (t) => void (out += t),
    stderr: (t) => void (err += t),
    env: {},
    ...overrides,
  };
  return { io, stdout: () => out, stderr: () => err };
}
