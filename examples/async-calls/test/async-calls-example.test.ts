import { afterEach, describe, expect, it } from "vitest";
import { createClient, createService, type MeshParticipant } from "@nuropb/core";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { OrderService, PaymentService, type Order, type OrderStore } from "../src/index.ts";
import { main } from "../src/main.ts";

describe("the async-calls example", () => {
  const participants: MeshParticipant[] = [];
  afterEach(async () => {
    for (const p of participants.splice(0).reverse()) await p.disconnect();
  });

  it("prints the orders completed by the instance started after the restart", async () => {
    const lines = await main({ print: () => undefined });
    expect(lines).toEqual([
      "o-1: pending",
      "o-2: pending",
      "orders-1 stopped; orders-2 started; payments answer now",
      "o-1: completed by orders-2 (receipt rcpt-1-o-1)",
      "o-2: failed by orders-2 (NuropbValidationError: amount must be positive)",
    ]);
  });

  it("completes an order whose placing instance is gone before payments answers", async () => {
    const hub = createMemoryHub();
    const store: OrderStore = new Map();
    const payments = new PaymentService();
    payments.hold();
    const start = async <T extends MeshParticipant>(p: T): Promise<T> => {
      await p.connect();
      participants.push(p);
      return p;
    };
    await start(
      createService({
        name: "payments",
        instance: payments,
        transport: createMemoryTransport({ hub }),
      }),
    );
    const orders = (instance: string) =>
      start(
        createService({
          name: "orders",
          instance: new OrderService(store, instance),
          transport: createMemoryTransport({ hub }),
        }),
      );
    const client = await start(createClient({ transport: createMemoryTransport({ hub }) }));
    const a = await orders("a");
    const placed = await client.request<Order>("orders", "place", { orderId: "x", amount: 5 });
    expect(placed.status).toBe("pending");
    await a.disconnect();
    await orders("b");
    payments.release();
    let order: Order | undefined;
    for (let i = 0; i < 2000 && order?.status !== "completed"; i++) {
      await new Promise((r) => setTimeout(r, 5));
      order = store.get("x");
    }
    expect(order).toMatchObject({ status: "completed", settledBy: "b", receipt: "rcpt-1-x" });
    // The answer handlers are not methods others may call.
    await expect(client.request("orders", "charged", {})).rejects.toMatchObject({
      name: "NuropbHandlingError",
    });
  });
});
