import { existsSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { Logger, Transport } from "@nuropb/protocol";
import type { RunnerOptions } from "./options.ts";

/** Runner options as a module gives them: the transport may come from whoever loads it. */
export type RunnerModuleOptions = Omit<RunnerOptions, "transport"> & {
  readonly transport?: RunnerOptions["transport"];
};

/** What a runner module's function gets from whoever loads it (`nuropb run`, say). */
export interface RunnerModuleContext {
  /** Makes a transport from the loader's settings (`nuropb run --url`), when it has some. */
  readonly createTransport?: () => Transport;
  /** The loader's logger. */
  readonly logger?: Logger;
}

/** What a runner module exports as default (or as `runner`). */
export type RunnerModule =
  | RunnerModuleOptions
  | ((context: RunnerModuleContext) => RunnerModuleOptions | Promise<RunnerModuleOptions>);

/**
 * Types a runner module's export; returns it unchanged.
 * @example
 * // orders.runner.ts, started with `nuropb run ./orders.runner.js --url nats://localhost:4222`
 * export default defineRunner(({ logger }) => ({
 *   services: [({ transport }) => createService({ transport, name: "orders", instance: new Orders(), logger })],
 * }));
 */
export function defineRunner<TModule extends RunnerModule>(module: TModule): TModule {
  return module;
}

/**
 * Imports a runner module (a file, relative to `cwd`, or else a package name) and resolves its options:
 * the default export (or the `runner` export), called with `context` when it is a function. A
 * module without a `transport` takes `context.createTransport`.
 * @throws TypeError when the module exports no runner, or neither it nor `context` gives a transport.
 * @throws what importing the module threw.
 */
export async function loadRunnerModule(
  specifier: string,
  context: RunnerModuleContext = {},
  cwd: string = process.cwd(),
): Promise<RunnerOptions> {
  if (typeof specifier !== "string" || specifier === "") {
    throw new TypeError("loadRunnerModule: the module must be a non-empty path or package name");
  }
  // A file there is a path (`orders.runner.js` too); anything else is a package name.
  const isPath =
    specifier.startsWith(".") || isAbsolute(specifier) || existsSync(resolve(cwd, specifier));
  const url = isPath ? pathToFileURL(resolve(cwd, specifier)).href : specifier;
  const ns = (await import(url)) as { default?: unknown; runner?: unknown };
  const exported = ns.default ?? ns.runner;
  if (
    exported === undefined ||
    exported === null ||
    (typeof exported !== "object" && typeof exported !== "function")
  ) {
    throw new TypeError(
      `${specifier} exports no runner: export default defineRunner({ services: [...] }) (or a function returning the options)`,
    );
  }
  const options =
    typeof exported === "function"
      ? await (exported as (c: RunnerModuleContext) => unknown)(context)
      : exported;
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`${specifier}: the runner function must return the runner options`);
  }
  const given = options as RunnerModuleOptions;
  const transport = given.transport ?? context.createTransport;
  if (transport === undefined) {
    throw new TypeError(
      `${specifier} gives no transport: add transport: () => createXTransport(...) to its options, or pass a broker URL`,
    );
  }
  return {
    ...given,
    transport,
    ...(given.logger === undefined && context.logger !== undefined
      ? { logger: context.logger }
      : {}),
  };
}
