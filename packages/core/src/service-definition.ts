import { Ajv, type ValidateFunction } from "ajv";
import { DESCRIBE_METHOD } from "@nuropb/protocol";
import { STATS_METHOD } from "./service-stats.ts";
import {
  checkMeshMethodOptions,
  meshOptionsOf,
  type JSONSchema,
  type MeshMethodOptions,
} from "./mesh-method.ts";
import { composeMiddleware, type MethodCall, type Pipeline } from "./middleware.ts";

/** Name of the instance method that receives events. */
export const EVENT_HOOK = "handleEvent";

/** Context key holding the bearer token when a method names no other (as in Python). */
export const DEFAULT_CONTEXT_TOKEN_KEY = "Authorization";

/** One method a service exposes. */
export interface MethodEntry {
  readonly name: string;
  readonly fn: (params: unknown, ctx: unknown) => unknown;
  readonly options: MeshMethodOptions;
  readonly contextTokenKey: string;
  /** Ajv validator of `params`, when a schema was declared. */
  readonly validate: ValidateFunction | undefined;
  readonly paramsSchema: JSONSchema;
  /** The method's own middleware, composed; undefined when it has none. */
  readonly pipeline: Pipeline<MethodCall> | undefined;
}

const OBJECT_MEMBERS = new Set(Object.getOwnPropertyNames(Object.prototype));

/**
 * The method `name` of `instance`: the nearest definition of `name` on its prototype chain (below
 * Object.prototype) when that is a data property holding a function, else undefined. Accessors
 * are never invoked: a getter is not a method, even one returning a function.
 */
export function findMethod(
  instance: object,
  name: string,
): ((...args: never[]) => unknown) | undefined {
  for (
    let o: object | null = instance;
    o !== null && o !== Object.prototype;
    o = Object.getPrototypeOf(o) as object | null
  ) {
    const d = Object.getOwnPropertyDescriptor(o, name);
    if (d === undefined) continue;
    return "value" in d && typeof d.value === "function"
      ? (d.value as (...args: never[]) => unknown)
      : undefined;
  }
  return undefined;
}

/**
 * Collects the public methods of a service instance: data properties holding a function on the
 * instance and its prototype chain (below Object.prototype; the nearest definition of a name
 * wins), not `_`-prefixed, not the constructor, not the event hook, not in `notServed` (the
 * answer handlers). Getters and setters are not
 * methods and are never run here.
 * @throws TypeError for a bad `methods` option or a JSON Schema Ajv cannot compile.
 */
export function collectMethods(
  instance: object,
  extra: Readonly<Record<string, MeshMethodOptions>> | undefined,
  notServed: ReadonlySet<string> = new Set(),
): Map<string, MethodEntry> {
  const ajv = new Ajv({ allErrors: true, strict: false });
  const names = new Set<string>();
  for (
    let o: object | null = instance;
    o !== null && o !== Object.prototype;
    o = Object.getPrototypeOf(o) as object | null
  ) {
    for (const name of Object.getOwnPropertyNames(o)) names.add(name);
  }
  if (extra !== undefined) {
    for (const name of Object.keys(extra)) {
      if (findMethod(instance, name) === undefined) {
        throw new TypeError(
          `createService: 'methods.${name}' names no method of the service instance (a getter or a non-function property is not a method)`,
        );
      }
    }
  }
  const out = new Map<string, MethodEntry>();
  for (const name of names) {
    if (
      name === "constructor" ||
      name.startsWith("_") ||
      name === EVENT_HOOK ||
      notServed.has(name) ||
      OBJECT_MEMBERS.has(name)
    )
      continue;
    if (name === DESCRIBE_METHOD || name === STATS_METHOD) {
      throw new TypeError(`createService: '${name}' is reserved and cannot be a service method`);
    }
    const fn = findMethod(instance, name);
    if (fn === undefined) continue;
    const fromOption = extra?.[name];
    const options =
      fromOption !== undefined
        ? checkMeshMethodOptions(fromOption, `createService: methods.${name}`)
        : (meshOptionsOf(fn) ?? {});
    let validate: ValidateFunction | undefined;
    if (options.params !== undefined) {
      try {
        validate = ajv.compile(options.params as Record<string, unknown>);
      } catch (err) {
        throw new TypeError(
          `createService: the params schema of '${name}' is not a valid JSON Schema: ${(err as Error).message}`,
        );
      }
    }
    out.set(name, {
      name,
      fn: fn as MethodEntry["fn"],
      options,
      contextTokenKey: options.contextTokenKey ?? DEFAULT_CONTEXT_TOKEN_KEY,
      validate,
      paramsSchema: options.params ?? { type: "object" },
      pipeline: composeMiddleware(options.middleware ?? []),
    });
  }
  return out;
}

/** Ajv's first errors as one line naming the failing paths, e.g. `params/id must be string`. */
export function describeValidationErrors(validate: ValidateFunction): string {
  const errors = validate.errors ?? [];
  return errors
    .slice(0, 5)
    .map((e) => {
      const path = `params${e.instancePath}`;
      if (e.keyword === "required")
        return `${path}/${String((e.params as { missingProperty?: string }).missingProperty)} is required`;
      if (e.keyword === "additionalProperties") {
        return `${path}/${String((e.params as { additionalProperty?: string }).additionalProperty)} is not allowed`;
      }
      return `${path} ${e.message ?? "is invalid"}`;
    })
    .join("; ");
}
