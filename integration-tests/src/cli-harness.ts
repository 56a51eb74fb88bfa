import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { run, type CliIo, type ExitCode } from "@nuropb/cli";

/** The repository root (where `node --import tsx` resolves `tsx`). */
export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** What a CLI run printed and returned. */
export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** A CLI run in progress whose output can be waited on. */
export interface CliRun {
  /** Resolves when the run ends. */
  readonly done: Promise<CliResult>;
  /** Resolves once stderr contains `text` (rejects after `timeoutMs`, or if the run ends first). */
  stderrContains(text: string, timeoutMs?: number): Promise<void>;
  /** What stderr holds so far. */
  stderr(): string;
  /** Resolves once stdout contains `text` (rejects after `timeoutMs`, or if the run ends first). */
  stdoutContains(text: string, timeoutMs?: number): Promise<void>;
}

/** Text that grows (a stream's output) and can be waited on. */
interface Watched {
  text(): string;
  append(t: string): void;
  end(): void;
  contains(text: string, timeoutMs: number): Promise<void>;
}

function watched(what: string): Watched {
  let text = "";
  let ended = false;
  const watchers = new Set<() => void>();
  const poke = (): void => {
    for (const w of watchers) w();
  };
  return {
    text: () => text,
    append: (t) => {
      text += t;
      poke();
    },
    end: () => {
      ended = true;
      poke();
    },
    contains: (wanted, timeoutMs) =>
      new Promise<void>((resolve, reject) => {
        const finish = (err: Error | undefined): void => {
          clearTimeout(timer);
          watchers.delete(check);
          if (err === undefined) resolve();
          else reject(err);
        };
        const check = (): void => {
          if (text.includes(wanted)) finish(undefined);
          else if (ended) finish(new Error(`${what} ended without printing '${wanted}': ${text}`));
        };
        const timer = setTimeout(
          () => finish(new Error(`${what} printed no '${wanted}' within ${timeoutMs} ms: ${text}`)),
          timeoutMs,
        );
        watchers.add(check);
        check();
      }),
  };
}

/**
 * Starts `nuropb …argv` in-process against the real broker (`run` from `@nuropb/cli`), with no
 * environment (so a developer's NUROPB_AMQP_URL never leaks in) unless `env` is given.
 */
export function startCli(
  argv: readonly string[],
  options: { readonly env?: Record<string, string>; readonly signal?: AbortSignal } = {},
): CliRun {
  const stdout = watched("nuropb");
  const stderr = watched("nuropb");
  const io: CliIo = {
    stdout: (t) => stdout.append(t),
    stderr: (t) => stderr.append(t),
    env: options.env ?? {},
    ...(options.signal !== undefined ? { signal: options.signal } : {}),
  };
  const done = run(argv, io).then((code: ExitCode) => {
    stdout.end();
    stderr.end();
    return { code, stdout: stdout.text(), stderr: stderr.text() };
  });
  return {
    done,
    stderrContains: (text, timeoutMs = 15_000) => stderr.contains(text, timeoutMs),
    stderr: () => stderr.text(),
    stdoutContains: (text, timeoutMs = 15_000) => stdout.contains(text, timeoutMs),
  };
}

/** Runs `nuropb …argv` in-process to the end. */
export function cli(argv: readonly string[], env?: Record<string, string>): Promise<CliResult> {
  return startCli(argv, env !== undefined ? { env } : {}).done;
}

/** A spawned TypeScript program (run through tsx from the repository root). */
export interface Spawned {
  /** Resolves with the exit code (or `128 + n` for a signal) and the output. */
  readonly done: Promise<CliResult>;
  /** Resolves once stdout contains `text`; rejects when the process ends first or after the timeout. */
  stdoutContains(text: string, timeoutMs?: number): Promise<void>;
  /** Resolves once stderr contains `text`; rejects when the process ends first or after the timeout. */
  stderrContains(text: string, timeoutMs?: number): Promise<void>;
  kill(signal: NodeJS.Signals): void;
}

/**
 * Spawns `node --import tsx --conditions=@nuropb/source <script> ...argv` in the repository root.
 * The environment is `env` plus PATH and HOME only.
 */
export function spawnTs(
  script: string,
  argv: readonly string[],
  env: Record<string, string> = {},
): Spawned {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "--conditions=@nuropb/source", script, ...argv],
    {
      cwd: REPO_ROOT,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const stdout = watched(script);
  const stderr = watched(script);
  child.stdout.setEncoding("utf8").on("data", (t: string) => stdout.append(t));
  child.stderr.setEncoding("utf8").on("data", (t: string) => stderr.append(t));
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => {
      stdout.end();
      stderr.end();
      resolve({
        code: code ?? 128 + signalNumber(signal),
        stdout: stdout.text(),
        stderr: stderr.text(),
      });
    });
  });
  return {
    done,
    kill: (signal) => void child.kill(signal),
    stdoutContains: (text, timeoutMs = 30_000) => stdout.contains(text, timeoutMs),
    stderrContains: (text, timeoutMs = 30_000) => stderr.contains(text, timeoutMs),
  };
}

/** Spawns the real `nuropb` binary, `packages/cli/src/main.ts`. */
export function spawnCli(argv: readonly string[], env: Record<string, string> = {}): Spawned {
  return spawnTs("packages/cli/src/main.ts", argv, env);
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return signal === "SIGINT" ? 2 : signal === "SIGTERM" ? 15 : signal === "SIGKILL" ? 9 : 0;
}

/** A local TCP port nothing listens on (bound, then released). */
export function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const address = srv.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Waits until `check` returns true, polling every `intervalMs` (for broker state that lags). */
export async function eventually(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 20_000,
  intervalMs = 250,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
