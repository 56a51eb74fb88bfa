/**
 * observability: three services in a chain — storefront → orders → inventory — traced with
 * OpenTelemetry. Each span is exported to the console (ConsoleSpanExporter) as it ends, and the
 * example then prints the trace as a tree, and what `nuropb_stats` says of orders.
 */
import { context, propagation } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import {
  BasicTracerProvider,
  ConsoleSpanExporter,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type SpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import {
  STATS_METHOD,
  createClient,
  createService,
  type MeshParticipant,
  type RequestContext,
  type ServiceStatsReport,
} from "@nuropb/core";
import { NuropbValidationError } from "@nuropb/protocol";
import { tracing } from "@nuropb/opentelemetry";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { createPrinter, runIfMain, type MainOptions } from "@nuropb-examples/shared";
import { formatTraceTree } from "./trace-tree.ts";

/** Keeps stock; the last service of the chain. */
export class Inventory {
  readonly #stock = new Map([["book", 3]]);
  reserve(p: { sku: string; qty: number }): { sku: string; left: number } {
    const left = (this.#stock.get(p.sku) ?? 0) - p.qty;
    if (left < 0) throw new NuropbValidationError(`not enough ${p.sku} in stock`);
    this.#stock.set(p.sku, left);
    return { sku: p.sku, left };
  }
}

/** Takes orders: reserves their stock in inventory. */
export class Orders {
  async create(p: { sku: string; qty: number }, ctx: RequestContext): Promise<{ id: string }> {
    await ctx.request("inventory", "reserve", p);
    return { id: `o-${p.sku}-${p.qty}` };
  }
}

/** What the customer calls: places an order through orders. */
export class Storefront {
  async checkout(p: { sku: string; qty: number }, ctx: RequestContext): Promise<string> {
    const order = await ctx.request<{ id: string }>("orders", "create", p);
    return `order ${order.id} placed`;
  }
}

/** Options of {@link main}. */
export interface ObservabilityOptions extends Pick<MainOptions, "print"> {
  /** Export each span to the console as it ends (ConsoleSpanExporter). @defaultValue true */
  readonly consoleExporter?: boolean;
}

/** Runs the example and returns what it printed. */
export async function main(options: ObservabilityOptions = {}): Promise<string[]> {
  const { lines, print } = createPrinter(options);
  // What an application's SDK set-up does once (NodeSDK does the same).
  const kept = new InMemorySpanExporter();
  const processors: SpanProcessor[] = [new SimpleSpanProcessor(kept)];
  if (options.consoleExporter !== false)
    processors.push(new SimpleSpanProcessor(new ConsoleSpanExporter()));
  const tracerProvider = new BasicTracerProvider({ spanProcessors: processors });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());

  const t = tracing({ tracerProvider, transport: "memory" });
  const hub = createMemoryHub();
  const participants: MeshParticipant[] = [];
  const serve = (name: string, instance: object): MeshParticipant =>
    createService({
      transport: createMemoryTransport({ hub }),
      name,
      instance,
      middleware: [t.service],
      clientMiddleware: [t.client],
    });
  participants.push(serve("inventory", new Inventory()));
  participants.push(serve("orders", new Orders()));
  participants.push(serve("storefront", new Storefront()));
  const client = createClient({
    transport: createMemoryTransport({ hub }),
    middleware: [t.client],
  });
  participants.push(client);
  try {
    for (const p of participants) await p.connect();
    print(await client.request<string>("storefront", "checkout", { sku: "book", qty: 2 }));
    const refused = await client
      .request("storefront", "checkout", { sku: "book", qty: 5 })
      .catch((e: unknown) => e as Error);
    print(`refused: ${(refused as Error).message}`);
    await tracerProvider.forceFlush();
    for (const line of formatTraceTree(kept.getFinishedSpans())) print(line);
    const stats = await client.request<ServiceStatsReport>("orders", STATS_METHOD, {});
    const create = stats.methods.create;
    print(
      `orders stats: create called ${String(create?.num_requests)} times, ` +
        `${String(create?.num_errors)} failed (last: ${create?.last_error?.error ?? "none"})`,
    );
    return lines;
  } finally {
    for (const p of participants.reverse()) await p.disconnect();
    await tracerProvider.shutdown();
    context.disable();
    propagation.disable();
  }
}

runIfMain(import.meta.url, () => main());
