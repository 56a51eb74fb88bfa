import { spawn } from "node:child_process";
import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** The repository root; `../shared` beside it holds the unmodified Python NuroPb 0.1.8. */
const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** `PYTHONPATH` of the peer: the `src` folder of `../shared/nuropb-py`. */
export const NUROPB_PY_SRC = resolve(REPO_ROOT, "../shared/nuropb-py/src");
/** Debian's interpreter: another Python on the PATH may lack pika, tornado and cryptography. */
export const PYTHON = "/usr/bin/python3";
const INSTALL_HINT =
  "install the peer's modules with `apt-get install -y python3 python3-pika python3-tornado " +
  "python3-requests python3-cryptography` (or run scripts/install-test-deps.sh)";
const STDERR_TAIL_CHARS = 4_000;

/** A peer script of `integration-tests/python/`. */
export function pythonPeerScript(name: string): string {
  return fileURLToPath(new URL(`../python/${name}`, import.meta.url));
}

/** What the peer answered to one command: a value, or the Python exception it raised. */
export type PeerReply<TValue = unknown> =
  | { readonly ok: true; readonly value: TValue }
  | {
      readonly ok: false;
      readonly error: { readonly class: string; readonly description: string };
    };

/** A line the peer printed on its own: something one of its services received. */
export interface PeerRecord {
  readonly type: "record";
  readonly kind: string;
  readonly service: string;
  readonly [field: string]: unknown;
}

/** A running Python peer process (see `integration-tests/python/nuropb_peer.py`). */
export interface PythonPeer {
  /** The peer's `ready` line (instance ids, the client's response queue). */
  readonly ready: Readonly<Record<string, unknown>>;
  /** Every record printed so far, in order. */
  readonly records: readonly PeerRecord[];
  /**
   * Sends `{ op, ...args }` and resolves with the peer's reply. Bigints travel exactly.
   * @throws Error when no reply comes within `timeoutMs` or the process ends first.
   */
  call<TValue = unknown>(
    op: string,
    args?: Readonly<Record<string, unknown>>,
    timeoutMs?: number,
  ): Promise<PeerReply<TValue>>;
  /**
   * The first record (already printed or still to come) matching `predicate`.
   * @throws Error when none comes within `timeoutMs` or the process ends first.
   */
  waitForRecord(predicate: (r: PeerRecord) => boolean, timeoutMs?: number): Promise<PeerRecord>;
  /** What the process wrote to stderr (its last few KB). */
  stderr(): string;
  /** Asks the peer to disconnect and exit; kills it when it does not within 8 s. Idempotent. */
  stop(): Promise<void>;
}

/** Options of {@link startPythonPeer}. */
export interface PythonPeerOptions {
  /** Absolute path of the script (see {@link pythonPeerScript}). */
  readonly script: string;
  /** Handed to the script as JSON in `NUROPB_PEER_CONFIG` (never on the command line or in errors). */
  readonly config: Readonly<Record<string, unknown>>;
  /** How long the peer may take to print its `ready` line. @defaultValue 60000 */
  readonly readyTimeoutMs?: number;
}

/** JSON with bigints as `{"$int": "digits"}` (the peer's convention for exact integers). */
export function toPeerJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    typeof v === "bigint" ? { $int: v.toString() } : v,
  );
}

/** Non-finite floats as the peer tags them (strict JSON cannot carry them). */
const PEER_FLOATS: Readonly<Record<string, number>> = {
  nan: Number.NaN,
  inf: Number.POSITIVE_INFINITY,
  "-inf": Number.NEGATIVE_INFINITY,
};

/**
 * Parses a peer line, turning `{"$int": "digits"}` back into a bigint and
 * `{"$float": "nan" | "inf" | "-inf"}` into the number.
 */
export function fromPeerJson(text: string): unknown {
  return JSON.parse(text, (_key, v: unknown) => {
    if (typeof v === "object" && v !== null && !Array.isArray(v)) {
      const keys = Object.keys(v);
      const { $int: digits, $float: float } = v as { $int?: unknown; $float?: unknown };
      if (keys.length === 1 && typeof digits === "string") return BigInt(digits);
      if (keys.length === 1 && typeof float === "string" && Object.hasOwn(PEER_FLOATS, float))
        return PEER_FLOATS[float];
    }
    return v;
  });
}

interface Waiter {
  readonly settle: (err: Error | undefined, line?: Record<string, unknown>) => void;
}

/**
 * Starts a Python NuroPb peer (`/usr/bin/python3 script` with `PYTHONPATH` at
 * `../shared/nuropb-py/src`) and resolves once it prints its `ready` line.
 * @throws Error with the process's stderr (and how to install what it needs) when the
 *   interpreter, the library or the script is missing, or the peer exits or stays silent.
 */
export async function startPythonPeer(options: PythonPeerOptions): Promise<PythonPeer> {
  for (const [what, path] of [
    ["the Python interpreter", PYTHON],
    ["Python NuroPb (../shared/nuropb-py/src/nuropb)", resolve(NUROPB_PY_SRC, "nuropb")],
    ["the peer script", options.script],
  ] as const) {
    if (!existsSync(path)) {
      throw new Error(`Python peer cannot start: ${what} is missing at ${path}; ${INSTALL_HINT}`);
    }
  }
  const readyTimeoutMs = options.readyTimeoutMs ?? 60_000;
  const child: ChildProcessWithoutNullStreams = spawn(PYTHON, ["-u", options.script], {
    cwd: REPO_ROOT,
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      PYTHONPATH: NUROPB_PY_SRC,
      PYTHONIOENCODING: "utf-8",
      PYTHONDONTWRITEBYTECODE: "1",
      NUROPB_PEER_CONFIG: JSON.stringify(options.config),
    },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  let exit: string | undefined;
  const records: PeerRecord[] = [];
  const recordWatchers = new Set<() => void>();
  const replies = new Map<number, Waiter>();
  let readyWaiter: Waiter | undefined;
  let nextId = 1;
  let exited: () => void = () => {};
  const exitedPromise = new Promise<void>((r) => (exited = r));

  const describeExit = (): string =>
    `Python peer ${options.script} ${exit ?? "is running"}; stderr:\n${stderr.slice(-STDERR_TAIL_CHARS) || "(empty)"}`;

  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => {
    stderr = (stderr + chunk).slice(-4 * STDERR_TAIL_CHARS);
  });
  const lines = createInterface({ input: child.stdout, crlfDelay: Infinity });
  lines.on("line", (text) => {
    let line: Record<string, unknown>;
    try {
      line = fromPeerJson(text) as Record<string, unknown>;
    } catch {
      stderr += `\n[harness] unparsable stdout line: ${text.slice(0, 200)}`;
      return;
    }
    if (line.type === "ready") readyWaiter?.settle(undefined, line);
    else if (line.type === "reply" && typeof line.id === "number") {
      replies.get(line.id)?.settle(undefined, line);
    } else if (line.type === "record") {
      records.push(line as unknown as PeerRecord);
      for (const w of recordWatchers) w();
    } else stderr += `\n[harness] unexpected stdout line: ${text.slice(0, 200)}`;
  });
  const onGone = (why: string): void => {
    if (exit !== undefined) return;
    exit = why;
    const err = new Error(describeExit());
    readyWaiter?.settle(err);
    for (const w of replies.values()) w.settle(err);
    for (const w of recordWatchers) w();
    exited();
  };
  child.on("error", (err) => onGone(`could not be spawned (${err.message}); ${INSTALL_HINT}`));
  child.on("exit", (code, signal) => {
    // Let the last stderr and stdout lines arrive before failing what waits.
    setTimeout(() => onGone(`exited (code ${String(code)}, signal ${String(signal)})`), 50);
  });
  child.stdin.on("error", () => {}); // EPIPE after exit is reported through `exit`

  const ready = await new Promise<Record<string, unknown>>((resolveReady, reject) => {
    const timer = setTimeout(() => {
      readyWaiter = undefined;
      reject(new Error(`no ready line within ${readyTimeoutMs} ms. ${describeExit()}`));
    }, readyTimeoutMs);
    readyWaiter = {
      settle: (err, line) => {
        clearTimeout(timer);
        readyWaiter = undefined;
        if (err !== undefined) reject(err);
        else resolveReady(line ?? {});
      },
    };
  }).catch(async (err: unknown) => {
    child.kill("SIGKILL");
    await exitedPromise;
    throw err instanceof Error ? err : new Error(String(err));
  });

  let stopping: Promise<void> | undefined;
  const peer: PythonPeer = {
    ready,
    records,
    stderr: () => stderr.slice(-STDERR_TAIL_CHARS),
    call<TValue>(op: string, args: Readonly<Record<string, unknown>> = {}, timeoutMs = 30_000) {
      if (exit !== undefined) return Promise.reject(new Error(describeExit()));
      const id = nextId++;
      return new Promise<PeerReply<TValue>>((resolveCall, reject) => {
        const timer = setTimeout(() => {
          replies.delete(id);
          reject(new Error(`Python peer gave no reply to '${op}' within ${timeoutMs} ms`));
        }, timeoutMs);
        replies.set(id, {
          settle: (err, line) => {
            clearTimeout(timer);
            replies.delete(id);
            if (err !== undefined) reject(err);
            else resolveCall(line as unknown as PeerReply<TValue>);
          },
        });
        child.stdin.write(`${toPeerJson({ ...args, id, op })}\n`);
      });
    },
    waitForRecord(predicate, timeoutMs = 10_000) {
      return new Promise<PeerRecord>((resolveRecord, reject) => {
        const finish = (err: Error | undefined, r?: PeerRecord): void => {
          clearTimeout(timer);
          recordWatchers.delete(check);
          if (err !== undefined) reject(err);
          else resolveRecord(r as PeerRecord);
        };
        const check = (): void => {
          const found = records.find(predicate);
          if (found !== undefined) finish(undefined, found);
          else if (exit !== undefined) finish(new Error(describeExit()));
        };
        const timer = setTimeout(
          () =>
            finish(
              new Error(
                `Python peer printed no matching record within ${timeoutMs} ms; records: ${toPeerJson(records).slice(0, 2_000)}`,
              ),
            ),
          timeoutMs,
        );
        recordWatchers.add(check);
        check();
      });
    },
    stop() {
      stopping ??= (async () => {
        if (exit === undefined) {
          child.stdin.write(`${toPeerJson({ id: 0, op: "stop" })}\n`);
          child.stdin.end();
          const killer = setTimeout(() => child.kill("SIGKILL"), 8_000);
          await exitedPromise;
          clearTimeout(killer);
        }
      })();
      return stopping;
    },
  };
  return peer;
}
