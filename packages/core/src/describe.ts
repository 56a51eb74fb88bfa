import type { JSONSchema } from "./mesh-method.ts";
import type { MethodEntry } from "./service-definition.ts";

/** One method in a service description. */
export interface MethodDescription {
  readonly description: string | null;
  readonly requires_encryption: boolean;
  /** True when the method has an `authorize` function (an extra field; Python ignores it). */
  readonly requires_authorization?: boolean;
  /**
   * A JSON Schema object of the params, always with `properties` (`{}` when none are declared);
   * Python's list-of-pairs form is normalised on read.
   */
  readonly parameters: JSONSchema;
  /** JSON Schema of the result, when declared. */
  readonly result?: JSONSchema;
}

/**
 * What `nuropb_describe` answers (PROTOCOL.md §9). Field names are the wire's, so Python clients
 * read it unchanged; `nacl_public_key` and `native_public_key` are our additions (Python clients
 * read only the keys they know).
 */
export interface ServiceDescription {
  readonly service_name: string | null;
  readonly service_version: string | null;
  readonly description: string | null;
  readonly warnings: readonly string[];
  readonly encrypted_methods: boolean;
  /** PEM SubjectPublicKeyInfo of the service's RSA key, or null. */
  readonly public_key: string | null;
  /** Base64 X25519 public key for the `nacl` suite, or absent/null. */
  readonly nacl_public_key?: string | null;
  /**
   * Base64 X25519 public key for the `x25519-aes-gcm` suite (node:crypto), present only when the
   * service has one; TypeScript callers prefer it.
   */
  readonly native_public_key?: string | null;
  readonly methods: Readonly<Record<string, MethodDescription>>;
}

/**
 * `schema` with a `properties` key, `{}` when it declares none: readers written for Python's
 * describe index `parameters.properties` unconditionally (PROTOCOL.md §9).
 */
function withProperties(schema: JSONSchema): JSONSchema {
  return schema.properties === undefined ? { ...schema, properties: {} } : schema;
}

/** Builds the description of a service; every method's `parameters` has `properties`. */
export function buildDescription(args: {
  readonly serviceName: string;
  readonly serviceVersion: string | undefined;
  readonly description: string | undefined;
  readonly methods: ReadonlyMap<string, MethodEntry>;
  readonly publicKeyPem: string | null;
  readonly naclPublicKey: string | null;
  /** The `x25519-aes-gcm` public key; absent or null: not announced. */
  readonly nativePublicKey?: string | null;
}): ServiceDescription {
  const methods: Record<string, MethodDescription> = {};
  let encrypted = false;
  const warnings: string[] = [];
  for (const entry of args.methods.values()) {
    if (entry.options.hide === true) continue;
    const requiresEncryption = entry.options.requiresEncryption === true;
    encrypted ||= requiresEncryption;
    methods[entry.name] = {
      description: entry.options.description ?? null,
      requires_encryption: requiresEncryption,
      requires_authorization: entry.options.authorize !== undefined,
      parameters: withProperties(entry.paramsSchema),
      ...(entry.options.result !== undefined ? { result: entry.options.result } : {}),
    };
  }
  const nativePublicKey = args.nativePublicKey ?? null;
  if (
    encrypted &&
    args.publicKeyPem === null &&
    args.naclPublicKey === null &&
    nativePublicKey === null
  ) {
    warnings.push("Service has encrypted methods but no private key has been set.");
  }
  return {
    service_name: args.serviceName,
    service_version: args.serviceVersion ?? null,
    description: args.description ?? null,
    warnings,
    encrypted_methods: encrypted,
    public_key: args.publicKeyPem,
    nacl_public_key: args.naclPublicKey,
    ...(nativePublicKey === null ? {} : { native_public_key: nativePublicKey }),
    methods,
  };
}

/**
 * Normalises a description received from any peer: Python's `parameters.properties` list of
 * `[name, spec]` pairs becomes a JSON Schema `properties` object (Python type names mapped to JSON
 * Schema types where they have one), `encrypted_methods` a boolean, missing fields defaults.
 * @throws TypeError when `value` is not a description object at all.
 */
export function normaliseDescription(value: unknown): ServiceDescription {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TypeError("a service description must be an object");
  }
  const v = value as Record<string, unknown>;
  const rawMethods = v.methods;
  const methods: Record<string, MethodDescription> = {};
  if (typeof rawMethods === "object" && rawMethods !== null && !Array.isArray(rawMethods)) {
    for (const [name, m] of Object.entries(rawMethods as Record<string, unknown>)) {
      const md = (typeof m === "object" && m !== null ? m : {}) as Record<string, unknown>;
      methods[name] = {
        description: typeof md.description === "string" ? md.description : null,
        requires_encryption: md.requires_encryption === true,
        requires_authorization: md.requires_authorization === true,
        parameters: normaliseParameters(md.parameters),
        ...(isObject(md.result) ? { result: md.result } : {}),
      };
    }
  }
  const encryptedMethods =
    typeof v.encrypted_methods === "boolean"
      ? v.encrypted_methods
      : Array.isArray(v.encrypted_methods)
        ? v.encrypted_methods.length > 0
        : Object.values(methods).some((m) => m.requires_encryption);
  return {
    service_name: typeof v.service_name === "string" ? v.service_name : null,
    service_version: typeof v.service_version === "string" ? v.service_version : null,
    description: typeof v.description === "string" ? v.description : null,
    warnings: Array.isArray(v.warnings)
      ? v.warnings.filter((w): w is string => typeof w === "string")
      : [],
    encrypted_methods: encryptedMethods,
    public_key: typeof v.public_key === "string" && v.public_key !== "" ? v.public_key : null,
    nacl_public_key:
      typeof v.nacl_public_key === "string" && v.nacl_public_key !== "" ? v.nacl_public_key : null,
    ...(typeof v.native_public_key === "string" && v.native_public_key !== ""
      ? { native_public_key: v.native_public_key }
      : {}),
    methods,
  };
}

const PYTHON_TYPES: Readonly<Record<string, string>> = {
  str: "string",
  int: "integer",
  float: "number",
  bool: "boolean",
  dict: "object",
  list: "array",
  tuple: "array",
  NoneType: "null",
};

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

function normaliseParameters(p: unknown): JSONSchema {
  if (!isObject(p)) return { type: "object", properties: {} };
  const props = p.properties;
  if (!Array.isArray(props)) return withProperties(p);
  // Python quirk: [[name, {type, description, default}], ...]
  const properties: Record<string, Record<string, unknown>> = {};
  for (const pair of props) {
    if (!Array.isArray(pair) || typeof pair[0] !== "string") continue;
    const spec = isObject(pair[1]) ? pair[1] : {};
    const out: Record<string, unknown> = {};
    const pyType = typeof spec.type === "string" ? spec.type : "";
    const jsonType = PYTHON_TYPES[pyType];
    if (jsonType !== undefined) out.type = jsonType;
    else if (pyType === "datetime" || pyType === "date") {
      out.type = "string";
      out.format = pyType === "datetime" ? "date-time" : "date";
    }
    if (pyType !== "") out["x-python-type"] = pyType;
    if (typeof spec.description === "string" && spec.description !== "")
      out.description = spec.description;
    if (spec.default !== "" && spec.default !== undefined) out.default = spec.default;
    properties[pair[0]] = out;
  }
  const required = Array.isArray(p.required)
    ? p.required.filter((r): r is string => typeof r === "string")
    : [];
  return { type: "object", properties, required };
}
