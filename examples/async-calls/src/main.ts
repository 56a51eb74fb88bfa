/**
 * async-calls: an order service asks a payment service to charge, without waiting. The answer is
 * addressed to the order *service*, so the order completes on whichever instance takes it — here
 * a second instance, started after the first one was stopped between the call and the answer.
 * On the memory transport; the same code runs on RabbitMQ, NATS and Redis.
 */
import { createClient, createService, type MeshService } from "@nuropb/core";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { createPrinter, runIfMain, type MainOptions } from "@nuropb-examples/shared";
import { OrderService, type Order, type OrderStore } from "./orders.ts";
import { PaymentService } from "./payments.ts";

/** Runs the example and returns what it printed. */
export async function main(options: MainOptions = {}): Promise<string[]> {
  const { lines, print } = createPrinter(options);
  const hub = createMemoryHub();
  const store: OrderStore = new Map();
  const payments = new PaymentService();
  const paymentService = createService({
    name: "payments",
    instance: payments,
    transport: createMemoryTransport({ hub }),
  });
  const startOrders = async (instance: string): Promise<MeshService<OrderService>> => {
    const svc = createService({
      name: "orders",
      instance: new OrderService(store, instance),
      transport: createMemoryTransport({ hub }),
    });
    await svc.connect();
    return svc;
  };
  const client = createClient({ transport: createMemoryTransport({ hub }) });
  await paymentService.connect();
  await client.connect();
  let second: MeshService<OrderService> | undefined;
  try {
    payments.hold();
    const first = await startOrders("orders-1");
    for (const [orderId, amount] of [
      ["o-1", 42],
      ["o-2", 0],
    ] as const) {
      const placed = await client.request<Order>("orders", "place", { orderId, amount });
      print(`${placed.orderId}: ${placed.status}`);
    }
    await first.disconnect();
    print("orders-1 stopped; orders-2 started; payments answer now");
    second = await startOrders("orders-2");
    payments.release();
    await until(() => [...store.values()].every((o) => o.status !== "pending"));
    for (const orderId of ["o-1", "o-2"]) {
      const o = await client.request<Order>("orders", "status", { orderId });
      const detail = o.status === "completed" ? `receipt ${String(o.receipt)}` : o.reason;
      print(`${o.orderId}: ${o.status} by ${String(o.settledBy)} (${String(detail)})`);
    }
  } finally {
    await second?.disconnect();
    await client.disconnect();
    await paymentService.disconnect();
  }
  return lines;
}

/** Resolves once `done()` holds (checked every few ms); rejects after 10 s. */
async function until(done: () => boolean): Promise<void> {
  const giveUp = Date.now() + 10_000;
  while (!done()) {
    if (Date.now() > giveUp) throw new Error("the payments never answered");
    await new Promise((r) => setTimeout(r, 5));
  }
}

runIfMain(import.meta.url, main);
