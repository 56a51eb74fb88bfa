/**
 * What the running Node line offers beyond Node 20, detected once when this module loads.
 * Internal to `@nuropb/protocol`, except `createDeferred` (exported for the packages above it):
 * every use keeps a path that works on Node 20.
 */

/**
 * The third argument `JSON.parse` hands a reviver on Node 22 and later (TC39 "JSON.parse source
 * text access", shipped in V8 11.4): `source` is the text of a primitive value as written.
 */
export interface JsonReviverContext {
  readonly source?: string;
}

/** Whether `JSON.parse` gives a reviver each primitive's source text (Node 22, 24; not 20). */
export const hasJsonParseSource: boolean = detectJsonParseSource();

function detectJsonParseSource(): boolean {
  let source: unknown;
  JSON.parse("[1e0]", (key: string, value: unknown, context?: JsonReviverContext) => {
    if (key === "0") source = context?.source;
    return value;
  });
  return source === "1e0";
}

/**
 * A promise and the functions that settle it, held apart: what `Promise.withResolvers()` returns.
 * Settling twice does nothing, as with any promise.
 */
export interface Deferred<T> {
  readonly promise: Promise<T>;
  readonly resolve: (value: T | PromiseLike<T>) => void;
  readonly reject: (reason?: unknown) => void;
}

/** `Promise.withResolvers`, typed here: the compiler's `lib` stops at ES2023, before it. */
interface PromiseWithResolvers {
  withResolvers?: <T>() => Deferred<T>;
}

/** Whether `Promise.withResolvers` exists (Node 22, 24; not 20). */
export const hasPromiseWithResolvers: boolean =
  typeof (Promise as PromiseWithResolvers).withResolvers === "function";

/** {@link createDeferred} on Node 22 and later: `Promise.withResolvers()` itself. */
export function createDeferredNative<T>(): Deferred<T> {
  return (Promise as PromiseConstructor & Required<PromiseWithResolvers>).withResolvers<T>();
}

/** {@link createDeferred} on Node 20: the settling functions taken out of the executor. */
export function createDeferredByHand<T>(): Deferred<T> {
  let resolve!: Deferred<T>["resolve"];
  let reject!: Deferred<T>["reject"];
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * A new pending promise with its `resolve` and `reject`: `Promise.withResolvers()` where the
 * Node line has it (22 and later), the same thing written out on Node 20. For code that settles
 * a promise from outside it, not for per-request paths: on Node 24 `Promise.withResolvers` made
 * 65–71 % as many deferreds a second as `new Promise(executor)`, which V8 inlines (≈ 29 ns
 * against 19 ns; the bench's codec suite, "createDeferred + resolve").
 */
export const createDeferred: <T>() => Deferred<T> = hasPromiseWithResolvers
  ? createDeferredNative
  : createDeferredByHand;
