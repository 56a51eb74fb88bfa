// Summarises a V8 CPU profile (.cpuprofile, from `node --cpu-prof` or the inspector): self time
// by function and by package, so "where does the time go" has a short answer.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** The parts of a V8 CPU profile this summary reads. */
export interface CpuProfile {
  readonly nodes: readonly {
    readonly id: number;
    readonly callFrame: {
      readonly functionName: string;
      readonly url: string;
      readonly lineNumber: number;
    };
    readonly children?: readonly number[];
  }[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** Where a script URL belongs: `packages/core`, `node_modules/amqplib`, `node:internal`… */
export function bucketOf(url: string): string {
  if (url === "") return "(native / V8)";
  if (url.startsWith("node:")) return "node: (runtime)";
  let path = url;
  if (url.startsWith("file://")) path = fileURLToPath(url);
  const nm = path.lastIndexOf("/node_modules/");
  if (nm >= 0) {
    const rest = path.slice(nm + "/node_modules/".length).split("/");
    const pkg = rest[0]?.startsWith("@") ? `${rest[0]}/${rest[1] ?? ""}` : (rest[0] ?? "?");
    return `node_modules/${pkg}`;
  }
  const m = /\/(packages\/[^/]+|bench|integration-tests)\//.exec(path);
  return m?.[1] ?? path;
}

function shortUrl(url: string): string {
  const i = url.search(/\/(packages|node_modules|bench)\//);
  return i >= 0 ? url.slice(i + 1) : url.replace(/^file:\/\//, "");
}

/** Self time per function and per package, as text tables (percent of all samples). */
export function summariseProfile(
  profile: CpuProfile,
  options: { readonly top?: number } = {},
): string {
  const top = options.top ?? 25;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
    total += dt;
  });
  const byFunction = new Map<string, number>();
  const byBucket = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (n === undefined) continue;
    const f = n.callFrame;
    const name = f.functionName === "" ? "(anonymous)" : f.functionName;
    // Under tsx the transformed sources report line 1 everywhere: print a line only when known.
    const where =
      f.url === ""
        ? ""
        : `  ${shortUrl(f.url)}${f.lineNumber > 0 ? `:${String(f.lineNumber + 1)}` : ""}`;
    const key = `${name}${where}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
    const bucket = f.url === "" && name.startsWith("(") ? name : bucketOf(f.url);
    byBucket.set(bucket, (byBucket.get(bucket) ?? 0) + us);
  }
  const pct = (us: number): string => `${((us / total) * 100).toFixed(1).padStart(5)} %`;
  const lines = [`self time by package (${(total / 1e6).toFixed(2)} s sampled):`];
  for (const [k, us] of [...byBucket].sort((a, b) => b[1] - a[1])) lines.push(`  ${pct(us)}  ${k}`);
  lines.push("", `top ${String(top)} functions by self time:`);
  for (const [k, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    lines.push(`  ${pct(us)}  ${k}`);
  }
  // Inclusive time of our own functions (self + everything they call), counted once per stack
  // even when a function recurses: says which nuropb entry points the time is spent under.
  const inclusive = new Map<string, number>();
  const walk = (id: number, onStack: ReadonlySet<string>): number => {
    const n = byId.get(id);
    if (n === undefined) return 0;
    let sum = selfUs.get(id) ?? 0;
    const f = n.callFrame;
    const ours = /\/packages\//.test(f.url);
    const key = `${f.functionName === "" ? "(anonymous)" : f.functionName}  ${shortUrl(f.url)}`;
    const stack = ours && !onStack.has(key) ? new Set([...onStack, key]) : onStack;
    for (const c of n.children ?? []) sum += walk(c, stack);
    if (ours && !onStack.has(key)) inclusive.set(key, (inclusive.get(key) ?? 0) + sum);
    return sum;
  };
  const root = profile.nodes[0];
  if (root !== undefined) walk(root.id, new Set());
  lines.push("", `top ${String(top)} nuropb functions (packages/*) by inclusive time:`);
  for (const [k, us] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    lines.push(`  ${pct(us)}  ${k}`);
  }
  return lines.join("\n");
}

// As a program: summarise a profile file (e.g. one written by `node --cpu-prof`). Checked by
// file name, because the compiled tools bundle this module into profile.mjs too.
if (/profile-summary\.(ts|mjs|js)$/.test(process.argv[1] ?? "")) {
  const file = process.argv[2];
  if (file === undefined) {
    console.error("usage: profile-summary.ts FILE.cpuprofile [top]");
    process.exitCode = 2;
  } else {
    const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
    console.log(summariseProfile(profile, { top: Number(process.argv[3] ?? 30) }));
  }
}
