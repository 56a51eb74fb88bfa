import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { decodeFrame, encodePayload, type ErrorPayload, type Transport } from "@nuropb/protocol";

/** A memory hub plus a factory of transports on it; everything made is closed by `cleanup`. */
export function createMesh() {
  const hub = createMemoryHub();
  const transports: Transport[] = [];
  const closers: (() => Promise<void>)[] = [];
  return {
    hub,
    transport(): Transport {
      const t = createMemoryTransport({ hub });
      transports.push(t);
      return t;
    },
    defer(fn: () => Promise<void>): void {
      closers.push(fn);
    },
    async cleanup(): Promise<void> {
      for (const c of closers.reverse()) await c().catch(() => undefined);
      await Promise.allSettled(transports.map((t) => t.close()));
    },
  };
}

/** Resolves when `predicate` holds, polling every few ms; rejects after `timeoutMs`. */
export async function waitFor(
  predicate: () => boolean,
  timeoutMs = 2000,
  what = "condition",
): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/**
 * A bare service made of a raw transport (no core), as a foreign peer would be: it acks each
 * request and answers with `answer(method)`.
 */
export async function serveRaw(
  transport: Transport,
  service: string,
  answer: (method: string) => { result: unknown; error: ErrorPayload | null },
): Promise<void> {
  await transport.connect();
  await transport.consumeService(
    { service, rpcBindings: [], eventBindings: [], prefetch: 0 },
    async (d) => {
      await d.ack();
      const req = decodeFrame(d);
      const { result, error } = answer((req.payload as { method: string }).method);
      await transport.send(
        { kind: "reply", address: d.replyTo as string },
        encodePayload({
          tag: "response",
          result,
          error,
          correlation_id: req.correlationId,
          trace_id: req.traceId,
          context: {},
          warning: null,
          reply_to: d.replyTo as string,
        }),
      );
    },
  );
}
