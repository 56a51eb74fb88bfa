import { NuropbError } from "@nuropb/protocol";
import type { ServiceCall, ServiceMiddleware } from "@nuropb/core";

/** Options of {@link tokenBucket}. */
export interface TokenBucketOptions {
  /** Calls a key may make at once (the bucket's size). */
  readonly capacity: number;
  /** Tokens given back per second. */
  readonly refillPerSecond: number;
  /** Whose bucket a call takes from. @defaultValue one bucket for everybody */
  readonly key?: (call: ServiceCall) => string;
  /** The clock, in ms. @defaultValue performance.now */
  readonly now?: () => number;
}

/**
 * A token-bucket rate limit on the requests and commands a service handles. A call over the
 * limit is refused before authorisation and the handler: a retryable `NuropbError` whose
 * `details.retryAfterMs` (and, on a request, the response header `retry-after-ms`) says when to
 * try again. Idle buckets are kept: a real limiter would evict them.
 * @throws TypeError for a bad option.
 */
export function tokenBucket(options: TokenBucketOptions): ServiceMiddleware {
  const { capacity, refillPerSecond } = options;
  if (!(capacity >= 1) || !(refillPerSecond > 0)) {
    throw new TypeError("tokenBucket: capacity must be >= 1 and refillPerSecond > 0");
  }
  const now = options.now ?? (() => performance.now());
  const buckets = new Map<string, { tokens: number; at: number }>();
  return async (call, next) => {
    if (call.kind === "event") return next();
    const key = options.key?.(call) ?? "*";
    const t = now();
    const b = buckets.get(key) ?? { tokens: capacity, at: t };
    b.tokens = Math.min(capacity, b.tokens + ((t - b.at) / 1000) * refillPerSecond);
    b.at = t;
    buckets.set(key, b);
    if (b.tokens < 1) {
      const retryAfterMs = Math.ceil(((1 - b.tokens) / refillPerSecond) * 1000);
      if (call.kind === "request") call.responseHeaders.set("retry-after-ms", String(retryAfterMs));
      throw new NuropbError(
        `rate limit of '${key}' exceeded; retry in ${String(retryAfterMs)} ms`,
        {
          retryable: true,
          details: { retryAfterMs },
        },
      );
    }
    b.tokens -= 1;
    return next();
  };
}
