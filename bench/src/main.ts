import os from "node:os";
import { performance } from "node:perf_hooks";
import { runBesideNode, writeResultsForParent } from "./beside-node.ts";
import { stopBrokers } from "./brokers.ts";
import { amqpSuite } from "./suites/amqp.ts";
import { amqpPersistenceSuite } from "./suites/amqp-persistence.ts";
import { clusterSuite } from "./suites/cluster.ts";
import { codecSuite } from "./suites/codec.ts";
import { cryptoSuite } from "./suites/crypto.ts";
import { eventLogSuite } from "./suites/event-log.ts";
import { gatewaySuite } from "./suites/gateway.ts";
import { memorySuite } from "./suites/memory.ts";
import { natsSuite } from "./suites/nats.ts";
import { pathologicalSuite } from "./suites/pathological.ts";
import { pipelineSuite } from "./suites/pipeline.ts";
import { redisSuite } from "./suites/redis.ts";
import { printResult } from "./suite.ts";
import type { BenchSuite, SuiteResult } from "./suite.ts";

// The registry: add a suite here (one file per suite under ./suites/) and it can be run by name.
const SUITES: readonly BenchSuite[] = [
  codecSuite,
  memorySuite,
  amqpSuite,
  amqpPersistenceSuite,
  clusterSuite,
  natsSuite,
  redisSuite,
  cryptoSuite,
  pathologicalSuite,
  pipelineSuite,
  gatewaySuite,
  eventLogSuite,
];

function usage(): string {
  return [
    "usage: npm run bench [-- [--strict] [--beside-node <line>] <suite> ...]   (no names: every suite)",
    "       npm run bench -- --list",
    "",
    "  --strict              exit 1 when a suite misses its target (default: report it, exit 0)",
    "  --beside-node <line>  then run the same suites under Node.js <line> (e.g. 24, from the npm",
    "                        registry) and print each case's throughput on both lines side by side",
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
  const besideAt = args.indexOf("--beside-node");
  const besideLine = besideAt < 0 ? undefined : args[besideAt + 1];
  if (besideAt >= 0 && !/^[0-9]+$/.test(besideLine ?? "")) {
    console.error(`--beside-node needs a Node.js major line, e.g. 24\n\n${usage()}`);
    return 2;
  }
  const names = args.filter(
    (a, i) => a !== "--strict" && (besideAt < 0 || (i !== besideAt && i !== besideAt + 1)),
  );
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
  const results: Record<string, SuiteResult> = {};
  try {
    for (const suite of picked) {
      try {
        const t0 = performance.now();
        const result = await withDeadline(suite.run(), SUITE_DEADLINE_MS, suite.name);
        printResult(suite, result);
        results[suite.name] = result;
        console.log(`(${suite.name}: ${((performance.now() - t0) / 1000).toFixed(0)} s)`);
        if (result.ok === false) missed.push(suite.name);
      } catch (err) {
        if (interrupted) break; // Ctrl-C stopped the brokers under the suite: not a finding
        crashed.push(suite.name);
        console.error(`\n## ${suite.name}: FAILED\n`, err);
      }
    }
  } finally {
    // Brokers are started on first use by the suites that need them; stop them whatever happened.
    await stopBrokers();
  }
  await writeResultsForParent(results);
  if (missed.length > 0) console.log(`\ntarget missed: ${missed.join(", ")}`);
  if (crashed.length > 0) console.log(`\nFAILED: ${crashed.join(", ")}`);
  const status = crashed.length > 0 || (strict && missed.length > 0) ? 1 : 0;
  if (besideLine === undefined || interrupted) return status;
  const other = await runBesideNode(
    besideLine,
    [...(strict ? ["--strict"] : []), ...names],
    results,
  );
  return Math.max(status, other);
}

/** A suite that has not finished after this long has hung (each is meant to take well under a minute). */
const SUITE_DEADLINE_MS = 180_000;

function withDeadline<T>(p: Promise<T>, ms: number, name: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`suite ${name} did not finish within ${String(ms / 1000)} s`)),
      ms,
    );
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

// Ctrl-C / kill: stop the brokers this run started before leaving.
let interrupted = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\n${signal}: stopping brokers…`);
    void stopBrokers().finally(() => process.exit(130));
  });
}

process.exitCode = await main(process.argv.slice(2));
// A suite that timed out may leave connections behind; do not hang on them.
setTimeout(() => {
  console.error("bench: handles still open after the run; exiting");
  process.exit();
}, 2_000).unref();
