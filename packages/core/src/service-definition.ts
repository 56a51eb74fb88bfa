import { Ajv, type ValidateFunction } from "ajv";
import { DESCRIBE_METHOD } from "@nuropb/protocol";
import {
  checkMeshMethodOptions,
  meshOptionsOf,
  type JSONSchema,
  type MeshMethodOptions,
} from "./mesh-method.ts";

/** Name of the instance method that receives events. */
export const EVENT_HOOK = "handleEvent";

/** One method a service exposes. */
export interface MethodEntry {
  readonly name: string;
  readonly fn: (params: unknown, ctx: unknown) => unknown;
  readonly options: MeshMethodOptions;
  readonly contextTokenKey: string;
  /** Ajv validator of `params`, when a schema was declared. */
  readonly validate: ValidateFunction | undefined;
  readonly paramsSchema: JSONSchema;
}

const OBJECT_MEMBERS = new Set(Object.getOwnPropertyNames(Object.prototype));

/**
 * Collects the public methods of a service instance: functions on the instance and its prototype
 * chain (below Object.prototype), not `_`-prefixed, not the constructor, not the event hook.
 * @throws TypeError for a bad `methods` option or a JSON Schema Ajv cannot compile.
 */
export function collectMethods(
  instance: object,
  extra: Readonly<Record<string, MeshMethodOptions>> | undefined,
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
      if (!names.has(name) || typeof (instance as Record<string, unknown>)[name] !== "function") {
        throw new TypeError(
          `createService: 'methods.${name}' names no method of the service instance`,
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
      OBJECT_MEMBERS.has(name)
    )
      continue;
    if (name === DESCRIBE_METHOD) {
      throw new TypeError(
        `createService: '${DESCRIBE_METHOD}' is reserved and cannot be a service method`,
      );
    }
    let fn: unknown;
    try {
      fn = (instance as Record<string, unknown>)[name];
    } catch {
      continue; // a throwing getter is not a method
    }
    if (typeof fn !== "function") continue;
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
      contextTokenKey: options.contextTokenKey ?? "Authorization",
      validate,
      paramsSchema: options.params ?? { type: "object" },
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
