import { onAnswer, onAnswerError, type AnswerContext, type RequestContext } from "@nuropb/core";
import type { NuropbError } from "@nuropb/protocol";

/** An order as the store keeps it. */
export interface Order {
  readonly orderId: string;
  readonly amount: number;
  readonly status: "pending" | "completed" | "failed";
  /** The payment's receipt, once completed. */
  readonly receipt?: string;
  /** Why it failed (the payment's error, or its deadline). */
  readonly reason?: string;
  /** Which instance of the order service completed (or failed) it. */
  readonly settledBy?: string;
}

/**
 * Where orders live between the call and its answer: a database in a real service. Every
 * instance of the service shares it; that, and the `state` carried with the call, is all an
 * answer handler needs, whichever instance runs it.
 */
export type OrderStore = Map<string, Order>;

/** How long an order waits for its payment before it fails, in ms. */
export const PAYMENT_DEADLINE_MS = 30_000;

/**
 * The order service. `place` asks payments to charge and returns at once; the answer comes back
 * to the *service* (not to this instance), so the order completes even when the instance that
 * placed it has restarted in between.
 */
export class OrderService {
  readonly #store: OrderStore;
  readonly #instance: string;

  constructor(store: OrderStore, instance: string) {
    this.#store = store;
    this.#instance = instance;
  }

  /** Records the order as pending and asks payments to charge it; answers with the order. */
  async place(params: { orderId: string; amount: number }, ctx: RequestContext): Promise<Order> {
    const order: Order = { orderId: params.orderId, amount: params.amount, status: "pending" };
    this.#store.set(order.orderId, order);
    await ctx.callLater(
      "payments",
      "charge",
      { amount: params.amount, reference: params.orderId },
      { state: { orderId: params.orderId }, deadlineMs: PAYMENT_DEADLINE_MS },
    );
    return order;
  }

  /** The order, as it stands. */
  status(params: { orderId: string }): Order | null {
    return this.#store.get(params.orderId) ?? null;
  }

  /** The payment went through: the order is complete. Runs on whichever instance took the answer. */
  @onAnswer("payments", "charge")
  charged(result: { receipt: string }, ctx: AnswerContext): void {
    this.#settle(ctx, { status: "completed", receipt: result.receipt });
  }

  /** The payment failed, or its deadline passed first (`NuropbTimeoutError`). */
  @onAnswerError("payments", "charge")
  chargeFailed(error: NuropbError, ctx: AnswerContext): void {
    this.#settle(ctx, { status: "failed", reason: `${error.name}: ${error.description}` });
  }

  #settle(ctx: AnswerContext, change: Pick<Order, "status" | "receipt" | "reason">): void {
    const { orderId } = ctx.state as { orderId: string };
    const order = this.#store.get(orderId);
    // At least once: a redelivered answer for a settled order changes nothing.
    if (order === undefined || order.status !== "pending") return;
    this.#store.set(orderId, { ...order, ...change, settledBy: this.#instance });
  }
}
