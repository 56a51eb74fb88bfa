import { afterEach } from "vitest";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import type { MemoryHub, MemoryTransportOptions } from "@nuropb/transport-memory";
import type {
  Delivery,
  DeliveryHandler,
  Frame,
  InboundFrame,
  ServiceQueueSpec,
  Transport,
} from "@nuropb/protocol";

export const encode = (text: string): Uint8Array => new TextEncoder().encode(text);
export const decode = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

/** A minimal frame whose body is `text`. */
export function makeFrame(text: string, extra: Partial<Frame> = {}): Frame {
  return {
    headers: { nuropb_type: "request", trace_id: null },
    body: encode(text),
    correlationId: text,
    ...extra,
  };
}

/** A service queue spec with defaults. */
export function serviceSpec(
  service: string,
  extra: Partial<ServiceQueueSpec> = {},
): ServiceQueueSpec {
  return { service, rpcBindings: [], eventBindings: [], prefetch: 0, ...extra };
}

/** One macrotask turn; deliveries of the memory transport happen within one or two. */
export function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Lets every already-scheduled delivery run (used only to show that something did *not* happen). */
export async function quiesce(turns = 5): Promise<void> {
  for (let i = 0; i < turns; i++) await turn();
}

/**
 * Waits until `predicate` holds, checking after each macrotask turn (setImmediate, so it also works
 * while setTimeout is faked); fails after `timeoutMs`.
 */
export async function waitFor(
  predicate: () => boolean,
  timeoutMs = 2000,
  what = "condition",
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!predicate()) {
    if (performance.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await turn();
  }
}

/** Records deliveries and hands them to an optional behaviour (default: ack). */
export function recorder(behaviour: (d: Delivery) => void | Promise<void> = (d) => d.ack()): {
  readonly items: Delivery[];
  readonly bodies: () => string[];
  readonly handler: DeliveryHandler;
} {
  const items: Delivery[] = [];
  return {
    items,
    bodies: () => items.map((d) => decode(d.body)),
    handler: (d) => {
      items.push(d);
      return behaviour(d);
    },
  };
}

/** Records responses. */
export function responseRecorder(): {
  readonly items: InboundFrame[];
  readonly handler: (f: InboundFrame) => void;
} {
  const items: InboundFrame[] = [];
  return { items, handler: (f) => void items.push(f) };
}

/** A hub plus a factory of connected transports that are all closed after each test. */
export function useHub(): {
  hub: () => MemoryHub;
  create: (options?: Omit<MemoryTransportOptions, "hub">) => Transport;
  open: (options?: Omit<MemoryTransportOptions, "hub">) => Promise<Transport>;
} {
  let hub = createMemoryHub();
  const made: Transport[] = [];
  afterEach(async () => {
    await Promise.all(made.map((t) => t.close()));
    made.length = 0;
    hub = createMemoryHub();
  });
  const create = (options: Omit<MemoryTransportOptions, "hub"> = {}): Transport => {
    const t = createMemoryTransport({ hub, ...options });
    made.push(t);
    return t;
  };
  return {
    hub: () => hub,
    create,
    open: async (options) => {
      const t = create(options);
      await t.connect();
      return t;
    },
  };
}
