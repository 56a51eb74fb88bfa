/**
 * middleware: four interceptors on the public API, around a small service on the memory
 * transport — a client that logs its calls, and a service with an audit trail, a token-bucket
 * rate limit per tenant and timing (in that order: the audit trail is outermost, so it sees the
 * rate limit's refusals too).
 */
import { createClient, createService, publishToMesh, type RequestContext } from "@nuropb/core";
import { NuropbAuthorizationError, type NuropbError } from "@nuropb/protocol";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { runIfMain } from "@nuropb-examples/shared";
import { auditTrail, type AuditEntry } from "./audit.ts";
import { logCalls } from "./logging.ts";
import { tokenBucket } from "./rate-limit.ts";
import { timeHandling, type Timing } from "./timing.ts";

/** Checks a bearer token; a real service would verify a JWT here. */
function authorise(token: unknown): { user: string } {
  if (token === "Bearer ada") return { user: "ada" };
  throw new NuropbAuthorizationError("unknown token");
}

/** The service the middleware wrap. */
export class Orders {
  quote(params: { sku: string }): { sku: string; price: number } {
    return { sku: params.sku, price: 42 };
  }

  @publishToMesh({ authorize: authorise })
  cancel(params: { id: string }, ctx: RequestContext): string {
    return `order ${params.id} cancelled by ${(ctx.userClaims as { user: string }).user}`;
  }
}

/** Options of {@link main}. */
export interface MiddlewareExampleOptions {
  /** Receives each printed line. @defaultValue console.log */
  readonly print?: (line: string) => void;
  /** The rate limit's clock in ms (a test passes a fixed one). @defaultValue performance.now */
  readonly now?: () => number;
}

/** Runs the example and returns what it printed. */
export async function main(options: MiddlewareExampleOptions = {}): Promise<string[]> {
  const lines: string[] = [];
  const out = (l: string): void => {
    lines.push(l);
    (options.print ?? ((x: string) => console.log(x)))(l);
  };
  const audit: AuditEntry[] = [];
  const timings: Timing[] = [];
  const hub = createMemoryHub();
  const service = createService({
    transport: createMemoryTransport({ hub }),
    name: "orders",
    instance: new Orders(),
    middleware: [
      auditTrail((e) => audit.push(e)),
      tokenBucket({
        capacity: 2,
        refillPerSecond: 0.5,
        key: (call) => String(call.context.tenant ?? "anonymous"),
        ...(options.now !== undefined ? { now: options.now } : {}),
      }),
      timeHandling((t) => timings.push(t)),
    ],
  });
  const client = createClient({
    transport: createMemoryTransport({ hub }),
    middleware: [logCalls((l) => out(`log: ${l}`))],
  });
  try {
    await service.connect();
    await client.connect();
    const acme = { tenant: "acme", Authorization: "Bearer ada" };
    await client.request("orders", "quote", { sku: "a-1" }, acme);
    await client.request("orders", "cancel", { id: "o-7" }, acme);
    // acme's bucket (2 calls, 1 back every 2 s) is empty now: refused before the handler.
    const limited = (await client
      .request("orders", "quote", { sku: "a-2" }, acme)
      .catch((e: unknown) => e)) as NuropbError;
    out(
      `retryable: ${String(limited.retryable)}, retry after ${String(limited.details?.retryAfterMs)} ms`,
    );
    // Another tenant has its own bucket; a bad token is refused by authorisation.
    await client
      .request("orders", "cancel", { id: "o-8" }, { tenant: "globex", Authorization: "Bearer eve" })
      .catch(() => undefined);
    for (const e of audit)
      out(
        `audit: ${e.method} by ${JSON.stringify(e.user ?? null)}: ${e.outcome}${e.error !== undefined ? ` (${e.error})` : ""}`,
      );
    const handled = timings.map((t) => `${t.name} ${t.ok ? "ok" : "failed"}`).join(", ");
    out(`timed: ${handled}`);
  } finally {
    await client.disconnect();
    await service.disconnect();
  }
  return lines;
}

runIfMain(import.meta.url, () => main());
