import { execFile, spawn } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

// The `nuropb` command as a clone gets it: npm links node_modules/.bin/nuropb to the committed
// shim bin/nuropb.js at install time (a bin in dist/ did not exist yet then, so npm linked
// nothing), and the shim starts the built dist/main.js. Tests run from source, so this one needs
// a build: CI builds before testing; locally run `npm run build` first.
const exec = promisify(execFile);
const cliDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const rootDir = resolve(cliDir, "../..");
const shim = join(cliDir, "bin/nuropb.js");

describe("the nuropb bin", () => {
  it("is the committed, executable shim (npm can link it before any build)", () => {
    const pkg = JSON.parse(readFileSync(join(cliDir, "package.json"), "utf8")) as {
      bin: Record<string, string>;
      files: string[];
    };
    expect(pkg.bin).toEqual({ nuropb: "./bin/nuropb.js" });
    expect(pkg.files).toContain("bin");
    expect(statSync(shim).mode & 0o111).not.toBe(0);
    expect(readFileSync(shim, "utf8").startsWith("#!/usr/bin/env node\n")).toBe(true);
  });

  it("node_modules/.bin/nuropb --help prints the usage of the built CLI", async () => {
    if (!existsSync(join(cliDir, "dist/main.js"))) {
      throw new Error(
        "packages/cli/dist/main.js is missing: run `npm run build` before this test (CI builds before testing)",
      );
    }
    const linked = join(rootDir, "node_modules/.bin/nuropb");
    expect(existsSync(linked), `${linked} is missing: run npm install (or npm ci)`).toBe(true);
    const { stdout } = await exec(linked, ["--help"], { env: { ...process.env, NO_COLOR: "1" } });
    expect(stdout).toMatch(/^Usage: nuropb \[options\] \[command\]\n/);
    expect(stdout).toContain("call [options] <service> <method> [params-json]");
    expect(stdout).toContain("Exit codes: 0 ok, 2 usage error");
  });

  it("a reader that closes the pipe early ends it quietly (no EPIPE crash)", async () => {
    if (!existsSync(join(cliDir, "dist/main.js"))) {
      throw new Error(
        "packages/cli/dist/main.js is missing: run `npm run build` before this test (CI builds before testing)",
      );
    }
    // As `nuropb --help | head -0`: the reading end is closed before the CLI writes.
    const child = spawn(process.execPath, [shim, "--help"], {
      env: { ...process.env, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout.destroy();
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((r) => child.on("close", (c) => r(c)));
    expect(stderr).toBe("");
    expect(code).toBe(0);
  });

  it("without a build, says to run npm run build and exits 1", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nuropb-bin-"));
    try {
      mkdirSync(join(dir, "bin"));
      copyFileSync(shim, join(dir, "bin/nuropb.js"));
      copyFileSync(join(cliDir, "package.json"), join(dir, "package.json"));
      const run = exec(process.execPath, [join(dir, "bin/nuropb.js"), "--help"]);
      const err = (await run.catch((e: unknown) => e)) as { code?: number; stderr?: string };
      expect(err.code).toBe(1);
      expect(err.stderr).toBe(
        `nuropb: the CLI is not built (${join(dir, "dist/main.js")} is missing): run npm run build first (in the repository root)\n`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
