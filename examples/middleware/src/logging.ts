import type { ClientMiddleware } from "@nuropb/core";

/**
 * Logs each outgoing call and how it ended, one line each. Params and context are left out:
 * they may hold tokens or personal data.
 */
export function logCalls(log: (line: string) => void): ClientMiddleware {
  return async (call, next) => {
    const what =
      call.kind === "event" ? `event ${call.topic}` : `${call.kind} ${call.service}.${call.method}`;
    try {
      const result = await next();
      log(`${what}: ok`);
      return result;
    } catch (err) {
      log(`${what}: ${(err as Error).name}: ${(err as Error).message}`);
      throw err;
    }
  };
}
