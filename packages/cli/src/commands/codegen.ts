import { writeFile } from "node:fs/promises";
import type { JSONSchema, ServiceDescription } from "@nuropb/core";
import { compile } from "json-schema-to-typescript";
import { brokerUrl, milliseconds, serviceName } from "../args.ts";
import { CliError, ExitCode } from "../errors.ts";
import { openSession } from "../session.ts";
import { DEFAULT_CALL_TTL_MS } from "./call.ts";
import { connectTimeoutOf, type CommandContext } from "./context.ts";

/** Options of `nuropb codegen`. */
export interface CodegenOptions {
  /** `--out`: the file to write; standard output when absent. */
  readonly out?: string;
  /** `--ttl`: how long to wait for each description, in milliseconds, as typed. */
  readonly ttl?: string;
}

const ROOT = "NuropbCodegenRoot";
const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** `get_orders` / `get-orders` / `getOrders` → `GetOrders`. */
function pascal(name: string): string {
  const words = name.split(/[^A-Za-z0-9]+/).filter((w) => w !== "");
  const joined = words.map((w) => (w[0] ?? "").toUpperCase() + w.slice(1)).join("");
  return /^[0-9]/.test(joined) || joined === "" ? `N${joined}` : joined;
}

/** `getOrders` → `getOrders`, `get-orders` → `"get-orders"`: a property name in TypeScript. */
function key(name: string): string {
  return IDENTIFIER.test(name) ? name : JSON.stringify(name);
}

/** Text safe inside a `/** … *\/` comment. */
function doc(text: string | null | undefined, indent = ""): string {
  if (text === null || text === undefined || text.trim() === "") return "";
  const lines = text.trim().replaceAll("*/", "*\\/").split("\n");
  return `${indent}/**\n${lines.map((l) => `${indent} * ${l}`.trimEnd()).join("\n")}\n${indent} */\n`;
}

/**
 * A schema copy for the combined root: `title` set to `name`, `$ref`s into its own document
 * re-pointed below `#/$defs/{name}`, and `$ref`s outside it (a URL, a file) dropped, so
 * generating never fetches anything a description names.
 */
function rehome(schema: unknown, name: string, dropped: string[]): unknown {
  const walk = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(walk);
    if (typeof v !== "object" || v === null) return v;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      if (k === "$ref" && typeof x === "string") {
        if (x === "#" || x.startsWith("#/")) out[k] = `#/$defs/${name}${x.slice(1)}`;
        else dropped.push(x);
        continue;
      }
      if (k === "$id" || k === "$schema") continue;
      out[k] = walk(x);
    }
    return out;
  };
  const copy = walk(schema) as Record<string, unknown>;
  return { ...copy, title: name };
}

/** One method's generated names. */
interface MethodTypes {
  readonly method: string;
  readonly params: string;
  readonly result: string | undefined;
  readonly description: string | null;
  readonly requiresEncryption: boolean;
}

/**
 * A TypeScript module for `descriptions`: the params and result types of every method (from
 * their JSON Schemas, by json-schema-to-typescript), one interface per service, and a typed
 * proxy factory per service that takes any caller with `request(service, method, params)` — a
 * core client or service, or a gateway client.
 * @throws Error when a schema cannot be turned into types.
 */
export async function generateModule(
  descriptions: readonly { readonly name: string; readonly description: ServiceDescription }[],
  settings: { readonly command: string } = { command: "nuropb codegen" },
): Promise<{ readonly source: string; readonly droppedRefs: readonly string[] }> {
  const defs: Record<string, unknown> = {};
  const dropped: string[] = [];
  const services: { name: string; type: string; d: ServiceDescription; methods: MethodTypes[] }[] =
    [];
  const taken = new Set<string>([ROOT, "NuropbCaller"]);
  const unique = (base: string): string => {
    let n = base;
    for (let i = 2; taken.has(n); i++) n = `${base}${String(i)}`;
    taken.add(n);
    return n;
  };
  for (const { name, description: d } of descriptions) {
    const type = unique(pascal(name));
    const methods: MethodTypes[] = [];
    for (const [method, m] of Object.entries(d.methods).sort(([a], [b]) => a.localeCompare(b))) {
      const base = `${type}${pascal(method)}`;
      const params = unique(`${base}Params`);
      defs[params] = rehome(m.parameters as JSONSchema, params, dropped);
      let result: string | undefined;
      if (m.result !== undefined) {
        result = unique(`${base}Result`);
        defs[result] = rehome(m.result, result, dropped);
      }
      methods.push({
        method,
        params,
        result,
        description: m.description,
        requiresEncryption: m.requires_encryption,
      });
    }
    services.push({ name, type, d, methods });
  }
  const root = {
    title: ROOT,
    type: "object",
    additionalProperties: false,
    properties: {},
    $defs: defs,
  };
  let types = await compile(root as never, ROOT, {
    bannerComment: "",
    unreachableDefinitions: true,
    format: true,
    $refOptions: { resolve: { http: false, file: false } } as never,
  });
  types = types
    .replace(new RegExp(`export interface ${ROOT} \\{\\s*\\}\\n?`), "")
    .replace(
      /\/\*\*\n \* This interface was referenced by `NuropbCodegenRoot`'s JSON-Schema\n \* via the `definition` "[^"]*"\.\n \*\/\n/g,
      "",
    );

  const out: string[] = [
    `// Generated by \`${settings.command}\` from the services' live descriptions (nuropb_describe).`,
    "// Do not edit: run the command again when a service changes.",
    "/* eslint-disable */",
    "",
    types.trim(),
    "",
    "/** What a typed proxy calls through: a core client or service, or a gateway client. */",
    "export interface NuropbCaller {",
    "  request(service: string, method: string, params?: Readonly<Record<string, unknown>>): Promise<unknown>;",
    "}",
  ];
  for (const s of services) {
    out.push("");
    out.push(
      doc(
        [
          `The \`${s.name}\` service${s.d.service_version === null ? "" : ` (version ${s.d.service_version})`}.`,
          s.d.description ?? "",
        ]
          .filter((x) => x !== "")
          .join("\n"),
      ).trimEnd(),
    );
    out.push(`export interface ${s.type} {`);
    for (const m of s.methods) {
      const note = m.requiresEncryption ? "Requires encryption (the caller seals the call)." : "";
      const text = [m.description ?? "", note].filter((x) => x !== "").join("\n");
      out.push(
        `${doc(text, "  ")}  ${key(m.method)}(params: ${m.params}): Promise<${m.result ?? "unknown"}>;`,
      );
    }
    out.push("}");
    out.push("");
    out.push(`/** The name of the \`${s.name}\` service on the mesh. */`);
    out.push(`export const ${s.type}ServiceName = ${JSON.stringify(s.name)};`);
    out.push("");
    out.push(`/** A typed proxy of \`${s.name}\`: each method is a request through \`caller\`. */`);
    out.push(
      `export function ${s.type[0]?.toLowerCase() ?? ""}${s.type.slice(1)}Proxy(caller: NuropbCaller): ${s.type} {`,
    );
    out.push("  return {");
    for (const m of s.methods) {
      out.push(
        `    ${key(m.method)}: (params) => caller.request(${JSON.stringify(s.name)}, ${JSON.stringify(m.method)}, params as unknown as Readonly<Record<string, unknown>>) as Promise<${m.result ?? "unknown"}>,`,
      );
    }
    out.push("  };");
    out.push("}");
  }
  return { source: `${out.join("\n")}\n`, droppedRefs: dropped };
}

/**
 * `nuropb codegen <service…>`: describes each service on the mesh and writes a TypeScript
 * module of their types and typed proxies (to `--out`, or standard output).
 */
export async function codegenCommand(
  cx: CommandContext,
  names: readonly string[],
  opts: CodegenOptions,
): Promise<ExitCode> {
  for (const n of names) serviceName(n);
  const unique = [...new Set(names)];
  const ttlMs = opts.ttl === undefined ? DEFAULT_CALL_TTL_MS : milliseconds(opts.ttl, "--ttl");
  const connectTimeoutMs = connectTimeoutOf(cx);
  const broker = cx.useBroker(brokerUrl(cx.globals.url, cx.io.env));
  const { output } = cx;
  const session = await output.spin(`connecting to ${broker.shown}`, () =>
    openSession(broker, { connectTimeoutMs }, cx.createTransport),
  );
  let descriptions: { name: string; description: ServiceDescription }[];
  try {
    descriptions = await output.spin(`describing ${unique.join(", ")}`, () =>
      Promise.all(
        unique.map(async (name) => ({
          name,
          description: await session.client.describeService(name, { refresh: true, ttlMs }),
        })),
      ),
    );
  } finally {
    await session.close();
  }
  let generated;
  try {
    generated = await generateModule(descriptions, {
      command: `nuropb codegen ${unique.join(" ")}`,
    });
  } catch (err) {
    throw new CliError(
      `cannot turn the descriptions into types: ${(err as Error).message}`,
      ExitCode.remote,
      { cause: err },
    );
  }
  for (const ref of generated.droppedRefs) {
    output.note(`note: left out the external $ref ${JSON.stringify(ref)} (typed as unknown)`);
  }
  if (opts.out === undefined) {
    output.data(generated.source);
  } else {
    await writeFile(opts.out, generated.source, "utf8");
    output.note(`wrote ${opts.out} (${String(descriptions.length)} service(s))`);
  }
  return ExitCode.ok;
}
