import { spawn } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { RunnerExitCode } from "@nuropb/runner";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../../..");

interface ChildRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs the child, sends SIGTERM once its handler runs (and again once it drains, with `twice`),
 * and collects what it printed.
 */
function runChild(env: Record<string, string>, twice = false): Promise<ChildRun> {
  const child = spawn(
    process.execPath,
    ["--conditions=@nuropb/source", "--import", "tsx", join(here, "fixtures/sigterm-child.ts")],
    { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let stdout = "";
  let stderr = "";
  let signalled = 0;
  child.stdout.on("data", (d: Buffer) => {
    stdout += d.toString();
    if (signalled === 0 && stdout.includes("handling\n")) {
      signalled = 1;
      child.kill("SIGTERM");
    }
    if (twice && signalled === 1 && stdout.includes('"msg":"draining"')) {
      signalled = 2;
      child.kill("SIGTERM");
    }
  });
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("runUntilSignalled in a real process", () => {
  it("finishes the call in flight on SIGTERM, answers it, then exits 0", async () => {
    const run = await runChild({ HANDLER_MS: "100" });
    expect(run.stderr).not.toMatch(/"level":"error"/);
    const lines = run.stdout.split("\n");
    expect(lines).toContain("answer finished");
    expect(lines).toContain("exit stopped");
    expect(lines.indexOf("answer finished")).toBeLessThan(lines.indexOf("exit stopped"));
    expect(run.stdout).toContain('"msg":"draining"');
    expect(run.code).toBe(RunnerExitCode.stopped);
  }, 30_000);

  it("stops at once on a second SIGTERM during the drain, exit code 130", async () => {
    const run = await runChild({ HANDLER_MS: "1500" }, true);
    expect(run.stdout.split("\n")).toContain("exit forced");
    expect(run.stdout).not.toContain("answer finished");
    expect(run.code).toBe(RunnerExitCode.forced);
  }, 30_000);

  it("exits with drainTimedOut when the handler outlives the drain bound", async () => {
    const run = await runChild({ HANDLER_MS: "2000", DRAIN_TIMEOUT_MS: "200" });
    expect(run.stdout.split("\n")).toContain("exit drain-timed-out");
    expect(run.stdout).not.toContain("answer finished");
    expect(run.code).toBe(RunnerExitCode.drainTimedOut);
  }, 30_000);
});
