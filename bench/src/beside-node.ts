import { execFileSync, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { formatInt, formatPercent, median, printResult } from "./suite.ts";
import type { SuiteResult } from "./suite.ts";

// `--beside-node <line>`: after the suites ran in this process, the same suites run three times
// more, each in a fresh process: twice under another Node.js line (from the npm registry,
// scripts/node-line.sh), then once more under this process's Node. The lines thus run in the
// order A B B A, so that load from other work that rises or falls during the runs weighs on
// both alike. Each run prints its own tables; then one table sets each case's throughput on
// both lines side by side (the mean of each line's two runs, and both runs).

/** What a run hands to the run that started it: its Node version and each suite's result. */
interface RunResults {
  readonly node: string;
  readonly suites: Readonly<Record<string, SuiteResult>>;
}

/** Set by the parent run: the file the child run writes its {@link RunResults} to (JSON). */
const RESULTS_FILE_ENV = "NUROPB_BENCH_RESULTS";

/** In a run started by {@link runBesideNode}: writes this run's results for the parent. */
export async function writeResultsForParent(
  suites: Readonly<Record<string, SuiteResult>>,
): Promise<void> {
  const file = process.env[RESULTS_FILE_ENV];
  if (file === undefined) return;
  const results: RunResults = { node: process.version, suites };
  await writeFile(file, JSON.stringify(results));
}

/**
 * Runs this bench three times more (same loader flags, same arguments): twice under Node.js
 * major line `line`, then once under this Node; then prints each case's throughput on both
 * lines side by side. `suites` are this process's results. Resolves with the worst exit status
 * of the three runs.
 */
export async function runBesideNode(
  line: string,
  args: readonly string[],
  suites: Readonly<Record<string, SuiteResult>>,
): Promise<number> {
  const other = path.join(
    execFileSync("bash", [nodeLineScript(), line], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
    }).trim(),
    "node",
  );
  const runs: RunResults[] = [{ node: process.version, suites }];
  let status = 0;
  for (const node of [other, other, process.execPath]) {
    const run = await runUnder(node, args);
    status = Math.max(status, run.status);
    if (run.results === undefined) return status === 0 ? 1 : status;
    runs.push(run.results);
  }
  printBeside(runs);
  return status;
}

/** One more run of this bench in a child process under the Node binary `node`. */
async function runUnder(
  node: string,
  args: readonly string[],
): Promise<{ status: number; results?: RunResults }> {
  const entry = process.argv[1];
  if (entry === undefined) throw new Error("cannot tell which script this bench runs from");
  const file = path.join(os.tmpdir(), `nuropb-bench-${String(process.pid)}-${randomUUID()}.json`);
  console.log(`\n# the same suites again, by ${node}`);
  const status = await new Promise<number>((resolve, reject) => {
    const child = spawn(node, [...process.execArgv, entry, ...args], {
      stdio: "inherit",
      env: { ...process.env, [RESULTS_FILE_ENV]: file },
    });
    child.once("error", reject);
    child.once("exit", (code, signal) => resolve(code ?? (signal === null ? 1 : 130)));
  });
  try {
    return { status, results: JSON.parse(await readFile(file, "utf8")) as RunResults };
  } catch {
    console.error(`the run by ${node} left no results (exit status ${String(status)})`);
    return { status };
  } finally {
    await rm(file, { force: true });
  }
}

/** The repository's scripts/node-line.sh, looked for above this file (src/ or a bundle). */
function nodeLineScript(): string {
  const start = path.dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = path.dirname(dir)) {
    const script = path.join(dir, "scripts", "node-line.sh");
    if (existsSync(script)) return script;
    if (path.dirname(dir) === dir) throw new Error(`no scripts/node-line.sh above ${start}`);
  }
}

/** The table of each case's throughput on both lines, matched by suite and by the columns
 * before the first `…/s` column (case, c, params). */
function printBeside(runs: readonly RunResults[]): void {
  const mine = runs.filter((r) => r.node === process.version);
  const theirs = runs.filter((r) => r.node !== process.version);
  const [first] = mine;
  const [otherNode] = theirs.map((r) => r.node);
  if (first === undefined || otherNode === undefined) return;
  const rows: string[][] = [];
  const ratios: number[] = [];
  for (const [name, result] of Object.entries(first.suites)) {
    const at = result.columns.findIndex((c) => c.includes("/s"));
    if (at < 0) continue;
    const key = (row: readonly string[]): string => row.slice(0, at).join(" ").trim();
    /** This case's figure in each of `of`'s runs (undefined where it is missing). */
    const figures = (of: readonly RunResults[], row: readonly string[]): number[] | undefined => {
      const found: number[] = [];
      for (const run of of) {
        const r = run.suites[name];
        if (r === undefined || r.columns[at] !== result.columns[at]) return undefined;
        const n = figure(r.rows.find((x) => key(x) === key(row))?.[at]);
        if (n === undefined) return undefined;
        found.push(n);
      }
      return found;
    };
    for (const row of result.rows) {
      const here = figures(mine, row);
      const there = figures(theirs, row);
      if (here === undefined || there === undefined) continue;
      const ratio = mean(there) / mean(here);
      ratios.push(ratio);
      rows.push([
        `${name}: ${key(row)}`,
        result.columns[at] ?? "",
        formatInt(mean(here)),
        here.map(formatInt).join(" / "),
        formatInt(mean(there)),
        there.map(formatInt).join(" / "),
        formatPercent(ratio),
      ]);
    }
  }
  printResult(
    {
      name: "beside",
      description: `each case's throughput under node ${first.node} and node ${otherNode}, same machine, runs in the order ${first.node}, ${otherNode}, ${otherNode}, ${first.node}`,
      run: () => Promise.reject(new Error("a table only")),
    },
    {
      columns: [
        "case",
        "figure",
        first.node,
        "runs 1 / 4",
        otherNode,
        "runs 2 / 3",
        `${otherNode} / ${first.node}`,
      ],
      rows,
      notes: [
        "each line's figure is the mean of its two runs; each run had its own warm-up and rounds (the tables above)",
        "the runs were tens of seconds apart: where a line's two runs differ much, the machine's load changed meanwhile",
      ],
      comparison:
        ratios.length === 0
          ? "no case ran on both lines"
          : `node ${otherNode} = ${formatPercent(median(ratios))} of node ${first.node}'s throughput (median over ${String(ratios.length)} cases)`,
    },
  );
}

function mean(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** A formatted figure ("561,897") as a number; undefined when the cell holds none. */
function figure(cell: string | undefined): number | undefined {
  const n = Number(cell?.replaceAll(",", ""));
  return cell === undefined || !Number.isFinite(n) || n <= 0 ? undefined : n;
}
