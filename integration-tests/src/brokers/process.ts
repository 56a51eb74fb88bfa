import { spawn, type ChildProcess } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createServer } from "node:net";

// Launching a broker binary as a child process, shared by the NATS and Redis harnesses.

/** How to launch a broker binary and tell when it is ready. */
export interface BrokerLaunchSpec {
  /** Human name for messages, e.g. "NATS". */
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  /** A line on stdout/stderr that says the server accepts connections. */
  readonly readyLine: RegExp;
  /** What to run when the binary is missing. */
  readonly installHint: string;
  /** How long to wait for the ready line; default 20 s. */
  readonly readyTimeoutMs?: number;
}

/** A broker process the tests control: kill it, start it again on the same port and directory. */
export interface BrokerProcess {
  /** Pid of the current process (changes after `restart`). */
  readonly pid: number;
  /** The command line, `[command, ...args]`. */
  readonly argv: readonly string[];
  /** True while the process runs. */
  readonly running: boolean;
  /** Sends `signal` (default SIGKILL) and waits for the process to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the same command line again (after `kill`) and waits until it is ready. */
  start(): Promise<void>;
  /** Kill (if running) then start. */
  restart(signal?: NodeJS.Signals): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Never leave a broker behind when the test process dies without running its teardown.
  process.once("exit", () => {
    for (const child of live) child.kill("SIGKILL");
  });
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Launches a broker binary and resolves once it printed its ready line. */
export async function launchBroker(spec: BrokerLaunchSpec): Promise<BrokerProcess> {
  installExitHook();
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const startOnce = (): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const proc = spawn(spec.command, [...spec.args], { stdio: ["ignore", "pipe", "pipe"] });
      child = proc;
      live.add(proc);
      let tail = "";
      let ready = false;
      const timer = setTimeout(() => {
        fail(
          new Error(
            `${spec.name} did not become ready within ${spec.readyTimeoutMs ?? 20_000} ms:\n${tail}`,
          ),
        );
      }, spec.readyTimeoutMs ?? 20_000);
      const fail = (err: Error): void => {
        clearTimeout(timer);
        if (!ready) {
          ready = true;
          proc.kill("SIGKILL");
          reject(err);
        }
      };
      const onData = (chunk: Buffer): void => {
        if (ready) return;
        tail = (tail + chunk.toString("utf8")).slice(-4000);
        if (spec.readyLine.test(tail)) {
          ready = true;
          clearTimeout(timer);
          // Keep draining the pipes so a chatty broker never blocks on a full pipe.
          resolve();
        }
      };
      proc.stdout?.on("data", onData);
      proc.stderr?.on("data", onData);
      exited = new Promise<void>((done) => {
        proc.once("exit", (code, signal) => {
          live.delete(proc);
          fail(
            new Error(
              `${spec.name} exited (code ${code}, signal ${signal}) before it was ready:\n${tail}`,
            ),
          );
          done();
        });
      });
      proc.once("error", (err: NodeJS.ErrnoException) => {
        live.delete(proc);
        fail(
          err.code === "ENOENT"
            ? new Error(
                `${spec.command} is not installed (${spec.name}). Install it with: ${spec.installHint}`,
              )
            : err,
        );
      });
    });

  const handle: BrokerProcess = {
    get pid() {
      return child?.pid ?? -1;
    },
    argv: [spec.command, ...spec.args],
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    async kill(signal = "SIGKILL") {
      if (!handle.running) return;
      child?.kill(signal);
      await exited;
    },
    async start() {
      if (handle.running) throw new Error(`${spec.name} is already running`);
      await startOnce();
    },
    async restart(signal = "SIGKILL") {
      await handle.kill(signal);
      await startOnce();
    },
  };
  await startOnce();
  return handle;
}

/** Stops a broker gracefully (SIGTERM, then SIGKILL after 5 s). */
export async function stopBroker(proc: BrokerProcess): Promise<void> {
  if (!proc.running) return;
  const timer = setTimeout(() => void proc.kill("SIGKILL"), 5_000);
  await proc.kill("SIGTERM");
  clearTimeout(timer);
}

/**
 * Kills the process named in `pidFile` if it still runs: a test may have restarted a shared broker
 * from its own worker, and that process must not outlive the run.
 */
export async function killPidFile(pidFile: string, marker: string): Promise<void> {
  let pid: number;
  try {
    pid = Number.parseInt((await readFile(pidFile, "utf8")).trim(), 10);
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || pid <= 0) return;
  try {
    // Only a process started with our own directory on its command line (pids get reused).
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8");
    if (!cmdline.includes(marker)) return;
  } catch {
    return;
  }
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}
