import os from "node:os";
import { codecSuite } from "./suites/codec.ts";
import { printResult } from "./suite.ts";
import type { BenchSuite } from "./suite.ts";

// The registry: add a suite here (one file per suite under ./suites/) and it can be run by name.
const SUITES: readonly BenchSuite[] = [codecSuite];

function usage(): string {
  return [
    "usage: npm run bench [-- [--strict] <suite> ...]   (no names: every suite)",
    "       npm run bench -- --list",
    "",
    "  --strict   exit 1 when a suite misses its target (default: report it, exit 0)",
    "",
    "suites:",
    ...SUITES.map((s) => `  ${s.name.padEnd(12)} ${s.description}`),
  ].join("\n");
}

async function main(args: readonly string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(usage());
    return 0;
  }
  if (args.includes("--list")) {
    for (const s of SUITES) console.log(s.name);
    return 0;
  }
  const strict = args.includes("--strict");
  const names = args.filter((a) => a !== "--strict");
  const unknown = names.filter((name) => !SUITES.some((s) => s.name === name));
  if (unknown.length > 0) {
    console.error(`unknown suite(s): ${unknown.join(", ")}\n\n${usage()}`);
    return 2;
  }
  const picked = names.length === 0 ? SUITES : SUITES.filter((s) => names.includes(s.name));
  console.log(
    `# nuropb bench — node ${process.version}, ${process.platform}/${process.arch}, ${String(os.availableParallelism())} cpus, load ${os.loadavg()[0]?.toFixed(2) ?? "?"}, ${new Date().toISOString()}`,
  );
  const crashed: string[] = [];
  const missed: string[] = [];
  for (const suite of picked) {
    try {
      const result = await suite.run();
      printResult(suite, result);
      if (result.ok === false) missed.push(suite.name);
    } catch (err) {
      crashed.push(suite.name);
      console.error(`\n## ${suite.name}: FAILED\n`, err);
    }
  }
  if (missed.length > 0) console.log(`\ntarget missed: ${missed.join(", ")}`);
  if (crashed.length > 0) return 1;
  return strict && missed.length > 0 ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
