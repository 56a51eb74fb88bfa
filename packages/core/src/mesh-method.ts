import type { Context } from "@nuropb/protocol";
import { checkFailurePolicy, type FailurePolicy } from "./failure-policy.ts";
import { checkMiddleware, type MethodMiddleware } from "./middleware.ts";

/** A JSON Schema object (draft 2020-12 / draft-07 keywords, as Ajv understands them). */
export type JSONSchema = Readonly<Record<string, unknown>>;

/** What an `authorize` function is told besides the token. */
export interface AuthorizeInfo {
  readonly service: string;
  readonly method: string;
  readonly context: Context;
}

/**
 * Checks a bearer token and returns the caller's claims. Throwing, returning a falsy value or
 * returning a promise of one refuses the call (`NuropbAuthorizationError`); throw
 * `NuropbAuthenticationError` yourself for a token that cannot be verified.
 */
export type AuthorizeFunction = (token: unknown, info: AuthorizeInfo) => unknown;

/** Options of a method published to the mesh. */
export interface MeshMethodOptions {
  /** Leave the method out of `nuropb_describe` (it stays callable, as in Python). @defaultValue false */
  readonly hide?: boolean;
  /** Called with `context[contextTokenKey]` before the handler; its result becomes `ctx.userClaims`. */
  readonly authorize?: AuthorizeFunction;
  /** Context key holding the bearer token. @defaultValue "Authorization" */
  readonly contextTokenKey?: string;
  /** Refuse plaintext calls; callers must encrypt. @defaultValue false */
  readonly requiresEncryption?: boolean;
  /** Human description for `nuropb_describe`. */
  readonly description?: string;
  /** JSON Schema of `params`; checked before the handler runs. @defaultValue `{ "type": "object" }` */
  readonly params?: JSONSchema;
  /** JSON Schema of the result (documentation only). */
  readonly result?: JSONSchema;
  /**
   * Interceptors of this method's calls, the first outermost: they run after the service's
   * middleware and after authorisation (they see `call.userClaims`), before params are
   * validated and the handler runs. @defaultValue []
   */
  readonly middleware?: readonly MethodMiddleware[];
  /**
   * This method's failure policy, in place of the service's (`false`: none, even when the
   * service has one). @defaultValue the service's `failurePolicy`
   */
  readonly failurePolicy?: FailurePolicy | false;
}

const MESH_OPTIONS: unique symbol = Symbol.for("@nuropb/mesh-method-options");

const KNOWN_OPTIONS = new Set([
  "hide",
  "authorize",
  "contextTokenKey",
  "requiresEncryption",
  "description",
  "params",
  "result",
  "middleware",
  "failurePolicy",
]);

/**
 * Checks mesh method options and returns a frozen copy.
 * @throws TypeError naming the bad option.
 */
export function checkMeshMethodOptions(
  options: MeshMethodOptions,
  where: string,
): MeshMethodOptions {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`${where}: options must be an object`);
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) throw new TypeError(`${where}: unknown option '${key}'`);
  }
  const o = options as Record<string, unknown>;
  for (const key of ["hide", "requiresEncryption"]) {
    if (o[key] !== undefined && typeof o[key] !== "boolean")
      throw new TypeError(`${where}: '${key}' must be a boolean`);
  }
  if (o.authorize !== undefined && typeof o.authorize !== "function") {
    throw new TypeError(`${where}: 'authorize' must be a function`);
  }
  for (const key of ["contextTokenKey", "description"]) {
    if (o[key] !== undefined && (typeof o[key] !== "string" || o[key] === "")) {
      throw new TypeError(`${where}: '${key}' must be a non-empty string`);
    }
  }
  for (const key of ["params", "result"]) {
    if (
      o[key] !== undefined &&
      (typeof o[key] !== "object" || o[key] === null || Array.isArray(o[key]))
    ) {
      throw new TypeError(`${where}: '${key}' must be a JSON Schema object`);
    }
  }
  if (o.failurePolicy !== false) checkFailurePolicy(o.failurePolicy, where);
  const middleware = checkMiddleware(o.middleware, `${where}: middleware`);
  return Object.freeze({
    ...options,
    ...(o.middleware !== undefined
      ? { middleware: middleware as readonly MethodMiddleware[] }
      : {}),
  });
}

/**
 * Publishes a method to the mesh with options: a standard (TC39) method decorator.
 *
 * ```ts
 * class Orders {
 *   @publishToMesh({ authorize: checkToken, params: { type: "object", required: ["id"] } })
 *   getOrder(params: { id: string }, ctx: RequestContext) { ... }
 * }
 * ```
 * Plain JavaScript: `publishToMesh(options)(Orders.prototype.getOrder)`, or pass
 * `methods: { getOrder: options }` to `createService`.
 * @throws TypeError for unknown or mistyped options.
 */
export function publishToMesh(options: MeshMethodOptions = {}) {
  const checked = checkMeshMethodOptions(options, "publishToMesh");
  return function decorate<T extends (...args: never[]) => unknown>(
    method: T,
    context?: ClassMethodDecoratorContext,
  ): T {
    if (typeof method !== "function") throw new TypeError("publishToMesh decorates methods only");
    if (context !== undefined && context.kind !== "method") {
      throw new TypeError(`publishToMesh decorates methods, not a ${context.kind}`);
    }
    Object.defineProperty(method, MESH_OPTIONS, { value: checked, configurable: true });
    return method;
  };
}

/** The options a method was published with, if any. */
export function meshOptionsOf(fn: unknown): MeshMethodOptions | undefined {
  if (typeof fn !== "function") return undefined;
  return (fn as unknown as Record<symbol, MeshMethodOptions | undefined>)[MESH_OPTIONS];
}
